#include "storage/mime.h"

#include <stdio.h>
#include <stdlib.h>

/* ===== Blob layout (see mime.h) ===== */

#define BLOB_VERSION 1
#define BLOB_HDR_LEN 24
#define REC_FIXED 56
#define R_REC_LEN 0
#define R_SUBTREE 4
#define R_NCHILD 8
#define R_KIND 12
#define R_FLAGS 13
#define R_DEPTH 14
#define R_HDR_START 16
#define R_HDR_LEN 24
#define R_BODY_START 32
#define R_BODY_LEN 40
#define R_LINES 48

enum { KIND_LEAF, KIND_MULTIPART, KIND_MESSAGE };

enum {
	TAG_TYPE = 1,
	TAG_SUBTYPE = 2,
	TAG_PARAM = 3,
	TAG_ID = 4,
	TAG_DESC = 5,
	TAG_CTE = 6,
	TAG_MD5 = 7,
	TAG_DISP = 8,
	TAG_DISP_PARAM = 9,
	TAG_LANG = 10,
	TAG_LOC = 11,
	TAG_DATE = 20,
	TAG_SUBJECT = 21,
	TAG_FROM = 22,
	TAG_SENDER = 23,
	TAG_REPLY_TO = 24,
	TAG_TO = 25,
	TAG_CC = 26,
	TAG_BCC = 27,
	TAG_IN_REPLY_TO = 28,
	TAG_MESSAGE_ID = 29,
	TAG_SEARCH_BASE = 40, /* + enum mime_search_field */
};

#define MAX_BOUNDARY 200
#define MAX_TYPE 127
#define MAX_PARAMS 64
#define MAX_CONTINUATIONS 64
#define MAX_ENCODED_WORD 512
#define HARD_MAX_DEPTH 1000
#define READ_MAX_DEPTH (HARD_MAX_DEPTH + 8)

/* ===== Small helpers ===== */

static inline uint8_t lc(uint8_t c)
{
	return c >= 'A' && c <= 'Z' ? (uint8_t)(c + 32) : c;
}

static inline bool is_wsp(uint8_t c)
{
	return c == ' ' || c == '\t';
}

static inline bool is_fws(uint8_t c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static struct view view_trim(struct view v)
{
	while (v.len && is_fws(v.ptr[0])) {
		v.ptr++;
		v.len--;
	}
	while (v.len && is_fws(v.ptr[v.len - 1]))
		v.len--;
	return v;
}

static bool view_ieq(struct view v, const char *s)
{
	return view_eq_nocase(v, s);
}

/* Appends to a buffer without a maximum; only allocation failure (abort)
 * can stop it. */
static void bput(struct buf *b, const void *d, size_t n)
{
	if (buf_append(b, d, n) != 0)
		abort();
}

static void bput_u8(struct buf *b, uint8_t v)
{
	bput(b, &v, 1);
}

static void bput_varint(struct buf *b, uint64_t v)
{
	uint8_t tmp[10];
	size_t n = 0;
	do {
		tmp[n] = (uint8_t)(v & 0x7f);
		v >>= 7;
		if (v)
			tmp[n] |= 0x80;
		n++;
	} while (v);
	bput(b, tmp, n);
}

static void patch_le(struct buf *b, size_t off, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		b->data[off + i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static bool get_varint(const uint8_t **pp, const uint8_t *end, uint64_t *v)
{
	uint64_t r = 0;
	for (unsigned shift = 0; shift < 64; shift += 7) {
		if (*pp >= end)
			return false;
		uint8_t c = *(*pp)++;
		r |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80)) {
			*v = r;
			return true;
		}
	}
	return false;
}

/* A length-prefixed string inside a TLV value. */
static bool get_lstr(const uint8_t **pp, const uint8_t *end, struct view *s)
{
	uint64_t n;
	if (!get_varint(pp, end, &n) || n > (uint64_t)(end - *pp))
		return false;
	*s = view_make(*pp, (size_t)n);
	*pp += n;
	return true;
}

static int hexval(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = lc(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* ===== UTF-8 output and charsets ===== */

struct u8out {
	struct buf *b;
	bool full;
};

static void u8_bytes(struct u8out *o, const void *p, size_t n)
{
	if (!o->full && buf_append(o->b, p, n) != 0)
		o->full = true;
}

static void u8_cp(struct u8out *o, uint32_t cp)
{
	uint8_t t[4];
	size_t n;
	if (cp < 0x80) {
		t[0] = (uint8_t)cp;
		n = 1;
	} else if (cp < 0x800) {
		t[0] = (uint8_t)(0xc0 | cp >> 6);
		t[1] = (uint8_t)(0x80 | (cp & 0x3f));
		n = 2;
	} else {
		t[0] = (uint8_t)(0xe0 | cp >> 12);
		t[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
		t[2] = (uint8_t)(0x80 | (cp & 0x3f));
		n = 3;
	}
	u8_bytes(o, t, n);
}

/* Length of the valid UTF-8 sequence at p, 0 if invalid. */
static size_t utf8_seq_len(const uint8_t *p, size_t n)
{
	uint8_t c = p[0];
	size_t len;
	uint8_t lo = 0x80, hi = 0xbf;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		len = 2;
	else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		if (c == 0xe0)
			lo = 0xa0;
		if (c == 0xed)
			hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		if (c == 0xf0)
			lo = 0x90;
		if (c == 0xf4)
			hi = 0x8f;
	} else
		return 0;
	if (n < len || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if ((p[i] & 0xc0) != 0x80)
			return 0;
	return len;
}

enum charset { CS_UNKNOWN, CS_ASCII, CS_UTF8, CS_LATIN1, CS_LATIN9, CS_CP1252 };

static const uint16_t cp1252_80[32] = {
	0x20ac, 0xfffd, 0x201a, 0x0192, 0x201e, 0x2026, 0x2020, 0x2021,
	0x02c6, 0x2030, 0x0160, 0x2039, 0x0152, 0xfffd, 0x017d, 0xfffd,
	0xfffd, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013, 0x2014,
	0x02dc, 0x2122, 0x0161, 0x203a, 0x0153, 0xfffd, 0x017e, 0x0178,
};

static uint32_t latin9_cp(uint8_t b)
{
	switch (b) {
	case 0xa4: return 0x20ac;
	case 0xa6: return 0x0160;
	case 0xa8: return 0x0161;
	case 0xb4: return 0x017d;
	case 0xb8: return 0x017e;
	case 0xbc: return 0x0152;
	case 0xbd: return 0x0153;
	case 0xbe: return 0x0178;
	default: return b;
	}
}

static uint32_t byte_cp(enum charset cs, uint8_t b)
{
	if (b < 0x80 || cs == CS_LATIN1)
		return b;
	if (cs == CS_LATIN9)
		return latin9_cp(b);
	if (b < 0xa0)
		return cp1252_80[b - 0x80];
	return b;
}

static enum charset charset_lookup(struct view name)
{
	static const struct {
		const char *name;
		enum charset cs;
	} tab[] = {
		{ "us-ascii", CS_ASCII },	{ "ascii", CS_ASCII },
		{ "utf-8", CS_UTF8 },		{ "utf8", CS_UTF8 },
		{ "iso-8859-1", CS_LATIN1 },	{ "iso8859-1", CS_LATIN1 },
		{ "latin1", CS_LATIN1 },	{ "iso-8859-15", CS_LATIN9 },
		{ "iso8859-15", CS_LATIN9 },	{ "latin9", CS_LATIN9 },
		{ "windows-1252", CS_CP1252 }, { "cp1252", CS_CP1252 },
	};
	const uint8_t *star = memchr(name.ptr, '*', name.len); /* RFC 2231 lang */
	if (star)
		name.len = (size_t)(star - name.ptr);
	for (size_t i = 0; i < ARRAY_LEN(tab); i++)
		if (view_ieq(name, tab[i].name))
			return tab[i].cs;
	return CS_UNKNOWN;
}

/* Converts bytes in charset cs to UTF-8. ASCII and unknown text keep valid
 * UTF-8 and read other bytes as windows-1252; NUL, CR and LF are dropped
 * (the result is one line of header text). */
static void convert(struct u8out *o, enum charset cs, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n && !o->full;) {
		uint8_t c = p[i];
		if (c == 0 || c == '\r' || c == '\n') {
			i++;
			continue;
		}
		if (c < 0x80) {
			u8_bytes(o, &c, 1);
			i++;
			continue;
		}
		if (cs == CS_UTF8 || cs == CS_ASCII || cs == CS_UNKNOWN) {
			size_t l = utf8_seq_len(p + i, n - i);
			if (l) {
				u8_bytes(o, p + i, l);
				i += l;
				continue;
			}
			u8_cp(o, cs == CS_UTF8 ? 0xfffd : byte_cp(CS_CP1252, c));
			i++;
			continue;
		}
		u8_cp(o, byte_cp(cs, c));
		i++;
	}
}

/* ===== RFC 2047 ===== */

struct ew {
	struct view charset, text;
	uint8_t enc;
	size_t end;
};

/* Parses "=?charset?X?text?=" at raw[i]. */
static bool ew_parse(struct view raw, size_t i, struct ew *ew)
{
	const uint8_t *s = raw.ptr, *e = raw.ptr + raw.len;
	const uint8_t *p = s + i;
	if (e - p < 8 || p[0] != '=' || p[1] != '?')
		return false;
	const uint8_t *cs = p + 2, *q = cs;
	while (q < e && *q != '?' && *q > ' ' && *q < 0x7f && q - cs <= 64)
		q++;
	if (q == cs || e - q < 5 || *q != '?' || q[2] != '?')
		return false;
	uint8_t enc = lc(q[1]);
	if (enc != 'b' && enc != 'q')
		return false;
	/* RFC 2047 allows 75 bytes per word; a looser bound still keeps a
	 * field full of unterminated "=?" starts linear. */
	const uint8_t *t = q + 3, *te = t;
	while (te + 1 < e && !(te[0] == '?' && te[1] == '=')) {
		if (*te <= ' ' || *te >= 0x7f || te - p > MAX_ENCODED_WORD)
			return false;
		te++;
	}
	if (te + 1 >= e)
		return false;
	ew->charset = view_make(cs, (size_t)(q - cs));
	ew->text = view_make(t, (size_t)(te - t));
	ew->enc = enc;
	ew->end = (size_t)(te + 2 - s);
	return true;
}

static const int8_t b64_tab[256] = {
	['A'] = 1,  ['B'] = 2,	['C'] = 3,  ['D'] = 4,	['E'] = 5,  ['F'] = 6,
	['G'] = 7,  ['H'] = 8,	['I'] = 9,  ['J'] = 10, ['K'] = 11, ['L'] = 12,
	['M'] = 13, ['N'] = 14, ['O'] = 15, ['P'] = 16, ['Q'] = 17, ['R'] = 18,
	['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22, ['W'] = 23, ['X'] = 24,
	['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29, ['d'] = 30,
	['e'] = 31, ['f'] = 32, ['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36,
	['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40, ['o'] = 41, ['p'] = 42,
	['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48,
	['w'] = 49, ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54,
	['2'] = 55, ['3'] = 56, ['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60,
	['8'] = 61, ['9'] = 62, ['+'] = 63, ['/'] = 64,
};

/* Sextet value of c, or -1. (The table stores value + 1 so that 0 means
 * "not in the alphabet".) */
static int b64_val(uint8_t c)
{
	return b64_tab[c] - 1;
}

static void ew_decode(const struct ew *ew, struct buf *out)
{
	const uint8_t *p = ew->text.ptr;
	size_t n = ew->text.len;
	if (ew->enc == 'b') {
		uint32_t acc = 0;
		unsigned nacc = 0;
		for (size_t i = 0; i < n; i++) {
			int v = b64_val(p[i]);
			if (v < 0)
				continue;
			acc = acc << 6 | (uint32_t)v;
			if (++nacc == 4) {
				uint8_t t[3] = { (uint8_t)(acc >> 16),
						 (uint8_t)(acc >> 8), (uint8_t)acc };
				bput(out, t, 3);
				acc = nacc = 0;
			}
		}
		if (nacc >= 2)
			bput_u8(out, (uint8_t)(acc >> (nacc == 2 ? 4 : 10)));
		if (nacc == 3)
			bput_u8(out, (uint8_t)(acc >> 2));
		return;
	}
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '_') {
			bput_u8(out, ' ');
		} else if (p[i] == '=' && i + 2 < n && hexval(p[i + 1]) >= 0 &&
			   hexval(p[i + 2]) >= 0) {
			bput_u8(out, (uint8_t)(hexval(p[i + 1]) << 4 | hexval(p[i + 2])));
			i += 2;
		} else {
			bput_u8(out, p[i]);
		}
	}
}

struct hdr_decode {
	struct u8out o;
	struct buf *pend; /* decoded bytes of adjacent words in one charset */
	enum charset pend_cs;
	struct view raw;
	size_t ws_from, ws_len; /* whitespace not yet written */
};

static void hd_flush_pend(struct hdr_decode *h)
{
	if (h->pend->len)
		convert(&h->o, h->pend_cs, h->pend->data, h->pend->len);
	buf_reset(h->pend);
}

static void hd_flush_ws(struct hdr_decode *h)
{
	for (size_t i = 0; i < h->ws_len; i++) {
		uint8_t c = h->raw.ptr[h->ws_from + i];
		if (is_wsp(c))
			u8_bytes(&h->o, &c, 1);
	}
	h->ws_len = 0;
}

static int decode_header_into(struct view raw, struct buf *out, struct buf *pend)
{
	struct hdr_decode h = { { out, false }, pend, CS_UNKNOWN, raw, 0, 0 };
	bool prev_ew = false;
	buf_reset(pend);
	for (size_t i = 0; i < raw.len && !h.o.full;) {
		uint8_t c = raw.ptr[i];
		struct ew ew;
		if (c == '=' && ew_parse(raw, i, &ew)) {
			enum charset cs = charset_lookup(ew.charset);
			if (cs != CS_UNKNOWN) {
				/* RFC 2047 6.2: space between adjacent words goes */
				if (!prev_ew)
					hd_flush_ws(&h);
				h.ws_len = 0;
				if (pend->len && cs != h.pend_cs)
					hd_flush_pend(&h);
				h.pend_cs = cs;
				ew_decode(&ew, pend);
				prev_ew = true;
				i = ew.end;
				continue;
			}
		}
		if (is_fws(c)) {
			if (h.ws_len == 0)
				h.ws_from = i;
			h.ws_len = i + 1 - h.ws_from;
			i++;
			continue;
		}
		size_t j = i + 1;
		if (c == '=' && ew_parse(raw, i, &ew))
			j = ew.end; /* unknown charset: the whole word kept raw */
		else
			while (j < raw.len && !is_fws(raw.ptr[j]) && raw.ptr[j] != '=')
				j++;
		hd_flush_pend(&h);
		hd_flush_ws(&h);
		convert(&h.o, CS_UNKNOWN, raw.ptr + i, j - i);
		prev_ew = false;
		i = j;
	}
	hd_flush_pend(&h);
	hd_flush_ws(&h);
	return h.o.full ? -1 : 0;
}

int mime_decode_header(struct view raw, struct buf *utf8_out)
{
	struct buf pend;
	buf_init(&pend, 0);
	int rc = decode_header_into(raw, utf8_out, &pend);
	buf_cleanup(&pend);
	return rc;
}

/* ===== Content-Transfer-Encoding decoders ===== */

enum mime_cte mime_cte_parse(struct view name)
{
	name = view_trim(name);
	if (name.len == 0 || view_ieq(name, "7bit"))
		return MIME_CTE_7BIT;
	if (view_ieq(name, "8bit"))
		return MIME_CTE_8BIT;
	if (view_ieq(name, "binary"))
		return MIME_CTE_BINARY;
	if (view_ieq(name, "base64"))
		return MIME_CTE_BASE64;
	if (view_ieq(name, "quoted-printable"))
		return MIME_CTE_QP;
	return MIME_CTE_UNKNOWN;
}

enum { QP_NORMAL, QP_CR, QP_EQ, QP_EQ_HEX, QP_EQ_WS, QP_EQ_CR };

int mime_decoder_init(struct mime_decoder *d, enum mime_cte cte)
{
	memset(d, 0, sizeof(*d));
	d->cte = cte;
	return cte == MIME_CTE_UNKNOWN ? -1 : 0;
}

static int b64_emit(struct mime_decoder *d, unsigned nbytes, struct buf *out)
{
	uint32_t a = d->acc << (6 * (4 - d->nacc));
	uint8_t t[3] = { (uint8_t)(a >> 16), (uint8_t)(a >> 8), (uint8_t)a };
	d->acc = 0;
	d->nacc = 0;
	return buf_append(out, t, nbytes);
}

static int b64_feed(struct mime_decoder *d, const uint8_t *p, size_t len,
		    struct buf *out)
{
	int rc = 0;
	for (size_t i = 0; i < len; i++) {
		uint8_t c = p[i];
		int v = b64_val(c);
		if (v >= 0) {
			if (d->pad_seen) { /* data after padding: a new run */
				d->damaged = true;
				d->pad_seen = false;
			}
			d->acc = d->acc << 6 | (uint32_t)v;
			if (++d->nacc == 4)
				rc |= b64_emit(d, 3, out);
		} else if (c == '=') {
			if (d->pad_seen)
				continue;
			if (d->nacc < 2)
				d->damaged = true;
			rc |= b64_emit(d, d->nacc < 2 ? 0 : d->nacc - 1u, out);
			d->pad_seen = true;
		} else if (!is_fws(c)) {
			d->damaged = true;
		}
	}
	return rc;
}

static int qp_flush_ws(struct mime_decoder *d, struct buf *out)
{
	int rc = buf_append(out, d->ws, d->nws);
	d->nws = 0;
	return rc;
}

static int qp_normal(struct mime_decoder *d, uint8_t c, struct buf *out)
{
	int rc = 0;
	switch (c) {
	case ' ':
	case '\t':
		/* held back: whitespace at the end of a line is transport padding */
		if (d->nws == sizeof(d->ws))
			rc |= qp_flush_ws(d, out);
		d->ws[d->nws++] = c;
		return rc;
	case '\r':
		d->state = QP_CR;
		return 0;
	case '\n':
		d->nws = 0;
		return buf_append(out, "\n", 1);
	case '=':
		rc |= qp_flush_ws(d, out);
		d->state = QP_EQ;
		return rc;
	default:
		rc |= qp_flush_ws(d, out);
		return rc | buf_append(out, &c, 1);
	}
}

static int qp_byte(struct mime_decoder *d, uint8_t c, struct buf *out)
{
	int rc = 0;
	switch (d->state) {
	case QP_NORMAL:
		return qp_normal(d, c, out);
	case QP_CR:
		d->state = QP_NORMAL;
		if (c == '\n') {
			d->nws = 0;
			return buf_append(out, "\r\n", 2);
		}
		rc |= qp_flush_ws(d, out);
		rc |= buf_append(out, "\r", 1);
		return rc | qp_normal(d, c, out);
	case QP_EQ:
		if (hexval(c) >= 0) {
			d->hex = c;
			d->state = QP_EQ_HEX;
			return 0;
		}
		d->state = c == '\r' ? QP_EQ_CR : is_wsp(c) ? QP_EQ_WS : QP_NORMAL;
		if (c == '\r' || c == '\n' || is_wsp(c))
			return 0; /* soft line break, maybe with padding */
		d->damaged = true;
		rc |= buf_append(out, "=", 1);
		return rc | qp_normal(d, c, out);
	case QP_EQ_HEX:
		d->state = QP_NORMAL;
		if (hexval(c) >= 0) {
			uint8_t b = (uint8_t)(hexval(d->hex) << 4 | hexval(c));
			return buf_append(out, &b, 1);
		}
		d->damaged = true;
		uint8_t t[2] = { '=', d->hex };
		rc |= buf_append(out, t, 2);
		return rc | qp_normal(d, c, out);
	case QP_EQ_WS:
		if (is_wsp(c))
			return 0;
		d->state = c == '\r' ? QP_EQ_CR : QP_NORMAL;
		if (c == '\r' || c == '\n')
			return 0;
		d->damaged = true; /* "= x": not a soft break after all */
		rc |= buf_append(out, "= ", 2);
		return rc | qp_normal(d, c, out);
	default: /* QP_EQ_CR */
		d->state = QP_NORMAL;
		if (c == '\n')
			return 0;
		d->damaged = true;
		return qp_normal(d, c, out);
	}
}

int mime_decoder_feed(struct mime_decoder *d, const uint8_t *p, size_t len,
		      struct buf *out)
{
	int rc = 0;
	switch (d->cte) {
	case MIME_CTE_BASE64:
		return b64_feed(d, p, len, out);
	case MIME_CTE_QP:
		for (size_t i = 0; i < len; i++)
			rc |= qp_byte(d, p[i], out);
		return rc;
	case MIME_CTE_UNKNOWN:
		return -1;
	default:
		return buf_append(out, p, len);
	}
}

int mime_decoder_finish(struct mime_decoder *d, struct buf *out)
{
	int rc = 0;
	if (d->cte == MIME_CTE_BASE64) {
		if (d->nacc == 1)
			d->damaged = true;
		if (d->nacc >= 2)
			rc = b64_emit(d, d->nacc - 1u, out);
		d->nacc = 0;
	} else if (d->cte == MIME_CTE_QP) {
		if (d->state == QP_CR)
			rc |= buf_append(out, "\r", 1);
		if (d->state == QP_EQ_HEX) {
			uint8_t t[2] = { '=', d->hex };
			d->damaged = true;
			rc |= buf_append(out, t, 2);
		}
		d->nws = 0; /* trailing whitespace of the last line is padding */
		d->state = QP_NORMAL;
	}
	return rc;
}

/* ===== Header field tokenizing (RFC 5322 / RFC 2045) ===== */

struct cur {
	const uint8_t *p, *end;
};

static struct cur cur_make(struct view v)
{
	return (struct cur){ v.ptr, v.ptr + v.len };
}

static bool cur_is(const struct cur *c, uint8_t ch)
{
	return c->p < c->end && *c->p == ch;
}

/* Skips a comment at c->p == '('; its outer text goes to keep if given. */
static void skip_comment(struct cur *c, struct buf *keep)
{
	unsigned depth = 0;
	while (c->p < c->end) {
		uint8_t ch = *c->p++;
		if (ch == '\\' && c->p < c->end) {
			ch = *c->p++;
		} else if (ch == '(') {
			if (depth++ == 0)
				continue;
		} else if (ch == ')') {
			if (--depth == 0)
				return;
		}
		if (keep && depth == 1)
			bput(keep, &ch, 1);
	}
}

static void skip_cfws(struct cur *c)
{
	while (c->p < c->end) {
		if (is_fws(*c->p))
			c->p++;
		else if (*c->p == '(')
			skip_comment(c, NULL);
		else
			break;
	}
}

static bool is_tspecial(uint8_t c)
{
	return strchr("()<>@,;:\\\"/[]?=", c) != NULL;
}

/* RFC 2045 token. */
static struct view read_token(struct cur *c)
{
	skip_cfws(c);
	const uint8_t *s = c->p;
	while (c->p < c->end && *c->p > ' ' && *c->p < 0x7f && !is_tspecial(*c->p))
		c->p++;
	return view_make(s, (size_t)(c->p - s));
}

/* Quoted string at c->p == '"': unescaped content appended to out. */
static void read_quoted(struct cur *c, struct buf *out)
{
	c->p++;
	while (c->p < c->end && *c->p != '"') {
		if (*c->p == '\\' && c->p + 1 < c->end)
			c->p++;
		if (*c->p != '\r' && *c->p != '\n')
			bput(out, c->p, 1);
		c->p++;
	}
	if (c->p < c->end)
		c->p++;
}

/* ===== Parser state ===== */

enum field_id {
	F_CT,
	F_CTE,
	F_ID,
	F_DESC,
	F_MD5,
	F_DISP,
	F_LANG,
	F_LOC,
	F_DATE, /* envelope fields from here */
	F_SUBJECT,
	F_FROM,
	F_SENDER,
	F_REPLY_TO,
	F_TO,
	F_CC,
	F_BCC,
	F_IN_REPLY_TO,
	F_MESSAGE_ID,
	F_COUNT,
};

static const char *const field_names[F_COUNT] = {
	"content-type",	  "content-transfer-encoding", "content-id",
	"content-description", "content-md5",	    "content-disposition",
	"content-language", "content-location",	    "date",
	"subject",	  "from",		      "sender",
	"reply-to",	  "to",			      "cc",
	"bcc",		  "in-reply-to",	      "message-id",
};

struct node {
	size_t rec_off;
	uint64_t hdr_start, body_start, body_nl;
	uint32_t children;
	uint16_t depth;
	uint8_t kind, flags;
	bool in_header, closed, digest, parent_digest;
	uint8_t boundary_len;
	uint8_t boundary[MAX_BOUNDARY];
};

/* What the header being read has said so far (one node at a time). */
struct hdr_state {
	uint32_t seen; /* bit per enum field_id: first occurrence wins */
	unsigned nfields;
	bool have_ct, ct_valid, have_charset;
	uint8_t type_len, subtype_len;
	char type[MAX_TYPE + 1], subtype[MAX_TYPE + 1];
};

/* Where the nodes being closed end. */
struct part_end {
	uint64_t pos, nl;
	bool last_nonempty; /* the byte before pos is not an LF */
};

struct mime_parser {
	struct mime_limits lim;
	struct buf blob;
	struct buf line;    /* kept prefix of the current line */
	struct buf field;   /* current unfolded header field, capped */
	struct buf tmp;	    /* a TLV value being built */
	struct buf scratch; /* unquoted/decoded pieces of one field */
	struct node *stk;
	unsigned nstk, stk_cap, open_boundaries;
	struct hdr_state hs;
	uint64_t pos, nl;
	uint64_t line_start, line_nl, line_len;
	bool line_cr, line_keep;
	uint8_t prev_eol;
	bool prev_nonempty;
	bool finished;
	uint8_t blob_flags;
	uint32_t parts;
	size_t tlv_bytes;
	size_t mem_high;
};

void mime_limits_default(struct mime_limits *lim)
{
	lim->max_depth = 64;
	lim->max_parts = 5000;
	lim->max_field_len = 16 * 1024;
	lim->max_header_fields = 2000;
	lim->max_line_len = 1000;
	lim->max_search_len = 2048;
	lim->max_blob_len = 4u << 20;
}

static void limits_normalize(struct mime_limits *l, const struct mime_limits *in)
{
	mime_limits_default(l);
	if (!in)
		return;
	if (in->max_depth)
		l->max_depth = MIN(in->max_depth, HARD_MAX_DEPTH);
	if (in->max_parts)
		l->max_parts = in->max_parts;
	if (in->max_field_len)
		l->max_field_len = MAX(in->max_field_len, 80);
	if (in->max_header_fields)
		l->max_header_fields = in->max_header_fields;
	if (in->max_line_len)
		l->max_line_len = MAX(in->max_line_len, 80);
	if (in->max_search_len)
		l->max_search_len = in->max_search_len;
	if (in->max_blob_len)
		l->max_blob_len = in->max_blob_len;
}

static void mem_note(struct mime_parser *p)
{
	size_t m = sizeof(*p) + p->stk_cap * sizeof(struct node) + p->blob.cap +
		   p->line.cap + p->field.cap + p->tmp.cap + p->scratch.cap;
	if (m > p->mem_high)
		p->mem_high = m;
}

static struct node *top(struct mime_parser *p)
{
	return &p->stk[p->nstk - 1];
}

static void append_capped(struct buf *b, struct view v, size_t cap)
{
	if (b->len < cap)
		bput(b, v.ptr, MIN(v.len, cap - b->len));
}

/* ===== Blob writing ===== */

static void blob_tlv(struct mime_parser *p, uint8_t tag, const void *d, size_t n)
{
	if (n > p->lim.max_blob_len || p->tlv_bytes + n + 11 > p->lim.max_blob_len) {
		p->blob_flags |= MIME_BLOB_F_DROPPED;
		return;
	}
	size_t before = p->blob.len;
	bput_u8(&p->blob, tag);
	bput_varint(&p->blob, n);
	bput(&p->blob, d, n);
	p->tlv_bytes += p->blob.len - before;
}

static void blob_tlv_view(struct mime_parser *p, uint8_t tag, struct view v)
{
	blob_tlv(p, tag, v.ptr, v.len);
}

static void blob_tlv_str(struct mime_parser *p, uint8_t tag, const char *s)
{
	blob_tlv(p, tag, s, strlen(s));
}

static void put_lstr(struct buf *b, struct view v)
{
	bput_varint(b, v.len);
	bput(b, v.ptr, v.len);
}

/* ===== Parameters (RFC 2045 + RFC 2231) ===== */

struct param {
	size_t name_off, name_len, val_off, val_len;
	int idx; /* -1 plain, -2 "name*", else continuation number */
	bool ext;
};

struct params {
	struct param v[MAX_PARAMS];
	unsigned n;
};

static struct view scr(const struct mime_parser *p, size_t off, size_t len)
{
	if (!p->scratch.data)
		return view_make("", 0);
	return view_make(p->scratch.data + off, len);
}

/* Splits "name*3*" into base length, index and extended flag. */
static void param_split(struct mime_parser *p, struct param *pm)
{
	struct view n = scr(p, pm->name_off, pm->name_len);
	pm->idx = -1;
	const uint8_t *star = memchr(n.ptr, '*', n.len);
	if (!star || star == n.ptr)
		return;
	size_t base = (size_t)(star - n.ptr), i = base + 1;
	if (i == n.len) {
		pm->idx = -2;
		pm->ext = true;
		pm->name_len = base;
		return;
	}
	unsigned idx = 0;
	size_t digits = 0;
	while (i < n.len && n.ptr[i] >= '0' && n.ptr[i] <= '9' && digits < 4) {
		idx = idx * 10 + (unsigned)(n.ptr[i++] - '0');
		digits++;
	}
	bool ext = i < n.len && n.ptr[i] == '*';
	if (digits == 0 || i + ext != n.len)
		return;
	pm->idx = (int)idx;
	pm->ext = ext;
	pm->name_len = base;
}

/* An unquoted value runs to ';' (tolerating blanks inside, as broken
 * mailers write them) minus trailing blanks and a trailing comment. */
static struct view read_bare_value(struct cur *c)
{
	const uint8_t *s = c->p;
	while (c->p < c->end && *c->p != ';') {
		if (is_fws(*c->p) && c->p + 1 < c->end && c->p[1] == '(')
			break;
		c->p++;
	}
	struct view v = view_trim(view_make(s, (size_t)(c->p - s)));
	while (c->p < c->end && *c->p != ';')
		c->p++;
	return v;
}

static void parse_one_param(struct mime_parser *p, struct cur *c, struct params *ps)
{
	struct view name = read_token(c);
	skip_cfws(c);
	if (name.len == 0 || !cur_is(c, '='))
		return;
	c->p++;
	skip_cfws(c);
	struct param *pm = &ps->v[ps->n];
	pm->ext = false;
	pm->name_off = p->scratch.len;
	pm->name_len = name.len;
	for (size_t i = 0; i < name.len; i++)
		bput_u8(&p->scratch, lc(name.ptr[i]));
	pm->val_off = p->scratch.len;
	if (cur_is(c, '"'))
		read_quoted(c, &p->scratch);
	else {
		struct view bare = read_bare_value(c);
		bput(&p->scratch, bare.ptr, bare.len);
	}
	pm->val_len = p->scratch.len - pm->val_off;
	param_split(p, pm);
	ps->n++;
}

static void parse_params(struct mime_parser *p, struct cur *c, struct params *ps)
{
	ps->n = 0;
	while (c->p < c->end && ps->n < MAX_PARAMS) {
		skip_cfws(c);
		if (c->p >= c->end)
			break;
		if (*c->p == '"') { /* stray quoted text: skip it whole */
			struct cur q = *c;
			size_t mark = p->scratch.len;
			read_quoted(&q, &p->scratch);
			p->scratch.len = mark;
			*c = q;
			continue;
		}
		if (*c->p != ';') {
			c->p++;
			continue;
		}
		c->p++;
		parse_one_param(p, c, ps);
	}
}

static bool same_base(const struct mime_parser *p, const struct param *a,
		      const struct param *b)
{
	return a->name_len == b->name_len &&
	       memcmp(p->scratch.data + a->name_off, p->scratch.data + b->name_off,
		      a->name_len) == 0;
}

static const struct param *find_segment(const struct mime_parser *p,
					const struct params *ps,
					const struct param *base, int idx)
{
	for (unsigned j = 0; j < ps->n; j++)
		if (ps->v[j].idx == idx && same_base(p, &ps->v[j], base))
			return &ps->v[j];
	return NULL;
}

static bool attr_char(uint8_t c)
{
	return c > ' ' && c < 0x7f && !strchr("*'%()<>@,;:\\\"/[]?=", c);
}

/* Joins name*0, name*1... into the end of scratch. Extended segments keep
 * their %XX form, plain ones are %-encoded so the whole stays one RFC 2231
 * extended value. Returns whether the result is extended. */
static bool join_continuations(struct mime_parser *p, const struct params *ps,
			       const struct param *base, size_t *off, size_t *len)
{
	bool any_ext = false;
	int last = -1;
	for (int k = 0; k < MAX_CONTINUATIONS; k++) {
		const struct param *s = find_segment(p, ps, base, k);
		if (!s)
			break;
		any_ext |= s->ext;
		last = k;
	}
	*off = p->scratch.len;
	const struct param *first = find_segment(p, ps, base, 0);
	if (any_ext && !first->ext)
		bput(&p->scratch, "''", 2);
	for (int k = 0; k <= last; k++) {
		const struct param *s = find_segment(p, ps, base, k);
		for (size_t i = 0; i < s->val_len; i++) {
			uint8_t c = p->scratch.data[s->val_off + i];
			if (!any_ext || s->ext || attr_char(c)) {
				bput_u8(&p->scratch, c);
			} else {
				char t[4];
				snprintf(t, sizeof(t), "%%%02X", c);
				bput(&p->scratch, t, 3);
			}
		}
	}
	*len = p->scratch.len - *off;
	return any_ext;
}

static void emit_param(struct mime_parser *p, uint8_t tag, struct view name,
		       bool star, struct view val)
{
	buf_reset(&p->tmp);
	bput_varint(&p->tmp, name.len + star);
	bput(&p->tmp, name.ptr, name.len);
	if (star)
		bput_u8(&p->tmp, '*');
	put_lstr(&p->tmp, val);
	blob_tlv(p, tag, p->tmp.data, p->tmp.len);
	if (tag != TAG_PARAM || star)
		return;
	if (view_eq_cstr(name, "charset"))
		p->hs.have_charset = true;
	struct node *n = top(p);
	if (view_eq_cstr(name, "boundary") && val.len <= MAX_BOUNDARY &&
	    val.len + 4 <= p->lim.max_line_len && n->boundary_len == 0) {
		memcpy(n->boundary, val.ptr, val.len);
		n->boundary_len = (uint8_t)val.len;
	}
}

static void emit_params(struct mime_parser *p, const struct params *ps, uint8_t tag)
{
	for (unsigned i = 0; i < ps->n; i++) {
		const struct param *pm = &ps->v[i];
		bool dup = false;
		for (unsigned j = 0; j < i && !dup; j++)
			dup = same_base(p, &ps->v[j], pm);
		if (dup)
			continue;
		struct view name = scr(p, pm->name_off, pm->name_len);
		if (pm->idx < 0) {
			emit_param(p, tag, name, pm->idx == -2,
				   scr(p, pm->val_off, pm->val_len));
			continue;
		}
		if (!find_segment(p, ps, pm, 0))
			continue;
		size_t off, len;
		bool ext = join_continuations(p, ps, pm, &off, &len);
		name = scr(p, pm->name_off, pm->name_len); /* scratch may move */
		emit_param(p, tag, name, ext, scr(p, off, len));
	}
}

/* ===== Content-* fields ===== */

static void parse_content_type(struct mime_parser *p, struct view v)
{
	struct hdr_state *hs = &p->hs;
	struct cur c = cur_make(v);
	hs->have_ct = true;
	struct view t = read_token(&c), s = { NULL, 0 };
	skip_cfws(&c);
	if (cur_is(&c, '/')) {
		c.p++;
		s = read_token(&c);
	}
	if (!t.len || !s.len || t.len > MAX_TYPE || s.len > MAX_TYPE)
		return;
	for (size_t i = 0; i < t.len; i++)
		hs->type[i] = (char)lc(t.ptr[i]);
	for (size_t i = 0; i < s.len; i++)
		hs->subtype[i] = (char)lc(s.ptr[i]);
	hs->type[t.len] = hs->subtype[s.len] = '\0';
	hs->type_len = (uint8_t)t.len;
	hs->subtype_len = (uint8_t)s.len;
	hs->ct_valid = true;
	struct params ps;
	buf_reset(&p->scratch);
	parse_params(p, &c, &ps);
	emit_params(p, &ps, TAG_PARAM);
}

static void parse_disposition(struct mime_parser *p, struct view v)
{
	struct cur c = cur_make(v);
	struct view t = read_token(&c);
	if (!t.len)
		return;
	buf_reset(&p->tmp);
	for (size_t i = 0; i < t.len; i++)
		bput_u8(&p->tmp, lc(t.ptr[i]));
	blob_tlv(p, TAG_DISP, p->tmp.data, p->tmp.len);
	struct params ps;
	buf_reset(&p->scratch);
	parse_params(p, &c, &ps);
	emit_params(p, &ps, TAG_DISP_PARAM);
}

static void parse_language(struct mime_parser *p, struct view v)
{
	struct cur c = cur_make(v);
	while (c.p < c.end) {
		skip_cfws(&c);
		const uint8_t *s = c.p;
		while (c.p < c.end && *c.p != ',' && !is_fws(*c.p) && *c.p != '(')
			c.p++;
		if (c.p > s)
			blob_tlv(p, TAG_LANG, s, (size_t)(c.p - s));
		skip_cfws(&c);
		if (c.p < c.end && *c.p != ',' && c.p == s)
			c.p++;
		while (c.p < c.end && *c.p == ',')
			c.p++;
	}
}

static void parse_cte(struct mime_parser *p, struct view v)
{
	struct cur c = cur_make(v);
	struct view t = read_token(&c);
	if (!t.len)
		return;
	buf_reset(&p->tmp);
	for (size_t i = 0; i < t.len; i++)
		bput_u8(&p->tmp, lc(t.ptr[i]));
	blob_tlv(p, TAG_CTE, p->tmp.data, p->tmp.len);
}

/* ===== Addresses (RFC 5322, obsolete forms tolerated) ===== */

struct astr {
	size_t off, len;
	bool nil;
};

static const struct astr ANIL = { 0, 0, true };

static struct astr astr_const(struct mime_parser *p, const char *s)
{
	struct astr a = { p->scratch.len, strlen(s), false };
	bput(&p->scratch, s, a.len);
	return a;
}

static void put_astr(struct mime_parser *p, struct astr a)
{
	if (a.nil) {
		bput_varint(&p->tmp, 0);
		return;
	}
	bput_varint(&p->tmp, a.len + 1);
	bput(&p->tmp, scr(p, a.off, a.len).ptr, a.len);
}

static void emit_addr(struct mime_parser *p, struct astr name, struct astr adl,
		      struct astr mbox, struct astr host)
{
	put_astr(p, name);
	put_astr(p, adl);
	put_astr(p, mbox);
	put_astr(p, host);
}

static bool is_atext(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c >= 0x80 ||
	       (c > ' ' && c < 0x7f && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

/* CFWS, keeping the text of the first comment in *comment if it is NIL. */
static void skip_cfws_keep(struct mime_parser *p, struct cur *c, struct astr *comment)
{
	while (c->p < c->end) {
		if (is_fws(*c->p)) {
			c->p++;
		} else if (*c->p == '(') {
			if (comment && comment->nil) {
				size_t off = p->scratch.len;
				skip_comment(c, &p->scratch);
				struct view t = view_trim(scr(p, off, p->scratch.len - off));
				if (t.len) {
					*comment = (struct astr){ off, t.len, false };
					memmove(p->scratch.data + off, t.ptr, t.len);
				}
				p->scratch.len = off + (comment->nil ? 0 : t.len);
			} else {
				skip_comment(c, NULL);
			}
		} else {
			break;
		}
	}
}

/* A phrase (words joined by one space) or a local part (words joined as
 * they are): atoms with dots and quoted strings. */
static struct astr read_words(struct mime_parser *p, struct cur *c, bool spaced)
{
	struct astr a = { p->scratch.len, 0, false };
	bool first = true;
	for (;;) {
		skip_cfws(c);
		if (c->p >= c->end)
			break;
		if (*c->p != '"' && !is_atext(*c->p) && *c->p != '.')
			break;
		if (spaced && !first)
			bput_u8(&p->scratch, ' ');
		first = false;
		if (*c->p == '"') {
			read_quoted(c, &p->scratch);
			continue;
		}
		const uint8_t *s = c->p;
		while (c->p < c->end && (is_atext(*c->p) || *c->p == '.'))
			c->p++;
		bput(&p->scratch, s, (size_t)(c->p - s));
	}
	a.len = p->scratch.len - a.off;
	a.nil = first;
	return a;
}

static struct astr read_domain(struct mime_parser *p, struct cur *c)
{
	skip_cfws(c);
	const uint8_t *s = c->p;
	if (cur_is(c, '[')) {
		while (c->p < c->end && *c->p != ']')
			c->p++;
		if (c->p < c->end)
			c->p++;
	} else {
		while (c->p < c->end && (is_atext(*c->p) || *c->p == '.'))
			c->p++;
	}
	if (c->p == s)
		return astr_const(p, "MISSING_DOMAIN");
	struct astr a = { p->scratch.len, (size_t)(c->p - s), false };
	bput(&p->scratch, s, a.len);
	return a;
}

/* "<[@route,@route:]local@domain>" with c->p at '<'. */
static void read_angle(struct mime_parser *p, struct cur *c, struct astr name)
{
	struct astr adl = ANIL, mbox, host;
	c->p++;
	skip_cfws(c);
	if (cur_is(c, '@')) {
		const uint8_t *s = c->p;
		while (c->p < c->end && *c->p != ':' && *c->p != '>')
			c->p++;
		adl = (struct astr){ p->scratch.len, (size_t)(c->p - s), false };
		bput(&p->scratch, s, adl.len);
		if (cur_is(c, ':'))
			c->p++;
	}
	mbox = read_words(p, c, false);
	if (mbox.nil || mbox.len == 0)
		mbox = astr_const(p, "MISSING_MAILBOX");
	skip_cfws(c);
	if (cur_is(c, '@')) {
		c->p++;
		host = read_domain(p, c);
	} else {
		host = astr_const(p, "MISSING_DOMAIN");
	}
	while (c->p < c->end && *c->p != '>' && *c->p != ',' && *c->p != ';')
		c->p++;
	if (cur_is(c, '>'))
		c->p++;
	emit_addr(p, name, adl, mbox, host);
}

static void read_mailbox_or_group(struct mime_parser *p, struct cur *c, bool in_group);

static void read_group(struct mime_parser *p, struct cur *c, struct astr name)
{
	c->p++; /* ':' */
	emit_addr(p, ANIL, ANIL, name.nil ? astr_const(p, "") : name, ANIL);
	while (c->p < c->end) {
		skip_cfws(c);
		if (cur_is(c, ';')) {
			c->p++;
			break;
		}
		if (cur_is(c, ',')) {
			c->p++;
			continue;
		}
		const uint8_t *before = c->p;
		read_mailbox_or_group(p, c, true);
		if (c->p == before)
			c->p++;
	}
	emit_addr(p, ANIL, ANIL, ANIL, ANIL);
}

static void read_mailbox_or_group(struct mime_parser *p, struct cur *c, bool in_group)
{
	struct astr comment = ANIL;
	const uint8_t *start = c->p;
	struct astr phrase = read_words(p, c, true);
	skip_cfws_keep(p, c, &comment);
	if (cur_is(c, '<')) {
		read_angle(p, c, phrase.nil || phrase.len == 0 ? comment : phrase);
		return;
	}
	if (cur_is(c, ':') && !in_group) {
		read_group(p, c, phrase);
		return;
	}
	if (cur_is(c, '@')) { /* addr-spec: the words were the local part */
		c->p = start;
		struct astr mbox = read_words(p, c, false);
		skip_cfws(c);
		if (cur_is(c, '@'))
			c->p++;
		struct astr host = read_domain(p, c);
		skip_cfws_keep(p, c, &comment);
		emit_addr(p, comment, ANIL, mbox, host);
		return;
	}
	if (!phrase.nil && phrase.len)
		emit_addr(p, ANIL, ANIL, phrase, astr_const(p, "MISSING_DOMAIN"));
}

static void parse_address_list(struct mime_parser *p, uint8_t tag, struct view v)
{
	struct cur c = cur_make(v);
	buf_reset(&p->tmp);
	while (c.p < c.end) {
		buf_reset(&p->scratch);
		skip_cfws(&c);
		if (c.p < c.end && (*c.p == ',' || *c.p == ';')) {
			c.p++;
			continue;
		}
		const uint8_t *before = c.p;
		read_mailbox_or_group(p, &c, false);
		if (c.p == before)
			c.p++; /* a byte no rule wants: skip it */
	}
	blob_tlv(p, tag, p->tmp.data, p->tmp.len);
}

static void search_text(struct mime_parser *p, enum mime_search_field f, struct view v)
{
	buf_reset(&p->tmp);
	p->tmp.max = p->lim.max_search_len;
	decode_header_into(v, &p->tmp, &p->scratch);
	p->tmp.max = 0;
	blob_tlv(p, (uint8_t)(TAG_SEARCH_BASE + f), p->tmp.data, p->tmp.len);
}

/* ===== Header fields ===== */

static int field_lookup(struct view name)
{
	for (int i = 0; i < F_COUNT; i++)
		if (view_ieq(name, field_names[i]))
			return i;
	return -1;
}

static bool valid_field_name(struct view n)
{
	if (n.len == 0)
		return false;
	for (size_t i = 0; i < n.len; i++)
		if (n.ptr[i] <= ' ' || n.ptr[i] >= 0x7f)
			return false;
	return true;
}

static void field_envelope(struct mime_parser *p, int id, struct view v)
{
	static const uint8_t addr_tags[] = { TAG_FROM, TAG_SENDER, TAG_REPLY_TO,
					     TAG_TO, TAG_CC, TAG_BCC };
	switch (id) {
	case F_DATE: blob_tlv_view(p, TAG_DATE, v); return;
	case F_IN_REPLY_TO: blob_tlv_view(p, TAG_IN_REPLY_TO, v); return;
	case F_MESSAGE_ID: blob_tlv_view(p, TAG_MESSAGE_ID, v); return;
	case F_SUBJECT:
		blob_tlv_view(p, TAG_SUBJECT, v);
		search_text(p, MIME_SEARCH_SUBJECT, v);
		return;
	default:
		break;
	}
	parse_address_list(p, addr_tags[id - F_FROM], v);
	if (id == F_FROM)
		search_text(p, MIME_SEARCH_FROM, v);
	else if (id == F_TO)
		search_text(p, MIME_SEARCH_TO, v);
	else if (id == F_CC)
		search_text(p, MIME_SEARCH_CC, v);
	else if (id == F_BCC)
		search_text(p, MIME_SEARCH_BCC, v);
}

static void field_parse(struct mime_parser *p, struct view f)
{
	const uint8_t *colon = memchr(f.ptr, ':', f.len);
	if (!colon)
		return;
	struct view name = view_make(f.ptr, (size_t)(colon - f.ptr));
	while (name.len && is_wsp(name.ptr[name.len - 1]))
		name.len--;
	if (!valid_field_name(name))
		return;
	int id = field_lookup(name);
	if (id < 0 || (p->hs.seen & (1u << id)))
		return;
	p->hs.seen |= 1u << id;
	struct view v = view_trim(view_make(colon + 1, (size_t)(f.ptr + f.len - colon - 1)));
	switch (id) {
	case F_CT: parse_content_type(p, v); return;
	case F_CTE: parse_cte(p, v); return;
	case F_ID: blob_tlv_view(p, TAG_ID, v); return;
	case F_DESC: blob_tlv_view(p, TAG_DESC, v); return;
	case F_MD5: blob_tlv_view(p, TAG_MD5, v); return;
	case F_DISP: parse_disposition(p, v); return;
	case F_LANG: parse_language(p, v); return;
	case F_LOC: blob_tlv_view(p, TAG_LOC, v); return;
	default:
		if (top(p)->flags & MIME_NODE_F_ENVELOPE)
			field_envelope(p, id, v);
	}
}

static void flush_field(struct mime_parser *p)
{
	if (p->field.len == 0)
		return;
	if (++p->hs.nfields <= p->lim.max_header_fields)
		field_parse(p, buf_view(&p->field));
	buf_reset(&p->field);
}

/* ===== Nodes ===== */

static void push_node(struct mime_parser *p, uint64_t start, uint8_t flags,
		      bool parent_digest)
{
	if (p->nstk > 0)
		top(p)->children++;
	struct node *n = &p->stk[p->nstk++];
	memset(n, 0, offsetof(struct node, boundary));
	n->rec_off = p->blob.len;
	n->hdr_start = start;
	n->depth = (uint16_t)(p->nstk - 1);
	n->in_header = true;
	n->flags = flags;
	n->parent_digest = parent_digest;
	p->parts++;
	memset(&p->hs, 0, sizeof(p->hs));
	buf_reset(&p->field);
	uint8_t *rec = buf_reserve(&p->blob, REC_FIXED);
	if (!rec)
		abort();
	memset(rec, 0, REC_FIXED);
	buf_commit(&p->blob, REC_FIXED);
	patch_le(&p->blob, n->rec_off + R_DEPTH, n->depth, 2);
	patch_le(&p->blob, n->rec_off + R_HDR_START, start, 8);
}

static bool str_is(const char *s, const char *want)
{
	return strcmp(s, want) == 0;
}

/* Content-Type after RFC 2045/2046 defaults and our limits; writes the
 * type TLVs and sets the node kind. */
static void apply_type(struct mime_parser *p, struct node *n)
{
	struct hdr_state *hs = &p->hs;
	const char *t = "text", *s = "plain";
	if (hs->ct_valid) {
		t = hs->type;
		s = hs->subtype;
	} else {
		if (hs->have_ct)
			n->flags |= MIME_NODE_F_BAD_TYPE;
		if (n->parent_digest) {
			t = "message";
			s = "rfc822";
		}
	}
	n->kind = KIND_LEAF;
	if (str_is(t, "multipart")) {
		n->kind = KIND_MULTIPART;
		if (n->boundary_len == 0) {
			n->kind = KIND_LEAF;
			n->flags |= MIME_NODE_F_BAD_TYPE;
			t = "text";
			s = "plain";
		}
	} else if (str_is(t, "message") && (str_is(s, "rfc822") || str_is(s, "global"))) {
		n->kind = KIND_MESSAGE;
	}
	if (n->kind != KIND_LEAF &&
	    (n->depth >= p->lim.max_depth ||
	     (n->kind == KIND_MESSAGE && p->parts >= p->lim.max_parts))) {
		n->kind = KIND_LEAF;
		n->flags |= MIME_NODE_F_OPAQUE;
		p->blob_flags |= MIME_BLOB_F_LIMITED;
		t = "application";
		s = "octet-stream";
	}
	n->digest = n->kind == KIND_MULTIPART && str_is(s, "digest");
	if (n->kind == KIND_MULTIPART)
		p->open_boundaries++;
	blob_tlv_str(p, TAG_TYPE, t);
	blob_tlv_str(p, TAG_SUBTYPE, s);
	if (str_is(t, "text") && !hs->have_charset)
		emit_param(p, TAG_PARAM, view_cstr("charset"), false,
			   view_cstr("us-ascii"));
}

/* The header of the top node ends; its body starts at body_pos. */
static void header_finish(struct mime_parser *p, uint64_t body_pos, uint64_t body_nl)
{
	struct node *n = top(p);
	flush_field(p);
	apply_type(p, n);
	body_pos = MAX(body_pos, n->hdr_start);
	n->in_header = false;
	n->body_start = body_pos;
	n->body_nl = body_nl;
	patch_le(&p->blob, n->rec_off + R_REC_LEN, p->blob.len - n->rec_off, 4);
	patch_le(&p->blob, n->rec_off + R_KIND, n->kind, 1);
	patch_le(&p->blob, n->rec_off + R_HDR_LEN, body_pos - n->hdr_start, 8);
	patch_le(&p->blob, n->rec_off + R_BODY_START, body_pos, 8);
	if (n->kind == KIND_MESSAGE)
		push_node(p, body_pos, MIME_NODE_F_ENVELOPE, false);
}

/* Ends the top node at e (a node still in its header first gets its
 * header finished, which may push an encapsulated message: callers loop). */
static void close_top(struct mime_parser *p, const struct part_end *e)
{
	struct node *n = top(p);
	if (n->in_header) {
		n->flags |= MIME_NODE_F_NO_BLANK;
		header_finish(p, e->pos, e->nl);
		return;
	}
	uint64_t end = MAX(e->pos, n->body_start), lines = 0;
	if (end > n->body_start)
		lines = e->nl - n->body_nl + (e->last_nonempty ? 1 : 0);
	if (n->kind == KIND_MULTIPART && !n->closed)
		p->open_boundaries--;
	size_t r = n->rec_off;
	patch_le(&p->blob, r + R_SUBTREE, p->blob.len - r, 4);
	patch_le(&p->blob, r + R_NCHILD, n->children, 4);
	patch_le(&p->blob, r + R_FLAGS, n->flags, 1);
	patch_le(&p->blob, r + R_BODY_LEN, end - n->body_start, 8);
	patch_le(&p->blob, r + R_LINES, lines, 8);
	p->nstk--;
}

/* ===== Lines ===== */

/* Which open multipart (stack index) a "--..." line delimits. Strict
 * matches (boundary, optional "--", blanks only) win over prefix matches
 * at any level; innermost first. */
static int match_boundary(struct mime_parser *p, struct view v, bool whole, bool *close)
{
	for (int pass = 0; pass < 2; pass++) {
		for (int i = (int)p->nstk - 1; i >= 0; i--) {
			struct node *n = &p->stk[i];
			if (n->kind != KIND_MULTIPART || n->closed || n->in_header)
				continue;
			size_t bl = n->boundary_len;
			if (v.len < 2 + bl || memcmp(v.ptr + 2, n->boundary, bl) != 0)
				continue;
			struct view rest = view_make(v.ptr + 2 + bl, v.len - 2 - bl);
			*close = rest.len >= 2 && rest.ptr[0] == '-' && rest.ptr[1] == '-';
			if (pass == 1)
				return i;
			if (*close)
				rest = view_make(rest.ptr + 2, rest.len - 2);
			size_t k = 0;
			while (k < rest.len && is_wsp(rest.ptr[k]))
				k++;
			if (whole && k == rest.len)
				return i;
		}
	}
	return -1;
}

static bool try_boundary(struct mime_parser *p, struct view v, bool whole)
{
	bool close = false;
	int k = match_boundary(p, v, whole, &close);
	if (k < 0)
		return false;
	struct part_end e = { p->line_start - p->prev_eol,
			      p->line_nl - (p->prev_eol ? 1 : 0), p->prev_nonempty };
	while (p->nstk > (unsigned)k + 1)
		close_top(p, &e);
	struct node *m = top(p);
	if (close) {
		m->closed = true;
		p->open_boundaries--;
	} else if (p->parts >= p->lim.max_parts) {
		m->flags |= MIME_NODE_F_SKIPPED;
		p->blob_flags |= MIME_BLOB_F_LIMITED;
	} else {
		push_node(p, p->pos, 0, m->digest);
	}
	return true;
}

static void header_line(struct mime_parser *p, struct view v, uint64_t clen)
{
	if (clen == 0) {
		header_finish(p, p->pos, p->nl);
		return;
	}
	size_t cap = p->lim.max_field_len;
	if (is_wsp(v.ptr[0])) {
		if (p->field.len)
			append_capped(&p->field, v, cap);
		return;
	}
	flush_field(p);
	append_capped(&p->field, v, cap);
}

static void line_reset(struct mime_parser *p)
{
	p->line_start = p->pos;
	p->line_nl = p->nl;
	p->line_len = 0;
	p->line_cr = false;
	buf_reset(&p->line);
	p->line_keep = p->nstk > 0 && (top(p)->in_header || p->open_boundaries > 0);
}

static void line_bytes(struct mime_parser *p, const uint8_t *d, size_t n)
{
	if (n == 0)
		return;
	if (p->line_keep) {
		bool hdr = top(p)->in_header;
		size_t cap = hdr ? MAX(p->lim.max_field_len, p->lim.max_line_len)
				 : p->lim.max_line_len;
		append_capped(&p->line, view_make(d, n), cap);
		const uint8_t *l = p->line.data;
		if (!hdr && (l[0] != '-' || (p->line.len > 1 && l[1] != '-')))
			p->line_keep = false; /* cannot be a boundary line */
	}
	p->line_cr = d[n - 1] == '\r';
	p->line_len += n;
	p->pos += n;
}

static void line_end(struct mime_parser *p, bool has_eol)
{
	uint64_t clen = p->line_len - (has_eol && p->line_cr ? 1 : 0);
	uint8_t eol = has_eol ? (p->line_cr ? 2 : 1) : 0;
	struct view v = view_make(p->line.data, (size_t)MIN((uint64_t)p->line.len, clen));
	bool whole = p->line_keep && p->line.len >= clen;
	bool done = false;
	if (p->line_keep && p->open_boundaries && v.len >= 2 && v.ptr[0] == '-' &&
	    v.ptr[1] == '-')
		done = try_boundary(p, v, whole);
	if (!done && top(p)->in_header)
		header_line(p, v, clen);
	p->prev_eol = eol;
	p->prev_nonempty = clen > 0;
	line_reset(p);
	mem_note(p);
}

/* ===== Parser API ===== */

struct mime_parser *mime_parser_new(const struct mime_limits *lim)
{
	struct mime_parser *p = xcalloc(1, sizeof(*p));
	limits_normalize(&p->lim, lim);
	buf_init(&p->blob, 0);
	buf_init(&p->line, 0);
	buf_init(&p->field, 0);
	buf_init(&p->tmp, 0);
	buf_init(&p->scratch, 0);
	p->stk_cap = p->lim.max_depth + 1;
	p->stk = xcalloc(p->stk_cap, sizeof(struct node));
	static const uint8_t hdr[BLOB_HDR_LEN] = { 'M', 'I', 'M', 'B', BLOB_VERSION,
						   0, BLOB_HDR_LEN, 0 };
	bput(&p->blob, hdr, sizeof(hdr));
	push_node(p, 0, MIME_NODE_F_ENVELOPE, false);
	line_reset(p);
	mem_note(p);
	return p;
}

int mime_parser_feed(struct mime_parser *p, const uint8_t *data, size_t len)
{
	if (p->finished)
		return -1;
	while (len > 0) {
		const uint8_t *lf = memchr(data, '\n', len);
		size_t n = lf ? (size_t)(lf - data) : len;
		line_bytes(p, data, n);
		if (!lf)
			break;
		p->pos++;
		p->nl++;
		line_end(p, true);
		data += n + 1;
		len -= n + 1;
	}
	mem_note(p);
	return 0;
}

int mime_parser_finish(struct mime_parser *p, struct buf *blob_out)
{
	if (p->finished)
		return -1;
	p->finished = true;
	bool tail = p->line_len > 0;
	if (tail)
		line_end(p, false);
	struct part_end e = { p->pos, p->nl, tail };
	while (p->nstk > 0)
		close_top(p, &e);
	p->blob.data[5] = p->blob_flags;
	patch_le(&p->blob, 8, p->parts, 4);
	patch_le(&p->blob, 16, p->pos, 8);
	mem_note(p);
	return buf_append(blob_out, p->blob.data, p->blob.len);
}

void mime_parser_free(struct mime_parser **pp)
{
	struct mime_parser *p = *pp;
	if (!p)
		return;
	buf_cleanup(&p->blob);
	buf_cleanup(&p->line);
	buf_cleanup(&p->field);
	buf_cleanup(&p->tmp);
	buf_cleanup(&p->scratch);
	free(p->stk);
	free(p);
	*pp = NULL;
}

size_t mime_parser_mem_high_water(const struct mime_parser *p)
{
	return p->mem_high;
}

/* ===== Blob readers ===== */

struct rec {
	size_t off, rec_len, subtree_len;
	uint32_t nchild;
	uint8_t kind, flags;
	uint64_t hdr_start, hdr_len, body_start, body_len, lines;
	struct view tlv;
};

/* The record at off, which must lie within [off, limit). */
static int rec_at(struct view blob, size_t off, size_t limit, struct rec *r)
{
	if (limit > blob.len || off > limit || limit - off < REC_FIXED)
		return -1;
	const uint8_t *b = blob.ptr + off;
	r->off = off;
	r->rec_len = (size_t)get_le(b + R_REC_LEN, 4);
	r->subtree_len = (size_t)get_le(b + R_SUBTREE, 4);
	if (r->rec_len < REC_FIXED || r->subtree_len < r->rec_len ||
	    r->subtree_len > limit - off)
		return -1;
	r->nchild = (uint32_t)get_le(b + R_NCHILD, 4);
	r->kind = b[R_KIND];
	r->flags = b[R_FLAGS];
	r->hdr_start = get_le(b + R_HDR_START, 8);
	r->hdr_len = get_le(b + R_HDR_LEN, 8);
	r->body_start = get_le(b + R_BODY_START, 8);
	r->body_len = get_le(b + R_BODY_LEN, 8);
	r->lines = get_le(b + R_LINES, 8);
	r->tlv = view_make(b + REC_FIXED, r->rec_len - REC_FIXED);
	return 0;
}

static int blob_root(struct view blob, struct rec *r)
{
	if (blob.len < BLOB_HDR_LEN || memcmp(blob.ptr, "MIMB", 4) != 0 ||
	    blob.ptr[4] != BLOB_VERSION)
		return -1;
	size_t hl = (size_t)get_le(blob.ptr + 6, 2);
	if (hl < BLOB_HDR_LEN)
		return -1;
	return rec_at(blob, hl, blob.len, r);
}

/* Child i of r (children are consecutive subtrees after r's record). */
static int rec_child(struct view blob, const struct rec *r, uint32_t i, struct rec *c)
{
	size_t off = r->off + r->rec_len, limit = r->off + r->subtree_len;
	if (i >= r->nchild)
		return -1;
	for (uint32_t k = 0;; k++) {
		if (rec_at(blob, off, limit, c) != 0)
			return -1;
		if (k == i)
			return 0;
		off += c->subtree_len;
	}
}

struct tlv_it {
	const uint8_t *p, *end;
};

/* 1 and the next TLV, 0 at the end, -1 if malformed. */
static int tlv_next(struct tlv_it *it, uint8_t *tag, struct view *val)
{
	if (it->p >= it->end)
		return 0;
	*tag = *it->p++;
	return get_lstr(&it->p, it->end, val) ? 1 : -1;
}

/* 1 if found, 0 if absent, -1 if malformed. */
static int tlv_get(const struct rec *r, uint8_t tag, struct view *val)
{
	struct tlv_it it = { r->tlv.ptr, r->tlv.ptr + r->tlv.len };
	uint8_t t;
	struct view v;
	int rc;
	while ((rc = tlv_next(&it, &t, &v)) == 1) {
		if (t == tag) {
			*val = v;
			return 1;
		}
	}
	return rc;
}

struct out {
	struct buf *b;
	int rc;
};

static void o_raw(struct out *o, const void *s, size_t n)
{
	if (o->rc == 0 && buf_append(o->b, s, n) != 0)
		o->rc = -1;
}

static void o_str(struct out *o, const char *s)
{
	o_raw(o, s, strlen(s));
}

static void o_num(struct out *o, uint64_t n)
{
	char t[24];
	int len = snprintf(t, sizeof(t), "%llu", (unsigned long long)n);
	o_raw(o, t, (size_t)len);
}

/* IMAP string: quoted when possible, else a literal; NULs are dropped
 * (no IMAP string can carry them). */
static void o_string(struct out *o, struct view v)
{
	if (v.len == 0) {
		o_str(o, "\"\"");
		return;
	}
	bool literal = false;
	size_t nul = 0;
	for (size_t i = 0; i < v.len; i++) {
		uint8_t c = v.ptr[i];
		if (c == 0)
			nul++;
		else if (c == '\r' || c == '\n' || c >= 0x80)
			literal = true;
	}
	if (literal) {
		char t[32];
		int n = snprintf(t, sizeof(t), "{%zu}\r\n", v.len - nul);
		o_raw(o, t, (size_t)n);
	} else {
		o_raw(o, "\"", 1);
	}
	size_t run = 0;
	for (size_t i = 0; i <= v.len; i++) {
		uint8_t c = i < v.len ? v.ptr[i] : 0;
		bool esc = !literal && (c == '"' || c == '\\');
		if (i < v.len && c != 0 && !esc)
			continue;
		o_raw(o, v.ptr + run, i - run);
		if (esc) {
			uint8_t t[2] = { '\\', c };
			o_raw(o, t, 2);
		}
		run = i + 1;
	}
	if (!literal)
		o_raw(o, "\"", 1);
}

static void o_nstring_tag(struct out *o, const struct rec *r, uint8_t tag)
{
	struct view v;
	int rc = tlv_get(r, tag, &v);
	if (rc < 0)
		o->rc = -1;
	else if (rc == 0)
		o_str(o, "NIL");
	else
		o_string(o, v);
}

/* "(" name value ... ")" of every TLV with this tag, or NIL. */
static void o_params(struct out *o, const struct rec *r, uint8_t tag)
{
	struct tlv_it it = { r->tlv.ptr, r->tlv.ptr + r->tlv.len };
	uint8_t t;
	struct view v;
	int rc, n = 0;
	while ((rc = tlv_next(&it, &t, &v)) == 1) {
		if (t != tag)
			continue;
		const uint8_t *q = v.ptr, *e = v.ptr + v.len;
		struct view name, val;
		if (!get_lstr(&q, e, &name) || !get_lstr(&q, e, &val)) {
			o->rc = -1;
			return;
		}
		o_str(o, n++ ? " " : "(");
		o_string(o, name);
		o_str(o, " ");
		o_string(o, val);
	}
	if (rc < 0)
		o->rc = -1;
	o_str(o, n ? ")" : "NIL");
}

static void o_disposition(struct out *o, const struct rec *r)
{
	struct view v;
	int rc = tlv_get(r, TAG_DISP, &v);
	if (rc <= 0) {
		o->rc |= rc;
		o_str(o, "NIL");
		return;
	}
	o_str(o, "(");
	o_string(o, v);
	o_str(o, " ");
	o_params(o, r, TAG_DISP_PARAM);
	o_str(o, ")");
}

static void o_language(struct out *o, const struct rec *r)
{
	struct tlv_it it = { r->tlv.ptr, r->tlv.ptr + r->tlv.len };
	uint8_t t;
	struct view v, first = { NULL, 0 };
	int rc, n = 0;
	while ((rc = tlv_next(&it, &t, &v)) == 1)
		if (t == TAG_LANG && n++ == 0)
			first = v;
	if (rc < 0)
		o->rc = -1;
	if (n <= 1) {
		if (n)
			o_string(o, first);
		else
			o_str(o, "NIL");
		return;
	}
	it = (struct tlv_it){ r->tlv.ptr, r->tlv.ptr + r->tlv.len };
	n = 0;
	while (tlv_next(&it, &t, &v) == 1) {
		if (t != TAG_LANG)
			continue;
		o_str(o, n++ ? " " : "(");
		o_string(o, v);
	}
	o_str(o, ")");
}

static bool get_nstr(const uint8_t **q, const uint8_t *e, struct view *s, bool *nil)
{
	uint64_t n;
	if (!get_varint(q, e, &n) || (n && n - 1 > (uint64_t)(e - *q)))
		return false;
	*nil = n == 0;
	*s = view_make(*q, n ? (size_t)(n - 1) : 0);
	*q += n ? n - 1 : 0;
	return true;
}

static void o_addresses(struct out *o, struct view list)
{
	if (list.len == 0) {
		o_str(o, "NIL");
		return;
	}
	const uint8_t *q = list.ptr, *e = list.ptr + list.len;
	o_str(o, "(");
	while (q < e) {
		o_str(o, "(");
		for (int k = 0; k < 4; k++) {
			struct view s;
			bool nil;
			if (!get_nstr(&q, e, &s, &nil)) {
				o->rc = -1;
				return;
			}
			if (k)
				o_str(o, " ");
			if (nil)
				o_str(o, "NIL");
			else
				o_string(o, s);
		}
		o_str(o, ")");
	}
	o_str(o, ")");
}

/* Sender and Reply-To default to From when absent or empty (RFC 9051). */
static void o_addr_tag(struct out *o, const struct rec *r, uint8_t tag)
{
	struct view v = { NULL, 0 };
	int rc = tlv_get(r, tag, &v);
	if (rc >= 0 && (rc == 0 || v.len == 0) &&
	    (tag == TAG_SENDER || tag == TAG_REPLY_TO))
		rc = tlv_get(r, TAG_FROM, &v);
	if (rc < 0) {
		o->rc = -1;
		return;
	}
	o_addresses(o, rc ? v : view_make(NULL, 0));
}

static void o_envelope(struct out *o, const struct rec *r)
{
	static const uint8_t addr[] = { TAG_FROM, TAG_SENDER, TAG_REPLY_TO,
					TAG_TO,	  TAG_CC,     TAG_BCC };
	o_str(o, "(");
	o_nstring_tag(o, r, TAG_DATE);
	o_str(o, " ");
	o_nstring_tag(o, r, TAG_SUBJECT);
	for (size_t i = 0; i < ARRAY_LEN(addr); i++) {
		o_str(o, " ");
		o_addr_tag(o, r, addr[i]);
	}
	o_str(o, " ");
	o_nstring_tag(o, r, TAG_IN_REPLY_TO);
	o_str(o, " ");
	o_nstring_tag(o, r, TAG_MESSAGE_ID);
	o_str(o, ")");
}

static bool rec_type_is(const struct rec *r, const char *type)
{
	struct view v;
	return tlv_get(r, TAG_TYPE, &v) == 1 && view_ieq(v, type);
}

static void o_body(struct out *o, struct view blob, const struct rec *r, bool ext,
		   unsigned depth);

static void o_ext_1part(struct out *o, const struct rec *r)
{
	o_str(o, " ");
	o_nstring_tag(o, r, TAG_MD5);
	o_str(o, " ");
	o_disposition(o, r);
	o_str(o, " ");
	o_language(o, r);
	o_str(o, " ");
	o_nstring_tag(o, r, TAG_LOC);
}

static void o_multipart(struct out *o, struct view blob, const struct rec *r,
			bool ext, unsigned depth)
{
	if (r->nchild == 0) /* 1*body: stand in an empty text part */
		o_str(o, ext ? "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL "
			       "\"7bit\" 0 0 NIL NIL NIL NIL)"
			     : "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL "
			       "\"7bit\" 0 0)");
	size_t off = r->off + r->rec_len;
	for (uint32_t i = 0; i < r->nchild && o->rc == 0; i++) {
		struct rec c;
		if (rec_at(blob, off, r->off + r->subtree_len, &c) != 0) {
			o->rc = -1;
			return;
		}
		o_body(o, blob, &c, ext, depth + 1);
		off += c.subtree_len;
	}
	o_str(o, " ");
	o_nstring_tag(o, r, TAG_SUBTYPE);
	if (!ext)
		return;
	o_str(o, " ");
	o_params(o, r, TAG_PARAM);
	o_str(o, " ");
	o_disposition(o, r);
	o_str(o, " ");
	o_language(o, r);
	o_str(o, " ");
	o_nstring_tag(o, r, TAG_LOC);
}

static void o_1part(struct out *o, struct view blob, const struct rec *r, bool ext,
		    unsigned depth)
{
	struct view enc;
	o_nstring_tag(o, r, TAG_TYPE);
	o_str(o, " ");
	o_nstring_tag(o, r, TAG_SUBTYPE);
	o_str(o, " ");
	o_params(o, r, TAG_PARAM);
	o_str(o, " ");
	o_nstring_tag(o, r, TAG_ID);
	o_str(o, " ");
	o_nstring_tag(o, r, TAG_DESC);
	o_str(o, " ");
	int rc = tlv_get(r, TAG_CTE, &enc);
	o->rc |= rc < 0 ? -1 : 0;
	o_string(o, rc == 1 ? enc : view_cstr("7bit"));
	o_str(o, " ");
	o_num(o, MIN(r->body_len, (uint64_t)UINT32_MAX));
	if (r->kind == KIND_MESSAGE) {
		struct rec c;
		if (rec_child(blob, r, 0, &c) != 0) {
			o->rc = -1;
			return;
		}
		o_str(o, " ");
		o_envelope(o, &c);
		o_str(o, " ");
		o_body(o, blob, &c, ext, depth + 1);
	}
	if (r->kind == KIND_MESSAGE || rec_type_is(r, "text")) {
		o_str(o, " ");
		o_num(o, MIN(r->lines, (uint64_t)UINT32_MAX));
	}
	if (ext)
		o_ext_1part(o, r);
}

static void o_body(struct out *o, struct view blob, const struct rec *r, bool ext,
		   unsigned depth)
{
	if (depth > READ_MAX_DEPTH) {
		o->rc = -1;
		return;
	}
	o_str(o, "(");
	if (r->kind == KIND_MULTIPART)
		o_multipart(o, blob, r, ext, depth);
	else
		o_1part(o, blob, r, ext, depth);
	o_str(o, ")");
}

int mime_blob_envelope(struct view blob, struct buf *out)
{
	struct rec r;
	if (blob_root(blob, &r) != 0)
		return -1;
	struct out o = { out, 0 };
	o_envelope(&o, &r);
	return o.rc;
}

int mime_blob_bodystructure(struct view blob, bool extended, struct buf *out)
{
	struct rec r;
	if (blob_root(blob, &r) != 0)
		return -1;
	struct out o = { out, 0 };
	o_body(&o, blob, &r, extended, 0);
	return o.rc;
}

static void copy_lc(char *dst, size_t cap, struct view v)
{
	size_t n = MIN(v.len, cap - 1);
	for (size_t i = 0; i < n; i++)
		dst[i] = (char)lc(v.ptr[i]);
	dst[n] = '\0';
}

static int fill_info(struct view blob, const struct rec *r, bool top_level,
		     struct mime_part_info *info)
{
	struct view v;
	memset(info, 0, sizeof(*info));
	info->hdr_start = r->hdr_start;
	info->hdr_len = r->hdr_len;
	info->body_start = r->body_start;
	info->body_len = r->body_len;
	info->body_lines = r->lines;
	if (tlv_get(r, TAG_TYPE, &v) == 1)
		copy_lc(info->type, sizeof(info->type), v);
	if (tlv_get(r, TAG_SUBTYPE, &v) == 1)
		copy_lc(info->subtype, sizeof(info->subtype), v);
	int rc = tlv_get(r, TAG_CTE, &v);
	if (rc < 0)
		return -1;
	info->cte = rc ? mime_cte_parse(v) : MIME_CTE_7BIT;
	info->is_multipart = r->kind == KIND_MULTIPART;
	struct rec m = *r;
	if (!top_level && r->kind == KIND_MESSAGE && rec_child(blob, r, 0, &m) != 0)
		return -1;
	info->is_message = top_level || r->kind == KIND_MESSAGE;
	if (info->is_message) {
		info->msg_hdr_start = m.hdr_start;
		info->msg_hdr_len = m.hdr_len;
		info->msg_body_start = m.body_start;
		info->msg_body_len = m.body_len;
	}
	return 0;
}

/* Next part number of a section, advancing *s past it and a '.'. */
static bool next_number(const char **s, uint32_t *n)
{
	const char *p = *s;
	uint64_t v = 0;
	if (*p < '1' || *p > '9')
		return false;
	while (*p >= '0' && *p <= '9') {
		v = v * 10 + (uint64_t)(*p++ - '0');
		if (v > UINT32_MAX)
			return false;
	}
	if (*p == '.') {
		p++;
		if (*p == '\0')
			return false;
	} else if (*p != '\0') {
		return false;
	}
	*s = p;
	*n = (uint32_t)v;
	return true;
}

int mime_blob_find_part(struct view blob, const char *section,
			struct mime_part_info *out)
{
	struct rec cur;
	if (blob_root(blob, &cur) != 0)
		return -1;
	const char *s = section;
	unsigned steps = 0;
	while (*s) {
		uint32_t n;
		if (!next_number(&s, &n) || ++steps > READ_MAX_DEPTH)
			return -1;
		if (cur.kind == KIND_MESSAGE) { /* numbers go into the message */
			struct rec m;
			if (rec_child(blob, &cur, 0, &m) != 0)
				return -1;
			cur = m;
		}
		if (cur.kind == KIND_MULTIPART) {
			struct rec c;
			if (rec_child(blob, &cur, n - 1, &c) != 0)
				return -1;
			cur = c;
		} else if (n != 1) {
			return -1;
		}
	}
	return fill_info(blob, &cur, section[0] == '\0', out);
}

int mime_blob_search_text(struct view blob, enum mime_search_field f,
			  struct view *out)
{
	struct rec r;
	if (blob_root(blob, &r) != 0 || (unsigned)f > MIME_SEARCH_BCC)
		return -1;
	*out = view_make("", 0);
	int rc = tlv_get(&r, (uint8_t)(TAG_SEARCH_BASE + f), out);
	return rc < 0 ? -1 : 0;
}
