/* COMPRESS=DEFLATE in the loop (conn_compress_start) over real loopback
 * sockets. The server is a line echo on the loop that starts compression
 * mid-stream on a command; the client is a plain socket driving zlib by
 * hand (raw deflate, wbits -15, as an IMAP client would), or, for TLS, a
 * loop connection that compresses too. Covers small and large echoes with
 * a prompt flush of every reply, bytes pipelined after the command (in
 * place, from the buffered tail, and when compression starts later from a
 * timer), a reply written right before conn_close, a drain that closes an
 * idle compressing connection at once, a corrupt stream and data after
 * the end of the stream, and deflate bombs: a paused protocol,
 * an over-long line and a swallowing protocol, with the process's peak
 * RSS checked each time. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include "common/log.h"
#include "common/loop.h"
#include "common/tls.h"
#include "tests/unit/check.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(UNDER_ASAN)
#define UNDER_ASAN 1
#endif
#ifdef UNDER_ASAN
/* Freed blocks wait in ASan's quarantine (256 MB by default) and would
 * count as resident: keep it small so the RSS checks measure the loop. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
	return "quarantine_size_mb=4";
}
#endif

static struct loop *L;

/* ---- the server: a line echo that can start compressing ---- */

enum srv_mode { SRV_ECHO, SRV_SWALLOW };

static struct conn *srv_conn;
static enum srv_mode srv_mode;
static int srv_closes;
static enum conn_close_reason srv_reason;
static uint64_t srv_swallowed;
static size_t srv_zmem_peak;
static long rss_peak_kb;
static unsigned samples;
static struct timer later_t, sample_t;

static long rss_kb(void)
{
	long pages = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");
	if (f) {
		if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
			resident = 0;
		fclose(f);
	}
	return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* Peak of the compression state and of the process's resident memory,
 * sampled from on_data and from a 2 ms timer during the bomb tests. */
static void srv_sample(void)
{
	if (srv_conn && conn_compress_memory(srv_conn) > srv_zmem_peak)
		srv_zmem_peak = conn_compress_memory(srv_conn);
	if (samples++ % 16 == 0) {
		long r = rss_kb();
		if (r > rss_peak_kb)
			rss_peak_kb = r;
	}
}

/* Starts RSS sampling; returns the baseline. */
static long rss_begin(void)
{
	long r = rss_kb();
	rss_peak_kb = r;
	timer_start(L, &sample_t, 2);
	return r;
}

static long rss_end(long base)
{
	timer_stop(L, &sample_t);
	long r = rss_kb();
	if (r > rss_peak_kb)
		rss_peak_kb = r;
	return rss_peak_kb - base;
}

/* Let the server see a close. */
static void settle(uint32_t ms)
{
	loop_run_until(L, NULL, NULL, ms);
}

static bool line_is(const uint8_t *d, size_t len, const char *s)
{
	return len == strlen(s) && memcmp(d, s, len) == 0;
}

static void start_compress(struct conn *c)
{
	conn_write(c, "OK\r\n", 4);
	CHECK(conn_compress_start(c) == 0);
	CHECK(conn_compress_active(c));
}

static ssize_t srv_on_data(struct conn *c, const uint8_t *d, size_t n)
{
	srv_sample();
	if (srv_mode == SRV_SWALLOW) {
		srv_swallowed += n;
		return (ssize_t)n;
	}
	const uint8_t *nl = memchr(d, '\n', n);
	if (!nl)
		return 0;
	size_t len = (size_t)(nl - d) + 1;
	if (line_is(d, len, "COMPRESS\r\n")) {
		if (conn_compress_active(c)) {
			CHECK(conn_compress_start(c) == -1);
			conn_write(c, "NO\r\n", 4);
		} else {
			start_compress(c);
		}
	} else if (line_is(d, len, "LATER\r\n")) {
		/* Compression starts from a timer, outside on_data, with the
		 * pipelined bytes waiting in the buffer. */
		conn_pause(c);
		timer_start(L, &later_t, 20);
	} else if (line_is(d, len, "PAUSE\r\n")) {
		start_compress(c);
		conn_pause(c);
	} else if (line_is(d, len, "SWALLOW\r\n")) {
		start_compress(c);
		srv_mode = SRV_SWALLOW;
	} else if (line_is(d, len, "QUIT\r\n")) {
		conn_write(c, "BYE\r\n", 5);
		conn_close(c);
	} else if (conn_write(c, d, len) < 0) {
		return -1;
	}
	return (ssize_t)len;
}

static void srv_on_close(struct conn *c, enum conn_close_reason why)
{
	if (c == srv_conn)
		srv_conn = NULL;
	srv_reason = why;
	srv_closes++;
}

static const struct conn_handler srv_h = {
	.name = "zecho", .on_data = srv_on_data, .on_close = srv_on_close,
};

static void srv_accept(struct conn *c, void *arg)
{
	UNUSED(arg);
	srv_conn = c;
	conn_set_handler(c, &srv_h, NULL);
}

static void later_cb(struct timer *t)
{
	UNUSED(t);
	if (!srv_conn)
		return;
	start_compress(srv_conn);
	conn_resume(srv_conn);
}

static void sample_cb(struct timer *t)
{
	srv_sample();
	timer_start(L, t, 2);
}

static void srv_reset(void)
{
	srv_conn = NULL;
	srv_mode = SRV_ECHO;
	srv_closes = 0;
	srv_reason = CONN_CLOSE_LOCAL;
	srv_swallowed = 0;
	srv_zmem_peak = 0;
}

/* ---- the raw client: a socket and zlib ---- */

struct rawcl {
	int fd;
	z_stream def, inf;
	bool z_out;     /* compressing what it sends */
	bool z_in;      /* the server's OK was seen: inflating */
	bool await_ok;  /* switch z_in on at the line "OK\r\n" */
	bool closed;    /* EOF or reset from the server */
	bool inflate_err;
	struct buf outq;
	size_t outq_off;
	struct buf rx;  /* plaintext received */
	size_t line_start;
};

static void rawcl_open(struct rawcl *cl, uint16_t port)
{
	memset(cl, 0, sizeof(*cl));
	cl->fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(cl->fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		perror("connect");
		exit(1);
	}
	fcntl(cl->fd, F_SETFL, fcntl(cl->fd, F_GETFL) | O_NONBLOCK);
	buf_init(&cl->outq, 0);
	buf_init(&cl->rx, 0);
	if (deflateInit2(&cl->def, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK ||
	    inflateInit2(&cl->inf, -15) != Z_OK)
		abort();
}

static void rawcl_close(struct rawcl *cl)
{
	close(cl->fd);
	deflateEnd(&cl->def);
	inflateEnd(&cl->inf);
	buf_cleanup(&cl->outq);
	buf_cleanup(&cl->rx);
}

static void rawcl_plain(struct rawcl *cl, const void *p, size_t len)
{
	buf_append(&cl->outq, p, len);
}

/* Compress into the send queue; flush is Z_NO_FLUSH, Z_SYNC_FLUSH or
 * Z_FINISH. */
static void rawcl_z(struct rawcl *cl, const void *p, size_t len, int flush)
{
	cl->def.next_in = (Bytef *)(uintptr_t)p;
	cl->def.avail_in = (uInt)len;
	do {
		uint8_t *dst = buf_reserve(&cl->outq, 65536);
		cl->def.next_out = dst;
		cl->def.avail_out = 65536;
		int r = deflate(&cl->def, flush);
		CHECK(r == Z_OK || r == Z_BUF_ERROR || r == Z_STREAM_END);
		buf_commit(&cl->outq, 65536 - cl->def.avail_out);
	} while (cl->def.avail_in > 0 || cl->def.avail_out == 0);
}

static void rawcl_inflate(struct rawcl *cl, const uint8_t *p, size_t len)
{
	if (cl->inflate_err)
		return;
	cl->inf.next_in = (Bytef *)(uintptr_t)p;
	cl->inf.avail_in = (uInt)len;
	do {
		uint8_t *dst = buf_reserve(&cl->rx, 65536);
		cl->inf.next_out = dst;
		cl->inf.avail_out = 65536;
		int r = inflate(&cl->inf, Z_SYNC_FLUSH);
		buf_commit(&cl->rx, 65536 - cl->inf.avail_out);
		if (r != Z_OK && r != Z_BUF_ERROR) {
			fprintf(stderr, "client inflate: %d\n", r);
			cl->inflate_err = true;
			return;
		}
	} while (cl->inf.avail_in > 0 || cl->inf.avail_out == 0);
}

static void rawcl_received(struct rawcl *cl, const uint8_t *p, size_t len)
{
	while (len > 0 && !cl->z_in) {
		const uint8_t *nl = memchr(p, '\n', len);
		size_t n = nl ? (size_t)(nl - p) + 1 : len;
		buf_append(&cl->rx, p, n);
		p += n;
		len -= n;
		if (!nl)
			return;
		if (cl->await_ok && cl->rx.len - cl->line_start == 4 &&
		    memcmp(cl->rx.data + cl->line_start, "OK\r\n", 4) == 0) {
			cl->await_ok = false;
			cl->z_in = true;
		}
		cl->line_start = cl->rx.len;
	}
	if (len)
		rawcl_inflate(cl, p, len);
}

/* Nonblocking send of the queue and receive of what is there. */
static void rawcl_pump(struct rawcl *cl)
{
	while (cl->outq_off < cl->outq.len) {
		ssize_t n = send(cl->fd, cl->outq.data + cl->outq_off, cl->outq.len - cl->outq_off,
				 MSG_NOSIGNAL);
		if (n <= 0)
			break;
		cl->outq_off += (size_t)n;
	}
	if (cl->outq_off == cl->outq.len) {
		cl->outq.len = cl->outq_off = 0;
	} else if (cl->outq_off > (1u << 20)) {
		buf_consume(&cl->outq, cl->outq_off);
		cl->outq_off = 0;
	}
	uint8_t tmp[65536];
	while (!cl->closed) {
		ssize_t n = recv(cl->fd, tmp, sizeof(tmp), 0);
		if (n > 0) {
			rawcl_received(cl, tmp, (size_t)n);
		} else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
			cl->closed = true;
		} else {
			break;
		}
	}
}

struct waiter {
	struct rawcl *cl;
	size_t rx_len;   /* wait for this much plaintext */
	bool closed;     /* or for the close */
	bool sent;       /* or until the queue is sent */
};

static bool waiter_done(void *arg)
{
	struct waiter *w = arg;
	rawcl_pump(w->cl);
	if (w->closed)
		return w->cl->closed;
	if (w->sent)
		return w->cl->outq.len == 0 || w->cl->closed;
	return w->cl->rx.len >= w->rx_len || w->cl->closed;
}

static bool wait_rx(struct rawcl *cl, size_t len, uint32_t ms)
{
	struct waiter w = { .cl = cl, .rx_len = len };
	return loop_run_until(L, waiter_done, &w, ms) == 0 && cl->rx.len >= len;
}

static bool wait_closed(struct rawcl *cl, uint32_t ms)
{
	struct waiter w = { .cl = cl, .closed = true };
	return loop_run_until(L, waiter_done, &w, ms) == 0;
}

/* After the loop stopped: what the server sent is in the socket. */
static bool wait_closed_plain(struct rawcl *cl)
{
	uint64_t t0 = time_mono_ms();
	while (!cl->closed && time_mono_ms() - t0 < 2000) {
		rawcl_pump(cl);
		usleep(1000);
	}
	return cl->closed;
}

static bool rx_is(struct rawcl *cl, size_t from, const char *s)
{
	size_t n = strlen(s);
	return cl->rx.len == from + n && memcmp(cl->rx.data + from, s, n) == 0;
}

/* COMPRESS as an IMAP client does it: command, wait for the OK, then
 * compress both ways. */
static void rawcl_compress(struct rawcl *cl)
{
	rawcl_plain(cl, "COMPRESS\r\n", 10);
	cl->await_ok = true;
	size_t at = cl->rx.len;
	CHECK(wait_rx(cl, at + 4, 2000));
	CHECK(rx_is(cl, at, "OK\r\n"));
	CHECK(cl->z_in);
	cl->z_out = true;
}

static struct listener *listen_plain(void)
{
	const char *err = NULL;
	struct listener_config lc = { .addr = "127.0.0.1:0", .on_accept = srv_accept };
	struct listener *ls = listener_open(L, &lc, &err);
	if (!ls) {
		fprintf(stderr, "listen: %s\n", err);
		exit(1);
	}
	return ls;
}

/* ---- small messages, prompt flush, second COMPRESS, close ---- */

static void test_small(uint16_t port)
{
	srv_reset();
	struct rawcl cl;
	rawcl_open(&cl, port);
	/* Plain echo first. */
	rawcl_plain(&cl, "plain\r\n", 7);
	CHECK(wait_rx(&cl, 7, 2000) && rx_is(&cl, 0, "plain\r\n"));
	uint64_t started = loop_get_stats(L)->compress_started;
	rawcl_compress(&cl);
	CHECK(loop_get_stats(L)->compress_started == started + 1);
	CHECK(loop_get_stats(L)->compress_active == 1);
	/* Each reply reaches the client with no further input from it:
	 * the loop flushes the deflater when it flushes writes. */
	char line[64];
	for (int i = 0; i < 50; i++) {
		int n = snprintf(line, sizeof(line), "line %d of the small test\r\n", i);
		size_t at = cl.rx.len;
		rawcl_z(&cl, line, (size_t)n, Z_SYNC_FLUSH);
		CHECK(wait_rx(&cl, at + (size_t)n, 2000));
		CHECK(rx_is(&cl, at, line));
	}
	/* What an active, idle compressing connection costs (both zlib
	 * states and windows; no queued input). */
	CHECK(srv_conn != NULL);
	if (srv_conn) {
		size_t mem = conn_compress_memory(srv_conn);
		fprintf(stderr, "compression state of an idle connection: %zu bytes\n", mem);
		CHECK(mem > 0 && mem < 128 * 1024);
	}
	/* Several lines in one compressed block, and a line split over
	 * two flushes. */
	size_t at = cl.rx.len;
	rawcl_z(&cl, "a\r\nbb\r\nccc\r\nhalf", 16, Z_SYNC_FLUSH);
	rawcl_pump(&cl);
	rawcl_z(&cl, " and half\r\n", 11, Z_SYNC_FLUSH);
	CHECK(wait_rx(&cl, at + 27, 2000));
	CHECK(rx_is(&cl, at, "a\r\nbb\r\nccc\r\nhalf and half\r\n"));
	/* A second COMPRESS is refused (and arrives compressed). */
	at = cl.rx.len;
	rawcl_z(&cl, "COMPRESS\r\n", 10, Z_SYNC_FLUSH);
	CHECK(wait_rx(&cl, at + 4, 2000) && rx_is(&cl, at, "NO\r\n"));
	/* A reply written right before conn_close still goes out. */
	at = cl.rx.len;
	rawcl_z(&cl, "QUIT\r\n", 6, Z_SYNC_FLUSH);
	CHECK(wait_closed(&cl, 2000));
	CHECK(rx_is(&cl, at, "BYE\r\n"));
	CHECK(!cl.inflate_err);
	CHECK(srv_closes == 1 && srv_reason == CONN_CLOSE_LOCAL);
	CHECK(loop_get_stats(L)->compress_active == 0);
	rawcl_close(&cl);
}

/* ---- large echoes ---- */

static uint8_t big_byte(size_t i)
{
	if (i % 97 == 96)
		return '\n';
	/* Text-like and random-like stretches: both compressible and not. */
	if ((i / 50000) % 2)
		return (uint8_t)('a' + ((i * 2654435761u) >> 7) % 26);
	return (uint8_t)("the quick brown fox jumps over the lazy dog "[i % 44]);
}

static void test_big(uint16_t port)
{
	srv_reset();
	struct rawcl cl;
	rawcl_open(&cl, port);
	rawcl_compress(&cl);
	const size_t total = 8u << 20;
	uint8_t *src = xmalloc(total);
	for (size_t i = 0; i < total; i++)
		src[i] = big_byte(i);
	src[total - 1] = '\n';
	/* A 60000-byte line too: close to in_max, inflated in steps. */
	memset(src + 1000000, 'x', 60000);
	size_t base = cl.rx.len, sent = 0;
	uint64_t t0 = time_mono_ms();
	while (sent < total && time_mono_ms() - t0 < 60000) {
		/* At most 1 MB ahead of the echo. */
		size_t got = cl.rx.len - base;
		if (sent - got < (1u << 20) && cl.outq.len == 0) {
			size_t n = MIN(total - sent, (size_t)65536);
			rawcl_z(&cl, src + sent, n, Z_SYNC_FLUSH);
			sent += n;
		}
		wait_rx(&cl, base + MIN(sent, got + 65536), 50);
		if (cl.closed)
			break;
	}
	CHECK(sent == total);
	CHECK(wait_rx(&cl, base + total, 30000));
	CHECK(cl.rx.len == base + total);
	CHECK(memcmp(cl.rx.data + base, src, MIN(total, cl.rx.len - base)) == 0);
	CHECK(!cl.inflate_err && !cl.closed);
	const struct loop_stats *st = loop_get_stats(L);
	fprintf(stderr, "big: in %" PRIu64 " -> %" PRIu64 ", out %" PRIu64 " -> %" PRIu64 "\n",
		st->compress_in_wire, st->compress_in_plain, st->compress_out_plain,
		st->compress_out_wire);
	CHECK(st->compress_out_wire < st->compress_out_plain);
	free(src);
	rawcl_close(&cl);
	settle(200);
}

/* ---- bytes pipelined after the command ---- */

static void test_pipelined(uint16_t port, int variant)
{
	srv_reset();
	struct rawcl cl;
	rawcl_open(&cl, port);
	const char *cmd = variant == 2 ? "LATER\r\n" : "COMPRESS\r\n";
	if (variant == 1) {
		/* The command's start waits in the server's buffer, so the
		 * rest arrives behind it: delivered from the saved tail. */
		rawcl_plain(&cl, "COMP", 4);
		struct waiter w = { .cl = &cl, .sent = true };
		loop_run_until(L, waiter_done, &w, 1000);
		loop_run_until(L, NULL, NULL, 50);
		rawcl_plain(&cl, "RESS\r\n", 6);
	} else {
		rawcl_plain(&cl, cmd, strlen(cmd));
	}
	/* Compressed commands right behind it, in the same write. */
	cl.await_ok = true;
	cl.z_out = true;
	rawcl_z(&cl, "ping\r\n", 6, Z_SYNC_FLUSH);
	rawcl_z(&cl, "pong\r\n", 6, Z_SYNC_FLUSH);
	CHECK(wait_rx(&cl, 16, 2000));
	CHECK(rx_is(&cl, 0, "OK\r\nping\r\npong\r\n"));
	size_t at = cl.rx.len;
	rawcl_z(&cl, "again\r\n", 7, Z_SYNC_FLUSH);
	CHECK(wait_rx(&cl, at + 7, 2000) && rx_is(&cl, at, "again\r\n"));
	CHECK(!cl.inflate_err && !cl.closed);
	rawcl_close(&cl);
	settle(100);
}

/* ---- corrupt input ---- */

static void test_corrupt(uint16_t port, bool after_end)
{
	srv_reset();
	struct rawcl cl;
	rawcl_open(&cl, port);
	rawcl_compress(&cl);
	uint64_t errors = loop_get_stats(L)->compress_errors;
	size_t at = cl.rx.len;
	if (after_end) {
		/* The client ends its stream, then goes on sending. */
		rawcl_z(&cl, "last\r\n", 6, Z_FINISH);
		rawcl_plain(&cl, "\x4b\x04\x00", 3);
	} else {
		/* A good line, then garbage in the same write: the echo
		 * of the good line still arrives before the close. */
		rawcl_z(&cl, "last\r\n", 6, Z_SYNC_FLUSH);
		uint8_t junk[256];
		memset(junk, 0xff, sizeof(junk));
		rawcl_plain(&cl, junk, sizeof(junk));
	}
	CHECK(wait_closed(&cl, 2000));
	CHECK(rx_is(&cl, at, "last\r\n"));
	CHECK(srv_closes == 1 && srv_reason == CONN_CLOSE_COMPRESS);
	CHECK(loop_get_stats(L)->compress_errors == errors + 1);
	rawcl_close(&cl);
}

/* ---- deflate bombs ---- */

/* Appends `mb` MiB of 'a' (or zeros) to the queue compressed. Once the
 * deflater's window is all one byte, each MiB compresses to the same
 * bytes: those are repeated instead of compressing again. */
static void rawcl_bomb(struct rawcl *cl, unsigned mb, uint8_t byte)
{
	static uint8_t mib[1 << 20];
	memset(mib, byte, sizeof(mib));
	struct buf prev, cur;
	buf_init(&prev, 0);
	buf_init(&cur, 0);
	unsigned i = 0;
	for (; i < mb; i++) {
		size_t at = cl->outq.len;
		rawcl_z(cl, mib, sizeof(mib), Z_SYNC_FLUSH);
		buf_reset(&cur);
		buf_append(&cur, cl->outq.data + at, cl->outq.len - at);
		if (prev.len && prev.len == cur.len && memcmp(prev.data, cur.data, cur.len) == 0) {
			i++;
			break;
		}
		buf_reset(&prev);
		buf_append(&prev, cur.data, cur.len);
	}
	for (; i < mb; i++)
		buf_append(&cl->outq, cur.data, cur.len);
	buf_cleanup(&prev);
	buf_cleanup(&cur);
}

/* The protocol stops reading right after COMPRESS; the client pours a
 * bomb in until the server stops taking it. */
static void test_bomb_paused(uint16_t port)
{
	srv_reset();
	struct rawcl cl;
	rawcl_open(&cl, port);
	rawcl_plain(&cl, "PAUSE\r\n", 7);
	cl.await_ok = true;
	CHECK(wait_rx(&cl, 4, 2000));
	cl.z_out = true;
	/* Up to 64 GiB of plaintext, more than the socket buffers of both
	 * ends can hold compressed: the queue is topped up with the
	 * repeating MiB. */
	rawcl_bomb(&cl, 4, 'a');
	size_t at = cl.outq.len;
	rawcl_bomb(&cl, 1, 'a');
	struct buf mib_z;
	buf_init(&mib_z, 0);
	buf_append(&mib_z, cl.outq.data + at, cl.outq.len - at);
	size_t queued = cl.outq.len, budget = 64u << 10;
	long rss0 = rss_begin();
	size_t last = SIZE_MAX;
	uint64_t still_since = time_mono_ms();
	while (time_mono_ms() - still_since < 300 && (cl.outq.len > 0 || budget > 0)) {
		while (cl.outq.len < (1u << 20) && budget > 0) {
			buf_append(&cl.outq, mib_z.data, mib_z.len);
			queued += mib_z.len;
			budget--;
		}
		struct waiter w = { .cl = &cl, .sent = true };
		loop_run_until(L, waiter_done, &w, 20);
		if (cl.outq.len != last) {
			last = cl.outq.len;
			still_since = time_mono_ms();
		}
	}
	size_t taken = queued - cl.outq.len;
	long grown = rss_end(rss0);
	fprintf(stderr, "bomb paused: %zu compressed bytes taken (x1000 inflated) before the "
		"server stopped reading, compression state peak %zu bytes, peak RSS +%ld KiB\n",
		taken, srv_zmem_peak, grown);
	buf_cleanup(&mib_z);
	CHECK(cl.outq.len > 0);          /* the server stopped reading */
	CHECK(srv_conn != NULL);         /* and did not close */
	/* Compressed input stops at in_max plus what the kernel had
	 * already posted when reading stopped (at most two provided-buffer
	 * rings, 4 MiB each here: see conn_pause); plaintext at in_max.
	 * Inflated, this input would be over 8 GiB. */
	CHECK(srv_zmem_peak > 0 && srv_zmem_peak < (64u << 10) + (8u << 20) + (256u << 10));
	CHECK(grown < 48 * 1024);
	rawcl_close(&cl);
	if (srv_conn)
		conn_abort(srv_conn, CONN_CLOSE_LOCAL);
}

/* A line with no end: inflated until in_max, then the input bound closes
 * the connection (as for a plaintext over-long line). */
static void test_bomb_long_line(uint16_t port)
{
	srv_reset();
	struct rawcl cl;
	rawcl_open(&cl, port);
	rawcl_compress(&cl);
	rawcl_bomb(&cl, 1024, 'a');
	long rss0 = rss_begin();
	CHECK(wait_closed(&cl, 5000));
	long grown = rss_end(rss0);
	fprintf(stderr, "bomb long line: closed reason=%s, peak RSS +%ld KiB\n",
		conn_close_reason_str(srv_reason), grown);
	CHECK(srv_closes == 1 && srv_reason == CONN_CLOSE_OVERFLOW);
	CHECK(grown < 48 * 1024);
	rawcl_close(&cl);
}

/* A protocol that takes everything: 512 MiB of zeros go through in steps
 * and memory stays flat. */
static void test_bomb_swallow(uint16_t port)
{
	srv_reset();
	struct rawcl cl;
	rawcl_open(&cl, port);
	rawcl_plain(&cl, "SWALLOW\r\n", 9);
	cl.await_ok = true;
	CHECK(wait_rx(&cl, 4, 2000));
	cl.z_out = true;
	const unsigned mb = 512;
	rawcl_bomb(&cl, mb, 0);
	long rss0 = rss_begin();
	struct waiter w = { .cl = &cl, .sent = true };
	CHECK(loop_run_until(L, waiter_done, &w, 60000) == 0);
	uint64_t t0 = time_mono_ms();
	while (srv_swallowed < (uint64_t)mb << 20 && time_mono_ms() - t0 < 60000)
		loop_run_until(L, NULL, NULL, 20);
	long grown = rss_end(rss0);
	fprintf(stderr, "bomb swallowed: %" PRIu64 " bytes, peak RSS +%ld KiB\n", srv_swallowed,
		grown);
	CHECK(srv_swallowed == (uint64_t)mb << 20);
	CHECK(grown < 48 * 1024);
	CHECK(srv_conn != NULL);
	rawcl_close(&cl);
	settle(100);
}

/* ---- drain: an idle compressing connection closes at once ---- */

static void test_drain(void)
{
	struct loop *main_loop = L;
	const char *err = NULL;
	struct loop_config cfg = { .drain_ms = 5000 };
	L = loop_new(&cfg, &err);
	CHECK(L != NULL);
	if (!L) {
		L = main_loop;
		return;
	}
	struct listener *ls = listen_plain();
	srv_reset();
	struct rawcl cl;
	rawcl_open(&cl, listener_port(ls));
	rawcl_compress(&cl);
	/* Exactly one 16 KiB inflate step of plaintext, so zlib's output
	 * buffer was full once: nothing may look pending afterwards. */
	uint8_t line[16384];
	memset(line, 'q', sizeof(line));
	line[sizeof(line) - 1] = '\n';
	size_t at = cl.rx.len;
	rawcl_z(&cl, line, sizeof(line), Z_SYNC_FLUSH);
	CHECK(wait_rx(&cl, at + sizeof(line), 2000));
	CHECK(cl.rx.len == at + sizeof(line) && memcmp(cl.rx.data + at, line, sizeof(line)) == 0);
	uint64_t t0 = time_mono_ms();
	loop_request_stop(L);
	loop_run(L);
	uint64_t ms = time_mono_ms() - t0;
	fprintf(stderr, "drain with a compressing connection: %" PRIu64 " ms\n", ms);
	CHECK(ms < 2500); /* closed as idle, not by the 5 s drain timer */
	CHECK(srv_closes == 1 && srv_reason == CONN_CLOSE_LOCAL);
	CHECK(wait_closed_plain(&cl));
	rawcl_close(&cl);
	listener_close(&ls);
	loop_free(&L);
	L = main_loop;
}

/* ---- TLS: compression inside TLS, the client a loop connection ---- */

struct tcl {
	bool z;
	size_t total, sent, received;
	bool ok, mismatch, closed;
};

static uint8_t tls_byte(size_t i)
{
	return i % 71 == 70 ? '\n' : (uint8_t)('a' + ((i * 40503u) >> 5) % 26);
}

static void tcl_send_some(struct conn *c, struct tcl *t)
{
	uint8_t chunk[8192];
	while (t->sent < t->total && t->sent - t->received < 65536) {
		size_t n = MIN(sizeof(chunk), t->total - t->sent);
		for (size_t i = 0; i < n; i++)
			chunk[i] = tls_byte(t->sent + i);
		if (conn_write(c, chunk, n) < 0)
			return;
		t->sent += n;
	}
}

static void tcl_ready(struct conn *c)
{
	conn_write(c, "COMPRESS\r\n", 10);
}

static ssize_t tcl_data(struct conn *c, const uint8_t *d, size_t n)
{
	struct tcl *t = conn_user(c);
	if (!t->z) {
		if (n < 4)
			return 0;
		CHECK(memcmp(d, "OK\r\n", 4) == 0);
		/* From inside on_data: what follows in this input is
		 * compressed (nothing yet, here). */
		CHECK(conn_compress_start(c) == 0);
		t->z = true;
		tcl_send_some(c, t);
		return 4;
	}
	for (size_t i = 0; i < n; i++)
		if (d[i] != tls_byte(t->received + i))
			t->mismatch = true;
	t->received += n;
	if (t->received == t->total) {
		t->ok = !t->mismatch;
		conn_close(c);
	} else {
		tcl_send_some(c, t);
	}
	return (ssize_t)n;
}

static void tcl_close(struct conn *c, enum conn_close_reason why)
{
	UNUSED(why);
	struct tcl *t = conn_user(c);
	t->closed = true;
}

static const struct conn_handler tcl_h = {
	.name = "ztls", .on_data = tcl_data, .on_tls_ready = tcl_ready, .on_close = tcl_close,
};

static bool tcl_done(void *arg)
{
	struct tcl *t = arg;
	return t->closed && srv_closes > 0;
}

static void test_tls(void)
{
	char dir[512];
	const char *tmp = getenv("MAIL_TEST_TMP");
	snprintf(dir, sizeof(dir), "%s/test_loop_compress.%d", tmp ? tmp : "/tmp", (int)getpid());
	char cmd[2048];
	snprintf(cmd, sizeof(cmd),
		 "mkdir -p %s && cd %s && openssl req -x509 -newkey ec -pkeyopt "
		 "ec_paramgen_curve:P-256 -nodes -keyout k.pem -out c.pem -days 2 "
		 "-subj /CN=localhost >/dev/null 2>&1",
		 dir, dir);
	if (system("openssl version >/dev/null 2>&1") != 0) {
		fprintf(stderr, "openssl CLI missing: TLS part skipped\n");
		return;
	}
	if (system(cmd) != 0) {
		fprintf(stderr, "certificate generation failed\n");
		failures++;
		return;
	}
	char cert[600], key[600];
	snprintf(cert, sizeof(cert), "%s/c.pem", dir);
	snprintf(key, sizeof(key), "%s/k.pem", dir);
	const char *certs[] = { cert }, *keys[] = { key };
	struct tls_server_config tc = { .cert_files = certs, .key_files = keys, .n_certs = 1 };
	const char *err = NULL;
	struct tls_server *ts = tls_server_new(&tc, &err);
	struct tls_client *tcli = tls_client_new(NULL, NULL, NULL, &err);
	CHECK(ts && tcli);
	if (!ts || !tcli)
		return;
	struct listener_config lc = { .addr = "127.0.0.1:0", .on_accept = srv_accept, .tls = ts };
	struct listener *ls = listener_open(L, &lc, &err);
	CHECK(ls != NULL);
	srv_reset();
	static struct tcl t;
	t = (struct tcl){ .total = 71 * 60000 }; /* whole lines */
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(listener_port(ls)) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	struct conn *c = conn_connect(L, (struct sockaddr *)&a, sizeof(a), &tcl_h, &t);
	CHECK(c && conn_starttls_client(c, tls_client_new_ssl(tcli, NULL)) == 0);
	CHECK(loop_run_until(L, tcl_done, &t, 60000) == 0);
	fprintf(stderr, "tls: %zu of %zu bytes echoed, ok=%d\n", t.received, t.total, t.ok);
	CHECK(t.ok && !t.mismatch);
	CHECK(srv_reason == CONN_CLOSE_PEER);
	listener_close(&ls);
	tls_client_free(&tcli);
	tls_server_free(&ts);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	CHECK(system(cmd) == 0);
}

int main(void)
{
	log_init("test_loop_compress", LOG_LEVEL_WARN);
	const char *err = NULL;
	struct loop_config cfg = { .drain_ms = 1000 };
	L = loop_new(&cfg, &err);
	if (!L) {
		fprintf(stderr, "loop_new: %s\n", err);
		return 1;
	}
	timer_init(&later_t, later_cb, NULL);
	timer_init(&sample_t, sample_cb, NULL);
	struct listener *ls = listen_plain();
	uint16_t port = listener_port(ls);

	test_small(port);
	test_big(port);
	for (int v = 0; v < 3; v++)
		test_pipelined(port, v);
	test_corrupt(port, false);
	test_corrupt(port, true);
	test_tls();
	test_drain();
	test_bomb_paused(port);
	test_bomb_long_line(port);
	test_bomb_swallow(port);
	fprintf(stderr, "compression state after %" PRIu64 " starts: peak %zu bytes\n",
		loop_get_stats(L)->compress_started, srv_zmem_peak);

	listener_close(&ls);
	loop_free(&L);
	workers_stop();
	return check_finish("loop compress");
}
