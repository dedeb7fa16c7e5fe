/* The node's view of the shard map (proto/registry.h): read once at
 * start, then followed through the channel and a periodic re-read. Each
 * change is applied on a worker (opening a shard reads its files), one at
 * a time; a change that arrives meanwhile is applied after it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/loop.h"
#include "common/redis.h"
#include "node/node.h"
#include "proto/registry.h"

struct hgetall_wait {
	bool done;
	bool failed;
	char **kv;
	size_t n;
	char error[128];
};

/* Copy an HGETALL reply out (hiredis owns it only during the callback). */
static void take_hgetall(struct hgetall_wait *w, const redisReply *r)
{
	w->done = true;
	if (!r || r->type != REDIS_REPLY_ARRAY) {
		w->failed = true;
		snprintf(w->error, sizeof(w->error), "%s",
			 !r ? "no answer from Redis"
			    : r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
		return;
	}
	w->n = r->elements;
	w->kv = xcalloc(w->n ? w->n : 1, sizeof(char *));
	for (size_t i = 0; i < r->elements; i++) {
		const redisReply *e = r->element[i];
		w->kv[i] = e->type == REDIS_REPLY_STRING ? strndup(e->str, e->len) : NULL;
	}
}

static void free_kv(struct hgetall_wait *w)
{
	for (size_t i = 0; i < w->n; i++)
		free(w->kv[i]);
	free(w->kv);
	w->kv = NULL;
	w->n = 0;
}

static void on_sync_reply(struct redis_client *c, redisReply *r, void *arg)
{
	UNUSED(c);
	take_hgetall(arg, r);
}

static bool sync_done(void *arg)
{
	return ((struct hgetall_wait *)arg)->done;
}

int node_shardmap_read(const char *url, uint32_t timeout_ms, struct shardmap **map_r,
		       const char **error_r)
{
	static __thread char errbuf[160];
	*map_r = NULL;
	struct loop *l = loop_new(NULL, error_r);
	if (!l)
		return -1;
	struct redis_options ro = { .command_timeout_ms = timeout_ms,
				    .connect_timeout_ms = timeout_ms };
	struct redis_client *rc = redis_client_new(l, url, &ro, error_r);
	if (!rc) {
		loop_free(&l);
		return -1;
	}
	struct hgetall_wait w = { 0 };
	redis_command(rc, on_sync_reply, &w, "HGETALL %s", REGISTRY_SHARDMAP_KEY);
	loop_run_until(l, sync_done, &w, timeout_ms + 500);
	redis_client_free(&rc);
	loop_free(&l);
	int ret;
	if (!w.done || w.failed) {
		snprintf(errbuf, sizeof(errbuf), "%s", w.done ? w.error : "Redis timeout");
		*error_r = errbuf;
		ret = -1;
	} else {
		const char *why = NULL;
		*map_r = shardmap_parse((const char *const *)w.kv, w.n, &why);
		if (*map_r) {
			ret = 1;
		} else if (why[0]) {
			snprintf(errbuf, sizeof(errbuf), "%s", why);
			*error_r = errbuf;
			ret = -1;
		} else {
			ret = 0;
		}
	}
	free_kv(&w);
	return ret;
}

/* ---- following changes -------------------------------------------------- */

struct node_shardmap {
	struct loop *loop;
	struct redis_client *rc;
	struct node_store *ns;
	struct redis_sub *sub;
	struct timer t;
	uint32_t refresh_ms;
	bool reading;    /* HGETALL in flight */
	bool applying;   /* worker job in flight */
	bool again;      /* re-read once the current round is over */
	bool dead;       /* stopped while something was in flight */
	char *last;      /* what was applied: the serialised entries */
	bool warned;
	/* the job */
	struct work w;
	struct shardmap *map;
	char *key;
	int rc_apply;
	int nchanged;
	char error[200];
};

static void refresh(struct node_shardmap *f);

static void maybe_free(struct node_shardmap *f)
{
	if (!f->dead || f->reading || f->applying)
		return;
	shardmap_free(&f->map);
	free(f->key);
	free(f->last);
	free(f);
}

static void apply_run(struct work *w)
{
	struct node_shardmap *f = container_of(w, struct node_shardmap, w);
	const char *err = NULL;
	f->rc_apply = node_store_apply(f->ns, f->map, &f->nchanged, &err);
	if (f->rc_apply < 0)
		snprintf(f->error, sizeof(f->error), "%s", err ? err : "?");
}

static void apply_done(struct work *w)
{
	struct node_shardmap *f = container_of(w, struct node_shardmap, w);
	f->applying = false;
	if (f->rc_apply < 0) {
		/* Not remembered as applied: the next round tries again. */
		if (!f->warned)
			LOG_ERROR("node", 0, "shardmap_apply_failed", "reason=\"%s\"", f->error);
		f->warned = true;
		free(f->key);
	} else {
		f->warned = false;
		if (f->nchanged || !f->last)
			LOG_INFO("node", 0, "shardmap_applied",
				 "source=%s epoch=%llu changed=%d shards=%s",
				 f->map ? "shardmap" : "shards.local",
				 f->map ? (unsigned long long)f->map->max_epoch : 0ULL, f->nchanged,
				 node_store_spec(f->ns));
		free(f->last);
		f->last = f->key;
	}
	f->key = NULL;
	shardmap_free(&f->map);
	if (f->dead) {
		maybe_free(f);
		return;
	}
	if (f->again) {
		f->again = false;
		refresh(f);
	}
}

/* A compact fingerprint of the map (sorted fields), to skip re-applying
 * an unchanged map every poll. */
static char *fingerprint(char **kv, size_t n)
{
	struct buf b;
	buf_init(&b, 0);
	for (size_t i = 0; i + 1 < n; i += 2)
		buf_printf(&b, "%s=%s;", kv[i] ? kv[i] : "", kv[i + 1] ? kv[i + 1] : "");
	buf_append(&b, "", 1);
	return (char *)b.data;
}

static void on_map(struct redis_client *c, redisReply *r, void *arg)
{
	struct node_shardmap *f = arg;
	UNUSED(c);
	f->reading = false;
	if (f->dead) {
		maybe_free(f);
		return;
	}
	struct hgetall_wait w = { 0 };
	take_hgetall(&w, r);
	if (w.failed) {
		free_kv(&w);
		return; /* Redis away: keep serving what we have */
	}
	/* HGETALL field order is stable for an unchanged hash. */
	char *key = fingerprint(w.kv, w.n);
	if (f->last && strcmp(key, f->last) == 0) {
		free(key);
		free_kv(&w);
		return;
	}
	const char *why = NULL;
	struct shardmap *m = shardmap_parse((const char *const *)w.kv, w.n, &why);
	free_kv(&w);
	if (!m && why[0]) {
		if (!f->warned)
			LOG_ERROR("node", 0, "shardmap_bad", "reason=\"%s\"", why);
		f->warned = true;
		free(key);
		return;
	}
	if (m && m->nbad)
		LOG_WARN("node", 0, "shardmap_bad_entries", "count=%u", m->nbad);
	f->map = m;
	f->key = key;
	f->applying = true;
	loop_post_work(f->loop, &f->w, apply_run, apply_done);
}

static void refresh(struct node_shardmap *f)
{
	if (f->reading || f->applying) {
		f->again = true;
		return;
	}
	f->reading = true;
	redis_command(f->rc, on_map, f, "HGETALL %s", REGISTRY_SHARDMAP_KEY);
}

static void tick(struct timer *t)
{
	struct node_shardmap *f = t->arg;
	timer_start(f->loop, &f->t, f->refresh_ms);
	refresh(f);
}

static void on_published(struct redis_client *c, struct view channel, struct view msg,
			 void *arg)
{
	UNUSED(c);
	UNUSED(channel);
	UNUSED(msg);
	refresh(arg);
}

struct node_shardmap *node_shardmap_start(struct loop *l, struct redis_client *rc,
					  struct node_store *ns, uint32_t refresh_ms)
{
	struct node_shardmap *f = xcalloc(1, sizeof(*f));
	f->loop = l;
	f->rc = rc;
	f->ns = ns;
	f->refresh_ms = refresh_ms;
	f->sub = redis_subscribe(rc, REGISTRY_SHARDMAP_CHANNEL, on_published, f);
	timer_init(&f->t, tick, f);
	/* The first round only confirms what node_store_open read. */
	timer_start(l, &f->t, 0);
	return f;
}

void node_shardmap_stop(struct node_shardmap **fp)
{
	struct node_shardmap *f = *fp;
	if (!f)
		return;
	*fp = NULL;
	if (timer_armed(&f->t))
		timer_stop(f->loop, &f->t);
	if (f->sub)
		redis_unsubscribe(f->rc, &f->sub);
	f->dead = true;
	maybe_free(f);
}
