/* Shared by the mailctl command files (ctl.c, ctl_*.c): the tool's state,
 * synchronous Redis and RPC calls over its loop, the cluster's members and
 * shard map. Everything prints its own error to stderr. */
#ifndef NODE_CTL_INTERNAL_H
#define NODE_CTL_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <protobuf-c/protobuf-c.h>

#include "proto/registry.h"

struct loop;
struct redis_client;

struct ctl {
	struct loop *loop;
	const char *redis_url;
	uint32_t timeout_ms;
	bool json;
	const char *node; /* --node ADDR: skip the lookup in Redis */
};

/* Exit statuses. */
enum {
	CTL_OK = 0,
	CTL_FAIL = 1,     /* the operation failed (unknown user, node down, ...) */
	CTL_USAGE = 2,    /* bad arguments, no cluster named */
	CTL_NOT_YET = 3,  /* needs shard movement, which comes with replication */
};

/* ---- Redis -------------------------------------------------------------- */

struct ctl_reply {
	int type; /* REDIS_REPLY_*, -1: no answer */
	long long integer;
	char *str;    /* STRING, STATUS, ERROR */
	char **elems; /* ARRAY of strings (NULL for other element types) */
	size_t n;
};
void ctl_reply_free(struct ctl_reply *r);

/* A client for c->redis_url; NULL (printed) when none is named. */
struct redis_client *ctl_redis_open(struct ctl *c);
/* One command, waited for. 0 with *r filled (an error reply is a reply),
 * -1 when Redis did not answer (printed). */
int ctl_redis_argv(struct ctl *c, struct redis_client *rc, struct ctl_reply *r, int argc,
		   const char *const *argv);
int ctl_redis_cmd(struct ctl *c, struct redis_client *rc, struct ctl_reply *r, const char *fmt,
		  ...);

/* ---- the cluster ------------------------------------------------------------ */

struct ctl_member {
	char id[REGISTRY_ID_MAX];
	bool alive;    /* membership key present */
	char addr[128];
	char info[512];
};
/* Every node ever registered, alive or not, in natural id order (node2
 * before node10). Returns the count (*out malloc'ed), -1 (printed). */
int ctl_members(struct ctl *c, struct redis_client *rc, struct ctl_member **out);
/* The shard map: 1 (*map_r), 0 none, -1 unreadable or malformed (printed). */
int ctl_shardmap(struct ctl *c, struct redis_client *rc, struct shardmap **map_r);
/* The node serving canonical address per the shard map: 1 with addr and
 * shard, 0 when there is no map, -1 (printed: primary down, unassigned). */
int ctl_map_route(struct ctl *c, const char *canonical, char *addr, size_t addr_len,
		  int *shard_r, uint32_t *nshards_r);

/* ---- RPC -------------------------------------------------------------------- */

/* One call to addr, waited for. 0 with *reply_r (a copy; NULL for an empty
 * reply; free with protobuf_c_message_free_unpacked). 1 on failure: the
 * reason goes to stderr, or into err (when given) quietly, and the remote
 * error code into *code_r (0 for local failures). */
int ctl_call(struct ctl *c, const char *addr, uint16_t method, const ProtobufCMessage *req,
	     uint32_t deadline_ms, ProtobufCMessage **reply_r, uint32_t *code_r, char *err,
	     size_t err_len);
void ctl_free_reply(ProtobufCMessage **reply);

/* ---- passwords ------------------------------------------------------------ */

/* The password for a command: --password-stdin reads one line from stdin;
 * MAILCTL_PASSWORD; --password PW (visible in ps: discouraged); else,
 * with a terminal, a prompt on /dev/tty without echo (twice when
 * confirm). Returns 1 with out filled, 0 when none was given and there
 * is no terminal (the caller may generate one), -1 (printed). */
enum ctl_pw_source { CTL_PW_NONE, CTL_PW_STDIN, CTL_PW_ARG };
int ctl_password(enum ctl_pw_source src, const char *arg, bool confirm, char *out,
		 size_t out_len);

/* ---- commands (each returns an exit status) ---------------------------------- */

int ctl_cmd_cluster(struct ctl *c, int argc, char **argv);
int ctl_cmd_node(struct ctl *c, int argc, char **argv);
int ctl_cmd_dkim(struct ctl *c, int argc, char **argv);
int ctl_cmd_dns(struct ctl *c, int argc, char **argv);
int ctl_cmd_import(struct ctl *c, int argc, char **argv);

/* JSON string body (no quotes) of s to f. */
void ctl_json_str(FILE *f, const char *s);

#endif
