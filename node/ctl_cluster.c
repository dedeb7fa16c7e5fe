/* mailctl cluster init|status and node list|add|drain|remove: the shard
 * map in Redis (format and rules in proto/registry.h) and the membership.
 * Moving shards between nodes needs replication (checkpoint + WAL
 * catch-up); until it exists the commands that would move data say so
 * and exit with CTL_NOT_YET. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/loop.h"
#include "common/redis.h"
#include "node/ctl_internal.h"
#include "proto/rpc.h"

/* Create the map only if there is none (KEYS[1]); ARGV[1] = count, then
 * field/value pairs. Published on the map's channel (same name). */
static const char init_script[] =
	"if redis.call('EXISTS', KEYS[1]) == 1 then\n"
	"  return redis.error_reply('EXISTS ' .. (redis.call('HGET', KEYS[1], 'count') or '?'))\n"
	"end\n"
	"for i = 2, #ARGV, 2 do\n"
	"  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])\n"
	"end\n"
	"redis.call('HSET', KEYS[1], 'count', ARGV[1])\n"
	"redis.call('PUBLISH', KEYS[1], '1')\n"
	"return 1\n";

struct node_row {
	struct ctl_member *m;
	int shards;      /* primary of, per map (or advertised) */
	char spec[256];
	uint64_t min_epoch, max_epoch;
	int replica_of;  /* shards it is a replica of, per map */
	bool pinged;
	uint64_t rtt_us, uptime_ms;
};

static bool ping(struct ctl *c, const char *addr, uint64_t *rtt_us, uint64_t *uptime_ms,
		 char *err, size_t err_len)
{
	Mail__Rpc__Ping req = MAIL__RPC__PING__INIT;
	req.from = "mailctl";
	req.sent_ms = time_mono_ms();
	ProtobufCMessage *rep;
	uint64_t t0 = time_mono_ns();
	if (ctl_call(c, addr, RPC_METHOD_PING, &req.base, c->timeout_ms, &rep, NULL, err, err_len))
		return false;
	*rtt_us = (time_mono_ns() - t0) / 1000;
	*uptime_ms = rep ? ((Mail__Rpc__Pong *)rep)->uptime_ms : 0;
	ctl_free_reply(&rep);
	return true;
}

static int usage_cluster(void)
{
	fprintf(stderr, "usage: mailctl cluster init [--shards S] | cluster status\n");
	return CTL_USAGE;
}

static int cluster_init(struct ctl *c, int argc, char **argv)
{
	unsigned long shards = 256;
	for (int i = 0; i < argc; i++) {
		char *end = NULL;
		if (strcmp(argv[i], "--shards") == 0 && i + 1 < argc) {
			shards = strtoul(argv[++i], &end, 10);
			if (!argv[i][0] || *end || argv[i][0] == '-' || shards < 1 ||
			    shards > REGISTRY_MAX_SHARDS) {
				fprintf(stderr, "mailctl: --shards wants 1..%u\n", REGISTRY_MAX_SHARDS);
				return CTL_USAGE;
			}
		} else {
			return usage_cluster();
		}
	}
	struct redis_client *rc = ctl_redis_open(c);
	if (!rc)
		return CTL_USAGE;
	struct ctl_member *m = NULL;
	int n = -1;
	int status = CTL_FAIL;
	const char **args = NULL;
	char (*vals)[96] = NULL;
	char (*fields)[12] = NULL;
	struct ctl_reply r = { 0 };
	/* Say so first when there is a map (the script checks again). */
	if (ctl_redis_cmd(c, rc, &r, "HGET %s count", REGISTRY_SHARDMAP_KEY) < 0)
		goto out;
	if (r.type == REDIS_REPLY_STRING) {
		fprintf(stderr, "mailctl: the cluster is initialised already (%s holds %s shards); "
				"refusing to initialise it again\n",
			REGISTRY_SHARDMAP_KEY, r.str);
		goto out;
	}
	ctl_reply_free(&r);
	n = ctl_members(c, rc, &m);
	if (n < 0)
		goto out;
	/* The live nodes, in natural id order (ctl_members sorts). */
	struct ctl_member **live = xcalloc((size_t)n + 1, sizeof(*live));
	size_t nlive = 0;
	for (int i = 0; i < n; i++) {
		if (!m[i].alive)
			continue;
		char ns[16];
		if (registry_info_get(m[i].info, "nshards", ns, sizeof(ns)) == 0 &&
		    strtoul(ns, NULL, 10) != shards) {
			fprintf(stderr,
				"mailctl: node %s runs with shards.count=%s, not %lu: start every node "
				"with shards.count=%lu, or init with --shards %s\n",
				m[i].id, ns, shards, shards, ns);
			free(live);
			goto out;
		}
		live[nlive++] = &m[i];
	}
	if (nlive == 0) {
		fprintf(stderr, "mailctl: no live node to give the shards to (start the nodes "
				"with redis.url set first)\n");
		free(live);
		goto out;
	}
	/* Contiguous ranges: node k of N gets [k*S/N, (k+1)*S/N). */
	size_t nargs = 3 + 2 + 2 * shards;
	args = xcalloc(nargs + 1, sizeof(char *));
	vals = xcalloc(shards, sizeof(*vals));
	fields = xcalloc(shards, sizeof(*fields));
	char count[16];
	snprintf(count, sizeof(count), "%lu", shards);
	args[0] = "EVAL";
	args[1] = init_script;
	args[2] = "1";
	args[3] = REGISTRY_SHARDMAP_KEY;
	args[4] = count;
	for (size_t k = 0; k < nlive; k++) {
		for (unsigned long s = k * shards / nlive; s < (k + 1) * shards / nlive; s++) {
			snprintf(fields[s], sizeof(fields[s]), "%lu", s);
			snprintf(vals[s], sizeof(vals[s]), "1 %s", live[k]->id);
			args[5 + 2 * s] = fields[s];
			args[6 + 2 * s] = vals[s];
		}
	}
	if (ctl_redis_argv(c, rc, &r, (int)(5 + 2 * shards), args) < 0) {
		free(live);
		goto out;
	}
	if (r.type == REDIS_REPLY_ERROR) {
		if (strncmp(r.str, "EXISTS", 6) == 0)
			fprintf(stderr,
				"mailctl: the cluster is initialised already (%s holds %s shards); "
				"refusing to initialise it again\n",
				REGISTRY_SHARDMAP_KEY, r.str + (r.str[6] ? 7 : 6));
		else
			fprintf(stderr, "mailctl: cluster init: %s\n", r.str);
		free(live);
		goto out;
	}
	if (c->json)
		printf("{\"shards\":%lu,\"epoch\":1,\"nodes\":[", shards);
	else
		printf("cluster initialised: %lu shards, epoch 1\n", shards);
	for (size_t k = 0; k < nlive; k++) {
		unsigned long lo = k * shards / nlive, hi = (k + 1) * shards / nlive;
		if (c->json) {
			printf("%s{\"id\":\"", k ? "," : "");
			ctl_json_str(stdout, live[k]->id);
			printf("\",\"shards\":%lu}", hi - lo);
		} else if (hi > lo) {
			printf("  %-16s shards %lu-%lu (%lu)\n", live[k]->id, lo, hi - 1, hi - lo);
		} else {
			printf("  %-16s no shards (more nodes than shards)\n", live[k]->id);
		}
	}
	if (c->json)
		printf("]}\n");
	free(live);
	status = CTL_OK;
out:
	ctl_reply_free(&r);
	free(args);
	free(vals);
	free(fields);
	free(m);
	redis_client_free(&rc);
	return status;
}

/* Rows for every registered node, and the map when there is one
 * (returned through map_r). Returns the count, -1 (printed). */
static int load_rows(struct ctl *c, struct redis_client *rc, struct ctl_member **members,
		     struct node_row **rows_r, struct shardmap **map_r, bool do_ping)
{
	int n = ctl_members(c, rc, members);
	if (n < 0)
		return -1;
	if (ctl_shardmap(c, rc, map_r) < 0) {
		free(*members);
		*members = NULL;
		return -1;
	}
	struct shardmap *map = *map_r;
	struct node_row *rows = xcalloc((size_t)n + 1, sizeof(*rows));
	for (int i = 0; i < n; i++) {
		struct node_row *row = &rows[i];
		row->m = &(*members)[i];
		if (map) {
			int idx = shardmap_id_index(map, row->m->id);
			if (idx >= 0) {
				for (uint32_t s = 0; s < map->count; s++) {
					if (map->primary[s] == idx) {
						row->shards++;
						if (!row->min_epoch || map->epoch[s] < row->min_epoch)
							row->min_epoch = map->epoch[s];
						if (map->epoch[s] > row->max_epoch)
							row->max_epoch = map->epoch[s];
					}
					for (int k = 0; k < REGISTRY_MAX_REPLICAS; k++)
						if (map->replicas[s * REGISTRY_MAX_REPLICAS + (uint32_t)k] == idx)
							row->replica_of++;
				}
				if (shardmap_spec_of(map, row->m->id, row->spec, sizeof(row->spec)) < 0)
					snprintf(row->spec, sizeof(row->spec), "(fragmented)");
			}
		} else if (row->m->alive) {
			registry_info_get(row->m->info, "shards", row->spec, sizeof(row->spec));
		}
		if (do_ping && row->m->alive && row->m->addr[0])
			row->pinged = ping(c, row->m->addr, &row->rtt_us, &row->uptime_ms, NULL, 0);
	}
	*rows_r = rows;
	return n;
}

static const char *row_state(const struct node_row *r)
{
	return !r->m->alive ? "down" : r->pinged ? "up" : "unreachable";
}

static void print_rows(struct ctl *c, struct node_row *rows, int n, const struct shardmap *map)
{
	bool replicas = false;
	for (int i = 0; i < n; i++)
		replicas |= rows[i].replica_of > 0;
	if (c->json) {
		printf("\"nodes\":[");
		for (int i = 0; i < n; i++) {
			struct node_row *r = &rows[i];
			printf("%s{\"id\":\"", i ? "," : "");
			ctl_json_str(stdout, r->m->id);
			printf("\",\"state\":\"%s\",\"addr\":\"", row_state(r));
			ctl_json_str(stdout, r->m->addr);
			printf("\",\"shards\":\"");
			ctl_json_str(stdout, r->spec);
			printf("\"");
			if (map)
				printf(",\"primary_of\":%d,\"min_epoch\":%" PRIu64
				       ",\"max_epoch\":%" PRIu64,
				       r->shards, r->min_epoch, r->max_epoch);
			if (replicas)
				printf(",\"replica_of\":%d", r->replica_of);
			if (r->pinged)
				printf(",\"rtt_us\":%" PRIu64 ",\"uptime_ms\":%" PRIu64, r->rtt_us,
				       r->uptime_ms);
			printf("}");
		}
		printf("]");
		return;
	}
	printf("%-16s %-12s %-22s %7s  %-8s%s %s\n", "node", "state", "address",
	       map ? "shards" : "", map ? "epoch" : "", replicas ? " replicas" : "",
	       map ? "ranges" : "shards (advertised)");
	for (int i = 0; i < n; i++) {
		struct node_row *r = &rows[i];
		char shards[16] = "", epoch[48] = "", rep[16] = "";
		if (map) {
			snprintf(shards, sizeof(shards), "%d", r->shards);
			if (r->shards && r->min_epoch == r->max_epoch)
				snprintf(epoch, sizeof(epoch), "%" PRIu64, r->max_epoch);
			else if (r->shards)
				snprintf(epoch, sizeof(epoch), "%" PRIu64 "-%" PRIu64, r->min_epoch,
					 r->max_epoch);
		}
		if (replicas)
			snprintf(rep, sizeof(rep), " %8d", r->replica_of);
		printf("%-16s %-12s %-22s %7s  %-8s%s %s", r->m->id, row_state(r),
		       r->m->addr[0] ? r->m->addr : "-", shards, epoch, rep,
		       r->spec[0] ? r->spec : "-");
		if (r->pinged)
			printf("  rtt=%" PRIu64 "us uptime=%" PRIu64 "s", r->rtt_us, r->uptime_ms / 1000);
		printf("\n");
	}
}

static int cluster_status(struct ctl *c)
{
	struct redis_client *rc = ctl_redis_open(c);
	if (!rc)
		return CTL_USAGE;
	struct ctl_member *members = NULL;
	struct node_row *rows = NULL;
	struct shardmap *map = NULL;
	int n = load_rows(c, rc, &members, &rows, &map, true);
	int status = CTL_FAIL;
	if (n < 0)
		goto out;
	if (!map) {
		if (c->json)
			printf("{\"initialised\":false,");
		else
			printf("no shard map: the cluster is not initialised (mailctl cluster init);\n"
			       "each node serves the shards of its shards.local setting\n");
		print_rows(c, rows, n, NULL);
		if (c->json)
			printf("}\n");
		goto out;
	}
	/* Shards without a primary, or whose primary is not up. */
	uint32_t unassigned = 0, down = 0;
	for (uint32_t s = 0; s < map->count; s++) {
		if (map->primary[s] < 0) {
			unassigned++;
			continue;
		}
		const char *id = map->ids[map->primary[s]];
		bool up = false;
		for (int i = 0; i < n; i++)
			if (strcmp(rows[i].m->id, id) == 0)
				up = rows[i].m->alive && rows[i].pinged;
		down += !up;
	}
	uint64_t min_epoch = 0;
	for (uint32_t s = 0; s < map->count; s++)
		if (map->epoch[s] && (!min_epoch || map->epoch[s] < min_epoch))
			min_epoch = map->epoch[s];
	if (c->json) {
		printf("{\"initialised\":true,\"shards\":%u,\"min_epoch\":%" PRIu64
		       ",\"max_epoch\":%" PRIu64 ",\"unassigned\":%u,\"primary_down\":%u,",
		       map->count, min_epoch, map->max_epoch, unassigned, down);
		print_rows(c, rows, n, map);
		printf("}\n");
	} else {
		printf("shard map: %u shards, epoch %" PRIu64, map->count, min_epoch);
		if (map->max_epoch != min_epoch)
			printf("..%" PRIu64, map->max_epoch);
		printf("\n");
		print_rows(c, rows, n, map);
		/* Primaries that are not registered at all. */
		for (size_t k = 0; k < map->nids; k++) {
			bool known = false;
			for (int i = 0; i < n; i++)
				known |= strcmp(rows[i].m->id, map->ids[k]) == 0;
			if (!known)
				printf("%-16s %-12s (in the shard map, never registered)\n", map->ids[k],
				       "unknown");
		}
		if (map->nbad)
			printf("malformed entries: %u\n", map->nbad);
		if (unassigned || down)
			printf("unavailable: %u shards without a primary, %u whose primary is not up\n",
			       unassigned, down);
		else
			printf("every shard has a live primary\n");
	}
	status = unassigned || down || map->nbad ? CTL_FAIL : CTL_OK;
out:
	shardmap_free(&map);
	free(rows);
	free(members);
	redis_client_free(&rc);
	return status;
}

int ctl_cmd_cluster(struct ctl *c, int argc, char **argv)
{
	if (argc >= 1 && strcmp(argv[0], "init") == 0)
		return cluster_init(c, argc - 1, argv + 1);
	if (argc == 1 && strcmp(argv[0], "status") == 0)
		return cluster_status(c);
	return usage_cluster();
}

/* ---- node list|add|drain|remove ------------------------------------------------ */

static int usage_node(void)
{
	fprintf(stderr, "usage: mailctl node list | node add ID | node drain ID | node remove ID\n");
	return CTL_USAGE;
}

static int node_list(struct ctl *c)
{
	struct redis_client *rc = ctl_redis_open(c);
	if (!rc)
		return CTL_USAGE;
	struct ctl_member *members = NULL;
	struct node_row *rows = NULL;
	struct shardmap *map = NULL;
	int n = load_rows(c, rc, &members, &rows, &map, true);
	int status = CTL_FAIL;
	if (n >= 0) {
		if (c->json)
			printf("{");
		print_rows(c, rows, n, map);
		if (c->json)
			printf("}\n");
		status = CTL_OK;
		for (int i = 0; i < n; i++)
			if (strcmp(row_state(&rows[i]), "up") != 0)
				status = CTL_FAIL;
	}
	shardmap_free(&map);
	free(rows);
	free(members);
	redis_client_free(&rc);
	return status;
}

static int node_change(struct ctl *c, const char *verb, const char *id)
{
	if (!registry_id_valid(id)) {
		fprintf(stderr, "mailctl: '%s' is not a node id\n", id);
		return CTL_USAGE;
	}
	struct redis_client *rc = ctl_redis_open(c);
	if (!rc)
		return CTL_USAGE;
	struct ctl_member *members = NULL;
	struct node_row *rows = NULL;
	struct shardmap *map = NULL;
	int n = load_rows(c, rc, &members, &rows, &map, false);
	int status = CTL_FAIL;
	if (n < 0)
		goto out;
	struct node_row *row = NULL;
	for (int i = 0; i < n; i++)
		if (strcmp(rows[i].m->id, id) == 0)
			row = &rows[i];
	int in_map = map ? shardmap_id_index(map, id) >= 0 : 0;
	if (!row && !in_map) {
		fprintf(stderr,
			"mailctl: node %s is not known: start mailnode with node.id=%s and "
			"redis.url=%s first\n",
			id, id, c->redis_url);
		goto out;
	}
	int owned = row ? row->shards : 0;
	if (!row && map) {
		for (uint32_t s = 0; s < map->count; s++)
			owned += map->primary[s] >= 0 && strcmp(map->ids[map->primary[s]], id) == 0;
	}
	if (strcmp(verb, "add") == 0) {
		char err[300] = "";
		uint64_t rtt, up;
		if (!row || !row->m->alive) {
			fprintf(stderr, "mailctl: node %s is down (no heartbeat in Redis); start it "
					"first\n", id);
			goto out;
		}
		if (!ping(c, row->m->addr, &rtt, &up, err, sizeof(err))) {
			fprintf(stderr, "mailctl: node %s is registered but unreachable: %s\n", id, err);
			goto out;
		}
		if (!map) {
			fprintf(stderr, "mailctl: no shard map yet: `mailctl cluster init` gives shards "
					"to every live node, %s included\n", id);
			goto out;
		}
		if (owned) {
			printf("node %s is up and primary of %d shards already\n", id, owned);
			status = CTL_OK;
			goto out;
		}
		fprintf(stderr,
			"mailctl: node %s is up and reachable, but giving it shards means copying "
			"them to it (checkpoint and WAL catch-up) and flipping their primary, which "
			"comes with replication: not possible yet\n",
			id);
		status = CTL_NOT_YET;
		goto out;
	}
	if (strcmp(verb, "drain") == 0) {
		if (!map) {
			fprintf(stderr, "mailctl: no shard map: nothing to drain (node %s serves its "
					"shards.local)\n", id);
			goto out;
		}
		if (!owned) {
			printf("node %s is primary of no shard: nothing to drain\n", id);
			status = CTL_OK;
			goto out;
		}
		fprintf(stderr,
			"mailctl: node %s is primary of %d shards; moving them to other nodes needs "
			"replication (not available yet). Stopping it makes those shards unavailable "
			"until it returns.\n",
			id, owned);
		status = CTL_NOT_YET;
		goto out;
	}
	/* remove */
	if (owned) {
		fprintf(stderr,
			"mailctl: node %s is primary of %d shards; removing it would lose them. Drain "
			"it first, which needs replication (not available yet).\n",
			id, owned);
		status = CTL_NOT_YET;
		goto out;
	}
	if (row && row->m->alive) {
		fprintf(stderr, "mailctl: node %s is running; stop it before removing it\n", id);
		goto out;
	}
	struct ctl_reply r;
	if (ctl_redis_cmd(c, rc, &r, "SREM %s %s", REGISTRY_NODES_SET, id) < 0)
		goto out;
	if (r.type == REDIS_REPLY_INTEGER) {
		printf("node %s removed from the membership\n", id);
		status = CTL_OK;
	} else {
		fprintf(stderr, "mailctl: SREM: %s\n", r.str ? r.str : "unexpected reply");
	}
	ctl_reply_free(&r);
out:
	shardmap_free(&map);
	free(rows);
	free(members);
	redis_client_free(&rc);
	return status;
}

int ctl_cmd_node(struct ctl *c, int argc, char **argv)
{
	if (argc == 1 && strcmp(argv[0], "list") == 0)
		return node_list(c);
	if (argc == 2 && (strcmp(argv[0], "add") == 0 || strcmp(argv[0], "drain") == 0 ||
			  strcmp(argv[0], "remove") == 0))
		return node_change(c, argv[0], argv[1]);
	return usage_node();
}
