#include "storage/sortkey.h"

#include <stdlib.h>

#include "storage/mime.h"
#include "storage/search.h"

/* Raw header values are examined up to this many bytes (the blob keeps at
 * most 16 KiB of a field anyway). */
#define SUBJECT_WORK_MAX (16 * 1024)

/* ===== Folding ===== */

/* Upper (title) case of the letters we know; others unchanged. */
static uint32_t up_cp(uint32_t c)
{
	if (c < 0x80)
		return c >= 'a' && c <= 'z' ? c - 32 : c;
	if (c == 0xb5)
		return 0x39c;
	if (c >= 0xe0 && c <= 0xfe && c != 0xf7)
		return c - 32;
	if (c == 0xff)
		return 0x178;
	if (c >= 0x100 && c <= 0x17f) {
		if (c == 0x131)
			return 'I';
		if (c == 0x17f)
			return 'S';
		if ((c <= 0x137 && c != 0x130) || (c >= 0x14a && c <= 0x177))
			return c & ~1u;
		if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e))
			return (c & 1) ? c : c - 1;
		return c;
	}
	if (c >= 0x3b1 && c <= 0x3c9)
		return c == 0x3c2 ? 0x3a3 : c - 32;
	if (c == 0x3ac)
		return 0x386;
	if (c >= 0x3ad && c <= 0x3af)
		return c - 37;
	if (c == 0x3cc)
		return 0x38c;
	if (c == 0x3cd || c == 0x3ce)
		return c - 63;
	if (c >= 0x430 && c <= 0x44f)
		return c - 32;
	if (c >= 0x450 && c <= 0x45f)
		return c - 80;
	return c;
}

static size_t put_utf8(uint8_t *t, uint32_t cp)
{
	if (cp < 0x80) {
		t[0] = (uint8_t)cp;
		return 1;
	}
	if (cp < 0x800) {
		t[0] = (uint8_t)(0xc0 | cp >> 6);
		t[1] = (uint8_t)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		t[0] = (uint8_t)(0xe0 | cp >> 12);
		t[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
		t[2] = (uint8_t)(0x80 | (cp & 0x3f));
		return 3;
	}
	t[0] = (uint8_t)(0xf0 | cp >> 18);
	t[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
	t[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
	t[3] = (uint8_t)(0x80 | (cp & 0x3f));
	return 4;
}

static void bput(struct buf *b, const void *p, size_t n)
{
	if (buf_append(b, p, n) != 0)
		abort(); /* callers bound what they append */
}

void sortkey_casemap(struct view s, struct buf *out, size_t limit)
{
	size_t i = 0;
	while (i < s.len) {
		uint32_t cp;
		size_t n = utf8_decode(s.ptr + i, s.len - i, &cp);
		uint8_t t[4];
		size_t tn;
		if (n == 0) {
			t[0] = s.ptr[i]; /* not UTF-8: the byte as it is */
			tn = 1;
			n = 1;
		} else {
			tn = put_utf8(t, up_cp(cp));
		}
		if (out->len + tn > limit)
			return;
		bput(out, t, tn);
		i += n;
	}
}

/* ===== Base subject (RFC 5256 2.1) ===== */

/* subj-blob at i: "[" *BLOBCHAR "]" *WSP; its end, or 0. */
static size_t blob_at(const uint8_t *t, size_t i, size_t e)
{
	if (i >= e || t[i] != '[')
		return 0;
	size_t j = i + 1;
	while (j < e && t[j] != '[' && t[j] != ']')
		j++;
	if (j >= e || t[j] != ']')
		return 0;
	j++;
	while (j < e && t[j] == ' ')
		j++;
	return j;
}

/* subj-refwd at i: ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"; end or 0. */
static size_t refwd_at(const uint8_t *t, size_t i, size_t e)
{
	size_t j;
	if (e - i >= 2 && t[i] == 'R' && t[i + 1] == 'E') {
		j = i + 2;
	} else if (e - i >= 2 && t[i] == 'F' && t[i + 1] == 'W') {
		j = i + 2;
		if (j < e && t[j] == 'D')
			j++;
	} else {
		return 0;
	}
	while (j < e && t[j] == ' ')
		j++;
	size_t b = blob_at(t, j, e);
	if (b)
		j = b;
	return j < e && t[j] == ':' ? j + 1 : 0;
}

void sortkey_base_subject_folded(struct view folded, struct buf *out, bool *refwd_r)
{
	bool refwd = false;
	/* (1) whitespace: tabs and line breaks become spaces, runs one */
	uint8_t *t = xmalloc(folded.len ? folded.len : 1);
	size_t e = 0;
	for (size_t i = 0; i < folded.len; i++) {
		uint8_t c = folded.ptr[i];
		if (c == '\t' || c == '\r' || c == '\n')
			c = ' ';
		if (c == ' ' && e && t[e - 1] == ' ')
			continue;
		t[e++] = c;
	}
	size_t s = 0;
	for (;;) {
		/* (2) trailers */
		while (e > s) {
			if (t[e - 1] == ' ') {
				e--;
			} else if (e - s >= 5 && memcmp(t + e - 5, "(FWD)", 5) == 0) {
				e -= 5;
				refwd = true;
			} else {
				break;
			}
		}
		/* (3)-(5) leaders and blobs */
		bool changed = true;
		while (changed) {
			changed = false;
			for (;;) {
				if (s < e && t[s] == ' ') {
					s++;
					changed = true;
					continue;
				}
				size_t j = s, b;
				while ((b = blob_at(t, j, e)) != 0)
					j = b;
				size_t r = refwd_at(t, j, e);
				if (!r)
					break;
				s = r;
				refwd = true;
				changed = true;
			}
			size_t b = blob_at(t, s, e);
			if (b && b < e) {
				s = b;
				changed = true;
			}
		}
		/* (6) "[fwd: ...]" */
		if (e - s >= 6 && memcmp(t + s, "[FWD:", 5) == 0 && t[e - 1] == ']') {
			s += 5;
			e--;
			refwd = true;
			continue;
		}
		break;
	}
	bput(out, t + s, e - s);
	free(t);
	if (refwd_r)
		*refwd_r = refwd;
}

/* Cut b back to at most len bytes without splitting a UTF-8 sequence. */
static void cut_utf8(struct buf *b, size_t from, size_t len)
{
	if (b->len - from <= len)
		return;
	size_t n = from + len;
	while (n > from && (b->data[n] & 0xc0) == 0x80)
		n--;
	b->len = n;
}

void sortkey_subject(struct view raw, struct buf *out, bool *refwd_r)
{
	struct buf dec, fold;
	buf_init(&dec, SUBJECT_WORK_MAX);
	buf_init(&fold, 0);
	mime_decode_header(view_make(raw.ptr, MIN(raw.len, (size_t)SUBJECT_WORK_MAX)), &dec);
	sortkey_casemap(buf_view(&dec), &fold, SUBJECT_WORK_MAX);
	size_t from = out->len;
	sortkey_base_subject_folded(buf_view(&fold), out, refwd_r);
	cut_utf8(out, from, SORTKEY_MAX);
	buf_cleanup(&dec);
	buf_cleanup(&fold);
}

/* ===== The blob ===== */

#define BLOB_HDR_LEN 24
#define REC_FIXED 56
enum {
	TG_DATE = 20,
	TG_SUBJECT = 21,
	TG_FROM = 22,
	TG_TO = 25,
	TG_CC = 26,
	TG_IN_REPLY_TO = 28,
	TG_MESSAGE_ID = 29,
};

static uint64_t le(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static bool get_leb(const uint8_t **pp, const uint8_t *end, uint64_t *v)
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

int sortkey_blob_env(struct view blob, struct sortkey_env *out)
{
	memset(out, 0, sizeof(*out));
	if (blob.len < BLOB_HDR_LEN || memcmp(blob.ptr, "MIMB", 4) != 0 || blob.ptr[4] != 1)
		return -1;
	size_t off = (size_t)le(blob.ptr + 6, 2);
	if (off < BLOB_HDR_LEN || off > blob.len || blob.len - off < REC_FIXED)
		return -1;
	const uint8_t *r = blob.ptr + off;
	size_t rec_len = (size_t)le(r, 4);
	if (rec_len < REC_FIXED || rec_len > blob.len - off)
		return -1;
	out->hdr_len = le(r + 24, 8);
	const uint8_t *p = r + REC_FIXED, *end = r + rec_len;
	while (p < end) {
		uint8_t tag = *p++;
		uint64_t n;
		if (!get_leb(&p, end, &n) || n > (uint64_t)(end - p))
			break; /* keep what was read */
		struct view v = view_make(p, (size_t)n);
		p += n;
		struct view *slot = tag == TG_DATE	       ? &out->date
				    : tag == TG_SUBJECT	       ? &out->subject
				    : tag == TG_FROM	       ? &out->from
				    : tag == TG_TO	       ? &out->to
				    : tag == TG_CC	       ? &out->cc
				    : tag == TG_IN_REPLY_TO ? &out->in_reply_to
				    : tag == TG_MESSAGE_ID  ? &out->message_id
							    : NULL;
		if (slot && !slot->ptr)
			*slot = v; /* the first occurrence */
	}
	return 0;
}

static bool get_nstr(const uint8_t **q, const uint8_t *e, struct view *s, bool *nil)
{
	uint64_t n;
	if (!get_leb(q, e, &n) || (n && n - 1 > (uint64_t)(e - *q)))
		return false;
	*nil = n == 0;
	*s = view_make(n ? *q : (const uint8_t *)"", n ? (size_t)(n - 1) : 0);
	*q += n ? n - 1 : 0;
	return true;
}

bool sortkey_first_addr(struct view list, struct sortkey_addr *out)
{
	memset(out, 0, sizeof(*out));
	if (list.len == 0)
		return false;
	const uint8_t *q = list.ptr, *e = list.ptr + list.len;
	struct view f[4];
	bool nil[4];
	for (int k = 0; k < 4; k++)
		if (!get_nstr(&q, e, &f[k], &nil[k]))
			return false;
	out->name = f[0];
	out->adl = f[1];
	out->mailbox = f[2];
	out->host = f[3];
	out->has_host = !nil[3];
	return true;
}

void sortkey_addr_mailbox(struct view list, struct buf *out)
{
	struct sortkey_addr a;
	if (sortkey_first_addr(list, &a))
		sortkey_casemap(a.mailbox, out, out->len + SORTKEY_MAX);
}

static bool blank(struct view v)
{
	for (size_t i = 0; i < v.len; i++)
		if (v.ptr[i] != ' ' && v.ptr[i] != '\t')
			return false;
	return true;
}

void sortkey_addr_display(struct view list, struct buf *out)
{
	struct sortkey_addr a;
	if (!sortkey_first_addr(list, &a))
		return;
	size_t limit = out->len + SORTKEY_MAX;
	struct buf dec;
	buf_init(&dec, 4 * SORTKEY_MAX);
	if (!blank(a.name)) {
		mime_decode_header(a.name, &dec);
	} else if (!a.has_host) {
		mime_decode_header(a.mailbox, &dec); /* a group: its name */
	} else {
		sortkey_casemap(a.mailbox, out, limit);
		if (out->len < limit)
			bput(out, "@", 1);
		sortkey_casemap(a.host, out, limit);
		buf_cleanup(&dec);
		return;
	}
	struct view d = buf_view(&dec);
	while (d.len && (d.ptr[0] == ' ' || d.ptr[0] == '\t')) {
		d.ptr++;
		d.len--;
	}
	while (d.len && (d.ptr[d.len - 1] == ' ' || d.ptr[d.len - 1] == '\t'))
		d.len--;
	sortkey_casemap(d, out, limit);
	buf_cleanup(&dec);
}

int64_t sortkey_sent_ms(struct view date, uint64_t internal_ms)
{
	struct search_datetime dt;
	if (date.len && search_parse_rfc5322_date(date, &dt) == 0)
		return search_datetime_to_unix(&dt) * 1000;
	return (int64_t)internal_ms;
}

/* ===== Sorting ===== */

int sortkey_slot(enum sortkey_field f)
{
	switch (f) {
	case SORTKEY_CC: return 0;
	case SORTKEY_FROM: return 1;
	case SORTKEY_SUBJECT: return 2;
	case SORTKEY_TO: return 3;
	case SORTKEY_DISPLAYFROM: return 4;
	case SORTKEY_DISPLAYTO: return 5;
	default: return -1;
	}
}

bool sortkey_needs_blob(enum sortkey_field f)
{
	return f != SORTKEY_ARRIVAL && f != SORTKEY_SIZE;
}

struct sort_ctx {
	const struct sortkey_crit *crit;
	size_t n_crit;
	const uint8_t *arena;
};

static int cmp_u64(uint64_t a, uint64_t b)
{
	return a < b ? -1 : a > b;
}

static int cmp_rec(const void *pa, const void *pb, void *arg)
{
	const struct sortkey_rec *a = pa, *b = pb;
	const struct sort_ctx *c = arg;
	for (size_t i = 0; i < c->n_crit; i++) {
		int r;
		switch (c->crit[i].field) {
		case SORTKEY_ARRIVAL:
			r = cmp_u64(a->arrival_ms, b->arrival_ms);
			break;
		case SORTKEY_SIZE:
			r = cmp_u64(a->size, b->size);
			break;
		case SORTKEY_DATE:
			r = a->sent_ms < b->sent_ms ? -1 : a->sent_ms > b->sent_ms;
			break;
		default: {
			int k = sortkey_slot(c->crit[i].field);
			if (k < 0) {
				r = 0;
				break;
			}
			uint32_t la = a->len[k], lb = b->len[k];
			r = memcmp(c->arena + a->off[k], c->arena + b->off[k], MIN(la, lb));
			if (r == 0)
				r = la < lb ? -1 : la > lb;
			else
				r = r < 0 ? -1 : 1;
			break;
		}
		}
		if (r)
			return c->crit[i].reverse ? -r : r;
	}
	return a->order < b->order ? -1 : a->order > b->order;
}

void sortkey_sort(struct sortkey_rec *recs, size_t n, const struct sortkey_crit *crit,
		  size_t n_crit, const uint8_t *arena)
{
	struct sort_ctx c = { crit, n_crit, arena ? arena : (const uint8_t *)"" };
	if (n > 1)
		qsort_r(recs, n, sizeof(*recs), cmp_rec, &c);
}
