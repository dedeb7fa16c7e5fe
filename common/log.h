/* Structured logging: one line per event on stderr.
 *
 *   ts=2024-05-01T12:00:00.123Z level=info comp=smtp conn=42 event=accept peer=192.0.2.1:5123
 *
 * `conn=` is omitted when the connection id is 0. The trailing key=value
 * text comes from a printf-style format and may be NULL.
 *
 * Contract for callers:
 * - Any value that may come from a peer or contain spaces, quotes, '=' or
 *   control characters must go through log_quote()/log_quote_cstr(). As a
 *   safety net every raw control byte that still reaches the line is written
 *   as \xNN, so a log line can never be split or forged by peer input.
 * - Never log passwords, AUTH payloads, tokens or message bodies, not even
 *   truncated or at debug level. Log sizes and counts instead.
 * - Lines are built in a stack buffer of LOG_LINE_MAX bytes and written with
 *   a single write(2), so lines from several threads never interleave.
 *   Longer lines are truncated and end in "..." (a cut quoted value keeps
 *   its closing quote).
 * - Logging preserves errno. */
#ifndef COMMON_LOG_H
#define COMMON_LOG_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LOG_LINE_MAX 2048

/* Ordered by severity; a message is written when lvl >= the minimum. */
enum log_level {
	LOG_LEVEL_DEBUG,
	LOG_LEVEL_INFO,
	LOG_LEVEL_WARN,
	LOG_LEVEL_ERROR,
};

/* Call once at startup, before threads exist. `program` (borrowed, must
 * stay valid) is used as the component when a caller passes comp == NULL. */
void log_init(const char *program, enum log_level min_level);
/* May be called at any time from any thread (e.g. on SIGHUP reload). */
void log_set_level(enum log_level min_level);

/* Private to log.c; read it through log_enabled(). */
extern _Atomic int log_min_level_;

static inline bool log_enabled(enum log_level lvl)
{
	return (int)lvl >= atomic_load_explicit(&log_min_level_, memory_order_relaxed);
}

/* "debug", "info", "warn", "error". */
const char *log_level_str(enum log_level lvl);
/* Parses the names above (case-insensitive; "warning" also accepted).
 * Returns 0, or -1 if unknown. */
int log_level_from_str(const char *s, enum log_level *level_r);

void log_event(enum log_level lvl, const char *comp, uint64_t conn_id,
	       const char *event, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
void log_eventv(enum log_level lvl, const char *comp, uint64_t conn_id,
		const char *event, const char *fmt, va_list ap)
	__attribute__((format(printf, 5, 0)));

/* Builds one complete line (ending in '\n', NUL-terminated) into dst without
 * writing it; `real_ms` is the wall-clock time in ms since the epoch.
 * dst_size must be at least 256. Returns the line length without the NUL.
 * log_event() is this plus one write(2); exposed for tests and for callers
 * that ship lines elsewhere. */
size_t log_vformat(char *dst, size_t dst_size, uint64_t real_ms,
		   enum log_level lvl, const char *comp, uint64_t conn_id,
		   const char *event, const char *fmt, va_list ap)
	__attribute__((format(printf, 8, 0)));

/* Renders `src` as a log value into dst (always NUL-terminated, returns dst
 * so it can be used directly as a "%s" argument). A non-empty value made
 * only of printable ASCII other than '"', '\\' and '=' is copied as is;
 * anything else is written in double quotes with \" \\ \r \n \t and \xNN
 * escapes (bytes >= 0x80 included). A value that does not fit is cut and
 * ends in "..." (inside the quotes when quoted). dst_size of 64 or more is
 * sensible; below 6 the result is just "" or empty. */
const char *log_quote(char *dst, size_t dst_size, const void *src, size_t src_len);
/* Same for a C string; NULL is rendered as "". */
const char *log_quote_cstr(char *dst, size_t dst_size, const char *s);

/* The level test happens before any argument is evaluated. fmt may be NULL. */
#define LOG_AT_(lvl, comp, conn, event, fmt, ...)                             \
	do {                                                                  \
		if (log_enabled(lvl))                                         \
			log_event(lvl, comp, conn, event, fmt, ##__VA_ARGS__); \
	} while (0)
#define LOG_DEBUG(comp, conn, event, fmt, ...) \
	LOG_AT_(LOG_LEVEL_DEBUG, comp, conn, event, fmt, ##__VA_ARGS__)
#define LOG_INFO(comp, conn, event, fmt, ...) \
	LOG_AT_(LOG_LEVEL_INFO, comp, conn, event, fmt, ##__VA_ARGS__)
#define LOG_WARN(comp, conn, event, fmt, ...) \
	LOG_AT_(LOG_LEVEL_WARN, comp, conn, event, fmt, ##__VA_ARGS__)
#define LOG_ERROR(comp, conn, event, fmt, ...) \
	LOG_AT_(LOG_LEVEL_ERROR, comp, conn, event, fmt, ##__VA_ARGS__)

#endif
