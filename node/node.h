/* The storage node service: the RPC API (Ping, Deliver, Auth, user and
 * mailbox admin calls; OpenSession and IMAP/POP3 come with the node issue),
 * the shards it owns, and its membership heartbeat in Redis. */
#ifndef NODE_NODE_H
#define NODE_NODE_H

#include <stdint.h>

#include "common/config.h"

struct loop;
struct tls_server;
struct node;
struct node_store;

extern const struct config_def node_config_defs[];
extern const size_t node_config_defs_len;

/* The storage of the process: opens DATA and every shard this node owns
 * (shards.local of shards.count). Blocking: call before the loops run. */
struct node_store *node_store_open(const struct config *cfg, const char **error_r);
void node_store_close(struct node_store **ns);

/* One per loop thread, sharing ns; thread 0 (primary) also keeps the
 * heartbeat. Storage work runs on the worker pool. */
struct node *node_new(struct loop *l, const struct config *cfg, struct tls_server *tls,
		      struct node_store *ns, bool primary, const char **error_r);
uint16_t node_rpc_port(const struct node *n);

/* For the protocol sessions (IMAP, POP3) running on this node's loops: */
struct loop *node_loop(const struct node *n);
/* storage.max_message: the largest message stored (IMAP APPENDLIMIT). */
uint64_t node_max_message(const struct node *n);
struct shard;
/* Canonical owner (lower case, +tag removed) of a login name or address
 * into out (>= 256 bytes) and the local shard holding it; NULL when the
 * name is invalid (out empty) or its shard is not served here. */
struct shard *node_user_shard(struct node *n, const char *login, char *out, size_t out_len);
/* SIGTERM: leave the membership at once, keep serving in-flight calls. */
void node_drain(struct node *n);
void node_free(struct node **n);

#endif
