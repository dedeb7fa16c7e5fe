/* The front proxy service. Today: membership in Redis and the shared
 * runtime (TLS contexts, metrics, drain). The SMTP receiver and the
 * IMAP/POP3 routing come with the proxy issue. */
#ifndef PROXY_PROXY_H
#define PROXY_PROXY_H

#include <stdbool.h>

#include "common/config.h"

struct loop;
struct tls_server;
struct proxy;

extern const struct config_def proxy_config_defs[];
extern const size_t proxy_config_defs_len;

struct proxy *proxy_new(struct loop *l, const struct config *cfg, struct tls_server *tls,
			bool primary, const char **error_r);
/* SIGTERM: leave the membership, let sessions finish. */
void proxy_drain(struct proxy *p);
void proxy_free(struct proxy **p);

#endif
