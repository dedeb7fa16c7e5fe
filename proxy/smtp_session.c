/* The ESMTP receiver. See smtp_session.h; the grammar is proto/smtp_parse.h.
 *
 * One command runs at a time: a command that needs a node (RCPT, AUTH,
 * the end of a message) pauses input until its calls are answered, so
 * replies go out strictly in order however deeply the client pipelines.
 * A session is freed once its connection is gone and no call holds it. */
#include "proxy/smtp_session.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "common/address.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/metrics.h"
#include "common/tls.h"
#include "proto/rpc.h"
#include "proto/smtp_parse.h"
#include "proxy/limits.h"
#include "proxy/proxy_internal.h"

/* Wrong passwords before the session is closed. */
#define SMTP_MAX_AUTH_FAILURES 3u
/* Final recipients of one message after alias expansion (a DELIVER takes
 * at most 1000). */
#define SMTP_MAX_FINALS 1000u
/* Room for the Received: header in front of the message. */
#define SMTP_TRACE_MAX 2048u
/* What a DELIVER frame needs beside the message. */
#define SMTP_ENVELOPE_ROOM (1u << 20)
/* A DELIVER that timed out or found the node gone or deposed is sent once
 * more, with the same delivery id, after the route had time to change. */
#define SMTP_DELIVER_ATTEMPTS 2u
#define SMTP_DELIVER_RETRY_MS 1000u

/* ---- configuration ------------------------------------------------------------ */

int smtp_config_load(const struct config *cfg, struct smtp_config *out, const char **error_r)
{
	memset(out, 0, sizeof(*out));
	const char *lf = config_get_str(cfg, "smtp.bare_lf");
	if (!lf || strcmp(lf, "reject") == 0) {
		out->bare_lf = SMTP_LF_REJECT;
	} else if (strcmp(lf, "normalize") == 0) {
		out->bare_lf = SMTP_LF_NORMALIZE;
	} else if (strcmp(lf, "accept") == 0) {
		out->bare_lf = SMTP_LF_ACCEPT;
	} else {
		*error_r = "smtp.bare_lf: want reject, normalize or accept";
		return -1;
	}
	out->max_size_asked = config_get_size(cfg, "smtp.max_size");
	uint64_t frame = config_get_size(cfg, "rpc.max_frame");
	uint64_t cap = frame > 2 * (uint64_t)SMTP_ENVELOPE_ROOM ? frame - SMTP_ENVELOPE_ROOM
								: frame / 2;
	out->max_size = MIN(out->max_size_asked, cap);
	out->greeting_delay_ms = (uint32_t)config_get_duration_ms(cfg, "smtp.greeting_delay");
	out->idle_ms = (uint32_t)config_get_duration_ms(cfg, "smtp.idle_timeout");
	out->rpc_ms = (uint32_t)config_get_duration_ms(cfg, "rpc.timeout");
	out->max_errors = (unsigned)config_get_int(cfg, "smtp.max_errors");
	out->max_recipients = (unsigned)config_get_int(cfg, "smtp.max_recipients");
	out->buffer_budget = config_get_size(cfg, "smtp.buffer_budget");
	out->lim = smtp_limits_default();
	out->lim.max_size = out->max_size;
	out->lim.smtputf8 = true;
	return 0;
}

/* The config is shared by every loop thread and never changes once
 * loaded: read it on the first accept. */
static pthread_mutex_t conf_mu = PTHREAD_MUTEX_INITIALIZER;
static const struct config *conf_src;
static struct smtp_config conf;

static const struct smtp_config *smtp_conf(const struct config *cfg)
{
	pthread_mutex_lock(&conf_mu);
	if (conf_src != cfg) {
		const char *err = NULL;
		if (smtp_config_load(cfg, &conf, &err) < 0) {
			/* proxy_new refuses such a config; be safe anyway */
			LOG_ERROR("smtp", 0, "config", "error=\"%s\"", err);
			conf.bare_lf = SMTP_LF_REJECT;
		}
		if (conf.max_size < conf.max_size_asked)
			LOG_WARN("smtp", 0, "max_size_capped",
				 "smtp.max_size=%llu size=%llu reason=rpc.max_frame",
				 (unsigned long long)conf.max_size_asked,
				 (unsigned long long)conf.max_size);
		conf_src = cfg;
	}
	pthread_mutex_unlock(&conf_mu);
	return &conf;
}

/* ---- metrics ---------------------------------------------------------------------- */

static struct {
	struct metrics_counter *sessions, *early_talkers, *too_many_errors;
	struct metrics_counter *msg_accepted, *msg_rejected, *msg_tempfail, *bytes;
	struct metrics_counter *rcpt_accepted, *rcpt_rejected, *rcpt_tempfail;
	struct metrics_counter *auth_ok, *auth_failed, *relay_denied, *bare_lf, *no_space;
} m;
static pthread_once_t metrics_once = PTHREAD_ONCE_INIT;

static void metrics_init(void)
{
	m.sessions = metrics_counter_new("smtp_sessions_total", "SMTP sessions accepted", NULL);
	m.no_space = metrics_counter_new("smtp_buffer_budget_exceeded_total",
					 "Messages refused with 452 4.3.1: smtp.buffer_budget reached",
					 NULL);
	m.early_talkers = metrics_counter_new("smtp_early_talkers_total",
					      "Clients that talked before the greeting", NULL);
	m.too_many_errors = metrics_counter_new("smtp_sessions_closed_for_errors_total",
						"Sessions closed after too many bad commands", NULL);
	const char *mh = "Messages by outcome (final reply to DATA/BDAT LAST)";
	m.msg_accepted = metrics_counter_new("smtp_messages_total", mh, "result=\"accepted\"");
	m.msg_rejected = metrics_counter_new("smtp_messages_total", mh, "result=\"rejected\"");
	m.msg_tempfail = metrics_counter_new("smtp_messages_total", mh, "result=\"tempfail\"");
	m.bytes = metrics_counter_new("smtp_message_bytes_total", "Bytes of accepted messages",
				      NULL);
	const char *rh = "RCPT commands by outcome";
	m.rcpt_accepted = metrics_counter_new("smtp_recipients_total", rh, "result=\"accepted\"");
	m.rcpt_rejected = metrics_counter_new("smtp_recipients_total", rh, "result=\"rejected\"");
	m.rcpt_tempfail = metrics_counter_new("smtp_recipients_total", rh, "result=\"tempfail\"");
	m.relay_denied = metrics_counter_new("smtp_relay_denied_total",
					     "RCPT to a domain that is not local", NULL);
	const char *ah = "SMTP AUTH attempts by outcome";
	m.auth_ok = metrics_counter_new("smtp_auth_total", ah, "result=\"ok\"");
	m.auth_failed = metrics_counter_new("smtp_auth_total", ah, "result=\"failed\"");
	m.bare_lf = metrics_counter_new("smtp_bare_newline_total",
					"Messages with a bare LF or CR in DATA", NULL);
}

/* ---- the session ---------------------------------------------------------------- */

enum smtp_state {
	SMTP_S_GREETING, /* greeting not sent yet: input is an early talker */
	SMTP_S_COMMAND,
	SMTP_S_AUTH,     /* "334" sent: the next line is a SASL response */
	SMTP_S_DATA,     /* DATA body until CRLF.CRLF */
	SMTP_S_BDAT,     /* the bytes of a BDAT chunk */
	SMTP_S_CLOSING,  /* QUIT or a fatal error: input is ignored */
};

static const char *smtp_state_str(enum smtp_state s)
{
	switch (s) {
	case SMTP_S_GREETING: return "greeting";
	case SMTP_S_COMMAND: return "command";
	case SMTP_S_AUTH: return "auth";
	case SMTP_S_DATA: return "data";
	case SMTP_S_BDAT: return "bdat";
	case SMTP_S_CLOSING: return "closing";
	}
	return "?";
}

enum sasl_step { SASL_NONE, SASL_PLAIN, SASL_LOGIN_USER, SASL_LOGIN_PASS };

struct smtp_rcpt {
	char *addr;      /* the mailbox as given */
	unsigned notify; /* DSN NOTIFY= bits */
	char *orcpt;     /* DSN ORCPT= as given, or NULL */
};

/* A final recipient (after alias expansion) and where it is stored. */
struct smtp_final {
	char addr[256];  /* canonical, +tag kept: the node files user+tag */
	size_t rcpt;     /* the RCPT it came from */
	uint32_t shard;
	uint64_t epoch;
	char node[PROXY_NODE_ADDR_MAX];
	int group;
	uint32_t code;   /* delivery result */
	char text[120];
};

struct smtp_txn {
	char sender[SMTP_PATH_MAX + 1]; /* "" for <> */
	bool smtputf8;
	enum smtp_body body;
	enum smtp_ret ret;
	char *envid;
	uint64_t size_declared;
	struct smtp_rcpt *rcpts;
	size_t nrcpts, cap_rcpts;
	struct smtp_final *finals;
	size_t nfinals, cap_finals;

	/* the message */
	bool started;    /* DATA or the first BDAT: trace header written */
	bool bdat;       /* the message came by BDAT */
	struct smtp_data data;
	struct smtp_bdat bd;
	struct buf msg;  /* Received: + the message, bounded by SIZE */
	size_t trace_len;
	struct proxy *p;  /* whose smtp_buffered counts msg */
	size_t accounted; /* bytes of msg counted there */
	bool no_space;    /* over smtp.buffer_budget: the rest is dropped, 452 */
	uint64_t size;   /* the message as received, without the trace header */
	uint8_t rnd[16];
	char id[17];     /* Received id and logs */
	uint64_t received_ms;

	/* sticky BDAT failure: later chunks are read and refused alike */
	int bdat_code;
	const char *bdat_enh, *bdat_text;
};

/* One DELIVER: the finals of one node and shard. */
struct smtp_group {
	struct smtp_session *s;
	uint32_t shard;
	uint64_t epoch;
	char node[PROXY_NODE_ADDR_MAX];
	size_t n;
	unsigned attempts;
	struct timer retry;
	bool sent; /* DELIVER issued (it may be waiting for a retry) */
	bool done; /* answered, or failed for good */
};

/* RCPT in progress: RESOLVE, then USER_GET for each final target. */
struct smtp_target {
	struct smtp_session *s;
	char addr[256];
	struct route_target rt;
	int code;           /* 0 while unknown; 250 fine */
	const char *enh, *text;
};

struct smtp_rcpt_check {
	char addr[SMTP_PATH_MAX + 1];
	unsigned notify;
	char *orcpt;
	struct smtp_target *t;
	size_t nt;
	size_t pending;
};

struct smtp_session {
	struct conn *c;  /* NULL once the connection is gone */
	struct loop *loop;
	struct proxy *p;
	const struct smtp_config *cf;
	enum proxy_service svc;
	enum smtp_state state;
	uint64_t id;
	unsigned depth;  /* our callbacks on the stack: free only at 0 */
	unsigned calls;  /* RPC calls in flight: each holds the session */
	bool busy;       /* a command waits for a node: input paused */
	bool skipping;   /* dropping the rest of an over-long line */
	bool helo_seen, esmtp;
	bool tls;
	bool draining;
	uint8_t sasl;    /* enum sasl_step */
	unsigned errors, auth_failures;
	unsigned messages;
	uint64_t last_input_ms;
	struct timer timer; /* greeting delay, then idle */
	char peer[48];      /* client IP */
	uint16_t peer_port;
	char helo[128];
	char *auth_user;     /* canonical user once AUTH succeeded */
	char *sasl_user;     /* during AUTH: the user name (for LOGIN and logs) */
	struct limits_conn *lim; /* proxy/limits.h: checks cancelled by its close */
	bool lim_wait;       /* the connection check: no greeting yet */
	char *auth_pw;       /* during the ban check before AUTH */
	const char *fail_why;

	/* BDAT chunk being read */
	uint64_t chunk_left, chunk_size;
	bool chunk_last, chunk_discard;
	int chunk_code;
	const char *chunk_enh, *chunk_text;

	struct smtp_txn *txn;
	struct smtp_rcpt_check *chk;
	struct smtp_group *groups;
	size_t ngroups, groups_pending;
};

size_t smtp_session_struct_size(void)
{
	return sizeof(struct smtp_session);
}

static void txn_free(struct smtp_txn **tp)
{
	struct smtp_txn *t = *tp;
	if (!t)
		return;
	*tp = NULL;
	for (size_t i = 0; i < t->nrcpts; i++) {
		free(t->rcpts[i].addr);
		free(t->rcpts[i].orcpt);
	}
	free(t->rcpts);
	free(t->finals);
	free(t->envid);
	if (t->p)
		t->p->smtp_buffered -= t->accounted;
	buf_cleanup(&t->msg);
	free(t);
}

static void check_free(struct smtp_rcpt_check **cp)
{
	struct smtp_rcpt_check *k = *cp;
	if (!k)
		return;
	*cp = NULL;
	free(k->orcpt);
	free(k->t);
	free(k);
}

static void sasl_clear(struct smtp_session *s)
{
	if (!s->sasl_user)
		return;
	explicit_bzero(s->sasl_user, SMTP_SASL_ID_MAX + 1);
	free(s->sasl_user);
	s->sasl_user = NULL;
}

static void sasl_set_user(struct smtp_session *s, struct view v)
{
	if (!s->sasl_user)
		s->sasl_user = xcalloc(1, SMTP_SASL_ID_MAX + 1);
	size_t n = MIN(v.len, (size_t)SMTP_SASL_ID_MAX);
	memcpy(s->sasl_user, v.ptr, n);
	s->sasl_user[n] = '\0';
}

static void pw_clear(struct smtp_session *s)
{
	if (!s->auth_pw)
		return;
	explicit_bzero(s->auth_pw, SMTP_SASL_PASS_MAX + 1);
	free(s->auth_pw);
	s->auth_pw = NULL;
}

static void session_free(struct smtp_session *s)
{
	limits_conn_close(&s->lim);
	pw_clear(s);
	txn_free(&s->txn);
	check_free(&s->chk);
	free(s->groups);
	sasl_clear(s);
	free(s->auth_user);
	free(s);
}

static void s_enter(struct smtp_session *s)
{
	s->depth++;
}

static void s_leave(struct smtp_session *s)
{
	if (--s->depth == 0 && !s->c && s->calls == 0)
		session_free(s);
}

/* ---- replies ---------------------------------------------------------------------- */

/* A reply is built in a buffer of its own and written whole. */
static void reply_flush(struct smtp_session *s, struct buf *b)
{
	if (s->c && b->len)
		conn_write(s->c, b->data, b->len);
	buf_cleanup(b);
}

static void reply(struct smtp_session *s, int code, const char *enh, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void reply(struct smtp_session *s, int code, const char *enh, const char *fmt, ...)
{
	if (!s->c)
		return;
	struct buf rbuf;
	buf_init(&rbuf, 64 * 1024);
	char text[SMTP_REPLY_LINE_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	/* ENHANCEDSTATUSCODES are only for EHLO clients (RFC 2034). */
	smtp_reply(&rbuf, code, s->esmtp ? enh : NULL, "%s", text);
	reply_flush(s, &rbuf);
}

static void close_session(struct smtp_session *s)
{
	s->state = SMTP_S_CLOSING;
	if (s->c) {
		conn_resume(s->c); /* a paused connection would wait to close */
		conn_close(s->c);
	}
}

/* Counts a bad command; at the limit answers 421 and closes (true). */
static bool count_error(struct smtp_session *s, const char *what)
{
	if (++s->errors < s->cf->max_errors)
		return false;
	LOG_INFO("smtp", s->id, "too_many_errors", "count=%u last=%s", s->errors, what);
	metrics_inc(m.too_many_errors);
	reply(s, 421, "4.7.0", "%s Error: too many errors", s->p->hostname);
	close_session(s);
	return true;
}

static void err_reply(struct smtp_session *s, const char *what, int code, const char *enh,
		      const char *text)
{
	if (!count_error(s, what))
		reply(s, code, enh, "%s", text);
}

static void pause_input(struct smtp_session *s)
{
	s->busy = true;
	if (s->c)
		conn_pause(s->c);
}

/* The waiting command is answered: take input again. */
static void command_done(struct smtp_session *s)
{
	s->busy = false;
	if (!s->c || s->state == SMTP_S_CLOSING)
		return;
	if (s->draining && !s->txn) {
		reply(s, 421, "4.3.2", "%s Service shutting down", s->p->hostname);
		close_session(s);
		return;
	}
	conn_resume(s->c);
}

/* ---- small helpers ------------------------------------------------------------------ */

static void copy_view(char *dst, size_t cap, struct view v)
{
	size_t n = MIN(v.len, cap - 1);
	memcpy(dst, v.ptr, n);
	dst[n] = '\0';
}

static char *dup_view(struct view v)
{
	char *p = xmalloc(v.len + 1);
	memcpy(p, v.ptr, v.len);
	p[v.len] = '\0';
	return p;
}

static void hex(char *out, const uint8_t *p, size_t n)
{
	static const char digits[] = "0123456789ABCDEF";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * n] = '\0';
}

static void random_bytes(uint8_t *p, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = getrandom(p + got, n - got, 0);
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	/* Unique is what matters here, not secret. */
	for (size_t i = got; i < n; i++)
		p[i] = (uint8_t)(time_mono_ns() >> (8 * (i % 8)));
}

/* RFC 5322 date-time in UTC. */
static void rfc5322_date(uint64_t real_ms, char *out, size_t out_len)
{
	static const char *const wd[] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char *const mo[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
					  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	time_t t = (time_t)(real_ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	snprintf(out, out_len, "%s, %d %s %04d %02d:%02d:%02d +0000", wd[tm.tm_wday % 7],
		 tm.tm_mday, mo[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
		 tm.tm_sec);
}

/* The HELO name as it may appear in a header: printable, no comment or
 * quoting characters. */
static void sanitize_helo(char *dst, size_t cap, struct view v)
{
	size_t n = MIN(v.len, cap - 1);
	for (size_t i = 0; i < n; i++) {
		uint8_t ch = v.ptr[i];
		bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
			  (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' || ch == '_' ||
			  ch == ':' || ch == '[' || ch == ']';
		dst[i] = ok ? (char)ch : '_';
	}
	dst[n] = '\0';
}

static bool auth_offered(const struct smtp_session *s)
{
	if (s->svc != SVC_SUBMISSION && s->svc != SVC_SUBMISSIONS)
		return false;
	return s->tls || s->p->auth_plaintext;
}

static bool tls_required(const struct smtp_session *s)
{
	return s->svc == SVC_SUBMISSION && !s->tls && !s->p->auth_plaintext;
}

static bool starttls_offered(const struct smtp_session *s)
{
	return s->p->tls && !s->tls && s->svc != SVC_SUBMISSIONS;
}

/* ---- transactions ---------------------------------------------------------------- */

static void txn_reset(struct smtp_session *s)
{
	txn_free(&s->txn);
}

/* The Received: header (RFC 5321 4.4, with types of RFC 3848/6531). */
static void trace_header(struct smtp_session *s, struct smtp_txn *t, struct buf *out)
{
	char proto[16] = "SMTP";
	if (s->esmtp || t->smtputf8 || s->tls || s->auth_user)
		snprintf(proto, sizeof(proto), "%s%s%s", t->smtputf8 ? "UTF8SMTP" : "ESMTP",
			 s->tls ? "S" : "", s->auth_user ? "A" : "");
	char date[64];
	rfc5322_date(time_real_ms(), date, sizeof(date));
	bool v6 = strchr(s->peer, ':') != NULL;
	buf_printf(out, "Received: from %s ([%s%s])\r\n", s->helo[0] ? s->helo : "unknown",
		   v6 ? "IPv6:" : "", s->peer);
	SSL *ssl = s->c ? conn_ssl(s->c) : NULL;
	if (s->tls && ssl)
		buf_printf(out, "\t(using %s with cipher %s)\r\n", tls_version_str(ssl),
			   tls_cipher_str(ssl));
	buf_printf(out, "\tby %s (mailcluster) with %s id %s", s->p->hostname, proto, t->id);
	if (t->nrcpts == 1)
		buf_printf(out, "\r\n\tfor <%s>", t->rcpts[0].addr);
	buf_printf(out, ";\r\n\t%s\r\n", date);
}

/* DATA or the first BDAT: the buffer starts with the trace header. */
static void message_start(struct smtp_session *s, bool bdat)
{
	struct smtp_txn *t = s->txn;
	t->started = true;
	t->bdat = bdat;
	t->p = s->p;
	random_bytes(t->rnd, sizeof(t->rnd));
	hex(t->id, t->rnd, 8);
	buf_init(&t->msg, SMTP_TRACE_MAX + s->cf->max_size);
	trace_header(s, t, &t->msg);
	t->trace_len = t->msg.len;
	if (bdat)
		smtp_bdat_init(&t->bd, s->cf->max_size);
	else
		smtp_data_init(&t->data, s->cf->max_size, s->cf->bare_lf);
}

/* Message bytes into the buffer, within the thread's budget: beyond it
 * the rest is dropped (the client gets 452 4.3.1 at the end) so that
 * many large messages at once cannot exhaust the proxy's memory. */
static int msg_append(struct smtp_txn *t, const uint8_t *p, size_t len)
{
	if (t->no_space)
		return 0;
	if (t->p->smtp_buffered + len > conf.buffer_budget) {
		t->no_space = true;
		metrics_inc(m.no_space);
		return 0;
	}
	if (buf_append(&t->msg, p, len) < 0)
		return -1;
	t->accounted += len;
	t->p->smtp_buffered += len;
	return 0;
}

static int data_out(void *ctx, const uint8_t *p, size_t len)
{
	return msg_append(ctx, p, len);
}

/* ---- delivery ------------------------------------------------------------------------ */

/* A node's status text ("4.2.2 mailbox full") split into its enhanced
 * code, when that matches the reply's class, and the rest. */
static const char *split_status(const char *text, int code, char *enh, size_t enh_len,
				const char *fallback)
{
	size_t n = strcspn(text, " ");
	bool ok = n >= 5 && n < enh_len && text[0] == (char)('0' + code / 100) && text[1] == '.';
	for (size_t i = 0; ok && i < n; i++)
		ok = (text[i] >= '0' && text[i] <= '9') || text[i] == '.';
	if (!ok) {
		snprintf(enh, enh_len, "%s", fallback);
		return text;
	}
	memcpy(enh, text, n);
	enh[n] = '\0';
	return text[n] ? text + n + 1 : text + n;
}

static void group_fail(struct smtp_session *s, int g, uint32_t code, const char *text)
{
	struct smtp_txn *t = s->txn;
	for (size_t i = 0; i < t->nfinals; i++) {
		if (t->finals[i].group != g)
			continue;
		t->finals[i].code = code;
		snprintf(t->finals[i].text, sizeof(t->finals[i].text), "%s", text);
	}
}

/* Every node answered: one reply for the whole message (SMTP, unlike
 * LMTP, has no per-recipient answer to DATA). */
static void deliver_finish(struct smtp_session *s)
{
	struct smtp_txn *t = s->txn;
	size_t ok = 0, temp = 0, perm = 0;
	const struct smtp_final *first_temp = NULL, *first_perm = NULL;
	for (size_t i = 0; i < t->nfinals; i++) {
		const struct smtp_final *f = &t->finals[i];
		if (f->code >= 200 && f->code < 300) {
			ok++;
		} else if (f->code >= 400 && f->code < 500) {
			temp++;
			first_temp = first_temp ? first_temp : f;
		} else {
			perm++;
			first_perm = first_perm ? first_perm : f;
		}
	}
	char enh[16];
	const char *result;
	int code;
	if (temp) {
		/* The client retries the whole message. */
		code = (int)first_temp->code;
		const char *rest = split_status(first_temp->text, code, enh, sizeof(enh), "4.3.0");
		reply(s, code, enh, "Temporary failure storing the message: %s (id %s)", rest, t->id);
		result = "tempfail";
		metrics_inc(m.msg_tempfail);
	} else if (ok == 0) {
		code = 554;
		const char *rest = split_status(first_perm->text, 500, enh, sizeof(enh), "5.0.0");
		reply(s, code, enh, "Delivery failed: %s (id %s)", rest, t->id);
		result = "rejected";
		metrics_inc(m.msg_rejected);
	} else {
		code = 250;
		reply(s, 250, "2.0.0", "Ok: stored as %s", t->id);
		result = "accepted";
		metrics_inc(m.msg_accepted);
		metrics_add(m.bytes, t->size);
	}
	char qs[300];
	log_quote_cstr(qs, sizeof(qs), t->sender);
	LOG_INFO("smtp", s->id, "message",
		 "id=%s from=%s rcpts=%zu finals=%zu groups=%zu size=%llu via=%s result=%s code=%d "
		 "stored=%zu temp=%zu perm=%zu",
		 t->id, qs, t->nrcpts, t->nfinals, s->ngroups, (unsigned long long)t->size,
		 t->bdat ? "bdat" : "data", result, code, ok, temp, perm);
	if (temp && ok)
		LOG_WARN("smtp", s->id, "partial_store",
			 "id=%s stored=%zu note=\"the client's retry stores these again\"", t->id, ok);
	for (size_t i = 0; perm && ok && !temp && i < t->nfinals; i++) {
		const struct smtp_final *f = &t->finals[i];
		if (f->code < 500)
			continue;
		/* Accepted for the others; a bounce needs outbound mail. */
		char qa[300], qt[160];
		LOG_WARN("smtp", s->id, "recipient_lost", "id=%s rcpt=%s code=%u text=%s", t->id,
			 log_quote_cstr(qa, sizeof(qa), f->addr), f->code,
			 log_quote_cstr(qt, sizeof(qt), f->text));
	}
	free(s->groups);
	s->groups = NULL;
	s->ngroups = 0;
	s->messages++;
	txn_reset(s);
	command_done(s);
}

/* The call may not have reached the node, or the shard moved: the node
 * knows the delivery id, so sending again never stores twice. */
static bool retryable(enum rpc_status status, const Mail__Rpc__ErrorReply *err)
{
	if (status == RPC_TIMEOUT || status == RPC_UNAVAILABLE)
		return true;
	if (status != RPC_REMOTE_ERROR || !err)
		return false;
	switch (err->code) {
	case MAIL__RPC__ERROR_CODE__ERROR_NOT_PRIMARY:
	case MAIL__RPC__ERROR_CODE__ERROR_STALE_EPOCH:
	case MAIL__RPC__ERROR_CODE__ERROR_UNAVAILABLE:
	case MAIL__RPC__ERROR_CODE__ERROR_DEADLINE:
		return true;
	default:
		return false;
	}
}

static void deliver_done(void *arg, enum rpc_status status, const ProtobufCMessage *reply_msg,
			 const Mail__Rpc__ErrorReply *err);

static void group_done(struct smtp_session *s, struct smtp_group *g);

static int final_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* One DELIVER for group g. Returns 0 when the call is out. */
static int deliver_send(struct smtp_session *s, struct smtp_group *g)
{
	struct smtp_txn *t = s->txn;
	int gi = (int)(g - s->groups);
	struct rpc_client *cl = proxy_node_client(s->p, g->node);
	if (!cl)
		return -1;
	/* In address order: a retry must list the recipients as the first
	 * call did (the node answers a known id with the results it kept). */
	char **rcpts = xcalloc(g->n ? g->n : 1, sizeof(char *));
	size_t k = 0;
	for (size_t i = 0; i < t->nfinals && k < g->n; i++)
		if (t->finals[i].group == gi)
			rcpts[k++] = t->finals[i].addr;
	qsort(rcpts, k, sizeof(char *), final_cmp);
	/* Unique per message and shard: the message's random id and the
	 * shard number. */
	uint8_t did[20];
	memcpy(did, t->rnd, 16);
	did[16] = (uint8_t)(g->shard >> 24);
	did[17] = (uint8_t)(g->shard >> 16);
	did[18] = (uint8_t)(g->shard >> 8);
	did[19] = (uint8_t)g->shard;
	Mail__Rpc__DeliverRequest req = MAIL__RPC__DELIVER_REQUEST__INIT;
	req.shard = g->shard;
	req.epoch = g->epoch;
	req.sender = t->sender;
	req.n_recipients = k;
	req.recipients = rcpts;
	req.body.data = t->msg.data;
	req.body.len = t->msg.len;
	req.received_ms = t->received_ms;
	req.delivery_id.data = did;
	req.delivery_id.len = sizeof(did);
	g->attempts++;
	s->calls++;
	rpc_client_call(cl, RPC_METHOD_DELIVER, &req.base, s->cf->rpc_ms, deliver_done, g);
	free(rcpts);
	return 0;
}

static void deliver_done(void *arg, enum rpc_status status, const ProtobufCMessage *reply_msg,
			 const Mail__Rpc__ErrorReply *err)
{
	struct smtp_group *g = arg;
	struct smtp_session *s = g->s;
	s->calls--;
	s_enter(s);
	int gi = (int)(g - s->groups);
	struct smtp_txn *t = s->txn;
	if (status == RPC_OK) {
		const Mail__Rpc__DeliverReply *r = (const Mail__Rpc__DeliverReply *)reply_msg;
		for (size_t i = 0; i < t->nfinals; i++) {
			struct smtp_final *f = &t->finals[i];
			if (f->group != gi)
				continue;
			const Mail__Rpc__RecipientStatus *st = NULL;
			for (size_t k = 0; k < r->n_statuses && !st; k++)
				if (strcmp(r->statuses[k]->recipient, f->addr) == 0)
					st = r->statuses[k];
			if (st) {
				f->code = st->code;
				snprintf(f->text, sizeof(f->text), "%s", st->text);
			} else {
				f->code = 451;
				snprintf(f->text, sizeof(f->text), "4.3.0 no status from the node");
			}
		}
	} else {
		uint32_t code = 451;
		const char *text = "4.3.0 mailbox node unavailable";
		if (status == RPC_REMOTE_ERROR && err &&
		    err->code == MAIL__RPC__ERROR_CODE__ERROR_TOO_LARGE) {
			code = 552;
			text = "5.3.4 message too big";
		}
		char qe[160];
		bool again = s->c && g->attempts < SMTP_DELIVER_ATTEMPTS && retryable(status, err);
		LOG_WARN("smtp", s->id, "deliver_failed",
			 "id=%s node=%s shard=%u attempt=%u status=%s error=%s retry=%s", t->id,
			 g->node, g->shard, g->attempts, rpc_status_str(status),
			 log_quote_cstr(qe, sizeof(qe), err ? err->message : ""), again ? "yes" : "no");
		if (again) {
			/* The timer holds the session like a call. */
			s->calls++;
			timer_start(s->loop, &g->retry, SMTP_DELIVER_RETRY_MS);
			goto out;
		}
		group_fail(s, gi, code, text);
	}
	group_done(s, g);
out:
	s_leave(s);
}

static void deliver_retry(struct timer *tm)
{
	struct smtp_group *g = tm->arg;
	struct smtp_session *s = g->s;
	s->calls--;
	s_enter(s);
	int gi = (int)(g - s->groups);
	struct smtp_txn *t = s->txn;
	struct route_target rt;
	const struct smtp_final *f = NULL;
	for (size_t i = 0; i < t->nfinals && !f; i++)
		if (t->finals[i].group == gi)
			f = &t->finals[i];
	if (s->c && f && route_lookup(s->p->route, f->addr, &rt) == ROUTE_OK &&
	    rt.shard == g->shard) {
		g->epoch = rt.epoch;
		snprintf(g->node, sizeof(g->node), "%s", rt.addr);
		if (deliver_send(s, g) == 0)
			goto out;
	}
	group_fail(s, gi, 451, "4.3.0 mailbox node unavailable");
	group_done(s, g);
out:
	s_leave(s);
}

/* Start the groups that can go now: one DELIVER in flight per node (a
 * node's groups follow each other, so a large message to many shards of
 * one node is never queued there several times at once), different
 * nodes in parallel. */
static void send_next(struct smtp_session *s)
{
	for (size_t g = 0; g < s->ngroups; g++) {
		struct smtp_group *gr = &s->groups[g];
		if (gr->sent || gr->done)
			continue;
		bool busy = false;
		for (size_t h = 0; h < s->ngroups && !busy; h++)
			busy = s->groups[h].sent && !s->groups[h].done &&
			       strcmp(s->groups[h].node, gr->node) == 0;
		if (busy)
			continue;
		gr->sent = true;
		if (deliver_send(s, gr) < 0) {
			group_fail(s, (int)g, 451, "4.3.0 mailbox node unavailable");
			gr->done = true;
			s->groups_pending--;
		}
	}
}

/* Group g is over (answered or failed for good). */
static void group_done(struct smtp_session *s, struct smtp_group *g)
{
	g->done = true;
	s->groups_pending--;
	if (s->c)
		send_next(s);
	else
		for (size_t h = 0; h < s->ngroups; h++)
			if (!s->groups[h].sent && !s->groups[h].done) {
				/* the client is gone: nothing more to send */
				s->groups[h].done = true;
				s->groups_pending--;
			}
	if (s->groups_pending == 0)
		deliver_finish(s);
}

/* The message is complete: one DELIVER per node and shard. */
static void deliver_start(struct smtp_session *s)
{
	struct smtp_txn *t = s->txn;
	t->received_ms = time_real_ms();
	t->size = t->msg.len - t->trace_len;
	s->groups = xcalloc(t->nfinals ? t->nfinals : 1, sizeof(*s->groups));
	s->ngroups = 0;
	s->groups_pending = 0;
	/* Routed again now: the map may have changed since RCPT. */
	for (size_t i = 0; i < t->nfinals; i++) {
		struct smtp_final *f = &t->finals[i];
		struct route_target rt;
		f->group = -1;
		if (route_lookup(s->p->route, f->addr, &rt) != ROUTE_OK) {
			f->code = 451;
			snprintf(f->text, sizeof(f->text), "4.3.0 no node serves the mailbox");
			continue;
		}
		f->shard = rt.shard;
		f->epoch = rt.epoch;
		snprintf(f->node, sizeof(f->node), "%s", rt.addr);
		size_t g = 0;
		while (g < s->ngroups &&
		       (s->groups[g].shard != f->shard || strcmp(s->groups[g].node, f->node) != 0))
			g++;
		if (g == s->ngroups) {
			struct smtp_group *ng = &s->groups[s->ngroups++];
			ng->s = s;
			ng->shard = f->shard;
			ng->epoch = f->epoch;
			snprintf(ng->node, sizeof(ng->node), "%s", f->node);
		}
		f->group = (int)g;
		s->groups[g].n++;
	}
	pause_input(s);
	/* The message stays until every group is answered: a retry sends
	 * it again. */
	for (size_t g = 0; g < s->ngroups; g++)
		timer_init(&s->groups[g].retry, deliver_retry, &s->groups[g]);
	s->groups_pending = s->ngroups;
	send_next(s);
	if (s->groups_pending == 0)
		deliver_finish(s);
}

/* DATA ended (CRLF.CRLF). */
static void data_end(struct smtp_session *s)
{
	struct smtp_txn *t = s->txn;
	s->state = SMTP_S_COMMAND;
	if (t->data.bare_lf || t->data.bare_cr)
		metrics_inc(m.bare_lf);
	const char *enh, *text;
	int code = smtp_data_status(&t->data, &enh, &text);
	if (code == 250 && t->no_space) {
		code = 452;
		enh = "4.3.1";
		text = "Insufficient system storage, try again later";
	}
	if (code != 250) {
		char qs[300];
		LOG_INFO("smtp", s->id, "message",
			 "id=%s from=%s rcpts=%zu size=%llu via=data result=rejected code=%d "
			 "bare_lf=%llu bare_cr=%llu",
			 t->id, log_quote_cstr(qs, sizeof(qs), t->sender), t->nrcpts,
			 (unsigned long long)t->data.size, code, (unsigned long long)t->data.bare_lf,
			 (unsigned long long)t->data.bare_cr);
		if (code >= 500)
			metrics_inc(m.msg_rejected);
		else
			metrics_inc(m.msg_tempfail);
		reply(s, code, enh, "%s", text);
		txn_reset(s);
		return;
	}
	deliver_start(s);
}

/* ---- BDAT ------------------------------------------------------------------------------ */

/* The chunk is read and dropped, then refused with this reply. */
static void chunk_refuse(struct smtp_session *s, int code, const char *enh, const char *text)
{
	s->chunk_discard = true;
	s->chunk_code = code;
	s->chunk_enh = enh;
	s->chunk_text = text;
}

static void chunk_end(struct smtp_session *s)
{
	struct smtp_txn *t = s->txn;
	s->state = SMTP_S_COMMAND;
	if (s->chunk_discard) {
		bool in_txn = t && t->started;
		if (in_txn && s->chunk_last) {
			char qs[300];
			LOG_INFO("smtp", s->id, "message",
				 "id=%s from=%s rcpts=%zu size=%llu via=bdat result=rejected code=%d",
				 t->id, log_quote_cstr(qs, sizeof(qs), t->sender), t->nrcpts,
				 (unsigned long long)t->bd.total, s->chunk_code);
			metrics_inc(m.msg_rejected);
			txn_reset(s);
		}
		if (in_txn)
			reply(s, s->chunk_code, s->chunk_enh, "%s", s->chunk_text);
		else
			err_reply(s, "bdat", s->chunk_code, s->chunk_enh, s->chunk_text);
		return;
	}
	if (!s->chunk_last) {
		reply(s, 250, "2.0.0", "%llu octets received", (unsigned long long)s->chunk_size);
		return;
	}
	deliver_start(s);
}

static void cmd_bdat(struct smtp_session *s, const struct smtp_command *cmd, const char *refused)
{
	struct smtp_txn *t = s->txn;
	s->state = SMTP_S_BDAT;
	s->chunk_size = s->chunk_left = cmd->bdat_size;
	s->chunk_last = cmd->bdat_last;
	s->chunk_discard = false;
	if (refused) {
		chunk_refuse(s, 530, "5.7.0", refused);
	} else if (!s->helo_seen) {
		chunk_refuse(s, 503, "5.5.1", "Send HELO/EHLO first");
	} else if (!t) {
		chunk_refuse(s, 503, "5.5.1", "Need MAIL command");
	} else if (t->started && !t->bdat) {
		chunk_refuse(s, 503, "5.5.1", "BDAT after DATA");
	} else if (t->nrcpts == 0) {
		chunk_refuse(s, 554, "5.5.1", "No valid recipients");
	} else if (t->bdat_code) {
		chunk_refuse(s, t->bdat_code, t->bdat_enh, t->bdat_text);
	} else {
		if (!t->started)
			message_start(s, true);
		if (!smtp_bdat_begin(&t->bd, cmd->bdat_size, cmd->bdat_last)) {
			t->bdat_code = 552;
			t->bdat_enh = "5.3.4";
			t->bdat_text = "Message size exceeds fixed limit";
			chunk_refuse(s, t->bdat_code, t->bdat_enh, t->bdat_text);
		}
	}
	if (s->chunk_left == 0)
		chunk_end(s);
}

static size_t on_chunk(struct smtp_session *s, const uint8_t *d, size_t len)
{
	size_t n = (size_t)MIN((uint64_t)len, s->chunk_left);
	struct smtp_txn *t = s->txn;
	if (!s->chunk_discard && msg_append(t, d, n) < 0) {
		t->bdat_code = 451;
		t->bdat_enh = "4.3.0";
		t->bdat_text = "Temporary failure storing the message";
		chunk_refuse(s, t->bdat_code, t->bdat_enh, t->bdat_text);
	} else if (!s->chunk_discard && t->no_space) {
		t->bdat_code = 452;
		t->bdat_enh = "4.3.1";
		t->bdat_text = "Insufficient system storage, try again later";
		chunk_refuse(s, t->bdat_code, t->bdat_enh, t->bdat_text);
	}
	s->chunk_left -= n;
	if (s->chunk_left == 0)
		chunk_end(s);
	return n;
}

/* ---- RCPT: the directory, then each final recipient's node ---------------------------- */

static void rcpt_answer(struct smtp_session *s, int code, const char *enh, const char *text)
{
	struct smtp_rcpt_check *k = s->chk;
	char qa[300];
	log_quote_cstr(qa, sizeof(qa), k ? k->addr : "");
	if (code >= 500) {
		metrics_inc(m.rcpt_rejected);
		LOG_INFO("smtp", s->id, "rcpt_rejected", "rcpt=%s code=%d enh=%s", qa, code, enh);
		err_reply(s, "rcpt", code, enh, text);
	} else {
		metrics_inc(m.rcpt_tempfail);
		LOG_INFO("smtp", s->id, "rcpt_tempfail", "rcpt=%s code=%d enh=%s", qa, code, enh);
		reply(s, code, enh, "%s", text);
	}
	check_free(&s->chk);
	command_done(s);
}

/* All targets are known. */
static void rcpt_decide(struct smtp_session *s)
{
	struct smtp_rcpt_check *k = s->chk;
	struct smtp_txn *t = s->txn;
	const struct smtp_target *first_temp = NULL, *first_perm = NULL;
	size_t ok = 0;
	for (size_t i = 0; i < k->nt; i++) {
		const struct smtp_target *tg = &k->t[i];
		if (tg->code == 250)
			ok++;
		else if (tg->code < 500)
			first_temp = first_temp ? first_temp : tg;
		else
			first_perm = first_perm ? first_perm : tg;
	}
	if (first_temp) {
		rcpt_answer(s, first_temp->code, first_temp->enh, first_temp->text);
		return;
	}
	if (!ok) {
		rcpt_answer(s, first_perm->code, first_perm->enh, first_perm->text);
		return;
	}
	if (t->nrcpts == t->cap_rcpts) {
		t->cap_rcpts = t->cap_rcpts ? 2 * t->cap_rcpts : 4;
		t->rcpts = xrealloc(t->rcpts, t->cap_rcpts * sizeof(*t->rcpts));
	}
	size_t ri = t->nrcpts++;
	t->rcpts[ri] = (struct smtp_rcpt){ .addr = xstrdup(k->addr), .notify = k->notify,
					   .orcpt = k->orcpt };
	k->orcpt = NULL;
	for (size_t i = 0; i < k->nt; i++) {
		const struct smtp_target *tg = &k->t[i];
		char qa[300];
		if (tg->code != 250) {
			/* One bad target does not refuse an alias's other ones. */
			LOG_INFO("smtp", s->id, "alias_target_dropped", "rcpt=%s target=%s code=%d",
				 log_quote_cstr(qa, sizeof(qa), k->addr), tg->addr, tg->code);
			continue;
		}
		bool dup = false;
		for (size_t j = 0; j < t->nfinals && !dup; j++)
			dup = strcmp(t->finals[j].addr, tg->addr) == 0;
		if (dup)
			continue;
		if (t->nfinals == t->cap_finals) {
			t->cap_finals = t->cap_finals ? 2 * t->cap_finals : 4;
			t->finals = xrealloc(t->finals, t->cap_finals * sizeof(*t->finals));
		}
		struct smtp_final *f = &t->finals[t->nfinals++];
		memset(f, 0, sizeof(*f));
		snprintf(f->addr, sizeof(f->addr), "%s", tg->addr);
		f->rcpt = ri;
	}
	metrics_inc(m.rcpt_accepted);
	char qa[300];
	LOG_DEBUG("smtp", s->id, "rcpt", "rcpt=%s targets=%zu finals=%zu",
		  log_quote_cstr(qa, sizeof(qa), k->addr), ok, t->nfinals);
	reply(s, 250, "2.1.5", "Ok");
	check_free(&s->chk);
	command_done(s);
}

static void target_set(struct smtp_target *tg, int code, const char *enh, const char *text)
{
	tg->code = code;
	tg->enh = enh;
	tg->text = text;
}

static void user_done(void *arg, enum rpc_status status, const ProtobufCMessage *reply_msg,
		      const Mail__Rpc__ErrorReply *err)
{
	struct smtp_target *tg = arg;
	struct smtp_session *s = tg->s;
	s->calls--;
	s_enter(s);
	struct smtp_rcpt_check *k = s->chk;
	if (status == RPC_OK) {
		const Mail__Rpc__UserInfo *u = (const Mail__Rpc__UserInfo *)reply_msg;
		uint64_t want = s->txn ? s->txn->size_declared : 0;
		if (!u->enabled)
			target_set(tg, 550, "5.2.1", "Mailbox disabled");
		else if (u->quota_bytes && u->used_bytes >= u->quota_bytes)
			target_set(tg, 452, "4.2.2", "Mailbox full");
		else if (u->quota_bytes && want > u->quota_bytes)
			target_set(tg, 552, "5.2.2", "Message larger than the mailbox quota");
		else if (u->quota_bytes && want > u->quota_bytes - u->used_bytes)
			target_set(tg, 452, "4.2.2", "Mailbox full");
		else
			target_set(tg, 250, "2.1.5", "Ok");
	} else if (status == RPC_REMOTE_ERROR && err &&
		   err->code == MAIL__RPC__ERROR_CODE__ERROR_BAD_REQUEST) {
		/* "not_found: ..." and addresses the node cannot take alike */
		target_set(tg, 550, "5.1.1", "Recipient address rejected: user unknown");
	} else {
		char qe[160];
		LOG_WARN("smtp", s->id, "user_lookup_failed", "node=%s status=%s error=%s",
			 tg->rt.addr, rpc_status_str(status),
			 log_quote_cstr(qe, sizeof(qe), err ? err->message : ""));
		target_set(tg, 451, "4.3.0", "Mailbox temporarily unavailable, try again later");
	}
	if (--k->pending == 0) {
		if (s->c)
			rcpt_decide(s);
		else
			check_free(&s->chk);
	}
	s_leave(s);
}

static void resolve_done(void *arg, enum rpc_status status, const ProtobufCMessage *reply_msg,
			 const Mail__Rpc__ErrorReply *err)
{
	struct smtp_session *s = arg;
	s->calls--;
	s_enter(s);
	struct smtp_rcpt_check *k = s->chk;
	if (!s->c) {
		check_free(&s->chk);
		goto out;
	}
	if (status != RPC_OK) {
		if (status == RPC_REMOTE_ERROR && err &&
		    err->code == MAIL__RPC__ERROR_CODE__ERROR_BAD_REQUEST) {
			rcpt_answer(s, 553, "5.1.3", "Bad recipient address syntax");
		} else {
			char qe[160];
			LOG_WARN("smtp", s->id, "resolve_failed", "status=%s error=%s",
				 rpc_status_str(status),
				 log_quote_cstr(qe, sizeof(qe), err ? err->message : ""));
			rcpt_answer(s, 451, "4.3.0", "Directory unavailable, try again later");
		}
		goto out;
	}
	const Mail__Rpc__AliasRequest *r = (const Mail__Rpc__AliasRequest *)reply_msg;
	if (r->n_targets == 0) {
		/* Not a local domain: relaying. */
		metrics_inc(m.relay_denied);
		if (s->auth_user)
			rcpt_answer(s, 550, "5.7.1", "Relaying not available yet");
		else
			rcpt_answer(s, 554, "5.7.1", "Relay access denied");
		goto out;
	}
	if (s->txn->nfinals + r->n_targets > SMTP_MAX_FINALS) {
		rcpt_answer(s, 452, "4.5.3", "Too many recipients");
		goto out;
	}
	k->nt = r->n_targets;
	k->t = xcalloc(k->nt, sizeof(*k->t));
	for (size_t i = 0; i < k->nt; i++) {
		struct smtp_target *tg = &k->t[i];
		tg->s = s;
		if (strlen(r->targets[i]) >= sizeof(tg->addr)) {
			target_set(tg, 550, "5.1.1", "Recipient address rejected: user unknown");
			continue;
		}
		snprintf(tg->addr, sizeof(tg->addr), "%s", r->targets[i]);
	}
	/* Calls go out after the reply is copied: a callback never runs
	 * before rpc_client_call returns, but keep it simple. */
	for (size_t i = 0; i < k->nt; i++) {
		struct smtp_target *tg = &k->t[i];
		if (tg->code)
			continue;
		enum route_result rr = route_lookup(s->p->route, tg->addr, &tg->rt);
		if (rr == ROUTE_BAD_ADDRESS) {
			target_set(tg, 550, "5.1.1", "Recipient address rejected: user unknown");
			continue;
		}
		struct rpc_client *cl = rr == ROUTE_OK ? proxy_node_client(s->p, tg->rt.addr) : NULL;
		if (!cl) {
			target_set(tg, 451, "4.3.0", "Mailbox temporarily unavailable, try again later");
			continue;
		}
		Mail__Rpc__UserRequest req = MAIL__RPC__USER_REQUEST__INIT;
		req.user = tg->rt.owner;
		s->calls++;
		k->pending++;
		rpc_client_call(cl, RPC_METHOD_USER_GET, &req.base, s->cf->rpc_ms, user_done, tg);
	}
	if (k->pending == 0)
		rcpt_decide(s);
out:
	s_leave(s);
}

static void cmd_rcpt(struct smtp_session *s, const struct smtp_command *cmd)
{
	struct smtp_txn *t = s->txn;
	if (!t) {
		err_reply(s, "rcpt", 503, "5.5.1", "Need MAIL command");
		return;
	}
	if (t->started) {
		err_reply(s, "rcpt", 503, "5.5.1", "RCPT after message data");
		return;
	}
	if (t->nrcpts >= s->cf->max_recipients) {
		reply(s, 452, "4.5.3", "Too many recipients");
		return;
	}
	if (cmd->path.utf8 && !t->smtputf8) {
		err_reply(s, "rcpt", 553, "5.6.7", "Non-ASCII address needs MAIL FROM ... SMTPUTF8");
		return;
	}
	struct smtp_rcpt_check *k = xcalloc(1, sizeof(*k));
	if (cmd->path.postmaster)
		snprintf(k->addr, sizeof(k->addr), "postmaster@%.200s", s->p->hostname);
	else
		copy_view(k->addr, sizeof(k->addr), cmd->path.mailbox);
	k->notify = cmd->notify;
	k->orcpt = cmd->orcpt.len ? dup_view(cmd->orcpt) : NULL;
	s->chk = k;
	const char *node = route_any_node(s->p->route);
	struct rpc_client *cl = node ? proxy_node_client(s->p, node) : NULL;
	if (!cl) {
		rcpt_answer(s, 451, "4.3.0", "Directory unavailable, try again later");
		return;
	}
	Mail__Rpc__UserRequest req = MAIL__RPC__USER_REQUEST__INIT;
	req.user = k->addr;
	s->calls++;
	pause_input(s);
	rpc_client_call(cl, RPC_METHOD_RESOLVE, &req.base, s->cf->rpc_ms, resolve_done, s);
}

/* ---- AUTH ------------------------------------------------------------------------------ */

static void auth_failed(struct smtp_session *s, const char *why)
{
	char qu[300];
	metrics_inc(m.auth_failed);
	LOG_INFO("smtp", s->id, "auth_failed", "user=%s reason=%s",
		 log_quote_cstr(qu, sizeof(qu), s->sasl_user), why);
	if (++s->auth_failures >= SMTP_MAX_AUTH_FAILURES) {
		reply(s, 421, "4.7.0", "%s Error: too many authentication failures",
		      s->p->hostname);
		close_session(s);
		return;
	}
	err_reply(s, "auth", 535, "5.7.8", "Authentication credentials invalid");
}

/* The limits' name for the user: the canonical owner, else the name as
 * given in lower case. */
static void limits_user(const struct smtp_session *s, char *out, size_t cap)
{
	const char *why = NULL;
	const char *u = s->sasl_user ? s->sasl_user : "";
	if (address_owner(view_cstr(u), out, cap, NULL, 0, &why) == 0)
		return;
	size_t n = 0;
	for (; u[n] && n + 1 < cap; n++)
		out[n] = (char)tolower((unsigned char)u[n]);
	out[n] = '\0';
}

static void fail_answer(void *arg, enum limits_verdict v)
{
	struct smtp_session *s = arg;
	UNUSED(v);
	s_enter(s);
	auth_failed(s, s->fail_why);
	sasl_clear(s);
	command_done(s);
	s_leave(s);
}

/* A failed AUTH is counted by the limits; answered after its delay. */
static void auth_fail_later(struct smtp_session *s, const char *why)
{
	char u[SMTP_SASL_ID_MAX + 1];
	limits_user(s, u, sizeof(u));
	s->fail_why = why;
	pause_input(s);
	limits_auth_failed(s->lim, u, fail_answer, s);
}

static void auth_done(void *arg, enum rpc_status status, const ProtobufCMessage *reply_msg,
		      const Mail__Rpc__ErrorReply *err)
{
	struct smtp_session *s = arg;
	s->calls--;
	s_enter(s);
	if (!s->c)
		goto out;
	const Mail__Rpc__AuthReply *r = (const Mail__Rpc__AuthReply *)reply_msg;
	if (status == RPC_OK && r->ok && r->user[0]) {
		s->auth_user = xstrdup(r->user);
		metrics_inc(m.auth_ok);
		char qu[300];
		LOG_INFO("smtp", s->id, "auth", "user=%s",
			 log_quote_cstr(qu, sizeof(qu), s->auth_user));
		limits_auth_ok(s->lim, s->auth_user);
		reply(s, 235, "2.7.0", "Authentication successful");
	} else if (status == RPC_OK) {
		auth_fail_later(s, "credentials");
		goto out;
	} else {
		char qe[160], qu[300];
		LOG_WARN("smtp", s->id, "auth_unavailable", "user=%s status=%s error=%s",
			 log_quote_cstr(qu, sizeof(qu), s->sasl_user), rpc_status_str(status),
			 log_quote_cstr(qe, sizeof(qe), err ? err->message : ""));
		reply(s, 454, "4.7.0", "Temporary authentication failure");
	}
	sasl_clear(s);
	command_done(s);
out:
	s_leave(s);
}

/* Not banned: the user's node checks the credentials. */
static void auth_checked(void *arg, enum limits_verdict v)
{
	struct smtp_session *s = arg;
	s_enter(s);
	struct route_target rt;
	enum route_result rr = route_lookup(s->p->route, s->sasl_user, &rt);
	struct rpc_client *cl = rr == ROUTE_OK ? proxy_node_client(s->p, rt.addr) : NULL;
	if (v != LIMITS_OK) {
		/* Answered like a wrong password; the node is not asked. */
		auth_failed(s, limits_verdict_str(v));
		sasl_clear(s);
		command_done(s);
	} else if (!cl) {
		reply(s, 454, "4.7.0", "Temporary authentication failure");
		sasl_clear(s);
		command_done(s);
	} else {
		Mail__Rpc__AuthRequest req = MAIL__RPC__AUTH_REQUEST__INIT;
		req.user = s->sasl_user;
		req.password = s->auth_pw;
		req.protocol = MAIL__RPC__PROTOCOL__PROTOCOL_SMTP;
		req.client_address = s->peer;
		s->calls++;
		rpc_client_call(cl, RPC_METHOD_AUTH, &req.base, s->cf->rpc_ms, auth_done, s);
	}
	pw_clear(s);
	s_leave(s);
}

/* Credentials complete: a ban check (limits.h), then the user's node. */
static void auth_start(struct smtp_session *s, struct view user, struct view pass)
{
	sasl_set_user(s, user);
	s->state = SMTP_S_COMMAND;
	s->sasl = SASL_NONE;
	struct route_target rt;
	enum route_result rr = route_lookup(s->p->route, s->sasl_user, &rt);
	if (rr == ROUTE_BAD_ADDRESS || memchr(pass.ptr, 0, pass.len)) {
		auth_fail_later(s, "not_an_address");
	} else if (rr != ROUTE_OK) {
		reply(s, 454, "4.7.0", "Temporary authentication failure");
		sasl_clear(s);
	} else {
		pw_clear(s);
		s->auth_pw = xcalloc(1, SMTP_SASL_PASS_MAX + 1);
		copy_view(s->auth_pw, SMTP_SASL_PASS_MAX + 1, pass);
		pause_input(s);
		limits_auth_check(s->lim, rt.owner, auth_checked, s);
	}
}

static void sasl_plain(struct smtp_session *s, struct view b64)
{
	uint8_t dec[1024];
	struct smtp_sasl_plain sp;
	const char *why = NULL;
	s->state = SMTP_S_COMMAND;
	s->sasl = SASL_NONE;
	if (smtp_sasl_plain_decode(b64, dec, sizeof(dec), &sp, &why) < 0) {
		err_reply(s, "auth_malformed", 501, "5.5.2", why);
		return;
	}
	if (sp.authzid.len && (sp.authzid.len != sp.authcid.len ||
			       memcmp(sp.authzid.ptr, sp.authcid.ptr, sp.authcid.len) != 0)) {
		explicit_bzero(dec, sizeof(dec));
		err_reply(s, "authzid", 535, "5.7.8", "Authorization identity not allowed");
		return;
	}
	auth_start(s, sp.authcid, sp.passwd);
	explicit_bzero(dec, sizeof(dec));
}

/* One SASL response line. */
static void sasl_step(struct smtp_session *s, struct view line)
{
	if (smtp_sasl_is_cancel(line)) {
		s->state = SMTP_S_COMMAND;
		s->sasl = SASL_NONE;
		sasl_clear(s);
		err_reply(s, "auth_cancel", 501, "5.0.0", "Authentication cancelled");
		return;
	}
	uint8_t dec[SMTP_SASL_PASS_MAX + 1];
	struct view v;
	const char *why = NULL;
	switch (s->sasl) {
	case SASL_PLAIN:
		sasl_plain(s, line);
		return;
	case SASL_LOGIN_USER:
		if (smtp_sasl_login_decode(line, dec, sizeof(dec), SMTP_SASL_ID_MAX, &v, &why) < 0)
			break;
		sasl_set_user(s, v);
		explicit_bzero(dec, sizeof(dec));
		s->sasl = SASL_LOGIN_PASS;
		reply(s, 334, NULL, SMTP_LOGIN_PROMPT_PASS);
		return;
	case SASL_LOGIN_PASS: {
		if (smtp_sasl_login_decode(line, dec, sizeof(dec), SMTP_SASL_PASS_MAX, &v, &why) < 0)
			break;
		char user[SMTP_SASL_ID_MAX + 1];
		snprintf(user, sizeof(user), "%s", s->sasl_user ? s->sasl_user : "");
		auth_start(s, view_cstr(user), v);
		explicit_bzero(user, sizeof(user));
		explicit_bzero(dec, sizeof(dec));
		return;
	}
	default:
		break;
	}
	s->state = SMTP_S_COMMAND;
	s->sasl = SASL_NONE;
	sasl_clear(s);
	err_reply(s, "auth_malformed", 501, "5.5.2", why ? why : "Invalid response");
}

static void cmd_auth(struct smtp_session *s, const struct smtp_command *cmd)
{
	if (!auth_offered(s)) {
		err_reply(s, "auth", 502, "5.5.1", "AUTH not available here");
		return;
	}
	if (!s->esmtp) {
		err_reply(s, "auth", 503, "5.5.1", "Send EHLO first");
		return;
	}
	if (s->auth_user) {
		err_reply(s, "auth", 503, "5.5.1", "Already authenticated");
		return;
	}
	if (s->txn) {
		err_reply(s, "auth", 503, "5.5.1", "AUTH not allowed during a mail transaction");
		return;
	}
	bool initial = cmd->has_initial && !view_eq_cstr(cmd->auth_initial, "=");
	if (view_eq_nocase(cmd->auth_mech, "PLAIN")) {
		if (initial) {
			sasl_plain(s, cmd->auth_initial);
			return;
		}
		s->state = SMTP_S_AUTH;
		s->sasl = SASL_PLAIN;
		reply(s, 334, NULL, "%s", "");
		return;
	}
	if (view_eq_nocase(cmd->auth_mech, "LOGIN")) {
		s->state = SMTP_S_AUTH;
		s->sasl = SASL_LOGIN_USER;
		if (initial) {
			sasl_step(s, cmd->auth_initial);
			return;
		}
		reply(s, 334, NULL, SMTP_LOGIN_PROMPT_USER);
		return;
	}
	err_reply(s, "auth_mech", 504, "5.5.4", "Unrecognized authentication type");
}

/* ---- commands ------------------------------------------------------------------------- */

static void cmd_ehlo(struct smtp_session *s, const struct smtp_command *cmd)
{
	txn_reset(s);
	s->helo_seen = true;
	s->esmtp = cmd->verb == SMTP_CMD_EHLO;
	sanitize_helo(s->helo, sizeof(s->helo), cmd->arg);
	if (!s->esmtp) {
		reply(s, 250, NULL, "%s", s->p->hostname);
		return;
	}
	struct smtp_ehlo_caps caps = {
		.size = s->cf->max_size,
		.pipelining = true,
		.eightbitmime = true,
		.smtputf8 = true,
		.chunking = true,
		.enhancedstatuscodes = true,
		.starttls = starttls_offered(s),
		.auth = auth_offered(s) && !s->auth_user ? "PLAIN LOGIN" : NULL,
	};
	struct buf rbuf;
	buf_init(&rbuf, 64 * 1024);
	smtp_ehlo_reply(&rbuf, s->p->hostname, "Hello", &caps);
	reply_flush(s, &rbuf);
}

static void mail_checked(void *arg, enum limits_verdict v)
{
	struct smtp_session *s = arg;
	s_enter(s);
	if (v != LIMITS_OK) {
		txn_free(&s->txn);
		reply(s, 450, "4.7.1", "Too many messages today, try again later");
	} else {
		reply(s, 250, "2.1.0", "Ok");
	}
	command_done(s);
	s_leave(s);
}

static void cmd_mail(struct smtp_session *s, const struct smtp_command *cmd)
{
	if (s->draining) {
		reply(s, 421, "4.3.2", "%s Service shutting down", s->p->hostname);
		close_session(s);
		return;
	}
	if (s->txn) {
		err_reply(s, "mail", 503, "5.5.1", "Nested MAIL command");
		return;
	}
	if (cmd->body == SMTP_BODY_BINARYMIME) {
		err_reply(s, "mail", 504, "5.5.4", "BODY=BINARYMIME not supported");
		return;
	}
	struct smtp_txn *t = xcalloc(1, sizeof(*t));
	if (!cmd->path.null)
		copy_view(t->sender, sizeof(t->sender), cmd->path.mailbox);
	t->smtputf8 = cmd->smtputf8;
	t->body = cmd->body;
	t->ret = cmd->ret;
	t->envid = cmd->envid.len ? dup_view(cmd->envid) : NULL;
	t->size_declared = cmd->has_size ? cmd->size : 0;
	buf_init(&t->msg, 0);
	s->txn = t;
	if (s->auth_user) {
		/* limits.messages_per_day: one more message of this sender */
		pause_input(s);
		limits_message(s->lim, s->auth_user, mail_checked, s);
		return;
	}
	reply(s, 250, "2.1.0", "Ok");
}

static void cmd_data(struct smtp_session *s)
{
	struct smtp_txn *t = s->txn;
	if (!t) {
		err_reply(s, "data", 503, "5.5.1", "Need MAIL command");
		return;
	}
	if (t->started) {
		err_reply(s, "data", 503, "5.5.1", "DATA after BDAT");
		return;
	}
	if (t->nrcpts == 0) {
		err_reply(s, "data", 554, "5.5.1", "No valid recipients");
		return;
	}
	message_start(s, false);
	s->state = SMTP_S_DATA;
	reply(s, 354, NULL, "End data with <CR><LF>.<CR><LF>");
}

static void cmd_starttls(struct smtp_session *s, size_t pipelined)
{
	if (!starttls_offered(s)) {
		if (s->tls)
			err_reply(s, "starttls", 503, "5.5.1", "TLS already active");
		else
			err_reply(s, "starttls", 502, "5.5.1", "STARTTLS not available");
		return;
	}
	reply(s, 220, "2.0.0", "Ready to start TLS");
	if (!s->c)
		return;
	if (pipelined) {
		/* Plaintext sent after STARTTLS could be an injection: it is
		 * dropped unread (conn_starttls_server) and counted. */
		LOG_INFO("smtp", s->id, "starttls_pipelined", "bytes=%zu", pipelined);
		if (count_error(s, "starttls_pipelined"))
			return;
	}
	if (conn_starttls_server(s->c, s->p->tls) < 0) {
		close_session(s);
		return;
	}
	/* RFC 3207 section 4.2: forget what the client said before. */
	txn_reset(s);
	s->helo_seen = false;
	s->esmtp = false;
	s->helo[0] = '\0';
	free(s->auth_user);
	s->auth_user = NULL;
}

static void dispatch(struct smtp_session *s, const struct smtp_command *cmd, size_t pipelined)
{
	/* Checks in RFC order: TLS (RFC 3207), AUTH (RFC 4954), HELO. */
	const char *refused = NULL;
	if (tls_required(s) && !(cmd->flags & SMTP_F_PRE_TLS))
		refused = "Must issue a STARTTLS command first";
	else if ((s->svc == SVC_SUBMISSION || s->svc == SVC_SUBMISSIONS) && !s->auth_user &&
		 !(cmd->flags & SMTP_F_PRE_AUTH))
		refused = "Authentication required";
	if (cmd->verb == SMTP_CMD_BDAT) {
		/* Its chunk follows whatever we answer. */
		cmd_bdat(s, cmd, refused);
		return;
	}
	if (cmd->verb == SMTP_CMD_UNKNOWN) {
		err_reply(s, "unknown", 500, "5.5.2", "Command unrecognized");
		return;
	}
	if (refused) {
		err_reply(s, "refused", 530, "5.7.0", refused);
		return;
	}
	if ((cmd->flags & SMTP_F_TXN) && !s->helo_seen) {
		err_reply(s, "sequence", 503, "5.5.1", "Send HELO/EHLO first");
		return;
	}
	switch (cmd->verb) {
	case SMTP_CMD_HELO:
	case SMTP_CMD_EHLO:
		cmd_ehlo(s, cmd);
		return;
	case SMTP_CMD_MAIL:
		cmd_mail(s, cmd);
		return;
	case SMTP_CMD_RCPT:
		cmd_rcpt(s, cmd);
		return;
	case SMTP_CMD_DATA:
		cmd_data(s);
		return;
	case SMTP_CMD_RSET:
		txn_reset(s);
		reply(s, 250, "2.0.0", "Ok");
		return;
	case SMTP_CMD_NOOP:
		reply(s, 250, "2.0.0", "Ok");
		return;
	case SMTP_CMD_QUIT:
		reply(s, 221, "2.0.0", "%s closing connection", s->p->hostname);
		close_session(s);
		return;
	case SMTP_CMD_VRFY:
		reply(s, 252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery");
		return;
	case SMTP_CMD_EXPN:
		reply(s, 502, "5.5.1", "EXPN not available");
		return;
	case SMTP_CMD_HELP:
		reply(s, 214, "2.0.0", "See RFC 5321");
		return;
	case SMTP_CMD_STARTTLS:
		cmd_starttls(s, pipelined);
		return;
	case SMTP_CMD_AUTH:
		cmd_auth(s, cmd);
		return;
	default:
		err_reply(s, "unknown", 500, "5.5.2", "Command unrecognized");
		return;
	}
}

/* ---- input ------------------------------------------------------------------------------ */

static size_t on_line(struct smtp_session *s, const uint8_t *d, size_t len)
{
	if (s->skipping) {
		bool done;
		size_t n = smtp_skip_line(d, len, &done);
		s->skipping = !done;
		return n;
	}
	struct smtp_command cmd;
	size_t used = 0;
	bool sasl = s->state == SMTP_S_AUTH;
	enum smtp_result r = sasl ? smtp_parse_raw_line(d, len, &s->cf->lim, &cmd, &used)
				  : smtp_parse_command(d, len, &s->cf->lim, &cmd, &used);
	switch (r) {
	case SMTP_MORE:
		return 0;
	case SMTP_BAD:
		s->skipping = cmd.line_open;
		if (sasl) {
			s->state = SMTP_S_COMMAND;
			s->sasl = SASL_NONE;
			sasl_clear(s);
		}
		LOG_DEBUG("smtp", s->id, "bad_command", "code=%d reason=\"%s\"", cmd.reply_code,
			  cmd.error);
		err_reply(s, "bad_command", cmd.reply_code, cmd.enh, cmd.error);
		return used;
	case SMTP_FATAL:
		LOG_INFO("smtp", s->id, "fatal_command", "code=%d reason=\"%s\"", cmd.reply_code,
			 cmd.error);
		reply(s, cmd.reply_code, cmd.enh, "%s", cmd.error);
		close_session(s);
		return len;
	case SMTP_OK:
		break;
	}
	if (sasl)
		sasl_step(s, cmd.arg);
	else
		dispatch(s, &cmd, len - used);
	return used;
}

static void early_talker(struct smtp_session *s, size_t len)
{
	metrics_inc(m.early_talkers);
	LOG_INFO("smtp", s->id, "early_talker", "bytes=%zu", len);
	timer_stop(s->loop, &s->timer);
	reply(s, 554, NULL, "%s Error: talking before the greeting", s->p->hostname);
	close_session(s);
}

static ssize_t smtp_on_data(struct conn *c, const uint8_t *d, size_t len)
{
	struct smtp_session *s = conn_user(c);
	s->last_input_ms = loop_now_ms(s->loop);
	if (s->state == SMTP_S_CLOSING)
		return (ssize_t)len;
	if (s->busy)
		return 0;
	s_enter(s);
	size_t n = 0;
	switch (s->state) {
	case SMTP_S_GREETING:
		early_talker(s, len);
		n = len;
		break;
	case SMTP_S_DATA: {
		int r = smtp_data_feed(&s->txn->data, d, len, &n, data_out, s->txn);
		if (r == 1)
			data_end(s);
		break;
	}
	case SMTP_S_BDAT:
		n = on_chunk(s, d, len);
		break;
	case SMTP_S_COMMAND:
	case SMTP_S_AUTH:
		n = on_line(s, d, len);
		break;
	case SMTP_S_CLOSING:
		n = len;
		break;
	}
	s_leave(s);
	return (ssize_t)n;
}

/* ---- connection events --------------------------------------------------------------- */

static void send_greeting(struct smtp_session *s)
{
	s->state = SMTP_S_COMMAND;
	reply(s, 220, NULL, "%s ESMTP ready", s->p->hostname);
	timer_start(s->loop, &s->timer, s->cf->idle_ms);
}

static void session_timer(struct timer *tm)
{
	struct smtp_session *s = tm->arg;
	if (!s->c)
		return;
	s_enter(s);
	if (s->state == SMTP_S_GREETING) {
		send_greeting(s);
		goto out;
	}
	uint64_t now = loop_now_ms(s->loop);
	uint64_t quiet = now - s->last_input_ms;
	if (s->busy || s->state == SMTP_S_CLOSING) {
		/* a node call has its own deadline */
		timer_start(s->loop, &s->timer, s->cf->idle_ms);
	} else if (quiet >= s->cf->idle_ms) {
		LOG_INFO("smtp", s->id, "idle_timeout", "state=%s idle_ms=%llu",
			 smtp_state_str(s->state), (unsigned long long)quiet);
		reply(s, 421, "4.4.2", "%s Error: timeout exceeded", s->p->hostname);
		close_session(s);
	} else {
		timer_start(s->loop, &s->timer, s->cf->idle_ms - quiet);
	}
out:
	s_leave(s);
}

static void conn_checked(void *arg, enum limits_verdict v)
{
	struct smtp_session *s = arg;
	s_enter(s);
	s->lim_wait = false;
	if (s->state == SMTP_S_CLOSING) {
		/* an early talker, or the proxy is draining */
	} else if (v != LIMITS_OK) {
		reply(s, 421, "4.7.0", "%s Too many connections, try again later", s->p->hostname);
		close_session(s);
	} else if (s->cf->greeting_delay_ms == 0) {
		send_greeting(s); /* with implicit TLS, held until the handshake */
	} else if (!proxy_service_implicit_tls(s->svc) || s->tls) {
		timer_start(s->loop, &s->timer, s->cf->greeting_delay_ms);
	}
	s_leave(s);
}

static void smtp_on_tls_ready(struct conn *c)
{
	struct smtp_session *s = conn_user(c);
	SSL *ssl = conn_ssl(c);
	s->tls = true;
	LOG_INFO("smtp", s->id, "tls", "version=%s cipher=%s", ssl ? tls_version_str(ssl) : "",
		 ssl ? tls_cipher_str(ssl) : "");
	/* Implicit TLS: the greeting delay starts now. */
	if (s->state == SMTP_S_GREETING && !s->lim_wait)
		timer_start(s->loop, &s->timer, s->cf->greeting_delay_ms);
}

static void smtp_on_shutdown(struct conn *c)
{
	struct smtp_session *s = conn_user(c);
	s->draining = true;
	if (s->busy || s->txn || s->state == SMTP_S_CLOSING)
		return; /* finish the transaction first (the drain limit still applies) */
	s_enter(s);
	reply(s, 421, "4.3.2", "%s Service shutting down", s->p->hostname);
	close_session(s);
	s_leave(s);
}

static void smtp_on_close(struct conn *c, enum conn_close_reason why)
{
	struct smtp_session *s = conn_user(c);
	char qu[300];
	LOG_INFO("smtp", s->id, "close", "reason=%s state=%s messages=%u errors=%u user=%s",
		 conn_close_reason_str(why), smtp_state_str(s->state), s->messages, s->errors,
		 log_quote_cstr(qu, sizeof(qu), s->auth_user));
	timer_stop(s->loop, &s->timer);
	limits_conn_close(&s->lim); /* cancels a pending check */
	s->c = NULL;
	if (s->depth == 0 && s->calls == 0)
		session_free(s);
}

static const struct conn_handler smtp_handler = {
	.name = "smtp",
	.on_data = smtp_on_data,
	.on_tls_ready = smtp_on_tls_ready,
	.on_shutdown = smtp_on_shutdown,
	.on_close = smtp_on_close,
};

void smtp_session_accept(struct conn *c, struct proxy *p, enum proxy_service svc)
{
	pthread_once(&metrics_once, metrics_init);
	metrics_inc(m.sessions);
	struct smtp_session *s = xcalloc(1, sizeof(*s));
	s->c = c;
	s->loop = conn_loop(c);
	s->p = p;
	s->cf = smtp_conf(p->cfg);
	s->svc = svc;
	s->id = conn_id(c);
	s->last_input_ms = loop_now_ms(s->loop);
	timer_init(&s->timer, session_timer, s);
	const struct sockaddr *sa = conn_peer(c);
	if (sa && sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &in->sin_addr, s->peer, sizeof(s->peer));
		s->peer_port = ntohs(in->sin_port);
	} else if (sa && sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, s->peer, sizeof(s->peer));
		s->peer_port = ntohs(in6->sin6_port);
	} else {
		snprintf(s->peer, sizeof(s->peer), "unknown");
	}
	conn_set_handler(c, &smtp_handler, s);
	/* Our timer answers 421 first; the loop's is the backstop. */
	conn_set_idle_timeout(c, s->cf->idle_ms + 60000);
	LOG_INFO("smtp", s->id, "accept", "peer=%s port=%u service=%s", s->peer, s->peer_port,
		 proxy_service_str(svc));
	/* No greeting before the connection is counted (input meanwhile is
	 * an early talker's). */
	s->state = SMTP_S_GREETING;
	s->lim_wait = true;
	s->lim = limits_conn_open(p->limits, c, svc, s->id, conn_checked, s);
}
