/* FETCH and UID FETCH.
 *
 * Every message's response is described as a list of segments: text we
 * build (flags, envelope, structure, filtered headers), byte ranges of the
 * stored body (sent as literals), and for BINARY[] ranges that are sent
 * after content-transfer decoding. A worker step emits segments until
 * about IMAP_STEP_BYTES are ready, possibly stopping inside a literal; the
 * next step runs once that output has drained.
 *
 * BINARY (RFC 3516) decodes in two streaming passes over the part: one
 * when the response is built, for the decoded size (the literal's length)
 * and whether the bytes sent hold a NUL (then it is a literal8 ~{n}), and
 * one while sending. Each reads the part in pieces, so memory stays at a
 * piece whatever the part's size. BINARY.SIZE needs the first only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "node/imap_internal.h"
#include "storage/mime.h"

#define FETCH_BATCH 256
#define HEADER_READ_MAX (1024 * 1024)
/* Encoded bytes decoded per read while sending a BINARY literal. */
#define DECODE_READ (128 * 1024)
/* Decoded bytes of one stored piece (a 256 KiB chunk decodes to less). */
#define DECODE_PIECE_MAX (4u * 1024 * 1024)

enum fseg_kind {
	SEG_TEXT,
	SEG_BODY,   /* off, len: raw body bytes */
	SEG_DECODE, /* off, len: encoded bytes; w_off, w_len: decoded window */
};

struct fseg {
	enum fseg_kind kind;
	struct buf text;
	uint64_t off, len;
	enum mime_cte cte;
	uint64_t w_off, w_len;
};

struct imap_fetch {
	const struct imap_fetch_item *items;
	size_t n_items;
	bool uid_cmd;
	bool set_seen;
	bool add_flags; /* FLAGS not asked but \Seen may change */
	bool add_modseq; /* CONDSTORE: MODSEQ goes with FLAGS */
	bool has_changedsince;
	uint64_t changedsince;
	bool unknown_cte; /* a BINARY part could not be decoded */
	bool started;
	/* \Seen set by this FETCH: not reported again by the sync */
	struct imap_change *own;
	size_t n_own;
	uint32_t *uids; /* targets, ascending */
	size_t n, next;
	struct msg_info *batch;
	size_t n_batch, batch_pos, batch_end;
	/* the message being sent */
	bool active;
	struct fseg *segs;
	size_t n_segs, cap_segs, seg;
	uint64_t pos;
	uint8_t hash[32];
	struct buf blob;
	bool have_blob;
	/* the SEG_DECODE being sent */
	struct mime_decoder dec;
	bool dec_started;
	uint64_t dec_pos, dec_sent;
	struct buf dtmp;
};

static void segs_clear(struct imap_fetch *f)
{
	for (size_t i = 0; i < f->n_segs; i++)
		buf_cleanup(&f->segs[i].text);
	f->n_segs = 0;
	f->seg = 0;
	f->pos = 0;
	buf_cleanup(&f->blob);
	f->have_blob = false;
	f->active = false;
	buf_cleanup(&f->dtmp);
	f->dec_started = false;
}

static void batch_free(struct imap_fetch *f)
{
	for (size_t i = 0; i < f->n_batch; i++)
		msg_info_cleanup(&f->batch[i]);
	free(f->batch);
	f->batch = NULL;
	f->n_batch = 0;
	f->batch_pos = 0;
}

void imap_fetch_free(struct imap_fetch **fp)
{
	struct imap_fetch *f = *fp;
	if (!f)
		return;
	*fp = NULL;
	segs_clear(f);
	free(f->segs);
	batch_free(f);
	free(f->uids);
	free(f->own);
	free(f);
}

static struct fseg *seg_new(struct imap_fetch *f, enum fseg_kind kind)
{
	if (f->n_segs == f->cap_segs) {
		f->cap_segs = f->cap_segs ? f->cap_segs * 2 : 8;
		f->segs = xrealloc(f->segs, f->cap_segs * sizeof(*f->segs));
	}
	struct fseg *g = &f->segs[f->n_segs++];
	memset(g, 0, sizeof(*g));
	g->kind = kind;
	buf_init(&g->text, 0);
	return g;
}

/* The text segment at the end (a new one if the last is a body range). */
static struct buf *seg_text(struct imap_fetch *f)
{
	if (f->n_segs && f->segs[f->n_segs - 1].kind == SEG_TEXT)
		return &f->segs[f->n_segs - 1].text;
	return &seg_new(f, SEG_TEXT)->text;
}

/* "{len}\r\n" and the body range as a literal. */
static void seg_literal(struct imap_fetch *f, uint64_t off, uint64_t len)
{
	buf_printf(seg_text(f), "{%llu}\r\n", (unsigned long long)len);
	if (len == 0)
		return;
	struct fseg *g = seg_new(f, SEG_BODY);
	g->off = off;
	g->len = len;
}

static int load_blob(struct imap_session *s, struct imap_fetch *f)
{
	if (f->have_blob)
		return 0;
	const char *err = NULL;
	buf_init(&f->blob, 0);
	if (store_body_mime(s->sh, f->hash, &f->blob, &err) < 0) {
		LOG_WARN("imap", s->id, "fetch_mime_failed", "reason=\"%s\"", err ? err : "");
		return -1;
	}
	f->have_blob = true;
	return 0;
}

static int collect(void *arg, const uint8_t *p, size_t n)
{
	struct buf *b = arg;
	return buf_append(b, p, n) < 0 ? 1 : 0;
}

static bool field_wanted(struct view name, const struct imap_section *sec)
{
	for (size_t i = 0; i < sec->field_count; i++) {
		struct view w = sec->fields[i];
		if (w.len == name.len && strncasecmp((const char *)w.ptr, (const char *)name.ptr,
						     name.len) == 0)
			return true;
	}
	return false;
}

/* HEADER.FIELDS / HEADER.FIELDS.NOT of the header block hdr into out, with
 * the blank line that ends a header. */
static void filter_header(struct view hdr, const struct imap_section *sec, bool not,
			  struct buf *out)
{
	size_t i = 0;
	while (i < hdr.len) {
		/* one field: a line plus its continuation lines */
		size_t start = i;
		const uint8_t *lf = memchr(hdr.ptr + i, '\n', hdr.len - i);
		size_t end = lf ? (size_t)(lf - hdr.ptr) + 1 : hdr.len;
		if (end - start <= 2 && (hdr.ptr[start] == '\r' || hdr.ptr[start] == '\n'))
			break; /* the blank line */
		while (end < hdr.len && (hdr.ptr[end] == ' ' || hdr.ptr[end] == '\t')) {
			lf = memchr(hdr.ptr + end, '\n', hdr.len - end);
			end = lf ? (size_t)(lf - hdr.ptr) + 1 : hdr.len;
		}
		const uint8_t *colon = memchr(hdr.ptr + start, ':', end - start);
		if (colon) {
			size_t nl = (size_t)(colon - (hdr.ptr + start));
			while (nl && (hdr.ptr[start + nl - 1] == ' ' || hdr.ptr[start + nl - 1] == '\t'))
				nl--;
			bool want = field_wanted(view_make(hdr.ptr + start, nl), sec);
			if (want != not)
				buf_append(out, hdr.ptr + start, end - start);
		}
		i = end;
	}
	buf_append(out, "\r\n", 2);
}

static void put_section_label(struct buf *b, const struct imap_fetch_item *it)
{
	const struct imap_section *sec = &it->section;
	buf_printf(b, "%s", it->type == IMAP_FETCH_BINARY	 ? "BINARY["
			    : it->type == IMAP_FETCH_BINARY_SIZE ? "BINARY.SIZE["
								 : "BODY[");
	for (size_t i = 0; i < sec->part_count; i++)
		buf_printf(b, "%s%u", i ? "." : "", sec->parts[i]);
	const char *name = NULL;
	switch (sec->text) {
	case IMAP_SECTION_NONE: break;
	case IMAP_SECTION_HEADER: name = "HEADER"; break;
	case IMAP_SECTION_HEADER_FIELDS: name = "HEADER.FIELDS"; break;
	case IMAP_SECTION_HEADER_FIELDS_NOT: name = "HEADER.FIELDS.NOT"; break;
	case IMAP_SECTION_TEXT: name = "TEXT"; break;
	case IMAP_SECTION_MIME: name = "MIME"; break;
	}
	if (name)
		buf_printf(b, "%s%s", sec->part_count ? "." : "", name);
	if (sec->field_count) {
		buf_printf(b, " (");
		for (size_t i = 0; i < sec->field_count; i++) {
			struct view v = sec->fields[i];
			bool atom = v.len > 0;
			for (size_t k = 0; k < v.len && atom; k++)
				atom = v.ptr[k] > 0x20 && v.ptr[k] < 0x7f && !strchr("(){%*\"\\]", v.ptr[k]);
			if (i)
				buf_append(b, " ", 1);
			if (atom)
				buf_append(b, v.ptr, v.len);
			else
				imap_put_quoted(b, v);
		}
		buf_printf(b, ")");
	}
	buf_printf(b, "]");
	if (it->partial)
		buf_printf(b, "<%llu>", (unsigned long long)it->partial_offset);
	buf_append(b, " ", 1);
}

static void clip(const struct imap_fetch_item *it, uint64_t *off, uint64_t *len)
{
	if (!it->partial)
		return;
	uint64_t o = MIN(it->partial_offset, *len);
	uint64_t l = MIN(it->partial_length, *len - o);
	*off += o;
	*len = l;
}

/* A BODY[section] item. -1 on a storage error. */
static int add_section(struct imap_session *s, struct imap_fetch *f, const struct msg_info *m,
		       const struct imap_fetch_item *it)
{
	const struct imap_section *sec = &it->section;
	put_section_label(seg_text(f), it);
	if (sec->part_count == 0 && sec->text == IMAP_SECTION_NONE) {
		uint64_t off = 0, len = m->size;
		clip(it, &off, &len);
		seg_literal(f, off, len);
		return 0;
	}
	if (load_blob(s, f) < 0)
		return -1;
	char path[256] = "";
	size_t pl = 0;
	for (size_t i = 0; i < sec->part_count && pl < sizeof(path) - 12; i++)
		pl += (size_t)snprintf(path + pl, sizeof(path) - pl, "%s%u", i ? "." : "",
				       sec->parts[i]);
	struct mime_part_info pi;
	if (mime_blob_find_part(buf_view(&f->blob), path, &pi) < 0) {
		buf_printf(seg_text(f), "NIL");
		return 0;
	}
	uint64_t off, len;
	switch (sec->text) {
	case IMAP_SECTION_NONE:
		off = pi.body_start;
		len = pi.body_len;
		break;
	case IMAP_SECTION_MIME:
		off = pi.hdr_start;
		len = pi.hdr_len;
		break;
	case IMAP_SECTION_TEXT:
		if (!pi.is_message) {
			buf_printf(seg_text(f), "NIL");
			return 0;
		}
		off = pi.msg_body_start;
		len = pi.msg_body_len;
		break;
	default: /* HEADER, HEADER.FIELDS[.NOT] */
		if (!pi.is_message) {
			buf_printf(seg_text(f), "NIL");
			return 0;
		}
		off = pi.msg_hdr_start;
		len = pi.msg_hdr_len;
		break;
	}
	if (sec->text == IMAP_SECTION_HEADER_FIELDS || sec->text == IMAP_SECTION_HEADER_FIELDS_NOT) {
		struct buf hdr, sel;
		buf_init(&hdr, HEADER_READ_MAX);
		buf_init(&sel, 0);
		const char *err = NULL;
		if (store_body_read(s->sh, f->hash, off, MIN(len, (uint64_t)HEADER_READ_MAX),
				    collect, &hdr, &err) < 0) {
			buf_cleanup(&hdr);
			return -1;
		}
		filter_header(buf_view(&hdr), sec, sec->text == IMAP_SECTION_HEADER_FIELDS_NOT, &sel);
		uint64_t o = 0, l = sel.len;
		clip(it, &o, &l);
		struct buf *t = seg_text(f);
		buf_printf(t, "{%llu}\r\n", (unsigned long long)l);
		buf_append(t, sel.data + o, (size_t)l);
		buf_cleanup(&hdr);
		buf_cleanup(&sel);
		return 0;
	}
	clip(it, &off, &len);
	seg_literal(f, off, len);
	return 0;
}

/* ---- BINARY ---------------------------------------------------------------- */

/* Decoding a range of the body piece by piece: the decoded bytes that fall
 * in [w_off, w_end) go to out (sending), or are only looked at for NULs
 * (measuring). */
struct dec_run {
	struct mime_decoder *d;
	struct buf *tmp;
	uint64_t *pos; /* decoded bytes so far */
	uint64_t w_off, w_end;
	struct buf *out;
	uint64_t *sent;
	bool nul;
	bool stop;
	bool failed;
};

static void dec_take(struct dec_run *r)
{
	uint64_t a = *r->pos, b = a + r->tmp->len;
	uint64_t lo = MAX(a, r->w_off), hi = MIN(b, r->w_end);
	if (lo < hi) {
		const uint8_t *p = r->tmp->data + (lo - a);
		size_t n = (size_t)(hi - lo);
		if (!r->out) {
			r->nul = r->nul || memchr(p, '\0', n) != NULL;
		} else if (buf_append(r->out, p, n) < 0) {
			r->failed = true;
		} else {
			*r->sent += n;
		}
	}
	*r->pos = b;
	buf_reset(r->tmp);
	if (r->out && b >= r->w_end)
		r->stop = true;
}

static int dec_piece(void *arg, const uint8_t *p, size_t n)
{
	struct dec_run *r = arg;
	if (mime_decoder_feed(r->d, p, n, r->tmp) < 0) {
		r->failed = true;
		return 1;
	}
	dec_take(r);
	return r->stop || r->failed ? 1 : 0;
}

static bool cte_identity(enum mime_cte cte)
{
	return cte == MIME_CTE_7BIT || cte == MIME_CTE_8BIT || cte == MIME_CTE_BINARY;
}

static int find_nul(void *arg, const uint8_t *p, size_t n)
{
	bool *nul = arg;
	*nul = memchr(p, '\0', n) != NULL;
	return *nul ? 1 : 0;
}

/* The decoded size of [off, off+len) and whether its decoded bytes in
 * [w_off, w_end) hold a NUL. -1 on a storage error. */
static int dec_measure(struct imap_session *s, struct imap_fetch *f, uint64_t off, uint64_t len,
		       enum mime_cte cte, uint64_t w_off, uint64_t w_end, uint64_t *size_r,
		       bool *nul_r)
{
	const char *err = NULL;
	*nul_r = false;
	if (cte_identity(cte)) {
		*size_r = len;
		w_end = MIN(w_end, len);
		if (w_off >= w_end)
			return 0;
		return store_body_read(s->sh, f->hash, off + w_off, w_end - w_off, find_nul, nul_r,
				       &err);
	}
	struct mime_decoder d;
	mime_decoder_init(&d, cte);
	struct buf tmp;
	buf_init(&tmp, DECODE_PIECE_MAX);
	uint64_t pos = 0;
	struct dec_run r = { .d = &d, .tmp = &tmp, .pos = &pos, .w_off = w_off, .w_end = w_end };
	int rc = len ? store_body_read(s->sh, f->hash, off, len, dec_piece, &r, &err) : 0;
	if (rc == 0 && !r.failed) {
		if (mime_decoder_finish(&d, &tmp) < 0)
			r.failed = true;
		else
			dec_take(&r);
	}
	buf_cleanup(&tmp);
	if (rc < 0 || r.failed) {
		LOG_WARN("imap", s->id, "binary_measure_failed", "reason=\"%s\"",
			 err ? err : "decoder");
		return -1;
	}
	*size_r = pos;
	*nul_r = r.nul;
	return 0;
}

/* BINARY[section]<partial> or BINARY.SIZE[section]. 1: the part's
 * content-transfer-encoding is unknown (nothing added); -1: storage error. */
static int add_binary(struct imap_session *s, struct imap_fetch *f, const struct msg_info *m,
		      const struct imap_fetch_item *it)
{
	const struct imap_section *sec = &it->section;
	bool size_only = it->type == IMAP_FETCH_BINARY_SIZE;
	uint64_t off = 0, len = m->size;
	enum mime_cte cte = MIME_CTE_BINARY; /* BINARY[]: the message as stored */
	if (sec->part_count) {
		if (load_blob(s, f) < 0)
			return -1;
		char path[256] = "";
		size_t pl = 0;
		for (size_t i = 0; i < sec->part_count && pl < sizeof(path) - 12; i++)
			pl += (size_t)snprintf(path + pl, sizeof(path) - pl, "%s%u", i ? "." : "",
					       sec->parts[i]);
		struct mime_part_info pi;
		if (mime_blob_find_part(buf_view(&f->blob), path, &pi) < 0) {
			put_section_label(seg_text(f), it);
			buf_printf(seg_text(f), size_only ? "0" : "NIL");
			return 0;
		}
		off = pi.body_start;
		len = pi.body_len;
		cte = pi.cte;
	}
	if (cte == MIME_CTE_UNKNOWN)
		return 1;
	uint64_t w_off = it->partial ? it->partial_offset : 0;
	uint64_t w_end = UINT64_MAX;
	if (it->partial && it->partial_length <= UINT64_MAX - w_off)
		w_end = w_off + it->partial_length;
	uint64_t size;
	bool nul;
	if (dec_measure(s, f, off, len, cte, size_only ? UINT64_MAX : w_off, w_end, &size, &nul) <
	    0)
		return -1;
	struct buf *t = seg_text(f);
	put_section_label(t, it);
	if (size_only) {
		buf_printf(t, "%llu", (unsigned long long)size);
		return 0;
	}
	w_off = MIN(w_off, size);
	uint64_t w_len = MIN(w_end, size) - w_off;
	buf_printf(t, "%s{%llu}\r\n", nul ? "~" : "", (unsigned long long)w_len);
	if (w_len == 0)
		return 0;
	if (cte_identity(cte)) {
		struct fseg *g = seg_new(f, SEG_BODY);
		g->off = off + w_off;
		g->len = w_len;
		return 0;
	}
	struct fseg *g = seg_new(f, SEG_DECODE);
	g->off = off;
	g->len = len;
	g->cte = cte;
	g->w_off = w_off;
	g->w_len = w_len;
	return 0;
}

/* Send the decoded window of g: 1 done, 0 step budget used, -1 error
 * (including a decode that did not give the announced bytes). */
static int emit_decoded(struct imap_session *s, struct imap_fetch *f, const struct fseg *g)
{
	if (!f->dec_started) {
		mime_decoder_init(&f->dec, g->cte);
		buf_init(&f->dtmp, DECODE_PIECE_MAX);
		f->dec_started = true;
		f->dec_pos = 0;
		f->dec_sent = 0;
		f->pos = 0;
	}
	struct dec_run r = { .d = &f->dec, .tmp = &f->dtmp, .pos = &f->dec_pos,
			     .w_off = g->w_off, .w_end = g->w_off + g->w_len,
			     .out = &s->out, .sent = &f->dec_sent };
	while (f->dec_sent < g->w_len) {
		if (s->out.len >= IMAP_STEP_BYTES)
			return 0;
		if (f->pos < g->len) {
			uint64_t want = MIN(g->len - f->pos, (uint64_t)DECODE_READ);
			const char *err = NULL;
			if (store_body_read(s->sh, f->hash, g->off + f->pos, want, dec_piece, &r,
					    &err) < 0 ||
			    r.failed) {
				LOG_WARN("imap", s->id, "binary_read_failed", "reason=\"%s\"",
					 err ? err : "decoder");
				return -1;
			}
			f->pos += want;
			continue;
		}
		if (mime_decoder_finish(&f->dec, &f->dtmp) < 0)
			return -1;
		dec_take(&r);
		if (r.failed || f->dec_sent != g->w_len) {
			LOG_WARN("imap", s->id, "binary_size_mismatch", "sent=%llu want=%llu",
				 (unsigned long long)f->dec_sent, (unsigned long long)g->w_len);
			return -1;
		}
	}
	buf_cleanup(&f->dtmp);
	f->dec_started = false;
	f->pos = 0;
	return 1;
}

/* Describe message m (sequence number seq) as segments: 0, 1 when a BINARY
 * part has an unknown encoding (nothing of the message is sent), -1 on a
 * storage error. */
static int build(struct imap_session *s, struct imap_fetch *f, uint32_t seq,
		 const struct msg_info *m)
{
	memcpy(f->hash, m->body_hash, sizeof(f->hash));
	buf_printf(seg_text(f), "* %u FETCH (", seq);
	bool first = true;
	bool has_uid = false;
	for (size_t i = 0; i < f->n_items; i++)
		has_uid = has_uid || f->items[i].type == IMAP_FETCH_UID;
	if (f->uid_cmd && !has_uid) {
		buf_printf(seg_text(f), "UID %u", m->uid);
		first = false;
	}
	for (size_t i = 0; i < f->n_items; i++) {
		const struct imap_fetch_item *it = &f->items[i];
		if (!first)
			buf_append(seg_text(f), " ", 1);
		first = false;
		struct buf *t = seg_text(f);
		switch (it->type) {
		case IMAP_FETCH_UID:
			buf_printf(t, "UID %u", m->uid);
			break;
		case IMAP_FETCH_FLAGS:
			buf_printf(t, "FLAGS ");
			imap_put_flags(t, m->flags, m->keywords);
			break;
		case IMAP_FETCH_INTERNALDATE:
			buf_printf(t, "INTERNALDATE ");
			imap_put_internaldate(t, m->internal_date_ms);
			break;
		case IMAP_FETCH_SAVEDATE:
			buf_printf(t, "SAVEDATE ");
			imap_put_internaldate(t, m->save_date_ms);
			break;
		case IMAP_FETCH_MODSEQ:
			buf_printf(t, "MODSEQ (%llu)", (unsigned long long)m->modseq);
			break;
		case IMAP_FETCH_RFC822_SIZE:
			buf_printf(t, "RFC822.SIZE %llu", (unsigned long long)m->size);
			break;
		case IMAP_FETCH_ENVELOPE:
		case IMAP_FETCH_BODY:
		case IMAP_FETCH_BODYSTRUCTURE: {
			if (load_blob(s, f) < 0)
				return -1;
			struct buf tmp;
			buf_init(&tmp, 16 * 1024 * 1024);
			int r = it->type == IMAP_FETCH_ENVELOPE
					? mime_blob_envelope(buf_view(&f->blob), &tmp)
					: mime_blob_bodystructure(buf_view(&f->blob),
								  it->type == IMAP_FETCH_BODYSTRUCTURE,
								  &tmp);
			if (r < 0) {
				buf_cleanup(&tmp);
				LOG_WARN("imap", s->id, "fetch_mime_bad", "uid=%u", m->uid);
				return -1;
			}
			buf_printf(t, "%s ", it->type == IMAP_FETCH_ENVELOPE ? "ENVELOPE"
					     : it->type == IMAP_FETCH_BODY   ? "BODY"
									     : "BODYSTRUCTURE");
			buf_append(t, tmp.data, tmp.len);
			buf_cleanup(&tmp);
			break;
		}
		case IMAP_FETCH_RFC822:
			buf_printf(t, "RFC822 ");
			seg_literal(f, 0, m->size);
			break;
		case IMAP_FETCH_RFC822_HEADER:
		case IMAP_FETCH_RFC822_TEXT: {
			if (load_blob(s, f) < 0)
				return -1;
			struct mime_part_info pi;
			bool hdr = it->type == IMAP_FETCH_RFC822_HEADER;
			buf_printf(t, "%s ", hdr ? "RFC822.HEADER" : "RFC822.TEXT");
			if (mime_blob_find_part(buf_view(&f->blob), "", &pi) < 0) {
				buf_printf(t, "NIL");
				break;
			}
			if (hdr)
				seg_literal(f, pi.msg_hdr_start, pi.msg_hdr_len);
			else
				seg_literal(f, pi.msg_body_start, pi.msg_body_len);
			break;
		}
		case IMAP_FETCH_BODY_SECTION:
			if (add_section(s, f, m, it) < 0)
				return -1;
			break;
		case IMAP_FETCH_BINARY:
		case IMAP_FETCH_BINARY_SIZE: {
			int r = add_binary(s, f, m, it);
			if (r != 0)
				return r;
			break;
		}
		default:
			buf_printf(t, "NIL");
			break;
		}
	}
	if (f->add_flags) {
		struct buf *t = seg_text(f);
		buf_printf(t, "%sFLAGS ", first ? "" : " ");
		imap_put_flags(t, m->flags, m->keywords);
		first = false;
	}
	if (f->add_modseq)
		buf_printf(seg_text(f), "%sMODSEQ (%llu)", first ? "" : " ",
			   (unsigned long long)m->modseq);
	buf_printf(seg_text(f), ")\r\n");
	f->active = true;
	return 0;
}

/* Emit segments of the current message into s->out; returns 1 when the
 * message is complete, 0 when the step budget ran out, -1 on error. */
static int emit(struct imap_session *s, struct imap_fetch *f)
{
	while (f->seg < f->n_segs) {
		struct fseg *g = &f->segs[f->seg];
		if (g->kind == SEG_TEXT) {
			buf_append(&s->out, g->text.data, g->text.len);
			f->seg++;
			continue;
		}
		if (g->kind == SEG_DECODE) {
			int r = emit_decoded(s, f, g);
			if (r <= 0)
				return r;
			f->seg++;
			continue;
		}
		if (s->out.len >= IMAP_STEP_BYTES)
			return 0;
		uint64_t want = MIN(g->len - f->pos,
				    (uint64_t)MAX(IMAP_STEP_BYTES - s->out.len, (size_t)16384));
		size_t before = s->out.len;
		const char *err = NULL;
		if (store_body_read(s->sh, f->hash, g->off + f->pos, want, collect, &s->out,
				    &err) < 0 ||
		    s->out.len == before) {
			LOG_WARN("imap", s->id, "fetch_body_failed", "reason=\"%s\"",
				 err ? err : "short read");
			return -1;
		}
		f->pos += s->out.len - before;
		if (f->pos >= g->len) {
			f->seg++;
			f->pos = 0;
		}
	}
	return 1;
}

static const struct msg_info *find_info(struct imap_session *s, struct imap_fetch *f,
					uint32_t uid, bool *error)
{
	if (f->next >= f->batch_end) {
		batch_free(f);
		size_t end = MIN(f->n, f->next + FETCH_BATCH);
		const char *err = NULL;
		if (store_fetch_range(s->sh, s->sel_id, f->uids[f->next], f->uids[end - 1],
				      &f->batch, &f->n_batch, &err) < 0) {
			*error = true;
			return NULL;
		}
		f->batch_end = end;
	}
	while (f->batch_pos < f->n_batch && f->batch[f->batch_pos].uid < uid)
		f->batch_pos++;
	if (f->batch_pos < f->n_batch && f->batch[f->batch_pos].uid == uid)
		return &f->batch[f->batch_pos];
	return NULL; /* expunged meanwhile */
}

/* UID FETCH ... (CHANGEDSINCE n VANISHED): the UIDs of the set expunged
 * after n (RFC 7162 3.2.6), before the FETCH responses. */
static void fetch_vanished(struct imap_session *s, struct imap_fetch *f)
{
	struct store_view v;
	enum storage_status st = ST_OK;
	const char *err = NULL;
	if (store_mailbox_view(s->sh, s->sel_id, f->changedsince, false, &v, &st, &err) < 0)
		return;
	uint32_t *gone = xmalloc((v.n_vanished ? v.n_vanished : 1) * sizeof(uint32_t));
	size_t ng = 0;
	for (size_t i = 0; i < v.n_vanished; i++) {
		uint32_t u = v.vanished[i].uid;
		/* '*' is the highest UID a client may have known */
		if (!imap_seqset_contains(&s->cmd->u.fetch.set, u, UINT32_MAX))
			continue;
		if (!ng || gone[ng - 1] != u)
			gone[ng++] = u;
	}
	if (ng) {
		buf_printf(&s->out, "* VANISHED (EARLIER) ");
		imap_put_set(&s->out, gone, ng);
		buf_printf(&s->out, "\r\n");
	}
	free(gone);
	store_view_cleanup(&v);
}

static void fetch_step(struct imap_session *s)
{
	struct imap_fetch *f = s->fetch;
	s->more = false;
	if (!f->started) {
		f->started = true;
		if (f->set_seen && f->n) {
			struct msg_info *ch = NULL;
			size_t nch = 0;
			uint32_t *failed = NULL;
			size_t nf = 0;
			enum storage_status st;
			const char *err = NULL;
			if (store_flags(s->sh, s->sel_id, f->uids, f->n, FLAGS_ADD, FLAG_SEEN, NULL, 0,
					&ch, &nch, &failed, &nf, &st, &err) == 0) {
				/* Reported by this FETCH (FLAGS is sent): the sync
				 * must not repeat them. */
				f->own = xmalloc((nch ? nch : 1) * sizeof(*f->own));
				for (size_t i = 0; i < nch; i++) {
					f->own[i].uid = ch[i].uid;
					f->own[i].modseq = ch[i].modseq;
					msg_info_cleanup(&ch[i]);
				}
				f->n_own = nch;
				free(ch);
				free(failed);
			}
		}
		if (s->cmd->u.fetch.vanished)
			fetch_vanished(s, f);
	}
	while (s->out.len < IMAP_STEP_BYTES) {
		if (!f->active) {
			if (f->next >= f->n) {
				imap_sync_own(s, f->own, f->n_own);
				if (f->unknown_cte)
					buf_printf(&s->out, "%s NO [UNKNOWN-CTE] Cannot decode a part's "
						   "content-transfer-encoding\r\n", s->tag);
				else
					buf_printf(&s->out, "%s OK %sFETCH completed\r\n", s->tag,
						   f->uid_cmd ? "UID " : "");
				return;
			}
			bool error = false;
			uint32_t uid = f->uids[f->next];
			const struct msg_info *m = find_info(s, f, uid, &error);
			if (error) {
				s->fatal = true;
				return;
			}
			if (!m || (f->has_changedsince && m->modseq <= f->changedsince)) {
				f->next++;
				continue;
			}
			int r = build(s, f, imap_seq_of(s, uid), m);
			if (r != 0) {
				/* nothing of this message was sent yet */
				segs_clear(f);
				if (r < 0) {
					s->fatal = true;
					return;
				}
				f->unknown_cte = true;
				f->next++;
				continue;
			}
		}
		int r = emit(s, f);
		if (r < 0) {
			/* a literal may be half sent: the stream cannot go on */
			s->fatal = true;
			return;
		}
		if (r == 0)
			break;
		segs_clear(f);
		f->next++;
	}
	s->more = true;
}

static void fetch_done(struct imap_session *s)
{
	if (!s->more)
		imap_fetch_free(&s->fetch);
}

void imap_cmd_fetch(struct imap_session *s)
{
	const struct imap_command *cmd = s->cmd;
	if (cmd->u.fetch.vanished && !s->qresync) {
		imap_bad(s, "QRESYNC is not enabled");
		return;
	}
	bool seen = false, has_flags = false, has_modseq = false;
	for (size_t i = 0; i < cmd->u.fetch.count; i++) {
		const struct imap_fetch_item *it = &cmd->u.fetch.items[i];
		switch (it->type) {
		case IMAP_FETCH_EMAILID:
		case IMAP_FETCH_THREADID:
			imap_bad(s, "Fetch item not supported");
			return;
		case IMAP_FETCH_BODY_SECTION:
		case IMAP_FETCH_BINARY:
			seen = seen || !it->peek;
			break;
		case IMAP_FETCH_RFC822:
		case IMAP_FETCH_RFC822_TEXT:
			seen = true;
			break;
		case IMAP_FETCH_FLAGS:
			has_flags = true;
			break;
		case IMAP_FETCH_MODSEQ:
			has_modseq = true;
			break;
		default:
			break;
		}
	}
	/* CONDSTORE enabling (RFC 7162 3.1): MODSEQ asked or CHANGEDSINCE. */
	if (has_modseq || cmd->u.fetch.has_changedsince)
		imap_condstore_on(s);
	uint32_t *uids = NULL;
	size_t n = 0;
	const char *err = NULL;
	if (imap_resolve_set(s, &cmd->u.fetch.set, cmd->uid, &uids, &n, &err) < 0) {
		imap_bad(s, err);
		return;
	}
	struct imap_fetch *f = xcalloc(1, sizeof(*f));
	f->items = cmd->u.fetch.items;
	f->n_items = cmd->u.fetch.count;
	f->uid_cmd = cmd->uid;
	f->set_seen = seen && !s->sel_readonly;
	f->add_flags = f->set_seen && !has_flags;
	f->add_modseq = !has_modseq && (cmd->u.fetch.has_changedsince ||
					(s->condstore && (has_flags || f->add_flags)));
	f->has_changedsince = cmd->u.fetch.has_changedsince;
	f->changedsince = cmd->u.fetch.changedsince;
	f->uids = uids;
	f->n = n;
	imap_fetch_free(&s->fetch);
	s->fetch = f;
	imap_post(s, fetch_step, fetch_done);
}
