/* libFuzzer target for proto/smtp_parse.c: the input is what an SMTP client
 * sends, from EHLO to QUIT.
 *
 * It is driven the way a session drives the parser: command lines, over-long
 * lines skipped, DATA bodies unstuffed, BDAT chunks counted, AUTH
 * responses decoded. The run is repeated with the input split at a point
 * taken from the data and (for small inputs) one byte at a time; every run
 * must give the same log. Views must point into the parsed bytes and
 * consumed counts stay within the input.
 *
 * Built with -DFUZZ_STANDALONE_MAIN it has its own main() that replays
 * tests/fuzz/corpus/smtp_parse without libFuzzer. */
#include <stdio.h>
#include <stdlib.h>

#include "common/base.h"
#include "proto/smtp_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_REQUIRE(cond)                                                   \
	do {                                                                 \
		if (!(cond)) {                                               \
			fprintf(stderr, "%s:%d: property failed: %s\n",     \
				__FILE__, __LINE__, #cond);                  \
			abort();                                             \
		}                                                            \
	} while (0)

static void require_inside(struct view v, const uint8_t *p, size_t len)
{
	if (v.len == 0)
		return;
	FUZZ_REQUIRE(v.ptr >= p && v.ptr + v.len <= p + len);
}

/* A digest of the message bytes, independent of how they were split. */
struct digest {
	uint32_t h;
	uint64_t n;
};

static int out_digest(void *ctx, const uint8_t *p, size_t len)
{
	struct digest *g = ctx;
	for (size_t i = 0; i < len; i++)
		g->h = (g->h ^ p[i]) * 16777619u;
	g->n += len;
	return 0;
}

static void check_command(const struct smtp_command *c, enum smtp_result r, const uint8_t *p,
			  size_t len, size_t used)
{
	FUZZ_REQUIRE(used <= len);
	if (r == SMTP_MORE) {
		FUZZ_REQUIRE(used == 0);
		return;
	}
	FUZZ_REQUIRE(used > 0);
	if (r != SMTP_OK) {
		FUZZ_REQUIRE(c->error && c->enh && c->reply_code >= 400 && c->reply_code < 600);
		return;
	}
	require_inside(c->keyword, p, used);
	require_inside(c->arg, p, used);
	require_inside(c->path.mailbox, p, used);
	require_inside(c->path.local, p, used);
	require_inside(c->path.domain, p, used);
	require_inside(c->auth_initial, p, used);
	if (c->verb == SMTP_CMD_MAIL || c->verb == SMTP_CMD_RCPT) {
		if (!c->path.null) {
			FUZZ_REQUIRE(c->path.local.len > 0 && c->path.local.len <= SMTP_LOCAL_MAX);
			FUZZ_REQUIRE(c->path.domain.len <= SMTP_DOMAIN_MAX);
			FUZZ_REQUIRE(c->path.mailbox.len <= SMTP_PATH_MAX);
		}
	}
}

/* A session's worth of parsing; the log is compared across splits. */
static void drive(const uint8_t *data, size_t size, size_t step, size_t first,
		  enum smtp_lf_policy policy, struct buf *log)
{
	struct smtp_limits lim = smtp_limits_default();
	lim.max_size = 4096;
	struct buf in;
	buf_init(&in, 0);
	struct digest dg = { 2166136261u, 0 };
	enum { M_CMD, M_SKIP, M_DATA, M_BDAT, M_AUTH, M_DEAD } mode = M_CMD;
	struct smtp_data d;
	struct smtp_bdat b;
	smtp_bdat_init(&b, lim.max_size);
	size_t off = 0;
	for (size_t round = 0;; round++) {
		size_t n = round == 0 ? first : step;
		n = MIN(n, size - off);
		buf_append(&in, data + off, n);
		off += n;
		while (in.len > 0 && mode != M_DEAD) {
			uint8_t *copy = xmalloc(in.len);
			memcpy(copy, in.data, in.len);
			size_t used = 0;
			bool stop = false;
			if (mode == M_SKIP) {
				bool done;
				used = smtp_skip_line(copy, in.len, &done);
				if (done)
					mode = M_CMD;
			} else if (mode == M_DATA) {
				int rc = smtp_data_feed(&d, copy, in.len, &used, out_digest, &dg);
				FUZZ_REQUIRE(used <= in.len && (rc == 1 || used == in.len));
				if (rc == 1) {
					const char *enh, *text;
					int code = smtp_data_status(&d, &enh, &text);
					buf_printf(log, "BODY %d %llu %llu %llu %llu\n", code,
						   (unsigned long long)d.size,
						   (unsigned long long)d.bare_lf,
						   (unsigned long long)d.bare_cr,
						   (unsigned long long)d.nul);
					FUZZ_REQUIRE(d.too_big == (d.size > lim.max_size));
					if (!d.too_big) {
						FUZZ_REQUIRE(dg.n == d.size);
						buf_printf(log, "DIGEST %08x\n", dg.h);
					}
					dg = (struct digest){ 2166136261u, 0 };
					mode = M_CMD;
				}
			} else if (mode == M_BDAT) {
				used = smtp_bdat_take(&b, in.len);
				FUZZ_REQUIRE(used > 0 && used <= in.len);
				if (smtp_bdat_chunk_done(&b)) {
					buf_printf(log, "CHUNK %d\n", b.too_big);
					if (b.last)
						smtp_bdat_init(&b, lim.max_size);
					mode = M_CMD;
				}
			} else {
				struct smtp_command cmd;
				enum smtp_result r;
				if (mode == M_AUTH)
					r = smtp_parse_raw_line(copy, in.len, &lim, &cmd, &used);
				else
					r = smtp_parse_command(copy, in.len, &lim, &cmd, &used);
				check_command(&cmd, r, copy, in.len, used);
				if (r == SMTP_MORE) {
					stop = true;
				} else if (mode == M_AUTH) {
					mode = M_CMD;
					buf_printf(log, "RESP %d\n", (int)r);
					if (r == SMTP_BAD && cmd.line_open)
						mode = M_SKIP;
					if (r == SMTP_OK) {
						uint8_t tmp[SMTP_AUTH_LINE_MAX];
						struct view v;
						const char *err;
						int rc = smtp_sasl_login_decode(cmd.arg, tmp, sizeof(tmp),
										SMTP_SASL_PASS_MAX, &v, &err);
						buf_printf(log, "LOGIN %d %zu\n", rc, v.len);
					}
				} else {
					buf_printf(log, "%d %s %d %zu\n", (int)r, smtp_verb_str(cmd.verb),
						   cmd.reply_code, cmd.path.mailbox.len);
					if (r == SMTP_FATAL) {
						mode = M_DEAD;
					} else if (r == SMTP_BAD && cmd.line_open) {
						mode = M_SKIP;
					} else if (r == SMTP_OK && cmd.verb == SMTP_CMD_DATA) {
						smtp_data_init(&d, lim.max_size, policy);
						mode = M_DATA;
					} else if (r == SMTP_OK && cmd.verb == SMTP_CMD_BDAT) {
						smtp_bdat_begin(&b, cmd.bdat_size, cmd.bdat_last);
						if (cmd.bdat_size)
							mode = M_BDAT;
						else if (cmd.bdat_last)
							smtp_bdat_init(&b, lim.max_size);
					} else if (r == SMTP_OK && cmd.verb == SMTP_CMD_AUTH) {
						if (cmd.has_initial) {
							uint8_t tmp[SMTP_AUTH_LINE_MAX];
							struct smtp_sasl_plain pl;
							const char *err;
							int rc = smtp_sasl_plain_decode(
								cmd.auth_initial, tmp, sizeof(tmp),
								&pl, &err);
							if (rc == 0)
								FUZZ_REQUIRE(pl.authcid.len > 0 &&
									     pl.passwd.len > 0);
							buf_printf(log, "PLAIN %d\n", rc);
						} else {
							mode = M_AUTH;
						}
					}
				}
			}
			free(copy);
			buf_consume(&in, used);
			if (stop)
				break;
		}
		if (mode == M_DEAD || off == size)
			break;
		FUZZ_REQUIRE(round <= size + 1);
	}
	/* after FATAL the session stops reading: what it holds depends on
	 * the split */
	buf_printf(log, "rest=%zu mode=%d\n", mode == M_DEAD ? 0 : in.len, (int)mode);
	buf_cleanup(&in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t empty[1];
	if (size == 0)
		data = empty;
	enum smtp_lf_policy policy = (enum smtp_lf_policy)(size % 3);
	struct buf a, b;
	buf_init(&a, 0);
	buf_init(&b, 0);
	drive(data, size, size ? size : 1, size, policy, &a);
	size_t cut = size ? data[0] % (size + 1) : 0;
	drive(data, size, size ? size : 1, cut, policy, &b);
	FUZZ_REQUIRE(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
	if (size <= 2048) {
		buf_reset(&b);
		drive(data, size, 1, 1, policy, &b);
		FUZZ_REQUIRE(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
	}
	buf_cleanup(&a);
	buf_cleanup(&b);

	/* the reply helpers never exceed a line or emit a bare CR/LF */
	struct buf r;
	buf_init(&r, 0);
	smtp_reply(&r, 250, "2.0.0", "%.*s", (int)MIN(size, 2000), (const char *)data);
	FUZZ_REQUIRE(r.len <= SMTP_REPLY_LINE_MAX);
	for (size_t i = 0; i + 2 < r.len; i++)
		FUZZ_REQUIRE(r.data[i] != '\r' && r.data[i] != '\n');
	buf_cleanup(&r);
	return 0;
}

#include "tests/fuzz/fuzz_main.h"
