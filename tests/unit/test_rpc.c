/* RPC over real loopback sockets: round trips, many calls in flight,
 * deadlines, unknown methods, bad payloads, oversized and truncated
 * frames, server restart and client reconnect. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/loop.h"
#include "common/tls.h"
#include "proto/rpc.h"
#include "tests/unit/check.h"


static struct loop *L;

/* ---- server side: PING answers at once, or after `delay_ms` when the
 * Ping's `from` is "slow". */

struct delayed {
	struct timer t;
	struct rpc_call *call;
	uint64_t sent_ms;
};

static void delayed_cb(struct timer *t)
{
	struct delayed *d = t->arg;
	Mail__Rpc__Pong pong = MAIL__RPC__PONG__INIT;
	pong.node_id = "test";
	pong.sent_ms = d->sent_ms;
	rpc_call_reply(d->call, &pong.base);
	free(d);
}

static int pings_served;

static void ping_handler(struct rpc_call *call, const ProtobufCMessage *req, void *arg)
{
	UNUSED(arg);
	const Mail__Rpc__Ping *ping = (const Mail__Rpc__Ping *)req;
	pings_served++;
	if (strcmp(ping->from, "slow") == 0) {
		struct delayed *d = xcalloc(1, sizeof(*d));
		d->call = call;
		d->sent_ms = ping->sent_ms;
		timer_init(&d->t, delayed_cb, d);
		timer_start(L, &d->t, 300);
		return;
	}
	if (strcmp(ping->from, "fail") == 0) {
		rpc_call_error(call, MAIL__RPC__ERROR_CODE__ERROR_UNAVAILABLE, "busy");
		return;
	}
	Mail__Rpc__Pong pong = MAIL__RPC__PONG__INIT;
	pong.node_id = "test";
	pong.sent_ms = ping->sent_ms;
	pong.uptime_ms = 42;
	rpc_call_reply(call, &pong.base);
}

static const struct rpc_method_handler handlers[] = {
	{ RPC_METHOD_PING, ping_handler },
};

static struct rpc_server *start_server_tls(const char *addr, struct tls_server *tls)
{
	const char *err = NULL;
	struct rpc_server_config cfg = {
		.addr = addr,
		.tls = tls,
		.max_frame = 1 << 20,
		.handlers = handlers,
		.n_handlers = ARRAY_LEN(handlers),
	};
	struct rpc_server *s = rpc_server_new(L, &cfg, &err);
	if (!s) {
		fprintf(stderr, "rpc_server_new: %s\n", err);
		exit(1);
	}
	return s;
}

static struct rpc_server *start_server(const char *addr)
{
	return start_server_tls(addr, NULL);
}

/* ---- client side ---- */

struct result {
	int done;
	int ok, timeouts, unavailable, remote, bad;
	uint64_t wrong;
	uint32_t last_code;
};

struct call_ctx {
	struct result *r;
	uint64_t expect;
};

static void on_reply(void *arg, enum rpc_status st, const ProtobufCMessage *reply,
		     const Mail__Rpc__ErrorReply *err)
{
	struct call_ctx *cc = arg;
	struct result *r = cc->r;
	r->done++;
	switch (st) {
	case RPC_OK: {
		const Mail__Rpc__Pong *pong = (const Mail__Rpc__Pong *)reply;
		if (!pong || pong->sent_ms != cc->expect)
			r->wrong++;
		r->ok++;
		break;
	}
	case RPC_TIMEOUT: r->timeouts++; break;
	case RPC_UNAVAILABLE: r->unavailable++; break;
	case RPC_REMOTE_ERROR:
		r->remote++;
		r->last_code = err->code;
		break;
	default: r->bad++; break;
	}
	free(cc);
}

static void call_ping(struct rpc_client *cl, struct result *r, const char *from,
		      uint64_t val, uint32_t deadline)
{
	struct call_ctx *cc = xcalloc(1, sizeof(*cc));
	cc->r = r;
	cc->expect = val;
	Mail__Rpc__Ping ping = MAIL__RPC__PING__INIT;
	ping.from = (char *)from;
	ping.sent_ms = val;
	rpc_client_call(cl, RPC_METHOD_PING, &ping.base, deadline, on_reply, cc);
}

struct until_n {
	int *counter;
	int n;
};
static bool reached(void *arg)
{
	struct until_n *u = arg;
	return *u->counter >= u->n;
}
static void wait_count(int *counter, int n, uint32_t ms)
{
	struct until_n u = { counter, n };
	CHECK(loop_run_until(L, reached, &u, ms) == 0);
}

static struct sockaddr_in loopback(uint16_t port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return sa;
}

static int raw_connect(uint16_t port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = loopback(port);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		perror("connect");
		exit(1);
	}
	return fd;
}

static bool fd_closed_by_peer(void *arg)
{
	int fd = *(int *)arg;
	char b[256];
	for (;;) {
		ssize_t n = recv(fd, b, sizeof(b), MSG_DONTWAIT);
		if (n == 0)
			return true;
		if (n < 0)
			return errno != EAGAIN && errno != EWOULDBLOCK;
	}
}

static long rss_kb(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	long size = 0, res = 0;
	if (f) {
		if (fscanf(f, "%ld %ld", &size, &res) != 2)
			res = 0;
		fclose(f);
	}
	return res * (sysconf(_SC_PAGESIZE) / 1024);
}

int main(void)
{
	log_init("test_rpc", LOG_LEVEL_WARN);
	const char *err = NULL;
	L = loop_new(NULL, &err);
	if (!L) {
		fprintf(stderr, "loop_new: %s\n", err);
		return 1;
	}
	struct rpc_server *srv = start_server("127.0.0.1:0");
	uint16_t port = rpc_server_port(srv);
	char addr[64];
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
	struct rpc_client_config ccfg = { .addr = addr, .max_frame = 1 << 20 };
	struct rpc_client *cl = rpc_client_new(L, &ccfg, &err);
	CHECK(cl != NULL);

	/* Round trip. */
	struct result r1 = { 0 };
	call_ping(cl, &r1, "t", 7, 2000);
	wait_count(&r1.done, 1, 3000);
	CHECK(r1.ok == 1 && r1.wrong == 0);
	CHECK(rpc_client_connected(cl));

	/* Many in flight on one connection; replies matched by id. */
	struct result r2 = { 0 };
	for (int i = 0; i < 10000; i++)
		call_ping(cl, &r2, "t", 1000 + (uint64_t)i, 10000);
	CHECK(rpc_client_inflight(cl) == 10000);
	wait_count(&r2.done, 10000, 20000);
	CHECK(r2.ok == 10000 && r2.wrong == 0);

	/* Remote error and deadline expiry (the late reply is dropped). */
	struct result r3 = { 0 };
	call_ping(cl, &r3, "fail", 1, 2000);
	call_ping(cl, &r3, "slow", 2, 100);
	call_ping(cl, &r3, "t", 3, 2000);
	wait_count(&r3.done, 3, 3000);
	CHECK(r3.remote == 1 && r3.last_code == MAIL__RPC__ERROR_CODE__ERROR_UNAVAILABLE);
	CHECK(r3.timeouts == 1);
	CHECK(r3.ok == 1);
	/* Let the slow reply arrive late; nothing must break. */
	int zero = 0;
	struct until_n never = { &zero, 1 };
	loop_run_until(L, reached, &never, 400);
	struct result r4 = { 0 };
	call_ping(cl, &r4, "t", 4, 2000);
	wait_count(&r4.done, 1, 3000);
	CHECK(r4.ok == 1 && r4.wrong == 0);

	/* Unknown method, and a request whose payload does not decode: an
	 * error reply, and the connection goes on. */
	{
		int fd = raw_connect(port);
		struct buf b;
		buf_init(&b, 0);
		CHECK(frame_encode_request(&b, 999, 5, 1000, NULL) == 0);
		uint8_t junk[] = { 0xff, 0xff, 0xff };
		struct buf b2;
		buf_init(&b2, 0);
		CHECK(frame_encode_request(&b2, RPC_METHOD_PING, 6, 1000, NULL) == 0);
		/* Patch in a payload that is not a Ping: extend the frame. */
		uint32_t len = (uint32_t)(b2.len - 4 + sizeof(junk));
		b2.data[0] = (uint8_t)(len >> 24);
		b2.data[1] = (uint8_t)(len >> 16);
		b2.data[2] = (uint8_t)(len >> 8);
		b2.data[3] = (uint8_t)len;
		buf_append(&b2, junk, sizeof(junk));
		buf_append(&b, b2.data, b2.len);
		CHECK(write(fd, b.data, b.len) == (ssize_t)b.len);
		struct until_n wait = { &zero, 1 };
		loop_run_until(L, reached, &wait, 300);
		uint8_t in[512];
		ssize_t n = recv(fd, in, sizeof(in), MSG_DONTWAIT);
		CHECK(n > 0);
		size_t off = 0;
		int errors = 0;
		uint32_t codes[2] = { 0, 0 };
		while (n > 0 && off < (size_t)n) {
			struct frame f;
			size_t used;
			if (frame_decode(in + off, (size_t)n - off, 1 << 20, &f, &used) != FRAME_OK)
				break;
			if (f.kind == RPC_ERROR && errors < 2) {
				Mail__Rpc__ErrorReply *e = (Mail__Rpc__ErrorReply *)frame_unpack(
					&mail__rpc__error_reply__descriptor, f.payload);
				if (e)
					codes[errors] = e->code;
				frame_unpacked_free(e);
				errors++;
			}
			off += used;
		}
		CHECK(errors == 2);
		CHECK(codes[0] == MAIL__RPC__ERROR_CODE__ERROR_UNKNOWN_METHOD);
		CHECK(codes[1] == MAIL__RPC__ERROR_CODE__ERROR_BAD_REQUEST);
		CHECK(!fd_closed_by_peer(&fd));
		close(fd);
		buf_cleanup(&b);
		buf_cleanup(&b2);
	}

	/* Oversized frame: rejected after the 4 length bytes, connection
	 * closed, and the declared 1 GiB is never allocated. */
	{
		long before = rss_kb();
		int fd = raw_connect(port);
		uint8_t hdr[] = { 0x40, 0x00, 0x00, 0x00, RPC_REQUEST };
		CHECK(write(fd, hdr, sizeof(hdr)) == (ssize_t)sizeof(hdr));
		CHECK(loop_run_until(L, fd_closed_by_peer, &fd, 3000) == 0);
		long after = rss_kb();
		fprintf(stderr, "oversized: rss before=%ldkB after=%ldkB\n", before, after);
		CHECK(after - before < 64 * 1024);
		close(fd);
	}

	/* Truncated frame then EOF: the server closes its side cleanly and
	 * keeps serving others. */
	{
		int fd = raw_connect(port);
		struct buf b;
		buf_init(&b, 0);
		Mail__Rpc__Ping ping = MAIL__RPC__PING__INIT;
		ping.from = "x";
		CHECK(frame_encode_request(&b, RPC_METHOD_PING, 9, 1000, &ping.base) == 0);
		CHECK(write(fd, b.data, b.len - 2) == (ssize_t)(b.len - 2));
		shutdown(fd, SHUT_WR);
		CHECK(loop_run_until(L, fd_closed_by_peer, &fd, 3000) == 0);
		close(fd);
		buf_cleanup(&b);
		struct result r5 = { 0 };
		call_ping(cl, &r5, "t", 5, 2000);
		wait_count(&r5.done, 1, 3000);
		CHECK(r5.ok == 1);
	}

	/* Server goes away: pending and new calls fail fast; server comes back
	 * on the same port: the client reconnects by itself. */
	{
		rpc_server_free(&srv);
		/* Existing server-side connection still open: abort it by
		 * running the loop after the listener is gone; the client's
		 * connection is still up to the old conn. Close it by sending a
		 * bad frame is not possible from here, so restart the client. */
		rpc_client_free(&cl);
		cl = rpc_client_new(L, &ccfg, &err);
		struct result r6 = { 0 };
		call_ping(cl, &r6, "t", 6, 2000);
		wait_count(&r6.done, 1, 3000);
		CHECK(r6.unavailable == 1);
		srv = start_server(addr);
		struct result r7 = { 0 };
		/* Retry until the reconnect backoff lets it through. */
		for (int i = 0; i < 50 && r7.ok == 0; i++) {
			int before = r7.done;
			call_ping(cl, &r7, "t", 7, 1000);
			wait_count(&r7.done, before + 1, 3000);
			if (r7.ok == 0) {
				struct until_n w = { &zero, 1 };
				loop_run_until(L, reached, &w, 100);
			}
		}
		CHECK(r7.ok == 1);
	}

	rpc_client_free(&cl);

	/* A burst of large calls: writes stop above the connection's high
	 * mark and continue as it drains (nothing overflows, every call that
	 * was queued is answered); calls beyond max_queued fail at once. */
	{
		struct rpc_client_config bc = { .addr = addr, .max_frame = 1 << 20,
						.max_queued = 3u << 20 };
		struct rpc_client *big = rpc_client_new(L, &bc, &err);
		size_t sz = 900 * 1024;
		char *from = xmalloc(sz + 1);
		memset(from, 'b', sz);
		from[sz] = '\0';
		struct result rb = { 0 };
		call_ping(big, &rb, "t", 1, 5000); /* connect first */
		wait_count(&rb.done, 1, 3000);
		for (int i = 0; i < 20; i++)
			call_ping(big, &rb, from, 100 + (uint64_t)i, 10000);
		wait_count(&rb.done, 21, 15000);
		CHECK(rb.done == 21 && rb.wrong == 0 && rb.timeouts == 0 && rb.bad == 0);
		CHECK(rb.ok >= 5 && rb.unavailable >= 1 && rb.ok + rb.unavailable == 21);
		CHECK(rpc_client_connected(big)); /* the connection survived */
		/* and it goes on */
		struct result rc2 = { 0 };
		for (int i = 0; i < 3; i++)
			call_ping(big, &rc2, from, 200 + (uint64_t)i, 10000);
		wait_count(&rc2.done, 3, 10000);
		CHECK(rc2.ok == 3);
		free(from);
		rpc_client_free(&big);
	}
	rpc_server_free(&srv);

	/* Mutual TLS between cluster members: a member certificate signed by
	 * the cluster CA gets through; a client without one does not. */
	char dir[512];
	const char *tmp = getenv("MAIL_TEST_TMP");
	snprintf(dir, sizeof(dir), "%s/test_rpc.%d", tmp ? tmp : "/tmp", (int)getpid());
	char cmd[4096];
	snprintf(cmd, sizeof(cmd),
		 "set -e; mkdir -p %s; cd %s; "
		 "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
		 "-keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca 2>/dev/null; "
		 "for n in node client; do "
		 "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $n.key "
		 "-out $n.csr -subj /CN=$n.cluster.test 2>/dev/null; "
		 "printf 'subjectAltName=DNS:%%s.cluster.test\n' $n > $n.ext; "
		 "openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
		 "-out $n.pem -days 2 -extfile $n.ext 2>/dev/null; done",
		 dir, dir);
	if (system("openssl version >/dev/null 2>&1") != 0) {
		fprintf(stderr, "openssl CLI missing: mutual TLS part skipped\n");
	} else if (system(cmd) != 0) {
		fprintf(stderr, "certificate generation failed\n");
		failures++;
	} else {
		char cert[600], key[600], ca[600], ccert[600], ckey[600];
		snprintf(cert, sizeof(cert), "%s/node.pem", dir);
		snprintf(key, sizeof(key), "%s/node.key", dir);
		snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
		snprintf(ccert, sizeof(ccert), "%s/client.pem", dir);
		snprintf(ckey, sizeof(ckey), "%s/client.key", dir);
		const char *certs[] = { cert }, *keys[] = { key };
		struct tls_server_config tc = { .cert_files = certs, .key_files = keys,
						.n_certs = 1, .client_ca_file = ca };
		struct tls_server *ts = tls_server_new(&tc, &err);
		CHECK(ts != NULL);
		struct tls_client *member = tls_client_new(ca, ccert, ckey, &err);
		struct tls_client *stranger = tls_client_new(ca, NULL, NULL, &err);
		CHECK(member && stranger);
		if (ts && member && stranger) {
			srv = start_server_tls("127.0.0.1:0", ts);
			snprintf(addr, sizeof(addr), "127.0.0.1:%u", rpc_server_port(srv));
			struct rpc_client_config mc = { .addr = addr, .tls = member,
							.tls_name = "node.cluster.test" };
			struct rpc_client *mcl = rpc_client_new(L, &mc, &err);
			struct result r8 = { 0 };
			/* Calls issued before the handshake wait for it. */
			for (int i = 0; i < 100; i++)
				call_ping(mcl, &r8, "t", 800 + (uint64_t)i, 3000);
			wait_count(&r8.done, 100, 5000);
			CHECK(r8.ok == 100 && r8.wrong == 0);
			struct rpc_client_config sc = { .addr = addr, .tls = stranger,
							.tls_name = "node.cluster.test" };
			struct rpc_client *scl = rpc_client_new(L, &sc, &err);
			struct result r9 = { 0 };
			call_ping(scl, &r9, "t", 9, 2000);
			wait_count(&r9.done, 1, 5000);
			CHECK(r9.ok == 0 && r9.unavailable == 1);
			/* A client that expects another name refuses the server. */
			struct rpc_client_config wc = { .addr = addr, .tls = member,
							.tls_name = "other.cluster.test" };
			struct rpc_client *wcl = rpc_client_new(L, &wc, &err);
			struct result r10 = { 0 };
			call_ping(wcl, &r10, "t", 10, 2000);
			wait_count(&r10.done, 1, 5000);
			CHECK(r10.ok == 0);
			rpc_client_free(&mcl);
			rpc_client_free(&scl);
			rpc_client_free(&wcl);
			rpc_server_free(&srv);
		}
		tls_client_free(&member);
		tls_client_free(&stranger);
		tls_server_free(&ts);
		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		if (!failures && system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", dir);
	}
	/* Drain what the aborted connections left behind. */
	loop_run_until(L, reached, &never, 100);
	loop_free(&L);
	if (failures) {
		fprintf(stderr, "%d check(s) failed\n", failures);
		return 1;
	}
	fprintf(stderr, "all rpc tests passed (pings served: %d)\n", pings_served);
	return 0;
}
