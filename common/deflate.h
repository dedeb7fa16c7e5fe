/* Raw DEFLATE (RFC 1951) both ways on one connection: the transform under
 * IMAP COMPRESS=DEFLATE (RFC 4978), kept protocol-neutral. The loop owns one
 * per compressing connection (conn_compress_start); nothing else should
 * need it directly.
 *
 * Input: compressed bytes are queued with deflate_stream_feed() and
 * inflated in steps into a buffer the caller sizes, so a small input that
 * expands a thousandfold (a "deflate bomb") never costs more memory than
 * the caller chose to take per step.
 *
 * Output: plaintext is compressed as it is written and the compressed
 * bytes go to a sink; deflate_stream_flush() ends with a sync flush
 * (byte-aligned, readable by any inflater) so the peer can decode all that
 * was written so far.
 *
 * Memory: the inflater keeps a 32 KiB window (the peer may use the largest
 * window RFC 1951 allows); the deflater a 4 KiB window with memLevel 5,
 * about 32 KiB of zlib state instead of the default 256 KiB, for a few
 * percent of compression. deflate_stream_memory() reports the total. */
#ifndef COMMON_DEFLATE_H
#define COMMON_DEFLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct deflate_stream;

/* Both directions ready. Allocation failure aborts. */
struct deflate_stream *deflate_stream_new(void);
/* NULL-safe, clears *dsp. */
void deflate_stream_free(struct deflate_stream **dsp);
/* Bytes held now: zlib's state and windows, queued input, the struct. */
size_t deflate_stream_memory(const struct deflate_stream *ds);

/* ---- input ---- */

/* Queue compressed bytes. The caller bounds the queue (in_pending). */
void deflate_stream_feed(struct deflate_stream *ds, const void *p, size_t len);
/* Compressed bytes queued and not yet inflated. */
size_t deflate_stream_in_pending(const struct deflate_stream *ds);
/* Inflating could produce plaintext now: input is queued, or the last
 * step filled its buffer and more output may be waiting in zlib. */
bool deflate_stream_in_ready(const struct deflate_stream *ds);
/* Inflate into out (at most out_len bytes). Returns the bytes produced,
 * 0 when more input is needed, -1 on a corrupt stream or data after its
 * end (*error_r says which; the stream is then unusable). Plaintext
 * decoded before the damage comes first; the error on the next call
 * (deflate_stream_in_ready stays true until it is reported). */
ssize_t deflate_stream_inflate(struct deflate_stream *ds, uint8_t *out, size_t out_len,
			       const char **error_r);

/* ---- output ---- */

/* Receives compressed bytes; returns 0, or -1 to stop (the error is then
 * the sink's, and the stream must not be used again). */
typedef int (*deflate_sink_fn)(void *arg, const uint8_t *p, size_t len);

/* Compress len bytes; output that zlib releases goes to sink. Returns 0 or
 * -1 when the sink failed. */
int deflate_stream_write(struct deflate_stream *ds, const void *p, size_t len,
			 deflate_sink_fn sink, void *arg);
/* Written since the last flush. */
bool deflate_stream_unflushed(const struct deflate_stream *ds);
/* Sync flush: everything written so far reaches the sink in a form the
 * peer can decode. A no-op when nothing was written since the last one.
 * Returns 0 or -1 when the sink failed. */
int deflate_stream_flush(struct deflate_stream *ds, deflate_sink_fn sink, void *arg);

#endif
