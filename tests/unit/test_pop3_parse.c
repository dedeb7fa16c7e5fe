/* proto/pop3_parse.c: command lines fed whole, one byte at a time and split
 * at every offset (each parse sees an exact-size heap copy, so ASan catches
 * any read past the input), line limits, numbers, AUTH PLAIN decoding and
 * the dot-stuffer across every chunk boundary against a line-based
 * reference. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base.h"
#include "node/pop3_session.h"
#include "proto/pop3_parse.h"
#include "tests/unit/check.h"

/* ---- command stream driver ------------------------------------------------ */

/* Renders one parse result as text for comparisons. */
static void log_result(struct buf *log, enum pop3_result r, const struct pop3_command *c)
{
	if (r == POP3_BAD) {
		buf_printf(log, "BAD(%s)\n", c->error);
		return;
	}
	buf_printf(log, "OK %s n=%u", pop3_verb_str(c->verb), c->nargs);
	for (unsigned i = 0; i < c->nargs; i++)
		buf_printf(log, " [%.*s]=%u", (int)c->args[i].len, (const char *)c->args[i].ptr,
			   c->num[i]);
	buf_printf(log, "%s\n", c->bare_lf ? " lf" : "");
}

/* Feeds `data` in chunks ending at the offsets in cuts[] (then the rest),
 * as the session does: unconsumed bytes are kept and presented again with
 * the next chunk; an open over-long line is skipped. */
static void drive(const uint8_t *data, size_t size, const size_t *cuts, size_t ncuts,
		  size_t max_line, struct buf *log)
{
	struct buf in;
	buf_init(&in, 0);
	bool skipping = false;
	size_t off = 0;
	for (size_t k = 0; k <= ncuts; k++) {
		size_t end = k < ncuts ? cuts[k] : size;
		if (end < off)
			continue;
		buf_append(&in, data + off, end - off);
		off = end;
		for (;;) {
			if (in.len == 0)
				break;
			uint8_t *copy = xmalloc(in.len);
			memcpy(copy, in.data, in.len);
			size_t used = 0;
			if (skipping) {
				bool done;
				used = pop3_skip_line(copy, in.len, &done);
				skipping = !done;
				free(copy);
				buf_consume(&in, used);
				continue;
			}
			struct pop3_command cmd;
			enum pop3_result r = pop3_parse_line(copy, in.len, max_line, &cmd, &used);
			if (r == POP3_MORE) {
				CHECK(used == 0);
				free(copy);
				break;
			}
			CHECK(used > 0 && used <= in.len);
			log_result(log, r, &cmd);
			if (r == POP3_BAD)
				skipping = cmd.line_open;
			free(copy);
			buf_consume(&in, used);
		}
	}
	buf_printf(log, "rest=%zu skipping=%d\n", in.len, skipping);
	buf_cleanup(&in);
}

static void check_splits(const char *what, const uint8_t *data, size_t size, size_t max_line)
{
	struct buf whole, other;
	buf_init(&whole, 0);
	buf_init(&other, 0);
	drive(data, size, NULL, 0, max_line, &whole);
	/* every single split point */
	for (size_t cut = 0; cut <= size; cut++) {
		buf_reset(&other);
		drive(data, size, &cut, 1, max_line, &other);
		if (other.len != whole.len || memcmp(other.data, whole.data, whole.len) != 0) {
			fprintf(stderr, "%s: split at %zu differs:\n%.*s---\n%.*s", what, cut,
				(int)whole.len, (const char *)whole.data, (int)other.len,
				(const char *)other.data);
			CHECK(!"split result differs");
			break;
		}
	}
	/* one byte at a time */
	size_t *cuts = xmalloc((size + 1) * sizeof(*cuts));
	for (size_t i = 0; i <= size; i++)
		cuts[i] = i;
	buf_reset(&other);
	drive(data, size, cuts, size + 1, max_line, &other);
	CHECK(other.len == whole.len && memcmp(other.data, whole.data, whole.len) == 0);
	free(cuts);
	buf_cleanup(&whole);
	buf_cleanup(&other);
}

static enum pop3_result parse1(const char *line, struct pop3_command *cmd)
{
	size_t len = strlen(line), used = 0;
	uint8_t *copy = xmalloc(len ? len : 1);
	memcpy(copy, line, len);
	enum pop3_result r = pop3_parse_line(copy, len, POP3_LINE_MAX, cmd, &used);
	if (r != POP3_MORE && !cmd->line_open)
		CHECK(used == len);
	/* Views must point into the input: keep the copy for the caller's
	 * checks through a static slot. */
	static uint8_t *keep;
	free(keep);
	keep = copy;
	return r;
}

static bool arg_is(const struct pop3_command *c, unsigned i, const char *s)
{
	return i < c->nargs && view_eq_cstr(c->args[i], s);
}

static void test_commands(void)
{
	struct pop3_command c;
	CHECK(parse1("USER u@example.test\r\n", &c) == POP3_OK && c.verb == POP3_CMD_USER &&
	      arg_is(&c, 0, "u@example.test") && !c.bare_lf);
	CHECK(parse1("pass my secret  pw \r\n", &c) == POP3_OK && c.verb == POP3_CMD_PASS &&
	      c.nargs == 1 && arg_is(&c, 0, "my secret  pw "));
	CHECK(parse1("PASS\r\n", &c) == POP3_BAD);
	CHECK(parse1("PASS \r\n", &c) == POP3_BAD);
	CHECK(parse1("stat\n", &c) == POP3_OK && c.verb == POP3_CMD_STAT && c.bare_lf);
	CHECK(parse1("STAT x\r\n", &c) == POP3_BAD);
	CHECK(parse1("LIST\r\n", &c) == POP3_OK && c.verb == POP3_CMD_LIST && c.nargs == 0);
	CHECK(parse1("LIST 7\r\n", &c) == POP3_OK && c.nargs == 1 && c.num[0] == 7);
	CHECK(parse1("LIST 1 2\r\n", &c) == POP3_BAD && strcmp(c.error, "too many arguments") == 0);
	CHECK(parse1("RETR  3  \r\n", &c) == POP3_OK && c.verb == POP3_CMD_RETR && c.num[0] == 3);
	CHECK(parse1("RETR\r\n", &c) == POP3_BAD && strcmp(c.error, "missing argument") == 0);
	CHECK(parse1("RETR 0\r\n", &c) == POP3_OK && c.num[0] == 0);
	CHECK(parse1("RETR 4294967295\r\n", &c) == POP3_OK && c.num[0] == 4294967295u);
	CHECK(parse1("RETR 4294967296\r\n", &c) == POP3_BAD &&
	      strcmp(c.error, "number too large") == 0);
	CHECK(parse1("RETR 00000000000000000000001\r\n", &c) == POP3_OK && c.num[0] == 1);
	CHECK(parse1("RETR 99999999999999999999999\r\n", &c) == POP3_BAD);
	CHECK(parse1("RETR 42949672950\r\n", &c) == POP3_BAD);
	CHECK(parse1("RETR -1\r\n", &c) == POP3_BAD && strcmp(c.error, "invalid number") == 0);
	CHECK(parse1("RETR +1\r\n", &c) == POP3_BAD);
	CHECK(parse1("RETR 1x\r\n", &c) == POP3_BAD);
	CHECK(parse1("DELE 2\r\n", &c) == POP3_OK && c.verb == POP3_CMD_DELE && c.num[0] == 2);
	CHECK(parse1("TOP 1 0\r\n", &c) == POP3_OK && c.verb == POP3_CMD_TOP && c.num[0] == 1 &&
	      c.num[1] == 0);
	CHECK(parse1("TOP 1\r\n", &c) == POP3_BAD);
	CHECK(parse1("TOP 1 2 3\r\n", &c) == POP3_BAD);
	CHECK(parse1("TOP 1 99999999999\r\n", &c) == POP3_BAD);
	CHECK(parse1("UIDL\r\n", &c) == POP3_OK && c.verb == POP3_CMD_UIDL);
	CHECK(parse1("uidl 12\r\n", &c) == POP3_OK && c.num[0] == 12);
	CHECK(parse1("NOOP\r\n", &c) == POP3_OK && c.verb == POP3_CMD_NOOP);
	CHECK(parse1("RSET\r\n", &c) == POP3_OK && c.verb == POP3_CMD_RSET);
	CHECK(parse1("QUIT\r\n", &c) == POP3_OK && c.verb == POP3_CMD_QUIT);
	CHECK(parse1("CAPA\r\n", &c) == POP3_OK && c.verb == POP3_CMD_CAPA);
	CHECK(parse1("STLS\r\n", &c) == POP3_OK && c.verb == POP3_CMD_STLS);
	CHECK(parse1("UTF8\r\n", &c) == POP3_OK && c.verb == POP3_CMD_UTF8);
	CHECK(parse1("APOP u 0123456789abcdef\r\n", &c) == POP3_OK && c.verb == POP3_CMD_APOP);
	CHECK(parse1("AUTH\r\n", &c) == POP3_OK && c.verb == POP3_CMD_AUTH && c.nargs == 0);
	CHECK(parse1("AUTH PLAIN\r\n", &c) == POP3_OK && arg_is(&c, 0, "PLAIN") && c.nargs == 1);
	CHECK(parse1("AUTH PLAIN AHUAcHc=\r\n", &c) == POP3_OK && arg_is(&c, 1, "AHUAcHc="));
	CHECK(parse1("XYZZY a b c d\r\n", &c) == POP3_OK && c.verb == POP3_CMD_UNKNOWN &&
	      view_eq_cstr(c.keyword, "XYZZY") && c.nargs == 2);
	CHECK(parse1("RETRX 1\r\n", &c) == POP3_OK && c.verb == POP3_CMD_UNKNOWN);
	CHECK(parse1("\r\n", &c) == POP3_BAD && strcmp(c.error, "missing command") == 0);
	CHECK(parse1(" NOOP\r\n", &c) == POP3_BAD);
	CHECK(parse1("NO\001OP\r\n", &c) == POP3_BAD);
	CHECK(parse1("NOOP\r\r\n", &c) == POP3_BAD);
	CHECK(parse1("NOOP", &c) == POP3_MORE);
	CHECK(parse1("", &c) == POP3_MORE);
	CHECK(parse1("NOOP\r", &c) == POP3_MORE);

	/* NUL inside a line */
	static const uint8_t nul[] = "PASS a\0b\r\n";
	size_t used;
	CHECK(pop3_parse_line(nul, sizeof(nul) - 1, POP3_LINE_MAX, &c, &used) == POP3_BAD &&
	      used == sizeof(nul) - 1);

	/* SASL continuation lines */
	static const uint8_t sasl[] = "AHUAcHc=\r\n*\r\n";
	CHECK(pop3_parse_raw_line(sasl, sizeof(sasl) - 1, POP3_SASL_LINE_MAX, &c, &used) == POP3_OK &&
	      used == 10 && arg_is(&c, 0, "AHUAcHc="));
	CHECK(pop3_parse_raw_line(sasl + used, 3, POP3_SASL_LINE_MAX, &c, &used) == POP3_OK &&
	      arg_is(&c, 0, "*"));
}

static void test_long_lines(void)
{
	struct pop3_command c;
	size_t used;
	/* 255 octets with CRLF is the limit. */
	uint8_t line[600];
	memset(line, 'a', sizeof(line));
	memcpy(line, "NOOP ", 5);
	line[253] = '\r';
	line[254] = '\n';
	CHECK(pop3_parse_line(line, 255, 255, &c, &used) == POP3_BAD &&
	      strcmp(c.error, "too many arguments") == 0 && used == 255 && !c.line_open);
	/* exactly 255 with a known verb and valid shape */
	memcpy(line, "USER ", 5);
	CHECK(pop3_parse_line(line, 255, 255, &c, &used) == POP3_OK && used == 255 &&
	      c.args[0].len == 248);
	/* 256 octets: too long, the LF is in view so it is consumed */
	memset(line, 'a', sizeof(line));
	memcpy(line, "USER ", 5);
	line[254] = '\r';
	line[255] = '\n';
	CHECK(pop3_parse_line(line, 256, 255, &c, &used) == POP3_BAD &&
	      strcmp(c.error, "line too long") == 0 && used == 256 && !c.line_open);
	/* 255 bytes without LF: refused at once, line open */
	CHECK(pop3_parse_line(line, 255, 255, &c, &used) == POP3_BAD && used == 255 && c.line_open);
	/* 254 bytes without LF: could still end in time */
	CHECK(pop3_parse_line(line, 254, 255, &c, &used) == POP3_MORE && used == 0);
	bool done;
	CHECK(pop3_skip_line(line, 10, &done) == 10 && !done);
	CHECK(pop3_skip_line((const uint8_t *)"xx\nNOOP", 7, &done) == 3 && done);
	CHECK(pop3_skip_line(line, 0, &done) == 0 && !done);

	/* A stream: a long line between commands, split every way. */
	struct buf s;
	buf_init(&s, 0);
	buf_printf(&s, "CAPA\r\nUSER u\r\n");
	for (int i = 0; i < 700; i++)
		buf_append(&s, "x", 1);
	buf_printf(&s, "\r\nNOOP\r\nRETR 3\nTOP 1 2\r\n");
	check_splits("long", s.data, s.len, POP3_LINE_MAX);
	struct buf log;
	buf_init(&log, 0);
	drive(s.data, s.len, NULL, 0, POP3_LINE_MAX, &log);
	buf_append(&log, "", 1);
	CHECK(strstr((char *)log.data, "BAD(line too long)\nOK NOOP") != NULL);
	CHECK(strstr((char *)log.data, "rest=0 skipping=0") != NULL);
	buf_cleanup(&log);
	/* tiny limits */
	check_splits("tiny", s.data, s.len, 8);
	check_splits("zero", s.data, s.len, 0);
	buf_cleanup(&s);
}

static void test_stream_splits(void)
{
	static const char stream[] =
		"CAPA\r\nUSER u@example.test\r\nPASS pw with spaces\r\nSTAT\r\nLIST\r\nLIST 2\r\n"
		"UIDL 1\r\nRETR 1\r\nTOP 2 10\r\nDELE 3\r\nRSET\r\nNOOP\nXYZZY 1 2 3\r\n"
		"RETR 4294967296\r\n\r\nAUTH PLAIN AHUAcHc=\r\nQUIT\r\nNOO";
	check_splits("stream", (const uint8_t *)stream, sizeof(stream) - 1, POP3_LINE_MAX);
	struct buf log;
	buf_init(&log, 0);
	drive((const uint8_t *)stream, sizeof(stream) - 1, NULL, 0, POP3_LINE_MAX, &log);
	buf_append(&log, "", 1);
	CHECK(strstr((char *)log.data, "OK PASS n=1 [pw with spaces]=0\n") != NULL);
	CHECK(strstr((char *)log.data, "OK TOP n=2 [2]=2 [10]=10\n") != NULL);
	CHECK(strstr((char *)log.data, "OK NOOP n=0 lf\n") != NULL);
	CHECK(strstr((char *)log.data, "BAD(number too large)\nBAD(missing command)\n") != NULL);
	CHECK(strstr((char *)log.data, "rest=3 skipping=0") != NULL);
	buf_cleanup(&log);
}

/* ---- SASL ------------------------------------------------------------------- */

static void b64_encode(const uint8_t *p, size_t n, struct buf *out)
{
	static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	for (size_t i = 0; i < n; i += 3) {
		uint32_t w = (uint32_t)p[i] << 16;
		if (i + 1 < n)
			w |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < n)
			w |= p[i + 2];
		char q[4] = { tbl[(w >> 18) & 63], tbl[(w >> 12) & 63],
			      i + 1 < n ? tbl[(w >> 6) & 63] : '=', i + 2 < n ? tbl[w & 63] : '=' };
		buf_append(out, q, 4);
	}
}

static int plain(const void *raw, size_t raw_len, struct pop3_sasl_plain *sp, uint8_t *dec,
		 size_t dec_cap, const char **why)
{
	struct buf b;
	buf_init(&b, 0);
	b64_encode(raw, raw_len, &b);
	int r = pop3_sasl_plain_decode(buf_view(&b), dec, dec_cap, sp, why);
	buf_cleanup(&b);
	return r;
}

static void test_sasl(void)
{
	uint8_t dec[POP3_SASL_LINE_MAX];
	size_t n;
	CHECK(pop3_base64_decode(view_cstr(""), dec, sizeof(dec), &n) == 0 && n == 0);
	CHECK(pop3_base64_decode(view_cstr("Zg=="), dec, sizeof(dec), &n) == 0 && n == 1 &&
	      dec[0] == 'f');
	CHECK(pop3_base64_decode(view_cstr("Zm8="), dec, sizeof(dec), &n) == 0 && n == 2);
	CHECK(pop3_base64_decode(view_cstr("Zm9v"), dec, sizeof(dec), &n) == 0 && n == 3 &&
	      memcmp(dec, "foo", 3) == 0);
	CHECK(pop3_base64_decode(view_cstr("Zm9vYg=="), dec, sizeof(dec), &n) == 0 && n == 4);
	CHECK(pop3_base64_decode(view_cstr("Zh=="), dec, sizeof(dec), &n) < 0); /* pad bits */
	CHECK(pop3_base64_decode(view_cstr("Zm9="), dec, sizeof(dec), &n) < 0);
	CHECK(pop3_base64_decode(view_cstr("Zg="), dec, sizeof(dec), &n) < 0);
	CHECK(pop3_base64_decode(view_cstr("Zg"), dec, sizeof(dec), &n) < 0);
	CHECK(pop3_base64_decode(view_cstr("Zg==Zm9v"), dec, sizeof(dec), &n) < 0);
	CHECK(pop3_base64_decode(view_cstr("Z=g="), dec, sizeof(dec), &n) < 0);
	CHECK(pop3_base64_decode(view_cstr("===="), dec, sizeof(dec), &n) < 0);
	CHECK(pop3_base64_decode(view_cstr("Zm9v Zm9v"), dec, sizeof(dec), &n) < 0);
	CHECK(pop3_base64_decode(view_cstr("Zm9-"), dec, sizeof(dec), &n) < 0);
	CHECK(pop3_base64_decode(view_cstr("Zm9vYmFy"), dec, 5, &n) < 0);
	CHECK(pop3_base64_decode(view_cstr("Zm9vYmFy"), dec, 6, &n) == 0 && n == 6);

	struct pop3_sasl_plain sp;
	const char *why = NULL;
	CHECK(pop3_sasl_plain_decode(view_cstr("AHVAZXhhbXBsZS50ZXN0AHB3"), dec, sizeof(dec), &sp,
				     &why) == 0 &&
	      sp.authzid.len == 0 && view_eq_cstr(sp.authcid, "u@example.test") &&
	      view_eq_cstr(sp.passwd, "pw"));
	CHECK(pop3_sasl_plain_decode(
		      view_cstr("dUBleGFtcGxlLnRlc3QAdUBleGFtcGxlLnRlc3QAc2VjcmV0IHB3"), dec,
		      sizeof(dec), &sp, &why) == 0 &&
	      view_eq_cstr(sp.authzid, "u@example.test") && view_eq_cstr(sp.passwd, "secret pw"));
	CHECK(pop3_sasl_plain_decode(view_cstr("AHUA"), dec, sizeof(dec), &sp, &why) < 0);
	CHECK(pop3_sasl_plain_decode(view_cstr("AABwdw=="), dec, sizeof(dec), &sp, &why) < 0);
	CHECK(pop3_sasl_plain_decode(view_cstr("dQBwdw=="), dec, sizeof(dec), &sp, &why) < 0);
	CHECK(pop3_sasl_plain_decode(view_cstr("AHUAcAB3"), dec, sizeof(dec), &sp, &why) < 0);
	CHECK(pop3_sasl_plain_decode(view_cstr(""), dec, sizeof(dec), &sp, &why) < 0);
	CHECK(pop3_sasl_plain_decode(view_cstr("AHVAZXhhbXBsZS50ZXN0AHB3="), dec, sizeof(dec), &sp,
				     &why) < 0);
	CHECK(pop3_sasl_plain_decode(view_cstr("!!!!"), dec, sizeof(dec), &sp, &why) < 0 &&
	      strcmp(why, "invalid base64") == 0);
	/* a failed decode leaves nothing behind */
	bool clean = true;
	for (size_t i = 0; i < sizeof(dec); i++)
		clean &= dec[i] == 0;
	CHECK(clean);

	/* bounds: 255 is fine, 256 is not, for authcid and passwd */
	uint8_t raw[700];
	memset(raw, 'a', sizeof(raw));
	raw[0] = 0;
	raw[256] = 0;
	CHECK(plain(raw, 256 + 1 + 255, &sp, dec, sizeof(dec), &why) == 0 && sp.authcid.len == 255 &&
	      sp.passwd.len == 255);
	CHECK(plain(raw, 256 + 1 + 256, &sp, dec, sizeof(dec), &why) < 0);
	memset(raw, 'a', sizeof(raw));
	raw[0] = 0;
	raw[257] = 0;
	CHECK(plain(raw, 257 + 1 + 2, &sp, dec, sizeof(dec), &why) < 0);
	/* the output buffer bounds the decode */
	memset(raw, 'a', sizeof(raw));
	raw[0] = 0;
	raw[2] = 0;
	CHECK(plain(raw, 100, &sp, dec, 50, &why) < 0);
	CHECK(plain(raw, 100, &sp, dec, 100, &why) == 0 && sp.passwd.len == 97);
}

/* ---- dot-stuffing ---------------------------------------------------------------- */

/* Line-based reference: lines end at LF (one CR before it is part of the
 * terminator), an unterminated last line counts, each goes out with CRLF
 * and a leading '.' doubled; TOP stops after the header's blank line plus
 * `lines` lines. */
static void reference(const uint8_t *m, size_t len, bool top, uint32_t lines, struct buf *out)
{
	bool in_header = true, done = false;
	uint32_t left = lines;
	size_t i = 0;
	while (i < len && !done) {
		const uint8_t *nl = memchr(m + i, '\n', len - i);
		size_t end = nl ? (size_t)(nl - m) : len;
		size_t l = end - i;
		if (l > 0 && m[i + l - 1] == '\r')
			l--;
		if (l > 0 && m[i] == '.')
			buf_append(out, ".", 1);
		buf_append(out, m + i, l);
		buf_append(out, "\r\n", 2);
		if (top) {
			if (in_header) {
				if (l == 0) {
					in_header = false;
					done = left == 0;
				}
			} else if (--left == 0) {
				done = true;
			}
		}
		i = nl ? end + 1 : len;
	}
	buf_append(out, ".\r\n", 3);
}

static void stuff(const uint8_t *m, size_t len, bool top, uint32_t lines, const size_t *cuts,
		  size_t ncuts, struct buf *out)
{
	struct pop3_dotstuff d;
	if (top)
		pop3_dotstuff_init_top(&d, lines);
	else
		pop3_dotstuff_init(&d);
	size_t off = 0;
	for (size_t k = 0; k <= ncuts; k++) {
		size_t end = k < ncuts ? cuts[k] : len;
		if (end < off)
			continue;
		uint8_t *copy = xmalloc(end - off + 1);
		memcpy(copy, m + off, end - off);
		CHECK(pop3_dotstuff_feed(&d, copy, end - off, out) == 0);
		free(copy);
		off = end;
	}
	CHECK(pop3_dotstuff_finish(&d, out) == 0);
	CHECK(pop3_dotstuff_finish(&d, out) == 0); /* idempotent */
}

static void check_stuff(const char *what, const char *msg, size_t len, bool top, uint32_t lines)
{
	const uint8_t *m = (const uint8_t *)msg;
	struct buf want, got;
	buf_init(&want, 0);
	buf_init(&got, 0);
	reference(m, len, top, lines, &want);
	stuff(m, len, top, lines, NULL, 0, &got);
	if (got.len != want.len || memcmp(got.data, want.data, want.len) != 0) {
		fprintf(stderr, "%s (top=%d lines=%u): whole differs:\n[%.*s]\n[%.*s]\n", what, top,
			lines, (int)want.len, (const char *)want.data, (int)got.len,
			(const char *)got.data);
		CHECK(!"dotstuff differs from reference");
	}
	bool ok = true;
	for (size_t a = 0; a <= len && ok; a++) {
		for (size_t b = a; b <= len && ok; b++) {
			size_t cuts[2] = { a, b };
			buf_reset(&got);
			stuff(m, len, top, lines, cuts, 2, &got);
			ok = got.len == want.len && memcmp(got.data, want.data, want.len) == 0;
			if (!ok)
				fprintf(stderr, "%s: cut at %zu,%zu differs\n", what, a, b);
		}
	}
	size_t *cuts = xmalloc((len + 1) * sizeof(*cuts));
	for (size_t i = 0; i <= len; i++)
		cuts[i] = i;
	buf_reset(&got);
	stuff(m, len, top, lines, cuts, len + 1, &got);
	ok = ok && got.len == want.len && memcmp(got.data, want.data, want.len) == 0;
	free(cuts);
	CHECK(ok);
	buf_cleanup(&want);
	buf_cleanup(&got);
}

static void test_dotstuff(void)
{
	static const char *const msgs[] = {
		"Subject: x\r\nFrom: a@b\r\n\r\n.leading dot\r\n..two\r\nend\r\n.\r\n",
		"Subject: lf\n\nbody 1\n.dot\nbody 3\n",
		"Subject: no final newline\r\n\r\nlast line",
		"",
		".",
		".\r\n",
		"\r\n",
		"\n\n\n",
		"H: 1\nH: 2\n\nl1\r\nl2\n.l3\r\n\r\n..l5\nl6",
		"a\rb\r\n.\rc\r\r\n\r\n\rline\r",
		"header only, no blank line\r\nsecond\r\n",
		"X: y\r\n\r\n\r\n\r\n.\r\n",
	};
	for (size_t i = 0; i < ARRAY_LEN(msgs); i++) {
		char what[32];
		snprintf(what, sizeof(what), "msg%zu", i);
		size_t len = strlen(msgs[i]);
		check_stuff(what, msgs[i], len, false, 0);
		check_stuff(what, msgs[i], len, true, 0);
		check_stuff(what, msgs[i], len, true, 1);
		check_stuff(what, msgs[i], len, true, 2);
		check_stuff(what, msgs[i], len, true, 100);
	}

	/* exact outputs */
	struct buf got;
	buf_init(&got, 0);
	static const char m1[] = "S: x\n\n.a\nb";
	stuff((const uint8_t *)m1, sizeof(m1) - 1, false, 0, NULL, 0, &got);
	CHECK(got.len == 19 && memcmp(got.data, "S: x\r\n\r\n..a\r\nb\r\n.\r\n", 19) == 0);
	buf_reset(&got);
	stuff((const uint8_t *)m1, sizeof(m1) - 1, true, 0, NULL, 0, &got);
	CHECK(got.len == 11 && memcmp(got.data, "S: x\r\n\r\n.\r\n", 11) == 0);
	buf_reset(&got);
	stuff((const uint8_t *)m1, sizeof(m1) - 1, true, 1, NULL, 0, &got);
	CHECK(got.len == 16 && memcmp(got.data, "S: x\r\n\r\n..a\r\n.\r\n", 16) == 0);

	/* TOP 0 says it is done right after the blank line */
	struct pop3_dotstuff d;
	pop3_dotstuff_init_top(&d, 0);
	buf_reset(&got);
	CHECK(pop3_dotstuff_feed(&d, (const uint8_t *)"A: b\r\n", 6, &got) == 0 &&
	      !pop3_dotstuff_done(&d));
	CHECK(pop3_dotstuff_feed(&d, (const uint8_t *)"\r\nbody\r\n", 8, &got) == 0 &&
	      pop3_dotstuff_done(&d));
	CHECK(got.len == 8);

	/* a full output buffer refuses the whole piece and changes nothing */
	struct buf small;
	buf_init(&small, 16);
	pop3_dotstuff_init(&d);
	CHECK(pop3_dotstuff_feed(&d, (const uint8_t *)"\n.\n.\n", 5, &small) == 0 && small.len == 10);
	CHECK(pop3_dotstuff_feed(&d, (const uint8_t *)".....", 5, &small) < 0 && small.len == 10);
	CHECK(d.at_line_start && !d.prev_cr && !d.line_content);
	CHECK(pop3_dotstuff_finish(&d, &small) == 0 && small.len == 13 &&
	      memcmp(small.data, "\r\n..\r\n..\r\n.\r\n", 13) == 0);
	buf_cleanup(&small);
	buf_cleanup(&got);

	/* a big message in odd pieces matches the reference */
	struct buf big, want;
	buf_init(&big, 0);
	buf_init(&want, 0);
	for (int i = 0; i < 5000; i++)
		buf_printf(&big, "%s%d%s", i % 7 == 0 ? "." : "", i, i % 3 ? "\n" : "\r\n");
	reference(big.data, big.len, false, 0, &want);
	size_t cuts[64];
	for (size_t i = 0; i < ARRAY_LEN(cuts); i++)
		cuts[i] = (i * 7919u) % big.len;
	for (size_t i = 1; i < ARRAY_LEN(cuts); i++) /* ascending */
		for (size_t k = i; k > 0 && cuts[k - 1] > cuts[k]; k--) {
			size_t t = cuts[k];
			cuts[k] = cuts[k - 1];
			cuts[k - 1] = t;
		}
	buf_reset(&got);
	stuff(big.data, big.len, false, 0, cuts, ARRAY_LEN(cuts), &got);
	CHECK(got.len == want.len && memcmp(got.data, want.data, want.len) == 0);
	buf_cleanup(&big);
	buf_cleanup(&want);
	buf_cleanup(&got);
}

int main(void)
{
	test_commands();
	test_long_lines();
	test_stream_splits();
	test_sasl();
	test_dotstuff();
	/* A connected POP3 session's fixed cost (the snapshot comes after
	 * login). */
	fprintf(stderr, "sizeof(struct pop3_session) = %zu\n", pop3_session_struct_size());
	CHECK(pop3_session_struct_size() <= 1024);
	return check_finish("test_pop3_parse");
}
