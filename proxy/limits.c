/* Limits and the session register (see limits.h): one Lua script for every
 * check, the in-process limiter as fallback and mirror, a refresh timer
 * per thread that keeps what is open alive in Redis. */
#include "proxy/limits.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/loop.h"
#include "common/metrics.h"
#include "common/redis.h"

#define LIMITS_LOCAL_MAX (1u << 20) /* in-process entries */
#define PROBE_MS 500                /* looking for Redis while it is away */
#define TOUCH_BATCH 256             /* handles per refresh call */
#define KEY_LEN 400

/* One script, the operation in ARGV[1]: one script cache entry means that
 * after a Redis restart every call falls back to EVAL in issue order. */
static const char limits_lua[] =
	"if redis.replicate_commands then redis.replicate_commands() end\n"
	"local op = ARGV[1]\n"
	"local t = redis.call('TIME')\n"
	"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
	"local function n(i) return tonumber(ARGV[i]) end\n"
	"local function count(k) return tonumber(redis.call('GET', k) or '0') end\n"
	/* KEYS: open connections (zset), new connections; ARGV: member,
	 * ttl, max open, max new per window, window */
	"if op == 'conn' then\n"
	"  local rate = 0\n"
	"  if n(5) > 0 then\n"
	"    rate = redis.call('INCR', KEYS[2])\n"
	"    if rate == 1 then redis.call('PEXPIRE', KEYS[2], n(6)) end\n"
	"    if rate > n(5) then return {2, 0, rate} end\n"
	"  end\n"
	"  if n(4) == 0 then return {0, 0, rate} end\n"
	"  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n"
	"  local open = redis.call('ZCARD', KEYS[1])\n"
	"  if open >= n(4) then return {1, open, rate} end\n"
	"  redis.call('ZADD', KEYS[1], now + n(3), ARGV[2])\n"
	"  redis.call('PEXPIRE', KEYS[1], n(3))\n"
	"  return {0, open + 1, rate}\n"
	/* KEYS: ban ip, ban user, failures ip, failures user */
	"elseif op == 'auth' then\n"
	"  local ban = 0\n"
	"  if redis.call('EXISTS', KEYS[1]) == 1 then ban = 1\n"
	"  elseif redis.call('EXISTS', KEYS[2]) == 1 then ban = 2 end\n"
	"  return {ban, count(KEYS[3]), count(KEYS[4])}\n"
	/* same KEYS; ARGV: window, ban, max ip, max user */
	"elseif op == 'fail' then\n"
	"  if n(2) == 0 then return {0, 0, 0} end\n"
	"  local fi = redis.call('INCR', KEYS[3])\n"
	"  if fi == 1 then redis.call('PEXPIRE', KEYS[3], n(2)) end\n"
	"  local fu = redis.call('INCR', KEYS[4])\n"
	"  if fu == 1 then redis.call('PEXPIRE', KEYS[4], n(2)) end\n"
	"  local ban = 0\n"
	"  if n(3) > 0 and n(4) > 0 and fi >= n(4) and\n"
	"     redis.call('SET', KEYS[1], '1', 'PX', n(3), 'NX') then ban = 1 end\n"
	"  if n(3) > 0 and n(5) > 0 and fu >= n(5) and\n"
	"     redis.call('SET', KEYS[2], '1', 'PX', n(3), 'NX') and ban == 0 then ban = 2 end\n"
	"  return {ban, fi, fu}\n"
	/* KEYS: failures user */
	"elseif op == 'ok' then\n"
	"  return redis.call('DEL', KEYS[1])\n"
	/* KEYS: the user's sessions (zset), the session (hash); ARGV: member,
	 * ttl, max, field, value, ... */
	"elseif op == 'sess' then\n"
	"  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n"
	"  local open = redis.call('ZCARD', KEYS[1])\n"
	"  if n(4) > 0 and open >= n(4) then return {1, open} end\n"
	"  redis.call('ZADD', KEYS[1], now + n(3), ARGV[2])\n"
	"  redis.call('PEXPIRE', KEYS[1], n(3))\n"
	"  redis.call('HSET', KEYS[2], unpack(ARGV, 5))\n"
	"  redis.call('PEXPIRE', KEYS[2], n(3))\n"
	"  return {0, open + 1}\n"
	/* KEYS: the user's messages; ARGV: max, window */
	"elseif op == 'msg' then\n"
	"  local c = count(KEYS[1])\n"
	"  if c >= n(2) then return {1, c} end\n"
	"  c = redis.call('INCR', KEYS[1])\n"
	"  if c == 1 then redis.call('PEXPIRE', KEYS[1], n(3)) end\n"
	"  return {0, c}\n"
	/* ARGV[2]: ttl; per key: 'z', member | 'h', n, n field/value pairs */
	"elseif op == 'touch' or op == 'drop' then\n"
	"  local ttl, i = n(2), 3\n"
	"  for k = 1, #KEYS do\n"
	"    if ARGV[i] == 'z' then\n"
	"      if op == 'touch' then\n"
	"        redis.call('ZADD', KEYS[k], now + ttl, ARGV[i + 1])\n"
	"        redis.call('PEXPIRE', KEYS[k], ttl)\n"
	"      else\n"
	"        redis.call('ZREM', KEYS[k], ARGV[i + 1])\n"
	"      end\n"
	"      i = i + 2\n"
	"    else\n"
	"      local f = tonumber(ARGV[i + 1])\n"
	"      if op == 'touch' then\n"
	"        redis.call('HSET', KEYS[k], unpack(ARGV, i + 2, i + 1 + 2 * f))\n"
	"        redis.call('PEXPIRE', KEYS[k], ttl)\n"
	"      else\n"
	"        redis.call('DEL', KEYS[k])\n"
	"      end\n"
	"      i = i + 2 + 2 * f\n"
	"    end\n"
	"  end\n"
	"  return #KEYS\n"
	"end\n"
	"return redis.error_reply('limits: unknown op')\n";

/* ---- process-wide state ------------------------------------------------------- */

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
	unsigned refs;
	struct limits_local *ll;
	struct redis_script script;
	char boot[24];          /* tells this process' members from a previous one's */
	unsigned local_threads; /* threads using the in-process limits */
	uint64_t serial;
	struct metrics_gauge *m_local;
	struct metrics_counter *m_fallbacks;
	struct metrics_counter *m_errors;
	struct metrics_counter *m_refused[LIMITS_MESSAGES + 1];
} g;

/* ---- types -------------------------------------------------------------------- */

enum op {
	OP_NONE,
	OP_CONN,
	OP_AUTH_CHECK,
	OP_AUTH_FAIL,
	OP_SESSION,
	OP_MESSAGE,
};

struct limits {
	struct proxy *p;
	struct loop *loop;
	struct redis_client *redis; /* NULL: in-process only */
	struct limits_policy pol;
	unsigned bad_commands, auth_fail_conn;
	uint64_t refresh_ms, ttl_ms;
	bool local; /* this thread uses the in-process limits */
	bool warned;
	struct timer refresh, probe;
	struct limits_conn *live; /* counted connections and sessions */
};

struct limits_conn {
	struct limits *l;
	struct limits_conn *prev, *next; /* l->live */
	enum proxy_service svc;
	enum limits_class cls;
	uint64_t sid;
	uint64_t serial;
	bool in_live;
	bool counted; /* the connection counts, here and in Redis */
	bool session; /* a session is registered */
	bool closed;  /* the owner let go: freed once no reply is due */
	unsigned inflight;
	enum op op;
	limits_cb cb;
	void *arg;
	enum limits_verdict verdict;
	struct timer timer; /* delivers the verdict */
	uint16_t port;
	uint64_t since;     /* session start, unix seconds */
	char *user;         /* of the pending call */
	char *sess_user;
	char *node;
	char ip[INET6_ADDRSTRLEN];
	char ipkey[INET6_ADDRSTRLEN + 4]; /* the address, or its /64 */
};

/* ---- small things ------------------------------------------------------------- */

static enum limits_class class_of(enum proxy_service svc)
{
	switch (svc) {
	case SVC_SMTP: return LIMITS_SMTP;
	case SVC_SUBMISSION:
	case SVC_SUBMISSIONS: return LIMITS_SUBMISSION;
	case SVC_IMAP:
	case SVC_IMAPS: return LIMITS_IMAP;
	case SVC_POP3:
	case SVC_POP3S:
	case SVC_COUNT_: break;
	}
	return LIMITS_POP3;
}

static void peer_addr(struct limits_conn *h, const struct sockaddr *sa)
{
	snprintf(h->ip, sizeof(h->ip), "?");
	snprintf(h->ipkey, sizeof(h->ipkey), "?");
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &in->sin_addr, h->ip, sizeof(h->ip));
		h->port = ntohs(in->sin_port);
		snprintf(h->ipkey, sizeof(h->ipkey), "%s", h->ip);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		h->port = ntohs(in6->sin6_port);
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
			inet_ntop(AF_INET, in6->sin6_addr.s6_addr + 12, h->ip, sizeof(h->ip));
			snprintf(h->ipkey, sizeof(h->ipkey), "%s", h->ip);
			return;
		}
		inet_ntop(AF_INET6, &in6->sin6_addr, h->ip, sizeof(h->ip));
		/* One host usually has a whole /64: count it as one. */
		struct in6_addr net = in6->sin6_addr;
		memset(net.s6_addr + 8, 0, 8);
		char t[INET6_ADDRSTRLEN];
		inet_ntop(AF_INET6, &net, t, sizeof(t));
		snprintf(h->ipkey, sizeof(h->ipkey), "%s/64", t);
	}
}

static void set_str(char **dst, const char *src)
{
	free(*dst);
	*dst = src ? xstrdup(src) : NULL;
}

static const char *member(const struct limits_conn *h, char *out, size_t len)
{
	snprintf(out, len, "%s:%s.%" PRIu64, h->l->p->id, g.boot, h->serial);
	return out;
}

static const char *session_key(const struct limits_conn *h, char *out, size_t len)
{
	snprintf(out, len, "mail:session:%s:%s.%" PRIu64, h->l->p->id, g.boot, h->serial);
	return out;
}

static void refused(struct limits_conn *h, enum limits_verdict v, const char *what)
{
	if (v == LIMITS_OK)
		return;
	metrics_inc(g.m_refused[v]);
	char q[300];
	LOG_INFO("limits", h->sid, "refused", "reason=%s service=%s ip=%s%s%s", limits_verdict_str(v),
		 proxy_service_str(h->svc), h->ipkey, what ? " user=" : "",
		 what ? log_quote_cstr(q, sizeof(q), what) : "");
}

/* ---- mode ---------------------------------------------------------------------- */

static void set_local(struct limits *l, bool local, const char *why)
{
	if (l->local == local || !l->redis || loop_stopping(l->loop))
		return;
	l->local = local;
	pthread_mutex_lock(&g_mu);
	if (local) {
		metrics_inc(g.m_fallbacks);
		if (g.local_threads++ == 0) {
			metrics_gauge_set(g.m_local, 1);
			LOG_WARN("limits", 0, "redis_unreachable", "using=in-process why=%s", why);
		}
	} else if (--g.local_threads == 0) {
		metrics_gauge_set(g.m_local, 0);
		LOG_INFO("limits", 0, "redis_back", "using=redis");
	}
	pthread_mutex_unlock(&g_mu);
	if (local) {
		timer_start(l->loop, &l->probe, PROBE_MS);
	} else {
		timer_stop(l->loop, &l->probe);
		/* Write back what was opened meanwhile (and what a restarted
		 * Redis forgot) now, not a refresh period later. */
		timer_start(l->loop, &l->refresh, 0);
	}
}

static bool use_redis(struct limits *l)
{
	if (!l->redis)
		return false;
	if (l->local && redis_client_connected(l->redis))
		set_local(l, false, NULL);
	return !l->local;
}

/* A reply: NULL means Redis is away; an error reply is this call's
 * failure (logged once per thread), not an outage. Returns the number of
 * integers put in v, or -1. */
static int parse_reply(struct limits *l, redisReply *r, int64_t *v, size_t nv)
{
	if (!r) {
		set_local(l, true, "no reply");
		return -1;
	}
	if (r->type == REDIS_REPLY_ERROR) {
		metrics_inc(g.m_errors);
		if (!l->warned) {
			l->warned = true;
			char q[200];
			LOG_WARN("limits", 0, "redis_error", "error=%s",
				 log_quote(q, sizeof(q), r->str, r->len));
		}
		return -1;
	}
	if (r->type == REDIS_REPLY_INTEGER && nv >= 1) {
		v[0] = r->integer;
		return 1;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements > nv)
		return -1;
	for (size_t i = 0; i < r->elements; i++) {
		if (r->element[i]->type != REDIS_REPLY_INTEGER)
			return -1;
		v[i] = r->element[i]->integer;
	}
	return (int)r->elements;
}

/* ---- handles ------------------------------------------------------------------ */

static void live_add(struct limits_conn *h)
{
	struct limits *l = h->l;
	if (h->in_live)
		return;
	h->in_live = true;
	h->prev = NULL;
	h->next = l->live;
	if (l->live)
		l->live->prev = h;
	l->live = h;
}

static void live_del(struct limits_conn *h)
{
	struct limits *l = h->l;
	if (!h->in_live)
		return;
	h->in_live = false;
	if (h->prev)
		h->prev->next = h->next;
	else
		l->live = h->next;
	if (h->next)
		h->next->prev = h->prev;
	h->prev = h->next = NULL;
}

static void handle_free(struct limits_conn *h)
{
	free(h->user);
	free(h->sess_user);
	free(h->node);
	free(h);
}

static void maybe_free(struct limits_conn *h)
{
	if (h->closed && h->inflight == 0 && !timer_armed(&h->timer))
		handle_free(h);
}

static void deliver_cb(struct timer *t)
{
	struct limits_conn *h = t->arg;
	limits_cb cb = h->cb;
	void *arg = h->arg;
	h->cb = NULL;
	h->op = OP_NONE;
	set_str(&h->user, NULL); /* an idle connection keeps only what it registered */
	if (h->closed) {
		maybe_free(h);
		return;
	}
	/* Last touch: the callback may close (and free) the handle. */
	if (cb)
		cb(arg, h->verdict);
}

static void deliver(struct limits_conn *h, enum limits_verdict v, uint64_t delay_ms)
{
	h->verdict = v;
	timer_start(h->l->loop, &h->timer, delay_ms);
}

static void begin(struct limits_conn *h, enum op op, const char *user, limits_cb cb, void *arg)
{
	if (h->cb || h->op != OP_NONE) {
		LOG_ERROR("limits", h->sid, "overlapping_calls", "op=%d pending=%d", op, h->op);
		abort(); /* a programming error in a session */
	}
	h->op = op;
	h->cb = cb;
	h->arg = arg;
	set_str(&h->user, user);
}

static void on_reply(struct redis_client *rc, redisReply *r, void *arg);

static void eval(struct limits_conn *h, size_t nkeys, size_t nargs, const char *const *args)
{
	h->inflight++;
	redis_script_eval(h->l->redis, &g.script, on_reply, h, nkeys, nargs, args, NULL);
}

/* Fire and forget (drops, refreshes, forgotten failures). */
static void on_done(struct redis_client *rc, redisReply *r, void *arg)
{
	struct limits *l = arg;
	int64_t v[1];
	UNUSED(rc);
	parse_reply(l, r, v, 1);
}

static void on_done_held(struct redis_client *rc, redisReply *r, void *arg)
{
	struct limits *l = arg;
	on_done(rc, r, arg);
	loop_release(l->loop);
}

static void fire(struct limits *l, size_t nkeys, size_t nargs, const char *const *args)
{
	/* While draining, the last drops still reach Redis. */
	if (loop_stopping(l->loop)) {
		loop_hold(l->loop);
		redis_script_eval(l->redis, &g.script, on_done_held, l, nkeys, nargs, args, NULL);
	} else {
		redis_script_eval(l->redis, &g.script, on_done, l, nkeys, nargs, args, NULL);
	}
}

/* ---- checks: local answers ------------------------------------------------------ */

static enum limits_verdict local_conn(struct limits_conn *h, bool force)
{
	struct limits *l = h->l;
	enum limits_verdict v = limits_local_conn_open(g.ll, &l->pol, h->cls, h->ipkey,
						       loop_now_ms(l->loop), force);
	if (v == LIMITS_OK || force) {
		h->counted = true;
		live_add(h);
	}
	return v;
}

/* A banned login waits as long as one more failure would. */
static void local_auth_check(struct limits_conn *h)
{
	struct limits *l = h->l;
	uint32_t fails = 0;
	enum limits_verdict v = limits_local_auth_check(g.ll, &l->pol, h->ipkey, h->user,
							loop_now_ms(l->loop), &fails);
	refused(h, v, h->user);
	deliver(h, v, v == LIMITS_OK ? 0 : limits_delay_ms(&l->pol, fails + 1));
}

/* A failed login was counted: log it (and a ban it started), answer
 * after the delay it earned. */
static void failure_counted(struct limits_conn *h, enum limits_verdict v, uint32_t fails,
			    const char *where)
{
	struct limits *l = h->l;
	uint64_t delay = limits_delay_ms(&l->pol, fails);
	char q[300];
	log_quote_cstr(q, sizeof(q), h->user);
	LOG_INFO("limits", h->sid, "auth_failure",
		 "ip=%s user=%s failures=%u delay_ms=%" PRIu64 " counted=%s", h->ipkey, q, fails,
		 delay, where);
	if (v != LIMITS_OK)
		LOG_WARN("limits", h->sid, "ban",
			 "scope=%s ip=%s user=%s failures=%u duration_ms=%" PRIu64 " counted=%s",
			 v == LIMITS_BANNED_IP ? "ip" : "user", h->ipkey, q, fails,
			 l->pol.auth_ban_ms, where);
	deliver(h, v, delay);
}

static enum limits_verdict local_session(struct limits_conn *h, bool force)
{
	struct limits *l = h->l;
	enum limits_verdict v = limits_local_session_open(g.ll, &l->pol, h->cls, h->user,
							  loop_now_ms(l->loop), force);
	if (v == LIMITS_OK || force) {
		h->session = true;
		live_add(h);
	}
	return v;
}

static enum limits_verdict local_message(struct limits_conn *h, bool force)
{
	struct limits *l = h->l;
	uint32_t n = 0;
	return limits_local_message(g.ll, &l->pol, h->user, loop_now_ms(l->loop), force, &n);
}

/* ---- checks: Redis answers ------------------------------------------------------- */

static void on_reply(struct redis_client *rc, redisReply *r, void *arg)
{
	struct limits_conn *h = arg;
	struct limits *l = h->l;
	UNUSED(rc);
	h->inflight--;
	int64_t v[4] = { 0 };
	int n = parse_reply(l, r, v, 4);
	if (h->closed) {
		/* What the call counted in Redis was dropped by the close. */
		maybe_free(h);
		return;
	}
	enum limits_verdict verdict = LIMITS_OK;
	switch (h->op) {
	case OP_CONN:
		if (n < 1) {
			verdict = local_conn(h, false);
		} else {
			verdict = v[0] == 0 ? LIMITS_OK : v[0] == 1 ? LIMITS_CONN_MANY
								    : LIMITS_CONN_RATE;
			if (verdict == LIMITS_OK)
				local_conn(h, true);
		}
		refused(h, verdict, NULL);
		deliver(h, verdict, 0);
		break;
	case OP_AUTH_CHECK:
		if (n < 3) {
			local_auth_check(h);
			break;
		}
		verdict = v[0] == 1 ? LIMITS_BANNED_IP : v[0] == 2 ? LIMITS_BANNED_USER : LIMITS_OK;
		refused(h, verdict, h->user);
		deliver(h, verdict,
			verdict == LIMITS_OK ? 0
					     : limits_delay_ms(&l->pol, (uint32_t)MAX(v[1], v[2]) + 1));
		break;
	case OP_AUTH_FAIL: {
		uint32_t fails = 0;
		enum limits_verdict lv = limits_local_auth_fail(g.ll, &l->pol, h->ipkey, h->user,
								loop_now_ms(l->loop), &fails);
		if (n < 3) {
			verdict = lv;
		} else {
			verdict = v[0] == 1 ? LIMITS_BANNED_IP : v[0] == 2 ? LIMITS_BANNED_USER
									 : LIMITS_OK;
			fails = (uint32_t)MIN(MAX(v[1], v[2]), UINT32_MAX);
		}
		failure_counted(h, verdict, fails, n < 3 ? "in-process" : "redis");
		break;
	}
	case OP_SESSION:
		if (n < 1) {
			verdict = local_session(h, false);
		} else {
			verdict = v[0] == 0 ? LIMITS_OK : LIMITS_SESSIONS;
			if (verdict == LIMITS_OK)
				local_session(h, true);
		}
		refused(h, verdict, h->user);
		deliver(h, verdict, 0);
		break;
	case OP_MESSAGE:
		if (n < 1) {
			verdict = local_message(h, false);
		} else {
			verdict = v[0] == 0 ? LIMITS_OK : LIMITS_MESSAGES;
			if (verdict == LIMITS_OK)
				local_message(h, true);
		}
		refused(h, verdict, h->user);
		deliver(h, verdict, 0);
		break;
	case OP_NONE:
		break;
	}
}

/* ---- the calls ---------------------------------------------------------------------- */

static void key(char *out, const char *fmt, const char *a, const char *b)
{
	snprintf(out, KEY_LEN, fmt, a, b);
}

struct limits_conn *limits_conn_open(struct limits *l, struct conn *c, enum proxy_service svc,
				     uint64_t sid, limits_cb cb, void *arg)
{
	struct limits_conn *h = xcalloc(1, sizeof(*h));
	h->l = l;
	h->svc = svc;
	h->cls = class_of(svc);
	h->sid = sid;
	pthread_mutex_lock(&g_mu);
	h->serial = ++g.serial;
	pthread_mutex_unlock(&g_mu);
	timer_init(&h->timer, deliver_cb, h);
	peer_addr(h, conn_peer(c));
	begin(h, OP_CONN, NULL, cb, arg);
	if (!l->pol.conn_per_ip && !l->pol.conn_rate) {
		deliver(h, LIMITS_OK, 0);
		return h;
	}
	if (!use_redis(l)) {
		enum limits_verdict v = local_conn(h, false);
		refused(h, v, NULL);
		deliver(h, v, 0);
		return h;
	}
	const char *cs = limits_class_str(h->cls);
	char k1[KEY_LEN], k2[KEY_LEN], m[200], ttl[24], max[24], rate[24], win[24];
	key(k1, "mail:limit:conn:%s:%s", cs, h->ipkey);
	key(k2, "mail:limit:rate:%s:%s", cs, h->ipkey);
	snprintf(ttl, sizeof(ttl), "%" PRIu64, l->ttl_ms);
	snprintf(max, sizeof(max), "%u", l->pol.conn_per_ip);
	snprintf(rate, sizeof(rate), "%u", l->pol.conn_rate);
	snprintf(win, sizeof(win), "%u", LIMITS_RATE_WINDOW_MS);
	const char *args[] = { k1, k2, "conn", member(h, m, sizeof(m)), ttl, max, rate, win };
	eval(h, 2, ARRAY_LEN(args), args);
	return h;
}

/* Drop the connection's and the session's entries from Redis. */
static void drop(struct limits_conn *h, bool conn, bool session)
{
	struct limits *l = h->l;
	if (!l->redis || (!conn && !session))
		return;
	char k1[KEY_LEN], k2[KEY_LEN], k3[KEY_LEN], m[200], sk[KEY_LEN];
	const char *keys[3], *argv[8];
	size_t nk = 0, na = 0;
	argv[na++] = "drop";
	argv[na++] = "0";
	if (conn && l->pol.conn_per_ip) {
		key(k1, "mail:limit:conn:%s:%s", limits_class_str(h->cls), h->ipkey);
		keys[nk++] = k1;
		argv[na++] = "z";
		argv[na++] = member(h, m, sizeof(m));
	}
	if (session && (h->sess_user || h->user)) {
		key(k2, "mail:limit:sessions:%s:%s", limits_class_str(h->cls),
		    h->sess_user ? h->sess_user : h->user);
		keys[nk++] = k2;
		argv[na++] = "z";
		argv[na++] = session_key(h, sk, sizeof(sk));
		snprintf(k3, sizeof(k3), "%s", sk);
		keys[nk++] = k3;
		argv[na++] = "h";
		argv[na++] = "0";
	}
	if (!nk)
		return;
	const char *args[11];
	memcpy(args, keys, nk * sizeof(*args));
	memcpy(args + nk, argv, na * sizeof(*args));
	fire(l, nk, nk + na, args);
}

void limits_conn_close(struct limits_conn **hp)
{
	struct limits_conn *h = *hp;
	if (!h)
		return;
	*hp = NULL;
	struct limits *l = h->l;
	/* A call still in Redis may have counted: drop that too (commands on
	 * the link run in order). */
	drop(h, h->counted || h->op == OP_CONN, h->session || h->op == OP_SESSION);
	if (h->counted)
		limits_local_conn_close(g.ll, &l->pol, h->cls, h->ipkey);
	if (h->session)
		limits_local_session_close(g.ll, &l->pol, h->cls, h->sess_user);
	h->counted = h->session = false;
	live_del(h);
	timer_stop(l->loop, &h->timer);
	h->cb = NULL;
	h->closed = true;
	maybe_free(h);
}

void limits_conn_close_hook(void *h)
{
	struct limits_conn *hc = h;
	limits_conn_close(&hc);
}

static void auth_keys(struct limits_conn *h, char k[4][KEY_LEN])
{
	key(k[0], "mail:limit:ban:%s:%s", "ip", h->ipkey);
	key(k[1], "mail:limit:ban:%s:%s", "user", h->user);
	key(k[2], "mail:limit:fail:%s:%s", "ip", h->ipkey);
	key(k[3], "mail:limit:fail:%s:%s", "user", h->user);
}

void limits_auth_check(struct limits_conn *h, const char *user, limits_cb cb, void *arg)
{
	begin(h, OP_AUTH_CHECK, user, cb, arg);
	if (!use_redis(h->l)) {
		local_auth_check(h);
		return;
	}
	char k[4][KEY_LEN];
	auth_keys(h, k);
	const char *args[] = { k[0], k[1], k[2], k[3], "auth" };
	eval(h, 4, ARRAY_LEN(args), args);
}

void limits_auth_failed(struct limits_conn *h, const char *user, limits_cb cb, void *arg)
{
	struct limits *l = h->l;
	begin(h, OP_AUTH_FAIL, user, cb, arg);
	if (!use_redis(l)) {
		uint32_t fails = 0;
		enum limits_verdict v = limits_local_auth_fail(g.ll, &l->pol, h->ipkey, h->user,
							       loop_now_ms(l->loop), &fails);
		failure_counted(h, v, fails, "in-process");
		return;
	}
	char k[4][KEY_LEN], win[24], ban[24], mi[24], mu[24];
	auth_keys(h, k);
	snprintf(win, sizeof(win), "%" PRIu64, l->pol.auth_window_ms);
	snprintf(ban, sizeof(ban), "%" PRIu64, l->pol.auth_ban_ms);
	snprintf(mi, sizeof(mi), "%u", l->pol.auth_fail_ip);
	snprintf(mu, sizeof(mu), "%u", l->pol.auth_fail_user);
	const char *args[] = { k[0], k[1], k[2], k[3], "fail", win, ban, mi, mu };
	eval(h, 4, ARRAY_LEN(args), args);
}

void limits_auth_ok(struct limits_conn *h, const char *user)
{
	struct limits *l = h->l;
	limits_local_auth_ok(g.ll, user);
	if (!use_redis(l))
		return;
	char k[KEY_LEN];
	key(k, "mail:limit:fail:%s:%s", "user", user);
	const char *args[] = { k, "ok" };
	fire(l, 1, ARRAY_LEN(args), args);
}

/* The session's hash fields, as (name, value) pairs in out (12 slots);
 * the values live in buf. Returns the pair count. */
static size_t session_fields(const struct limits_conn *h, const char **out, char buf[4][32])
{
	snprintf(buf[0], 32, "%u", h->port);
	snprintf(buf[1], 32, "%" PRIu64, h->since);
	snprintf(buf[2], 32, "%" PRIu64, h->sid);
	const char *f[] = {
		"user", h->sess_user, "service", proxy_service_str(h->svc), "client", h->ip,
		"port", buf[0], "node", h->node ? h->node : "", "proxy", h->l->p->id,
		"since", buf[1], "sid", buf[2],
	};
	memcpy(out, f, sizeof(f));
	return ARRAY_LEN(f) / 2;
}

void limits_session_open(struct limits_conn *h, const char *user, const char *node, limits_cb cb,
			 void *arg)
{
	struct limits *l = h->l;
	begin(h, OP_SESSION, user, cb, arg);
	set_str(&h->node, node);
	set_str(&h->sess_user, user);
	h->since = time_real_ms() / 1000;
	if (!use_redis(l)) {
		enum limits_verdict v = local_session(h, false);
		refused(h, v, user);
		deliver(h, v, 0);
		return;
	}
	char k1[KEY_LEN], k2[KEY_LEN], ttl[24], max[24], buf[4][32];
	key(k1, "mail:limit:sessions:%s:%s", limits_class_str(h->cls), user);
	session_key(h, k2, sizeof(k2));
	snprintf(ttl, sizeof(ttl), "%" PRIu64, l->ttl_ms);
	snprintf(max, sizeof(max), "%u", l->pol.sessions[h->cls]);
	const char *args[6 + 16] = { k1, k2, "sess", k2, ttl, max };
	size_t nf = session_fields(h, args + 6, buf);
	eval(h, 2, 6 + 2 * nf, args);
}

void limits_session_close(struct limits_conn *h)
{
	if (!h->session)
		return;
	drop(h, false, true);
	limits_local_session_close(g.ll, &h->l->pol, h->cls, h->sess_user);
	h->session = false;
	if (!h->counted)
		live_del(h);
}

void limits_message(struct limits_conn *h, const char *user, limits_cb cb, void *arg)
{
	struct limits *l = h->l;
	begin(h, OP_MESSAGE, user, cb, arg);
	if (!l->pol.messages_per_day) {
		deliver(h, LIMITS_OK, 0);
		return;
	}
	if (!use_redis(l)) {
		enum limits_verdict v = local_message(h, false);
		refused(h, v, user);
		deliver(h, v, 0);
		return;
	}
	char k[KEY_LEN], max[24], win[24];
	snprintf(k, sizeof(k), "mail:limit:msgs:%s", user);
	snprintf(max, sizeof(max), "%u", l->pol.messages_per_day);
	snprintf(win, sizeof(win), "%u", LIMITS_DAY_MS);
	const char *args[] = { k, "msg", max, win };
	eval(h, 1, ARRAY_LEN(args), args);
}

/* ---- refresh ------------------------------------------------------------------------ */

/* Every open connection and session of this thread, written again with a
 * new expiry (and re-created if Redis lost them), TOUCH_BATCH per call. */
static void refresh_cb(struct timer *t)
{
	struct limits *l = t->arg;
	timer_start(l->loop, &l->refresh, l->refresh_ms);
	limits_local_sweep(g.ll, loop_now_ms(l->loop));
	/* An outage seen here shows in the log and metric without traffic. */
	if (l->redis && !l->local && !redis_client_connected(l->redis))
		set_local(l, true, "not connected");
	if (!use_redis(l))
		return;
	char ttl[24];
	snprintf(ttl, sizeof(ttl), "%" PRIu64, l->ttl_ms);
	/* Per handle at most 3 keys and 2 + 2 + 2 + 2 * 8 argument strings. */
	enum { KPH = 3, APH = 22 };
	const char **keys = xcalloc(TOUCH_BATCH * KPH, sizeof(*keys));
	const char **argv = xcalloc(2 + TOUCH_BATCH * APH, sizeof(*argv));
	char (*strs)[KEY_LEN] = xcalloc(TOUCH_BATCH * 4, sizeof(*strs));
	char (*nums)[4][32] = xcalloc(TOUCH_BATCH, sizeof(*nums));
	const char **args = xcalloc(2 + TOUCH_BATCH * (KPH + APH), sizeof(*args));
	struct limits_conn *h = l->live;
	while (h) {
		size_t nk = 0, na = 0, nh = 0;
		argv[na++] = "touch";
		argv[na++] = ttl;
		for (; h && nh < TOUCH_BATCH; h = h->next, nh++) {
			char(*s)[KEY_LEN] = strs + 4 * nh;
			if (h->counted && l->pol.conn_per_ip) {
				key(s[0], "mail:limit:conn:%s:%s", limits_class_str(h->cls), h->ipkey);
				keys[nk++] = s[0];
				argv[na++] = "z";
				argv[na++] = member(h, s[1], KEY_LEN);
			}
			if (h->session) {
				key(s[2], "mail:limit:sessions:%s:%s", limits_class_str(h->cls),
				    h->sess_user);
				session_key(h, s[3], KEY_LEN);
				keys[nk++] = s[2];
				argv[na++] = "z";
				argv[na++] = s[3];
				keys[nk++] = s[3];
				argv[na++] = "h";
				argv[na++] = "8";
				session_fields(h, argv + na, nums[nh]);
				na += 16;
			}
		}
		if (nk) {
			memcpy(args, keys, nk * sizeof(*args));
			memcpy(args + nk, argv, na * sizeof(*args));
			fire(l, nk, nk + na, args);
		}
	}
	free(args);
	free(nums);
	free(strs);
	free(keys);
	free(argv);
}

static void probe_cb(struct timer *t)
{
	struct limits *l = t->arg;
	if (!use_redis(l))
		timer_start(l->loop, &l->probe, PROBE_MS);
}

/* ---- setup ---------------------------------------------------------------------------- */

static uint32_t cfg_u32(const struct config *cfg, const char *name)
{
	int64_t v = config_get_int(cfg, name);
	return v < 0 ? 0 : (uint32_t)MIN(v, UINT32_MAX);
}

struct limits *limits_new(struct proxy *p)
{
	struct limits *l = xcalloc(1, sizeof(*l));
	const struct config *cfg = p->cfg;
	l->p = p;
	l->loop = p->loop;
	l->redis = p->redis;
	l->pol.conn_per_ip = cfg_u32(cfg, "limits.conn_per_ip");
	l->pol.conn_rate = cfg_u32(cfg, "limits.conn_rate");
	l->pol.auth_fail_ip = cfg_u32(cfg, "limits.auth_fail_ip");
	l->pol.auth_fail_user = cfg_u32(cfg, "limits.auth_fail_user");
	l->pol.auth_window_ms = config_get_duration_ms(cfg, "limits.auth_window");
	l->pol.auth_ban_ms = config_get_duration_ms(cfg, "limits.auth_ban");
	l->pol.auth_delay_ms = config_get_duration_ms(cfg, "limits.auth_delay");
	l->pol.auth_delay_max_ms = config_get_duration_ms(cfg, "limits.auth_delay_max");
	l->pol.messages_per_day = cfg_u32(cfg, "limits.messages_per_day");
	l->pol.sessions[LIMITS_IMAP] = cfg_u32(cfg, "limits.imap_sessions");
	l->pol.sessions[LIMITS_POP3] = cfg_u32(cfg, "limits.pop3_sessions");
	l->bad_commands = cfg_u32(cfg, "limits.bad_commands");
	l->auth_fail_conn = cfg_u32(cfg, "limits.auth_fail_conn");
	l->refresh_ms = config_get_duration_ms(cfg, "limits.refresh");
	l->ttl_ms = 3 * l->refresh_ms + 1000;
	timer_init(&l->refresh, refresh_cb, l);
	timer_init(&l->probe, probe_cb, l);

	pthread_mutex_lock(&g_mu);
	if (g.refs++ == 0) {
		g.ll = limits_local_new(LIMITS_LOCAL_MAX);
		redis_script_init(&g.script, limits_lua);
		snprintf(g.boot, sizeof(g.boot), "%" PRIx64 "%x", time_real_ms(),
			 (unsigned)getpid() & 0xffff);
		g.local_threads = 0;
		g.m_local = metrics_gauge_new("mail_proxy_limits_in_process",
					      "1 while the proxy uses in-process limits (no Redis)",
					      NULL);
		g.m_fallbacks = metrics_counter_new("mail_proxy_limits_fallbacks_total",
						    "Switches to in-process limits (Redis unreachable)",
						    NULL);
		g.m_errors = metrics_counter_new("mail_proxy_limits_redis_errors_total",
						 "Error replies to limit checks", NULL);
		for (int v = LIMITS_CONN_MANY; v <= LIMITS_MESSAGES; v++) {
			char lab[64];
			snprintf(lab, sizeof(lab), "reason=\"%s\"",
				 limits_verdict_str((enum limits_verdict)v));
			g.m_refused[v] = metrics_counter_new("mail_proxy_limits_refused_total",
							     "Connections, logins, sessions and "
							     "messages refused by a limit", lab);
		}
		if (!p->redis)
			LOG_INFO("limits", 0, "in_process", "why=\"no redis.url\"");
	}
	if (!p->redis) {
		l->local = true;
		g.local_threads++;
		metrics_gauge_set(g.m_local, 1);
	}
	pthread_mutex_unlock(&g_mu);
	if (l->redis)
		timer_start(l->loop, &l->refresh, l->refresh_ms);
	return l;
}

void limits_free(struct limits **lp)
{
	struct limits *l = *lp;
	if (!l)
		return;
	*lp = NULL;
	timer_stop(l->loop, &l->refresh);
	timer_stop(l->loop, &l->probe);
	/* Sessions close before their loop stops; any left are forgotten. */
	while (l->live)
		live_del(l->live);
	pthread_mutex_lock(&g_mu);
	if (l->local)
		g.local_threads--;
	if (--g.refs == 0)
		limits_local_free(&g.ll);
	pthread_mutex_unlock(&g_mu);
	free(l);
}

unsigned limits_bad_commands(const struct limits *l)
{
	return l->bad_commands;
}

unsigned limits_auth_fail_conn(const struct limits *l)
{
	return l->auth_fail_conn;
}
