/* RPC server and client on the loop. See rpc.h. */
#include "proto/rpc.h"

#include <errno.h>
#include <stdlib.h>

#include <openssl/mem.h>

#include "common/log.h"
#include "common/net.h"
#include "common/tls.h"

const char *rpc_status_str(enum rpc_status s)
{
	switch (s) {
	case RPC_OK: return "ok";
	case RPC_REMOTE_ERROR: return "remote_error";
	case RPC_TIMEOUT: return "timeout";
	case RPC_UNAVAILABLE: return "unavailable";
	case RPC_BAD_REPLY: return "bad_reply";
	case RPC_CANCELLED: return "cancelled";
	}
	return "?";
}

/* ---- server ---------------------------------------------------------- */

#define RPC_SERVER_MAX_CALLS 1024   /* calls in flight per connection */
#define RPC_MAX_GLITCHES 16         /* unexpected frames before closing */

struct rpc_sconn;

struct rpc_server {
	struct loop *loop;
	struct listener *ls;
	struct rpc_server_config cfg;
	struct rpc_method_handler *handlers;
	struct rpc_sconn *sconns;
};

/* Per server-side connection. Calls in flight are linked so that a closing
 * connection can detach them (their later replies are then dropped). The
 * struct outlives its connection while a frame loop is running over it
 * (busy), so dispatch never touches freed memory. */
struct rpc_sconn {
	struct rpc_server *srv;
	struct conn *c;
	struct rpc_sconn *prev, *next;
	struct rpc_call *calls;
	unsigned ncalls;
	unsigned glitches;
	unsigned busy;
	unsigned frames; /* frames dispatched so far */
	bool dead, draining;
	struct buf scratch;
};

struct rpc_call {
	struct rpc_sconn *sc; /* NULL once the connection is gone */
	struct rpc_call *prev, *next;
	uint64_t req_id;
	uint64_t conn_id;
	uint16_t method;
	uint64_t deadline_at_ms; /* 0 = none */
	bool cancelled;
	const struct rpc_method_info *info;
	ProtobufCMessage *req;
};

static void call_free(struct rpc_call *call)
{
	struct rpc_sconn *sc = call->sc;
	if (sc) {
		if (call->prev)
			call->prev->next = call->next;
		else
			sc->calls = call->next;
		if (call->next)
			call->next->prev = call->prev;
		sc->ncalls--;
		if (sc->draining && !sc->calls && !sc->dead)
			conn_close(sc->c);
	}
	frame_unpacked_free(call->req);
	free(call);
}

/* Write the encoded frame in sc->scratch. The write may close the
 * connection and free sc: nothing touches sc after it. */
static void sconn_send(struct rpc_sconn *sc)
{
	struct buf *b = &sc->scratch;
	size_t n = b->len;
	b->len = 0;
	conn_write(sc->c, b->data, n);
}

static void sconn_error(struct rpc_sconn *sc, uint64_t req_id, uint32_t code,
			const char *message)
{
	Mail__Rpc__ErrorReply e = MAIL__RPC__ERROR_REPLY__INIT;
	e.code = code;
	e.message = (char *)message;
	if (sc->scratch.cap > 65536 && sc->scratch.len == 0)
		buf_cleanup(&sc->scratch);
	if (frame_encode(&sc->scratch, RPC_ERROR, req_id, &e.base) == 0)
		sconn_send(sc);
}

static bool call_expired(const struct rpc_call *call)
{
	return call->deadline_at_ms && time_mono_ms() > call->deadline_at_ms;
}

void rpc_call_reply(struct rpc_call *call, const ProtobufCMessage *msg)
{
	struct rpc_sconn *sc = call->sc;
	if (sc && !sc->dead && !call->cancelled && !call_expired(call)) {
		if (sc->scratch.cap > 65536 && sc->scratch.len == 0)
			buf_cleanup(&sc->scratch);
		if (frame_encode(&sc->scratch, RPC_RESPONSE, call->req_id, msg) == 0)
			sconn_send(sc);
		else
			sconn_error(sc, call->req_id, MAIL__RPC__ERROR_CODE__ERROR_TOO_LARGE,
				    "reply too large");
	}
	call_free(call);
}

void rpc_call_error(struct rpc_call *call, uint32_t code, const char *message)
{
	struct rpc_sconn *sc = call->sc;
	if (sc && !sc->dead && !call->cancelled && !call_expired(call))
		sconn_error(sc, call->req_id, code, message);
	call_free(call);
}

uint32_t rpc_call_remaining_ms(const struct rpc_call *call)
{
	if (!call->deadline_at_ms)
		return UINT32_MAX;
	uint64_t now = time_mono_ms();
	return now >= call->deadline_at_ms ? 0 : (uint32_t)(call->deadline_at_ms - now);
}

uint64_t rpc_call_conn_id(const struct rpc_call *call) { return call->conn_id; }
bool rpc_call_cancelled(const struct rpc_call *call) { return call->cancelled; }

static const struct rpc_method_handler *find_handler(const struct rpc_server *s,
						     uint16_t method)
{
	for (size_t i = 0; i < s->cfg.n_handlers; i++)
		if (s->handlers[i].method == method)
			return &s->handlers[i];
	return NULL;
}

static void sconn_glitch(struct rpc_sconn *sc, const char *what)
{
	if (++sc->glitches == 1 || sc->glitches == RPC_MAX_GLITCHES)
		LOG_INFO("rpc", conn_id(sc->c), "glitch", "what=%s count=%u", what, sc->glitches);
	if (sc->glitches >= RPC_MAX_GLITCHES) {
		sconn_error(sc, 0, MAIL__RPC__ERROR_CODE__ERROR_BAD_REQUEST, "too many errors");
		if (!sc->dead)
			conn_close(sc->c);
	}
}

static void sconn_unlink(struct rpc_sconn *sc)
{
	struct rpc_server *s = sc->srv;
	if (sc->prev)
		sc->prev->next = sc->next;
	else
		s->sconns = sc->next;
	if (sc->next)
		sc->next->prev = sc->prev;
	sc->prev = sc->next = NULL;
}

/* OPEN_SESSION: the connection becomes the session's. */
static void sconn_open_session(struct rpc_sconn *sc, const struct frame *f)
{
	struct rpc_server *s = sc->srv;
	struct conn *c = sc->c;
	if (sc->frames != 1 || sc->ncalls) {
		sconn_error(sc, f->req_id, MAIL__RPC__ERROR_CODE__ERROR_BAD_REQUEST,
			    "OPEN_SESSION must be the first frame of a connection");
		if (!sc->dead)
			conn_close(c);
		return;
	}
	Mail__Rpc__OpenSession *req = (Mail__Rpc__OpenSession *)frame_unpack(
		&mail__rpc__open_session__descriptor, f->payload);
	if (!req) {
		sconn_error(sc, f->req_id, MAIL__RPC__ERROR_CODE__ERROR_BAD_REQUEST,
			    "request did not decode");
		if (!sc->dead)
			conn_close(c);
		return;
	}
	const char *msg = "refused";
	uint32_t code = s->cfg.session_check(req, s->cfg.arg, &msg);
	if (code) {
		sconn_error(sc, f->req_id, code, msg);
		if (!sc->dead)
			conn_close(c);
		frame_unpacked_free(&req->base);
		return;
	}
	if (frame_encode_raw(&sc->scratch, RPC_RESPONSE, f->req_id, view_cstr("")) == 0)
		sconn_send(sc);
	if (!sc->dead) {
		/* From here on the connection is not ours: on_data stops at
		 * this frame and sc is freed when the frame loop lets go. */
		sconn_unlink(sc);
		sc->dead = true;
		s->cfg.session_start(c, req, s->cfg.arg);
	}
	frame_unpacked_free(&req->base);
}

static void sconn_dispatch(struct rpc_sconn *sc, const struct frame *f)
{
	struct rpc_server *s = sc->srv;
	sc->frames++;
	if (f->kind == RPC_REQUEST && f->method == RPC_METHOD_OPEN_SESSION &&
	    s->cfg.session_start) {
		sconn_open_session(sc, f);
		return;
	}
	if (f->kind == RPC_CANCEL) {
		for (struct rpc_call *call = sc->calls; call; call = call->next)
			if (call->req_id == f->req_id)
				call->cancelled = true;
		return;
	}
	if (f->kind != RPC_REQUEST) {
		/* A server side sees only requests and cancels. */
		sconn_glitch(sc, rpc_kind_str(f->kind));
		return;
	}
	const struct rpc_method_info *info = rpc_method_get(f->method);
	const struct rpc_method_handler *h = find_handler(s, f->method);
	if (!info || !h) {
		sconn_error(sc, f->req_id, MAIL__RPC__ERROR_CODE__ERROR_UNKNOWN_METHOD,
			    "unknown method");
		return;
	}
	if (sc->ncalls >= RPC_SERVER_MAX_CALLS) {
		sconn_error(sc, f->req_id, MAIL__RPC__ERROR_CODE__ERROR_UNAVAILABLE,
			    "too many calls in flight");
		return;
	}
	ProtobufCMessage *req = NULL;
	if (info->request) {
		req = frame_unpack(info->request, f->payload);
		if (!req) {
			sconn_error(sc, f->req_id, MAIL__RPC__ERROR_CODE__ERROR_BAD_REQUEST,
				    "request did not decode");
			if (!sc->dead)
				sconn_glitch(sc, "bad_request");
			return;
		}
	}
	struct rpc_call *call = xcalloc(1, sizeof(*call));
	call->sc = sc;
	call->req_id = f->req_id;
	call->conn_id = conn_id(sc->c);
	call->method = f->method;
	call->info = info;
	call->req = req;
	if (f->deadline_ms)
		call->deadline_at_ms = time_mono_ms() + f->deadline_ms;
	call->next = sc->calls;
	if (sc->calls)
		sc->calls->prev = call;
	sc->calls = call;
	sc->ncalls++;
	h->fn(call, req, s->cfg.arg);
}

static void sconn_put(struct rpc_sconn *sc)
{
	if (--sc->busy == 0 && sc->dead) {
		buf_cleanup(&sc->scratch);
		free(sc);
	}
}

static ssize_t sconn_on_data(struct conn *c, const uint8_t *data, size_t len)
{
	struct rpc_sconn *sc = conn_user(c);
	size_t off = 0;
	size_t max = sc->srv->cfg.max_frame;
	sc->busy++;
	while (off < len && !sc->dead && !conn_closing(c)) {
		struct frame f;
		size_t used;
		enum frame_result r = frame_decode(data + off, len - off, max, &f, &used);
		if (r == FRAME_MORE)
			break;
		if (r == FRAME_BAD) {
			LOG_INFO("rpc", conn_id(c), "bad_frame", "offset=%zu", off);
			sconn_error(sc, 0, MAIL__RPC__ERROR_CODE__ERROR_BAD_REQUEST, "bad frame");
			if (!sc->dead)
				conn_close(c);
			off = len;
			break;
		}
		sconn_dispatch(sc, &f);
		off += used;
	}
	/* After a handoff (sc->dead) the rest is the session's: the loop
	 * gives it to the new handler. */
	sconn_put(sc);
	return (ssize_t)off;
}

static void sconn_on_shutdown(struct conn *c)
{
	struct rpc_sconn *sc = conn_user(c);
	if (!sc->calls)
		conn_close(c);
	else
		sc->draining = true; /* closed when the last call completes */
}

static void sconn_on_close(struct conn *c, enum conn_close_reason why)
{
	struct rpc_sconn *sc = conn_user(c);
	LOG_DEBUG("rpc", conn_id(c), "close", "reason=%s", conn_close_reason_str(why));
	while (sc->calls) {
		struct rpc_call *call = sc->calls;
		sc->calls = call->next;
		call->prev = call->next = NULL;
		call->sc = NULL;
	}
	sconn_unlink(sc);
	sc->dead = true;
	sc->busy++;
	sconn_put(sc);
}

static const struct conn_handler rpc_server_handler = {
	.name = "rpc",
	.on_data = sconn_on_data,
	.on_shutdown = sconn_on_shutdown,
	.on_close = sconn_on_close,
};

static void rpc_server_accept(struct conn *c, void *arg)
{
	struct rpc_server *s = arg;
	struct rpc_sconn *sc = xcalloc(1, sizeof(*sc));
	sc->srv = s;
	sc->c = c;
	buf_init(&sc->scratch, 0);
	sc->next = s->sconns;
	if (s->sconns)
		s->sconns->prev = sc;
	s->sconns = sc;
	/* A frame must fit in the input buffer before it is decoded. */
	struct conn_limits lim = {
		.in_max = s->cfg.max_frame + FRAME_HEADER_LEN,
		.out_high = 1u << 20,
		.out_max = 2 * s->cfg.max_frame + (1u << 20),
		.idle_ms = s->cfg.idle_ms,
		.write_ms = 60000,
		.handshake_ms = 10000,
	};
	conn_set_limits(c, &lim);
	conn_set_handler(c, &rpc_server_handler, sc);
}

struct rpc_server *rpc_server_new(struct loop *l, const struct rpc_server_config *cfg,
				  const char **error_r)
{
	struct rpc_server *s = xcalloc(1, sizeof(*s));
	s->loop = l;
	s->cfg = *cfg;
	if (!s->cfg.max_frame)
		s->cfg.max_frame = FRAME_MAX_DEFAULT;
	if (!s->cfg.idle_ms)
		s->cfg.idle_ms = 600000;
	s->handlers = xcalloc(cfg->n_handlers ? cfg->n_handlers : 1, sizeof(*s->handlers));
	memcpy(s->handlers, cfg->handlers, cfg->n_handlers * sizeof(*s->handlers));
	s->cfg.handlers = s->handlers;
	struct listener_config lc = {
		.addr = cfg->addr,
		.tls = cfg->tls,
		.on_accept = rpc_server_accept,
		.arg = s,
	};
	s->ls = listener_open(l, &lc, error_r);
	if (!s->ls) {
		free(s->handlers);
		free(s);
		return NULL;
	}
	return s;
}

uint16_t rpc_server_port(const struct rpc_server *s) { return listener_port(s->ls); }

void rpc_server_free(struct rpc_server **sp)
{
	struct rpc_server *s = *sp;
	if (!s)
		return;
	*sp = NULL;
	listener_close(&s->ls);
	/* Accepted connections point at s: close them first. */
	while (s->sconns)
		conn_abort(s->sconns->c, CONN_CLOSE_LOCAL);
	free(s->handlers);
	free(s);
}

/* ---- client ---------------------------------------------------------- */

#define PENDING_BUCKETS 256
#define RPC_CLIENT_MAX_PENDING 65536
#define RPC_CLIENT_OUT_HIGH (1u << 20) /* stop writing requests above this */
#define RPC_CLIENT_TIMEOUTS_TO_RECYCLE 3

struct pending {
	struct rpc_client *cl;
	uint64_t req_id;
	uint16_t method;
	struct timer deadline;
	rpc_reply_fn done;
	void *arg;
	struct pending *hnext;  /* hash chain, or complete_q link */
	struct pending *unext;  /* FIFO of calls not written yet */
	enum rpc_status fail_status;
	struct buf frame;       /* encoded request while not yet written */
	bool sent;
};

struct rpc_client {
	struct loop *loop;
	struct rpc_client_config cfg;
	char *addr;
	char *tls_name;
	struct sockaddr_storage sa;
	socklen_t sa_len;
	struct conn *c;
	bool connected;
	uint64_t next_id;
	size_t inflight;
	struct pending *buckets[PENDING_BUCKETS];
	struct pending *unsent_head, *unsent_tail;
	struct timer reconnect;
	uint32_t backoff_ms;
	unsigned timeouts_in_row;
	unsigned busy;          /* inside code that calls user callbacks */
	bool freeing, draining;
	struct pending *complete_q, *complete_tail; /* finished asynchronously */
	struct timer complete_t;
	size_t queued; /* bytes of encoded requests not written yet */
};

static void client_connect(struct rpc_client *cl);
static void client_destroy(struct rpc_client *cl);

/* Requests that carry a password are wiped before their memory goes. */
static bool method_sensitive(uint16_t m)
{
	return m == RPC_METHOD_AUTH || m == RPC_METHOD_USER_ADD || m == RPC_METHOD_USER_UPDATE;
}

static void pending_frame_free(struct pending *p)
{
	if (p->frame.len && method_sensitive(p->method))
		OPENSSL_cleanse(p->frame.data, p->frame.len);
	buf_cleanup(&p->frame);
}

static struct pending **pending_slot(struct rpc_client *cl, uint64_t id)
{
	struct pending **pp = &cl->buckets[id % PENDING_BUCKETS];
	while (*pp && (*pp)->req_id != id)
		pp = &(*pp)->hnext;
	return pp;
}

static void unsent_remove(struct rpc_client *cl, struct pending *p)
{
	struct pending **pp = &cl->unsent_head, *prev = NULL;
	while (*pp && *pp != p) {
		prev = *pp;
		pp = &(*pp)->unext;
	}
	if (!*pp)
		return;
	*pp = p->unext;
	if (cl->unsent_tail == p)
		cl->unsent_tail = prev;
	p->unext = NULL;
	cl->queued -= p->frame.len;
}

static struct pending *pending_take(struct rpc_client *cl, uint64_t id)
{
	struct pending **pp = pending_slot(cl, id);
	struct pending *p = *pp;
	if (p) {
		*pp = p->hnext;
		p->hnext = NULL;
		cl->inflight--;
		timer_stop(cl->loop, &p->deadline);
		if (!p->sent)
			unsent_remove(cl, p);
	}
	return p;
}

/* Callers hold cl->busy. */
static void pending_finish(struct pending *p, enum rpc_status st, const ProtobufCMessage *reply,
			   const Mail__Rpc__ErrorReply *err)
{
	p->done(p->arg, st, reply, err);
	pending_frame_free(p);
	free(p);
}

static void client_enter(struct rpc_client *cl)
{
	cl->busy++;
}

static void client_leave(struct rpc_client *cl)
{
	if (--cl->busy == 0) {
		if (cl->freeing)
			client_destroy(cl);
		else if (cl->draining && cl->inflight == 0 && cl->c)
			conn_close(cl->c);
	}
}

/* Finish p on the next loop turn (never inside the call that caused it). */
static void complete_later(struct rpc_client *cl, struct pending *p, enum rpc_status st)
{
	p->fail_status = st;
	p->hnext = NULL;
	if (cl->complete_tail)
		cl->complete_tail->hnext = p;
	else
		cl->complete_q = p;
	cl->complete_tail = p;
	timer_start(cl->loop, &cl->complete_t, 0);
}

static void fail_all_later(struct rpc_client *cl, enum rpc_status st)
{
	for (size_t i = 0; i < PENDING_BUCKETS; i++)
		while (cl->buckets[i])
			complete_later(cl, pending_take(cl, cl->buckets[i]->req_id), st);
}

static void pending_deadline_cb(struct timer *t)
{
	struct pending *p = t->arg;
	struct rpc_client *cl = p->cl;
	pending_take(cl, p->req_id);
	client_enter(cl);
	if (cl->connected && p->sent) {
		struct buf b;
		buf_init(&b, 0);
		if (frame_encode_raw(&b, RPC_CANCEL, p->req_id, view_make(NULL, 0)) == 0)
			conn_write(cl->c, b.data, b.len);
		buf_cleanup(&b);
		/* A peer that stopped answering (black hole, no RST) is
		 * recycled rather than trusted until TCP keepalive gives up. */
		if (++cl->timeouts_in_row >= RPC_CLIENT_TIMEOUTS_TO_RECYCLE && cl->c) {
			LOG_WARN("rpc", conn_id(cl->c), "peer_unresponsive", "addr=%s timeouts=%u",
				 cl->addr, cl->timeouts_in_row);
			cl->timeouts_in_row = 0;
			conn_abort(cl->c, CONN_CLOSE_TIMEOUT);
		}
	}
	pending_finish(p, RPC_TIMEOUT, NULL, NULL);
	client_leave(cl);
}

static void client_handle_frame(struct rpc_client *cl, const struct frame *f)
{
	struct pending *p = pending_take(cl, f->req_id);
	if (!p)
		return; /* late reply after a timeout, or a connection-level error */
	cl->timeouts_in_row = 0;
	if (f->kind == RPC_ERROR) {
		Mail__Rpc__ErrorReply *e = (Mail__Rpc__ErrorReply *)frame_unpack(
			&mail__rpc__error_reply__descriptor, f->payload);
		if (!e) {
			pending_finish(p, RPC_BAD_REPLY, NULL, NULL);
			return;
		}
		pending_finish(p, RPC_REMOTE_ERROR, NULL, e);
		frame_unpacked_free(e);
		return;
	}
	if (f->kind != RPC_RESPONSE) {
		pending_finish(p, RPC_BAD_REPLY, NULL, NULL);
		return;
	}
	const struct rpc_method_info *info = rpc_method_get(p->method);
	if (!info || !info->reply) {
		pending_finish(p, RPC_OK, NULL, NULL);
		return;
	}
	ProtobufCMessage *m = frame_unpack(info->reply, f->payload);
	if (!m) {
		pending_finish(p, RPC_BAD_REPLY, NULL, NULL);
		return;
	}
	pending_finish(p, RPC_OK, m, NULL);
	frame_unpacked_free(m);
}

static ssize_t client_on_data(struct conn *c, const uint8_t *data, size_t len)
{
	struct rpc_client *cl = conn_user(c);
	size_t off = 0;
	client_enter(cl);
	while (off < len && cl->c == c && !cl->freeing) {
		struct frame f;
		size_t used;
		enum frame_result r = frame_decode(data + off, len - off, cl->cfg.max_frame, &f,
						   &used);
		if (r == FRAME_MORE)
			break;
		if (r == FRAME_BAD) {
			LOG_WARN("rpc", conn_id(c), "bad_frame", "addr=%s", cl->addr);
			conn_abort(c, CONN_CLOSE_ERROR);
			break;
		}
		client_handle_frame(cl, &f);
		off += used;
	}
	client_leave(cl);
	return (ssize_t)off;
}

/* Write queued calls in the order they were made, while the connection's
 * output stays below its high mark (on_drain continues). */
static void client_send_pending(struct rpc_client *cl)
{
	while (cl->unsent_head && cl->c && cl->connected &&
	       conn_out_pending(cl->c) <= RPC_CLIENT_OUT_HIGH) {
		struct pending *p = cl->unsent_head;
		cl->unsent_head = p->unext;
		if (!cl->unsent_head)
			cl->unsent_tail = NULL;
		p->unext = NULL;
		p->sent = true;
		cl->queued -= p->frame.len;
		struct conn *c = cl->c;
		size_t n = p->frame.len;
		uint8_t *data = p->frame.data;
		p->frame.data = NULL;
		p->frame.len = p->frame.cap = 0;
		/* The write may close the connection (its pendings then finish
		 * on the next turn): the frame is freed either way. */
		conn_write(c, data, n);
		if (method_sensitive(p->method))
			OPENSSL_cleanse(data, n);
		free(data);
	}
}

static void client_on_drain(struct conn *c)
{
	struct rpc_client *cl = conn_user(c);
	if (cl->c == c)
		client_send_pending(cl);
}

static void client_ready(struct rpc_client *cl)
{
	cl->connected = true;
	cl->backoff_ms = 0;
	cl->timeouts_in_row = 0;
	LOG_DEBUG("rpc", conn_id(cl->c), "connected", "addr=%s", cl->addr);
	client_send_pending(cl);
}

static void client_on_connect(struct conn *c, int status)
{
	struct rpc_client *cl = conn_user(c);
	if (status < 0) {
		LOG_INFO("rpc", conn_id(c), "connect_failed", "addr=%s errno=%d", cl->addr, -status);
		return; /* on_close follows */
	}
	if (!conn_ssl(c))
		client_ready(cl);
}

static void client_on_tls_ready(struct conn *c)
{
	client_ready(conn_user(c));
}

static void client_on_shutdown(struct conn *c)
{
	struct rpc_client *cl = conn_user(c);
	if (cl->cfg.keep_on_drain)
		return; /* closed when the client is freed */
	if (cl->inflight == 0)
		conn_close(c);
	else
		cl->draining = true; /* closed when the last call finishes */
}

static void client_on_close(struct conn *c, enum conn_close_reason why)
{
	struct rpc_client *cl = conn_user(c);
	if (cl->c != c)
		return;
	LOG_DEBUG("rpc", conn_id(c), "disconnected", "addr=%s reason=%s", cl->addr,
		  conn_close_reason_str(why));
	cl->c = NULL;
	cl->connected = false;
	if (cl->freeing)
		return;
	/* Callers learn of it on the next turn, never inside this close. */
	fail_all_later(cl, RPC_UNAVAILABLE);
	cl->backoff_ms = cl->backoff_ms ? MIN(cl->backoff_ms * 2, 5000) : 100;
	if (!loop_stopping(cl->loop))
		timer_start(cl->loop, &cl->reconnect, cl->backoff_ms);
}

static const struct conn_handler rpc_client_handler = {
	.name = "rpcc",
	.on_data = client_on_data,
	.on_drain = client_on_drain,
	.on_connect = client_on_connect,
	.on_tls_ready = client_on_tls_ready,
	.on_shutdown = client_on_shutdown,
	.on_close = client_on_close,
};

static void client_connect(struct rpc_client *cl)
{
	if (cl->c || cl->freeing || timer_armed(&cl->reconnect))
		return;
	struct conn *c = conn_connect(cl->loop, (struct sockaddr *)&cl->sa, cl->sa_len,
				      &rpc_client_handler, cl);
	if (!c) {
		/* Out of sockets, or the loop is stopping. */
		fail_all_later(cl, RPC_UNAVAILABLE);
		if (!loop_stopping(cl->loop))
			timer_start(cl->loop, &cl->reconnect, 1000);
		return;
	}
	cl->c = c;
	struct conn_limits lim = {
		.in_max = cl->cfg.max_frame + FRAME_HEADER_LEN,
		.out_high = 1u << 20,
		.out_max = 2 * cl->cfg.max_frame + (1u << 20),
		.idle_ms = 0,
		.write_ms = 60000,
		.handshake_ms = cl->cfg.connect_timeout_ms,
	};
	conn_set_limits(c, &lim);
	if (cl->cfg.tls) {
		SSL *ssl = tls_client_new_ssl(cl->cfg.tls, cl->tls_name);
		if (!ssl || conn_starttls_client(c, ssl) < 0) {
			if (!ssl)
				LOG_WARN("rpc", conn_id(c), "tls_setup_failed", "addr=%s", cl->addr);
			if (cl->c == c)
				conn_abort(c, CONN_CLOSE_TLS);
		}
	}
}

static void reconnect_cb(struct timer *t)
{
	struct rpc_client *cl = t->arg;
	if (cl->inflight)
		client_connect(cl);
	/* else: connect lazily on the next call */
}

static void complete_cb(struct timer *t)
{
	struct rpc_client *cl = t->arg;
	client_enter(cl);
	while (cl->complete_q) {
		struct pending *p = cl->complete_q;
		cl->complete_q = p->hnext;
		if (!cl->complete_q)
			cl->complete_tail = NULL;
		pending_finish(p, p->fail_status, NULL, NULL);
	}
	client_leave(cl);
}

struct rpc_client *rpc_client_new(struct loop *l, const struct rpc_client_config *cfg,
				  const char **error_r)
{
	struct rpc_client *cl = xcalloc(1, sizeof(*cl));
	if (net_parse_addr(cfg->addr, &cl->sa, &cl->sa_len, error_r) < 0) {
		free(cl);
		return NULL;
	}
	cl->loop = l;
	cl->cfg = *cfg;
	cl->addr = xstrdup(cfg->addr);
	cl->cfg.addr = cl->addr;
	if (cfg->tls_name)
		cl->tls_name = xstrdup(cfg->tls_name);
	if (!cl->cfg.max_frame)
		cl->cfg.max_frame = FRAME_MAX_DEFAULT;
	if (!cl->cfg.connect_timeout_ms)
		cl->cfg.connect_timeout_ms = 3000;
	if (!cl->cfg.max_queued)
		cl->cfg.max_queued = 2 * cl->cfg.max_frame;
	cl->next_id = 1;
	timer_init(&cl->reconnect, reconnect_cb, cl);
	timer_init(&cl->complete_t, complete_cb, cl);
	return cl;
}

uint64_t rpc_client_call(struct rpc_client *cl, uint16_t method, const ProtobufCMessage *req,
			 uint32_t deadline_ms, rpc_reply_fn done, void *arg)
{
	struct pending *p = xcalloc(1, sizeof(*p));
	p->cl = cl;
	p->req_id = cl->next_id++;
	p->method = method;
	p->done = done;
	p->arg = arg;
	timer_init(&p->deadline, pending_deadline_cb, p);
	buf_init(&p->frame, 0);
	uint64_t id = p->req_id;
	if (!deadline_ms)
		deadline_ms = 10000;
	if (cl->freeing || cl->inflight >= RPC_CLIENT_MAX_PENDING) {
		complete_later(cl, p, cl->freeing ? RPC_CANCELLED : RPC_UNAVAILABLE);
		return id;
	}
	if (frame_encode_request(&p->frame, method, p->req_id, deadline_ms, req) < 0) {
		complete_later(cl, p, RPC_BAD_REPLY); /* cannot be encoded (too large) */
		return id;
	}
	if (cl->queued + p->frame.len > cl->cfg.max_queued) {
		pending_frame_free(p);
		complete_later(cl, p, RPC_UNAVAILABLE); /* too much waiting to be sent */
		return id;
	}
	cl->queued += p->frame.len;
	timer_start(cl->loop, &p->deadline, deadline_ms);
	*pending_slot(cl, p->req_id) = p;
	cl->inflight++;
	if (cl->unsent_tail)
		cl->unsent_tail->unext = p;
	else
		cl->unsent_head = p;
	cl->unsent_tail = p;
	/* Writing may close the connection; its pendings then finish on the
	 * next turn, so p stays valid here either way. */
	if (cl->connected)
		client_send_pending(cl);
	else
		client_connect(cl);
	return id;
}

bool rpc_client_connected(const struct rpc_client *cl) { return cl->connected; }
size_t rpc_client_inflight(const struct rpc_client *cl) { return cl->inflight; }

static void client_destroy(struct rpc_client *cl)
{
	timer_stop(cl->loop, &cl->reconnect);
	timer_stop(cl->loop, &cl->complete_t);
	free(cl->addr);
	free(cl->tls_name);
	free(cl);
}

void rpc_client_free(struct rpc_client **clp)
{
	struct rpc_client *cl = *clp;
	if (!cl)
		return;
	*clp = NULL;
	if (cl->freeing)
		return;
	cl->freeing = true;
	timer_stop(cl->loop, &cl->reconnect);
	client_enter(cl);
	if (cl->c)
		conn_abort(cl->c, CONN_CLOSE_LOCAL);
	/* Every pending call finishes now, with RPC_CANCELLED. */
	for (size_t i = 0; i < PENDING_BUCKETS; i++)
		while (cl->buckets[i])
			pending_finish(pending_take(cl, cl->buckets[i]->req_id), RPC_CANCELLED,
				       NULL, NULL);
	while (cl->complete_q) {
		struct pending *p = cl->complete_q;
		cl->complete_q = p->hnext;
		pending_finish(p, RPC_CANCELLED, NULL, NULL);
	}
	cl->complete_tail = NULL;
	client_leave(cl); /* destroys when no callback is running */
}
