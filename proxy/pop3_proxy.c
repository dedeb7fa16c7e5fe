/* POP3 at the proxy: the AUTHORIZATION state (RFC 1939, CAPA RFC 2449,
 * STLS RFC 2595, AUTH PLAIN RFC 5034, UTF8 RFC 6856), credentials checked
 * by the user's node (AUTH RPC), then the session is handed to that node
 * (relay.c), which answers PASS/AUTH itself ("+OK maildrop has ..."). Before
 * TLS, USER/PASS and AUTH are refused unless auth.plaintext is set. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/mem.h>

#include "common/log.h"
#include "proto/pop3_parse.h"
#include "proto/rpc.h"
#include "proxy/limits.h"
#include "proxy/proxy_internal.h"

#define POP3_PROXY_IDLE_MS 60000
#define POP3_PROXY_AUTH_DEADLINE_MS 15000

struct pop3_proxy {
	struct proxy *p;
	struct conn *c;
	enum proxy_service svc;
	uint64_t sid;
	unsigned errors, auth_failures;
	bool sasl_wait;
	bool skipping;    /* dropping the rest of an over-long line */
	bool pending;
	bool lim_wait; /* a limits check is pending (limits_conn_close cancels it) */
	bool closed;
	bool utf8;
	bool tls_started;
	struct relay *relay;
	struct limits_conn *lim; /* passed to the relay with the connection */
	struct route_target t;
	char user[POP3_SASL_ID_MAX + 1]; /* from USER */
	char login_user[POP3_SASL_ID_MAX + 1]; /* of the login in progress */
	char pass[POP3_SASL_PASS_MAX + 1];
	const char *mech;
};

static bool tls_on(const struct pop3_proxy *s)
{
	return proxy_service_implicit_tls(s->svc) || (s->c && conn_tls_active(s->c));
}

static bool login_allowed(const struct pop3_proxy *s)
{
	return tls_on(s) || s->p->auth_plaintext;
}

static void reply(struct pop3_proxy *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply(struct pop3_proxy *s, const char *fmt, ...)
{
	if (!s->c)
		return;
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	size_t len = MIN((size_t)n, sizeof(line) - 3);
	memcpy(line + len, "\r\n", 2);
	conn_write(s->c, line, len + 2);
}

static void session_free(struct pop3_proxy *s)
{
	limits_conn_close(&s->lim);
	OPENSSL_cleanse(s->pass, sizeof(s->pass));
	OPENSSL_cleanse(s->user, sizeof(s->user));
	free(s);
}

static bool error(struct pop3_proxy *s, const char *text)
{
	reply(s, "-ERR %s", text);
	if (++s->errors >= limits_bad_commands(s->p->limits) && s->c) {
		reply(s, "-ERR too many errors");
		conn_close(s->c);
		return true;
	}
	return false;
}

/* ---- login ------------------------------------------------------------------ */

static void relay_done(void *arg, bool ok, const char *why)
{
	struct pop3_proxy *s = arg;
	struct relay *r = s->relay;
	s->relay = NULL;
	s->pending = false;
	if (ok) {
		/* The connection's registrations end with the relay. */
		relay_set_close_cb(r, limits_conn_close_hook, s->lim);
		s->lim = NULL;
		s->c = NULL;
		session_free(s);
		return;
	}
	if (s->closed) {
		session_free(s);
		return;
	}
	limits_session_close(s->lim);
	LOG_WARN("pop3_proxy", s->sid, "handoff_failed", "user=%s node=%s why=%s", s->t.owner,
		 s->t.addr, why);
	reply(s, "-ERR [SYS/TEMP] mail store temporarily unavailable, try again later");
	conn_resume(s->c);
}

/* The answer to a failed login, once its delay has passed. */
static void fail_answer(void *arg, enum limits_verdict v)
{
	struct pop3_proxy *s = arg;
	UNUSED(v);
	s->lim_wait = false;
	if (++s->auth_failures >= limits_auth_fail_conn(s->p->limits)) {
		reply(s, "-ERR [AUTH] too many authentication failures");
		conn_close(s->c);
		return;
	}
	reply(s, "-ERR [AUTH] invalid user name or password");
	conn_resume(s->c);
}

/* Count a failed login (address and user); answer after its delay. */
static void login_failed(struct pop3_proxy *s, const char *user)
{
	s->lim_wait = true;
	conn_pause(s->c);
	limits_auth_failed(s->lim, user, fail_answer, s);
}

static void session_checked(void *arg, enum limits_verdict v)
{
	struct pop3_proxy *s = arg;
	s->lim_wait = false;
	if (v != LIMITS_OK) {
		reply(s, "-ERR [IN-USE] too many sessions for this user");
		conn_resume(s->c);
		return;
	}
	char addr[64] = "";
	struct relay_client_info info;
	proxy_client_info(s->c, s->sid, &info, addr, sizeof(addr));
	s->pending = true;
	s->relay = relay_start(s->p, s->c, &s->t, RELAY_POP3, NULL, s->utf8, &info, relay_done, s);
}

static void auth_reply(void *arg, enum rpc_status st, const ProtobufCMessage *msg,
		       const Mail__Rpc__ErrorReply *err)
{
	struct pop3_proxy *s = arg;
	s->pending = false;
	if (s->closed) {
		session_free(s);
		return;
	}
	const Mail__Rpc__AuthReply *rep = (const Mail__Rpc__AuthReply *)msg;
	if (st != RPC_OK || !rep) {
		LOG_WARN("pop3_proxy", s->sid, "auth_unavailable", "node=%s status=%s%s%s", s->t.addr,
			 rpc_status_str(st), err ? " error=" : "", err ? err->message : "");
		reply(s, "-ERR [SYS/TEMP] authentication temporarily unavailable");
		conn_resume(s->c);
		return;
	}
	if (!rep->ok) {
		LOG_INFO("pop3_proxy", s->sid, "login_failed", "user=%s mech=%s", s->t.owner, s->mech);
		login_failed(s, s->t.owner);
		return;
	}
	LOG_INFO("pop3_proxy", s->sid, "login", "user=%s mech=%s node=%s", s->t.owner, s->mech,
		 s->t.addr);
	limits_auth_ok(s->lim, s->t.owner);
	s->lim_wait = true;
	limits_session_open(s->lim, s->t.owner, s->t.addr, session_checked, s);
}

/* Not banned: ask the node. */
static void auth_checked(void *arg, enum limits_verdict v)
{
	struct pop3_proxy *s = arg;
	s->lim_wait = false;
	if (v != LIMITS_OK) {
		/* Answered like a wrong password; the node is not asked. */
		OPENSSL_cleanse(s->pass, sizeof(s->pass));
		LOG_INFO("pop3_proxy", s->sid, "login_failed", "user=%s mech=%s reason=%s", s->t.owner,
			 s->mech, limits_verdict_str(v));
		fail_answer(s, v);
		return;
	}
	struct rpc_client *rc = proxy_node_client(s->p, s->t.addr);
	if (!rc) {
		OPENSSL_cleanse(s->pass, sizeof(s->pass));
		reply(s, "-ERR [SYS/TEMP] mail store temporarily unavailable, try again later");
		conn_resume(s->c);
		return;
	}
	Mail__Rpc__AuthRequest req = MAIL__RPC__AUTH_REQUEST__INIT;
	req.user = s->login_user;
	req.password = s->pass;
	req.protocol = MAIL__RPC__PROTOCOL__PROTOCOL_POP3;
	char addr[64] = "";
	req.client_address = (char *)conn_peer_str(s->c, addr, sizeof(addr));
	s->pending = true;
	rpc_client_call(rc, RPC_METHOD_AUTH, &req.base, POP3_PROXY_AUTH_DEADLINE_MS, auth_reply, s);
	OPENSSL_cleanse(s->pass, sizeof(s->pass));
}

static void login(struct pop3_proxy *s, const char *user, struct view pass, const char *mech)
{
	s->mech = mech;
	if (pass.len == 0 || pass.len > POP3_SASL_PASS_MAX) {
		error(s, "[AUTH] invalid user name or password");
		return;
	}
	enum route_result rr = route_lookup(s->p->route, user, &s->t);
	if (rr == ROUTE_BAD_ADDRESS) {
		char u[POP3_SASL_ID_MAX + 1];
		size_t n = 0;
		for (; user[n] && n < sizeof(u) - 1; n++)
			u[n] = (char)tolower((unsigned char)user[n]);
		u[n] = '\0';
		login_failed(s, u);
		return;
	}
	if (rr != ROUTE_OK) {
		LOG_WARN("pop3_proxy", s->sid, "no_route", "user=%s shard=%u", s->t.owner, s->t.shard);
		reply(s, "-ERR [SYS/TEMP] mail store temporarily unavailable, try again later");
		return;
	}
	snprintf(s->login_user, sizeof(s->login_user), "%s", user);
	memcpy(s->pass, pass.ptr, pass.len);
	s->pass[pass.len] = '\0';
	s->lim_wait = true;
	conn_pause(s->c);
	limits_auth_check(s->lim, s->t.owner, auth_checked, s);
}

static void auth_plain(struct pop3_proxy *s, struct view b64)
{
	uint8_t buf[POP3_SASL_ID_MAX * 2 + POP3_SASL_PASS_MAX + 8];
	struct pop3_sasl_plain pl;
	const char *why = NULL;
	if (pop3_sasl_plain_decode(b64, buf, sizeof(buf), &pl, &why) < 0) {
		OPENSSL_cleanse(buf, sizeof(buf));
		error(s, "[AUTH] invalid SASL PLAIN response");
		return;
	}
	if (pl.authzid.len && (pl.authzid.len != pl.authcid.len ||
			       memcmp(pl.authzid.ptr, pl.authcid.ptr, pl.authcid.len) != 0)) {
		OPENSSL_cleanse(buf, sizeof(buf));
		reply(s, "-ERR [AUTH] acting as another user is not allowed");
		return;
	}
	char user[POP3_SASL_ID_MAX + 1];
	memcpy(user, pl.authcid.ptr, pl.authcid.len);
	user[pl.authcid.len] = '\0';
	login(s, user, pl.passwd, "PLAIN");
	OPENSSL_cleanse(buf, sizeof(buf));
	OPENSSL_cleanse(user, sizeof(user));
}

/* ---- commands ------------------------------------------------------------------ */

static void capa(struct pop3_proxy *s)
{
	struct buf b;
	buf_init(&b, 1024);
	static const char head[] = "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\n"
				   "AUTH-RESP-CODE\r\nPIPELINING\r\nUTF8\r\n";
	buf_append(&b, head, sizeof(head) - 1);
	if (!tls_on(s) && s->p->tls)
		buf_append(&b, "STLS\r\n", 6);
	if (login_allowed(s))
		buf_append(&b, "USER\r\nSASL PLAIN\r\n", 18);
	static const char tail[] = "IMPLEMENTATION mailcluster\r\n.\r\n";
	buf_append(&b, tail, sizeof(tail) - 1);
	conn_write(s->c, b.data, b.len);
	buf_cleanup(&b);
}

static void dispatch(struct pop3_proxy *s, const struct pop3_command *cmd)
{
	switch (cmd->verb) {
	case POP3_CMD_CAPA:
		capa(s);
		break;
	case POP3_CMD_NOOP:
		reply(s, "+OK");
		break;
	case POP3_CMD_QUIT:
		reply(s, "+OK bye");
		conn_close(s->c);
		break;
	case POP3_CMD_UTF8:
		s->utf8 = true;
		reply(s, "+OK UTF8 enabled");
		break;
	case POP3_CMD_STLS:
		if (tls_on(s)) {
			error(s, "TLS already active");
		} else if (!s->p->tls) {
			error(s, "STLS not available");
		} else {
			reply(s, "+OK begin TLS negotiation");
			s->user[0] = '\0';
			s->tls_started = true;
			/* Never go on in plaintext after "begin TLS". */
			if (conn_starttls_server(s->c, s->p->tls) < 0)
				conn_close(s->c);
		}
		break;
	case POP3_CMD_USER:
		if (!login_allowed(s)) {
			error(s, "[AUTH] plaintext login is disabled, use STLS first");
			break;
		}
		if (cmd->args[0].len > POP3_SASL_ID_MAX) {
			error(s, "[AUTH] user name too long");
			break;
		}
		memcpy(s->user, cmd->args[0].ptr, cmd->args[0].len);
		s->user[cmd->args[0].len] = '\0';
		reply(s, "+OK");
		break;
	case POP3_CMD_PASS:
		if (!login_allowed(s)) {
			error(s, "[AUTH] plaintext login is disabled, use STLS first");
			break;
		}
		if (!s->user[0]) {
			error(s, "USER first");
			break;
		}
		login(s, s->user, cmd->args[0], "USER");
		break;
	case POP3_CMD_AUTH:
		if (cmd->nargs == 0) {
			/* RFC 5034: list the mechanisms */
			if (login_allowed(s))
				reply(s, "+OK\r\nPLAIN\r\n.");
			else
				reply(s, "+OK\r\n.");
			break;
		}
		if (!view_eq_nocase(cmd->args[0], "PLAIN")) {
			error(s, "[AUTH] unsupported mechanism");
			break;
		}
		if (!login_allowed(s)) {
			error(s, "[AUTH] authentication is disabled, use STLS first");
			break;
		}
		if (cmd->nargs == 2) {
			auth_plain(s, cmd->args[1]);
		} else {
			s->sasl_wait = true;
			reply(s, "+ ");
		}
		break;
	case POP3_CMD_UNKNOWN:
		error(s, "unknown command");
		break;
	default:
		error(s, "not allowed before login");
		break;
	}
}

static ssize_t on_data(struct conn *c, const uint8_t *data, size_t len)
{
	struct pop3_proxy *s = conn_user(c);
	size_t off = 0;
	while (off < len && s->c && !s->pending && !s->lim_wait && !conn_closing(c)) {
		if (s->skipping) {
			bool done = false;
			off += pop3_skip_line(data + off, len - off, &done);
			s->skipping = !done;
			continue;
		}
		struct pop3_command cmd;
		size_t used = 0;
		enum pop3_result r = s->sasl_wait
			? pop3_parse_raw_line(data + off, len - off, POP3_SASL_LINE_MAX, &cmd, &used)
			: pop3_parse_line(data + off, len - off, POP3_LINE_MAX, &cmd, &used);
		if (r == POP3_MORE)
			break;
		off += used;
		if (r == POP3_BAD) {
			s->sasl_wait = false;
			if (cmd.line_open)
				s->skipping = true;
			if (error(s, cmd.error ? cmd.error : "invalid command"))
				return (ssize_t)len;
			continue;
		}
		if (s->sasl_wait) {
			s->sasl_wait = false;
			if (cmd.args[0].len == 1 && cmd.args[0].ptr[0] == '*')
				error(s, "[AUTH] authentication cancelled");
			else
				auth_plain(s, cmd.args[0]);
			continue;
		}
		dispatch(s, &cmd);
		if (s->tls_started) {
			s->tls_started = false;
			return (ssize_t)len; /* the loop discards what followed STLS */
		}
	}
	return (ssize_t)off;
}

static void on_close(struct conn *c, enum conn_close_reason why)
{
	struct pop3_proxy *s = conn_user(c);
	LOG_DEBUG("pop3_proxy", s->sid, "close", "reason=%s", conn_close_reason_str(why));
	s->c = NULL;
	s->closed = true;
	limits_conn_close(&s->lim); /* cancels a pending check */
	s->lim_wait = false;
	if (s->relay) {
		relay_cancel(s->relay);
		s->relay = NULL;
		s->pending = false;
	}
	if (!s->pending)
		session_free(s);
}

static const struct conn_handler pop3_proxy_handler = {
	.name = "pop3_proxy",
	.on_data = on_data,
	.on_close = on_close,
};

static void conn_checked(void *arg, enum limits_verdict v)
{
	struct pop3_proxy *s = arg;
	s->lim_wait = false;
	if (v != LIMITS_OK) {
		reply(s, "-ERR [SYS/TEMP] too many connections, try again later");
		conn_close(s->c);
		return;
	}
	conn_write(s->c, "+OK mailcluster POP3 ready\r\n", 28);
	conn_resume(s->c);
}

void pop3_proxy_accept(struct conn *c, struct proxy *p, enum proxy_service svc)
{
	struct pop3_proxy *s = xcalloc(1, sizeof(*s));
	s->p = p;
	s->c = c;
	s->svc = svc;
	s->sid = proxy_session_id(p);
	conn_set_handler(c, &pop3_proxy_handler, s);
	conn_set_idle_timeout(c, POP3_PROXY_IDLE_MS);
	/* Counted first; the greeting waits for the verdict. */
	s->lim_wait = true;
	conn_pause(c);
	s->lim = limits_conn_open(p->limits, c, svc, s->sid, conn_checked, s);
}
