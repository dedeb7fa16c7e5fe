/* libFuzzer target for storage/mime.c: the input is a message as delivered.
 *
 * The first 4 bytes seed the chunking; the rest is the message. It is parsed
 * fed in pseudo-random chunk sizes and again in one piece: both blobs must
 * be identical. Every reader must succeed on a blob the parser made, and
 * every part found must describe ranges inside the message. The same is
 * done under tiny limits, and the transfer-encoding and RFC 2047 decoders
 * run over the message.
 *
 * Built with -DFUZZ_STANDALONE_MAIN it has its own main() that runs each file
 * named on the command line, or each file of a named directory, through the
 * target once, so CI can replay tests/fuzz/corpus/mime without libFuzzer. */
#include <stdio.h>
#include <stdlib.h>

#include "common/base.h"
#include "storage/mime.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_REQUIRE(cond)                                                   \
	do {                                                                 \
		if (!(cond)) {                                               \
			fprintf(stderr, "%s:%d: property failed: %s\n",     \
				__FILE__, __LINE__, #cond);                  \
			abort();                                             \
		}                                                            \
	} while (0)

static uint32_t rng_next(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

static void parse(const struct mime_limits *lim, const uint8_t *msg, size_t len,
		  uint32_t seed, struct buf *blob)
{
	struct mime_parser *p = mime_parser_new(lim);
	size_t off = 0;
	while (off < len) {
		size_t n = len - off;
		if (seed) {
			uint32_t r = rng_next(&seed);
			n = MIN(n, (r & 3) ? (r >> 8) % 16 + 1 : (r >> 8) % 4096 + 1);
		}
		FUZZ_REQUIRE(mime_parser_feed(p, msg + off, n) == 0);
		off += n;
	}
	FUZZ_REQUIRE(mime_parser_finish(p, blob) == 0);
	FUZZ_REQUIRE(mime_parser_mem_high_water(p) < 4u << 20);
	mime_parser_free(&p);
}

static void check_part(const struct mime_part_info *pi, size_t len)
{
	FUZZ_REQUIRE(pi->hdr_start + pi->hdr_len == pi->body_start);
	FUZZ_REQUIRE(pi->body_start + pi->body_len <= len);
	FUZZ_REQUIRE(pi->body_lines <= pi->body_len);
	if (pi->is_message) {
		FUZZ_REQUIRE(pi->msg_hdr_start + pi->msg_hdr_len == pi->msg_body_start);
		FUZZ_REQUIRE(pi->msg_body_start + pi->msg_body_len <= len);
	}
}

/* Visits sections depth-first ("1", "1.1", ..., "2", ...), bounded. */
static void walk(struct view blob, char *sec, size_t sec_len, size_t len,
		 unsigned *budget)
{
	for (unsigned i = 1; i <= 64 && *budget > 0; i++) {
		int n = snprintf(sec + sec_len, 512 - sec_len, "%s%u",
				 sec_len ? "." : "", i);
		if (n <= 0 || sec_len + (size_t)n >= 400)
			return;
		(*budget)--;
		struct mime_part_info pi;
		if (mime_blob_find_part(blob, sec, &pi) != 0)
			return;
		check_part(&pi, len);
		if (pi.is_multipart || pi.is_message)
			walk(blob, sec, sec_len + (size_t)n, len, budget);
		sec[sec_len] = '\0';
	}
}

static void check_blob(struct view blob, size_t len)
{
	struct buf out;
	buf_init(&out, 0);
	FUZZ_REQUIRE(mime_blob_envelope(blob, &out) == 0);
	buf_reset(&out);
	FUZZ_REQUIRE(mime_blob_bodystructure(blob, false, &out) == 0);
	buf_reset(&out);
	FUZZ_REQUIRE(mime_blob_bodystructure(blob, true, &out) == 0);
	FUZZ_REQUIRE(out.len > 0 && out.data[0] == '(' && out.data[out.len - 1] == ')');
	buf_cleanup(&out);
	struct mime_part_info pi;
	FUZZ_REQUIRE(mime_blob_find_part(blob, "", &pi) == 0);
	FUZZ_REQUIRE(pi.hdr_start == 0 && pi.body_start + pi.body_len == len);
	check_part(&pi, len);
	char sec[512] = "";
	unsigned budget = 300;
	walk(blob, sec, 0, len, &budget);
	for (int f = MIME_SEARCH_SUBJECT; f <= MIME_SEARCH_BCC; f++) {
		struct view v;
		FUZZ_REQUIRE(mime_blob_search_text(blob, (enum mime_search_field)f, &v) == 0);
	}
}

static void run_decoders(const uint8_t *msg, size_t len, uint32_t seed)
{
	static const enum mime_cte ctes[] = { MIME_CTE_BASE64, MIME_CTE_QP,
					      MIME_CTE_BINARY };
	for (size_t k = 0; k < ARRAY_LEN(ctes); k++) {
		struct mime_decoder d;
		struct buf out;
		buf_init(&out, 0);
		FUZZ_REQUIRE(mime_decoder_init(&d, ctes[k]) == 0);
		for (size_t off = 0; off < len;) {
			size_t r = rng_next(&seed) % 64 + 1;
			size_t n = MIN(len - off, r);
			FUZZ_REQUIRE(mime_decoder_feed(&d, msg + off, n, &out) == 0);
			off += n;
		}
		FUZZ_REQUIRE(mime_decoder_finish(&d, &out) == 0);
		FUZZ_REQUIRE(out.len <= len + 1);
		buf_cleanup(&out);
	}
	struct buf utf8;
	buf_init(&utf8, 0);
	FUZZ_REQUIRE(mime_decode_header(view_make(msg, MIN(len, 4096)), &utf8) == 0);
	buf_cleanup(&utf8);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 4)
		return 0;
	uint32_t seed = (uint32_t)data[0] | (uint32_t)data[1] << 8 |
			(uint32_t)data[2] << 16 | (uint32_t)data[3] << 24;
	seed |= 1; /* xorshift must not start at 0 */
	const uint8_t *msg = data + 4;
	size_t len = size - 4;

	struct buf whole, chunked;
	buf_init(&whole, 0);
	buf_init(&chunked, 0);
	parse(NULL, msg, len, 0, &whole);
	parse(NULL, msg, len, seed, &chunked);
	FUZZ_REQUIRE(whole.len == chunked.len &&
		     memcmp(whole.data, chunked.data, whole.len) == 0);
	check_blob(buf_view(&whole), len);
	buf_cleanup(&whole);
	buf_cleanup(&chunked);

	struct mime_limits tiny = { .max_depth = 3, .max_parts = 6, .max_field_len = 80,
				    .max_header_fields = 4, .max_line_len = 80,
				    .max_search_len = 8, .max_blob_len = 300 };
	struct buf small;
	buf_init(&small, 0);
	parse(&tiny, msg, len, seed, &small);
	check_blob(buf_view(&small), len);
	buf_cleanup(&small);

	run_decoders(msg, len, seed);
	return 0;
}

#include "tests/fuzz/fuzz_main.h"
