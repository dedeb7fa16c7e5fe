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

/* The storage of the process: opens DATA and every shard this node is
 * primary of in the shard map (read from redis.url when set; see
 * proto/registry.h), or without a map the shards.local of shards.count.
 * Blocking: call before the loops run. */
struct node_store *node_store_open(const struct config *cfg, const char **error_r);
void node_store_close(struct node_store **ns);
struct shardmap;
/* Serve what map says (NULL: the shards.local fallback): opens newly
 * owned shards, then marks them served; shards no longer ours are
 * refused from then on. Blocking (worker thread), one call at a time.
 * *changed_r: shards whose ownership changed. 0, or -1 with a reason
 * (e.g. the map's count differs from ours: nothing changes). */
int node_store_apply(struct node_store *ns, const struct shardmap *map, int *changed_r,
		     const char **error_r);
/* The served shards, for logs ("0-84", "all", "map" when too long). */
const char *node_store_spec(const struct node_store *ns);
uint32_t node_store_nshards(const struct node_store *ns);

/* node_shardmap.c: read the map once (blocking, own loop): 1 with *map_r,
 * 0 when there is no map, -1 when Redis cannot be read or the map is
 * unusable. */
int node_shardmap_read(const char *url, uint32_t timeout_ms, struct shardmap **map_r,
		       const char **error_r);
/* Follow the map on loop l: the channel plus a re-read every refresh_ms;
 * each change is applied with node_store_apply on a worker. */
struct redis_client;
struct node_shardmap;
struct node_shardmap *node_shardmap_start(struct loop *l, struct redis_client *rc,
					  struct node_store *ns, uint32_t refresh_ms);
/* Before the Redis client is freed. NULL-safe. */
void node_shardmap_stop(struct node_shardmap **f);

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
