/* IMAP at the proxy: the not-authenticated state (RFC 9051 6.1-6.2:
 * CAPABILITY, NOOP, LOGOUT, ID, STARTTLS, LOGIN, AUTHENTICATE PLAIN with
 * SASL-IR), credentials checked by the user's node (AUTH RPC), then the
 * session is handed to that node (relay.c), which answers the login
 * command itself with its capabilities. Everything else before login is
 * BAD. Before TLS, LOGINDISABLED is advertised and logins refused unless
 * auth.plaintext is set. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/mem.h>

#include "common/log.h"
#include "proto/imap_parse.h"
#include "proto/pop3_parse.h"
#include "proto/rpc.h"
#include "proxy/limits.h"
#include "proxy/proxy_internal.h"

#define IMAP_PROXY_IDLE_MS 60000        /* before login */
#define IMAP_PROXY_AUTH_DEADLINE_MS 15000

struct imap_proxy {
	struct proxy *p;
	struct conn *c; /* NULL once closed or handed over */
	enum proxy_service svc;
	uint64_t sid;
	struct imap_parser *parser;
	char tag[72];
	unsigned errors, auth_failures;
	bool sasl_wait;   /* "+ " sent for AUTHENTICATE PLAIN */
	bool pending;     /* an AUTH call or the relay is in flight */
	bool lim_wait;    /* a limits check is pending (limits_conn_close cancels it) */
	bool closed;      /* on_close ran */
	bool tls_started; /* STARTTLS: the rest of this input is discarded */
	struct relay *relay;
	struct limits_conn *lim; /* passed to the relay with the connection */
	struct route_target t;
	char user[300]; /* as the client gave it */
	char pass[POP3_SASL_PASS_MAX + 1];
	size_t pass_len;
	const char *mech;
};

static const struct conn_handler imap_proxy_handler;

static bool tls_on(const struct imap_proxy *s)
{
	return proxy_service_implicit_tls(s->svc) || (s->c && conn_tls_active(s->c));
}

static void put(struct buf *b, const char *str)
{
	buf_append(b, str, strlen(str));
}

static bool login_allowed(const struct imap_proxy *s)
{
	return tls_on(s) || s->p->auth_plaintext;
}

static void put_caps(const struct imap_proxy *s, struct buf *b)
{
	put(b, "IMAP4rev2 IMAP4rev1 SASL-IR ID ENABLE IDLE LITERAL-");
	if (!tls_on(s) && s->p->tls)
		put(b, " STARTTLS");
	if (login_allowed(s))
		put(b, " AUTH=PLAIN");
	else
		put(b, " LOGINDISABLED");
}

static void reply(struct imap_proxy *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply(struct imap_proxy *s, const char *fmt, ...)
{
	if (!s->c)
		return;
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n > 0)
		conn_write(s->c, line, MIN((size_t)n, sizeof(line) - 1));
}

static void wipe(struct imap_proxy *s)
{
	OPENSSL_cleanse(s->pass, sizeof(s->pass));
	s->pass_len = 0;
}

static void session_free(struct imap_proxy *s)
{
	limits_conn_close(&s->lim);
	wipe(s);
	imap_parser_free(&s->parser);
	free(s);
}

/* A protocol error: counted; at the limit, BYE and close. */
static void bad(struct imap_proxy *s, const char *tag, const char *text)
{
	reply(s, "%s BAD %s\r\n", tag, text);
	if (++s->errors >= limits_bad_commands(s->p->limits) && s->c) {
		LOG_INFO("imap_proxy", s->sid, "too_many_errors", "count=%u", s->errors);
		reply(s, "* BYE too many errors\r\n");
		conn_close(s->c);
	}
}

/* ---- login ------------------------------------------------------------------ */

static void relay_done(void *arg, bool ok, const char *why)
{
	struct imap_proxy *s = arg;
	struct relay *r = s->relay;
	s->relay = NULL;
	s->pending = false;
	if (ok) {
		/* The relay owns the connection from here on, and the
		 * connection's registrations end with it. */
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
	LOG_WARN("imap_proxy", s->sid, "handoff_failed", "user=%s node=%s why=%s", s->t.owner,
		 s->t.addr, why);
	reply(s, "%s NO [UNAVAILABLE] Mail store temporarily unavailable, try again later\r\n",
	      s->tag);
	conn_resume(s->c);
}

static void start_relay(struct imap_proxy *s)
{
	char addr[64] = "";
	struct relay_client_info info;
	proxy_client_info(s->c, s->sid, &info, addr, sizeof(addr));
	s->relay = relay_start(s->p, s->c, &s->t, RELAY_IMAP, s->tag, false, &info, relay_done, s);
}

/* The answer to a failed login, once its delay has passed. */
static void fail_answer(void *arg, enum limits_verdict v)
{
	struct imap_proxy *s = arg;
	UNUSED(v);
	s->lim_wait = false;
	reply(s, "%s NO [AUTHENTICATIONFAILED] Authentication failed\r\n", s->tag);
	if (++s->auth_failures >= limits_auth_fail_conn(s->p->limits)) {
		reply(s, "* BYE too many authentication failures\r\n");
		conn_close(s->c);
		return;
	}
	conn_resume(s->c);
}

/* Count a failed login (address and user); answer after its delay. */
static void login_failed(struct imap_proxy *s, const char *user)
{
	s->lim_wait = true;
	conn_pause(s->c);
	limits_auth_failed(s->lim, user, fail_answer, s);
}

static void session_checked(void *arg, enum limits_verdict v)
{
	struct imap_proxy *s = arg;
	s->lim_wait = false;
	if (v != LIMITS_OK) {
		reply(s, "%s NO [LIMIT] Too many sessions for this user, log out elsewhere first\r\n",
		      s->tag);
		conn_resume(s->c);
		return;
	}
	s->pending = true;
	start_relay(s);
}

static void auth_reply(void *arg, enum rpc_status st, const ProtobufCMessage *msg,
		       const Mail__Rpc__ErrorReply *err)
{
	struct imap_proxy *s = arg;
	s->pending = false;
	if (s->closed) {
		session_free(s);
		return;
	}
	const Mail__Rpc__AuthReply *rep = (const Mail__Rpc__AuthReply *)msg;
	if (st != RPC_OK || !rep) {
		LOG_WARN("imap_proxy", s->sid, "auth_unavailable", "node=%s status=%s%s%s", s->t.addr,
			 rpc_status_str(st), err ? " error=" : "", err ? err->message : "");
		reply(s, "%s NO [UNAVAILABLE] Authentication temporarily unavailable\r\n", s->tag);
		conn_resume(s->c);
		return;
	}
	if (!rep->ok) {
		LOG_INFO("imap_proxy", s->sid, "login_failed", "user=%s mech=%s", s->t.owner, s->mech);
		login_failed(s, s->t.owner);
		return;
	}
	LOG_INFO("imap_proxy", s->sid, "login", "user=%s mech=%s node=%s", s->t.owner, s->mech,
		 s->t.addr);
	limits_auth_ok(s->lim, s->t.owner);
	s->lim_wait = true;
	limits_session_open(s->lim, s->t.owner, s->t.addr, session_checked, s);
}

/* Not banned: ask the node. */
static void auth_checked(void *arg, enum limits_verdict v)
{
	struct imap_proxy *s = arg;
	s->lim_wait = false;
	if (v != LIMITS_OK) {
		/* Answered like a wrong password; the node is not asked. */
		wipe(s);
		LOG_INFO("imap_proxy", s->sid, "login_failed", "user=%s mech=%s reason=%s", s->t.owner,
			 s->mech, limits_verdict_str(v));
		fail_answer(s, v);
		return;
	}
	struct rpc_client *rc = proxy_node_client(s->p, s->t.addr);
	if (!rc) {
		wipe(s);
		reply(s, "%s NO [UNAVAILABLE] Mail store temporarily unavailable\r\n", s->tag);
		conn_resume(s->c);
		return;
	}
	Mail__Rpc__AuthRequest req = MAIL__RPC__AUTH_REQUEST__INIT;
	req.user = s->user;
	req.password = s->pass;
	req.protocol = MAIL__RPC__PROTOCOL__PROTOCOL_IMAP;
	char addr[64] = "";
	req.client_address = (char *)conn_peer_str(s->c, addr, sizeof(addr));
	s->pending = true;
	rpc_client_call(rc, RPC_METHOD_AUTH, &req.base, IMAP_PROXY_AUTH_DEADLINE_MS, auth_reply, s);
	wipe(s); /* the request is encoded and queued */
}

/* user/pass are the client's; copied. The command's tag is in s->tag. */
static void login(struct imap_proxy *s, struct view user, struct view pass, const char *mech)
{
	s->mech = mech;
	char u[300];
	if (user.len >= sizeof(u) || pass.len > POP3_SASL_PASS_MAX || pass.len == 0) {
		reply(s, "%s NO [AUTHENTICATIONFAILED] Authentication failed\r\n", s->tag);
		return;
	}
	memcpy(u, user.ptr, user.len);
	u[user.len] = '\0';
	enum route_result rr = route_lookup(s->p->route, u, &s->t);
	if (rr == ROUTE_BAD_ADDRESS) {
		for (char *q = u; *q; q++)
			*q = (char)tolower((unsigned char)*q);
		login_failed(s, u);
		return;
	}
	if (rr == ROUTE_UNAVAILABLE) {
		LOG_WARN("imap_proxy", s->sid, "no_route", "user=%s shard=%u", s->t.owner, s->t.shard);
		reply(s, "%s NO [UNAVAILABLE] Mail store temporarily unavailable, try again later\r\n",
		      s->tag);
		return;
	}
	memcpy(s->user, u, user.len + 1);
	memcpy(s->pass, pass.ptr, pass.len);
	s->pass[pass.len] = '\0';
	s->pass_len = pass.len;
	s->lim_wait = true;
	conn_pause(s->c);
	limits_auth_check(s->lim, s->t.owner, auth_checked, s);
}

static void auth_plain(struct imap_proxy *s, struct view b64)
{
	uint8_t buf[POP3_SASL_ID_MAX * 2 + POP3_SASL_PASS_MAX + 8];
	struct pop3_sasl_plain pl;
	const char *why = NULL;
	if (pop3_sasl_plain_decode(b64, buf, sizeof(buf), &pl, &why) < 0) {
		OPENSSL_cleanse(buf, sizeof(buf));
		bad(s, s->tag, "Invalid SASL PLAIN response");
		return;
	}
	if (pl.authzid.len && (pl.authzid.len != pl.authcid.len ||
			       memcmp(pl.authzid.ptr, pl.authcid.ptr, pl.authcid.len) != 0)) {
		OPENSSL_cleanse(buf, sizeof(buf));
		reply(s, "%s NO [AUTHORIZATIONFAILED] Acting as another user is not allowed\r\n",
		      s->tag);
		return;
	}
	login(s, pl.authcid, pl.passwd, "PLAIN");
	OPENSSL_cleanse(buf, sizeof(buf));
}

/* The client's answer to "+ " (one line). */
static ssize_t sasl_line(struct imap_proxy *s, const uint8_t *data, size_t len)
{
	struct pop3_command cmd;
	size_t used = 0;
	enum pop3_result r = pop3_parse_raw_line(data, len, POP3_SASL_LINE_MAX, &cmd, &used);
	if (r == POP3_MORE)
		return 0;
	s->sasl_wait = false;
	if (r == POP3_BAD) {
		if (cmd.line_open) {
			reply(s, "* BYE SASL response too long\r\n");
			conn_close(s->c);
			return (ssize_t)len;
		}
		bad(s, s->tag, "Invalid SASL response");
		return (ssize_t)used;
	}
	if (cmd.args[0].len == 1 && cmd.args[0].ptr[0] == '*')
		bad(s, s->tag, "AUTHENTICATE cancelled");
	else
		auth_plain(s, cmd.args[0]);
	return (ssize_t)used;
}

/* ---- commands ------------------------------------------------------------------ */

static void set_tag(struct imap_proxy *s, struct view tag)
{
	size_t n = MIN(tag.len, sizeof(s->tag) - 1);
	memcpy(s->tag, tag.ptr, n);
	s->tag[n] = '\0';
}

static void dispatch(struct imap_proxy *s, const struct imap_command *cmd)
{
	set_tag(s, cmd->tag);
	switch (cmd->cmd) {
	case IMAP_CMD_CAPABILITY: {
		struct buf b;
		buf_init(&b, 1024);
		put(&b, "* CAPABILITY ");
		put_caps(s, &b);
		put(&b, "\r\n");
		conn_write(s->c, b.data, b.len);
		buf_cleanup(&b);
		reply(s, "%s OK CAPABILITY completed\r\n", s->tag);
		break;
	}
	case IMAP_CMD_NOOP:
		reply(s, "%s OK NOOP completed\r\n", s->tag);
		break;
	case IMAP_CMD_ID:
		reply(s, "* ID (\"name\" \"mailcluster\" \"vendor\" \"mailcluster\")\r\n"
			 "%s OK ID completed\r\n", s->tag);
		break;
	case IMAP_CMD_LOGOUT:
		reply(s, "* BYE logging out\r\n%s OK LOGOUT completed\r\n", s->tag);
		conn_close(s->c);
		break;
	case IMAP_CMD_STARTTLS:
		if (tls_on(s)) {
			bad(s, s->tag, "TLS is already active");
		} else if (!s->p->tls) {
			reply(s, "%s NO STARTTLS is not available\r\n", s->tag);
		} else {
			reply(s, "%s OK Begin TLS negotiation now\r\n", s->tag);
			/* Anything pipelined after STARTTLS is discarded by
			 * the loop: it must not be read as post-TLS input. */
			imap_parser_reset(s->parser);
			s->tls_started = true;
			/* Never go on in plaintext after "Begin TLS". */
			if (conn_starttls_server(s->c, s->p->tls) < 0)
				conn_close(s->c);
		}
		break;
	case IMAP_CMD_LOGIN:
		if (!login_allowed(s)) {
			reply(s, "%s NO [PRIVACYREQUIRED] LOGIN is disabled before STARTTLS\r\n",
			      s->tag);
			break;
		}
		login(s, cmd->u.login.user, cmd->u.login.pass, "LOGIN");
		break;
	case IMAP_CMD_AUTHENTICATE:
		if (!view_eq_nocase(cmd->u.authenticate.mechanism, "PLAIN")) {
			reply(s, "%s NO [CANNOT] Unsupported authentication mechanism\r\n", s->tag);
			break;
		}
		if (!login_allowed(s)) {
			reply(s, "%s NO [PRIVACYREQUIRED] Authentication is disabled before STARTTLS\r\n",
			      s->tag);
			break;
		}
		if (cmd->u.authenticate.has_ir) {
			auth_plain(s, cmd->u.authenticate.ir);
		} else {
			s->sasl_wait = true;
			reply(s, "+ \r\n");
		}
		break;
	case IMAP_CMD_UNKNOWN:
		bad(s, s->tag, "Unknown command");
		break;
	default:
		bad(s, s->tag, "Log in first");
		break;
	}
}

static ssize_t on_data(struct conn *c, const uint8_t *data, size_t len)
{
	struct imap_proxy *s = conn_user(c);
	size_t off = 0;
	while (off < len && s->c && !s->pending && !s->lim_wait && !conn_closing(c)) {
		if (s->sasl_wait) {
			ssize_t n = sasl_line(s, data + off, len - off);
			if (n <= 0)
				break;
			off += (size_t)n;
			continue;
		}
		size_t used = 0;
		enum imap_result r = imap_parser_feed(s->parser, data + off, len - off, &used);
		off += used;
		if (r == IMAP_MORE)
			break;
		if (r == IMAP_OK) {
			dispatch(s, imap_parser_command(s->parser));
			if (s->tls_started) {
				s->tls_started = false;
				return (ssize_t)len;
			}
			if (s->c && s->parser)
				imap_parser_release(s->parser);
			if (s->c && conn_closing(c))
				break;
			continue;
		}
		if (r == IMAP_LITERAL_WAIT) {
			struct imap_literal_info li = imap_parser_literal(s->parser);
			struct view tag = imap_parser_tag(s->parser);
			if (li.accepted) {
				reply(s, "+ OK\r\n");
			} else {
				set_tag(s, tag);
				bad(s, s->tag, imap_parser_error(s->parser));
			}
			continue;
		}
		if (r == IMAP_BAD) {
			set_tag(s, imap_parser_tag(s->parser));
			bad(s, s->tag, imap_parser_error(s->parser));
			continue;
		}
		/* IMAP_FATAL */
		reply(s, "* BYE %s\r\n", imap_parser_error(s->parser));
		conn_close(c);
		return (ssize_t)len;
	}
	return (ssize_t)off;
}

static void on_close(struct conn *c, enum conn_close_reason why)
{
	struct imap_proxy *s = conn_user(c);
	LOG_DEBUG("imap_proxy", s->sid, "close", "reason=%s errors=%u", conn_close_reason_str(why),
		  s->errors);
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

static const struct conn_handler imap_proxy_handler = {
	.name = "imap_proxy",
	.on_data = on_data,
	.on_close = on_close,
};

static void conn_checked(void *arg, enum limits_verdict v)
{
	struct imap_proxy *s = arg;
	s->lim_wait = false;
	if (v != LIMITS_OK) {
		reply(s, "* BYE [UNAVAILABLE] too many connections\r\n");
		conn_close(s->c);
		return;
	}
	struct buf b;
	buf_init(&b, 1024);
	put(&b, "* OK [CAPABILITY ");
	put_caps(s, &b);
	put(&b, "] mailcluster ready\r\n");
	conn_write(s->c, b.data, b.len);
	buf_cleanup(&b);
	conn_resume(s->c);
}

void imap_proxy_accept(struct conn *c, struct proxy *p, enum proxy_service svc)
{
	struct imap_proxy *s = xcalloc(1, sizeof(*s));
	s->p = p;
	s->c = c;
	s->svc = svc;
	s->sid = proxy_session_id(p);
	struct imap_limits lim = imap_limits_preauth();
	s->parser = imap_parser_new(&lim);
	conn_set_handler(c, &imap_proxy_handler, s);
	conn_set_idle_timeout(c, IMAP_PROXY_IDLE_MS);
	char peer[64];
	LOG_DEBUG("imap_proxy", s->sid, "accept", "service=%s peer=%s", proxy_service_str(svc),
		  conn_peer_str(c, peer, sizeof(peer)));
	/* Counted first; the greeting waits for the verdict. */
	s->lim_wait = true;
	conn_pause(c);
	s->lim = limits_conn_open(p->limits, c, svc, s->sid, conn_checked, s);
}
