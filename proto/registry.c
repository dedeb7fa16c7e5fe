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

/* ---- shard map ------------------------------------------------------------ */

bool registry_id_valid(const char *id)
{
	size_t n = strlen(id);
	if (n == 0 || n >= REGISTRY_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = id[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

/* Decimal, no sign, no leading zero, within max. */
static int parse_dec(const char *s, size_t n, uint64_t max, uint64_t *v_r)
{
	uint64_t v = 0;
	if (n == 0 || n > 20 || (n > 1 && s[0] == '0'))
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		uint64_t d = (uint64_t)(s[i] - '0');
		if (v > (max - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*v_r = v;
	return 0;
}

static int intern_id(struct shardmap *m, const char *id, size_t len)
{
	char tmp[REGISTRY_ID_MAX];
	if (len == 0 || len >= sizeof(tmp))
		return -1;
	memcpy(tmp, id, len);
	tmp[len] = '\0';
	if (!registry_id_valid(tmp))
		return -1;
	int i = shardmap_id_index(m, tmp);
	if (i >= 0)
		return i;
	/* ids grows by doubling; there are at most as many ids as entries. */
	if ((m->nids & (m->nids - 1)) == 0)
		m->ids = xrealloc(m->ids, (m->nids ? 2 * m->nids : 1) * sizeof(*m->ids));
	memcpy(m->ids[m->nids], tmp, len + 1);
	return (int)m->nids++;
}

/* "<epoch> <primary> [<replica>...]" into shard s. */
static int parse_entry(struct shardmap *m, uint32_t s, const char *v)
{
	const char *p = v;
	size_t n = strcspn(p, " ");
	uint64_t epoch;
	if (parse_dec(p, n, UINT64_MAX, &epoch) < 0 || epoch == 0)
		return -1;
	p += n;
	int idx[1 + REGISTRY_MAX_REPLICAS];
	int k = 0;
	while (*p == ' ') {
		p++;
		n = strcspn(p, " ");
		if (k == 1 + REGISTRY_MAX_REPLICAS)
			return -1;
		int i = intern_id(m, p, n);
		if (i < 0)
			return -1;
		idx[k++] = i;
		p += n;
	}
	if (*p || k == 0)
		return -1;
	m->epoch[s] = epoch;
	m->primary[s] = idx[0];
	for (int r = 1; r < k; r++)
		m->replicas[s * REGISTRY_MAX_REPLICAS + (uint32_t)(r - 1)] = idx[r];
	if (epoch > m->max_epoch)
		m->max_epoch = epoch;
	return 0;
}

struct shardmap *shardmap_parse(const char *const *kv, size_t n, const char **error_r)
{
	const char *count = NULL;
	for (size_t i = 0; i + 1 < n; i += 2)
		if (kv[i] && strcmp(kv[i], "count") == 0)
			count = kv[i + 1];
	if (n == 0) {
		*error_r = "";
		return NULL;
	}
	uint64_t cnt;
	if (!count || parse_dec(count, strlen(count), REGISTRY_MAX_SHARDS, &cnt) < 0 || cnt == 0) {
		*error_r = "shard map has no valid \"count\"";
		return NULL;
	}
	struct shardmap *m = xcalloc(1, sizeof(*m));
	m->count = (uint32_t)cnt;
	m->epoch = xcalloc(cnt, sizeof(*m->epoch));
	m->primary = xmalloc(cnt * sizeof(*m->primary));
	m->replicas = xmalloc(cnt * REGISTRY_MAX_REPLICAS * sizeof(*m->replicas));
	for (uint64_t s = 0; s < cnt; s++)
		m->primary[s] = -1;
	for (uint64_t s = 0; s < cnt * REGISTRY_MAX_REPLICAS; s++)
		m->replicas[s] = -1;
	for (size_t i = 0; i + 1 < n; i += 2) {
		const char *k = kv[i], *v = kv[i + 1];
		if (!k || !v || strcmp(k, "count") == 0)
			continue;
		uint64_t s;
		if (parse_dec(k, strlen(k), UINT32_MAX, &s) < 0 || s >= cnt ||
		    parse_entry(m, (uint32_t)s, v) < 0)
			m->nbad++;
	}
	return m;
}

void shardmap_free(struct shardmap **mp)
{
	struct shardmap *m = *mp;
	if (!m)
		return;
	*mp = NULL;
	free(m->epoch);
	free(m->primary);
	free(m->replicas);
	free(m->ids);
	free(m);
}

int shardmap_id_index(const struct shardmap *m, const char *id)
{
	for (size_t i = 0; i < m->nids; i++)
		if (strcmp(m->ids[i], id) == 0)
			return (int)i;
	return -1;
}

int shardmap_spec_of(const struct shardmap *m, const char *id, char *out, size_t out_len)
{
	int idx = shardmap_id_index(m, id);
	size_t o = 0;
	int count = 0;
	if (out_len == 0)
		return -1;
	out[0] = '\0';
	if (idx < 0)
		return 0;
	for (uint32_t s = 0; s < m->count;) {
		if (m->primary[s] != idx) {
			s++;
			continue;
		}
		uint32_t e = s;
		while (e + 1 < m->count && m->primary[e + 1] == idx)
			e++;
		int w = e == s ? snprintf(out + o, out_len - o, "%s%u", o ? "," : "", s)
			       : snprintf(out + o, out_len - o, "%s%u-%u", o ? "," : "", s, e);
		if (w < 0 || (size_t)w >= out_len - o) {
			out[0] = '\0';
			return -1;
		}
		o += (size_t)w;
		count += (int)(e - s + 1);
		s = e + 1;
	}
	return count;
}
