/* Basic types shared by every module: byte views, owned buffers, helpers.
 *
 * Two string types: `struct view` is a borrowed {ptr,len} passed by value;
 * `struct buf` is an owned growable buffer with a hard maximum. Internal
 * allocation failure aborts (xmalloc); anything sized by a peer must go
 * through buf_* with a maximum and fails with -1 when it would exceed it. */
#ifndef COMMON_BASE_H
#define COMMON_BASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define UNUSED(x) ((void)(x))
#define container_of(ptr, type, member) \
	((type *)((char *)(ptr) - offsetof(type, member)))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

struct view {
	const uint8_t *ptr;
	size_t len;
};

static inline struct view view_make(const void *p, size_t len)
{
	return (struct view){ (const uint8_t *)p, len };
}
static inline struct view view_cstr(const char *s)
{
	return (struct view){ (const uint8_t *)s, strlen(s) };
}
static inline bool view_eq_cstr(struct view v, const char *s)
{
	size_t n = strlen(s);
	return v.len == n && memcmp(v.ptr, s, n) == 0;
}
bool view_eq_nocase(struct view v, const char *s);

/* Owned growable buffer. `max` is a hard cap on `len`; 0 means no cap
 * (only for internally sized data). */
struct buf {
	uint8_t *data;
	size_t len;
	size_t cap;
	size_t max;
};

void buf_init(struct buf *b, size_t max);
void buf_cleanup(struct buf *b);
/* Append; returns 0, or -1 (and leaves b unchanged) if it would exceed max. */
int buf_append(struct buf *b, const void *p, size_t len);
int buf_printf(struct buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Drop the first n bytes. */
void buf_consume(struct buf *b, size_t n);
/* Ensure room for `extra` more bytes; returns pointer to the free tail or
 * NULL if it would exceed max. Commit with buf_commit. */
uint8_t *buf_reserve(struct buf *b, size_t extra);
void buf_commit(struct buf *b, size_t n);
static inline void buf_reset(struct buf *b) { b->len = 0; }
static inline struct view buf_view(const struct buf *b)
{
	return (struct view){ b->data, b->len };
}
/* Release memory if the buffer is empty (an idle connection owns nothing). */
void buf_shrink_if_empty(struct buf *b);

/* Length of the well-formed UTF-8 sequence at p (RFC 3629: shortest form,
 * no surrogates, nothing above U+10FFFF; avail >= 1 bytes readable), or 0.
 * The code point goes to *cp_r. */
size_t utf8_decode(const uint8_t *p, size_t avail, uint32_t *cp_r);

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);

/* Monotonic clock in milliseconds / nanoseconds; realtime in ms. */
uint64_t time_mono_ms(void);
uint64_t time_mono_ns(void);
uint64_t time_real_ms(void);

#endif
