/* libFuzzer target for proto/pop3_parse.c: the input is a byte stream from
 * a POP3 client.
 *
 * It is parsed as a sequence of command lines under two line maxima (the
 * real 255 and a tiny one), checking that feeding it one byte at a time
 * gives the same results, that views stay inside the input, and that every
 * line decodes (or cleanly fails) as a SASL PLAIN response. The same bytes
 * go through the dot-stuffer (RETR and TOP) whole and split in three: the
 * outputs must match and be a well-formed multi-line response.
 *
 * Built with -DFUZZ_STANDALONE_MAIN it has its own main() that runs each file
 * named on the command line, or each file of a named directory, through the
 * target once, so CI can replay tests/fuzz/corpus/pop3_parse without
 * libFuzzer. */
#include <stdio.h>
#include <stdlib.h>

#include "common/base.h"
#include "proto/pop3_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_REQUIRE(cond)                                                   \
	do {                                                                 \
		if (!(cond)) {                                               \
			fprintf(stderr, "%s:%d: property failed: %s\n",     \
				__FILE__, __LINE__, #cond);                  \
			abort();                                             \
		}                                                            \
	} while (0)

static void check_views(const struct pop3_command *c, const uint8_t *p, size_t used)
{
	FUZZ_REQUIRE(c->nargs <= POP3_MAX_ARGS);
	for (unsigned i = 0; i < c->nargs; i++)
		FUZZ_REQUIRE(c->args[i].ptr >= p && c->args[i].ptr + c->args[i].len <= p + used);
	if (c->keyword.len)
		FUZZ_REQUIRE(c->keyword.ptr >= p && c->keyword.ptr + c->keyword.len <= p + used);
}

static void sasl_check(struct view line)
{
	uint8_t dec[POP3_SASL_LINE_MAX];
	struct pop3_sasl_plain sp;
	const char *why = NULL;
	if (pop3_sasl_plain_decode(line, dec, sizeof(dec), &sp, &why) < 0) {
		FUZZ_REQUIRE(why != NULL);
		return;
	}
	FUZZ_REQUIRE(sp.authcid.len > 0 && sp.authcid.len <= POP3_SASL_ID_MAX);
	FUZZ_REQUIRE(sp.passwd.len > 0 && sp.passwd.len <= POP3_SASL_PASS_MAX);
	FUZZ_REQUIRE(!memchr(sp.passwd.ptr, 0, sp.passwd.len));
	FUZZ_REQUIRE(sp.passwd.ptr + sp.passwd.len <= dec + sizeof(dec));
}

/* Parses the stream with chunks of `step` bytes (0 = all at once) and
 * returns a digest of the results in log. */
static void run_stream(const uint8_t *data, size_t size, size_t max_line, size_t step,
		       bool deep, struct buf *log)
{
	struct buf in;
	buf_init(&in, 0);
	bool skipping = false;
	size_t off = 0;
	while (off < size || off == 0) {
		size_t n = step ? MIN(step, size - off) : size - off;
		buf_append(&in, data + off, n);
		off += n;
		while (in.len > 0) {
			uint8_t *copy = xmalloc(in.len);
			memcpy(copy, in.data, in.len);
			size_t used = 0;
			if (skipping) {
				bool done;
				used = pop3_skip_line(copy, in.len, &done);
				FUZZ_REQUIRE(used <= in.len && (done || used == in.len));
				skipping = !done;
				free(copy);
				buf_consume(&in, used);
				continue;
			}
			struct pop3_command c;
			enum pop3_result r = pop3_parse_line(copy, in.len, max_line, &c, &used);
			if (r == POP3_MORE) {
				FUZZ_REQUIRE(used == 0 && in.len < MAX(max_line, 1));
				free(copy);
				break;
			}
			FUZZ_REQUIRE(used > 0 && used <= in.len);
			if (r == POP3_OK) {
				FUZZ_REQUIRE(used <= max_line);
				check_views(&c, copy, used);
				buf_printf(log, "O%d.%u", (int)c.verb, c.nargs);
				for (unsigned i = 0; i < c.nargs; i++)
					buf_printf(log, ".%zu.%u", c.args[i].len, c.num[i]);
			} else {
				FUZZ_REQUIRE(c.error != NULL);
				buf_printf(log, "B%s", c.error);
				skipping = c.line_open;
			}
			if (deep) {
				struct pop3_command raw;
				size_t rused = 0;
				if (pop3_parse_raw_line(copy, used, POP3_SASL_LINE_MAX, &raw, &rused) ==
				    POP3_OK) {
					check_views(&raw, copy, rused);
					sasl_check(raw.args[0]);
				}
			}
			free(copy);
			buf_consume(&in, used);
		}
		if (size == 0)
			break;
	}
	buf_printf(log, "|%zu.%d", in.len, skipping);
	buf_cleanup(&in);
}

static void check_multiline(const struct buf *b)
{
	FUZZ_REQUIRE(b->len >= 3 && memcmp(b->data + b->len - 3, ".\r\n", 3) == 0);
	bool line_start = true;
	for (size_t i = 0; i < b->len; i++) {
		uint8_t c = b->data[i];
		if (c == '\n')
			FUZZ_REQUIRE(i > 0 && b->data[i - 1] == '\r');
		if (line_start && c == '.' && i + 3 != b->len)
			FUZZ_REQUIRE(i + 1 < b->len && b->data[i + 1] == '.');
		if (line_start && c == '.' && i + 1 < b->len && b->data[i + 1] == '.')
			i++; /* the stuffed pair */
		line_start = c == '\n';
	}
}

static void stuff(const uint8_t *data, size_t size, bool top, uint32_t lines, size_t a, size_t b,
		  struct buf *out)
{
	struct pop3_dotstuff d;
	if (top)
		pop3_dotstuff_init_top(&d, lines);
	else
		pop3_dotstuff_init(&d);
	size_t cuts[3] = { a, b, size };
	size_t off = 0;
	for (size_t k = 0; k < 3; k++) {
		FUZZ_REQUIRE(pop3_dotstuff_feed(&d, data + off, cuts[k] - off, out) == 0);
		off = cuts[k];
	}
	FUZZ_REQUIRE(pop3_dotstuff_finish(&d, out) == 0);
}

static void run_stuff(const uint8_t *data, size_t size, bool top, uint32_t lines)
{
	struct buf whole, split;
	buf_init(&whole, 0);
	buf_init(&split, 0);
	stuff(data, size, top, lines, size, size, &whole);
	FUZZ_REQUIRE(whole.len <= 2 * size + 5);
	check_multiline(&whole);
	size_t a = size ? (data[0] * 31u) % (size + 1) : 0;
	size_t b = size ? a + (data[size - 1] * 17u) % (size - a + 1) : 0;
	stuff(data, size, top, lines, a, b, &split);
	FUZZ_REQUIRE(split.len == whole.len && memcmp(split.data, whole.data, whole.len) == 0);
	buf_cleanup(&whole);
	buf_cleanup(&split);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t empty[1];
	if (size == 0)
		data = empty; /* never form NULL + 0 */
	const size_t limits[2] = { POP3_LINE_MAX, 8 };
	for (size_t k = 0; k < 2; k++) {
		struct buf a, b;
		buf_init(&a, 0);
		buf_init(&b, 0);
		run_stream(data, size, limits[k], 0, k == 0, &a);
		run_stream(data, size, limits[k], 1, false, &b);
		FUZZ_REQUIRE(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
		buf_cleanup(&a);
		buf_cleanup(&b);
	}
	run_stuff(data, size, false, 0);
	run_stuff(data, size, true, size ? data[0] % 4 : 0);
	return 0;
}

#include "tests/fuzz/fuzz_main.h"
