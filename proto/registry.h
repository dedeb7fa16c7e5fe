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
 * node advertises ("shards=" in its membership info).
 *
 * Writers: `mailctl cluster init --shards S` creates the map in one Lua
 * script that refuses when the key exists (so a running cluster is never
 * re-initialised), gives every shard epoch 1 and assigns contiguous ranges
 * to the live nodes in natural id order (node2 before node10), then
 * publishes "1". Every later change (failover, shard moves: the
 * replication issue) must be a compare-and-set in one script that checks
 * the shard's current "<epoch> <primary>" and writes epoch + 1.
 *
 * Readers: a node reads the map when it starts (it opens exactly the
 * shards whose primary is its node.id; without a map it falls back to its
 * shards.local setting), follows the channel and re-reads every few
 * seconds; shards it is not primary of are refused with ERROR_NOT_PRIMARY.
 * A map whose count differs from what a running node serves is ignored
 * by that node (logged): the count is fixed at init.
 *
 * A node's membership info keeps advertising "shards=<shards.local>",
 * what it serves when there is no map, so that the fallback is right the
 * moment a map disappears. Ids in the map are member ids
 * (REGISTRY_ID_MAX - 1 bytes at most, [A-Za-z0-9._-]). */
#define REGISTRY_SHARDMAP_KEY "mail:shardmap"
#define REGISTRY_SHARDMAP_CHANNEL "mail:shardmap"
#define REGISTRY_ID_MAX 64
#define REGISTRY_MAX_SHARDS 65535u    /* shard 65535 is the directory */
#define REGISTRY_MAX_REPLICAS 4

/* A parsed shard map. */
struct shardmap {
	uint32_t count;       /* S */
	uint64_t *epoch;      /* per shard; 0: no entry (unassigned) */
	int32_t *primary;     /* per shard: index into ids, -1: none */
	/* per shard: REGISTRY_MAX_REPLICAS indexes into ids, -1 padded */
	int32_t *replicas;
	char (*ids)[REGISTRY_ID_MAX];
	size_t nids;
	uint64_t max_epoch;
	uint32_t nbad;        /* malformed entries (ignored) */
};

/* Parse HGETALL output given as n strings (field, value, field, ...).
 * Returns the map, or NULL with *error_r: "" when there is no map (n ==
 * 0), else why it is unusable (no or bad "count"). Malformed entries are
 * skipped and counted in nbad. */
struct shardmap *shardmap_parse(const char *const *kv, size_t n, const char **error_r);
void shardmap_free(struct shardmap **m);
/* Index of id in m->ids, -1 if absent. */
int shardmap_id_index(const struct shardmap *m, const char *id);
/* Shards whose primary is `id` as ranges ("0-84,200") into out; "" when
 * none. Returns the number of shards, or -1 when out is too small. */
int shardmap_spec_of(const struct shardmap *m, const char *id, char *out, size_t out_len);
/* Member ids are short and plain (they go into keys and info strings). */
bool registry_id_valid(const char *id);

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
/* Does a shard spec ("all", "none" or "0-84,200") contain shard? A malformed spec
 * contains nothing past the point where it stops making sense. */
bool registry_spec_has(const char *spec, uint32_t shard);

#endif
