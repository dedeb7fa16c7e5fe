#include "common/metrics.h"

#include <ctype.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

enum metrics_type {
	METRICS_COUNTER,
	METRICS_GAUGE,
};

struct metrics_series {
	/* First and cache-line aligned: threads bumping different series do
	 * not contend on one line. */
	_Alignas(64) union {
		struct metrics_counter counter;
		struct metrics_gauge gauge;
	} u;
	char *labels;
	struct metrics_series *next;
};

struct metrics_family {
	char *name;
	char *help;
	enum metrics_type type;
	struct metrics_series *series;
	struct metrics_series **series_tail;
	struct metrics_family *next;
};

static pthread_mutex_t metrics_lock = PTHREAD_MUTEX_INITIALIZER;
static struct metrics_family *metrics_families;
static struct metrics_family **metrics_families_tail = &metrics_families;

static _Noreturn void metrics_bug(const char *what, const char *name)
{
	fprintf(stderr, "metrics: %s: '%s'\n", what, name);
	abort();
}

static bool name_valid(const char *s)
{
	if (!isalpha((unsigned char)*s) && *s != '_' && *s != ':')
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '_' && *s != ':')
			return false;
	return true;
}

static bool labels_valid(const char *s)
{
	if (*s == '\0')
		return true;
	for (;;) {
		if (!isalpha((unsigned char)*s) && *s != '_')
			return false;
		while (isalnum((unsigned char)*s) || *s == '_')
			s++;
		if (*s++ != '=' || *s++ != '"')
			return false;
		for (; *s != '"'; s++) {
			if (*s == '\0' || *s == '\n')
				return false;
			if (*s == '\\') {
				s++;
				if (*s != '\\' && *s != '"' && *s != 'n')
					return false;
			}
		}
		s++;
		if (*s == '\0')
			return true;
		if (*s++ != ',')
			return false;
	}
}

static struct metrics_series *metrics_register(const char *name, const char *help,
					       const char *labels,
					       enum metrics_type type)
{
	if (!labels)
		labels = "";
	if (!name || !name_valid(name))
		metrics_bug("invalid metric name", name ? name : "(null)");
	if (!labels_valid(labels))
		metrics_bug("invalid labels", labels);

	pthread_mutex_lock(&metrics_lock);
	struct metrics_family *f = metrics_families;
	while (f && strcmp(f->name, name) != 0)
		f = f->next;
	if (!f) {
		f = xcalloc(1, sizeof(*f));
		f->name = xstrdup(name);
		f->help = xstrdup(help ? help : "");
		f->type = type;
		f->series_tail = &f->series;
		*metrics_families_tail = f;
		metrics_families_tail = &f->next;
	} else if (f->type != type) {
		pthread_mutex_unlock(&metrics_lock);
		metrics_bug("metric registered with two types", name);
	}
	struct metrics_series *s = f->series;
	while (s && strcmp(s->labels, labels) != 0)
		s = s->next;
	if (!s) {
		s = aligned_alloc(_Alignof(struct metrics_series), sizeof(*s));
		if (!s)
			metrics_bug("out of memory", name);
		if (type == METRICS_COUNTER)
			atomic_init(&s->u.counter.value, 0);
		else
			atomic_init(&s->u.gauge.value, 0);
		s->labels = xstrdup(labels);
		s->next = NULL;
		*f->series_tail = s;
		f->series_tail = &s->next;
	}
	pthread_mutex_unlock(&metrics_lock);
	return s;
}

struct metrics_counter *metrics_counter_new(const char *name, const char *help,
					    const char *labels)
{
	return &metrics_register(name, help, labels, METRICS_COUNTER)->u.counter;
}

struct metrics_gauge *metrics_gauge_new(const char *name, const char *help,
					const char *labels)
{
	return &metrics_register(name, help, labels, METRICS_GAUGE)->u.gauge;
}

static int render_help(struct buf *out, const char *help)
{
	for (; *help; help++) {
		int ret;
		if (*help == '\\')
			ret = buf_append(out, "\\\\", 2);
		else if (*help == '\n')
			ret = buf_append(out, "\\n", 2);
		else
			ret = buf_append(out, help, 1);
		if (ret < 0)
			return -1;
	}
	return 0;
}

int metrics_render(struct buf *out)
{
	int ret = 0;
	pthread_mutex_lock(&metrics_lock);
	for (struct metrics_family *f = metrics_families; f && ret == 0; f = f->next) {
		ret |= buf_printf(out, "# HELP %s ", f->name);
		ret |= render_help(out, f->help);
		ret |= buf_printf(out, "\n# TYPE %s %s\n", f->name,
				  f->type == METRICS_COUNTER ? "counter" : "gauge");
		for (struct metrics_series *s = f->series; s && ret == 0; s = s->next) {
			ret |= buf_printf(out, "%s%s%s%s ", f->name, *s->labels ? "{" : "",
					  s->labels, *s->labels ? "}" : "");
			if (f->type == METRICS_COUNTER)
				ret |= buf_printf(out, "%" PRIu64 "\n",
						  metrics_counter_get(&s->u.counter));
			else
				ret |= buf_printf(out, "%" PRId64 "\n",
						  metrics_gauge_get(&s->u.gauge));
		}
	}
	pthread_mutex_unlock(&metrics_lock);
	return ret < 0 ? -1 : 0;
}

void metrics_cleanup(void)
{
	pthread_mutex_lock(&metrics_lock);
	struct metrics_family *f = metrics_families;
	while (f) {
		struct metrics_family *fnext = f->next;
		struct metrics_series *s = f->series;
		while (s) {
			struct metrics_series *snext = s->next;
			free(s->labels);
			free(s);
			s = snext;
		}
		free(f->name);
		free(f->help);
		free(f);
		f = fnext;
	}
	metrics_families = NULL;
	metrics_families_tail = &metrics_families;
	pthread_mutex_unlock(&metrics_lock);
}

/* --- admin HTTP endpoint --- */

static bool is_tchar(uint8_t c)
{
	return isalnum(c) || (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int http_respond(struct buf *resp, int status, const char *reason,
			const char *content_type, const char *extra_headers,
			const void *body, size_t body_len, bool with_body)
{
	size_t old_len = resp->len;
	if (buf_printf(resp,
		       "HTTP/1.1 %d %s\r\n"
		       "Content-Type: %s\r\n"
		       "Content-Length: %zu\r\n"
		       "Connection: close\r\n"
		       "%s\r\n",
		       status, reason, content_type, body_len, extra_headers) < 0 ||
	    (with_body && buf_append(resp, body, body_len) < 0)) {
		resp->len = old_len;
		return -1;
	}
	return 0;
}

static void http_simple(struct buf *resp, int status, const char *reason,
			const char *extra_headers, const char *body, bool with_body)
{
	http_respond(resp, status, reason, "text/plain; charset=utf-8",
		     extra_headers, body, strlen(body), with_body);
}

/* Finds the blank line ending the head within the first `limit` bytes;
 * returns the head length including it, or 0 if not there yet. */
static size_t http_head_len(const uint8_t *req, size_t limit)
{
	size_t pos = 0;
	while (pos < limit) {
		const uint8_t *nl = memchr(req + pos, '\n', limit - pos);
		if (!nl)
			return 0;
		size_t end = (size_t)(nl - req);
		size_t line_len = end - pos;
		if (line_len > 0 && req[end - 1] == '\r')
			line_len--;
		if (line_len == 0)
			return end + 1;
		pos = end + 1;
	}
	return 0;
}

/* Next line of the head without its CR LF / LF. */
static struct view http_next_line(const uint8_t *req, size_t *pos)
{
	const uint8_t *start = req + *pos;
	const uint8_t *nl = (const uint8_t *)strchr((const char *)start, '\n');
	size_t len = (size_t)(nl - start);
	*pos += len + 1;
	if (len > 0 && start[len - 1] == '\r')
		len--;
	return view_make(start, len);
}

enum http_target {
	HTTP_TARGET_OTHER,
	HTTP_TARGET_METRICS,
	HTTP_TARGET_HEALTH,
};

/* Returns 0 with the method and target, or -1 if the head is malformed. */
static int http_parse_head(const uint8_t *head, size_t head_len,
			   struct view *method_r, enum http_target *target_r)
{
	/* NUL-terminated copy so lines can be walked with strchr. */
	char copy[METRICS_HTTP_HEAD_MAX + 1];
	memcpy(copy, head, head_len);
	copy[head_len] = '\0';
	if (memchr(head, '\0', head_len))
		return -1;
	const uint8_t *h = (const uint8_t *)copy;

	size_t pos = 0;
	struct view line = http_next_line(h, &pos);
	size_t i = 0;
	while (i < line.len && is_tchar(line.ptr[i]))
		i++;
	if (i == 0 || i >= line.len || line.ptr[i] != ' ')
		return -1;
	*method_r = view_make(head, i); /* into the caller's bytes, not copy */

	size_t t = ++i;
	while (i < line.len && line.ptr[i] > 0x20 && line.ptr[i] < 0x7f)
		i++;
	if (i == t || i >= line.len || line.ptr[i] != ' ' || line.ptr[t] != '/')
		return -1;
	struct view target = view_make(line.ptr + t, i - t);
	struct view version = view_make(line.ptr + i + 1, line.len - i - 1);
	if (!view_eq_cstr(version, "HTTP/1.1") && !view_eq_cstr(version, "HTTP/1.0"))
		return -1;

	const uint8_t *q = memchr(target.ptr, '?', target.len);
	struct view path = view_make(target.ptr, q ? (size_t)(q - target.ptr) : target.len);
	*target_r = view_eq_cstr(path, "/metrics") ? HTTP_TARGET_METRICS
		    : view_eq_cstr(path, "/health") ? HTTP_TARGET_HEALTH
						     : HTTP_TARGET_OTHER;

	for (;;) {
		line = http_next_line(h, &pos);
		if (line.len == 0)
			return 0;
		i = 0;
		while (i < line.len && is_tchar(line.ptr[i]))
			i++;
		if (i == 0 || i >= line.len || line.ptr[i] != ':')
			return -1; /* also rejects obs-fold continuation lines */
		for (i++; i < line.len; i++)
			if ((line.ptr[i] < 0x20 && line.ptr[i] != '\t') || line.ptr[i] == 0x7f)
				return -1;
	}
}

int metrics_http_handle(const uint8_t *req, size_t len, struct buf *resp,
			size_t *consumed_r)
{
	size_t head_len = http_head_len(req, MIN(len, (size_t)METRICS_HTTP_HEAD_MAX));
	if (head_len == 0) {
		if (len < METRICS_HTTP_HEAD_MAX)
			return 0;
		http_simple(resp, 431, "Request Header Fields Too Large", "",
			    "request head too large\n", true);
		*consumed_r = len;
		return -1;
	}
	*consumed_r = head_len;

	struct view method;
	enum http_target target;
	if (http_parse_head(req, head_len, &method, &target) < 0) {
		http_simple(resp, 400, "Bad Request", "", "bad request\n", true);
		return 1;
	}
	bool is_head = view_eq_cstr(method, "HEAD");
	if (!is_head && !view_eq_cstr(method, "GET")) {
		http_simple(resp, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n",
			    "method not allowed\n", true);
		return 1;
	}
	switch (target) {
	case HTTP_TARGET_METRICS: {
		struct buf body;
		buf_init(&body, 0);
		metrics_render(&body);
		if (http_respond(resp, 200, "OK", "text/plain; version=0.0.4; charset=utf-8",
				 "", body.data, body.len, !is_head) < 0)
			http_simple(resp, 500, "Internal Server Error", "",
				    "response too large\n", !is_head);
		buf_cleanup(&body);
		break;
	}
	case HTTP_TARGET_HEALTH:
		http_simple(resp, 200, "OK", "", "ok\n", !is_head);
		break;
	case HTTP_TARGET_OTHER:
		http_simple(resp, 404, "Not Found", "", "not found\n", !is_head);
		break;
	}
	return 1;
}
