#include "proto/registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/redis.h"

struct heartbeat {
	struct loop *loop;
	struct redis_client *rc;
	char kind[16];
	char key[160];
	char set[32];
	char *id;
	char *info;
	uint32_t interval_ms, ttl_ms;
	struct timer t;
	uint64_t count;
	bool was_ok;
	bool inflight;
	bool stopped; /* stop requested while a refresh was in flight */
};

const char *registry_member_key(const char *kind, const char *id, char *out, size_t out_len)
{
	snprintf(out, out_len, "mail:%s:%s", kind, id);
	return out;
}

int registry_info_get(const char *info, const char *key, char *out, size_t out_len)
{
	size_t kl = strlen(key);
	const char *p = info;
	while (p && *p) {
		while (*p == ' ')
			p++;
		if (strncmp(p, key, kl) == 0 && p[kl] == '=') {
			const char *v = p + kl + 1;
			size_t n = strcspn(v, " ");
			if (n >= out_len)
				return -1;
			memcpy(out, v, n);
			out[n] = '\0';
			return 0;
		}
		p = strchr(p, ' ');
	}
	return -1;
}

static void hb_free(struct heartbeat *hb)
{
	free(hb->id);
	free(hb->info);
	free(hb);
}

static void hb_reply(struct redis_client *c, redisReply *r, void *arg)
{
	struct heartbeat *hb = arg;
	UNUSED(c);
	hb->inflight = false;
	if (hb->stopped) {
		hb_free(hb);
		return;
	}
	bool ok = r && r->type != REDIS_REPLY_ERROR;
	if (ok) {
		hb->count++;
		if (!hb->was_ok)
			LOG_INFO("registry", 0, "heartbeat_ok", "key=%s", hb->key);
	} else if (hb->was_ok || hb->count == 0) {
		LOG_WARN("registry", 0, "heartbeat_failed", "key=%s", hb->key);
	}
	hb->was_ok = ok;
}

static void hb_tick(struct timer *t)
{
	struct heartbeat *hb = t->arg;
	timer_start(hb->loop, &hb->t, hb->interval_ms);
	if (hb->inflight)
		return;
	hb->inflight = true;
	char ttl[24];
	snprintf(ttl, sizeof(ttl), "%u", hb->ttl_ms);
	/* The SADD's reply is not awaited: the SET's callback covers both. */
	redis_command(hb->rc, NULL, NULL, "SADD %s %s", hb->set, hb->id);
	redis_command(hb->rc, hb_reply, hb, "SET %s %s PX %s", hb->key, hb->info, ttl);
}

struct heartbeat *heartbeat_start(struct loop *l, struct redis_client *rc, const char *kind,
				  const char *id, const char *info, uint32_t interval_ms,
				  uint32_t ttl_ms)
{
	struct heartbeat *hb = xcalloc(1, sizeof(*hb));
	hb->loop = l;
	hb->rc = rc;
	snprintf(hb->kind, sizeof(hb->kind), "%s", kind);
	registry_member_key(kind, id, hb->key, sizeof(hb->key));
	snprintf(hb->set, sizeof(hb->set), "mail:%s", strcmp(kind, "proxy") == 0 ? "proxies" : "nodes");
	hb->id = xstrdup(id);
	hb->info = xstrdup(info);
	hb->interval_ms = interval_ms;
	hb->ttl_ms = ttl_ms;
	timer_init(&hb->t, hb_tick, hb);
	timer_start(l, &hb->t, 0);
	return hb;
}

static void hb_deleted(struct redis_client *c, redisReply *r, void *arg)
{
	struct loop *l = arg;
	UNUSED(c);
	UNUSED(r);
	loop_release(l);
}

void heartbeat_stop(struct heartbeat **hbp)
{
	struct heartbeat *hb = *hbp;
	if (!hb)
		return;
	*hbp = NULL;
	timer_stop(hb->loop, &hb->t);
	/* A draining loop waits for the DEL so the member shows as gone. */
	loop_hold(hb->loop);
	redis_command(hb->rc, hb_deleted, hb->loop, "DEL %s", hb->key);
	if (hb->inflight)
		hb->stopped = true; /* freed by the pending reply */
	else
		hb_free(hb);
}

uint64_t heartbeat_count(const struct heartbeat *hb) { return hb->count; }

bool registry_spec_has(const char *spec, uint32_t shard)
{
	if (strcmp(spec, "all") == 0)
		return true;
	const char *p = spec;
	while (*p) {
		char *end;
		unsigned long a = strtoul(p, &end, 10), b = a;
		if (end == p)
			return false;
		if (*end == '-')
			b = strtoul(end + 1, &end, 10);
		if (shard >= a && shard <= b)
			return true;
		if (*end && *end != ',')
			return false;
		p = *end == ',' ? end + 1 : end;
	}
	return false;
}
