/* Routing: which node serves a mailbox. See proxy_internal.h for the
 * sources; the map of one thread is rebuilt whole on every refresh and
 * swapped in, so a lookup never sees half a map. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/address.h"
#include "common/log.h"
#include "common/redis.h"
#include "proto/registry.h"
#include "proxy/proxy_internal.h"

#define ROUTE_MAX_SHARDS 65535u
#define ROUTE_MAX_NODES 1024u

struct route_node {
	char id[64];
	char addr[PROXY_NODE_ADDR_MAX];
};

struct route_map {
	uint32_t nshards;
	uint64_t *epoch;  /* per shard */
	int32_t *node;    /* per shard: index into nodes, -1 = none */
	struct route_node *nodes;
	size_t nnodes;
	bool from_shardmap;
};

/* The shard map as read, until the members' addresses are in. */
struct shardmap_entry {
	uint32_t shard;
	uint64_t epoch;
	char primary[64];
};

struct route {
	struct proxy *p;
	struct route_map *map;
	struct timer t;
	uint32_t refresh_ms;
	uint64_t gen;
	size_t rr;
	struct redis_sub *sub;
	bool busy;  /* a refresh is waiting for Redis */
	bool again; /* a change was published meanwhile */
	bool dead;  /* route_free ran while busy */
	bool warned;
	/* refresh in progress */
	uint32_t sm_count;
	struct shardmap_entry *sm;
	size_t n_sm;
	char **ids;
	size_t nids;
};

static void map_free(struct route_map *m)
{
	if (!m)
		return;
	free(m->epoch);
	free(m->node);
	free(m->nodes);
	free(m);
}

static struct route_map *map_new(uint32_t nshards)
{
	struct route_map *m = xcalloc(1, sizeof(*m));
	m->nshards = nshards;
	m->epoch = xcalloc(nshards, sizeof(*m->epoch));
	m->node = xmalloc(nshards * sizeof(*m->node));
	for (uint32_t i = 0; i < nshards; i++)
		m->node[i] = -1;
	return m;
}

static void refresh_scratch_free(struct route *r)
{
	free(r->sm);
	r->sm = NULL;
	r->n_sm = 0;
	r->sm_count = 0;
	for (size_t i = 0; i < r->nids; i++)
		free(r->ids[i]);
	free(r->ids);
	r->ids = NULL;
	r->nids = 0;
}

static void route_destroy(struct route *r)
{
	refresh_scratch_free(r);
	map_free(r->map);
	free(r);
}

static void install(struct route *r, struct route_map *m)
{
	uint32_t served = 0;
	for (uint32_t i = 0; i < m->nshards; i++)
		served += m->node[i] >= 0;
	bool changed = !r->map || r->map->nshards != m->nshards || r->map->nnodes != m->nnodes;
	if (!changed) {
		uint32_t before = 0;
		for (uint32_t i = 0; i < r->map->nshards; i++)
			before += r->map->node[i] >= 0;
		changed = before != served;
	}
	if (changed)
		LOG_INFO("route", 0, "map", "source=%s shards=%u served=%u nodes=%zu",
			 m->from_shardmap ? "shardmap" : "membership", m->nshards, served, m->nnodes);
	map_free(r->map);
	r->map = m;
	r->gen++;
}

static uint32_t parse_u32(const char *s, bool *ok)
{
	char *end;
	unsigned long v = strtoul(s, &end, 10);
	*ok = end != s && *end == '\0' && v <= UINT32_MAX;
	return (uint32_t)v;
}

/* Members' info arrived (MGET, in r->ids order): build the map. */
static void build(struct route *r, redisReply *rep)
{
	struct route_map *m = NULL;
	size_t n = rep->elements;
	if (n > r->nids)
		n = r->nids;
	if (r->sm_count) {
		m = map_new(r->sm_count);
		m->from_shardmap = true;
		m->nodes = xcalloc(n ? n : 1, sizeof(*m->nodes));
		for (size_t k = 0; k < r->n_sm; k++) {
			const struct shardmap_entry *e = &r->sm[k];
			if (e->shard >= m->nshards)
				continue;
			m->epoch[e->shard] = e->epoch;
			for (size_t i = 0; i < n; i++) {
				redisReply *v = rep->element[i];
				if (v->type != REDIS_REPLY_STRING || strcmp(r->ids[i], e->primary) != 0)
					continue;
				/* one route_node per live member */
				size_t idx = m->nnodes;
				for (size_t q = 0; q < m->nnodes; q++)
					if (strcmp(m->nodes[q].id, e->primary) == 0)
						idx = q;
				if (idx == m->nnodes) {
					if (registry_info_get(v->str, "addr", m->nodes[idx].addr,
							      sizeof(m->nodes[idx].addr)) < 0)
						break;
					snprintf(m->nodes[idx].id, sizeof(m->nodes[idx].id), "%s",
						 e->primary);
					m->nnodes++;
				}
				m->node[e->shard] = (int32_t)idx;
				break;
			}
		}
	} else {
		/* No shard map yet: each live node's advertised shards. */
		uint32_t nshards = 0;
		for (size_t i = 0; i < n && !nshards; i++) {
			redisReply *v = rep->element[i];
			char ns[16];
			bool ok;
			if (v->type == REDIS_REPLY_STRING &&
			    registry_info_get(v->str, "nshards", ns, sizeof(ns)) == 0) {
				nshards = parse_u32(ns, &ok);
				if (!ok || nshards > ROUTE_MAX_SHARDS)
					nshards = 0;
			}
		}
		if (!nshards) {
			if (!r->warned)
				LOG_WARN("route", 0, "no_nodes", "live=0");
			r->warned = true;
			m = map_new(1);
			install(r, m);
			return;
		}
		r->warned = false;
		m = map_new(nshards);
		m->nodes = xcalloc(n ? n : 1, sizeof(*m->nodes));
		for (size_t i = 0; i < n; i++) {
			redisReply *v = rep->element[i];
			char ns[16], spec[256];
			bool ok;
			if (v->type != REDIS_REPLY_STRING ||
			    registry_info_get(v->str, "nshards", ns, sizeof(ns)) < 0 ||
			    registry_info_get(v->str, "shards", spec, sizeof(spec)) < 0)
				continue;
			if (parse_u32(ns, &ok) != nshards || !ok) {
				LOG_WARN("route", 0, "shard_count_mismatch", "node=%s nshards=%s want=%u",
					 r->ids[i], ns, nshards);
				continue;
			}
			struct route_node *rn = &m->nodes[m->nnodes];
			if (registry_info_get(v->str, "addr", rn->addr, sizeof(rn->addr)) < 0)
				continue;
			snprintf(rn->id, sizeof(rn->id), "%s", r->ids[i]);
			for (uint32_t s = 0; s < nshards; s++)
				if (m->node[s] < 0 && registry_spec_has(spec, s))
					m->node[s] = (int32_t)m->nnodes;
			m->nnodes++;
		}
	}
	install(r, m);
}

static void refresh_done(struct route *r)
{
	refresh_scratch_free(r);
	r->busy = false;
	if (r->dead) {
		route_destroy(r);
		return;
	}
	if (r->again) {
		r->again = false;
		timer_stop(r->p->loop, &r->t);
		timer_start(r->p->loop, &r->t, 0);
	}
}

static void on_members(struct redis_client *c, redisReply *rep, void *arg)
{
	struct route *r = arg;
	UNUSED(c);
	if (!r->dead && rep && rep->type == REDIS_REPLY_ARRAY)
		build(r, rep);
	refresh_done(r);
}

static void on_ids(struct redis_client *c, redisReply *rep, void *arg)
{
	struct route *r = arg;
	if (r->dead || !rep || rep->type != REDIS_REPLY_ARRAY) {
		refresh_done(r);
		return;
	}
	size_t n = rep->elements < ROUTE_MAX_NODES ? rep->elements : ROUTE_MAX_NODES;
	r->ids = xcalloc(n ? n : 1, sizeof(char *));
	const char **argv = xcalloc(n + 1, sizeof(char *));
	char (*keys)[160] = xcalloc(n ? n : 1, sizeof(*keys));
	argv[0] = "MGET";
	for (size_t i = 0; i < n; i++) {
		redisReply *e = rep->element[i];
		if (e->type != REDIS_REPLY_STRING)
			continue;
		r->ids[r->nids] = xstrdup(e->str);
		registry_member_key("node", e->str, keys[r->nids], sizeof(keys[0]));
		argv[1 + r->nids] = keys[r->nids];
		r->nids++;
	}
	if (r->nids == 0) {
		free(argv);
		free(keys);
		redisReply empty = { .type = REDIS_REPLY_ARRAY };
		build(r, &empty);
		refresh_done(r);
		return;
	}
	redis_command_argv(c, on_members, r, (int)(r->nids + 1), argv, NULL);
	free(argv);
	free(keys);
}

static void on_shardmap(struct redis_client *c, redisReply *rep, void *arg)
{
	struct route *r = arg;
	UNUSED(c);
	if (r->dead || !rep || rep->type != REDIS_REPLY_ARRAY)
		return; /* on_ids (pipelined behind) finishes the refresh */
	size_t n = rep->elements / 2;
	r->sm = xcalloc(n ? n : 1, sizeof(*r->sm));
	for (size_t i = 0; i + 1 < rep->elements; i += 2) {
		redisReply *k = rep->element[i], *v = rep->element[i + 1];
		if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
			continue;
		bool ok;
		if (strcmp(k->str, "count") == 0) {
			uint32_t cnt = parse_u32(v->str, &ok);
			if (ok && cnt > 0 && cnt <= ROUTE_MAX_SHARDS)
				r->sm_count = cnt;
			continue;
		}
		uint32_t shard = parse_u32(k->str, &ok);
		if (!ok)
			continue;
		struct shardmap_entry *e = &r->sm[r->n_sm];
		char primary[64];
		unsigned long long epoch;
		if (sscanf(v->str, "%llu %63s", &epoch, primary) != 2)
			continue;
		e->shard = shard;
		e->epoch = epoch;
		snprintf(e->primary, sizeof(e->primary), "%s", primary);
		r->n_sm++;
	}
}

static void refresh(struct route *r)
{
	if (r->busy) {
		r->again = true;
		return;
	}
	r->busy = true;
	struct redis_client *rc = r->p->redis;
	/* Pipelined: the map, then the members (whose reply finishes). */
	redis_command(rc, on_shardmap, r, "HGETALL %s", REGISTRY_SHARDMAP_KEY);
	redis_command(rc, on_ids, r, "SMEMBERS %s", REGISTRY_NODES_SET);
}

static void tick(struct timer *t)
{
	struct route *r = t->arg;
	timer_start(r->p->loop, &r->t, r->refresh_ms);
	refresh(r);
}

static void on_published(struct redis_client *c, struct view channel, struct view msg,
			 void *arg)
{
	struct route *r = arg;
	UNUSED(c);
	UNUSED(channel);
	UNUSED(msg);
	refresh(r);
}

struct route *route_new(struct proxy *p, const char **error_r)
{
	struct route *r = xcalloc(1, sizeof(*r));
	r->p = p;
	r->refresh_ms = (uint32_t)config_get_duration_ms(p->cfg, "route.refresh");
	timer_init(&r->t, tick, r);
	const char *node = config_get_str(p->cfg, "route.node");
	if (!p->redis) {
		if (!node) {
			*error_r = "no redis.url and no route.node: nowhere to route mail";
			free(r);
			return NULL;
		}
		uint32_t n = (uint32_t)config_get_int(p->cfg, "route.shards");
		struct route_map *m = map_new(n);
		m->nodes = xcalloc(1, sizeof(*m->nodes));
		snprintf(m->nodes[0].id, sizeof(m->nodes[0].id), "static");
		snprintf(m->nodes[0].addr, sizeof(m->nodes[0].addr), "%s", node);
		m->nnodes = 1;
		for (uint32_t i = 0; i < n; i++)
			m->node[i] = 0;
		install(r, m);
		return r;
	}
	r->sub = redis_subscribe(p->redis, REGISTRY_SHARDMAP_CHANNEL, on_published, r);
	timer_start(p->loop, &r->t, 0);
	return r;
}

void route_free(struct route **rp)
{
	struct route *r = *rp;
	if (!r)
		return;
	*rp = NULL;
	if (timer_armed(&r->t))
		timer_stop(r->p->loop, &r->t);
	if (r->sub)
		redis_unsubscribe(r->p->redis, &r->sub);
	if (r->busy)
		r->dead = true; /* the pending reply frees it */
	else
		route_destroy(r);
}

enum route_result route_lookup(struct route *r, const char *address, struct route_target *out)
{
	memset(out, 0, sizeof(*out));
	const char *why = NULL;
	if (address_owner(view_cstr(address), out->owner, sizeof(out->owner), out->tag,
			  sizeof(out->tag), &why) < 0)
		return ROUTE_BAD_ADDRESS;
	struct route_map *m = r->map;
	if (!m || !m->nnodes)
		return ROUTE_UNAVAILABLE;
	out->shard = address_shard(view_cstr(out->owner), m->nshards);
	int32_t idx = m->node[out->shard];
	if (idx < 0)
		return ROUTE_UNAVAILABLE;
	out->epoch = m->epoch[out->shard];
	snprintf(out->addr, sizeof(out->addr), "%s", m->nodes[idx].addr);
	return ROUTE_OK;
}

const char *route_any_node(struct route *r)
{
	struct route_map *m = r->map;
	if (!m || !m->nnodes)
		return NULL;
	return m->nodes[r->rr++ % m->nnodes].addr;
}

uint32_t route_served(const struct route *r, uint32_t *nshards_r)
{
	const struct route_map *m = r->map;
	uint32_t served = 0;
	*nshards_r = m ? m->nshards : 0;
	if (m)
		for (uint32_t i = 0; i < m->nshards; i++)
			served += m->node[i] >= 0;
	return served;
}

uint64_t route_generation(const struct route *r) { return r->gen; }
