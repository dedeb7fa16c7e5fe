/* Cluster membership in Redis: the key names every member and tool agree
 * on, and the heartbeat each daemon keeps.
 *
 *   mail:nodes, mail:proxies          sets of member ids ever registered
 *   mail:node:<id>, mail:proxy:<id>   "addr=<rpc addr> pid=<pid> ..." with a
 *                                     TTL; present = alive
 *
 * A member refreshes its key every interval with SET ... PX ttl; a member
 * whose key expired is considered down (the cluster issue builds failover
 * on this). A graceful stop deletes the key at once. */
#ifndef PROTO_REGISTRY_H
#define PROTO_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct loop;
struct redis_client;

#define REGISTRY_NODES_SET "mail:nodes"
#define REGISTRY_PROXIES_SET "mail:proxies"

/* The shard map (written by `mailctl cluster` tools with a compare-and-set
 * that bumps the epoch; read by proxies and nodes):
 *
 *   mail:shardmap   hash: "count" -> number of shards S (fixed at init),
 *                   "<shard>" -> "<epoch> <primary node id> [<replica id>...]"
 *   channel mail:shardmap   published after every change (payload: the
 *                   new highest epoch, informational)
 *
 * A shard's node address comes from that node's live membership key, so
 * a shard whose primary is down has no address until failover moves it.
 * Until a shard map exists, readers derive one from the shards each live
 * node advertises ("shards=" in its membership info). */
#define REGISTRY_SHARDMAP_KEY "mail:shardmap"
#define REGISTRY_SHARDMAP_CHANNEL "mail:shardmap"

/* "node" or "proxy". */
struct heartbeat;
struct heartbeat *heartbeat_start(struct loop *l, struct redis_client *rc, const char *kind,
				  const char *id, const char *info, uint32_t interval_ms,
				  uint32_t ttl_ms);
/* Deletes the member key (best effort) and stops. NULL-safe. */
void heartbeat_stop(struct heartbeat **hb);
/* Successful refreshes so far (for tests and logs). */
uint64_t heartbeat_count(const struct heartbeat *hb);

/* Key of a member: "mail:<kind>:<id>" into out (>= 160 bytes). */
const char *registry_member_key(const char *kind, const char *id, char *out, size_t out_len);
/* Parse "key=value" out of an info string; copies into out; 0 or -1. */
int registry_info_get(const char *info, const char *key, char *out, size_t out_len);
/* Does a shard spec ("all" or "0-84,200") contain shard? A malformed spec
 * contains nothing past the point where it stops making sense. */
bool registry_spec_has(const char *spec, uint32_t shard);

#endif
