/* The storage node service: RPC API (Ping today; Deliver, Auth,
 * OpenSession and admin calls come with the node issue) and the node's
 * membership heartbeat in Redis. */
#ifndef NODE_NODE_H
#define NODE_NODE_H

#include <stdint.h>

#include "common/config.h"

struct loop;
struct tls_server;
struct node;

extern const struct config_def node_config_defs[];
extern const size_t node_config_defs_len;

/* One per loop thread; thread 0 (primary) also keeps the heartbeat. */
struct node *node_new(struct loop *l, const struct config *cfg, struct tls_server *tls,
		      bool primary, const char **error_r);
uint16_t node_rpc_port(const struct node *n);
/* SIGTERM: leave the membership at once, keep serving in-flight calls. */
void node_drain(struct node *n);
void node_free(struct node **n);

#endif
