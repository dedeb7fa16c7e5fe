/* SMTP command parser, DATA unstuffer, BDAT counter, SASL decoding and
 * reply formatting. See smtp_parse.h for the contracts. */
#include "proto/smtp_parse.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>

struct smtp_limits smtp_limits_default(void)
{
	return (struct smtp_limits){
		.max_line = SMTP_LINE_MAX,
		.max_auth_line = SMTP_AUTH_LINE_MAX,
		.max_local = SMTP_LOCAL_MAX,
		.max_domain = SMTP_DOMAIN_MAX,
		.max_path = SMTP_PATH_MAX,
		.max_size = 50u << 20,
		.smtputf8 = true,
	};
}

/* ---- command table -------------------------------------------------------- */

#define F_PT SMTP_F_PRE_TLS
#define F_PA SMTP_F_PRE_AUTH
#define F_SY SMTP_F_SYNC
#define F_TX SMTP_F_TXN

static const struct {
	const char *name;
	unsigned flags;
} verbs[SMTP_CMD_COUNT_] = {
	[SMTP_CMD_UNKNOWN] = { "UNKNOWN", 0 },
	[SMTP_CMD_HELO] = { "HELO", F_PT | F_PA | F_SY },
	[SMTP_CMD_EHLO] = { "EHLO", F_PT | F_PA | F_SY },
	[SMTP_CMD_MAIL] = { "MAIL", F_TX },
	[SMTP_CMD_RCPT] = { "RCPT", F_TX },
	[SMTP_CMD_DATA] = { "DATA", F_TX | F_SY },
	[SMTP_CMD_BDAT] = { "BDAT", F_TX },
	[SMTP_CMD_RSET] = { "RSET", F_PT | F_PA },
	[SMTP_CMD_NOOP] = { "NOOP", F_PT | F_PA | F_SY },
	[SMTP_CMD_QUIT] = { "QUIT", F_PT | F_PA | F_SY },
	[SMTP_CMD_VRFY] = { "VRFY", F_SY },
	[SMTP_CMD_EXPN] = { "EXPN", F_SY },
	[SMTP_CMD_HELP] = { "HELP", F_PT | F_PA },
	[SMTP_CMD_STARTTLS] = { "STARTTLS", F_PT | F_PA | F_SY },
	[SMTP_CMD_AUTH] = { "AUTH", F_PA | F_SY },
};

const char *smtp_verb_str(enum smtp_verb v)
{
	return (unsigned)v < SMTP_CMD_COUNT_ ? verbs[v].name : "?";
}

unsigned smtp_verb_flags(enum smtp_verb v)
{
	return (unsigned)v < SMTP_CMD_COUNT_ ? verbs[v].flags : 0;
}

/* ---- small helpers -------------------------------------------------------- */

static inline uint8_t upper(uint8_t c)
{
	return c >= 'a' && c <= 'z' ? (uint8_t)(c - 32) : c;
}
static inline bool is_alpha(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
static inline bool is_digit(uint8_t c)
{
	return c >= '0' && c <= '9';
}
static inline bool is_alnum(uint8_t c)
{
	return is_alpha(c) || is_digit(c);
}
static bool eq_nocase(const uint8_t *p, size_t n, const char *s)
{
	size_t m = strlen(s);
	if (n != m)
		return false;
	for (size_t i = 0; i < n; i++)
		if (upper(p[i]) != (uint8_t)s[i])
			return false;
	return true;
}
static bool view_is(struct view v, const char *s)
{
	return eq_nocase(v.ptr, v.len, s);
}

/* Length of the valid non-ASCII UTF-8 sequence at p, or 0. */
static size_t utf8_seq(const uint8_t *p, size_t n)
{
	uint32_t cp;
	return p[0] < 0x80 ? 0 : utf8_decode(p, n, &cp);
}

static enum smtp_result bad(struct smtp_command *out, int code, const char *enh,
			    const char *error)
{
	out->reply_code = code;
	out->enh = enh;
	out->error = error;
	return SMTP_BAD;
}

/* ---- line framing --------------------------------------------------------- */

size_t smtp_skip_line(const uint8_t *p, size_t len, bool *done_r)
{
	const uint8_t *lf = len ? memchr(p, '\n', len) : NULL;
	*done_r = lf != NULL;
	return lf ? (size_t)(lf - p) + 1 : len;
}

static bool starts_auth(const uint8_t *p, size_t len)
{
	return len >= 5 && eq_nocase(p, 4, "AUTH") && p[4] == ' ';
}

/* Frames one line of at most `limit` bytes. OK: *line_r is the content
 * without CRLF. BAD only for an over-long line. */
static enum smtp_result frame_line(const uint8_t *p, size_t len, size_t limit,
				   struct smtp_command *out, size_t *consumed_r,
				   struct view *line_r)
{
	size_t scan = MIN(len, limit);
	const uint8_t *lf = scan ? memchr(p, '\n', scan) : NULL;
	if (!lf) {
		if (len < limit)
			return SMTP_MORE;
		out->line_too_long = true;
		bool done;
		*consumed_r = limit + smtp_skip_line(p + limit, len - limit, &done);
		out->line_open = !done;
		return bad(out, 500, "5.5.2", "Line too long");
	}
	size_t end = (size_t)(lf - p);
	*consumed_r = end + 1;
	if (end > 0 && p[end - 1] == '\r') {
		end--;
	} else {
		out->bare_lf = true;
	}
	*line_r = view_make(p, end);
	return SMTP_OK;
}

/* NUL, CR and controls other than HTAB are refused in command lines. */
static bool line_chars_ok(struct view l)
{
	for (size_t i = 0; i < l.len; i++) {
		uint8_t c = l.ptr[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return false;
	}
	return true;
}

static struct view trim_right(struct view v)
{
	while (v.len && (v.ptr[v.len - 1] == ' ' || v.ptr[v.len - 1] == '\t'))
		v.len--;
	return v;
}

/* ---- paths ------------------------------------------------------------------ */

struct cursor {
	const uint8_t *p;
	size_t n, i;
};

static inline int cur_peek(const struct cursor *c)
{
	return c->i < c->n ? c->p[c->i] : -1;
}

static bool is_atext(uint8_t c)
{
	return is_alnum(c) || (c && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

/* One non-ASCII character where UTF-8 is allowed; records it. */
static bool take_utf8(struct cursor *c, bool allow, bool *utf8)
{
	if (!allow)
		return false;
	size_t k = utf8_seq(c->p + c->i, c->n - c->i);
	if (!k)
		return false;
	c->i += k;
	*utf8 = true;
	return true;
}

/* Domain = sub-domain *("." sub-domain); labels 1..63, letters/digits/'-'
 * (not at either end), UTF-8 when allowed. */
static bool parse_domain(struct cursor *c, bool allow_utf8, bool *utf8)
{
	for (;;) {
		size_t start = c->i;
		bool last_hyphen = false;
		for (;;) {
			int ch = cur_peek(c);
			if (ch < 0)
				break;
			if (is_alnum((uint8_t)ch)) {
				c->i++;
				last_hyphen = false;
			} else if (ch == '-' && c->i > start) {
				c->i++;
				last_hyphen = true;
			} else if (ch >= 0x80) {
				if (!take_utf8(c, allow_utf8, utf8))
					return false;
				last_hyphen = false;
			} else {
				break;
			}
		}
		if (c->i == start || last_hyphen || c->i - start > 63)
			return false;
		if (cur_peek(c) != '.')
			return true;
		c->i++;
	}
}

static bool ipv4_ok(const uint8_t *p, size_t n)
{
	size_t i = 0;
	for (int part = 0; part < 4; part++) {
		if (part) {
			if (i >= n || p[i] != '.')
				return false;
			i++;
		}
		unsigned v = 0, d = 0;
		while (i < n && is_digit(p[i]) && d < 4) {
			v = v * 10 + (unsigned)(p[i] - '0');
			i++;
			d++;
		}
		if (d == 0 || d > 3 || v > 255)
			return false;
	}
	return i == n;
}

static bool addr_literal_ok(const uint8_t *p, size_t n)
{
	if (n && is_digit(p[0]))
		return ipv4_ok(p, n);
	if (n > 5 && eq_nocase(p, 5, "IPV6:")) {
		char tmp[64];
		uint8_t a6[16];
		if (n - 5 >= sizeof(tmp))
			return false;
		memcpy(tmp, p + 5, n - 5);
		tmp[n - 5] = 0;
		return inet_pton(AF_INET6, tmp, a6) == 1;
	}
	/* General-address-literal: Ldh-str ":" 1*dcontent */
	size_t i = 0;
	while (i < n && (is_alnum(p[i]) || p[i] == '-'))
		i++;
	if (i == 0 || p[i - 1] == '-' || i >= n || p[i] != ':' || i + 1 == n)
		return false;
	for (i++; i < n; i++)
		if (p[i] < 33 || p[i] > 126 || p[i] == '[' || p[i] == ']' || p[i] == '\\')
			return false;
	return true;
}

/* Parses a path starting at c->i ('<'). is_mail: "<>" allowed. */
static bool parse_path(struct cursor *c, bool is_mail, const struct smtp_limits *lim,
		       struct smtp_path *path)
{
	size_t start = c->i;
	bool allow = lim->smtputf8;
	memset(path, 0, sizeof(*path));
	if (cur_peek(c) != '<')
		return false;
	c->i++;
	if (cur_peek(c) == '>') {
		c->i++;
		path->null = true;
		return is_mail;
	}
	if (cur_peek(c) == '@') {
		path->source_route = true;
		for (;;) {
			if (cur_peek(c) != '@')
				return false;
			c->i++;
			bool dummy = false;
			if (!parse_domain(c, allow, &dummy))
				return false;
			if (cur_peek(c) == ',') {
				c->i++;
				continue;
			}
			if (cur_peek(c) != ':')
				return false;
			c->i++;
			break;
		}
	}
	size_t mb = c->i;
	if (cur_peek(c) == '"') {
		path->quoted = true;
		c->i++;
		for (;;) {
			int ch = cur_peek(c);
			if (ch < 0)
				return false;
			if (ch == '"') {
				c->i++;
				break;
			}
			if (ch == '\\') {
				c->i++;
				ch = cur_peek(c);
				if (ch < 32 || ch > 126)
					return false;
				c->i++;
			} else if (ch >= 32 && ch <= 126) {
				c->i++;
			} else if (!take_utf8(c, allow, &path->utf8)) {
				return false;
			}
		}
	} else {
		bool need_atom = true;
		for (;;) {
			int ch = cur_peek(c);
			if (ch >= 0 && is_atext((uint8_t)ch)) {
				c->i++;
				need_atom = false;
			} else if (ch >= 0x80) {
				if (!take_utf8(c, allow, &path->utf8))
					return false;
				need_atom = false;
			} else if (ch == '.' && !need_atom) {
				c->i++;
				need_atom = true;
			} else {
				break;
			}
		}
		if (need_atom)
			return false;
	}
	path->local = view_make(c->p + mb, c->i - mb);
	if (cur_peek(c) == '>' && !is_mail && !path->quoted && !path->source_route &&
	    view_is(path->local, "POSTMASTER")) {
		path->postmaster = true;
		path->mailbox = path->local;
		c->i++;
		return true;
	}
	if (cur_peek(c) != '@')
		return false;
	c->i++;
	size_t dom = c->i;
	if (cur_peek(c) == '[') {
		const uint8_t *close = memchr(c->p + c->i, ']', c->n - c->i);
		if (!close)
			return false;
		size_t inner = c->i + 1, end = (size_t)(close - c->p);
		if (!addr_literal_ok(c->p + inner, end - inner))
			return false;
		c->i = end + 1;
		path->addr_literal = true;
	} else if (!parse_domain(c, allow, &path->utf8)) {
		return false;
	}
	path->domain = view_make(c->p + dom, c->i - dom);
	path->mailbox = view_make(c->p + mb, c->i - mb);
	if (cur_peek(c) != '>')
		return false;
	c->i++;
	return c->i - start <= lim->max_path && path->local.len <= lim->max_local &&
	       path->domain.len <= lim->max_domain;
}

/* ---- parameters --------------------------------------------------------------- */

/* xtext (RFC 3461 4): printable ASCII except '+' and '=', or "+XX". */
static bool xtext_ok(struct view v)
{
	for (size_t i = 0; i < v.len; i++) {
		uint8_t c = v.ptr[i];
		if (c == '+') {
			if (i + 2 >= v.len)
				return false;
			for (int k = 1; k <= 2; k++) {
				uint8_t h = v.ptr[i + (size_t)k];
				if (!is_digit(h) && !(h >= 'A' && h <= 'F'))
					return false;
			}
			i += 2;
		} else if (c < 33 || c > 126 || c == '=') {
			return false;
		}
	}
	return true;
}

static bool parse_u64(struct view v, uint64_t *r, bool *overflow)
{
	uint64_t n = 0;
	*overflow = false;
	if (v.len == 0)
		return false;
	for (size_t i = 0; i < v.len; i++) {
		if (!is_digit(v.ptr[i]))
			return false;
		unsigned d = (unsigned)(v.ptr[i] - '0');
		if (n > (UINT64_MAX - d) / 10)
			*overflow = true;
		else
			n = n * 10 + d;
	}
	*r = *overflow ? UINT64_MAX : n;
	return true;
}

enum {
	P_SIZE = 1 << 0,
	P_BODY = 1 << 1,
	P_UTF8 = 1 << 2,
	P_RET = 1 << 3,
	P_ENVID = 1 << 4,
	P_AUTH = 1 << 5,
	P_NOTIFY = 1 << 6,
	P_ORCPT = 1 << 7,
};

#define BAD_PARAM(o) bad(o, 501, "5.5.4", "Invalid parameter")

static enum smtp_result mail_param(struct smtp_command *out, const struct smtp_limits *lim,
				   struct view key, struct view val, bool has_val,
				   unsigned *seen)
{
	unsigned bit;
	if (view_is(key, "SIZE")) {
		bit = P_SIZE;
		bool of;
		if (!has_val || val.len > 20 || !parse_u64(val, &out->size, &of))
			return BAD_PARAM(out);
		out->has_size = true;
	} else if (view_is(key, "BODY")) {
		bit = P_BODY;
		if (view_is(val, "7BIT"))
			out->body = SMTP_BODY_7BIT;
		else if (view_is(val, "8BITMIME"))
			out->body = SMTP_BODY_8BITMIME;
		else if (view_is(val, "BINARYMIME"))
			out->body = SMTP_BODY_BINARYMIME;
		else
			return BAD_PARAM(out);
	} else if (view_is(key, "SMTPUTF8")) {
		bit = P_UTF8;
		if (has_val)
			return BAD_PARAM(out);
		if (!lim->smtputf8) {
			out->unknown_param = key;
			return bad(out, 555, "5.5.4", "SMTPUTF8 not supported");
		}
		out->smtputf8 = true;
	} else if (view_is(key, "RET")) {
		bit = P_RET;
		if (view_is(val, "FULL"))
			out->ret = SMTP_RET_FULL;
		else if (view_is(val, "HDRS"))
			out->ret = SMTP_RET_HDRS;
		else
			return BAD_PARAM(out);
	} else if (view_is(key, "ENVID")) {
		bit = P_ENVID;
		if (!has_val || val.len > 100 || !xtext_ok(val))
			return BAD_PARAM(out);
		out->envid = val;
	} else if (view_is(key, "AUTH")) {
		bit = P_AUTH;
		if (!has_val || (!view_eq_cstr(val, "<>") && !xtext_ok(val)))
			return BAD_PARAM(out);
		out->has_auth_param = true;
		out->auth_param = val;
	} else {
		out->unknown_param = key;
		return bad(out, 555, "5.5.4", "Unsupported parameter");
	}
	if (*seen & bit)
		return bad(out, 501, "5.5.4", "Duplicate parameter");
	*seen |= bit;
	return SMTP_OK;
}

static enum smtp_result rcpt_param(struct smtp_command *out, struct view key,
				   struct view val, bool has_val, unsigned *seen)
{
	unsigned bit;
	if (view_is(key, "NOTIFY")) {
		bit = P_NOTIFY;
		if (!has_val)
			return BAD_PARAM(out);
		size_t i = 0;
		while (i <= val.len) {
			size_t j = i;
			while (j < val.len && val.ptr[j] != ',')
				j++;
			struct view w = view_make(val.ptr + i, j - i);
			unsigned b;
			if (view_is(w, "NEVER"))
				b = SMTP_NOTIFY_NEVER;
			else if (view_is(w, "SUCCESS"))
				b = SMTP_NOTIFY_SUCCESS;
			else if (view_is(w, "FAILURE"))
				b = SMTP_NOTIFY_FAILURE;
			else if (view_is(w, "DELAY"))
				b = SMTP_NOTIFY_DELAY;
			else
				return BAD_PARAM(out);
			if (out->notify & b)
				return BAD_PARAM(out);
			out->notify |= b;
			i = j + 1;
		}
		if ((out->notify & SMTP_NOTIFY_NEVER) && out->notify != SMTP_NOTIFY_NEVER)
			return BAD_PARAM(out);
	} else if (view_is(key, "ORCPT")) {
		bit = P_ORCPT;
		const uint8_t *semi = has_val ? memchr(val.ptr, ';', val.len) : NULL;
		if (!semi || semi == val.ptr || val.len > 500)
			return BAD_PARAM(out);
		size_t tl = (size_t)(semi - val.ptr);
		for (size_t i = 0; i < tl; i++)
			if (!is_alnum(val.ptr[i]) && val.ptr[i] != '-')
				return BAD_PARAM(out);
		struct view rest = view_make(semi + 1, val.len - tl - 1);
		/* utf-8-addr-xtext (RFC 6533) is not checked byte by byte. */
		if (rest.len == 0 || (!xtext_ok(rest) && !view_is(view_make(val.ptr, tl), "UTF-8")))
			return BAD_PARAM(out);
		out->orcpt = val;
	} else {
		out->unknown_param = key;
		return bad(out, 555, "5.5.4", "Unsupported parameter");
	}
	if (*seen & bit)
		return bad(out, 501, "5.5.4", "Duplicate parameter");
	*seen |= bit;
	return SMTP_OK;
}

static enum smtp_result parse_params(struct smtp_command *out, const struct smtp_limits *lim,
				     struct cursor *c, bool is_mail)
{
	unsigned seen = 0, count = 0;
	for (;;) {
		bool sp = false;
		while (cur_peek(c) == ' ') {
			c->i++;
			sp = true;
		}
		if (c->i >= c->n)
			return SMTP_OK;
		if (!sp)
			return bad(out, 501, "5.5.4", "Syntax error after address");
		if (++count > 16)
			return bad(out, 501, "5.5.4", "Too many parameters");
		size_t ks = c->i;
		while (c->i < c->n && (is_alnum(c->p[c->i]) || (c->i > ks && c->p[c->i] == '-')))
			c->i++;
		struct view key = view_make(c->p + ks, c->i - ks);
		struct view val = { c->p + c->i, 0 };
		bool has_val = false;
		if (key.len == 0)
			return bad(out, 501, "5.5.4", "Invalid parameter");
		if (cur_peek(c) == '=') {
			c->i++;
			has_val = true;
			size_t vs = c->i;
			while (c->i < c->n) {
				uint8_t ch = c->p[c->i];
				if (ch >= 33 && ch <= 126 && ch != '=') {
					c->i++;
				} else if (ch >= 0x80) {
					bool u = false;
					if (!take_utf8(c, lim->smtputf8, &u))
						return bad(out, 501, "5.5.4", "Invalid parameter");
				} else {
					break;
				}
			}
			val = view_make(c->p + vs, c->i - vs);
			if (val.len == 0)
				return bad(out, 501, "5.5.4", "Invalid parameter");
		}
		if (c->i < c->n && c->p[c->i] != ' ')
			return bad(out, 501, "5.5.4", "Invalid parameter");
		enum smtp_result r = is_mail ? mail_param(out, lim, key, val, has_val, &seen)
					     : rcpt_param(out, key, val, has_val, &seen);
		if (r != SMTP_OK)
			return r;
	}
}

static enum smtp_result parse_mail_rcpt(struct smtp_command *out, const struct smtp_limits *lim,
					struct view rest, bool is_mail)
{
	const char *kw = is_mail ? "FROM:" : "TO:";
	size_t kl = strlen(kw);
	if (rest.len < kl || !eq_nocase(rest.ptr, kl, kw))
		return bad(out, 501, "5.5.4",
			   is_mail ? "Syntax: MAIL FROM:<address>" : "Syntax: RCPT TO:<address>");
	struct cursor c = { rest.ptr, rest.len, kl };
	while (cur_peek(&c) == ' ')
		c.i++;
	if (!parse_path(&c, is_mail, lim, &out->path)) {
		memset(&out->path, 0, sizeof(out->path));
		return is_mail ? bad(out, 501, "5.1.7", "Bad sender address syntax")
			       : bad(out, 501, "5.1.3", "Bad recipient address syntax");
	}
	enum smtp_result r = parse_params(out, lim, &c, is_mail);
	if (r != SMTP_OK)
		return r;
	if (out->path.utf8 && (!lim->smtputf8 || (is_mail && !out->smtputf8)))
		return bad(out, 553, "5.6.7", "SMTPUTF8 required for this address");
	if (is_mail && out->has_size && lim->max_size && out->size > lim->max_size)
		return bad(out, 552, "5.3.4", "Message size exceeds fixed limit");
	return SMTP_OK;
}

/* ---- commands ------------------------------------------------------------------ */

static bool b64_chars_ok(struct view v)
{
	if (view_eq_cstr(v, "="))
		return true;
	for (size_t i = 0; i < v.len; i++) {
		uint8_t c = v.ptr[i];
		if (!is_alnum(c) && c != '+' && c != '/' && c != '=')
			return false;
	}
	return v.len > 0;
}

static enum smtp_result parse_args(struct smtp_command *out, const struct smtp_limits *lim,
				   struct view rest)
{
	switch (out->verb) {
	case SMTP_CMD_HELO:
	case SMTP_CMD_EHLO:
		if (rest.len == 0)
			return bad(out, 501, "5.5.4", "Syntax: EHLO hostname");
		out->arg = rest;
		return SMTP_OK;
	case SMTP_CMD_MAIL:
		return parse_mail_rcpt(out, lim, rest, true);
	case SMTP_CMD_RCPT:
		return parse_mail_rcpt(out, lim, rest, false);
	case SMTP_CMD_DATA:
	case SMTP_CMD_RSET:
	case SMTP_CMD_QUIT:
	case SMTP_CMD_STARTTLS:
		if (rest.len)
			return bad(out, 501, "5.5.4", "Syntax error (no parameters allowed)");
		return SMTP_OK;
	case SMTP_CMD_NOOP:
	case SMTP_CMD_HELP:
		out->arg = rest;
		return SMTP_OK;
	case SMTP_CMD_VRFY:
	case SMTP_CMD_EXPN:
		if (rest.len == 0)
			return bad(out, 501, "5.5.4", "Argument required");
		out->arg = rest;
		return SMTP_OK;
	case SMTP_CMD_BDAT: {
		/* The chunk follows whatever we answer: a BDAT we cannot size
		 * leaves the stream unsynchronised. */
		size_t i = 0;
		while (i < rest.len && is_digit(rest.ptr[i]))
			i++;
		bool of;
		if (i == 0 || i > 20 || !parse_u64(view_make(rest.ptr, i), &out->bdat_size, &of) ||
		    of) {
			out->reply_code = 554;
			out->enh = "5.5.4";
			out->error = "Invalid BDAT size";
			return SMTP_FATAL;
		}
		struct view tail = view_make(rest.ptr + i, rest.len - i);
		while (tail.len && tail.ptr[0] == ' ') {
			tail.ptr++;
			tail.len--;
		}
		if (tail.len == 0)
			return SMTP_OK;
		if (tail.len != rest.len - i && view_is(tail, "LAST")) {
			out->bdat_last = true;
			return SMTP_OK;
		}
		out->reply_code = 554;
		out->enh = "5.5.4";
		out->error = "Syntax: BDAT size [LAST]";
		return SMTP_FATAL;
	}
	case SMTP_CMD_AUTH: {
		size_t i = 0;
		while (i < rest.len && rest.ptr[i] != ' ')
			i++;
		struct view mech = view_make(rest.ptr, i);
		if (mech.len == 0 || mech.len > 20)
			return bad(out, 501, "5.5.4", "Syntax: AUTH mechanism [initial-response]");
		for (size_t k = 0; k < mech.len; k++)
			if (!is_alnum(mech.ptr[k]) && mech.ptr[k] != '-' && mech.ptr[k] != '_')
				return bad(out, 501, "5.5.4", "Invalid mechanism name");
		out->auth_mech = mech;
		while (i < rest.len && rest.ptr[i] == ' ')
			i++;
		if (i == rest.len)
			return SMTP_OK;
		struct view ir = view_make(rest.ptr + i, rest.len - i);
		if (!b64_chars_ok(ir))
			return bad(out, 501, "5.5.2", "Invalid initial response");
		out->has_initial = true;
		out->auth_initial = ir;
		return SMTP_OK;
	}
	case SMTP_CMD_UNKNOWN:
	case SMTP_CMD_COUNT_:
		break;
	}
	out->arg = rest;
	return SMTP_OK;
}

static bool is_http_verb(struct view kw)
{
	static const char *const http[] = { "GET", "POST", "CONNECT", "HEAD", "PUT" };
	for (size_t i = 0; i < ARRAY_LEN(http); i++)
		if (view_eq_cstr(kw, http[i]))
			return true;
	return false;
}

enum smtp_result smtp_parse_command(const uint8_t *p, size_t len, const struct smtp_limits *lim,
				    struct smtp_command *out, size_t *consumed_r)
{
	memset(out, 0, sizeof(*out));
	*consumed_r = 0;
	/* RFC 5321 4.5.3.1.4: never below 512 (and a 0 would never frame). */
	size_t max_line = MAX(lim->max_line, (size_t)SMTP_LINE_MAX);
	size_t limit = starts_auth(p, len) ? MAX(lim->max_auth_line, max_line) : max_line;
	struct view line;
	enum smtp_result r = frame_line(p, len, limit, out, consumed_r, &line);
	if (r != SMTP_OK)
		return r;
	if (!line_chars_ok(line))
		return bad(out, 500, "5.5.2", "Invalid characters in command");
	size_t k = 0;
	while (k < line.len && line.ptr[k] != ' ')
		k++;
	out->keyword = view_make(line.ptr, k);
	for (int v = 1; v < SMTP_CMD_COUNT_; v++) {
		if (view_is(out->keyword, verbs[v].name)) {
			out->verb = (enum smtp_verb)v;
			break;
		}
	}
	out->flags = verbs[out->verb].flags;
	if (out->verb == SMTP_CMD_UNKNOWN && is_http_verb(out->keyword)) {
		out->reply_code = 554;
		out->enh = "5.7.0";
		out->error = "HTTP is not spoken here";
		return SMTP_FATAL;
	}
	while (k < line.len && line.ptr[k] == ' ')
		k++;
	struct view rest = trim_right(view_make(line.ptr + k, line.len - k));
	return parse_args(out, lim, rest);
}

enum smtp_result smtp_parse_raw_line(const uint8_t *p, size_t len, const struct smtp_limits *lim,
				     struct smtp_command *out, size_t *consumed_r)
{
	memset(out, 0, sizeof(*out));
	*consumed_r = 0;
	struct view line;
	size_t limit = MAX(MAX(lim->max_auth_line, lim->max_line), (size_t)SMTP_LINE_MAX);
	enum smtp_result r = frame_line(p, len, limit, out, consumed_r, &line);
	if (r != SMTP_OK)
		return r;
	if (!line_chars_ok(line))
		return bad(out, 501, "5.5.2", "Invalid characters in response");
	out->arg = line;
	return SMTP_OK;
}

/* ---- DATA ------------------------------------------------------------------------ */

enum {
	D_BOL,    /* at the start of a line (after CRLF) */
	D_DOT,    /* CRLF "." seen; the dot is dropped */
	D_DOT_CR, /* CRLF "." CR seen; the CR is held */
	D_TEXT,   /* inside a line */
	D_CR,     /* inside a line, CR held */
	D_END,
};

void smtp_data_init(struct smtp_data *d, uint64_t max_size, enum smtp_lf_policy policy)
{
	memset(d, 0, sizeof(*d));
	d->state = D_BOL;
	d->max_size = max_size;
	d->lf_policy = policy;
}

struct emit {
	struct smtp_data *d;
	const uint8_t *in;
	smtp_data_out_fn out;
	void *ctx;
	size_t start, end; /* pending run of input bytes [start, end) */
};

static void emit_bytes(struct emit *e, const uint8_t *p, size_t n)
{
	struct smtp_data *d = e->d;
	if (n == 0 || d->too_big || d->out_failed)
		return;
	if (e->out(e->ctx, p, n) < 0)
		d->out_failed = true;
}

static void count(struct smtp_data *d, size_t n)
{
	d->size = d->size + n < d->size ? UINT64_MAX : d->size + n;
	if (d->max_size && d->size > d->max_size)
		d->too_big = true;
}

static void flush(struct emit *e)
{
	emit_bytes(e, e->in + e->start, e->end - e->start);
	e->start = e->end = 0;
}

static void take(struct emit *e, size_t i)
{
	if (e->end == e->start || e->end != i) {
		flush(e);
		e->start = i;
	}
	e->end = i + 1;
	count(e->d, 1);
}

static void literal(struct emit *e, const char *s, size_t n)
{
	flush(e);
	count(e->d, n);
	emit_bytes(e, (const uint8_t *)s, n);
}

/* The CR held from the byte before i (in this input or the previous). */
static void take_held_cr(struct emit *e, size_t i)
{
	if (i > 0)
		take(e, i - 1);
	else
		literal(e, "\r", 1);
}

/* A held CR that no LF follows. */
static void bare_cr(struct emit *e, size_t i)
{
	e->d->bare_cr++;
	if (e->d->lf_policy == SMTP_LF_NORMALIZE)
		literal(e, "\r\n", 2);
	else
		take_held_cr(e, i);
}

int smtp_data_feed(struct smtp_data *d, const uint8_t *in, size_t len, size_t *consumed_r,
		   smtp_data_out_fn out, void *ctx)
{
	struct emit e = { d, in, out, ctx, 0, 0 };
	*consumed_r = 0;
	if (d->done)
		return 1;
	for (size_t i = 0; i < len; i++) {
		uint8_t c = in[i];
		switch (d->state) {
		case D_BOL:
			if (c == '.') {
				flush(&e);
				d->state = D_DOT;
				continue;
			}
			break;
		case D_DOT:
			if (c == '\r') {
				d->state = D_DOT_CR;
				continue;
			}
			break;
		case D_DOT_CR:
			if (c == '\n') {
				flush(&e);
				d->state = D_END;
				d->done = true;
				*consumed_r = i + 1;
				return 1;
			}
			bare_cr(&e, i);
			if (c == '\r') {
				d->state = D_CR;
				continue;
			}
			break;
		case D_CR:
			if (c == '\n') {
				take_held_cr(&e, i);
				take(&e, i);
				d->state = D_BOL;
				continue;
			}
			bare_cr(&e, i);
			if (c == '\r')
				continue; /* the new CR is held */
			break;
		default:
			break;
		}
		/* inside a line */
		d->state = D_TEXT;
		if (c == '\r') {
			d->state = D_CR;
		} else if (c == '\n') {
			d->bare_lf++;
			if (d->lf_policy == SMTP_LF_NORMALIZE)
				literal(&e, "\r\n", 2);
			else
				take(&e, i);
		} else {
			if (c == 0)
				d->nul++;
			take(&e, i);
		}
	}
	flush(&e);
	*consumed_r = len;
	return 0;
}

int smtp_data_status(const struct smtp_data *d, const char **enh_r, const char **text_r)
{
	if (d->out_failed) {
		*enh_r = "4.3.0";
		*text_r = "Temporary failure storing the message";
		return 451;
	}
	if (d->too_big) {
		*enh_r = "5.3.4";
		*text_r = "Message size exceeds fixed limit";
		return 552;
	}
	if (d->bare_lf && d->lf_policy == SMTP_LF_REJECT) {
		*enh_r = "5.6.0";
		*text_r = "Bare LF in message; lines must end in CRLF";
		return 550;
	}
	if (d->bare_cr && d->lf_policy == SMTP_LF_REJECT) {
		*enh_r = "5.6.0";
		*text_r = "Bare CR in message; lines must end in CRLF";
		return 550;
	}
	*enh_r = "2.0.0";
	*text_r = "Ok";
	return 250;
}

/* ---- BDAT ------------------------------------------------------------------------ */

void smtp_bdat_init(struct smtp_bdat *b, uint64_t max_size)
{
	memset(b, 0, sizeof(*b));
	b->max_size = max_size;
}

bool smtp_bdat_begin(struct smtp_bdat *b, uint64_t size, bool last)
{
	b->remaining = size;
	b->last = last;
	b->total = b->total + size < b->total ? UINT64_MAX : b->total + size;
	if (b->max_size && b->total > b->max_size)
		b->too_big = true;
	return !b->too_big;
}

size_t smtp_bdat_take(struct smtp_bdat *b, size_t avail)
{
	size_t n = b->remaining < avail ? (size_t)b->remaining : avail;
	b->remaining -= n;
	return n;
}

/* ---- SASL ------------------------------------------------------------------------ */

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

int smtp_base64_decode(struct view in, uint8_t *out, size_t out_cap, size_t *out_len_r)
{
	size_t n = 0;
	*out_len_r = 0;
	if (in.len % 4 != 0)
		goto fail;
	for (size_t i = 0; i < in.len; i += 4) {
		const uint8_t *q = in.ptr + i;
		bool final = i + 4 == in.len;
		int v[4];
		int pad = 0;
		for (int k = 0; k < 4; k++) {
			if (q[k] == '=' && final && k >= 2) {
				v[k] = 0;
				pad++;
			} else if (pad) {
				goto fail; /* data after '=' */
			} else if ((v[k] = b64_val(q[k])) < 0) {
				goto fail;
			}
		}
		uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
			     (uint32_t)v[3];
		size_t take_n = 3 - (size_t)pad;
		if ((pad == 1 && (w & 0xff)) || (pad == 2 && (w & 0xffff)))
			goto fail; /* non-zero pad bits */
		if (out_cap - n < take_n)
			goto fail;
		out[n++] = (uint8_t)(w >> 16);
		if (take_n > 1)
			out[n++] = (uint8_t)(w >> 8);
		if (take_n > 2)
			out[n++] = (uint8_t)w;
	}
	*out_len_r = n;
	return 0;
fail:
	if (out_cap)
		explicit_bzero(out, out_cap);
	return -1;
}

int smtp_base64_encode(struct buf *out, const void *p, size_t len)
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const uint8_t *s = p;
	size_t olen = (len + 2) / 3 * 4;
	uint8_t *dst = buf_reserve(out, olen);
	if (!dst)
		return -1;
	size_t o = 0;
	for (size_t i = 0; i < len; i += 3) {
		uint32_t w = (uint32_t)s[i] << 16;
		if (i + 1 < len)
			w |= (uint32_t)s[i + 1] << 8;
		if (i + 2 < len)
			w |= s[i + 2];
		dst[o++] = (uint8_t)tab[(w >> 18) & 63];
		dst[o++] = (uint8_t)tab[(w >> 12) & 63];
		dst[o++] = i + 1 < len ? (uint8_t)tab[(w >> 6) & 63] : '=';
		dst[o++] = i + 2 < len ? (uint8_t)tab[w & 63] : '=';
	}
	buf_commit(out, o);
	return 0;
}

bool smtp_sasl_is_cancel(struct view line)
{
	return view_eq_cstr(line, "*");
}

int smtp_sasl_plain_decode(struct view b64, uint8_t *out, size_t out_cap,
			   struct smtp_sasl_plain *r, const char **error_r)
{
	size_t n;
	memset(r, 0, sizeof(*r));
	if (smtp_base64_decode(b64, out, out_cap, &n) < 0 || n == 0) {
		*error_r = "invalid base64";
		return -1;
	}
	const uint8_t *z1 = memchr(out, 0, n);
	const uint8_t *z2 = z1 ? memchr(z1 + 1, 0, n - (size_t)(z1 + 1 - out)) : NULL;
	if (!z2 || memchr(z2 + 1, 0, n - (size_t)(z2 + 1 - out))) {
		*error_r = "malformed PLAIN response";
		goto fail;
	}
	r->authzid = view_make(out, (size_t)(z1 - out));
	r->authcid = view_make(z1 + 1, (size_t)(z2 - z1 - 1));
	r->passwd = view_make(z2 + 1, n - (size_t)(z2 + 1 - out));
	if (r->authcid.len == 0 || r->passwd.len == 0 || r->authcid.len > SMTP_SASL_ID_MAX ||
	    r->authzid.len > SMTP_SASL_ID_MAX || r->passwd.len > SMTP_SASL_PASS_MAX) {
		*error_r = "bad PLAIN field length";
		goto fail;
	}
	return 0;
fail:
	memset(r, 0, sizeof(*r));
	explicit_bzero(out, out_cap);
	return -1;
}

int smtp_sasl_login_decode(struct view b64, uint8_t *out, size_t out_cap, size_t max,
			   struct view *r, const char **error_r)
{
	size_t n;
	*r = view_make(out, 0);
	if (smtp_base64_decode(b64, out, out_cap, &n) < 0) {
		*error_r = "invalid base64";
		return -1;
	}
	if (n == 0 || n > max || memchr(out, 0, n)) {
		*error_r = "bad LOGIN response";
		explicit_bzero(out, out_cap);
		return -1;
	}
	*r = view_make(out, n);
	return 0;
}

/* ---- replies ------------------------------------------------------------------------ */

/* Formats one line "code<sep>[enh ]text\r\n" onto out. */
static int reply_line(struct buf *out, int code, char sep, const char *enh, const char *fmt,
		      va_list ap)
{
	char text[SMTP_REPLY_LINE_MAX];
	int hl = snprintf(text, sizeof(text), "%03d%c%s%s", code, sep, enh ? enh : "",
			  enh ? " " : "");
	if (hl < 0 || (size_t)hl >= sizeof(text))
		return -1;
	int tl = vsnprintf(text + hl, sizeof(text) - (size_t)hl, fmt, ap);
	if (tl < 0)
		return -1;
	size_t n = (size_t)hl + (size_t)tl;
	if (n > sizeof(text) - 2)
		n = sizeof(text) - 2;
	for (size_t i = (size_t)hl; i < n; i++)
		if ((uint8_t)text[i] < 0x20 || text[i] == 0x7f)
			text[i] = '?';
	text[n] = '\r';
	text[n + 1] = '\n';
	return buf_append(out, text, n + 2);
}

int smtp_reply(struct buf *out, int code, const char *enh, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = reply_line(out, code, ' ', enh, fmt, ap);
	va_end(ap);
	return r;
}

void smtp_multi_begin(struct smtp_multi *m, struct buf *out, int code, const char *enh)
{
	*m = (struct smtp_multi){ .out = out, .code = code, .enh = enh, .start = out->len };
}

void smtp_multi_add(struct smtp_multi *m, const char *fmt, ...)
{
	if (m->failed)
		return;
	size_t at = m->out->len;
	va_list ap;
	va_start(ap, fmt);
	if (reply_line(m->out, m->code, '-', m->enh, fmt, ap) < 0)
		m->failed = true;
	va_end(ap);
	m->last_sep = at + 3;
	m->any = true;
}

int smtp_multi_end(struct smtp_multi *m)
{
	if (m->failed || !m->any) {
		m->out->len = m->start;
		return -1;
	}
	m->out->data[m->last_sep] = ' ';
	return 0;
}

int smtp_ehlo_reply(struct buf *out, const char *host, const char *greeting,
		    const struct smtp_ehlo_caps *caps)
{
	struct smtp_multi m;
	smtp_multi_begin(&m, out, 250, NULL);
	smtp_multi_add(&m, "%s%s%s", host, greeting ? " " : "", greeting ? greeting : "");
	if (caps->pipelining)
		smtp_multi_add(&m, "PIPELINING");
	if (caps->size)
		smtp_multi_add(&m, "SIZE %llu", (unsigned long long)caps->size);
	else
		smtp_multi_add(&m, "SIZE");
	if (caps->eightbitmime)
		smtp_multi_add(&m, "8BITMIME");
	if (caps->binarymime)
		smtp_multi_add(&m, "BINARYMIME");
	if (caps->chunking)
		smtp_multi_add(&m, "CHUNKING");
	if (caps->smtputf8)
		smtp_multi_add(&m, "SMTPUTF8");
	if (caps->enhancedstatuscodes)
		smtp_multi_add(&m, "ENHANCEDSTATUSCODES");
	if (caps->dsn)
		smtp_multi_add(&m, "DSN");
	if (caps->starttls)
		smtp_multi_add(&m, "STARTTLS");
	if (caps->auth)
		smtp_multi_add(&m, "AUTH %s", caps->auth);
	return smtp_multi_end(&m);
}
