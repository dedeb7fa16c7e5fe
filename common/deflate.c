/* Raw DEFLATE streams over zlib. See deflate.h for the contracts. */
#define ZLIB_CONST
#include "common/deflate.h"

#include <limits.h>
#include <stdalign.h>
#include <stdlib.h>
#include <zlib.h>

#include "common/base.h"

/* RFC 4978 wants raw DEFLATE: negative windowBits, no zlib header. The
 * peer may compress with any window up to 32 KiB, so the inflater takes
 * the largest; our own window is smaller (see deflate.h). Level 3 (zlib's
 * fast path) keeps most of level 6's ratio on mail text at ~1.7x the speed,
 * and base64 attachments, which dominate large FETCHes, compress the same
 * at every level. */
#define INFLATE_WBITS (-15)
#define DEFLATE_WBITS (-12)
#define DEFLATE_MEMLEVEL 5
#define DEFLATE_LEVEL 3
/* Output chunk of one deflate call; on the stack. */
#define DEFLATE_CHUNK 8192

struct deflate_stream {
	z_stream inf;
	z_stream def;
	struct buf in;  /* compressed input, consumed from in_off */
	size_t in_off;
	size_t zmem;    /* bytes zlib holds through zalloc */
	bool inf_more;  /* the last inflate filled its buffer */
	bool inf_end;   /* the peer ended its stream (BFINAL) */
	const char *inf_err; /* the stream failed (a zlib or our string) */
	bool def_dirty; /* written since the last flush */
};

/* zlib's allocations carry their size so memory can be reported. */
struct zhdr {
	alignas(max_align_t) size_t size;
};

static voidpf z_alloc(voidpf opaque, uInt items, uInt size)
{
	struct deflate_stream *ds = opaque;
	size_t n = (size_t)items * size;
	struct zhdr *h = xmalloc(sizeof(*h) + n);
	h->size = n;
	ds->zmem += n;
	return h + 1;
}

static void z_free(voidpf opaque, voidpf p)
{
	struct deflate_stream *ds = opaque;
	if (!p)
		return;
	struct zhdr *h = (struct zhdr *)p - 1;
	ds->zmem -= h->size;
	free(h);
}

struct deflate_stream *deflate_stream_new(void)
{
	struct deflate_stream *ds = xcalloc(1, sizeof(*ds));
	buf_init(&ds->in, 0);
	ds->inf.zalloc = ds->def.zalloc = z_alloc;
	ds->inf.zfree = ds->def.zfree = z_free;
	ds->inf.opaque = ds->def.opaque = ds;
	/* Only allocation failure can make these fail, with valid
	 * constants: treated like any other internal allocation failure. */
	if (inflateInit2(&ds->inf, INFLATE_WBITS) != Z_OK ||
	    deflateInit2(&ds->def, DEFLATE_LEVEL, Z_DEFLATED, DEFLATE_WBITS, DEFLATE_MEMLEVEL,
			 Z_DEFAULT_STRATEGY) != Z_OK)
		abort();
	return ds;
}

void deflate_stream_free(struct deflate_stream **dsp)
{
	struct deflate_stream *ds = *dsp;
	if (!ds)
		return;
	*dsp = NULL;
	inflateEnd(&ds->inf);
	deflateEnd(&ds->def);
	buf_cleanup(&ds->in);
	free(ds);
}

size_t deflate_stream_memory(const struct deflate_stream *ds)
{
	return sizeof(*ds) + ds->zmem + ds->in.cap;
}

/* ---- input ---- */

void deflate_stream_feed(struct deflate_stream *ds, const void *p, size_t len)
{
	buf_append(&ds->in, p, len);
}

size_t deflate_stream_in_pending(const struct deflate_stream *ds)
{
	return ds->in.len - ds->in_off;
}

bool deflate_stream_in_ready(const struct deflate_stream *ds)
{
	return ds->inf_err || deflate_stream_in_pending(ds) > 0 || ds->inf_more;
}

ssize_t deflate_stream_inflate(struct deflate_stream *ds, uint8_t *out, size_t out_len,
			       const char **error_r)
{
	size_t avail = deflate_stream_in_pending(ds);
	if (!ds->inf_err && ds->inf_end && avail > 0)
		ds->inf_err = "data after the end of the compressed stream";
	if (ds->inf_err) {
		*error_r = ds->inf_err;
		return -1;
	}
	if (ds->inf_end)
		return 0;
	if (out_len == 0 || (avail == 0 && !ds->inf_more))
		return 0;
	z_stream *zs = &ds->inf;
	uInt in_n = (uInt)MIN(avail, (size_t)UINT_MAX);
	uInt out_n = (uInt)MIN(out_len, (size_t)UINT_MAX);
	zs->next_in = avail ? ds->in.data + ds->in_off : NULL;
	zs->avail_in = in_n;
	zs->next_out = out;
	zs->avail_out = out_n;
	int r = inflate(zs, Z_SYNC_FLUSH);
	ds->in_off += in_n - zs->avail_in;
	size_t produced = out_n - zs->avail_out;
	if (ds->in_off == ds->in.len) {
		ds->in.len = ds->in_off = 0;
		buf_shrink_if_empty(&ds->in);
	}
	ds->inf_more = zs->avail_out == 0;
	switch (r) {
	case Z_OK:
	case Z_BUF_ERROR: /* no progress possible: needs input */
		break;
	case Z_STREAM_END:
		/* The peer closed its stream; anything after it is an error,
		 * found by the next call. */
		ds->inf_end = true;
		ds->inf_more = false;
		break;
	default:
		/* Plaintext decoded before the error is still delivered;
		 * the next call reports the error. */
		ds->inf_err = zs->msg ? zs->msg : "corrupt compressed stream";
		ds->inf_more = false;
		if (produced == 0) {
			*error_r = ds->inf_err;
			return -1;
		}
		break;
	}
	return (ssize_t)produced;
}

/* ---- output ---- */

/* Runs deflate with `flush` until it has taken all input and, for a
 * flush, emitted everything. */
static int deflate_run(struct deflate_stream *ds, int flush, deflate_sink_fn sink, void *arg)
{
	z_stream *zs = &ds->def;
	uint8_t chunk[DEFLATE_CHUNK];
	do {
		zs->next_out = chunk;
		zs->avail_out = sizeof(chunk);
		int r = deflate(zs, flush);
		if (r != Z_OK && r != Z_BUF_ERROR)
			abort(); /* Z_STREAM_ERROR: a bug here, not peer input */
		size_t n = sizeof(chunk) - zs->avail_out;
		if (n && sink(arg, chunk, n) < 0)
			return -1;
	} while (zs->avail_in > 0 || (flush != Z_NO_FLUSH && zs->avail_out == 0));
	return 0;
}

int deflate_stream_write(struct deflate_stream *ds, const void *p, size_t len,
			 deflate_sink_fn sink, void *arg)
{
	const uint8_t *q = p;
	while (len > 0) {
		uInt n = (uInt)MIN(len, (size_t)UINT_MAX);
		ds->def.next_in = q;
		ds->def.avail_in = n;
		ds->def_dirty = true;
		if (deflate_run(ds, Z_NO_FLUSH, sink, arg) < 0)
			return -1;
		q += n;
		len -= n;
	}
	return 0;
}

bool deflate_stream_unflushed(const struct deflate_stream *ds)
{
	return ds->def_dirty;
}

int deflate_stream_flush(struct deflate_stream *ds, deflate_sink_fn sink, void *arg)
{
	if (!ds->def_dirty)
		return 0;
	ds->def_dirty = false;
	ds->def.next_in = NULL;
	ds->def.avail_in = 0;
	return deflate_run(ds, Z_SYNC_FLUSH, sink, arg);
}
