/* The in-process limiter (see limits_local.h). One chained hash table of
 * counters under a mutex; keys are "<kind>|<class or scope>|<ip or user>",
 * the last part being the only free-form one. Keys come from clients
 * (addresses, user names), so the hash is keyed (SipHash, random key). */
#include "proxy/limits_local.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>
#include <openssl/siphash.h>

#include "common/base.h"

#define KEY_MAX 300
#define SWEEP_STEP 16 /* buckets looked at per insert */

struct entry {
	struct entry *next;
	uint64_t hash;
	int64_t value;
	uint64_t expire_ms; /* 0: none (removed when value drops to 0) */
	size_t klen;
	char key[];
};

struct limits_local {
	pthread_mutex_t mu;
	struct entry **b;
	size_t nb, n, max;
	size_t sweep_at;
	uint64_t sipkey[2];
};

const char *limits_class_str(enum limits_class c)
{
	switch (c) {
	case LIMITS_SMTP: return "smtp";
	case LIMITS_SUBMISSION: return "submission";
	case LIMITS_IMAP: return "imap";
	case LIMITS_POP3: return "pop3";
	case LIMITS_CLASS_COUNT_: break;
	}
	return "?";
}

const char *limits_verdict_str(enum limits_verdict v)
{
	switch (v) {
	case LIMITS_OK: return "ok";
	case LIMITS_CONN_MANY: return "conn_per_ip";
	case LIMITS_CONN_RATE: return "conn_rate";
	case LIMITS_BANNED_IP: return "banned_ip";
	case LIMITS_BANNED_USER: return "banned_user";
	case LIMITS_SESSIONS: return "sessions";
	case LIMITS_MESSAGES: return "messages_per_day";
	}
	return "?";
}

uint64_t limits_delay_ms(const struct limits_policy *pol, uint32_t fails)
{
	if (fails <= 1 || pol->auth_delay_ms == 0)
		return 0;
	uint64_t d = pol->auth_delay_ms;
	for (uint32_t i = 2; i < fails && d < pol->auth_delay_max_ms; i++)
		d *= 2;
	return MIN(d, pol->auth_delay_max_ms);
}

struct limits_local *limits_local_new(size_t max_entries)
{
	struct limits_local *ll = xcalloc(1, sizeof(*ll));
	pthread_mutex_init(&ll->mu, NULL);
	ll->nb = 1024;
	ll->b = xcalloc(ll->nb, sizeof(*ll->b));
	ll->max = max_entries ? max_entries : 1;
	RAND_bytes((uint8_t *)ll->sipkey, sizeof(ll->sipkey));
	return ll;
}

void limits_local_free(struct limits_local **llp)
{
	struct limits_local *ll = *llp;
	if (!ll)
		return;
	*llp = NULL;
	for (size_t i = 0; i < ll->nb; i++)
		for (struct entry *e = ll->b[i], *next; e; e = next) {
			next = e->next;
			free(e);
		}
	free(ll->b);
	pthread_mutex_destroy(&ll->mu);
	free(ll);
}

/* ---- the table (callers hold mu) ----------------------------------------- */

static bool expired(const struct entry *e, uint64_t now)
{
	return e->expire_ms && e->expire_ms <= now;
}

static void unlink_entry(struct limits_local *ll, struct entry **pp)
{
	struct entry *e = *pp;
	*pp = e->next;
	free(e);
	ll->n--;
}

static void sweep_bucket(struct limits_local *ll, size_t i, uint64_t now)
{
	for (struct entry **pp = &ll->b[i]; *pp;) {
		if (expired(*pp, now))
			unlink_entry(ll, pp);
		else
			pp = &(*pp)->next;
	}
}

static void grow(struct limits_local *ll)
{
	size_t nb = ll->nb * 2;
	struct entry **b = xcalloc(nb, sizeof(*b));
	for (size_t i = 0; i < ll->nb; i++)
		for (struct entry *e = ll->b[i], *next; e; e = next) {
			next = e->next;
			e->next = b[e->hash & (nb - 1)];
			b[e->hash & (nb - 1)] = e;
		}
	free(ll->b);
	ll->b = b;
	ll->nb = nb;
	ll->sweep_at = 0;
}

/* The live entry for key, or NULL (an expired one is dropped on the way). */
static struct entry **find(struct limits_local *ll, const char *key, size_t klen, uint64_t h,
			   uint64_t now)
{
	for (struct entry **pp = &ll->b[h & (ll->nb - 1)]; *pp;) {
		struct entry *e = *pp;
		if (e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0) {
			if (expired(e, now)) {
				unlink_entry(ll, pp);
				return NULL;
			}
			return pp;
		}
		pp = &e->next;
	}
	return NULL;
}

static uint64_t hash_key(const struct limits_local *ll, const char *key, size_t klen)
{
	return SIPHASH_24(ll->sipkey, (const uint8_t *)key, klen);
}

static int64_t get(struct limits_local *ll, const char *key, uint64_t now)
{
	size_t klen = strlen(key);
	struct entry **pp = find(ll, key, klen, hash_key(ll, key, klen), now);
	return pp ? (*pp)->value : 0;
}

/* Add delta; a new (or expired) key starts at delta and expires after
 * window_ms (0: when it drops to 0). Returns the new value; a key that
 * cannot be stored reads as delta. */
static int64_t incr(struct limits_local *ll, const char *key, int64_t delta, uint64_t window_ms,
		    uint64_t now)
{
	size_t klen = strlen(key);
	uint64_t h = hash_key(ll, key, klen);
	struct entry **pp = find(ll, key, klen, h, now);
	if (pp) {
		struct entry *e = *pp;
		int64_t v = e->value += delta;
		if (v <= 0 && !e->expire_ms)
			unlink_entry(ll, pp);
		return v;
	}
	if (delta <= 0 && !window_ms)
		return delta;
	for (int i = 0; i < SWEEP_STEP; i++) {
		sweep_bucket(ll, ll->sweep_at, now);
		ll->sweep_at = (ll->sweep_at + 1) & (ll->nb - 1);
	}
	if (ll->n >= ll->max) {
		for (size_t i = 0; i < ll->nb; i++)
			sweep_bucket(ll, i, now);
		if (ll->n >= ll->max)
			return delta;
	}
	if (ll->n >= ll->nb)
		grow(ll);
	struct entry *e = xmalloc(sizeof(*e) + klen + 1);
	e->hash = h;
	e->value = delta;
	e->expire_ms = window_ms ? now + window_ms : 0;
	e->klen = klen;
	memcpy(e->key, key, klen + 1);
	e->next = ll->b[h & (ll->nb - 1)];
	ll->b[h & (ll->nb - 1)] = e;
	ll->n++;
	return delta;
}

static void del(struct limits_local *ll, const char *key, uint64_t now)
{
	size_t klen = strlen(key);
	struct entry **pp = find(ll, key, klen, hash_key(ll, key, klen), now);
	if (pp)
		unlink_entry(ll, pp);
}

/* "<kind>|<scope>|<name>", the name cut to fit. */
static const char *mkey(char *out, const char *kind, const char *scope, const char *name)
{
	snprintf(out, KEY_MAX, "%s|%s|%s", kind, scope, name);
	return out;
}

/* ---- the limits ------------------------------------------------------------- */

enum limits_verdict limits_local_conn_open(struct limits_local *ll, const struct limits_policy *pol,
					   enum limits_class cls, const char *ip, uint64_t now_ms,
					   bool force)
{
	char k[KEY_MAX];
	const char *cs = limits_class_str(cls);
	enum limits_verdict v = LIMITS_OK;
	pthread_mutex_lock(&ll->mu);
	if (pol->conn_rate &&
	    incr(ll, mkey(k, "r", cs, ip), 1, LIMITS_RATE_WINDOW_MS, now_ms) > pol->conn_rate)
		v = LIMITS_CONN_RATE;
	if (pol->conn_per_ip) {
		mkey(k, "c", cs, ip);
		if (v == LIMITS_OK && get(ll, k, now_ms) >= pol->conn_per_ip)
			v = LIMITS_CONN_MANY;
		if (v == LIMITS_OK || force)
			incr(ll, k, 1, 0, now_ms);
	}
	pthread_mutex_unlock(&ll->mu);
	return v;
}

void limits_local_conn_close(struct limits_local *ll, const struct limits_policy *pol,
			     enum limits_class cls, const char *ip)
{
	if (!pol->conn_per_ip)
		return;
	char k[KEY_MAX];
	pthread_mutex_lock(&ll->mu);
	incr(ll, mkey(k, "c", limits_class_str(cls), ip), -1, 0, 0);
	pthread_mutex_unlock(&ll->mu);
}

enum limits_verdict limits_local_auth_check(struct limits_local *ll, const struct limits_policy *pol,
					    const char *ip, const char *user, uint64_t now_ms,
					    uint32_t *fails_r)
{
	char k[KEY_MAX];
	enum limits_verdict v = LIMITS_OK;
	UNUSED(pol);
	pthread_mutex_lock(&ll->mu);
	if (get(ll, mkey(k, "b", "ip", ip), now_ms))
		v = LIMITS_BANNED_IP;
	else if (get(ll, mkey(k, "b", "user", user), now_ms))
		v = LIMITS_BANNED_USER;
	int64_t fi = get(ll, mkey(k, "f", "ip", ip), now_ms);
	int64_t fu = get(ll, mkey(k, "f", "user", user), now_ms);
	pthread_mutex_unlock(&ll->mu);
	*fails_r = (uint32_t)MIN(MAX(fi, fu), UINT32_MAX);
	return v;
}

enum limits_verdict limits_local_auth_fail(struct limits_local *ll, const struct limits_policy *pol,
					   const char *ip, const char *user, uint64_t now_ms,
					   uint32_t *fails_r)
{
	char k[KEY_MAX];
	enum limits_verdict v = LIMITS_OK;
	pthread_mutex_lock(&ll->mu);
	int64_t fi = 0, fu = 0;
	if (pol->auth_window_ms) {
		fi = incr(ll, mkey(k, "f", "ip", ip), 1, pol->auth_window_ms, now_ms);
		fu = incr(ll, mkey(k, "f", "user", user), 1, pol->auth_window_ms, now_ms);
	}
	if (pol->auth_ban_ms && pol->auth_fail_ip && fi >= pol->auth_fail_ip &&
	    !get(ll, mkey(k, "b", "ip", ip), now_ms)) {
		incr(ll, k, 1, pol->auth_ban_ms, now_ms);
		v = LIMITS_BANNED_IP;
	}
	if (pol->auth_ban_ms && pol->auth_fail_user && fu >= pol->auth_fail_user &&
	    !get(ll, mkey(k, "b", "user", user), now_ms)) {
		incr(ll, k, 1, pol->auth_ban_ms, now_ms);
		if (v == LIMITS_OK)
			v = LIMITS_BANNED_USER;
	}
	pthread_mutex_unlock(&ll->mu);
	*fails_r = (uint32_t)MIN(MAX(fi, fu), UINT32_MAX);
	return v;
}

void limits_local_auth_ok(struct limits_local *ll, const char *user)
{
	char k[KEY_MAX];
	pthread_mutex_lock(&ll->mu);
	del(ll, mkey(k, "f", "user", user), 0);
	pthread_mutex_unlock(&ll->mu);
}

enum limits_verdict limits_local_session_open(struct limits_local *ll, const struct limits_policy *pol,
					      enum limits_class cls, const char *user,
					      uint64_t now_ms, bool force)
{
	uint32_t max = pol->sessions[cls];
	if (!max)
		return LIMITS_OK;
	char k[KEY_MAX];
	enum limits_verdict v = LIMITS_OK;
	pthread_mutex_lock(&ll->mu);
	mkey(k, "s", limits_class_str(cls), user);
	if (get(ll, k, now_ms) >= max)
		v = LIMITS_SESSIONS;
	if (v == LIMITS_OK || force)
		incr(ll, k, 1, 0, now_ms);
	pthread_mutex_unlock(&ll->mu);
	return v;
}

void limits_local_session_close(struct limits_local *ll, const struct limits_policy *pol,
				enum limits_class cls, const char *user)
{
	if (!pol->sessions[cls])
		return;
	char k[KEY_MAX];
	pthread_mutex_lock(&ll->mu);
	incr(ll, mkey(k, "s", limits_class_str(cls), user), -1, 0, 0);
	pthread_mutex_unlock(&ll->mu);
}

enum limits_verdict limits_local_message(struct limits_local *ll, const struct limits_policy *pol,
					 const char *user, uint64_t now_ms, bool force,
					 uint32_t *count_r)
{
	*count_r = 0;
	if (!pol->messages_per_day)
		return LIMITS_OK;
	char k[KEY_MAX];
	enum limits_verdict v = LIMITS_OK;
	pthread_mutex_lock(&ll->mu);
	mkey(k, "m", "user", user);
	int64_t n = get(ll, k, now_ms);
	if (n >= pol->messages_per_day && !force)
		v = LIMITS_MESSAGES;
	else
		n = incr(ll, k, 1, LIMITS_DAY_MS, now_ms);
	pthread_mutex_unlock(&ll->mu);
	*count_r = (uint32_t)MIN(n, UINT32_MAX);
	return v;
}

size_t limits_local_sweep(struct limits_local *ll, uint64_t now_ms)
{
	pthread_mutex_lock(&ll->mu);
	for (size_t i = 0; i < ll->nb; i++)
		sweep_bucket(ll, i, now_ms);
	size_t n = ll->n;
	pthread_mutex_unlock(&ll->mu);
	return n;
}

size_t limits_local_entries(struct limits_local *ll)
{
	pthread_mutex_lock(&ll->mu);
	size_t n = ll->n;
	pthread_mutex_unlock(&ll->mu);
	return n;
}
