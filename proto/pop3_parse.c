#include "proto/pop3_parse.h"

#include <string.h>

struct verb_def {
	const char *name;
	enum pop3_verb verb;
	uint8_t min_args, max_args;
	uint8_t numeric; /* bit i: argument i is a number */
	bool rest;       /* one argument: the rest of the line */
};

static const struct verb_def verbs[] = {
	{ "USER", POP3_CMD_USER, 1, 1, 0, false },
	{ "PASS", POP3_CMD_PASS, 1, 1, 0, true },
	{ "APOP", POP3_CMD_APOP, 0, 2, 0, false },
	{ "STAT", POP3_CMD_STAT, 0, 0, 0, false },
	{ "LIST", POP3_CMD_LIST, 0, 1, 1, false },
	{ "RETR", POP3_CMD_RETR, 1, 1, 1, false },
	{ "DELE", POP3_CMD_DELE, 1, 1, 1, false },
	{ "NOOP", POP3_CMD_NOOP, 0, 0, 0, false },
	{ "RSET", POP3_CMD_RSET, 0, 0, 0, false },
	{ "QUIT", POP3_CMD_QUIT, 0, 0, 0, false },
	{ "TOP", POP3_CMD_TOP, 2, 2, 3, false },
	{ "UIDL", POP3_CMD_UIDL, 0, 1, 1, false },
	{ "CAPA", POP3_CMD_CAPA, 0, 0, 0, false },
	{ "AUTH", POP3_CMD_AUTH, 0, 2, 0, false },
	{ "STLS", POP3_CMD_STLS, 0, 0, 0, false },
	{ "UTF8", POP3_CMD_UTF8, 0, 0, 0, false },
};

const char *pop3_verb_str(enum pop3_verb v)
{
	for (size_t i = 0; i < ARRAY_LEN(verbs); i++)
		if (verbs[i].verb == v)
			return verbs[i].name;
	return "UNKNOWN";
}

/* Finds the line; *text_r is it without CRLF. OK, MORE or BAD (too long). */
static enum pop3_result find_line(const uint8_t *p, size_t len, size_t max_line,
				  struct pop3_command *out, size_t *consumed_r,
				  struct view *text_r)
{
	memset(out, 0, sizeof(*out));
	*consumed_r = 0;
	if (len == 0)
		return POP3_MORE;
	const uint8_t *nl = memchr(p, '\n', MIN(len, max_line));
	if (!nl) {
		if (len < max_line)
			return POP3_MORE;
		out->error = "line too long";
		nl = len > max_line ? memchr(p + max_line, '\n', len - max_line) : NULL;
		if (nl) {
			*consumed_r = (size_t)(nl - p) + 1;
		} else {
			*consumed_r = len;
			out->line_open = true;
		}
		return POP3_BAD;
	}
	size_t line_len = (size_t)(nl - p) + 1;
	size_t text = line_len - 1;
	if (text > 0 && p[text - 1] == '\r')
		text--;
	else
		out->bare_lf = true;
	*consumed_r = line_len;
	for (size_t i = 0; i < text; i++) {
		if ((p[i] < 0x20 && p[i] != '\t') || p[i] == 0x7f) {
			out->error = "invalid character in command";
			return POP3_BAD;
		}
	}
	*text_r = view_make(p, text);
	return POP3_OK;
}

/* Plain decimal into 32 bits. */
static int parse_u32(struct view v, uint32_t *out)
{
	if (v.len == 0)
		return -1;
	uint32_t n = 0;
	for (size_t i = 0; i < v.len; i++) {
		if (v.ptr[i] < '0' || v.ptr[i] > '9')
			return -1;
		uint32_t d = (uint32_t)(v.ptr[i] - '0');
		if (n > (UINT32_MAX - d) / 10)
			return -2;
		n = n * 10 + d;
	}
	*out = n;
	return 0;
}

enum pop3_result pop3_parse_line(const uint8_t *p, size_t len, size_t max_line,
				 struct pop3_command *out, size_t *consumed_r)
{
	struct view line;
	enum pop3_result r = find_line(p, len, max_line, out, consumed_r, &line);
	if (r != POP3_OK)
		return r;
	size_t i = 0;
	while (i < line.len && line.ptr[i] != ' ')
		i++;
	if (i == 0) {
		out->error = "missing command";
		return POP3_BAD;
	}
	out->keyword = view_make(line.ptr, i);
	const struct verb_def *def = NULL;
	for (size_t k = 0; k < ARRAY_LEN(verbs); k++) {
		if (view_eq_nocase(out->keyword, verbs[k].name)) {
			def = &verbs[k];
			break;
		}
	}
	out->verb = def ? def->verb : POP3_CMD_UNKNOWN;
	if (def && def->rest) {
		if (i < line.len && i + 1 < line.len) {
			out->args[0] = view_make(line.ptr + i + 1, line.len - i - 1);
			out->nargs = 1;
		}
	} else {
		for (;;) {
			while (i < line.len && line.ptr[i] == ' ')
				i++;
			if (i == line.len)
				break;
			size_t start = i;
			while (i < line.len && line.ptr[i] != ' ')
				i++;
			if (out->nargs == POP3_MAX_ARGS) {
				if (!def)
					break; /* unknown: the session refuses it anyway */
				out->error = "too many arguments";
				return POP3_BAD;
			}
			out->args[out->nargs++] = view_make(line.ptr + start, i - start);
		}
	}
	if (!def)
		return POP3_OK;
	if (out->nargs < def->min_args) {
		out->error = "missing argument";
		return POP3_BAD;
	}
	if (out->nargs > def->max_args) {
		out->error = "too many arguments";
		return POP3_BAD;
	}
	for (unsigned a = 0; a < out->nargs; a++) {
		if (!(def->numeric & (1u << a)))
			continue;
		int nr = parse_u32(out->args[a], &out->num[a]);
		if (nr == -2) {
			out->error = "number too large";
			return POP3_BAD;
		}
		if (nr < 0) {
			out->error = "invalid number";
			return POP3_BAD;
		}
	}
	return POP3_OK;
}

enum pop3_result pop3_parse_raw_line(const uint8_t *p, size_t len, size_t max_line,
				     struct pop3_command *out, size_t *consumed_r)
{
	struct view line;
	enum pop3_result r = find_line(p, len, max_line, out, consumed_r, &line);
	if (r != POP3_OK)
		return r;
	out->args[0] = line;
	out->nargs = 1;
	return POP3_OK;
}

size_t pop3_skip_line(const uint8_t *p, size_t len, bool *done_r)
{
	const uint8_t *nl = len ? memchr(p, '\n', len) : NULL;
	*done_r = nl != NULL;
	return nl ? (size_t)(nl - p) + 1 : len;
}

/* ---- SASL ------------------------------------------------------------- */

static int b64_val(uint8_t c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int pop3_base64_decode(struct view in, uint8_t *out, size_t out_cap, size_t *out_len_r)
{
	*out_len_r = 0;
	if (in.len % 4 != 0)
		return -1;
	size_t o = 0;
	for (size_t i = 0; i < in.len; i += 4) {
		const uint8_t *q = in.ptr + i;
		bool last = i + 4 == in.len;
		int v0 = b64_val(q[0]), v1 = b64_val(q[1]);
		if (v0 < 0 || v1 < 0)
			return -1;
		int v2 = -1, v3 = -1;
		size_t n;
		if (q[2] == '=') {
			if (q[3] != '=' || !last || (v1 & 0x0f))
				return -1;
			n = 1;
		} else if ((v2 = b64_val(q[2])) < 0) {
			return -1;
		} else if (q[3] == '=') {
			if (!last || (v2 & 0x03))
				return -1;
			n = 2;
		} else if ((v3 = b64_val(q[3])) < 0) {
			return -1;
		} else {
			n = 3;
		}
		if (out_cap - o < n)
			return -1;
		uint32_t w = ((uint32_t)v0 << 18) | ((uint32_t)v1 << 12) |
			     ((uint32_t)(v2 < 0 ? 0 : v2) << 6) | (uint32_t)(v3 < 0 ? 0 : v3);
		out[o++] = (uint8_t)(w >> 16);
		if (n > 1)
			out[o++] = (uint8_t)(w >> 8);
		if (n > 2)
			out[o++] = (uint8_t)w;
	}
	*out_len_r = o;
	return 0;
}

int pop3_sasl_plain_decode(struct view b64, uint8_t *out, size_t out_cap,
			   struct pop3_sasl_plain *r, const char **error_r)
{
	memset(r, 0, sizeof(*r));
	size_t n = 0;
	if (pop3_base64_decode(b64, out, out_cap, &n) < 0) {
		*error_r = "invalid base64";
		goto fail;
	}
	const uint8_t *z1 = memchr(out, '\0', n);
	const uint8_t *z2 = z1 ? memchr(z1 + 1, '\0', n - (size_t)(z1 + 1 - out)) : NULL;
	if (!z2) {
		*error_r = "malformed PLAIN response";
		goto fail;
	}
	size_t pass_off = (size_t)(z2 + 1 - out);
	if (memchr(z2 + 1, '\0', n - pass_off)) {
		*error_r = "malformed PLAIN response";
		goto fail;
	}
	r->authzid = view_make(out, (size_t)(z1 - out));
	r->authcid = view_make(z1 + 1, (size_t)(z2 - z1 - 1));
	r->passwd = view_make(z2 + 1, n - pass_off);
	if (r->authcid.len == 0 || r->passwd.len == 0) {
		*error_r = "empty user or password";
		goto fail;
	}
	if (r->authzid.len > POP3_SASL_ID_MAX || r->authcid.len > POP3_SASL_ID_MAX ||
	    r->passwd.len > POP3_SASL_PASS_MAX) {
		*error_r = "user or password too long";
		goto fail;
	}
	return 0;
fail:
	memset(r, 0, sizeof(*r));
	explicit_bzero(out, out_cap);
	return -1;
}

/* ---- dot-stuffing --------------------------------------------------------- */

void pop3_dotstuff_init(struct pop3_dotstuff *d)
{
	memset(d, 0, sizeof(*d));
	d->at_line_start = true;
}

void pop3_dotstuff_init_top(struct pop3_dotstuff *d, uint32_t lines)
{
	pop3_dotstuff_init(d);
	d->top = true;
	d->in_header = true;
	d->lines_left = lines;
}

int pop3_dotstuff_feed(struct pop3_dotstuff *d, const uint8_t *p, size_t len, struct buf *out)
{
	if (d->done || d->finished || len == 0)
		return 0;
	if (len > SIZE_MAX / 2)
		return -1;
	uint8_t *w = buf_reserve(out, 2 * len);
	if (!w)
		return -1;
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		uint8_t b = p[i];
		if (b == '\n') {
			if (!d->prev_cr)
				w[o++] = '\r';
			w[o++] = '\n';
			bool empty = !d->line_content;
			d->prev_cr = false;
			d->at_line_start = true;
			d->line_content = false;
			if (!d->top)
				continue;
			if (d->in_header) {
				if (empty) {
					d->in_header = false;
					if (d->lines_left == 0)
						d->done = true;
				}
			} else if (--d->lines_left == 0) {
				d->done = true;
			}
			if (d->done)
				break;
			continue;
		}
		if (d->at_line_start && b == '.')
			w[o++] = '.';
		d->at_line_start = false;
		w[o++] = b;
		/* A CR counts as line content only when no LF follows it. */
		if (d->prev_cr || b != '\r')
			d->line_content = true;
		d->prev_cr = b == '\r';
	}
	buf_commit(out, o);
	return 0;
}

int pop3_dotstuff_finish(struct pop3_dotstuff *d, struct buf *out)
{
	if (d->finished)
		return 0;
	uint8_t *w = buf_reserve(out, 5);
	if (!w)
		return -1;
	size_t o = 0;
	if (!d->at_line_start) {
		if (!d->prev_cr)
			w[o++] = '\r';
		w[o++] = '\n';
	}
	memcpy(w + o, ".\r\n", 3);
	buf_commit(out, o + 3);
	d->finished = true;
	d->at_line_start = true;
	d->prev_cr = false;
	return 0;
}
