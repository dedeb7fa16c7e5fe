/* The event loop: one io_uring ring per thread.
 *
 * Every daemon runs one `struct loop` per thread. Connections, timers, fd
 * polls (for hiredis) and work posted to the worker pool all complete on the
 * ring of the loop that started them. Protocol code sees a `struct conn` and
 * a small `struct conn_handler` ops table; only common/ touches io_uring,
 * sockets and BoringSSL.
 *
 * Safety of completions: every submitted operation takes a slot in the
 * loop's op table and the SQE's user_data carries (slot, generation). When a
 * connection is freed while operations are in flight, their slots are
 * "forgotten" (the owner pointer is cleared, a cancel is submitted and any
 * buffer the kernel may still read is handed to the slot), so a late
 * completion can never reach a connection that reused the memory or fd.
 *
 * Threading: a loop and everything on it is used only from its own thread.
 * The only thread-safe calls are loop_request_stop(), loop_wake() and the
 * worker pool's completion path. */
#ifndef COMMON_LOOP_H
#define COMMON_LOOP_H

#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "common/base.h"

struct loop;
struct conn;
struct listener;
typedef struct ssl_st SSL;
struct tls_server;

/* ---- timers ---------------------------------------------------------- */

struct timer;
typedef void (*timer_cb)(struct timer *t);

struct timer {
	uint64_t deadline_ms; /* monotonic */
	uint32_t heap_idx;    /* UINT32_MAX when not armed */
	uint64_t armed_gen;   /* internal */
	timer_cb cb;
	void *arg;
};

void timer_init(struct timer *t, timer_cb cb, void *arg);
/* (Re)arm to fire once after `ms`. */
void timer_start(struct loop *l, struct timer *t, uint64_t ms);
void timer_stop(struct loop *l, struct timer *t);
static inline bool timer_armed(const struct timer *t)
{
	return t->heap_idx != UINT32_MAX;
}

/* ---- connections ----------------------------------------------------- */

enum conn_close_reason {
	CONN_CLOSE_LOCAL = 0,    /* conn_close()/conn_abort() by the protocol */
	CONN_CLOSE_PEER,         /* orderly EOF from the peer */
	CONN_CLOSE_ERROR,        /* socket error */
	CONN_CLOSE_TIMEOUT,      /* idle / handshake / write timeout */
	CONN_CLOSE_TLS,          /* TLS handshake or record error */
	CONN_CLOSE_OVERFLOW,     /* peer exceeded an input or output bound */
	CONN_CLOSE_SHUTDOWN,     /* loop drained and forced the close */
	CONN_CLOSE_CONNECT,      /* outgoing connect failed */
	CONN_CLOSE_COMPRESS,     /* corrupt compressed input (COMPRESS=DEFLATE) */
};
const char *conn_close_reason_str(enum conn_close_reason r);

struct conn_handler {
	const char *name; /* component name in logs: "smtp", "rpc", ... */
	/* Plaintext bytes arrived. Return how many were consumed (0..len);
	 * unconsumed bytes are kept and presented again, followed by new data.
	 * The loop calls again while progress is made. Return -1 to abort the
	 * connection (after the handler has written any error reply and called
	 * conn_close() if it wants a graceful close). */
	ssize_t (*on_data)(struct conn *c, const uint8_t *data, size_t len);
	/* Optional: everything written so far has been sent. */
	void (*on_drain)(struct conn *c);
	/* Optional: outgoing connect finished; status 0 or -errno. On failure
	 * on_close follows with CONN_CLOSE_CONNECT. */
	void (*on_connect)(struct conn *c, int status);
	/* Optional: TLS handshake completed (implicit TLS, STARTTLS, client). */
	void (*on_tls_ready)(struct conn *c);
	/* Optional: the loop is draining (SIGTERM). Default: close as soon as
	 * the connection is idle (nothing buffered, not paused, flushed). */
	void (*on_shutdown)(struct conn *c);
	/* Always called once, right before the conn is freed. */
	void (*on_close)(struct conn *c, enum conn_close_reason why);
};

struct conn_limits {
	size_t in_max;        /* max unconsumed input kept (default 64 KiB) */
	size_t out_high;      /* stop reading above this much output (256 KiB) */
	size_t out_max;       /* hard cap on buffered output (4 MiB) */
	uint32_t idle_ms;     /* no input for this long -> close (300 s) */
	uint32_t write_ms;    /* output pending without progress (60 s) */
	uint32_t handshake_ms;/* TLS handshake must finish in (15 s) */
};

/* Write plaintext (encrypted when TLS is on). Coalesced; flushed before the
 * loop's next submit. Returns 0, or -1 if out_max would be exceeded (the
 * connection is then closed with CONN_CLOSE_OVERFLOW). */
int conn_write(struct conn *c, const void *p, size_t len);
int conn_printf(struct conn *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Graceful close: stop reading, flush output (and TLS close_notify), close.
 * After the peer's EOF (or close_notify) the loop does this by itself once
 * the protocol has processed and answered what was received. */
void conn_close(struct conn *c);
/* Immediate close; on_close runs before this returns. */
void conn_abort(struct conn *c, enum conn_close_reason why);

/* Stop delivering input (e.g. while waiting for an RPC reply); input that
 * arrives meanwhile is kept: reading stops once in_max is buffered (a
 * little more may already be in flight, at most two provided-buffer rings
 * per loop); under compression, once in_max of plaintext and in_max of
 * compressed input are. */
void conn_pause(struct conn *c);
void conn_resume(struct conn *c);

/* Upgrade to TLS as server (STARTTLS/STLS) or as client. Write the
 * plaintext reply ("220 Ready to start TLS") before calling: anything
 * written after goes out encrypted. Called from on_data, the rest of the
 * input being delivered and everything buffered are discarded (pipelined
 * data after STARTTLS is a protocol error and must not be interpreted);
 * called later, only what is buffered. Returns 0 or -1. */
int conn_starttls_server(struct conn *c, struct tls_server *ts);
int conn_starttls_client(struct conn *c, SSL *ssl);

/* Compress the connection both ways with raw DEFLATE (RFC 1951; IMAP
 * COMPRESS=DEFLATE, RFC 4978), inside TLS when TLS is on. Write the
 * uncompressed reply ("tag OK") before calling: from the next byte on,
 * conn_write output is deflated and sync-flushed where the loop flushes
 * writes, so each turn's replies reach the peer whole. Every byte received
 * after the command is inflated before on_data sees it: the rest of the
 * input being delivered when called from on_data, and anything buffered
 * (RFC 4978 lets the client send nothing more before it has seen the OK,
 * so whatever follows the command is already compressed). Plaintext is
 * inflated in steps, only as far as in_max, as the protocol consumes it,
 * so a deflate bomb cannot make the connection hold more than in_max of
 * plaintext plus in_max of compressed input (and the read-ahead that
 * conn_pause describes, compressed). A corrupt stream (or data
 * after the peer ended it) is logged, counted (compress_errors) and closes
 * the connection gracefully with CONN_CLOSE_COMPRESS. Cannot be undone,
 * and STARTTLS is refused afterwards. Returns 0, or -1 if already active,
 * closing, or a TLS handshake is still running. Costs about 80 KiB per
 * connection while active (conn_compress_memory), nothing before. */
int conn_compress_start(struct conn *c);
bool conn_compress_active(const struct conn *c);
/* Bytes held by the compression state now (0 when off). */
size_t conn_compress_memory(const struct conn *c);

void conn_set_handler(struct conn *c, const struct conn_handler *h, void *user);
void conn_set_limits(struct conn *c, const struct conn_limits *lim);
/* Reset the idle timer to a new value (ms, 0 = none). */
void conn_set_idle_timeout(struct conn *c, uint32_t ms);
void *conn_user(const struct conn *c);
uint64_t conn_id(const struct conn *c);
struct loop *conn_loop(const struct conn *c);
int conn_fd(const struct conn *c);
SSL *conn_ssl(const struct conn *c); /* NULL when not TLS */
bool conn_tls_active(const struct conn *c);
const struct sockaddr *conn_peer(const struct conn *c);
/* Printable peer address "1.2.3.4:5678" in a caller buffer (>= 64). */
const char *conn_peer_str(const struct conn *c, char *out, size_t out_len);
size_t conn_out_pending(const struct conn *c);
/* conn_close or a teardown has begun: write nothing more. */
bool conn_closing(const struct conn *c);
/* sizeof(struct conn): an idle connection's fixed cost in the loop (the
 * protocol's own state and BoringSSL's come on top). Checked in a test. */
size_t conn_struct_size(void);

/* Outgoing TCP connection. on_connect reports the result. */
struct conn *conn_connect(struct loop *l, const struct sockaddr *sa,
			  socklen_t sa_len, const struct conn_handler *h,
			  void *user);
/* The same from a given local address (port 0 in src: chosen at connect
 * time), e.g. to spread many connections over 127.0.0.x sources. NULL if
 * the socket cannot be made or bound. */
struct conn *conn_connect_from(struct loop *l, const struct sockaddr *sa,
			       socklen_t sa_len, const struct sockaddr *src,
			       socklen_t src_len, const struct conn_handler *h,
			       void *user);

/* ---- listeners ------------------------------------------------------- */

/* Called for every accepted connection: set the handler (conn_set_handler)
 * and optionally write a greeting. With implicit TLS the greeting is held
 * until the handshake completes. */
typedef void (*listener_accept_cb)(struct conn *c, void *arg);

struct listener_config {
	const char *addr;            /* "127.0.0.1:25", "[::1]:993", "*:25" */
	struct tls_server *tls;      /* implicit TLS when non-NULL */
	listener_accept_cb on_accept;
	void *arg;
	const struct conn_limits *limits; /* NULL = defaults */
	int backlog;                 /* default 1024 */
};

/* Bind (SO_REUSEPORT, so each loop thread can bind the same address) and
 * start multishot accept. Returns NULL with error_r on failure. */
struct listener *listener_open(struct loop *l, const struct listener_config *cfg,
			       const char **error_r);
/* Port actually bound (useful with port 0). */
uint16_t listener_port(const struct listener *ls);
void listener_close(struct listener **ls);

/* ---- fd polls (hiredis adapter) -------------------------------------- */

struct loop_poll;
typedef void (*loop_poll_cb)(struct loop_poll *p, uint32_t revents);
struct loop_poll {
	int fd;
	uint32_t events;   /* POLLIN | POLLOUT wanted */
	uint32_t op;       /* internal */
	loop_poll_cb cb;
	void *arg;
};
void loop_poll_init(struct loop_poll *p, int fd, loop_poll_cb cb, void *arg);
/* Set the wanted events (0 = none) and (re)arm a one-shot poll. The
 * callback runs once per readiness; call loop_poll_set again to re-arm. */
void loop_poll_set(struct loop *l, struct loop_poll *p, uint32_t events);
/* Stop; safe to free p right after. */
void loop_poll_stop(struct loop *l, struct loop_poll *p);

/* ---- worker pool ----------------------------------------------------- */

/* Blocking work (disk, fsync, RocksDB, password hashing) runs on a small
 * shared pool of threads; `done` then runs on the loop that posted it. */
struct work;
typedef void (*work_fn)(struct work *w);
struct work {
	work_fn run;  /* on a worker thread */
	work_fn done; /* on the posting loop's thread */
	struct loop *loop;
	struct work *next;
};
/* Start the pool (idempotent); threads = 0 picks a default. */
void workers_start(unsigned threads);
void workers_stop(void);
void loop_post_work(struct loop *l, struct work *w, work_fn run, work_fn done);

/* ---- the loop -------------------------------------------------------- */

struct loop_config {
	unsigned entries;    /* SQ size, default 1024 */
	unsigned buf_count;  /* provided recv buffers, power of 2 (default 256) */
	unsigned buf_size;   /* bytes each (default 16 KiB) */
	uint32_t drain_ms;   /* SIGTERM drain limit before forced close (30 s) */
	bool handle_signals; /* this loop owns SIGTERM/SIGINT/SIGHUP */
};

struct loop_stats {
	uint64_t iterations;
	uint64_t submits;        /* io_uring_enter calls */
	uint64_t accepted;
	uint64_t conns_open;
	uint64_t bytes_in;
	uint64_t bytes_out;
	uint64_t tls_handshakes;
	uint64_t tls_failures;
	uint64_t errors;
	uint64_t timeouts;
	/* COMPRESS=DEFLATE */
	uint64_t compress_started;
	uint64_t compress_active;     /* connections compressing now */
	uint64_t compress_errors;     /* corrupt compressed input */
	uint64_t compress_in_wire;    /* compressed bytes received */
	uint64_t compress_in_plain;   /* ... and what they inflated to */
	uint64_t compress_out_plain;  /* plaintext written */
	uint64_t compress_out_wire;   /* ... and what it deflated to */
};

struct loop *loop_new(const struct loop_config *cfg, const char **error_r);
void loop_free(struct loop **l);
/* Run until stopped and drained. Returns 0. A loop runs to a stop once:
 * the drain closes its listeners. */
int loop_run(struct loop *l);
/* Run until pred(arg) is true (checked before every turn) or max_ms pass,
 * without draining: for tests and for client tools that wait for a reply.
 * Returns 0 if pred became true, -1 otherwise. */
int loop_run_until(struct loop *l, bool (*pred)(void *arg), void *arg, uint32_t max_ms);
/* Begin graceful drain (thread-safe): stop accepting, let connections
 * finish, exit loop_run once nothing is in flight or drain_ms passed. */
void loop_request_stop(struct loop *l);
bool loop_stopping(const struct loop *l);
/* Keep a draining loop running until the matching release (e.g. a last
 * Redis command during shutdown); the drain timeout still applies. */
void loop_hold(struct loop *l);
void loop_release(struct loop *l);
/* Called on SIGHUP (only for a loop with handle_signals). */
void loop_set_hup_cb(struct loop *l, void (*cb)(void *arg), void *arg);
/* Called on this loop's thread when its drain begins (SIGTERM on the
 * signal-owning loop, or loop_request_stop). */
void loop_set_stop_cb(struct loop *l, void (*cb)(void *arg), void *arg);
const struct loop_stats *loop_get_stats(const struct loop *l);
uint64_t loop_now_ms(const struct loop *l);
/* Block SIGTERM/SIGINT/SIGHUP/SIGPIPE in the calling thread; call in main()
 * before creating threads so the signal-owning loop receives them. */
void loop_block_signals(void);

#endif
