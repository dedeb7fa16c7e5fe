/* Unit tests for proto/frame.c: RPC framing and payload unpacking. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/base.h"
#include "proto/frame.h"
#include "proto/rpc.pb-c.h"

static int failures;

#define CHECK(cond)                                                          \
	do {                                                                 \
		if (!(cond)) {                                               \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, \
				__LINE__, #cond);                            \
			failures++;                                          \
		}                                                            \
	} while (0)

#define MAXF 4096u

/* A decoded frame with its payload copied out of the decoder's input. */
struct rec {
	uint8_t kind;
	uint16_t method;
	uint32_t deadline_ms;
	uint64_t req_id;
	size_t consumed;
	size_t payload_len;
	uint8_t *payload;
};

struct recs {
	struct rec v[64];
	size_t n;
};

static void recs_add(struct recs *rs, const struct frame *f, size_t consumed)
{
	if (rs->n >= ARRAY_LEN(rs->v)) {
		fprintf(stderr, "too many frames\n");
		abort();
	}
	struct rec *r = &rs->v[rs->n++];
	r->kind = f->kind;
	r->method = f->method;
	r->deadline_ms = f->deadline_ms;
	r->req_id = f->req_id;
	r->consumed = consumed;
	r->payload_len = f->payload.len;
	r->payload = xmalloc(f->payload.len);
	if (f->payload.len)
		memcpy(r->payload, f->payload.ptr, f->payload.len);
}

static void recs_clear(struct recs *rs)
{
	for (size_t i = 0; i < rs->n; i++)
		free(rs->v[i].payload);
	rs->n = 0;
}

static bool recs_equal(const struct recs *a, const struct recs *b)
{
	if (a->n != b->n)
		return false;
	for (size_t i = 0; i < a->n; i++) {
		const struct rec *x = &a->v[i], *y = &b->v[i];
		if (x->kind != y->kind || x->method != y->method ||
		    x->deadline_ms != y->deadline_ms || x->req_id != y->req_id ||
		    x->consumed != y->consumed ||
		    x->payload_len != y->payload_len ||
		    memcmp(x->payload, y->payload, x->payload_len) != 0)
			return false;
	}
	return true;
}

/* What a connection does on each read: append, decode every complete frame,
 * keep the unparsed tail. Returns the last non-OK result. */
static enum frame_result feed(struct buf *in, const uint8_t *p, size_t n,
			      struct recs *rs)
{
	if (buf_append(in, p, n) != 0)
		abort();
	size_t off = 0;
	enum frame_result r = FRAME_MORE;
	while (off < in->len) {
		struct frame f;
		size_t used = 0;
		r = frame_decode(in->data + off, in->len - off, MAXF, &f, &used);
		if (r != FRAME_OK)
			break;
		CHECK(used >= FRAME_HEADER_LEN && used <= in->len - off);
		recs_add(rs, &f, used);
		off += used;
		r = FRAME_MORE;
	}
	buf_consume(in, off);
	return r;
}

static void build_stream(struct buf *s)
{
	Mail__Rpc__Ping ping = MAIL__RPC__PING__INIT;
	ping.from = "proxy-1";
	ping.sent_ms = 123456789;
	Mail__Rpc__Pong pong = MAIL__RPC__PONG__INIT;
	pong.node_id = "node-7";
	pong.sent_ms = 123456789;
	pong.uptime_ms = 42;
	Mail__Rpc__ErrorReply err = MAIL__RPC__ERROR_REPLY__INIT;
	err.code = MAIL__RPC__ERROR_CODE__ERROR_STALE_EPOCH;
	err.message = "epoch 3 < 4";
	static const uint8_t data[] = "a1 LOGIN\r\n\0\xff";

	buf_init(s, 0);
	CHECK(frame_encode_request(s, RPC_METHOD_PING, 1, 5000, &ping.base) == 0);
	CHECK(frame_encode(s, RPC_RESPONSE, 1, &pong.base) == 0);
	CHECK(frame_encode(s, RPC_ERROR, 2, &err.base) == 0);
	CHECK(frame_encode(s, RPC_ERROR, 0, NULL) == 0);
	CHECK(frame_encode_raw(s, RPC_CANCEL, 3, view_make(NULL, 0)) == 0);
	CHECK(frame_encode_raw(s, RPC_SESSION_DATA, UINT64_MAX,
			       view_make(data, sizeof(data))) == 0);
	CHECK(frame_encode_request(s, 0xffff, 4, 0, NULL) == 0);
	CHECK(frame_encode(s, RPC_RESPONSE, 4, NULL) == 0);
}

static void test_roundtrip_ping(void)
{
	Mail__Rpc__Ping ping = MAIL__RPC__PING__INIT;
	ping.from = "proxy-a";
	ping.sent_ms = UINT64_MAX - 1;
	struct buf b;
	buf_init(&b, 0);
	CHECK(frame_encode_request(&b, RPC_METHOD_PING, 77, 1500, &ping.base) == 0);
	size_t psize = mail__rpc__ping__get_packed_size(&ping);
	CHECK(b.len == FRAME_HEADER_LEN + FRAME_REQUEST_HEADER_LEN + psize);
	/* Header bytes are big-endian and length excludes itself. */
	CHECK(b.data[0] == 0 && b.data[1] == 0 && b.data[2] == 0 &&
	      b.data[3] == 9 + 6 + psize);
	CHECK(b.data[4] == RPC_REQUEST);
	CHECK(b.data[12] == 77 && b.data[5] == 0);
	CHECK(b.data[13] == 0 && b.data[14] == RPC_METHOD_PING);
	CHECK(b.data[17] == (1500 >> 8) && b.data[18] == (1500 & 0xff));

	struct frame f;
	size_t used = 0;
	CHECK(frame_decode(b.data, b.len, MAXF, &f, &used) == FRAME_OK);
	CHECK(used == b.len);
	CHECK(f.kind == RPC_REQUEST && f.req_id == 77);
	CHECK(f.method == RPC_METHOD_PING && f.deadline_ms == 1500);
	CHECK(f.payload.ptr == b.data + 19 && f.payload.len == psize);

	const struct rpc_method_info *mi = rpc_method_get(f.method);
	CHECK(mi && mi->request == &mail__rpc__ping__descriptor);
	Mail__Rpc__Ping *got =
		(Mail__Rpc__Ping *)frame_unpack(mi->request, f.payload);
	CHECK(got != NULL);
	if (got) {
		CHECK(strcmp(got->from, "proxy-a") == 0);
		CHECK(got->sent_ms == UINT64_MAX - 1);
	}
	frame_unpacked_free(got);

	/* Pong as the response, into the same buffer after the request. */
	Mail__Rpc__Pong pong = MAIL__RPC__PONG__INIT;
	pong.node_id = "n1";
	pong.sent_ms = 5;
	pong.uptime_ms = 99;
	size_t before = b.len;
	CHECK(frame_encode(&b, RPC_RESPONSE, 77, &pong.base) == 0);
	CHECK(frame_decode(b.data + before, b.len - before, MAXF, &f, &used) ==
	      FRAME_OK);
	CHECK(used == b.len - before);
	CHECK(f.kind == RPC_RESPONSE && f.req_id == 77 && f.method == 0);
	Mail__Rpc__Pong *gp = (Mail__Rpc__Pong *)frame_unpack(
		&mail__rpc__pong__descriptor, f.payload);
	CHECK(gp && strcmp(gp->node_id, "n1") == 0 && gp->sent_ms == 5 &&
	      gp->uptime_ms == 99);
	frame_unpacked_free(gp);
	buf_cleanup(&b);
}

static void test_roundtrip_deliver(void)
{
	char *rcpts[] = { "alice@example.org", "bob@example.org",
			  "carol@example.org" };
	uint8_t body[3000];
	for (size_t i = 0; i < sizeof(body); i++)
		body[i] = (uint8_t)(i * 7 + 1); /* includes NULs and 0xff */
	uint8_t did[] = { 0, 1, 2, 3, 0xfe };
	Mail__Rpc__DeliverRequest req = MAIL__RPC__DELIVER_REQUEST__INIT;
	req.shard = 255;
	req.epoch = 1ull << 40;
	req.sender = "";
	req.n_recipients = ARRAY_LEN(rcpts);
	req.recipients = rcpts;
	req.body.data = body;
	req.body.len = sizeof(body);
	req.received_ms = 1700000000123ull;
	req.delivery_id.data = did;
	req.delivery_id.len = sizeof(did);

	struct buf b;
	buf_init(&b, 0);
	CHECK(frame_encode_request(&b, RPC_METHOD_DELIVER, 9, 30000, &req.base) ==
	      0);
	struct frame f;
	size_t used = 0;
	CHECK(frame_decode(b.data, b.len, MAXF, &f, &used) == FRAME_OK);
	CHECK(used == b.len && f.method == RPC_METHOD_DELIVER);
	Mail__Rpc__DeliverRequest *got =
		(Mail__Rpc__DeliverRequest *)frame_unpack(
			rpc_method_get(f.method)->request, f.payload);
	CHECK(got != NULL);
	if (got) {
		CHECK(got->shard == 255 && got->epoch == 1ull << 40);
		CHECK(strcmp(got->sender, "") == 0);
		CHECK(got->n_recipients == 3);
		for (size_t i = 0; i < got->n_recipients && i < 3; i++)
			CHECK(strcmp(got->recipients[i], rcpts[i]) == 0);
		CHECK(got->body.len == sizeof(body) &&
		      memcmp(got->body.data, body, sizeof(body)) == 0);
		CHECK(got->received_ms == 1700000000123ull);
		CHECK(got->delivery_id.len == sizeof(did) &&
		      memcmp(got->delivery_id.data, did, sizeof(did)) == 0);
	}
	frame_unpacked_free(got);

	/* The too-small frame maximum refuses it after 4 bytes. */
	CHECK(frame_decode(b.data, 4, 1024, &f, &used) == FRAME_BAD);

	/* Reply with per-recipient statuses. */
	Mail__Rpc__RecipientStatus st[2] = { MAIL__RPC__RECIPIENT_STATUS__INIT,
					     MAIL__RPC__RECIPIENT_STATUS__INIT };
	Mail__Rpc__RecipientStatus *stp[2] = { &st[0], &st[1] };
	st[0].recipient = "alice@example.org";
	st[0].code = 250;
	st[0].text = "2.0.0 stored";
	st[1].recipient = "bob@example.org";
	st[1].code = 552;
	st[1].text = "5.2.2 mailbox full";
	Mail__Rpc__DeliverReply rep = MAIL__RPC__DELIVER_REPLY__INIT;
	rep.n_statuses = 2;
	rep.statuses = stp;
	buf_reset(&b);
	CHECK(frame_encode(&b, RPC_RESPONSE, 9, &rep.base) == 0);
	CHECK(frame_decode(b.data, b.len, MAXF, &f, &used) == FRAME_OK);
	Mail__Rpc__DeliverReply *gr = (Mail__Rpc__DeliverReply *)frame_unpack(
		&mail__rpc__deliver_reply__descriptor, f.payload);
	CHECK(gr && gr->n_statuses == 2);
	if (gr && gr->n_statuses == 2) {
		CHECK(gr->statuses[1]->code == 552);
		CHECK(strcmp(gr->statuses[1]->text, "5.2.2 mailbox full") == 0);
		CHECK(strcmp(gr->statuses[0]->recipient, "alice@example.org") ==
		      0);
	}
	frame_unpacked_free(gr);
	buf_cleanup(&b);
}

static void test_encode_errors(void)
{
	Mail__Rpc__Ping ping = MAIL__RPC__PING__INIT;
	ping.from = "x";
	struct buf b;
	buf_init(&b, 0);
	CHECK(frame_encode(&b, RPC_REQUEST, 1, &ping.base) == -1);
	CHECK(frame_encode(&b, RPC_CANCEL, 1, NULL) == -1);
	CHECK(frame_encode(&b, 0, 1, NULL) == -1);
	CHECK(frame_encode(&b, RPC_RESPONSE, 0, &ping.base) == -1);
	CHECK(frame_encode_request(&b, RPC_METHOD_PING, 0, 0, &ping.base) == -1);
	CHECK(frame_encode_raw(&b, RPC_REQUEST, 1, view_cstr("x")) == -1);
	CHECK(frame_encode_raw(&b, RPC_CANCEL, 1, view_cstr("x")) == -1);
	CHECK(frame_encode_raw(&b, 6, 1, view_cstr("x")) == -1);
	CHECK(frame_encode_raw(&b, RPC_SESSION_DATA, 0, view_cstr("x")) == -1);
	CHECK(b.len == 0);

	/* Buffer maximum: a failing encode leaves the buffer as it was. */
	struct buf small;
	buf_init(&small, 40);
	CHECK(frame_encode_raw(&small, RPC_SESSION_DATA, 1, view_cstr("abc")) ==
	      0);
	CHECK(small.len == 16);
	uint8_t snapshot[16];
	memcpy(snapshot, small.data, 16);
	CHECK(frame_encode_raw(&small, RPC_SESSION_DATA, 2,
			       view_cstr("0123456789012")) == -1);
	ping.from = "0123456789";
	CHECK(frame_encode_request(&small, RPC_METHOD_PING, 2, 0, &ping.base) ==
	      -1);
	CHECK(small.len == 16 && memcmp(small.data, snapshot, 16) == 0);
	/* Exactly filling the maximum works. */
	CHECK(frame_encode_raw(&small, RPC_SESSION_DATA, 2,
			       view_cstr("01234567890")) == 0);
	CHECK(small.len == 40);
	buf_cleanup(&small);
	buf_cleanup(&b);
}

static void test_stream_splits(void)
{
	struct buf s;
	build_stream(&s);

	struct recs whole = { .n = 0 };
	size_t off = 0;
	while (off < s.len) {
		struct frame f;
		size_t used;
		enum frame_result r =
			frame_decode(s.data + off, s.len - off, MAXF, &f, &used);
		CHECK(r == FRAME_OK);
		if (r != FRAME_OK)
			break;
		recs_add(&whole, &f, used);
		off += used;
	}
	CHECK(whole.n == 8);
	CHECK(whole.v[0].kind == RPC_REQUEST && whole.v[0].method == RPC_METHOD_PING &&
	      whole.v[0].deadline_ms == 5000);
	CHECK(whole.v[3].kind == RPC_ERROR && whole.v[3].req_id == 0 &&
	      whole.v[3].payload_len == 0);
	CHECK(whole.v[4].kind == RPC_CANCEL && whole.v[4].consumed == 13);
	CHECK(whole.v[5].req_id == UINT64_MAX && whole.v[5].payload_len == 13);
	CHECK(whole.v[6].method == 0xffff && whole.v[6].payload_len == 0);

	/* One byte at a time. */
	struct recs got = { .n = 0 };
	struct buf in;
	buf_init(&in, 0);
	for (size_t i = 0; i < s.len; i++)
		CHECK(feed(&in, s.data + i, 1, &got) == FRAME_MORE);
	CHECK(in.len == 0);
	CHECK(recs_equal(&whole, &got));
	recs_clear(&got);

	/* Split at every offset, and in three at every pair of offsets. */
	for (size_t i = 0; i <= s.len; i++) {
		buf_reset(&in);
		CHECK(feed(&in, s.data, i, &got) == FRAME_MORE);
		CHECK(feed(&in, s.data + i, s.len - i, &got) == FRAME_MORE);
		CHECK(in.len == 0);
		CHECK(recs_equal(&whole, &got));
		recs_clear(&got);
	}
	for (size_t i = 0; i <= s.len; i += 3) {
		for (size_t j = i; j <= s.len; j++) {
			buf_reset(&in);
			feed(&in, s.data, i, &got);
			feed(&in, s.data + i, j - i, &got);
			feed(&in, s.data + j, s.len - j, &got);
			if (!recs_equal(&whole, &got) || in.len != 0) {
				CHECK(!"three-way split differs");
				i = s.len + 1;
				recs_clear(&got);
				break;
			}
			recs_clear(&got);
		}
	}
	buf_cleanup(&in);
	recs_clear(&whole);
	buf_cleanup(&s);
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static void test_bad_lengths(void)
{
	uint8_t h[16] = { 0 };
	struct frame f = { .kind = 0xaa };
	size_t used = 12345;

	/* Oversized: refused on exactly the 4th byte, never before. */
	uint32_t big[] = { MAXF + 1, MAXF + 1000, 0x7fffffff, 0xffffffff };
	for (size_t k = 0; k < ARRAY_LEN(big); k++) {
		put32(h, big[k]);
		for (size_t n = 0; n < 4; n++)
			CHECK(frame_decode(h, n, MAXF, &f, &used) == FRAME_MORE);
		CHECK(frame_decode(h, 4, MAXF, &f, &used) == FRAME_BAD);
		CHECK(frame_decode(h, sizeof(h), MAXF, &f, &used) == FRAME_BAD);
	}
	/* length == max is fine: it waits for the body. */
	put32(h, MAXF);
	h[4] = RPC_SESSION_DATA;
	h[12] = 1;
	CHECK(frame_decode(h, 4, MAXF, &f, &used) == FRAME_MORE);
	CHECK(frame_decode(h, sizeof(h), MAXF, &f, &used) == FRAME_MORE);

	/* Shorter than kind + req_id. */
	for (uint32_t l = 0; l < FRAME_MIN_LENGTH; l++) {
		memset(h, 0, sizeof(h));
		put32(h, l);
		CHECK(frame_decode(h, 4, MAXF, &f, &used) == FRAME_BAD);
	}

	/* Bad kinds are refused at the 5th byte. */
	uint8_t kinds[] = { 0, 6, 7, 0x81, 0xff };
	for (size_t k = 0; k < ARRAY_LEN(kinds); k++) {
		put32(h, 20);
		h[4] = kinds[k];
		CHECK(frame_decode(h, 4, MAXF, &f, &used) == FRAME_MORE);
		CHECK(frame_decode(h, 5, MAXF, &f, &used) == FRAME_BAD);
	}
	/* A REQUEST too short for its method header, a CANCEL with a body. */
	for (uint32_t l = 9; l < 9 + FRAME_REQUEST_HEADER_LEN; l++) {
		put32(h, l);
		h[4] = RPC_REQUEST;
		CHECK(frame_decode(h, 5, MAXF, &f, &used) == FRAME_BAD);
	}
	put32(h, 10);
	h[4] = RPC_CANCEL;
	CHECK(frame_decode(h, 5, MAXF, &f, &used) == FRAME_BAD);

	/* req_id 0 only on ERROR. */
	memset(h, 0, sizeof(h));
	put32(h, 9);
	h[4] = RPC_RESPONSE;
	CHECK(frame_decode(h, 12, MAXF, &f, &used) == FRAME_MORE);
	CHECK(frame_decode(h, 13, MAXF, &f, &used) == FRAME_BAD);
	h[4] = RPC_ERROR;
	CHECK(frame_decode(h, 13, MAXF, &f, &used) == FRAME_OK);
	CHECK(used == 13 && f.kind == RPC_ERROR && f.payload.len == 0);

	/* Nothing written on MORE/BAD. */
	struct frame g = { .kind = 0xaa };
	size_t u2 = 777;
	put32(h, 0xffffffff);
	CHECK(frame_decode(h, 4, MAXF, &g, &u2) == FRAME_BAD);
	CHECK(g.kind == 0xaa && u2 == 777);
	CHECK(frame_decode(h, 2, MAXF, &g, &u2) == FRAME_MORE);
	CHECK(g.kind == 0xaa && u2 == 777);
	CHECK(frame_decode(NULL, 0, MAXF, &g, &u2) == FRAME_MORE);
}

static void test_truncated(void)
{
	struct buf s;
	build_stream(&s);
	struct frame f;
	size_t used;
	/* Every prefix of every frame is MORE; the full frame is OK and does
	 * not depend on bytes after it. */
	size_t off = 0;
	while (off < s.len) {
		size_t total;
		CHECK(frame_decode(s.data + off, s.len - off, MAXF, &f, &total) ==
		      FRAME_OK);
		for (size_t n = 0; n < total; n++) {
			used = 999;
			CHECK(frame_decode(s.data + off, n, MAXF, &f, &used) ==
			      FRAME_MORE);
			CHECK(used == 999);
		}
		CHECK(frame_decode(s.data + off, total, MAXF, &f, &used) ==
		      FRAME_OK);
		CHECK(used == total);
		off += total;
	}
	buf_cleanup(&s);
}

static void test_guard_page(void)
{
	long pg = sysconf(_SC_PAGESIZE);
	CHECK(pg > 0);
	size_t page = (size_t)pg;
	uint8_t *map = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(map != MAP_FAILED);
	if (map == MAP_FAILED)
		return;
	CHECK(mprotect(map + page, page, PROT_NONE) == 0);
	uint8_t *end = map + page;

	struct buf s;
	build_stream(&s);
	CHECK(s.len < page);
	struct frame f;
	size_t used;

	/* Every prefix of the stream placed flush against the guard page:
	 * decode all complete frames, then MORE, touching nothing beyond. */
	for (size_t n = 0; n <= s.len; n++) {
		uint8_t *p = end - n;
		memcpy(p, s.data, n);
		size_t off = 0;
		enum frame_result r;
		while ((r = frame_decode(p + off, n - off, MAXF, &f, &used)) ==
		       FRAME_OK)
			off += used;
		CHECK(r == FRAME_MORE);
		CHECK(off <= n);
		if (n == s.len)
			CHECK(off == n);
	}

	/* Bad headers at the page end. */
	uint8_t bad[][5] = { { 0xff, 0xff, 0xff, 0xff, 1 },
			     { 0, 0, 0, 3, 1 },
			     { 0, 0, 0, 20, 9 } };
	for (size_t k = 0; k < ARRAY_LEN(bad); k++) {
		for (size_t n = 4; n <= 5; n++) {
			memcpy(end - n, bad[k], n);
			enum frame_result r =
				frame_decode(end - n, n, MAXF, &f, &used);
			CHECK(r == (k == 2 && n == 4 ? FRAME_MORE : FRAME_BAD));
		}
	}
	/* A header announcing more than is there, ending at the page. */
	uint8_t hdr[13] = { 0, 0, 0, 200, RPC_SESSION_DATA, 0, 0, 0, 0, 0, 0, 0, 5 };
	memcpy(end - sizeof(hdr), hdr, sizeof(hdr));
	CHECK(frame_decode(end - sizeof(hdr), sizeof(hdr), MAXF, &f, &used) ==
	      FRAME_MORE);

	/* frame_unpack of a payload ending at the guard page. */
	size_t off = 0;
	CHECK(frame_decode(s.data, s.len, MAXF, &f, &used) == FRAME_OK);
	off = f.payload.len;
	memcpy(end - off, f.payload.ptr, off);
	void *m = frame_unpack(&mail__rpc__ping__descriptor,
			       view_make(end - off, off));
	CHECK(m != NULL);
	frame_unpacked_free(m);
	for (size_t n = 0; n < off; n++) {
		/* Truncations at the guard page: fail or succeed, never
		 * read past. */
		memcpy(end - n, f.payload.ptr, n);
		frame_unpacked_free(frame_unpack(&mail__rpc__ping__descriptor,
						 view_make(end - n, n)));
	}

	buf_cleanup(&s);
	munmap(map, 2 * page);
}

static bool unpacks(const ProtobufCMessageDescriptor *d, const void *p,
		    size_t n)
{
	ProtobufCMessage *m = frame_unpack(d, view_make(p, n));
	frame_unpacked_free(m);
	return m != NULL;
}

static void test_unpack_garbage(void)
{
	const ProtobufCMessageDescriptor *ping = &mail__rpc__ping__descriptor;
	static const uint8_t ok[] = { 0x0a, 3, 'a', 'b', 'c', 0x10, 5 };
	CHECK(unpacks(ping, ok, sizeof(ok)));
	CHECK(unpacks(ping, "", 0)); /* all defaults */

	static const uint8_t trailing0[] = { 0x0a, 3, 'a', 'b', 'c', 0x10, 5, 0 };
	static const uint8_t truncated[] = { 0x0a, 3, 'a', 'b', 'c', 0x10 };
	static const uint8_t shortstr[] = { 0x0a, 9, 'a', 'b', 'c' };
	static const uint8_t dup[] = { 0x0a, 3, 'a', 'b', 'c', 0x10, 5, 0x10, 6 };
	static const uint8_t wiretype[] = { 0x0a, 3, 'a', 'b', 'c', 0x08, 1 };
	static const uint8_t nul[] = { 0x0a, 3, 'a', 0, 'c', 0x10, 5 };
	static const uint8_t overlong[] = { 0x10, 0x85, 0x80, 0x00 };
	static const uint8_t deflt[] = { 0x10, 0 };
	static const uint8_t varint11[] = { 0x10, 0xff, 0xff, 0xff, 0xff, 0xff,
					    0xff, 0xff, 0xff, 0xff, 0xff, 0x01 };
	static const uint8_t group[] = { 0x7b, 0x7c };
	static const uint8_t ff[] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	CHECK(!unpacks(ping, trailing0, sizeof(trailing0)));
	CHECK(!unpacks(ping, truncated, sizeof(truncated)));
	CHECK(!unpacks(ping, shortstr, sizeof(shortstr)));
	CHECK(!unpacks(ping, dup, sizeof(dup)));
	CHECK(!unpacks(ping, wiretype, sizeof(wiretype)));
	CHECK(!unpacks(ping, nul, sizeof(nul)));
	CHECK(!unpacks(ping, overlong, sizeof(overlong)));
	CHECK(!unpacks(ping, deflt, sizeof(deflt)));
	CHECK(!unpacks(ping, varint11, sizeof(varint11)));
	CHECK(!unpacks(ping, group, sizeof(group)));
	CHECK(!unpacks(ping, ff, sizeof(ff)));

	/* A field from a newer peer is kept, not rejected. */
	static const uint8_t unknown[] = { 0x0a, 3, 'a', 'b', 'c', 0x10, 5,
					   0x78, 1 };
	Mail__Rpc__Ping *m = (Mail__Rpc__Ping *)frame_unpack(
		ping, view_make(unknown, sizeof(unknown)));
	CHECK(m && m->base.n_unknown_fields == 1 && m->sent_ms == 5);
	frame_unpacked_free(m);

	/* DeliverRequest: a recipient that is not a string, a nested length
	 * beyond the payload. */
	const ProtobufCMessageDescriptor *dr =
		&mail__rpc__deliver_request__descriptor;
	static const uint8_t rcpt_varint[] = { 0x20, 1 };
	static const uint8_t body_long[] = { 0x2a, 0x80, 0x01, 'x' };
	CHECK(!unpacks(dr, rcpt_varint, sizeof(rcpt_varint)));
	CHECK(!unpacks(dr, body_long, sizeof(body_long)));
	/* DeliverReply with a nested status that is cut short. */
	static const uint8_t nested[] = { 0x0a, 5, 0x10, 0xfa, 0x01, 0x1a, 9 };
	CHECK(!unpacks(&mail__rpc__deliver_reply__descriptor, nested,
		       sizeof(nested)));

	/* Pseudo-random garbage through every message type: must fail or
	 * succeed cleanly (ASan/UBSan watch), and whatever succeeds must
	 * re-pack to the same size by construction. */
	const ProtobufCMessageDescriptor *all[] = {
		&mail__rpc__ping__descriptor,
		&mail__rpc__pong__descriptor,
		&mail__rpc__error_reply__descriptor,
		&mail__rpc__deliver_request__descriptor,
		&mail__rpc__recipient_status__descriptor,
		&mail__rpc__deliver_reply__descriptor,
		&mail__rpc__auth_request__descriptor,
		&mail__rpc__auth_reply__descriptor,
		&mail__rpc__open_session__descriptor,
		&mail__rpc__replicate_batch__descriptor,
		&mail__rpc__replicate_ack__descriptor,
	};
	uint64_t x = 0x9e3779b97f4a7c15ull;
	uint8_t g[64];
	size_t accepted = 0, rejected = 0;
	for (int iter = 0; iter < 20000; iter++) {
		size_t n = (size_t)(iter % (int)sizeof(g));
		for (size_t i = 0; i < n; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			g[i] = (uint8_t)x;
		}
		for (size_t d = 0; d < ARRAY_LEN(all); d++) {
			ProtobufCMessage *pm = frame_unpack(all[d], view_make(g, n));
			if (pm) {
				CHECK(protobuf_c_message_get_packed_size(pm) == n);
				accepted++;
			} else {
				rejected++;
			}
			frame_unpacked_free(pm);
		}
	}
	CHECK(rejected > accepted);
}

static void test_names(void)
{
	CHECK(strcmp(rpc_kind_str(RPC_REQUEST), "request") == 0);
	CHECK(strcmp(rpc_kind_str(RPC_SESSION_DATA), "session_data") == 0);
	CHECK(strcmp(rpc_kind_str(0), "?") == 0);
	CHECK(strcmp(rpc_method_str(RPC_METHOD_DELIVER), "deliver") == 0);
	CHECK(strcmp(rpc_method_str(999), "?") == 0);
	CHECK(rpc_method_get(0) == NULL);
	CHECK(rpc_method_get(RPC_METHOD_OPEN_SESSION)->reply == NULL);
	CHECK(rpc_method_get(RPC_METHOD_REPLICATE)->reply ==
	      &mail__rpc__replicate_ack__descriptor);
	CHECK(strcmp(frame_result_str(FRAME_BAD), "bad") == 0);
}

int main(void)
{
	test_roundtrip_ping();
	test_roundtrip_deliver();
	test_encode_errors();
	test_stream_splits();
	test_bad_lengths();
	test_truncated();
	test_guard_page();
	test_unpack_garbage();
	test_names();
	if (failures) {
		fprintf(stderr, "test_frame: %d check(s) failed\n", failures);
		return 1;
	}
	printf("test_frame: ok\n");
	return 0;
}
