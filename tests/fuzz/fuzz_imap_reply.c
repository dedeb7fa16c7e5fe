/* libFuzzer target for bench/imap_reply.c: the input is a byte stream from
 * an IMAP server as mailbench reads it.
 *
 * The stream is split into responses whole and one byte at a time (the
 * results must match), under a normal and a tiny line bound. Every
 * response goes through the outline parser, the strict checker and, for
 * FETCH data, the attribute extractor: views must stay inside the
 * response, and whatever the checker accepts the outline parser must
 * accept too.
 *
 * Built with -DFUZZ_STANDALONE_MAIN it replays files (see fuzz_main.h). */
#include <stdio.h>
#include <stdlib.h>

#include "bench/imap_reply.h"
#include "common/base.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_REQUIRE(cond)                                                   \
	do {                                                                 \
		if (!(cond)) {                                               \
			fprintf(stderr, "%s:%d: property failed: %s\n",     \
				__FILE__, __LINE__, #cond);                  \
			abort();                                             \
		}                                                            \
	} while (0)

static bool inside(struct view v, struct view line)
{
	return v.len == 0 || (v.ptr >= line.ptr && v.ptr + v.len <= line.ptr + line.len);
}

static void one_response(struct view line, struct buf *log)
{
	struct imap_reply rp;
	const char *why = NULL;
	int parsed = imap_reply_parse(line, &rp, &why);
	int checked = imap_reply_check(line, &why);
	if (checked == 0 && line.len && line.ptr[0] != '+')
		FUZZ_REQUIRE(parsed == 0);
	if (parsed == 0) {
		FUZZ_REQUIRE(inside(rp.tag, line) && inside(rp.code, line) &&
			     inside(rp.code_args, line) && inside(rp.text, line) &&
			     inside(rp.word, line) && inside(rp.rest, line));
		if (rp.kind == IMAP_REPLY_UNTAGGED && rp.has_number &&
		    view_eq_nocase(rp.word, "FETCH")) {
			struct imap_fetch_atts a;
			if (imap_reply_fetch(rp.rest, &a, &why) == 0)
				FUZZ_REQUIRE(inside(a.flags, line));
		}
	}
	buf_printf(log, "%d%d%zu;", parsed, checked, line.len);
}

static void run_stream(const uint8_t *data, size_t size, size_t max_line, size_t step,
		       struct buf *log)
{
	struct imap_reply_reader r;
	imap_reply_reader_init(&r, max_line);
	size_t off = 0;
	while (off < size) {
		size_t piece = step ? MIN(step, size - off) : size - off;
		size_t p = 0;
		bool dead = false;
		while (p < piece) {
			size_t used = 0;
			enum imap_reply_result res = imap_reply_feed(&r, data + off + p, piece - p, &used);
			FUZZ_REQUIRE(used <= piece - p);
			p += used;
			if (res == IMAP_REPLY_TOO_LONG) {
				buf_printf(log, "L");
				dead = true;
				break;
			}
			if (res == IMAP_REPLY_MORE) {
				FUZZ_REQUIRE(p == piece);
				break;
			}
			struct view v = imap_reply_reader_line(&r);
			FUZZ_REQUIRE(v.len <= max_line);
			buf_printf(log, "%llu/%u:", (unsigned long long)r.lit_bytes, r.lits);
			one_response(v, log);
		}
		if (dead)
			break;
		off += piece;
	}
	imap_reply_reader_cleanup(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t empty[1];
	if (size == 0)
		data = empty; /* never form NULL + 0 */
	const size_t limits[2] = { 65536, 24 };
	for (size_t k = 0; k < 2; k++) {
		struct buf a, b;
		buf_init(&a, 0);
		buf_init(&b, 0);
		run_stream(data, size, limits[k], 0, &a);
		run_stream(data, size, limits[k], 1, &b);
		FUZZ_REQUIRE(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
		buf_cleanup(&a);
		buf_cleanup(&b);
	}
	return 0;
}

#include "tests/fuzz/fuzz_main.h"
