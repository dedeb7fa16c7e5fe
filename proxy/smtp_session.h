/* The SMTP receiver of mailproxy (smtp.* keys in proxy_config_defs).
 *
 * smtp_session_accept() (proxy_internal.h) runs one ESMTP session per
 * client connection on SMTP (25), submission (587) and submissions (465).
 * Recipients are checked against the directory at RCPT (RESOLVE to any
 * node, USER_GET to the owner's node); a message is streamed into one
 * buffer bounded by the SIZE limit and handed to every recipient's node
 * with one DELIVER per node and shard, in parallel; the client gets 250
 * only when every recipient is stored. */
#ifndef PROXY_SMTP_SESSION_H
#define PROXY_SMTP_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "proto/smtp_parse.h"

struct smtp_config {
	uint64_t max_size;          /* SIZE: smtp.max_size, at most what a DELIVER frame carries */
	uint64_t max_size_asked;    /* smtp.max_size as configured */
	uint32_t greeting_delay_ms; /* smtp.greeting_delay */
	uint32_t idle_ms;           /* smtp.idle_timeout */
	uint32_t rpc_ms;            /* rpc.timeout: every call to a node */
	unsigned max_errors;        /* smtp.max_errors */
	unsigned max_recipients;    /* smtp.max_recipients */
	uint64_t buffer_budget;     /* smtp.buffer_budget: messages held per thread */
	enum smtp_lf_policy bare_lf;/* smtp.bare_lf */
	struct smtp_limits lim;
};

/* Reads and checks the smtp.* keys. Returns 0, or -1 with a reason. */
int smtp_config_load(const struct config *cfg, struct smtp_config *out, const char **error_r);

/* sizeof(struct smtp_session): an idle session's own cost. */
size_t smtp_session_struct_size(void);

#endif
