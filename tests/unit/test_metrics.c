/* Unit tests for common/metrics.c: exposition format, lock-free updates
 * from several threads, and the admin HTTP handler fed whole, one byte at
 * a time, split at every offset, ending at a guard page, and oversized. */
#include "common/base.h"
#include "common/metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static int failures;

#define CHECK(cond)                                                           \
	do {                                                                  \
		if (!(cond)) {                                                \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, \
				__LINE__, #cond);                             \
			failures++;                                           \
		}                                                             \
	} while (0)

#define CHECK_STR(got, want)                                                    \
	do {                                                                    \
		const char *g_ = (got), *w_ = (want);                           \
		if (!g_ || strcmp(g_, w_) != 0) {                               \
			fprintf(stderr, "%s:%d: got '%s', want '%s'\n", __FILE__, \
				__LINE__, g_ ? g_ : "(null)", w_);              \
			failures++;                                             \
		}                                                               \
	} while (0)

static struct metrics_counter *c_smtp, *c_imap, *c_plain;
static struct metrics_gauge *g_conns;

/* Returns the buffer as a NUL-terminated string (owned by b). */
static const char *buf_str(struct buf *b)
{
	buf_reserve(b, 1);
	b->data[b->len] = '\0';
	return (const char *)b->data;
}

static void test_render(void)
{
	c_smtp = metrics_counter_new("mail_sessions_total", "Sessions accepted.",
				     "proto=\"smtp\"");
	g_conns = metrics_gauge_new("mail_connections", "Open connections.\nBy \\proto.", NULL);
	c_imap = metrics_counter_new("mail_sessions_total", "ignored help",
				     "proto=\"imap\",tls=\"yes\"");
	c_plain = metrics_counter_new("mail_errors_total", "Errors.", "");
	CHECK(metrics_counter_new("mail_sessions_total", "x", "proto=\"smtp\"") == c_smtp);
	CHECK(metrics_gauge_new("mail_connections", "x", "") == g_conns);

	metrics_inc(c_smtp);
	metrics_add(c_smtp, 41);
	metrics_add(c_imap, 18446744073709551615ull);
	metrics_gauge_add(g_conns, 5);
	metrics_gauge_sub(g_conns, 7);
	CHECK(metrics_counter_get(c_smtp) == 42);
	CHECK(metrics_gauge_get(g_conns) == -2);

	struct buf b;
	buf_init(&b, 0);
	CHECK(metrics_render(&b) == 0);
	CHECK_STR(buf_str(&b),
		  "# HELP mail_sessions_total Sessions accepted.\n"
		  "# TYPE mail_sessions_total counter\n"
		  "mail_sessions_total{proto=\"smtp\"} 42\n"
		  "mail_sessions_total{proto=\"imap\",tls=\"yes\"} 18446744073709551615\n"
		  "# HELP mail_connections Open connections.\\nBy \\\\proto.\n"
		  "# TYPE mail_connections gauge\n"
		  "mail_connections -2\n"
		  "# HELP mail_errors_total Errors.\n"
		  "# TYPE mail_errors_total counter\n"
		  "mail_errors_total 0\n");
	metrics_gauge_set(g_conns, 3);
	CHECK(metrics_gauge_get(g_conns) == 3);

	/* A capped buffer reports that the text did not fit. */
	struct buf small;
	buf_init(&small, 64);
	CHECK(metrics_render(&small) < 0);
	buf_cleanup(&small);
	buf_cleanup(&b);
}

#define THREADS 4
#define BUMPS 200000

static void *bump_main(void *arg)
{
	UNUSED(arg);
	for (int i = 0; i < BUMPS; i++) {
		metrics_inc(c_plain);
		metrics_gauge_add(g_conns, 1);
		metrics_gauge_sub(g_conns, 1);
	}
	return NULL;
}

static void test_threads(void)
{
	uint64_t before = metrics_counter_get(c_plain);
	int64_t g_before = metrics_gauge_get(g_conns);
	pthread_t th[THREADS];
	for (int i = 0; i < THREADS; i++)
		pthread_create(&th[i], NULL, bump_main, NULL);
	/* Rendering concurrently with updates must be safe. */
	struct buf b;
	buf_init(&b, 0);
	for (int i = 0; i < 50; i++) {
		buf_reset(&b);
		CHECK(metrics_render(&b) == 0);
	}
	buf_cleanup(&b);
	for (int i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	CHECK(metrics_counter_get(c_plain) == before + (uint64_t)THREADS * BUMPS);
	CHECK(metrics_gauge_get(g_conns) == g_before);
}

struct response {
	int status;
	size_t content_length;
	const char *body; /* points into the buffer */
	size_t body_len;
	bool has_close;
	bool has_allow;
	bool metrics_type;
};

static bool parse_response(struct buf *b, struct response *r)
{
	const char *s = buf_str(b);
	memset(r, 0, sizeof(*r));
	if (sscanf(s, "HTTP/1.1 %d ", &r->status) != 1)
		return false;
	const char *end = strstr(s, "\r\n\r\n");
	if (!end)
		return false;
	const char *cl = strstr(s, "\r\nContent-Length: ");
	if (!cl || cl > end)
		return false;
	r->content_length = strtoul(cl + 18, NULL, 10);
	r->has_close = strstr(s, "\r\nConnection: close\r\n") != NULL;
	r->has_allow = strstr(s, "\r\nAllow: GET, HEAD\r\n") != NULL;
	r->metrics_type =
		strstr(s, "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n") != NULL;
	r->body = end + 4;
	r->body_len = b->len - (size_t)(r->body - s);
	return true;
}

/* Runs one request held in a guard-page-backed copy so any read past the
 * end faults. */
static int handle(const char *req, size_t len, struct buf *resp, size_t *consumed)
{
	static uint8_t *area;
	static size_t page;
	if (!area) {
		page = (size_t)sysconf(_SC_PAGESIZE);
		size_t pages = (METRICS_HTTP_HEAD_MAX + 64 + page - 1) / page + 1;
		area = mmap(NULL, pages * page, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (area == MAP_FAILED) {
			perror("mmap");
			exit(1);
		}
		mprotect(area + (pages - 1) * page, page, PROT_NONE);
		area += (pages - 1) * page; /* the guard page */
	}
	if (len > METRICS_HTTP_HEAD_MAX + 64)
		abort();
	memcpy(area - len, req, len);
	return metrics_http_handle(area - len, len, resp, consumed);
}

/* Feeds the request one byte at a time, and split at every offset the way
 * a caller accumulates input; each must answer exactly like the whole. */
static void check_incremental(const char *req, size_t head_len)
{
	size_t len = strlen(req);
	struct buf whole;
	buf_init(&whole, 0);
	size_t consumed = 0;
	int ret = handle(req, len, &whole, &consumed);
	CHECK(ret == 1 && consumed == head_len);

	for (size_t k = 0; k < len; k++) {
		struct buf resp;
		buf_init(&resp, 0);
		size_t c = 12345;
		int r = handle(req, k, &resp, &c);
		if (k < head_len) {
			if (r != 0 || resp.len != 0 || c != 12345) {
				fprintf(stderr, "prefix %zu of %zu: ret %d\n", k, len, r);
				failures++;
			}
		} else {
			CHECK(r == 1 && c == head_len && resp.len == whole.len &&
			      memcmp(resp.data, whole.data, whole.len) == 0);
		}
		buf_cleanup(&resp);
	}

	for (size_t split = 1; split < len; split++) {
		struct buf in, resp;
		buf_init(&in, METRICS_HTTP_HEAD_MAX);
		buf_init(&resp, 0);
		size_t c = 0;
		buf_append(&in, req, split);
		int r = metrics_http_handle(in.data, in.len, &resp, &c);
		if (r == 0) {
			buf_append(&in, req + split, len - split);
			r = metrics_http_handle(in.data, in.len, &resp, &c);
		}
		CHECK(r == 1 && c == head_len && resp.len == whole.len &&
		      memcmp(resp.data, whole.data, whole.len) == 0);
		buf_cleanup(&in);
		buf_cleanup(&resp);
	}
	buf_cleanup(&whole);
}

static void check_status(const char *req, int want_status)
{
	struct buf resp;
	buf_init(&resp, 0);
	size_t c = 0;
	int ret = handle(req, strlen(req), &resp, &c);
	struct response r;
	if (ret != 1 || !parse_response(&resp, &r) || r.status != want_status || !r.has_close) {
		fprintf(stderr, "request '%s': ret %d, want status %d, got:\n%s\n", req, ret,
			want_status, resp.len ? buf_str(&resp) : "(nothing)");
		failures++;
	}
	buf_cleanup(&resp);
}

static void test_http(void)
{
	const char get_metrics[] = "GET /metrics HTTP/1.1\r\nHost: localhost:9100\r\n"
				   "User-Agent: Prometheus/2.0\r\nAccept: text/plain\r\n\r\n";
	struct buf resp;
	buf_init(&resp, 0);
	size_t consumed = 0;
	CHECK(handle(get_metrics, strlen(get_metrics), &resp, &consumed) == 1);
	CHECK(consumed == strlen(get_metrics));
	struct response r;
	CHECK(parse_response(&resp, &r));
	CHECK(r.status == 200 && r.has_close && r.metrics_type);
	CHECK(r.content_length == r.body_len);
	struct buf expect;
	buf_init(&expect, 0);
	metrics_render(&expect);
	CHECK(r.body_len == expect.len && memcmp(r.body, expect.data, expect.len) == 0);
	buf_cleanup(&expect);

	/* HEAD: same headers, no body. */
	buf_reset(&resp);
	const char head_req[] = "HEAD /metrics HTTP/1.0\r\n\r\n";
	CHECK(handle(head_req, strlen(head_req), &resp, &consumed) == 1);
	CHECK(parse_response(&resp, &r) && r.status == 200 && r.body_len == 0 &&
	      r.content_length > 0);

	buf_reset(&resp);
	const char health[] = "GET /health HTTP/1.0\r\n\r\n";
	CHECK(handle(health, strlen(health), &resp, &consumed) == 1);
	CHECK(parse_response(&resp, &r) && r.status == 200 && r.body_len == 3 &&
	      memcmp(r.body, "ok\n", 3) == 0 && r.content_length == 3);

	/* Pipelined bytes after the head are not consumed. */
	buf_reset(&resp);
	const char piped[] = "GET /health HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n";
	CHECK(handle(piped, strlen(piped), &resp, &consumed) == 1);
	CHECK(consumed == strlen("GET /health HTTP/1.1\r\n\r\n"));

	buf_reset(&resp);
	const char post[] = "POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
	CHECK(handle(post, strlen(post), &resp, &consumed) == 1);
	CHECK(parse_response(&resp, &r) && r.status == 405 && r.has_allow);
	buf_cleanup(&resp);

	check_status("GET /metrics?name[]=x HTTP/1.1\r\n\r\n", 200);
	check_status("GET /health HTTP/1.1\n\n", 200); /* bare LF */
	check_status("GET /health HTTP/1.1\r\nX-Empty:\r\n\r\n", 200);
	check_status("GET / HTTP/1.1\r\n\r\n", 404);
	check_status("GET /metricsx HTTP/1.1\r\n\r\n", 404);
	check_status("GET /health/ HTTP/1.1\r\n\r\n", 404);
	check_status("HEAD /nope HTTP/1.1\r\n\r\n", 404);
	check_status("DELETE /metrics HTTP/1.1\r\n\r\n", 405);
	check_status("get /metrics HTTP/1.1\r\n\r\n", 405); /* methods are case-sensitive */
	check_status("GET /metrics HTTP/2.0\r\n\r\n", 400);
	check_status("GET /metrics HTTP/1.1 \r\n\r\n", 400);
	check_status("GET metrics HTTP/1.1\r\n\r\n", 400);
	check_status("GET  /metrics HTTP/1.1\r\n\r\n", 400);
	check_status("GET /metrics\r\n\r\n", 400);
	check_status("GET\r\n\r\n", 400);
	check_status("\r\n", 400);
	check_status("GET /metrics HTTP/1.1\r\nNoColon\r\n\r\n", 400);
	check_status("GET /metrics HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400);
	check_status("GET /metrics HTTP/1.1\r\nBad Name: b\r\n\r\n", 400);
	check_status("GET /metrics HTTP/1.1\r\nA: b\rc\r\n\r\n", 400);
	check_status("GET /met\x01rics HTTP/1.1\r\n\r\n", 400);

	{
		/* An embedded NUL is malformed, not a short string. */
		const char nul[] = "GET /metrics HTTP/1.1\r\nA: \0b\r\n\r\n";
		buf_init(&resp, 0);
		CHECK(handle(nul, sizeof(nul) - 1, &resp, &consumed) == 1);
		CHECK(parse_response(&resp, &r) && r.status == 400);
		buf_cleanup(&resp);
	}

	check_incremental(get_metrics, strlen(get_metrics));
	check_incremental("GET /health HTTP/1.1\n\n", strlen("GET /health HTTP/1.1\n\n"));
	check_incremental("GET /health HTTP/1.1\r\n\r\nextra body", strlen("GET /health HTTP/1.1\r\n\r\n"));
	check_incremental("BREW /pot HTTP/1.1\r\nA: b\r\n\r\n", strlen("BREW /pot HTTP/1.1\r\nA: b\r\n\r\n"));
}

/* Builds "GET /health HTTP/1.1\r\nX: aaa...\r\n\r\n" of exactly `total` bytes. */
static char *head_of_size(size_t total)
{
	const char pre[] = "GET /health HTTP/1.1\r\nX: ";
	const char post[] = "\r\n\r\n";
	char *s = xmalloc(total + 1);
	size_t fill = total - strlen(pre) - strlen(post);
	memcpy(s, pre, strlen(pre));
	memset(s + strlen(pre), 'a', fill);
	memcpy(s + strlen(pre) + fill, post, strlen(post) + 1);
	return s;
}

static void test_oversize(void)
{
	struct buf resp;
	buf_init(&resp, 0);
	size_t consumed = 0;
	struct response r;

	char *exact = head_of_size(METRICS_HTTP_HEAD_MAX);
	CHECK(handle(exact, METRICS_HTTP_HEAD_MAX, &resp, &consumed) == 1);
	CHECK(consumed == METRICS_HTTP_HEAD_MAX);
	CHECK(parse_response(&resp, &r) && r.status == 200);
	free(exact);

	buf_reset(&resp);
	char *over = head_of_size(METRICS_HTTP_HEAD_MAX + 1);
	CHECK(handle(over, METRICS_HTTP_HEAD_MAX + 1, &resp, &consumed) == -1);
	CHECK(consumed == METRICS_HTTP_HEAD_MAX + 1);
	CHECK(parse_response(&resp, &r) && r.status == 431 && r.has_close);
	/* Still incomplete one byte short of the limit, 431 at the limit. */
	buf_reset(&resp);
	CHECK(handle(over, METRICS_HTTP_HEAD_MAX - 1, &resp, &consumed) == 0 && resp.len == 0);
	CHECK(handle(over, METRICS_HTTP_HEAD_MAX, &resp, &consumed) == -1);
	CHECK(parse_response(&resp, &r) && r.status == 431);
	free(over);

	/* Garbage without any line end. */
	char junk[METRICS_HTTP_HEAD_MAX + 10];
	memset(junk, 'x', sizeof(junk));
	buf_reset(&resp);
	CHECK(handle(junk, sizeof(junk), &resp, &consumed) == -1);
	CHECK(parse_response(&resp, &r) && r.status == 431);
	buf_cleanup(&resp);
}

int main(void)
{
	test_render();
	test_threads();
	test_http();
	test_oversize();
	metrics_cleanup();
	if (failures) {
		fprintf(stderr, "test_metrics: %d check(s) failed\n", failures);
		return 1;
	}
	printf("test_metrics: ok\n");
	return 0;
}
