/* Process-wide Prometheus metrics (text exposition format 0.0.4).
 *
 * Counters and gauges are registered once by name, help and an optional
 * fixed label string, and bumped lock-free (relaxed atomics) from any
 * thread. Registration and rendering take a mutex; register at startup, not
 * per event. Each series sits on its own cache line.
 *
 *   static struct metrics_counter *smtp_accepted;
 *   smtp_accepted = metrics_counter_new("mail_sessions_total",
 *                                       "Sessions accepted.", "proto=\"smtp\"");
 *   metrics_inc(smtp_accepted);
 *
 * Names must match [a-zA-Z_:][a-zA-Z0-9_:]*; labels must be
 * `name="value"` pairs separated by commas, values escaped as Prometheus
 * wants (\\ \" \n). Registering the same name and labels again returns the
 * existing series (so every loop thread may register what it uses; the
 * help of the first registration of a name is kept); a name
 * reused with another type, or invalid names/labels, abort: they are
 * programming errors. */
#ifndef COMMON_METRICS_H
#define COMMON_METRICS_H

#include "common/base.h"

#include <stdatomic.h>
#include <stdint.h>

struct metrics_counter {
	_Atomic(uint64_t) value;
};

struct metrics_gauge {
	_Atomic(int64_t) value;
};

/* labels may be NULL or "" for none. The strings are copied. The returned
 * pointer stays valid until metrics_cleanup(). */
struct metrics_counter *metrics_counter_new(const char *name, const char *help,
					    const char *labels);
struct metrics_gauge *metrics_gauge_new(const char *name, const char *help,
					const char *labels);

static inline void metrics_add(struct metrics_counter *c, uint64_t n)
{
	atomic_fetch_add_explicit(&c->value, n, memory_order_relaxed);
}
static inline void metrics_inc(struct metrics_counter *c)
{
	metrics_add(c, 1);
}
static inline uint64_t metrics_counter_get(const struct metrics_counter *c)
{
	return atomic_load_explicit(&c->value, memory_order_relaxed);
}

static inline void metrics_gauge_add(struct metrics_gauge *g, int64_t n)
{
	atomic_fetch_add_explicit(&g->value, n, memory_order_relaxed);
}
static inline void metrics_gauge_sub(struct metrics_gauge *g, int64_t n)
{
	atomic_fetch_sub_explicit(&g->value, n, memory_order_relaxed);
}
static inline void metrics_gauge_set(struct metrics_gauge *g, int64_t v)
{
	atomic_store_explicit(&g->value, v, memory_order_relaxed);
}
static inline int64_t metrics_gauge_get(const struct metrics_gauge *g)
{
	return atomic_load_explicit(&g->value, memory_order_relaxed);
}

/* Appends every metric in registration order, grouped by name with one
 * # HELP and # TYPE per name. Returns 0, or -1 if `out` hit its maximum
 * (its content is then incomplete). */
int metrics_render(struct buf *out);

/* Frees every registered metric; all pointers handed out become invalid.
 * For tests and clean shutdown only. */
void metrics_cleanup(void);

/* Largest accepted request head (request line + headers + blank line). */
#define METRICS_HTTP_HEAD_MAX 8192

/* Serves the admin HTTP endpoint from the bytes received so far (pure: no
 * I/O; call again with the whole accumulated input when more arrives).
 * Returns:
 *    0  the request head is incomplete: read more;
 *    1  a response was appended to resp and *consumed_r is the head length:
 *       GET|HEAD /metrics -> 200 text/plain; version=0.0.4,
 *       GET|HEAD /health -> 200 "ok\n", other paths -> 404, other methods
 *       -> 405, a malformed head -> 400;
 *   -1  the head exceeds METRICS_HTTP_HEAD_MAX: a 431 response was appended,
 *       *consumed_r = len.
 * Every response carries Connection: close; a request body is ignored, so
 * the caller sends resp and closes. */
int metrics_http_handle(const uint8_t *req, size_t len, struct buf *resp,
			size_t *consumed_r);

#endif
