/* Session relay: one connection to the node per client session, opened
 * with an OPEN_SESSION frame, then a byte splice with backpressure both
 * ways (a side's output above RELAY_HIGH stops reading the other side until
 * it drains). See proxy_internal.h for the contract. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/config.h"
#include "common/log.h"
#include "proto/frame.h"
#include "proto/rpc.pb-c.h"
#include "proxy/proxy_internal.h"

#define RELAY_HIGH (128 * 1024)

enum relay_state {
	R_CONNECTING,
	R_WAIT_REPLY, /* OPEN_SESSION sent */
	R_OPEN,       /* splicing */
	R_CLOSED,
};

struct relay {
	struct proxy *p;
	struct conn *client; /* NULL once gone (or cancelled) */
	struct conn *node;   /* NULL once gone */
	enum relay_state state;
	enum relay_proto proto;
	void (*done)(void *arg, bool ok, const char *why);
	void *arg;
	uint64_t sid;
	bool node_paused, client_paused;
	bool saw_bye;     /* IMAP: the node said BYE (it ends the session) */
	bool client_quit; /* POP3: the client sent QUIT */
	bool compressed;  /* IMAP: the client asked for COMPRESS: no plaintext
			   * of ours may enter the stream any more */
	bool pop3_first;  /* POP3: the node's first line was seen */
	bool pop3_logged_in; /* POP3: ... and it was +OK (the login) */
	bool failed_early; /* done(false) is pending */
	char why[160];
	struct timer later; /* runs done() off the caller's stack */
	uint64_t up, down;  /* bytes client->node, node->client */
	unsigned hold;      /* inside a call that may close the other side */
	char user[256];
	void (*on_end)(void *arg); /* relay_set_close_cb */
	void *end_arg;
};

static const struct conn_handler relay_node_handler;
static const struct conn_handler relay_client_handler;

static void end_hook(struct relay *r)
{
	void (*cb)(void *) = r->on_end;
	r->on_end = NULL;
	if (cb)
		cb(r->end_arg);
}

static void relay_maybe_free(struct relay *r)
{
	if (r->hold || r->client || r->node || timer_armed(&r->later))
		return;
	end_hook(r);
	free(r);
}

void relay_set_close_cb(struct relay *r, void (*cb)(void *arg), void *arg)
{
	r->on_end = cb;
	r->end_arg = arg;
}

static void later_cb(struct timer *t)
{
	struct relay *r = t->arg;
	if (r->failed_early) {
		r->failed_early = false;
		void (*done)(void *, bool, const char *) = r->done;
		r->done = NULL;
		r->client = NULL; /* still the session's */
		if (done)
			done(r->arg, false, r->why);
	}
	relay_maybe_free(r);
}

/* Before the handoff: give up, the session answers the client. */
static void fail_early(struct relay *r, const char *why)
{
	if (r->state == R_CLOSED || r->state == R_OPEN)
		return;
	r->state = R_CLOSED;
	snprintf(r->why, sizeof(r->why), "%s", why);
	LOG_INFO("relay", r->sid, "open_failed", "user=%s why=%s", r->user, why);
	if (r->node) {
		struct conn *n = r->node;
		r->node = NULL;
		conn_set_handler(n, &relay_node_handler, NULL);
		conn_abort(n, CONN_CLOSE_LOCAL);
	}
	r->failed_early = true;
	timer_start(r->p->loop, &r->later, 0);
}

void relay_cancel(struct relay *r)
{
	r->done = NULL;
	r->client = NULL;
	if (r->state != R_OPEN)
		fail_early(r, "client went away");
	relay_maybe_free(r);
}

/* ---- node side ------------------------------------------------------------ */

static void send_open(struct relay *r, const struct route_target *t, const char *imap_tag,
		      bool utf8, const struct relay_client_info *info)
{
	Mail__Rpc__OpenSession os = MAIL__RPC__OPEN_SESSION__INIT;
	os.protocol = r->proto == RELAY_IMAP ? MAIL__RPC__PROTOCOL__PROTOCOL_IMAP
					     : MAIL__RPC__PROTOCOL__PROTOCOL_POP3;
	os.user = (char *)t->owner;
	os.shard = t->shard;
	os.epoch = t->epoch;
	os.client_address = (char *)(info->client_addr ? info->client_addr : "");
	os.client_port = info->client_port;
	os.tls = info->tls;
	os.tls_version = (char *)(info->tls_version ? info->tls_version : "");
	os.tls_cipher = (char *)(info->tls_cipher ? info->tls_cipher : "");
	os.tls_sni = (char *)(info->tls_sni ? info->tls_sni : "");
	char sid[32];
	snprintf(sid, sizeof(sid), "%llu", (unsigned long long)info->session_id);
	os.proxy_session_id = sid;
	os.imap_tag = (char *)(imap_tag ? imap_tag : "");
	os.utf8 = utf8;
	struct buf b;
	buf_init(&b, 1u << 20);
	uint32_t deadline = (uint32_t)config_get_duration_ms(r->p->cfg, "session.connect_timeout");
	if (frame_encode_request(&b, RPC_METHOD_OPEN_SESSION, 1, deadline, &os.base) == 0)
		conn_write(r->node, b.data, b.len);
	buf_cleanup(&b);
}

/* Bytes to one side; backpressure on the other. */
static void forward(struct relay *r, struct conn *to, struct conn *from, bool *from_paused,
		    const uint8_t *data, size_t len)
{
	if (conn_write(to, data, len) < 0)
		return; /* `to` is closing (overflow): its on_close ends us */
	if (!*from_paused && conn_out_pending(to) > RELAY_HIGH) {
		*from_paused = true;
		conn_pause(from);
	}
	UNUSED(r);
}

/* POP3: the node's first line answers the login (+OK maildrop / -ERR). */
static void note_first(struct relay *r, const uint8_t *data, size_t len)
{
	if (r->proto != RELAY_POP3 || r->pop3_first || len == 0)
		return;
	r->pop3_first = true;
	r->pop3_logged_in = data[0] == '+';
}

static void note_bye(struct relay *r, const uint8_t *data, size_t len)
{
	note_first(r, data, len);
	if (r->proto != RELAY_IMAP || r->saw_bye || len < 6)
		return;
	if (memcmp(data, "* BYE ", 6) == 0 || memmem(data, len, "\n* BYE ", 7))
		r->saw_bye = true;
}

/* IMAP: once the client has sent COMPRESS (RFC 4978) the node's stream may
 * be deflated, so the proxy never writes its own BYE into it again (it
 * just closes). A false positive (the words inside a message) only costs
 * that BYE. */
static void note_compress(struct relay *r, const uint8_t *data, size_t len)
{
	static const char word[] = " COMPRESS ";
	const size_t wl = sizeof(word) - 1;
	if (r->proto != RELAY_IMAP || r->compressed || len < wl)
		return;
	for (size_t i = 0; i + wl <= len; i++)
		if ((data[i + 1] | 0x20) == 'c' && strncasecmp((const char *)data + i, word, wl) == 0) {
			r->compressed = true;
			return;
		}
}

static void note_quit(struct relay *r, const uint8_t *data, size_t len)
{
	if (r->proto != RELAY_POP3 || r->client_quit || len < 4)
		return;
	for (size_t i = 0; i + 4 <= len; i++)
		if ((i == 0 || data[i - 1] == '\n') && strncasecmp((const char *)data + i, "QUIT", 4) == 0)
			r->client_quit = true;
}

static void handoff_complete(struct relay *r)
{
	r->state = R_OPEN;
	if (r->node)
		conn_set_idle_timeout(r->node, 0);
	void (*done)(void *, bool, const char *) = r->done;
	r->done = NULL;
	/* The session lets go first, then the client is ours. */
	if (done)
		done(r->arg, true, NULL);
	if (!r->client)
		return;
	conn_set_handler(r->client, &relay_client_handler, r);
	/* The node's sessions have their own timeouts (IMAP autologout,
	 * IDLE); the proxy does not cut them short. */
	conn_set_idle_timeout(r->client, 0);
	conn_resume(r->client);
	LOG_INFO("relay", r->sid, "open", "user=%s", r->user);
}

static ssize_t node_on_data(struct conn *c, const uint8_t *data, size_t len)
{
	struct relay *r = conn_user(c);
	if (!r)
		return (ssize_t)len;
	if (r->state == R_WAIT_REPLY) {
		struct frame f;
		size_t used;
		enum frame_result fr = frame_decode(data, len, 64 * 1024, &f, &used);
		if (fr == FRAME_MORE)
			return 0;
		if (fr != FRAME_OK || f.req_id != 1 ||
		    (f.kind != RPC_RESPONSE && f.kind != RPC_ERROR)) {
			fail_early(r, "bad reply from node");
			return (ssize_t)len;
		}
		if (f.kind == RPC_ERROR) {
			char why[160] = "refused by node";
			Mail__Rpc__ErrorReply *e = (Mail__Rpc__ErrorReply *)frame_unpack(
				&mail__rpc__error_reply__descriptor, f.payload);
			if (e) {
				snprintf(why, sizeof(why), "node: %s", e->message);
				frame_unpacked_free(e);
			}
			fail_early(r, why);
			return (ssize_t)len;
		}
		/* Resuming the client may close it at once (it sent EOF
		 * meanwhile, or the loop drains), which may close the node
		 * side too: r stays until we are done here. */
		r->hold++;
		handoff_complete(r);
		size_t consumed = len;
		if (r->client && r->node && len > used) {
			note_bye(r, data + used, len - used);
			r->down += len - used;
			forward(r, r->client, r->node, &r->node_paused, data + used, len - used);
		}
		r->hold--;
		relay_maybe_free(r);
		return (ssize_t)consumed;
	}
	if (r->state != R_OPEN || !r->client)
		return (ssize_t)len;
	note_bye(r, data, len);
	r->down += len;
	forward(r, r->client, c, &r->node_paused, data, len);
	return (ssize_t)len;
}

static void node_on_connect(struct conn *c, int status)
{
	struct relay *r = conn_user(c);
	if (!r || status != 0)
		return; /* on_close follows */
	r->state = R_WAIT_REPLY;
}

static void node_on_drain(struct conn *c)
{
	struct relay *r = conn_user(c);
	if (r && r->client_paused && r->client) {
		r->client_paused = false;
		conn_resume(r->client);
	}
}

static void node_on_close(struct conn *c, enum conn_close_reason why)
{
	struct relay *r = conn_user(c);
	if (!r)
		return;
	r->node = NULL;
	if (r->state != R_OPEN) {
		fail_early(r, why == CONN_CLOSE_CONNECT ? "node unreachable"
			   : why == CONN_CLOSE_TIMEOUT ? "node timeout" : "node closed");
		relay_maybe_free(r);
		return;
	}
	r->state = R_CLOSED;
	LOG_INFO("relay", r->sid, "node_closed", "user=%s reason=%s up=%llu down=%llu", r->user,
		 conn_close_reason_str(why), (unsigned long long)r->up,
		 (unsigned long long)r->down);
	if (r->client) {
		r->hold++; /* a write or the close may run client_on_close now */
		/* The node ends sessions with BYE (IMAP), or after QUIT or a
		 * refused login (POP3, whose first line then was -ERR);
		 * anything else is the node going away: say so. */
		if (r->proto == RELAY_IMAP && !r->saw_bye && !r->compressed)
			conn_printf(r->client, "* BYE [UNAVAILABLE] mail store connection lost\r\n");
		else if (r->proto == RELAY_POP3 && !r->client_quit && r->pop3_logged_in && r->client)
			conn_printf(r->client, "-ERR [SYS/TEMP] mail store connection lost\r\n");
		if (r->client)
			conn_close(r->client);
		r->hold--;
	}
	relay_maybe_free(r);
}

static void node_on_shutdown(struct conn *c)
{
	UNUSED(c); /* the client side decides (see client_on_shutdown) */
}

static const struct conn_handler relay_node_handler = {
	.name = "relay",
	.on_data = node_on_data,
	.on_drain = node_on_drain,
	.on_connect = node_on_connect,
	.on_shutdown = node_on_shutdown,
	.on_close = node_on_close,
};

/* ---- client side (after the handoff) ----------------------------------------- */

static ssize_t client_on_data(struct conn *c, const uint8_t *data, size_t len)
{
	struct relay *r = conn_user(c);
	if (!r->node)
		return (ssize_t)len;
	note_quit(r, data, len);
	note_compress(r, data, len);
	r->up += len;
	forward(r, r->node, c, &r->client_paused, data, len);
	return (ssize_t)len;
}

static void client_on_drain(struct conn *c)
{
	struct relay *r = conn_user(c);
	if (r->node_paused && r->node) {
		r->node_paused = false;
		conn_resume(r->node);
	}
}

static void client_on_shutdown(struct conn *c)
{
	struct relay *r = conn_user(c);
	/* Proxy draining: tell the client to come back (to another proxy). */
	/* (POP3 has no unsolicited responses: the close says it.) */
	if (r->proto == RELAY_IMAP && !r->compressed)
		conn_printf(c, "* BYE [UNAVAILABLE] proxy restarting, please reconnect\r\n");
	conn_close(c);
}

static void client_on_close(struct conn *c, enum conn_close_reason why)
{
	struct relay *r = conn_user(c);
	r->client = NULL;
	LOG_INFO("relay", r->sid, "client_closed", "user=%s reason=%s up=%llu down=%llu",
		 r->user, conn_close_reason_str(why), (unsigned long long)r->up,
		 (unsigned long long)r->down);
	end_hook(r);
	if (r->node) {
		r->hold++;
		conn_close(r->node); /* flushes what the client sent last */
		r->hold--;
	}
	relay_maybe_free(r);
}

static const struct conn_handler relay_client_handler = {
	.name = "relay",
	.on_data = client_on_data,
	.on_drain = client_on_drain,
	.on_shutdown = client_on_shutdown,
	.on_close = client_on_close,
};

struct relay *relay_start(struct proxy *p, struct conn *client, const struct route_target *t,
			  enum relay_proto proto, const char *imap_tag, bool utf8,
			  const struct relay_client_info *info,
			  void (*done)(void *arg, bool ok, const char *why), void *arg)
{
	struct relay *r = xcalloc(1, sizeof(*r));
	r->p = p;
	r->client = client;
	r->proto = proto;
	r->done = done;
	r->arg = arg;
	r->sid = info->session_id;
	snprintf(r->user, sizeof(r->user), "%s", t->owner);
	timer_init(&r->later, later_cb, r);
	struct sockaddr_storage ss;
	socklen_t sl;
	const char *err = NULL;
	if (config_parse_addr(t->addr, &ss, &sl, &err) < 0) {
		fail_early(r, "bad node address");
		return r;
	}
	r->node = conn_connect(p->loop, (struct sockaddr *)&ss, sl, &relay_node_handler, r);
	if (!r->node) {
		fail_early(r, "connect failed");
		return r;
	}
	uint32_t ct = (uint32_t)config_get_duration_ms(p->cfg, "session.connect_timeout");
	struct conn_limits lim = {
		.in_max = 64 * 1024,
		.out_high = 256 * 1024,
		.out_max = 4u << 20,
		.idle_ms = ct, /* until the node answers OPEN_SESSION */
		.write_ms = 60000,
		.handshake_ms = ct,
	};
	conn_set_limits(r->node, &lim);
	send_open(r, t, imap_tag, utf8, info);
	return r;
}
