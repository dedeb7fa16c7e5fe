#include "bench/imap_reply.h"

#include <ctype.h>
#include <stdio.h>
#include <strings.h>

/* ---- reader ------------------------------------------------------------ */

void imap_reply_reader_init(struct imap_reply_reader *r, size_t max_line)
{
	memset(r, 0, sizeof(*r));
	buf_init(&r->line, max_line);
}

void imap_reply_reader_cleanup(struct imap_reply_reader *r)
{
	buf_cleanup(&r->line);
	memset(r, 0, sizeof(*r));
}

/* Does the buffered line (ending in LF) end with a literal announcement
 * "{n}" / "~{n}"? Sizes above 2^63 are not literals (the line then fails
 * the checks instead of making us skip forever). */
static bool ends_with_literal(const struct buf *b, uint64_t *n_r)
{
	size_t e = b->len;
	if (e < 4 || b->data[e - 1] != '\n')
		return false;
	e--;
	if (b->data[e - 1] == '\r')
		e--;
	if (e < 3 || b->data[e - 1] != '}')
		return false;
	e--;
	size_t d = e;
	while (d > 0 && isdigit(b->data[d - 1]) && e - d < 20)
		d--;
	if (d == e || d == 0 || b->data[d - 1] != '{' || e - d > 18)
		return false;
	uint64_t n = 0;
	for (size_t i = d; i < e; i++)
		n = n * 10 + (uint64_t)(b->data[i] - '0');
	*n_r = n;
	return true;
}

enum imap_reply_result imap_reply_feed(struct imap_reply_reader *r, const uint8_t *data,
				       size_t len, size_t *consumed_r)
{
	if (r->done) {
		buf_reset(&r->line);
		r->lit_bytes = 0;
		r->lits = 0;
		r->done = false;
	}
	size_t off = 0;
	while (off < len) {
		if (r->lit_left) {
			size_t n = (size_t)MIN((uint64_t)(len - off), r->lit_left);
			r->lit_left -= n;
			r->lit_bytes += n;
			off += n;
			continue;
		}
		const uint8_t *lf = memchr(data + off, '\n', len - off);
		size_t take = lf ? (size_t)(lf - (data + off)) + 1 : len - off;
		if (buf_append(&r->line, data + off, take) < 0) {
			*consumed_r = off;
			return IMAP_REPLY_TOO_LONG;
		}
		off += take;
		if (!lf)
			break;
		uint64_t n;
		if (ends_with_literal(&r->line, &n)) {
			r->lit_left = n;
			r->lits++;
			continue;
		}
		r->done = true;
		*consumed_r = off;
		return IMAP_REPLY_DONE;
	}
	*consumed_r = off;
	return IMAP_REPLY_MORE;
}

struct view imap_reply_reader_line(const struct imap_reply_reader *r)
{
	size_t n = r->line.len;
	if (n && r->line.data[n - 1] == '\n')
		n--;
	if (n && r->line.data[n - 1] == '\r')
		n--;
	return view_make(r->line.data, n);
}

/* ---- lenient outline ------------------------------------------------- */

static bool word_is(struct view w, const char *s)
{
	return view_eq_nocase(w, s);
}

static enum imap_reply_status status_of(struct view w)
{
	if (word_is(w, "OK"))
		return IMAP_STATUS_OK;
	if (word_is(w, "NO"))
		return IMAP_STATUS_NO;
	if (word_is(w, "BAD"))
		return IMAP_STATUS_BAD;
	if (word_is(w, "PREAUTH"))
		return IMAP_STATUS_PREAUTH;
	if (word_is(w, "BYE"))
		return IMAP_STATUS_BYE;
	return IMAP_STATUS_NONE;
}

/* Next space-delimited word of [*p, end). */
static struct view next_word(const uint8_t **p, const uint8_t *end)
{
	const uint8_t *s = *p;
	const uint8_t *sp = memchr(s, ' ', (size_t)(end - s));
	const uint8_t *e = sp ? sp : end;
	*p = sp ? sp + 1 : end;
	return view_make(s, (size_t)(e - s));
}

static void parse_resp_text(struct view v, struct imap_reply *out)
{
	const uint8_t *p = v.ptr, *end = v.ptr + v.len;
	if (p < end && *p == '[') {
		const uint8_t *close = memchr(p, ']', (size_t)(end - p));
		if (close) {
			const uint8_t *name = p + 1;
			const uint8_t *q = name;
			while (q < close && *q != ' ')
				q++;
			out->code = view_make(name, (size_t)(q - name));
			if (q < close)
				out->code_args = view_make(q + 1, (size_t)(close - q - 1));
			p = close + 1;
			if (p < end && *p == ' ')
				p++;
		}
	}
	out->text = view_make(p, (size_t)(end - p));
}

int imap_reply_parse(struct view line, struct imap_reply *out, const char **error_r)
{
	memset(out, 0, sizeof(*out));
	const uint8_t *p = line.ptr, *end = line.ptr + line.len;
	if (line.len == 0) {
		*error_r = "empty response line";
		return -1;
	}
	if (p[0] == '+') {
		out->kind = IMAP_REPLY_CONTINUE;
		p++;
		if (p < end && *p == ' ')
			p++;
		out->text = view_make(p, (size_t)(end - p));
		return 0;
	}
	if (p[0] == '*') {
		out->kind = IMAP_REPLY_UNTAGGED;
		if (line.len < 3 || p[1] != ' ') {
			*error_r = "untagged response without data";
			return -1;
		}
		p += 2;
		struct view w = next_word(&p, end);
		if (w.len && isdigit(w.ptr[0])) {
			uint64_t n = 0;
			for (size_t i = 0; i < w.len; i++) {
				if (!isdigit(w.ptr[i]) || n > UINT32_MAX) {
					*error_r = "bad message number";
					return -1;
				}
				n = n * 10 + (uint64_t)(w.ptr[i] - '0');
			}
			if (n > UINT32_MAX) {
				*error_r = "bad message number";
				return -1;
			}
			out->has_number = true;
			out->number = (uint32_t)n;
			w = next_word(&p, end);
		}
		if (w.len == 0) {
			*error_r = "untagged response without a keyword";
			return -1;
		}
		out->word = w;
		out->status = out->has_number ? IMAP_STATUS_NONE : status_of(w);
		out->rest = view_make(p, (size_t)(end - p));
		if (out->status != IMAP_STATUS_NONE)
			parse_resp_text(out->rest, out);
		return 0;
	}
	out->kind = IMAP_REPLY_TAGGED;
	out->tag = next_word(&p, end);
	struct view w = next_word(&p, end);
	out->word = w;
	out->status = status_of(w);
	if (out->tag.len == 0 || out->status == IMAP_STATUS_NONE ||
	    out->status == IMAP_STATUS_PREAUTH || out->status == IMAP_STATUS_BYE) {
		*error_r = "tagged response is not OK, NO or BAD";
		return -1;
	}
	out->rest = view_make(p, (size_t)(end - p));
	parse_resp_text(out->rest, out);
	return 0;
}

/* ---- strict grammar ------------------------------------------------------ */

struct cur {
	const uint8_t *p, *end;
	const char *err;
	unsigned depth;
};

#define MAX_DEPTH 64

static bool fail(struct cur *c, const char *why)
{
	if (!c->err)
		c->err = why;
	return false;
}

static bool at_end(const struct cur *c)
{
	return c->p >= c->end;
}

static bool peek(const struct cur *c, uint8_t ch)
{
	return c->p < c->end && *c->p == ch;
}

static bool eat(struct cur *c, uint8_t ch)
{
	if (!peek(c, ch))
		return false;
	c->p++;
	return true;
}

static bool sp(struct cur *c)
{
	return eat(c, ' ') || fail(c, "expected a space");
}

static bool is_ctl(uint8_t ch)
{
	return ch < 0x20 || ch == 0x7f;
}

/* ATOM-CHAR: any CHAR except atom-specials. */
static bool atom_char(uint8_t ch)
{
	return ch < 0x80 && !is_ctl(ch) && !strchr("(){ %*\"\\]", ch);
}

/* ASTRING-CHAR = ATOM-CHAR / "]" */
static bool astring_char(uint8_t ch)
{
	return atom_char(ch) || ch == ']';
}

static struct view atom(struct cur *c)
{
	const uint8_t *s = c->p;
	while (c->p < c->end && atom_char(*c->p))
		c->p++;
	return view_make(s, (size_t)(c->p - s));
}

/* An atom up to a '[' (FETCH attribute names: BODY[...]). */
static struct view att_name(struct cur *c)
{
	const uint8_t *s = c->p;
	while (c->p < c->end && atom_char(*c->p) && *c->p != '[')
		c->p++;
	return view_make(s, (size_t)(c->p - s));
}

static bool number64(struct cur *c, uint64_t *v_r)
{
	const uint8_t *s = c->p;
	uint64_t v = 0;
	while (c->p < c->end && isdigit(*c->p)) {
		if (v > (UINT64_MAX - 9) / 10)
			return fail(c, "number too large");
		v = v * 10 + (uint64_t)(*c->p - '0');
		c->p++;
	}
	if (c->p == s)
		return fail(c, "expected a number");
	if (v_r)
		*v_r = v;
	return true;
}

static bool number32(struct cur *c, uint32_t *v_r)
{
	uint64_t v;
	if (!number64(c, &v))
		return false;
	if (v > UINT32_MAX)
		return fail(c, "number above 2^32-1");
	if (v_r)
		*v_r = (uint32_t)v;
	return true;
}

static bool nz_number(struct cur *c, uint32_t *v_r)
{
	uint32_t v;
	if (!number32(c, &v))
		return false;
	if (v == 0)
		return fail(c, "zero where a non-zero number is required");
	if (v_r)
		*v_r = v;
	return true;
}

static bool quoted(struct cur *c)
{
	if (!eat(c, '"'))
		return fail(c, "expected a quoted string");
	while (c->p < c->end) {
		uint8_t ch = *c->p;
		if (ch == '"') {
			c->p++;
			return true;
		}
		if (ch == '\r' || ch == '\n' || ch == 0)
			return fail(c, "CR, LF or NUL in a quoted string");
		if (ch == '\\') {
			c->p++;
			if (!peek(c, '"') && !peek(c, '\\'))
				return fail(c, "bad escape in a quoted string");
			c->p++;
			continue;
		}
		if (ch >= 0x80) {
			uint32_t cp;
			size_t n = utf8_decode(c->p, (size_t)(c->end - c->p), &cp);
			if (!n)
				return fail(c, "invalid UTF-8 in a quoted string");
			c->p += n;
			continue;
		}
		c->p++;
	}
	return fail(c, "unterminated quoted string");
}

/* "{n}" CRLF, as the reader leaves it (the literal's bytes skipped). */
static bool literal(struct cur *c, bool allow8)
{
	if (allow8)
		eat(c, '~');
	if (!eat(c, '{'))
		return fail(c, "expected a literal");
	if (!number64(c, NULL))
		return false;
	if (!eat(c, '}'))
		return fail(c, "bad literal announcement");
	if (!eat(c, '\r') || !eat(c, '\n'))
		return fail(c, "literal announcement not at a line end");
	return true;
}

static bool string(struct cur *c)
{
	if (peek(c, '"'))
		return quoted(c);
	if (peek(c, '{'))
		return literal(c, false);
	return fail(c, "expected a string");
}

static bool is_nil(struct cur *c)
{
	if (c->end - c->p >= 3 && strncasecmp((const char *)c->p, "NIL", 3) == 0 &&
	    (c->end - c->p == 3 || !atom_char(c->p[3]))) {
		c->p += 3;
		return true;
	}
	return false;
}

static bool nstring(struct cur *c)
{
	return is_nil(c) || string(c);
}

static bool astring(struct cur *c)
{
	if (peek(c, '"') || peek(c, '{'))
		return string(c);
	const uint8_t *s = c->p;
	while (c->p < c->end && astring_char(*c->p))
		c->p++;
	return c->p > s || fail(c, "expected an astring");
}

/* flag = "\Answered" / ... / "\" atom / keyword; "\*" only where perm. */
static bool flag(struct cur *c, bool perm)
{
	if (eat(c, '\\')) {
		if (perm && eat(c, '*'))
			return true;
		return atom(c).len > 0 || fail(c, "empty system flag");
	}
	return atom(c).len > 0 || fail(c, "expected a flag");
}

static bool flag_list(struct cur *c, bool perm, struct view *inner_r)
{
	if (!eat(c, '('))
		return fail(c, "expected a flag list");
	const uint8_t *s = c->p;
	if (!peek(c, ')')) {
		do {
			if (!flag(c, perm))
				return false;
		} while (eat(c, ' '));
	}
	if (inner_r)
		*inner_r = view_make(s, (size_t)(c->p - s));
	return eat(c, ')') || fail(c, "unterminated flag list");
}

static bool value(struct cur *c);

static bool list(struct cur *c, unsigned *count_r)
{
	if (!eat(c, '('))
		return fail(c, "expected a list");
	if (++c->depth > MAX_DEPTH)
		return fail(c, "lists nested too deep");
	unsigned n = 0;
	if (!peek(c, ')')) {
		/* Lists follow each other without a space in address lists
		 * and multipart body structures: "((...)(...))". */
		do {
			if (!value(c))
				return false;
			n++;
		} while (eat(c, ' ') || (peek(c, '(') && c->p[-1] == ')'));
	}
	c->depth--;
	if (count_r)
		*count_r = n;
	return eat(c, ')') || fail(c, "unbalanced parenthesis");
}

/* Any well-formed value: NIL, number, atom (with a [section] and
 * <origin>), "\" flag, quoted, literal, list. */
static bool value(struct cur *c)
{
	if (at_end(c))
		return fail(c, "expected a value");
	switch (*c->p) {
	case '(':
		return list(c, NULL);
	case '"':
		return quoted(c);
	case '{':
	case '~':
		return literal(c, true);
	case '\\':
		c->p++;
		if (eat(c, '*'))
			return true;
		return atom(c).len > 0 || fail(c, "empty flag");
	default:
		break;
	}
	struct view a = att_name(c);
	if (!a.len)
		return fail(c, "expected a value");
	if (eat(c, '[')) {
		while (c->p < c->end && *c->p != ']' && *c->p != '\r' && *c->p != '\n')
			c->p++;
		if (!eat(c, ']'))
			return fail(c, "unterminated section");
		/* ASTRING-CHAR may go on after ']' ("a]b" is an astring). */
		while (c->p < c->end && astring_char(*c->p))
			c->p++;
	}
	return true;
}

static bool text(struct cur *c)
{
	while (c->p < c->end) {
		if (*c->p == '\r' || *c->p == '\n' || *c->p == 0)
			return fail(c, "CR, LF or NUL in response text");
		c->p++;
	}
	return true;
}

/* uid-set = (uid-range / nz-number) *("," ...) */
static bool uid_set(struct cur *c)
{
	do {
		if (!nz_number(c, NULL))
			return false;
		if (eat(c, ':') && !nz_number(c, NULL))
			return false;
	} while (eat(c, ','));
	return true;
}

static bool resp_text_code(struct cur *c)
{
	struct view name = atom(c);
	if (!name.len)
		return fail(c, "empty response code");
	if (word_is(name, "UIDNEXT") || word_is(name, "UIDVALIDITY") || word_is(name, "UNSEEN"))
		return sp(c) && nz_number(c, NULL);
	if (word_is(name, "PERMANENTFLAGS"))
		return sp(c) && flag_list(c, true, NULL);
	if (word_is(name, "APPENDUID"))
		return sp(c) && nz_number(c, NULL) && sp(c) && uid_set(c);
	if (word_is(name, "COPYUID"))
		return sp(c) && nz_number(c, NULL) && sp(c) && uid_set(c) && sp(c) && uid_set(c);
	if (word_is(name, "HIGHESTMODSEQ"))
		return sp(c) && number64(c, NULL);
	if (word_is(name, "CAPABILITY")) {
		if (!sp(c))
			return false;
		do {
			if (!atom(c).len)
				return fail(c, "empty capability");
		} while (eat(c, ' '));
		return true;
	}
	if (word_is(name, "READ-ONLY") || word_is(name, "READ-WRITE") || word_is(name, "ALERT") ||
	    word_is(name, "PARSE") || word_is(name, "TRYCREATE"))
		return peek(c, ']') || fail(c, "response code takes no arguments");
	if (eat(c, ' ')) {
		const uint8_t *s = c->p;
		while (c->p < c->end && *c->p != ']' && *c->p != '\r' && *c->p != '\n')
			c->p++;
		if (c->p == s)
			return fail(c, "empty response code argument");
	}
	return true;
}

/* resp-text = ["[" resp-text-code "]" [SP]] [text], after the status
 * word; the space before it may be missing when nothing follows (RFC
 * 9051 errata 7303). */
static bool resp_text(struct cur *c)
{
	if (at_end(c))
		return true;
	if (!sp(c))
		return false;
	if (eat(c, '[')) {
		if (!resp_text_code(c))
			return false;
		if (!eat(c, ']'))
			return fail(c, "unterminated response code");
		if (at_end(c))
			return true;
		if (!sp(c))
			return false;
	}
	return text(c);
}

static bool date_time(struct cur *c)
{
	/* "dd-Mon-yyyy hh:mm:ss +zzzz", the day may be " d". */
	static const char *const mon[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
					   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	const uint8_t *p = c->p;
	if (c->end - p < 28 || p[0] != '"' || p[27] != '"')
		return fail(c, "bad date-time");
	p++;
	bool ok = (p[0] == ' ' || isdigit(p[0])) && isdigit(p[1]) && p[2] == '-' && p[6] == '-' &&
		  isdigit(p[7]) && isdigit(p[8]) && isdigit(p[9]) && isdigit(p[10]) &&
		  p[11] == ' ' && isdigit(p[12]) && isdigit(p[13]) && p[14] == ':' &&
		  isdigit(p[15]) && isdigit(p[16]) && p[17] == ':' && isdigit(p[18]) &&
		  isdigit(p[19]) && p[20] == ' ' && (p[21] == '+' || p[21] == '-') &&
		  isdigit(p[22]) && isdigit(p[23]) && isdigit(p[24]) && isdigit(p[25]);
	bool m = false;
	for (size_t i = 0; i < ARRAY_LEN(mon) && ok; i++)
		m = m || memcmp(p + 3, mon[i], 3) == 0;
	if (!ok || !m)
		return fail(c, "bad date-time");
	c->p += 28;
	return true;
}

/* One msg-att item; fills out where it is one we track. */
static bool fetch_item(struct cur *c, struct imap_fetch_atts *out)
{
	const uint8_t *s = c->p;
	struct view name = att_name(c);
	if (!name.len)
		return fail(c, "expected a FETCH attribute");
	bool section = false;
	struct view base = name;
	if (eat(c, '[')) {
		section = true;
		while (c->p < c->end && *c->p != ']' && *c->p != '\r' && *c->p != '\n')
			c->p++;
		if (!eat(c, ']'))
			return fail(c, "unterminated section");
		if (eat(c, '<')) {
			if (!number64(c, NULL) || !eat(c, '>'))
				return fail(c, "bad origin octet");
		}
		name = view_make(s, (size_t)(c->p - s));
	}
	if (!sp(c))
		return false;
	if (section) {
		if (word_is(base, "BINARY.SIZE"))
			return number64(c, NULL);
		if (word_is(base, "BODY") || word_is(base, "BINARY")) {
			if (peek(c, '{') || peek(c, '~'))
				out->literals++;
			if (word_is(base, "BINARY") && peek(c, '~'))
				return literal(c, true);
			return nstring(c);
		}
		return fail(c, "unknown FETCH section attribute");
	}
	if (word_is(name, "UID")) {
		out->has_uid = true;
		return nz_number(c, &out->uid);
	}
	if (word_is(name, "FLAGS")) {
		out->has_flags = true;
		return flag_list(c, false, &out->flags);
	}
	if (word_is(name, "RFC822.SIZE")) {
		out->has_size = true;
		return number64(c, &out->size);
	}
	if (word_is(name, "INTERNALDATE"))
		return date_time(c);
	if (word_is(name, "SAVEDATE"))
		return is_nil(c) || date_time(c);
	if (word_is(name, "ENVELOPE")) {
		unsigned n;
		if (!list(c, &n))
			return false;
		return n == 10 || fail(c, "ENVELOPE does not have 10 fields");
	}
	if (word_is(name, "BODY") || word_is(name, "BODYSTRUCTURE"))
		return list(c, NULL);
	if (word_is(name, "RFC822") || word_is(name, "RFC822.HEADER") ||
	    word_is(name, "RFC822.TEXT")) {
		if (peek(c, '{'))
			out->literals++;
		return nstring(c);
	}
	if (word_is(name, "MODSEQ")) {
		if (!eat(c, '(') || !number64(c, NULL) || !eat(c, ')'))
			return fail(c, "bad MODSEQ");
		return true;
	}
	return value(c);
}

static bool msg_att(struct cur *c, struct imap_fetch_atts *out)
{
	memset(out, 0, sizeof(*out));
	if (!eat(c, '('))
		return fail(c, "expected '(' after FETCH");
	do {
		if (!fetch_item(c, out))
			return false;
	} while (eat(c, ' '));
	return eat(c, ')') || fail(c, "FETCH attributes not closed");
}

static bool mailbox(struct cur *c)
{
	return astring(c);
}

static bool untagged(struct cur *c)
{
	if (c->p < c->end && isdigit(*c->p)) {
		uint32_t n;
		if (!number32(c, &n) || !sp(c))
			return false;
		struct view w = atom(c);
		if (word_is(w, "EXISTS") || word_is(w, "RECENT"))
			return true;
		if (n == 0)
			return fail(c, "message number 0");
		if (word_is(w, "EXPUNGE"))
			return true;
		if (word_is(w, "FETCH")) {
			struct imap_fetch_atts a;
			return sp(c) && msg_att(c, &a);
		}
		return fail(c, "unknown message data");
	}
	struct view w = atom(c);
	if (!w.len)
		return fail(c, "expected a response keyword");
	switch (status_of(w)) {
	case IMAP_STATUS_NONE:
		break;
	default:
		return resp_text(c);
	}
	if (word_is(w, "CAPABILITY")) {
		if (!sp(c))
			return false;
		do {
			if (!atom(c).len)
				return fail(c, "empty capability");
		} while (eat(c, ' '));
		return true;
	}
	if (word_is(w, "FLAGS"))
		return sp(c) && flag_list(c, false, NULL);
	if (word_is(w, "LIST") || word_is(w, "LSUB")) {
		if (!sp(c) || !flag_list(c, false, NULL) || !sp(c))
			return false;
		if (!is_nil(c) && !quoted(c))
			return false;
		if (!sp(c) || !mailbox(c))
			return false;
		while (eat(c, ' '))
			if (!value(c))
				return false;
		return true;
	}
	if (word_is(w, "SEARCH")) {
		while (eat(c, ' ')) {
			if (peek(c, '(')) /* (MODSEQ n), RFC 7162 */
				return list(c, NULL);
			if (!nz_number(c, NULL))
				return false;
		}
		return true;
	}
	if (word_is(w, "STATUS")) {
		if (!sp(c) || !mailbox(c) || !sp(c) || !eat(c, '('))
			return fail(c, "bad STATUS");
		if (!peek(c, ')')) {
			do {
				if (!atom(c).len || !sp(c) || !number64(c, NULL))
					return fail(c, "bad STATUS item");
			} while (eat(c, ' '));
		}
		return eat(c, ')') || fail(c, "STATUS items not closed");
	}
	if (word_is(w, "ENABLED")) {
		while (eat(c, ' '))
			if (!atom(c).len)
				return fail(c, "empty capability");
		return true;
	}
	while (eat(c, ' '))
		if (!value(c))
			return false;
	return true;
}

static bool tag_char(uint8_t ch)
{
	return astring_char(ch) && ch != '+';
}

int imap_reply_check(struct view line, const char **error_r)
{
	struct cur c = { .p = line.ptr, .end = line.ptr + line.len };
	bool ok;
	if (line.len == 0) {
		ok = fail(&c, "empty response line");
	} else if (line.ptr[0] == '+') {
		c.p++;
		ok = at_end(&c) || (sp(&c) && text(&c));
	} else if (line.ptr[0] == '*') {
		c.p++;
		ok = sp(&c) && untagged(&c);
	} else {
		while (c.p < c.end && tag_char(*c.p))
			c.p++;
		ok = c.p > line.ptr || fail(&c, "bad tag");
		if (ok && sp(&c)) {
			struct view w = atom(&c);
			enum imap_reply_status st = status_of(w);
			if (st != IMAP_STATUS_OK && st != IMAP_STATUS_NO && st != IMAP_STATUS_BAD)
				ok = fail(&c, "tagged response is not OK, NO or BAD");
			else
				ok = resp_text(&c);
		} else {
			ok = false;
		}
	}
	if (ok && !at_end(&c))
		ok = fail(&c, "unexpected data at the end of the response");
	if (!ok)
		*error_r = c.err ? c.err : "syntax error";
	return ok ? 0 : -1;
}

int imap_reply_fetch(struct view rest, struct imap_fetch_atts *out, const char **error_r)
{
	struct cur c = { .p = rest.ptr, .end = rest.ptr + rest.len };
	if (!msg_att(&c, out) || !at_end(&c)) {
		*error_r = c.err ? c.err : "unexpected data after the FETCH attributes";
		return -1;
	}
	return 0;
}

bool imap_flags_has(struct view flags, const char *flag_name)
{
	const uint8_t *p = flags.ptr, *end = flags.ptr + flags.len;
	while (p < end) {
		struct view w = next_word(&p, end);
		if (view_eq_nocase(w, flag_name))
			return true;
	}
	return false;
}

int imap_reply_appenduid(struct view code_args, uint32_t *uidvalidity_r, uint32_t *uid_r)
{
	struct cur c = { .p = code_args.ptr, .end = code_args.ptr + code_args.len };
	if (!nz_number(&c, uidvalidity_r) || !sp(&c) || !nz_number(&c, uid_r) || !at_end(&c))
		return -1;
	return 0;
}
