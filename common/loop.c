/* io_uring event loop: ops table, timers, connections, TLS glue, workers.
 * See loop.h for the contracts. */
#include "common/loop.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "common/deflate.h"
#include "common/log.h"
#include "common/net.h"
#include "common/tls.h"

/* ---- op table -------------------------------------------------------- */

enum op_kind {
	OP_FREE = 0,
	OP_ACCEPT,
	OP_RECV,
	OP_SEND,
	OP_CONNECT,
	OP_POLL,
	OP_EVENTFD,
	OP_SIGNAL,
	OP_CANCEL,
	OP_CLOSE,
};

struct op {
	uint32_t gen;
	uint8_t kind;
	void *owner;     /* conn, listener, poll; NULL once forgotten */
	void *free_ptr;  /* memory the kernel may still use; freed on final CQE */
	uint32_t next_free;
};

#define OP_NONE UINT32_MAX

struct listener {
	struct loop *loop;
	int fd;
	uint32_t op;
	uint16_t port;
	struct listener_config cfg;
	struct conn_limits limits;
	struct timer retry;
	struct listener *next;
};

enum conn_flag {
	CF_CLOSING = 1u << 0,     /* graceful close requested */
	CF_PAUSED = 1u << 1,      /* protocol asked to stop delivery */
	CF_RECV_OFF = 1u << 2,    /* recv not armed by choice (backpressure) */
	CF_DIRTY = 1u << 3,       /* on the flush list */
	CF_TLS = 1u << 4,         /* ssl present */
	CF_TLS_READY = 1u << 5,   /* handshake done */
	CF_CONNECTING = 1u << 6,
	CF_EOF = 1u << 7,         /* peer sent FIN */
	CF_DISCARD = 1u << 8,     /* drop the rest of the current input (STARTTLS) */
	CF_DELIVERING = 1u << 9,  /* inside on_data */
	CF_DEAD = 1u << 10,       /* finalized; memory freed by the last release */
	CF_SHUTDOWN_SENT = 1u << 11,
	CF_RESUME = 1u << 12,     /* resumed while held: deliver at release */
	CF_DRAINING = 1u << 13,   /* loop drains: close when idle */
	CF_ZSTART = 1u << 14,     /* compression started inside on_data */
};

struct conn {
	struct loop *loop;
	uint64_t id;
	int fd;
	uint32_t flags;
	uint16_t busy;               /* conn_hold depth */
	uint8_t close_reason;        /* reported when a graceful close ends */
	uint32_t recv_op;
	uint32_t send_op;
	size_t sending_off;          /* bytes of `sending` already sent */
	uint64_t cancel_iter;        /* loop turn of the last recv cancel */
	const struct conn_handler *h;
	void *user;
	struct buf in;      /* unconsumed plaintext */
	struct buf out;     /* bytes to send (ciphertext under TLS) */
	struct buf sending; /* bytes owned by the in-flight send */
	struct buf tls_pending; /* plaintext written before the handshake ended */
	struct timer timer;
	uint64_t last_activity_ms;
	uint64_t last_write_progress_ms;
	uint64_t tls_start_ms;
	struct conn_limits lim;
	SSL *ssl;
	struct deflate_stream *z; /* COMPRESS=DEFLATE; NULL until started */
	const uint8_t *tls_rd; /* ciphertext the BIO may read */
	size_t tls_rd_len;
	struct conn *dirty_next;
	struct conn *prev, *next; /* all conns of the loop */
	union {
		struct sockaddr sa;
		struct sockaddr_in in4;
		struct sockaddr_in6 in6;
	} peer; /* not sockaddr_storage: 28 bytes, not 128, per connection */
};

struct work_queue {
	pthread_mutex_t mu;
	struct work *head, *tail;
};

struct loop {
	struct io_uring ring;
	struct op *ops;
	uint32_t ops_cap;
	uint32_t ops_free;
	uint32_t ops_inflight;
	/* provided buffers */
	struct io_uring_buf_ring *br;
	uint8_t *bufs;
	unsigned buf_count, buf_size;
	size_t br_size;
	/* timers: binary min-heap */
	struct timer **heap;
	uint32_t heap_len, heap_cap;
	struct conn *dirty;
	struct conn *conns;
	struct listener *listeners;
	uint64_t next_conn_id;
	uint64_t now_ms;
	struct loop_config cfg;
	struct loop_stats stats;
	/* cross-thread */
	int efd;
	uint64_t efd_val;
	uint32_t efd_op;
	struct work_queue done;
	uint32_t work_inflight;
	uint32_t holds;
	_Atomic int stop_requested;
	bool stopping;
	struct timer drain_timer;
	bool drain_forced;
	/* signals */
	int sfd;
	struct signalfd_siginfo siginfo;
	uint32_t sig_op;
	void (*hup_cb)(void *);
	void *hup_arg;
	void (*stop_cb)(void *);
	void *stop_arg;
	uint8_t *scratch; /* TLS plaintext scratch, buf_size bytes */
	bool freeing;     /* loop_free: close fds directly */
	uint32_t signals; /* SIGTERM/SIGINT received */
	uint64_t timer_gen;
};

static const struct conn_limits default_limits = {
	.in_max = 64 * 1024,
	.out_high = 256 * 1024,
	.out_max = 4 * 1024 * 1024,
	.idle_ms = 300 * 1000,
	.write_ms = 60 * 1000,
	.handshake_ms = 15 * 1000,
};

static _Atomic uint64_t global_conn_id = 1;

static uint32_t op_alloc(struct loop *l, uint8_t kind, void *owner)
{
	if (l->ops_free == OP_NONE) {
		uint32_t old = l->ops_cap;
		uint32_t ncap = old ? old * 2 : 256;
		l->ops = xrealloc(l->ops, ncap * sizeof(*l->ops));
		for (uint32_t i = old; i < ncap; i++) {
			l->ops[i] = (struct op){ .gen = 1, .next_free = i + 1 };
		}
		l->ops[ncap - 1].next_free = l->ops_free;
		l->ops_free = old;
		l->ops_cap = ncap;
	}
	uint32_t idx = l->ops_free;
	struct op *o = &l->ops[idx];
	l->ops_free = o->next_free;
	o->kind = kind;
	o->owner = owner;
	o->free_ptr = NULL;
	l->ops_inflight++;
	return idx;
}

static void op_release(struct loop *l, uint32_t idx)
{
	struct op *o = &l->ops[idx];
	free(o->free_ptr);
	o->free_ptr = NULL;
	o->owner = NULL;
	o->kind = OP_FREE;
	o->gen++;
	if (o->gen == 0)
		o->gen = 1;
	o->next_free = l->ops_free;
	l->ops_free = idx;
	l->ops_inflight--;
}

static inline uint64_t op_udata(struct loop *l, uint32_t idx)
{
	return ((uint64_t)l->ops[idx].gen << 32) | idx;
}

static struct io_uring_sqe *get_sqe(struct loop *l)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&l->ring);
	while (!sqe) {
		l->stats.submits++;
		io_uring_submit(&l->ring);
		sqe = io_uring_get_sqe(&l->ring);
	}
	return sqe;
}

static void submit_cancel(struct loop *l, uint32_t idx)
{
	uint32_t c = op_alloc(l, OP_CANCEL, NULL);
	struct io_uring_sqe *sqe = get_sqe(l);
	io_uring_prep_cancel64(sqe, op_udata(l, idx), 0);
	io_uring_sqe_set_data64(sqe, op_udata(l, c));
}

/* The owner goes away: its op stays reserved until the kernel's final CQE. */
static void op_forget(struct loop *l, uint32_t *idxp, bool cancel)
{
	uint32_t idx = *idxp;
	if (idx == OP_NONE)
		return;
	l->ops[idx].owner = NULL;
	if (cancel)
		submit_cancel(l, idx);
	*idxp = OP_NONE;
}

/* ---- timers ---------------------------------------------------------- */

void timer_init(struct timer *t, timer_cb cb, void *arg)
{
	t->deadline_ms = 0;
	t->heap_idx = UINT32_MAX;
	t->cb = cb;
	t->arg = arg;
}

static void heap_swap(struct loop *l, uint32_t a, uint32_t b)
{
	struct timer *ta = l->heap[a], *tb = l->heap[b];
	l->heap[a] = tb;
	l->heap[b] = ta;
	tb->heap_idx = a;
	ta->heap_idx = b;
}

static void heap_up(struct loop *l, uint32_t i)
{
	while (i > 0) {
		uint32_t p = (i - 1) / 2;
		if (l->heap[p]->deadline_ms <= l->heap[i]->deadline_ms)
			break;
		heap_swap(l, i, p);
		i = p;
	}
}

static void heap_down(struct loop *l, uint32_t i)
{
	for (;;) {
		uint32_t a = 2 * i + 1, b = a + 1, m = i;
		if (a < l->heap_len && l->heap[a]->deadline_ms < l->heap[m]->deadline_ms)
			m = a;
		if (b < l->heap_len && l->heap[b]->deadline_ms < l->heap[m]->deadline_ms)
			m = b;
		if (m == i)
			break;
		heap_swap(l, i, m);
		i = m;
	}
}

void timer_stop(struct loop *l, struct timer *t)
{
	uint32_t i = t->heap_idx;
	if (i == UINT32_MAX)
		return;
	uint32_t last = l->heap_len - 1;
	if (i != last) {
		heap_swap(l, i, last);
		l->heap_len--;
		heap_down(l, i);
		heap_up(l, i);
	} else {
		l->heap_len--;
	}
	t->heap_idx = UINT32_MAX;
}

void timer_start(struct loop *l, struct timer *t, uint64_t ms)
{
	timer_stop(l, t);
	if (l->heap_len == l->heap_cap) {
		l->heap_cap = l->heap_cap ? l->heap_cap * 2 : 64;
		l->heap = xrealloc(l->heap, l->heap_cap * sizeof(*l->heap));
	}
	t->deadline_ms = time_mono_ms() + ms;
	t->armed_gen = l->timer_gen;
	t->heap_idx = l->heap_len;
	l->heap[l->heap_len++] = t;
	heap_up(l, t->heap_idx);
}

/* Fires due timers once per turn: a timer (re)armed by a callback of this
 * run waits for the next turn, so a 0 ms re-arm cannot spin here. */
static void timers_run(struct loop *l)
{
	uint64_t now = l->now_ms;
	uint64_t gen = ++l->timer_gen;
	while (l->heap_len > 0 && l->heap[0]->deadline_ms <= now &&
	       l->heap[0]->armed_gen != gen) {
		struct timer *t = l->heap[0];
		timer_stop(l, t);
		t->cb(t);
	}
}

/* ---- connections ----------------------------------------------------- */

/* Lifetime. Every entry into connection code from the loop (a completion,
 * a timer, the flush before submit, the drain walk) holds the connection
 * (conn_hold) and releases it afterwards (conn_release). A connection
 * finalized while held is only marked CF_DEAD: its fd is closed and
 * on_close runs at once, but the memory is freed by the outermost release,
 * so no caller up the stack ever touches freed memory. Outside a hold
 * (e.g. conn_abort from another connection's callback), finalize frees at
 * once. Work deferred while held (resume after pause, close after EOF or
 * during drain) runs at the outermost release. */

static void conn_arm_recv(struct conn *c);
static void conn_finalize(struct conn *c, enum conn_close_reason why);
static void conn_mark_dirty(struct conn *c);
static void conn_deliver(struct conn *c, const uint8_t *data, size_t len);
static void conn_tls_input(struct conn *c, const uint8_t *data, size_t len);
static void conn_update_timer(struct conn *c);
static void conn_run_protocol(struct conn *c);
static void conn_recv_policy(struct conn *c);
static int conn_z_flush(struct conn *c);

/* Input not yet taken by the protocol: plaintext in `in`, or compressed
 * bytes (or zlib output) still to inflate. */
static bool conn_has_input(const struct conn *c)
{
	return c->in.len > 0 || (c->z && deflate_stream_in_ready(c->z));
}

const char *conn_close_reason_str(enum conn_close_reason r)
{
	switch (r) {
	case CONN_CLOSE_LOCAL: return "local";
	case CONN_CLOSE_PEER: return "peer";
	case CONN_CLOSE_ERROR: return "error";
	case CONN_CLOSE_TIMEOUT: return "timeout";
	case CONN_CLOSE_TLS: return "tls";
	case CONN_CLOSE_OVERFLOW: return "overflow";
	case CONN_CLOSE_SHUTDOWN: return "shutdown";
	case CONN_CLOSE_CONNECT: return "connect";
	case CONN_CLOSE_COMPRESS: return "compress";
	}
	return "?";
}

static const char *comp_of(const struct conn *c)
{
	return c->h && c->h->name ? c->h->name : "conn";
}

static void conn_free_mem(struct conn *c)
{
	buf_cleanup(&c->in);
	buf_cleanup(&c->out);
	buf_cleanup(&c->sending);
	buf_cleanup(&c->tls_pending);
	if (c->ssl)
		SSL_free(c->ssl);
	if (c->z) {
		c->loop->stats.compress_active--;
		deflate_stream_free(&c->z);
	}
	free(c);
}

static inline void conn_hold(struct conn *c)
{
	c->busy++;
}

/* Returns false when the connection is gone (memory freed). */
static bool conn_release(struct conn *c)
{
	if (c->busy > 1) {
		c->busy--;
		return !(c->flags & CF_DEAD);
	}
	/* Outermost: run what was deferred, still holding. */
	for (int round = 0; round < 4 && !(c->flags & CF_DEAD); round++) {
		if (c->flags & CF_RESUME) {
			c->flags &= ~CF_RESUME;
			conn_run_protocol(c);
			if (!(c->flags & CF_DEAD))
				conn_recv_policy(c);
			continue;
		}
		/* Peer finished sending (EOF / close_notify) or the loop drains:
		 * close once nothing is left to do. */
		if ((c->flags & (CF_EOF | CF_DRAINING)) && !(c->flags & CF_CLOSING) &&
		    !(c->flags & CF_PAUSED) && (!conn_has_input(c) || (c->flags & CF_EOF))) {
			if ((c->flags & CF_EOF) && c->close_reason == CONN_CLOSE_LOCAL)
				c->close_reason = CONN_CLOSE_PEER;
			conn_close(c);
			continue;
		}
		break;
	}
	c->busy--;
	if (c->flags & CF_DEAD) {
		conn_free_mem(c);
		return false;
	}
	return true;
}

static void conn_timer_cb(struct conn *c)
{
	LOG_INFO(comp_of(c), c->id, "timeout", "pending_out=%zu tls=%d connecting=%d",
		 conn_out_pending(c), (c->flags & CF_TLS) ? 1 : 0,
		 (c->flags & CF_CONNECTING) ? 1 : 0);
	c->loop->stats.timeouts++;
	conn_finalize(c, CONN_CLOSE_TIMEOUT);
}

/* One timer per connection; its deadline is the earliest of the idle,
 * handshake/connect and write deadlines that currently apply. Activity is
 * input or output progress, so a long download is not "idle". */
static uint64_t conn_deadline(const struct conn *c)
{
	uint64_t d = UINT64_MAX;
	if (c->lim.idle_ms && !(c->flags & CF_CONNECTING))
		d = c->last_activity_ms + c->lim.idle_ms;
	if ((c->flags & CF_TLS) && !(c->flags & CF_TLS_READY) && c->lim.handshake_ms)
		d = MIN(d, c->tls_start_ms + c->lim.handshake_ms);
	if ((c->flags & CF_CONNECTING) && c->lim.handshake_ms)
		d = MIN(d, c->last_activity_ms + c->lim.handshake_ms);
	if (conn_out_pending(c) && c->lim.write_ms)
		d = MIN(d, c->last_write_progress_ms + c->lim.write_ms);
	return d;
}

static void conn_update_timer(struct conn *c)
{
	if (c->flags & CF_DEAD)
		return;
	uint64_t deadline = conn_deadline(c);
	if (deadline == UINT64_MAX) {
		timer_stop(c->loop, &c->timer);
		return;
	}
	uint64_t now = c->loop->now_ms;
	uint64_t ms = deadline > now ? deadline - now : 0;
	/* Avoid heap churn: an earlier timer stays; when it fires,
	 * conn_timer_fire re-checks and re-arms for the real deadline. */
	if (timer_armed(&c->timer) && c->timer.deadline_ms <= now + ms)
		return;
	timer_start(c->loop, &c->timer, ms);
}

static void conn_timer_fire(struct timer *t)
{
	struct conn *c = t->arg;
	conn_hold(c);
	if (conn_deadline(c) <= c->loop->now_ms)
		conn_timer_cb(c);
	else
		conn_update_timer(c);
	conn_release(c);
}

static struct conn *conn_new(struct loop *l, int fd)
{
	struct conn *c = xcalloc(1, sizeof(*c));
	c->loop = l;
	c->id = global_conn_id++;
	c->fd = fd;
	c->recv_op = OP_NONE;
	c->send_op = OP_NONE;
	c->lim = default_limits;
	buf_init(&c->in, 0);
	buf_init(&c->out, 0);
	buf_init(&c->sending, 0);
	buf_init(&c->tls_pending, 0);
	timer_init(&c->timer, conn_timer_fire, c);
	c->last_activity_ms = c->last_write_progress_ms = l->now_ms;
	c->next = l->conns;
	if (l->conns)
		l->conns->prev = c;
	l->conns = c;
	l->stats.conns_open++;
	return c;
}

void conn_set_handler(struct conn *c, const struct conn_handler *h, void *user)
{
	c->h = h;
	c->user = user;
}

/* A zero size means "the default", never "nothing allowed"; zero
 * timeouts mean "none". */
static struct conn_limits limits_normalize(const struct conn_limits *in)
{
	struct conn_limits o = *in;
	if (!o.in_max)
		o.in_max = default_limits.in_max;
	if (!o.out_high)
		o.out_high = default_limits.out_high;
	if (!o.out_max)
		o.out_max = default_limits.out_max;
	if (o.out_max < o.out_high)
		o.out_max = o.out_high;
	return o;
}

void conn_set_limits(struct conn *c, const struct conn_limits *lim)
{
	c->lim = limits_normalize(lim);
	conn_update_timer(c);
}

void conn_set_idle_timeout(struct conn *c, uint32_t ms)
{
	c->lim.idle_ms = ms;
	conn_update_timer(c);
}

void *conn_user(const struct conn *c) { return c->user; }
uint64_t conn_id(const struct conn *c) { return c->id; }
struct loop *conn_loop(const struct conn *c) { return c->loop; }
int conn_fd(const struct conn *c) { return c->fd; }
SSL *conn_ssl(const struct conn *c) { return c->ssl; }
bool conn_tls_active(const struct conn *c) { return (c->flags & CF_TLS_READY) != 0; }
bool conn_closing(const struct conn *c) { return (c->flags & (CF_CLOSING | CF_DEAD)) != 0; }
const struct sockaddr *conn_peer(const struct conn *c) { return &c->peer.sa; }
size_t conn_out_pending(const struct conn *c) { return c->out.len + c->sending.len - c->sending_off; }
size_t conn_struct_size(void) { return sizeof(struct conn); }

const char *conn_peer_str(const struct conn *c, char *out, size_t out_len)
{
	return net_addr_str(&c->peer.sa, out, out_len);
}

static void conn_unlink(struct conn *c)
{
	struct loop *l = c->loop;
	if (c->prev)
		c->prev->next = c->next;
	else
		l->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
	if (c->flags & CF_DIRTY) {
		struct conn **pp = &l->dirty;
		while (*pp && *pp != c)
			pp = &(*pp)->dirty_next;
		if (*pp)
			*pp = c->dirty_next;
		c->flags &= ~CF_DIRTY;
	}
}

/* Tear the connection down now: forget in-flight ops (the kernel may still
 * read the send buffer, so that buffer is handed to the op), close the fd
 * through the ring after the cancels, tell the protocol; free unless held. */
static void conn_finalize(struct conn *c, enum conn_close_reason why)
{
	struct loop *l = c->loop;
	if (c->flags & CF_DEAD)
		return;
	c->flags |= CF_DEAD;
	timer_stop(l, &c->timer);
	op_forget(l, &c->recv_op, true);
	if (c->send_op != OP_NONE) {
		/* A send may still read `sending`; a connect owns its own copy
		 * of the address already. */
		if (l->ops[c->send_op].kind == OP_SEND) {
			l->ops[c->send_op].free_ptr = c->sending.data;
			c->sending.data = NULL;
			c->sending.len = c->sending.cap = 0;
			c->sending_off = 0;
		}
		op_forget(l, &c->send_op, true);
	}
	conn_unlink(c);
	if (c->fd >= 0) {
		if (l->freeing) {
			close(c->fd);
		} else {
			/* Queued after every SQE that names this fd (SQEs are
			 * issued in order and none of ours are linked or
			 * IOSQE_ASYNC), so a reused fd number can never receive
			 * this connection's I/O. */
			uint32_t op = op_alloc(l, OP_CLOSE, NULL);
			struct io_uring_sqe *sqe = get_sqe(l);
			io_uring_prep_close(sqe, c->fd);
			io_uring_sqe_set_data64(sqe, op_udata(l, op));
		}
		c->fd = -1;
	}
	l->stats.conns_open--;
	if (c->h && c->h->on_close)
		c->h->on_close(c, why);
	if (!c->busy)
		conn_free_mem(c);
}

void conn_abort(struct conn *c, enum conn_close_reason why)
{
	conn_finalize(c, why);
}

static bool conn_flushed(const struct conn *c)
{
	return conn_out_pending(c) == 0 && c->send_op == OP_NONE;
}

void conn_close(struct conn *c)
{
	if (c->flags & (CF_CLOSING | CF_DEAD))
		return;
	/* What zlib still holds goes out before close_notify and FIN. On
	 * failure c may be gone. */
	if (c->z && conn_z_flush(c) < 0)
		return;
	c->flags |= CF_CLOSING;
	if ((c->flags & CF_TLS_READY) && !(c->flags & CF_SHUTDOWN_SENT)) {
		c->flags |= CF_SHUTDOWN_SENT;
		SSL_shutdown(c->ssl); /* queues close_notify into out */
	}
	if (conn_flushed(c) && !(c->flags & CF_CONNECTING)) {
		conn_finalize(c, c->close_reason);
		return;
	}
	conn_mark_dirty(c);
}

/* Bytes as they go on the wire below compression: ciphertext under TLS
 * (plaintext held until the handshake ends), else straight to `out`.
 * Returns -1 with the connection finalized (and freed unless held) when
 * more than `max` would be pending. */
static int conn_put_raw(struct conn *c, const void *p, size_t len, size_t max)
{
	if (c->flags & CF_TLS) {
		if (!(c->flags & CF_TLS_READY)) {
			if (c->tls_pending.len + len > max)
				goto overflow;
			buf_append(&c->tls_pending, p, len);
			return 0;
		}
		if (conn_out_pending(c) + len > max)
			goto overflow;
		if (conn_out_pending(c) == 0)
			c->last_write_progress_ms = c->loop->now_ms;
		const uint8_t *q = p;
		while (len > 0) {
			int chunk = (int)MIN(len, (size_t)INT32_MAX);
			int n = SSL_write(c->ssl, q, chunk);
			if (n <= 0) {
				LOG_WARN(comp_of(c), c->id, "tls_write_failed", "err=%d",
					 SSL_get_error(c->ssl, n));
				ERR_clear_error();
				conn_finalize(c, CONN_CLOSE_TLS);
				return -1;
			}
			q += n;
			len -= (size_t)n;
		}
		conn_mark_dirty(c);
		return 0;
	}
	if (conn_out_pending(c) + len > max)
		goto overflow;
	if (conn_out_pending(c) == 0)
		c->last_write_progress_ms = c->loop->now_ms;
	buf_append(&c->out, p, len);
	conn_mark_dirty(c);
	return 0;
overflow:
	LOG_WARN(comp_of(c), c->id, "output_overflow", "pending=%zu add=%zu max=%zu",
		 conn_out_pending(c) + c->tls_pending.len, len, max);
	conn_finalize(c, CONN_CLOSE_OVERFLOW);
	return -1;
}

/* ---- compression (COMPRESS=DEFLATE): a transform between the protocol's
 * plaintext and the wire (below TLS). Output is deflated as written and
 * sync-flushed where the loop flushes writes (conn_flush, when no send is
 * in flight, so one turn's replies share one block), before a close, and
 * when a send completes. Input is queued compressed and inflated into `in`
 * only up to in_max, in step with what the protocol consumes: a deflate
 * bomb costs at most in_max of plaintext plus the queued compressed bytes,
 * which recv backpressure bounds like plaintext input. */

static int conn_z_sink(void *arg, const uint8_t *p, size_t len)
{
	struct conn *c = arg;
	c->loop->stats.compress_out_wire += len;
	/* The plaintext was checked against out_max in conn_write; a flush
	 * may add a few bytes over it. */
	return conn_put_raw(c, p, len, c->lim.out_max + 65536);
}

/* Returns -1 when the connection failed (finalized; freed unless held). */
static int conn_z_flush(struct conn *c)
{
	if (!deflate_stream_unflushed(c->z))
		return 0;
	return deflate_stream_flush(c->z, conn_z_sink, c);
}

static int conn_z_write(struct conn *c, const void *p, size_t len)
{
	if (conn_out_pending(c) + len > c->lim.out_max) {
		LOG_WARN(comp_of(c), c->id, "output_overflow", "pending=%zu add=%zu max=%zu",
			 conn_out_pending(c), len, c->lim.out_max);
		conn_finalize(c, CONN_CLOSE_OVERFLOW);
		return -1;
	}
	c->loop->stats.compress_out_plain += len;
	if (deflate_stream_write(c->z, p, len, conn_z_sink, c) < 0)
		return -1;
	conn_mark_dirty(c); /* the flush before submit */
	return 0;
}

/* Compressed bytes arrived (or followed the COMPRESS command): queue them
 * and let the protocol take what they inflate to. Caller holds c. */
static void conn_z_input(struct conn *c, const uint8_t *data, size_t len)
{
	struct loop *l = c->loop;
	/* Same safety valve as for plaintext (see conn_deliver). */
	size_t cap = c->lim.in_max + 4 * (size_t)l->buf_count * l->buf_size;
	size_t pending = deflate_stream_in_pending(c->z);
	if (pending + len > cap) {
		LOG_WARN(comp_of(c), c->id, "input_overflow", "compressed=%zu max=%zu",
			 pending + len, cap);
		conn_finalize(c, CONN_CLOSE_OVERFLOW);
		return;
	}
	deflate_stream_feed(c->z, data, len);
	l->stats.compress_in_wire += len;
	conn_run_protocol(c);
}

/* Inflate one step into `in`, never past in_max. Returns true on progress
 * (plaintext added or input taken). A corrupt stream closes the
 * connection gracefully: replies already written still go out. */
static bool conn_z_inflate(struct conn *c)
{
	if ((c->flags & (CF_DEAD | CF_CLOSING)) || c->in.len >= c->lim.in_max ||
	    !deflate_stream_in_ready(c->z))
		return false;
	size_t room = MIN(c->lim.in_max - c->in.len, (size_t)c->loop->buf_size);
	size_t before = deflate_stream_in_pending(c->z);
	uint8_t *dst = buf_reserve(&c->in, room);
	const char *err = NULL;
	ssize_t n = deflate_stream_inflate(c->z, dst, room, &err);
	if (n < 0) {
		c->loop->stats.compress_errors++;
		LOG_INFO(comp_of(c), c->id, "inflate_error", "reason=\"%s\"", err);
		c->close_reason = CONN_CLOSE_COMPRESS;
		conn_close(c);
		return false;
	}
	buf_commit(&c->in, (size_t)n);
	c->loop->stats.compress_in_plain += (uint64_t)n;
	return n > 0 || deflate_stream_in_pending(c->z) != before;
}

int conn_compress_start(struct conn *c)
{
	if (c->z || (c->flags & (CF_DEAD | CF_CLOSING | CF_CONNECTING)) ||
	    ((c->flags & CF_TLS) && !(c->flags & CF_TLS_READY)))
		return -1;
	c->z = deflate_stream_new();
	c->loop->stats.compress_started++;
	c->loop->stats.compress_active++;
	LOG_DEBUG(comp_of(c), c->id, "compress_start", "buffered=%zu", c->in.len);
	/* Everything received after the command is compressed: the client
	 * may send nothing before it has seen our OK (RFC 4978, 3), so bytes
	 * already here come from a client that compresses already. */
	if (c->flags & CF_DELIVERING) {
		c->flags |= CF_ZSTART; /* the caller of on_data moves the rest */
	} else if (c->in.len) {
		deflate_stream_feed(c->z, c->in.data, c->in.len);
		c->loop->stats.compress_in_wire += c->in.len;
		c->in.len = 0;
		/* Inflated and delivered at the end of this turn. */
		c->flags |= CF_RESUME;
		conn_mark_dirty(c);
	}
	return 0;
}

bool conn_compress_active(const struct conn *c)
{
	return c->z != NULL;
}

size_t conn_compress_memory(const struct conn *c)
{
	return c->z ? deflate_stream_memory(c->z) : 0;
}

int conn_write(struct conn *c, const void *p, size_t len)
{
	if (c->flags & (CF_DEAD | CF_CLOSING))
		return -1;
	if (len == 0)
		return 0;
	if (c->z)
		return conn_z_write(c, p, len);
	return conn_put_raw(c, p, len, c->lim.out_max);
}

int conn_printf(struct conn *c, const char *fmt, ...)
{
	char tmp[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	if ((size_t)n < sizeof(tmp))
		return conn_write(c, tmp, (size_t)n);
	char *big = xmalloc((size_t)n + 1);
	va_start(ap, fmt);
	vsnprintf(big, (size_t)n + 1, fmt, ap);
	va_end(ap);
	int r = conn_write(c, big, (size_t)n);
	free(big);
	return r;
}

static void conn_mark_dirty(struct conn *c)
{
	if (c->flags & (CF_DIRTY | CF_DEAD))
		return;
	c->flags |= CF_DIRTY;
	c->dirty_next = c->loop->dirty;
	c->loop->dirty = c;
}

/* Input goes to the protocol only while it is not paused and its output is
 * below out_high; otherwise it waits in `in`. */
static bool conn_can_deliver(const struct conn *c)
{
	return !(c->flags & (CF_PAUSED | CF_DEAD | CF_CLOSING | CF_DISCARD)) && c->h &&
	       c->h->on_data && conn_out_pending(c) <= c->lim.out_high;
}

static bool conn_want_recv(const struct conn *c)
{
	if (c->flags & (CF_DEAD | CF_CLOSING | CF_EOF | CF_CONNECTING))
		return false;
	if (conn_out_pending(c) > c->lim.out_high)
		return false;
	if (c->in.len >= c->lim.in_max)
		return false;
	if (c->z && deflate_stream_in_pending(c->z) >= c->lim.in_max)
		return false;
	return true;
}

/* Re-evaluate whether recv should be armed (backpressure both ways). */
static void conn_recv_policy(struct conn *c)
{
	if (c->flags & CF_DEAD)
		return;
	bool want = conn_want_recv(c);
	if (want && c->recv_op == OP_NONE) {
		conn_arm_recv(c);
	} else if (!want && c->recv_op != OP_NONE &&
		   (!(c->flags & CF_RECV_OFF) || c->cancel_iter != c->loop->stats.iterations)) {
		/* The cancelled recv may still complete with data: the op
		 * stays owned so that data is delivered, not lost. A cancel
		 * can also miss a multishot recv that is running at that
		 * moment (-EALREADY): while it keeps delivering, ask again,
		 * once per loop turn. */
		c->flags |= CF_RECV_OFF;
		c->cancel_iter = c->loop->stats.iterations;
		submit_cancel(c->loop, c->recv_op);
	}
}

static void conn_arm_recv(struct conn *c)
{
	struct loop *l = c->loop;
	c->flags &= ~CF_RECV_OFF;
	c->recv_op = op_alloc(l, OP_RECV, c);
	struct io_uring_sqe *sqe = get_sqe(l);
	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = 0;
	io_uring_sqe_set_data64(sqe, op_udata(l, c->recv_op));
}

/* Caller holds c. */
static void conn_flush(struct conn *c)
{
	struct loop *l = c->loop;
	if (c->flags & CF_DEAD)
		return;
	/* With a send in flight the flush waits for its completion: the
	 * bytes could not leave sooner, and the block grows meanwhile. */
	if (c->z && c->send_op == OP_NONE && conn_z_flush(c) < 0)
		return;
	if (c->send_op != OP_NONE || c->out.len == 0) {
		if (conn_flushed(c) && (c->flags & CF_CLOSING) && !(c->flags & CF_CONNECTING))
			conn_finalize(c, c->close_reason);
		return;
	}
	if (c->flags & CF_CONNECTING)
		return; /* sent once connected */
	/* Swap: the accumulated output becomes the in-flight buffer. */
	struct buf tmp = c->sending;
	c->sending = c->out;
	c->sending_off = 0;
	c->out = tmp;
	c->out.len = 0;
	c->send_op = op_alloc(l, OP_SEND, c);
	struct io_uring_sqe *sqe = get_sqe(l);
	io_uring_prep_send(sqe, c->fd, c->sending.data, c->sending.len, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, op_udata(l, c->send_op));
	conn_update_timer(c);
}

/* Caller holds c. */
static void conn_on_send(struct conn *c, int res)
{
	struct loop *l = c->loop;
	c->send_op = OP_NONE;
	if (res < 0) {
		if (res != -EPIPE && res != -ECONNRESET)
			LOG_INFO(comp_of(c), c->id, "send_error", "errno=%d", -res);
		conn_finalize(c, CONN_CLOSE_ERROR);
		return;
	}
	l->stats.bytes_out += (uint64_t)res;
	c->last_write_progress_ms = c->last_activity_ms = l->now_ms;
	c->sending_off += (size_t)res;
	if (c->sending_off < c->sending.len) {
		/* Partial send: resend the rest from an offset (no memmove). */
		c->send_op = op_alloc(l, OP_SEND, c);
		struct io_uring_sqe *sqe = get_sqe(l);
		io_uring_prep_send(sqe, c->fd, c->sending.data + c->sending_off,
				   c->sending.len - c->sending_off, MSG_NOSIGNAL);
		io_uring_sqe_set_data64(sqe, op_udata(l, c->send_op));
		conn_update_timer(c);
		return;
	}
	c->sending.len = 0;
	c->sending_off = 0;
	if (c->sending.cap > 64 * 1024)
		buf_cleanup(&c->sending);
	if (c->z && conn_z_flush(c) < 0)
		return;
	if (c->out.len) {
		conn_flush(c);
	} else {
		/* Keep memory small for idle connections. */
		buf_cleanup(&c->sending);
		buf_shrink_if_empty(&c->out);
		if (c->flags & CF_CLOSING) {
			conn_finalize(c, c->close_reason);
			return;
		}
		if (c->h && c->h->on_drain)
			c->h->on_drain(c);
		if (c->flags & CF_DEAD)
			return;
	}
	/* Output fell below out_high: input held back meanwhile goes on. */
	if (conn_has_input(c) && conn_can_deliver(c))
		conn_run_protocol(c);
	conn_recv_policy(c);
	conn_update_timer(c);
}

void conn_pause(struct conn *c)
{
	c->flags |= CF_PAUSED;
}

void conn_resume(struct conn *c)
{
	if (!(c->flags & CF_PAUSED) || (c->flags & CF_DEAD))
		return;
	c->flags &= ~CF_PAUSED;
	if (c->busy) {
		/* Inside a callback: the outermost release delivers. */
		c->flags |= CF_RESUME;
		return;
	}
	conn_hold(c);
	c->flags |= CF_RESUME;
	conn_release(c);
}

/* Call on_data once; handles the result. Returns bytes consumed, 0 when
 * no progress was made or the connection went away. */
static size_t conn_call_on_data(struct conn *c, const uint8_t *data, size_t len)
{
	c->flags |= CF_DELIVERING;
	ssize_t n = c->h->on_data(c, data, len);
	c->flags &= ~CF_DELIVERING;
	if (c->flags & CF_DEAD)
		return 0;
	if (n < 0) {
		conn_finalize(c, CONN_CLOSE_LOCAL);
		return 0;
	}
	if ((size_t)n > len) {
		LOG_ERROR(comp_of(c), c->id, "handler_bug", "consumed=%zd len=%zu", n, len);
		conn_finalize(c, CONN_CLOSE_LOCAL);
		return 0;
	}
	return (size_t)n;
}

/* Feed `in` (the saved tail) to the protocol while it makes progress;
 * under compression, refill it by inflating as the protocol takes it.
 * Caller holds c. */
static void conn_run_protocol(struct conn *c)
{
	for (;;) {
		while (c->in.len > 0 && conn_can_deliver(c)) {
			size_t n = conn_call_on_data(c, c->in.data, c->in.len);
			if (c->flags & CF_DEAD)
				return;
			if (c->flags & CF_DISCARD) {
				c->in.len = 0;
				c->flags &= ~CF_DISCARD;
				break;
			}
			if (c->flags & CF_ZSTART) {
				/* COMPRESS: the rest of `in` is compressed. */
				c->flags &= ~CF_ZSTART;
				buf_consume(&c->in, n);
				deflate_stream_feed(c->z, c->in.data, c->in.len);
				c->loop->stats.compress_in_wire += c->in.len;
				c->in.len = 0;
				break;
			}
			if (n == 0) {
				/* The protocol needs more than in_max bytes to make
				 * progress (an over-long line): a peer error. */
				if (c->in.len >= c->lim.in_max &&
				    !(c->flags & (CF_PAUSED | CF_CLOSING))) {
					LOG_INFO(comp_of(c), c->id, "input_overflow",
						 "buffered=%zu max=%zu", c->in.len, c->lim.in_max);
					conn_finalize(c, CONN_CLOSE_OVERFLOW);
					return;
				}
				break;
			}
			buf_consume(&c->in, n);
		}
		if (!c->z || !conn_z_inflate(c))
			break;
	}
	if (!(c->flags & CF_DEAD))
		buf_shrink_if_empty(&c->in);
}

/* Plaintext arrives: parsed in place when nothing is buffered; only an
 * unparsed tail, or input that arrives while the protocol may not take it
 * (paused, or its output above out_high), is copied into `in`. Caller
 * holds c. */
static void conn_deliver(struct conn *c, const uint8_t *data, size_t len)
{
	if (c->flags & (CF_DEAD | CF_CLOSING))
		return;
	if (c->z) {
		conn_z_input(c, data, len);
		return;
	}
	if (c->in.len == 0) {
		while (len > 0 && conn_can_deliver(c)) {
			size_t n = conn_call_on_data(c, data, len);
			if (c->flags & CF_DEAD)
				return;
			if (c->flags & CF_DISCARD) {
				/* STARTTLS: the rest of this input is dropped. */
				c->flags &= ~CF_DISCARD;
				return;
			}
			if (c->flags & CF_ZSTART) {
				/* COMPRESS: the rest of this input is compressed. */
				c->flags &= ~CF_ZSTART;
				conn_z_input(c, data + n, len - n);
				return;
			}
			if (n == 0)
				break;
			data += n;
			len -= n;
		}
		if (len == 0 || (c->flags & CF_CLOSING))
			return;
	}
	/* Stopping the recv takes effect only after the completions already
	 * posted: the rest of the batch that crossed the limit and whatever
	 * the kernel posts before it processes the cancel (a few provided-
	 * buffer rings at most, since buffers go back as they are copied)
	 * may still arrive, and must be kept, not dropped. The hard cap is a
	 * safety valve, not flow control. */
	struct loop *l = c->loop;
	size_t cap = c->lim.in_max + 4 * (size_t)l->buf_count * l->buf_size;
	if (c->in.len + len > cap) {
		LOG_WARN(comp_of(c), c->id, "input_overflow", "buffered=%zu max=%zu",
			 c->in.len + len, cap);
		conn_finalize(c, CONN_CLOSE_OVERFLOW);
		return;
	}
	buf_append(&c->in, data, len);
	conn_run_protocol(c);
}

/* The peer will send nothing more (FIN or TLS close_notify). Whatever it
 * sent is processed and answered; then the connection closes (see
 * conn_release). Caller holds c. */
static void conn_peer_done(struct conn *c)
{
	c->flags |= CF_EOF;
	if (c->recv_op != OP_NONE)
		op_forget(c->loop, &c->recv_op, true);
	LOG_DEBUG(comp_of(c), c->id, "peer_eof", NULL);
}

/* Caller holds c. */
static void conn_on_recv(struct conn *c, struct io_uring_cqe *cqe)
{
	struct loop *l = c->loop;
	int res = cqe->res;
	bool more = (cqe->flags & IORING_CQE_F_MORE) != 0;
	if (!more)
		c->recv_op = OP_NONE;
	if (res > 0 && (cqe->flags & IORING_CQE_F_BUFFER)) {
		unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
		uint8_t *data = l->bufs + (size_t)bid * l->buf_size;
		l->stats.bytes_in += (uint64_t)res;
		c->last_activity_ms = l->now_ms;
		if (c->flags & CF_TLS)
			conn_tls_input(c, data, (size_t)res);
		else
			conn_deliver(c, data, (size_t)res);
		io_uring_buf_ring_add(l->br, data, l->buf_size, (unsigned short)bid,
				      io_uring_buf_ring_mask(l->buf_count), 0);
		io_uring_buf_ring_advance(l->br, 1);
		if (c->flags & CF_DEAD)
			return;
	} else if (res == 0) {
		conn_peer_done(c);
		return;
	} else if (res == -ENOBUFS) {
		/* Out of provided buffers: re-armed below; buffers return as
		 * this batch is processed. */
		l->stats.errors++;
	} else if (res == -ECANCELED) {
		/* backpressure cancel; the policy below decides */
	} else if (res < 0) {
		if (res != -ECONNRESET)
			LOG_INFO(comp_of(c), c->id, "recv_error", "errno=%d", -res);
		conn_finalize(c, CONN_CLOSE_ERROR);
		return;
	}
	if (c->recv_op == OP_NONE && !(c->flags & CF_EOF)) {
		if (conn_want_recv(c))
			conn_arm_recv(c);
		else
			c->flags |= CF_RECV_OFF;
	} else {
		conn_recv_policy(c);
	}
	conn_update_timer(c);
}

/* ---- TLS glue: a BIO that reads the current recv buffer and writes into
 * the connection's output buffer. No copies beyond BoringSSL's own. */

static BIO_METHOD *conn_bio_method;
static pthread_once_t conn_bio_once = PTHREAD_ONCE_INIT;

static int cbio_write(BIO *b, const char *p, int len)
{
	struct conn *c = BIO_get_data(b);
	BIO_clear_retry_flags(b);
	if (len <= 0)
		return 0;
	if (conn_out_pending(c) + (size_t)len > c->lim.out_max + 65536) {
		BIO_set_retry_write(b);
		return -1;
	}
	if (conn_out_pending(c) == 0)
		c->last_write_progress_ms = c->loop->now_ms;
	buf_append(&c->out, p, (size_t)len);
	conn_mark_dirty(c);
	return len;
}

static int cbio_read(BIO *b, char *p, int len)
{
	struct conn *c = BIO_get_data(b);
	BIO_clear_retry_flags(b);
	if (c->tls_rd_len == 0) {
		BIO_set_retry_read(b);
		return -1;
	}
	size_t n = MIN((size_t)len, c->tls_rd_len);
	memcpy(p, c->tls_rd, n);
	c->tls_rd += n;
	c->tls_rd_len -= n;
	return (int)n;
}

static long cbio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	UNUSED(b);
	UNUSED(num);
	UNUSED(ptr);
	return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int cbio_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

static void conn_bio_init(void)
{
	conn_bio_method = BIO_meth_new(BIO_TYPE_SOURCE_SINK, "conn");
	BIO_meth_set_write(conn_bio_method, cbio_write);
	BIO_meth_set_read(conn_bio_method, cbio_read);
	BIO_meth_set_ctrl(conn_bio_method, cbio_ctrl);
	BIO_meth_set_create(conn_bio_method, cbio_create);
}

static void conn_attach_ssl(struct conn *c, SSL *ssl)
{
	pthread_once(&conn_bio_once, conn_bio_init);
	BIO *bio = BIO_new(conn_bio_method);
	BIO_set_data(bio, c);
	SSL_set_bio(ssl, bio, bio);
	c->ssl = ssl;
	c->flags |= CF_TLS;
	c->flags &= ~CF_TLS_READY;
	c->tls_start_ms = c->loop->now_ms;
	conn_update_timer(c);
}

/* Returns 1 done, 0 in progress, -1 failed (connection closing). Caller
 * holds c. */
static int conn_tls_handshake(struct conn *c)
{
	int r = SSL_do_handshake(c->ssl);
	if (r == 1) {
		c->flags |= CF_TLS_READY;
		c->loop->stats.tls_handshakes++;
		LOG_DEBUG(comp_of(c), c->id, "tls_ready", "version=%s cipher=%s",
			  SSL_get_version(c->ssl),
			  SSL_CIPHER_get_name(SSL_get_current_cipher(c->ssl)));
		if (c->tls_pending.len) {
			struct buf p = c->tls_pending;
			buf_init(&c->tls_pending, 0);
			conn_write(c, p.data, p.len);
			buf_cleanup(&p);
			if (c->flags & CF_DEAD)
				return -1;
		}
		conn_update_timer(c);
		if (c->h && c->h->on_tls_ready)
			c->h->on_tls_ready(c);
		return (c->flags & CF_DEAD) ? -1 : 1;
	}
	int err = SSL_get_error(c->ssl, r);
	if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
		conn_mark_dirty(c); /* handshake output may be queued */
		return 0;
	}
	char peer[80];
	unsigned long e = ERR_peek_last_error();
	char ebuf[160];
	ERR_error_string_n(e, ebuf, sizeof(ebuf));
	LOG_INFO(comp_of(c), c->id, "tls_handshake_failed", "peer=%s err=%d reason=\"%s\"",
		 conn_peer_str(c, peer, sizeof(peer)), err, ebuf);
	ERR_clear_error();
	c->loop->stats.tls_failures++;
	/* Send any alert BoringSSL queued, then close. */
	c->flags |= CF_SHUTDOWN_SENT;
	c->close_reason = CONN_CLOSE_TLS;
	conn_close(c);
	return -1;
}

/* Caller holds c. */
static void conn_tls_input(struct conn *c, const uint8_t *data, size_t len)
{
	struct loop *l = c->loop;
	c->tls_rd = data;
	c->tls_rd_len = len;
	if (!(c->flags & CF_TLS_READY)) {
		if (conn_tls_handshake(c) <= 0)
			goto out;
	}
	for (;;) {
		if (c->flags & (CF_DEAD | CF_CLOSING))
			break;
		int n = SSL_read(c->ssl, l->scratch, (int)l->buf_size);
		if (n > 0) {
			conn_deliver(c, l->scratch, (size_t)n);
			continue;
		}
		int err = SSL_get_error(c->ssl, n);
		if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
			break;
		if (err == SSL_ERROR_ZERO_RETURN) {
			conn_peer_done(c);
			break;
		}
		LOG_INFO(comp_of(c), c->id, "tls_error", "err=%d", err);
		ERR_clear_error();
		conn_finalize(c, CONN_CLOSE_TLS);
		break;
	}
out:
	c->tls_rd = NULL;
	c->tls_rd_len = 0;
	if (!(c->flags & CF_DEAD))
		conn_mark_dirty(c);
}

int conn_starttls_server(struct conn *c, struct tls_server *ts)
{
	if ((c->flags & (CF_TLS | CF_DEAD)) || c->z)
		return -1;
	SSL *ssl = tls_server_new_ssl(ts);
	if (!ssl)
		return -1;
	conn_attach_ssl(c, ssl);
	SSL_set_accept_state(ssl);
	/* Anything already buffered, and the rest of the input being
	 * delivered right now, was sent before the handshake: dropped. */
	c->in.len = 0;
	if (c->flags & CF_DELIVERING)
		c->flags |= CF_DISCARD;
	return 0;
}

int conn_starttls_client(struct conn *c, SSL *ssl)
{
	if ((c->flags & (CF_TLS | CF_DEAD)) || c->z)
		return -1;
	conn_attach_ssl(c, ssl);
	SSL_set_connect_state(ssl);
	c->in.len = 0;
	if (c->flags & CF_DELIVERING)
		c->flags |= CF_DISCARD;
	if (!(c->flags & CF_CONNECTING)) {
		conn_hold(c);
		int r = conn_tls_handshake(c);
		if (!conn_release(c))
			return -1;
		return r < 0 ? -1 : 0;
	}
	return 0;
}

/* ---- listeners and accept -------------------------------------------- */

static void listener_arm(struct listener *ls)
{
	struct loop *l = ls->loop;
	ls->op = op_alloc(l, OP_ACCEPT, ls);
	struct io_uring_sqe *sqe = get_sqe(l);
	io_uring_prep_multishot_accept(sqe, ls->fd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, op_udata(l, ls->op));
}

static void listener_retry_cb(struct timer *t)
{
	struct listener *ls = t->arg;
	if (ls->op == OP_NONE && !ls->loop->stopping && ls->fd >= 0)
		listener_arm(ls);
}

struct listener *listener_open(struct loop *l, const struct listener_config *cfg,
			       const char **error_r)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	if (net_parse_addr(cfg->addr, &ss, &sl, error_r) < 0)
		return NULL;
	int fd = net_listen((struct sockaddr *)&ss, sl, cfg->backlog ? cfg->backlog : 1024,
			    error_r);
	if (fd < 0)
		return NULL;
	struct listener *ls = xcalloc(1, sizeof(*ls));
	ls->loop = l;
	ls->fd = fd;
	ls->cfg = *cfg;
	ls->limits = cfg->limits ? limits_normalize(cfg->limits) : default_limits;
	ls->port = net_local_port(fd);
	timer_init(&ls->retry, listener_retry_cb, ls);
	ls->next = l->listeners;
	l->listeners = ls;
	listener_arm(ls);
	return ls;
}

uint16_t listener_port(const struct listener *ls) { return ls->port; }

static void listener_shutdown(struct listener *ls)
{
	struct loop *l = ls->loop;
	timer_stop(l, &ls->retry);
	op_forget(l, &ls->op, true);
	if (ls->fd >= 0) {
		close(ls->fd);
		ls->fd = -1;
	}
}

void listener_close(struct listener **lsp)
{
	struct listener *ls = *lsp;
	if (!ls)
		return;
	*lsp = NULL;
	listener_shutdown(ls);
	struct listener **pp = &ls->loop->listeners;
	while (*pp && *pp != ls)
		pp = &(*pp)->next;
	if (*pp)
		*pp = ls->next;
	free(ls);
}

static void listener_on_accept(struct listener *ls, struct io_uring_cqe *cqe)
{
	struct loop *l = ls->loop;
	if (!(cqe->flags & IORING_CQE_F_MORE))
		ls->op = OP_NONE;
	if (cqe->res < 0) {
		l->stats.errors++;
		LOG_WARN("loop", 0, "accept_error", "port=%u errno=%d", ls->port, -cqe->res);
		if (ls->op == OP_NONE && !l->stopping)
			timer_start(l, &ls->retry, 100); /* EMFILE etc.: back off */
		return;
	}
	int fd = cqe->res;
	if (l->stopping) {
		close(fd);
		return;
	}
	if (ls->op == OP_NONE)
		listener_arm(ls);
	/* TCP_NODELAY and SO_KEEPALIVE are inherited from the listener. */
	struct conn *c = conn_new(l, fd);
	socklen_t sl = sizeof(c->peer);
	getpeername(fd, &c->peer.sa, &sl);
	c->lim = ls->limits;
	l->stats.accepted++;
	conn_hold(c);
	if (ls->cfg.tls) {
		SSL *ssl = tls_server_new_ssl(ls->cfg.tls);
		if (!ssl) {
			conn_finalize(c, CONN_CLOSE_TLS);
			conn_release(c);
			return;
		}
		conn_attach_ssl(c, ssl);
		SSL_set_accept_state(ssl);
	}
	ls->cfg.on_accept(c, ls->cfg.arg);
	if (!(c->flags & CF_DEAD) && !c->h)
		conn_finalize(c, CONN_CLOSE_LOCAL);
	if (!(c->flags & (CF_DEAD | CF_CLOSING)))
		conn_arm_recv(c);
	conn_update_timer(c);
	conn_release(c);
}

/* ---- outgoing connections -------------------------------------------- */

struct conn *conn_connect(struct loop *l, const struct sockaddr *sa, socklen_t sa_len,
			  const struct conn_handler *h, void *user)
{
	return conn_connect_from(l, sa, sa_len, NULL, 0, h, user);
}

struct conn *conn_connect_from(struct loop *l, const struct sockaddr *sa, socklen_t sa_len,
			       const struct sockaddr *src, socklen_t src_len,
			       const struct conn_handler *h, void *user)
{
	if ((size_t)sa_len > sizeof(((struct conn *)0)->peer) || l->stopping)
		return NULL;
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return NULL;
	if (src) {
		/* Port chosen at connect time, so one source address serves
		 * many destinations without exhausting its ephemeral ports. */
		int one = 1;
		setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		if (bind(fd, src, src_len) < 0) {
			close(fd);
			return NULL;
		}
	}
	struct conn *c = conn_new(l, fd);
	memcpy(&c->peer, sa, sa_len);
	c->h = h;
	c->user = user;
	c->flags |= CF_CONNECTING;
	c->send_op = op_alloc(l, OP_CONNECT, c);
	/* The kernel reads the address when it issues the SQE, possibly after
	 * this conn is gone: give it a copy owned by the op. */
	void *addr = xmalloc(sa_len);
	memcpy(addr, sa, sa_len);
	l->ops[c->send_op].free_ptr = addr;
	struct io_uring_sqe *sqe = get_sqe(l);
	io_uring_prep_connect(sqe, fd, addr, sa_len);
	io_uring_sqe_set_data64(sqe, op_udata(l, c->send_op));
	conn_update_timer(c);
	return c;
}

/* Caller holds c. */
static void conn_on_connect(struct conn *c, int res)
{
	c->send_op = OP_NONE;
	c->flags &= ~CF_CONNECTING;
	c->last_activity_ms = c->loop->now_ms;
	if (res < 0) {
		if (c->h && c->h->on_connect)
			c->h->on_connect(c, res);
		conn_finalize(c, CONN_CLOSE_CONNECT);
		return;
	}
	net_tune_accepted(c->fd);
	if (c->ssl && conn_tls_handshake(c) < 0)
		return;
	if (!(c->flags & CF_DEAD) && c->h && c->h->on_connect)
		c->h->on_connect(c, 0);
	if (c->flags & CF_DEAD)
		return;
	if (c->flags & CF_CLOSING) {
		conn_flush(c);
		return;
	}
	conn_recv_policy(c);
	conn_mark_dirty(c);
	conn_update_timer(c);
}

/* ---- polls ----------------------------------------------------------- */

void loop_poll_init(struct loop_poll *p, int fd, loop_poll_cb cb, void *arg)
{
	p->fd = fd;
	p->events = 0;
	p->op = OP_NONE;
	p->cb = cb;
	p->arg = arg;
}

void loop_poll_set(struct loop *l, struct loop_poll *p, uint32_t events)
{
	if (p->op != OP_NONE) {
		if (p->events == events)
			return;
		op_forget(l, &p->op, true);
	}
	p->events = events;
	if (!events)
		return;
	p->op = op_alloc(l, OP_POLL, p);
	struct io_uring_sqe *sqe = get_sqe(l);
	io_uring_prep_poll_add(sqe, p->fd, events);
	io_uring_sqe_set_data64(sqe, op_udata(l, p->op));
}

void loop_poll_stop(struct loop *l, struct loop_poll *p)
{
	op_forget(l, &p->op, true);
	p->events = 0;
}

/* ---- workers --------------------------------------------------------- */

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct work *head, *tail;
	pthread_t *threads;
	unsigned n;
	bool stop;
} pool = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

static void loop_wake(struct loop *l)
{
	uint64_t one = 1;
	ssize_t r = write(l->efd, &one, sizeof(one));
	UNUSED(r);
}

static void *worker_main(void *arg)
{
	UNUSED(arg);
	pthread_mutex_lock(&pool.mu);
	for (;;) {
		while (!pool.head && !pool.stop)
			pthread_cond_wait(&pool.cv, &pool.mu);
		if (!pool.head && pool.stop)
			break;
		struct work *w = pool.head;
		pool.head = w->next;
		if (!pool.head)
			pool.tail = NULL;
		pthread_mutex_unlock(&pool.mu);
		w->run(w);
		struct loop *l = w->loop;
		w->next = NULL;
		pthread_mutex_lock(&l->done.mu);
		if (l->done.tail)
			l->done.tail->next = w;
		else
			l->done.head = w;
		l->done.tail = w;
		pthread_mutex_unlock(&l->done.mu);
		loop_wake(l);
		pthread_mutex_lock(&pool.mu);
	}
	pthread_mutex_unlock(&pool.mu);
	return NULL;
}

void workers_start(unsigned threads)
{
	pthread_mutex_lock(&pool.mu);
	if (pool.n) {
		pthread_mutex_unlock(&pool.mu);
		return;
	}
	if (!threads) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		threads = n > 0 ? (unsigned)MIN(n * 2, 16) : 4;
	}
	pool.stop = false;
	pool.threads = xcalloc(threads, sizeof(pthread_t));
	for (unsigned i = 0; i < threads; i++) {
		if (pthread_create(&pool.threads[i], NULL, worker_main, NULL) != 0)
			abort();
	}
	pool.n = threads;
	pthread_mutex_unlock(&pool.mu);
}

void workers_stop(void)
{
	pthread_mutex_lock(&pool.mu);
	pool.stop = true;
	unsigned n = pool.n;
	pthread_cond_broadcast(&pool.cv);
	pthread_mutex_unlock(&pool.mu);
	for (unsigned i = 0; i < n; i++)
		pthread_join(pool.threads[i], NULL);
	free(pool.threads);
	pool.threads = NULL;
	pool.n = 0;
}

void loop_post_work(struct loop *l, struct work *w, work_fn run, work_fn done)
{
	if (!pool.n)
		workers_start(0);
	w->run = run;
	w->done = done;
	w->loop = l;
	w->next = NULL;
	l->work_inflight++;
	pthread_mutex_lock(&pool.mu);
	if (pool.tail)
		pool.tail->next = w;
	else
		pool.head = w;
	pool.tail = w;
	pthread_cond_signal(&pool.cv);
	pthread_mutex_unlock(&pool.mu);
}

static void loop_run_done(struct loop *l)
{
	pthread_mutex_lock(&l->done.mu);
	struct work *w = l->done.head;
	l->done.head = l->done.tail = NULL;
	pthread_mutex_unlock(&l->done.mu);
	while (w) {
		struct work *next = w->next;
		l->work_inflight--;
		w->done(w);
		w = next;
	}
}

/* ---- the loop -------------------------------------------------------- */

static void arm_eventfd(struct loop *l)
{
	l->efd_op = op_alloc(l, OP_EVENTFD, l);
	struct io_uring_sqe *sqe = get_sqe(l);
	io_uring_prep_read(sqe, l->efd, &l->efd_val, sizeof(l->efd_val), 0);
	io_uring_sqe_set_data64(sqe, op_udata(l, l->efd_op));
}

static void arm_signalfd(struct loop *l)
{
	l->sig_op = op_alloc(l, OP_SIGNAL, l);
	struct io_uring_sqe *sqe = get_sqe(l);
	io_uring_prep_read(sqe, l->sfd, &l->siginfo, sizeof(l->siginfo), 0);
	io_uring_sqe_set_data64(sqe, op_udata(l, l->sig_op));
}

void loop_block_signals(void)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
}

static void drain_timer_cb(struct timer *t)
{
	struct loop *l = t->arg;
	l->drain_forced = true;
	LOG_WARN("loop", 0, "drain_timeout", "conns=%" PRIu64, l->stats.conns_open);
	while (l->conns)
		conn_finalize(l->conns, CONN_CLOSE_SHUTDOWN);
}

static void loop_begin_stop(struct loop *l)
{
	if (l->stopping)
		return;
	l->stopping = true;
	LOG_INFO("loop", 0, "draining", "conns=%" PRIu64, l->stats.conns_open);
	for (struct listener *ls = l->listeners; ls; ls = ls->next)
		listener_shutdown(ls);
	/* Hold every connection for the walk: a callback may close others. */
	size_t n = 0;
	for (struct conn *c = l->conns; c; c = c->next)
		n++;
	struct conn **all = xcalloc(n ? n : 1, sizeof(*all));
	n = 0;
	for (struct conn *c = l->conns; c; c = c->next) {
		conn_hold(c);
		all[n++] = c;
	}
	for (size_t i = 0; i < n; i++) {
		struct conn *c = all[i];
		if (c->flags & CF_DEAD)
			continue;
		if (c->h && c->h->on_shutdown)
			c->h->on_shutdown(c);
		else
			c->flags |= CF_DRAINING; /* closed at release once idle */
	}
	for (size_t i = 0; i < n; i++)
		conn_release(all[i]);
	free(all);
	timer_start(l, &l->drain_timer, l->cfg.drain_ms);
	if (l->stop_cb)
		l->stop_cb(l->stop_arg);
}

void loop_hold(struct loop *l)
{
	l->holds++;
}

void loop_release(struct loop *l)
{
	if (l->holds)
		l->holds--;
}

void loop_request_stop(struct loop *l)
{
	l->stop_requested = 1;
	loop_wake(l);
}

bool loop_stopping(const struct loop *l) { return l->stopping; }
const struct loop_stats *loop_get_stats(const struct loop *l) { return &l->stats; }
uint64_t loop_now_ms(const struct loop *l) { return l->now_ms; }

void loop_set_hup_cb(struct loop *l, void (*cb)(void *), void *arg)
{
	l->hup_cb = cb;
	l->hup_arg = arg;
}

void loop_set_stop_cb(struct loop *l, void (*cb)(void *), void *arg)
{
	l->stop_cb = cb;
	l->stop_arg = arg;
}

static void handle_cqe(struct loop *l, struct io_uring_cqe *cqe)
{
	uint64_t ud = cqe->user_data;
	uint32_t idx = (uint32_t)ud;
	uint32_t gen = (uint32_t)(ud >> 32);
	if (idx >= l->ops_cap || l->ops[idx].gen != gen || l->ops[idx].kind == OP_FREE) {
		/* Cannot happen: slots live until their final CQE. */
		LOG_ERROR("loop", 0, "stale_completion", "idx=%u gen=%u", idx, gen);
		return;
	}
	struct op *o = &l->ops[idx];
	bool final = !(cqe->flags & IORING_CQE_F_MORE);
	void *owner = o->owner;
	uint8_t kind = o->kind;
	if (!owner) {
		/* Forgotten: recycle any provided buffer the kernel picked. */
		if (kind == OP_RECV && cqe->res > 0 && (cqe->flags & IORING_CQE_F_BUFFER)) {
			unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
			io_uring_buf_ring_add(l->br, l->bufs + (size_t)bid * l->buf_size,
					      l->buf_size, (unsigned short)bid,
					      io_uring_buf_ring_mask(l->buf_count), 0);
			io_uring_buf_ring_advance(l->br, 1);
		} else if (kind == OP_ACCEPT && cqe->res >= 0) {
			close(cqe->res);
		}
		if (final)
			op_release(l, idx);
		return;
	}
	if (final)
		op_release(l, idx);
	switch (kind) {
	case OP_ACCEPT:
		listener_on_accept(owner, cqe);
		break;
	case OP_RECV:
		conn_hold(owner);
		conn_on_recv(owner, cqe);
		conn_release(owner);
		break;
	case OP_SEND:
		conn_hold(owner);
		conn_on_send(owner, cqe->res);
		conn_release(owner);
		break;
	case OP_CONNECT:
		conn_hold(owner);
		conn_on_connect(owner, cqe->res);
		conn_release(owner);
		break;
	case OP_POLL: {
		struct loop_poll *p = owner;
		p->op = OP_NONE;
		uint32_t ev = cqe->res < 0 ? POLLERR : (uint32_t)cqe->res;
		p->events = 0;
		p->cb(p, ev);
		break;
	}
	case OP_EVENTFD:
		loop_run_done(l);
		if (l->stop_requested)
			loop_begin_stop(l);
		arm_eventfd(l);
		break;
	case OP_SIGNAL:
		if (cqe->res == (int)sizeof(l->siginfo)) {
			uint32_t sig = l->siginfo.ssi_signo;
			LOG_INFO("loop", 0, "signal", "signo=%u", sig);
			if (sig == SIGHUP) {
				if (l->hup_cb)
					l->hup_cb(l->hup_arg);
			} else if (++l->signals > 1 && l->stopping) {
				/* A second SIGTERM/SIGINT: stop waiting. */
				timer_start(l, &l->drain_timer, 0);
			} else {
				loop_begin_stop(l);
			}
		}
		arm_signalfd(l);
		break;
	default:
		break;
	}
}

static void flush_dirty(struct loop *l)
{
	while (l->dirty) {
		struct conn *c = l->dirty;
		l->dirty = c->dirty_next;
		c->flags &= ~CF_DIRTY;
		c->dirty_next = NULL;
		conn_hold(c);
		conn_flush(c);
		conn_recv_policy(c);
		conn_release(c);
	}
}

static bool loop_done(struct loop *l)
{
	if (!l->stopping)
		return false;
	/* Work on the pool cannot be cancelled and will post back to this
	 * loop: always wait for it, even after a forced drain. */
	if (l->work_inflight)
		return false;
	if (l->drain_forced)
		return true;
	return !l->conns && !l->holds;
}

/* One turn: flush writes, submit, wait for completions or the next timer
 * (at most max_wait_ms), handle them, run due timers. */
static int loop_iterate(struct loop *l, uint64_t max_wait_ms)
{
	struct __kernel_timespec ts;
	l->stats.iterations++;
	flush_dirty(l);
	l->now_ms = time_mono_ms();
	uint64_t ms = max_wait_ms;
	if (l->heap_len) {
		uint64_t d = l->heap[0]->deadline_ms;
		ms = MIN(ms, d > l->now_ms ? d - l->now_ms : 0);
	}
	struct __kernel_timespec *tsp = NULL;
	if (ms != UINT64_MAX) {
		ts.tv_sec = (long long)(ms / 1000);
		ts.tv_nsec = (long long)(ms % 1000) * 1000000;
		tsp = &ts;
	}
	struct io_uring_cqe *cqe = NULL;
	l->stats.submits++;
	int r = io_uring_submit_and_wait_timeout(&l->ring, &cqe, 1, tsp, NULL);
	if (r < 0 && r != -ETIME && r != -EINTR && r != -EBUSY) {
		LOG_ERROR("loop", 0, "submit_failed", "errno=%d", -r);
		return -1;
	}
	l->now_ms = time_mono_ms();
	unsigned head, n = 0;
	io_uring_for_each_cqe(&l->ring, head, cqe) {
		handle_cqe(l, cqe);
		n++;
	}
	io_uring_cq_advance(&l->ring, n);
	if (l->stop_requested && !l->stopping)
		loop_begin_stop(l);
	timers_run(l);
	return 0;
}

int loop_run(struct loop *l)
{
	while (!loop_done(l)) {
		if (loop_iterate(l, UINT64_MAX) < 0)
			return -1;
	}
	timer_stop(l, &l->drain_timer);
	flush_dirty(l);
	io_uring_submit(&l->ring);
	LOG_INFO("loop", 0, "stopped", "iterations=%" PRIu64, l->stats.iterations);
	return 0;
}

int loop_run_until(struct loop *l, bool (*pred)(void *arg), void *arg, uint32_t max_ms)
{
	uint64_t end = time_mono_ms() + max_ms;
	for (;;) {
		if (pred && pred(arg))
			return 0;
		uint64_t now = time_mono_ms();
		if (now >= end)
			break;
		if (loop_iterate(l, end - now) < 0)
			return -1;
	}
	flush_dirty(l);
	io_uring_submit(&l->ring);
	return pred && pred(arg) ? 0 : -1;
}

struct loop *loop_new(const struct loop_config *cfg, const char **error_r)
{
	struct loop *l = xcalloc(1, sizeof(*l));
	if (cfg)
		l->cfg = *cfg;
	if (!l->cfg.entries)
		l->cfg.entries = 1024;
	if (!l->cfg.buf_count)
		l->cfg.buf_count = 256;
	if (!l->cfg.buf_size)
		l->cfg.buf_size = 16 * 1024;
	if (!l->cfg.drain_ms)
		l->cfg.drain_ms = 30 * 1000;
	if (l->cfg.buf_count & (l->cfg.buf_count - 1) || l->cfg.buf_count > 32768) {
		*error_r = "buf_count must be a power of two <= 32768";
		free(l);
		return NULL;
	}
	l->ops_free = OP_NONE;
	l->efd = l->sfd = -1;
	l->efd_op = l->sig_op = OP_NONE;
	struct io_uring_params p;
	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN |
		  IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_CQSIZE;
	p.cq_entries = l->cfg.entries * 8;
	int r = io_uring_queue_init_params(l->cfg.entries, &l->ring, &p);
	if (r == -EINVAL) {
		/* Older kernel: drop the optional setup flags. */
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_CQSIZE;
		p.cq_entries = l->cfg.entries * 8;
		r = io_uring_queue_init_params(l->cfg.entries, &l->ring, &p);
	}
	if (r < 0) {
		*error_r = "io_uring_queue_init failed (kernel >= 6.0 required)";
		free(l);
		return NULL;
	}
	l->buf_count = l->cfg.buf_count;
	l->buf_size = l->cfg.buf_size;
	l->br_size = l->buf_count * sizeof(struct io_uring_buf);
	l->br = mmap(NULL, l->br_size, PROT_READ | PROT_WRITE,
		     MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (l->br == MAP_FAILED)
		abort();
	struct io_uring_buf_reg reg = {
		.ring_addr = (uint64_t)(uintptr_t)l->br,
		.ring_entries = l->buf_count,
		.bgid = 0,
	};
	r = io_uring_register_buf_ring(&l->ring, &reg, 0);
	if (r < 0) {
		*error_r = "io_uring_register_buf_ring failed (kernel >= 5.19 required)";
		munmap(l->br, l->br_size);
		io_uring_queue_exit(&l->ring);
		free(l);
		return NULL;
	}
	io_uring_buf_ring_init(l->br);
	l->bufs = xmalloc((size_t)l->buf_count * l->buf_size);
	for (unsigned i = 0; i < l->buf_count; i++)
		io_uring_buf_ring_add(l->br, l->bufs + (size_t)i * l->buf_size, l->buf_size,
				      (unsigned short)i, io_uring_buf_ring_mask(l->buf_count),
				      (int)i);
	io_uring_buf_ring_advance(l->br, (int)l->buf_count);
	l->scratch = xmalloc(l->buf_size);
	pthread_mutex_init(&l->done.mu, NULL);
	l->efd = eventfd(0, EFD_CLOEXEC);
	if (l->efd < 0)
		abort();
	arm_eventfd(l);
	if (l->cfg.handle_signals) {
		sigset_t set;
		sigemptyset(&set);
		sigaddset(&set, SIGTERM);
		sigaddset(&set, SIGINT);
		sigaddset(&set, SIGHUP);
		l->sfd = signalfd(-1, &set, SFD_CLOEXEC);
		if (l->sfd >= 0)
			arm_signalfd(l);
	}
	timer_init(&l->drain_timer, drain_timer_cb, l);
	l->now_ms = time_mono_ms();
	return l;
}

void loop_free(struct loop **lp)
{
	struct loop *l = *lp;
	if (!l)
		return;
	*lp = NULL;
	l->freeing = true;
	while (l->conns)
		conn_finalize(l->conns, CONN_CLOSE_SHUTDOWN);
	/* Close SQEs queued by earlier finalizes must still run. */
	io_uring_submit_and_wait_timeout(&l->ring, &(struct io_uring_cqe *){ NULL }, 0,
					 &(struct __kernel_timespec){ 0 }, NULL);
	while (l->listeners) {
		struct listener *ls = l->listeners;
		listener_close(&ls);
	}
	io_uring_queue_exit(&l->ring);
	/* Ops still holding memory the kernel no longer uses. */
	for (uint32_t i = 0; i < l->ops_cap; i++)
		free(l->ops[i].free_ptr);
	free(l->ops);
	free(l->heap);
	munmap(l->br, l->br_size);
	free(l->bufs);
	free(l->scratch);
	if (l->efd >= 0)
		close(l->efd);
	if (l->sfd >= 0)
		close(l->sfd);
	pthread_mutex_destroy(&l->done.mu);
	free(l);
}
