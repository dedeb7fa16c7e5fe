#include "common/log.h"

#include "common/base.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

_Atomic int log_min_level_ = LOG_LEVEL_INFO;
static const char *log_program = "mail";

static const char *const level_names[] = {
	[LOG_LEVEL_DEBUG] = "debug",
	[LOG_LEVEL_INFO] = "info",
	[LOG_LEVEL_WARN] = "warn",
	[LOG_LEVEL_ERROR] = "error",
};

void log_init(const char *program, enum log_level min_level)
{
	if (program && *program)
		log_program = program;
	log_set_level(min_level);
}

void log_set_level(enum log_level min_level)
{
	atomic_store_explicit(&log_min_level_, (int)min_level, memory_order_relaxed);
}

const char *log_level_str(enum log_level lvl)
{
	if ((unsigned)lvl < ARRAY_LEN(level_names))
		return level_names[lvl];
	return "unknown";
}

int log_level_from_str(const char *s, enum log_level *level_r)
{
	if (!s)
		return -1;
	for (size_t i = 0; i < ARRAY_LEN(level_names); i++) {
		if (strcasecmp(s, level_names[i]) == 0) {
			*level_r = (enum log_level)i;
			return 0;
		}
	}
	if (strcasecmp(s, "warning") == 0) {
		*level_r = LOG_LEVEL_WARN;
		return 0;
	}
	return -1;
}

static bool is_bare_char(uint8_t c)
{
	return c > 0x20 && c < 0x7f && c != '"' && c != '\\' && c != '=';
}

/* Writes the escaped form of c into e; returns its length (1..4). */
static size_t escape_byte(uint8_t c, char e[4])
{
	static const char hex[] = "0123456789abcdef";
	switch (c) {
	case '"': e[0] = '\\'; e[1] = '"'; return 2;
	case '\\': e[0] = '\\'; e[1] = '\\'; return 2;
	case '\n': e[0] = '\\'; e[1] = 'n'; return 2;
	case '\r': e[0] = '\\'; e[1] = 'r'; return 2;
	case '\t': e[0] = '\\'; e[1] = 't'; return 2;
	}
	if (c < 0x20 || c >= 0x7f) {
		e[0] = '\\';
		e[1] = 'x';
		e[2] = hex[c >> 4];
		e[3] = hex[c & 0xf];
		return 4;
	}
	e[0] = (char)c;
	return 1;
}

const char *log_quote(char *dst, size_t dst_size, const void *src, size_t src_len)
{
	const uint8_t *s = src;
	if (dst_size == 0)
		return dst;
	size_t cap = dst_size - 1; /* room for the NUL */
	bool bare = src_len > 0;
	size_t quoted_len = 2;
	for (size_t i = 0; i < src_len; i++) {
		char e[4];
		if (!is_bare_char(s[i]))
			bare = false;
		quoted_len += escape_byte(s[i], e);
	}

	if (bare) {
		if (src_len <= cap) {
			memcpy(dst, s, src_len);
			dst[src_len] = '\0';
		} else if (cap >= 3) {
			memcpy(dst, s, cap - 3);
			memcpy(dst + cap - 3, "...", 4);
		} else {
			dst[0] = '\0';
		}
		return dst;
	}
	if (cap < 5) { /* not even room for "..." */
		if (cap >= 2)
			memcpy(dst, "\"\"", 3);
		else
			dst[0] = '\0';
		return dst;
	}

	bool cut = quoted_len > cap;
	size_t limit = cut ? cap - 4 : cap - 1; /* keep room for ..." or " */
	size_t o = 0;
	dst[o++] = '"';
	for (size_t i = 0; i < src_len; i++) {
		char e[4];
		size_t n = escape_byte(s[i], e);
		if (o + n > limit)
			break;
		memcpy(dst + o, e, n);
		o += n;
	}
	if (cut) {
		memcpy(dst + o, "...", 3);
		o += 3;
	}
	dst[o++] = '"';
	dst[o] = '\0';
	return dst;
}

const char *log_quote_cstr(char *dst, size_t dst_size, const char *s)
{
	if (!s)
		return log_quote(dst, dst_size, "", 0);
	return log_quote(dst, dst_size, s, strlen(s));
}

/* Append-only cursor over the line; `cap` excludes the room kept for the
 * truncation marker, the newline and the NUL. */
struct line {
	char *p;
	size_t len;
	size_t cap;
	bool cut;
};

static void line_append(struct line *l, const char *s, size_t n)
{
	if (l->cut)
		return;
	if (n > l->cap - l->len) {
		n = l->cap - l->len;
		l->cut = true;
	}
	memcpy(l->p + l->len, s, n);
	l->len += n;
}

static void line_str(struct line *l, const char *s)
{
	line_append(l, s, strlen(s));
}

/* comp and event are program constants; still, keep them one clean word. */
static void line_word(struct line *l, const char *s)
{
	if (!s || !*s)
		s = "-";
	for (; *s && !l->cut; s++) {
		char c = *s;
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '_' || c == '-' ||
			  c == '.' || c == ':' || c == '/';
		if (!ok)
			c = '_';
		line_append(l, &c, 1);
	}
}

/* Caller text is trusted to be key=value, but a raw control byte must never
 * reach the output: it is replaced with a \xNN escape, kept whole or
 * dropped whole. */
static void line_sanitized(struct line *l, const char *s)
{
	for (; *s && !l->cut; s++) {
		uint8_t c = (uint8_t)*s;
		if (c >= 0x20 && c != 0x7f) {
			line_append(l, (const char *)&c, 1);
			continue;
		}
		char e[4];
		size_t n = escape_byte(c, e);
		if (n == 2) { /* \n \r \t: use \xNN so bare text reads the same */
			e[1] = 'x';
			e[2] = "0123456789abcdef"[c >> 4];
			e[3] = "0123456789abcdef"[c & 0xf];
			n = 4;
		}
		if (n > l->cap - l->len) {
			l->cut = true;
			break;
		}
		line_append(l, e, n);
	}
}

/* After a cut inside the key=value text, drop a half-written escape and
 * report whether the cut fell inside a quoted value. */
static bool fix_cut_tail(struct line *l, size_t start)
{
	bool in_quote = false;
	for (size_t i = start; i < l->len; i++) {
		char c = l->p[i];
		if (!in_quote) {
			if (c == '"')
				in_quote = true;
			continue;
		}
		if (c == '\\') {
			size_t need = (i + 1 < l->len && l->p[i + 1] == 'x') ? 4 : 2;
			if (i + need > l->len) {
				l->len = i;
				break;
			}
			i += need - 1;
		} else if (c == '"') {
			in_quote = false;
		}
	}
	return in_quote;
}

size_t log_vformat(char *dst, size_t dst_size, uint64_t real_ms,
		   enum log_level lvl, const char *comp, uint64_t conn_id,
		   const char *event, const char *fmt, va_list ap)
{
	if (dst_size < 256)
		abort();
	/* 5 = strlen("...\"") + '\n'; 1 for the NUL. */
	struct line l = { dst, 0, dst_size - 6, false };

	time_t secs = (time_t)(real_ms / 1000);
	struct tm tm;
	gmtime_r(&secs, &tm);
	char head[96];
	int n = snprintf(head, sizeof(head),
			 "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03uZ level=%s comp=",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
			 tm.tm_min, tm.tm_sec, (unsigned)(real_ms % 1000),
			 log_level_str(lvl));
	line_append(&l, head, n > 0 ? MIN((size_t)n, sizeof(head) - 1) : 0);
	line_word(&l, comp ? comp : log_program);
	if (conn_id != 0) {
		n = snprintf(head, sizeof(head), " conn=%llu",
			     (unsigned long long)conn_id);
		line_append(&l, head, (size_t)n);
	}
	line_str(&l, " event=");
	line_word(&l, event);

	size_t kv_start = l.len;
	if (fmt && *fmt) {
		char text[LOG_LINE_MAX];
		if (vsnprintf(text, sizeof(text), fmt, ap) > 0 && text[0]) {
			line_str(&l, " ");
			kv_start = l.len;
			line_sanitized(&l, text);
		}
	}

	if (l.cut) {
		bool in_quote = fix_cut_tail(&l, kv_start);
		memcpy(dst + l.len, "...", 3);
		l.len += 3;
		if (in_quote)
			dst[l.len++] = '"';
	}
	dst[l.len++] = '\n';
	dst[l.len] = '\0';
	return l.len;
}

static void log_write(const char *line, size_t len)
{
	while (len > 0) {
		ssize_t w = write(STDERR_FILENO, line, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return; /* nowhere to report it */
		}
		line += w;
		len -= (size_t)w;
	}
}

void log_eventv(enum log_level lvl, const char *comp, uint64_t conn_id,
		const char *event, const char *fmt, va_list ap)
{
	if (!log_enabled(lvl))
		return;
	int saved_errno = errno;
	char line[LOG_LINE_MAX];
	size_t len = log_vformat(line, sizeof(line), time_real_ms(), lvl, comp,
				 conn_id, event, fmt, ap);
	log_write(line, len);
	errno = saved_errno;
}

void log_event(enum log_level lvl, const char *comp, uint64_t conn_id,
	       const char *event, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_eventv(lvl, comp, conn_id, event, fmt, ap);
	va_end(ap);
}
