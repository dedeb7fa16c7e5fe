/* Unit tests for storage/mime.c: the streaming MIME parser, its blob and the
 * readers (ENVELOPE, BODY/BODYSTRUCTURE golden files), part offsets, RFC 2047
 * and the transfer-encoding decoders, and adversarial input under bounded
 * memory.
 *
 * Golden files live in tests/data/mime/<name>.{envelope,bodystructure}. Run
 * with MIME_UPDATE_GOLDEN=1 to rewrite them (then review every line). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/base.h"
#include "storage/mime.h"

static int failures;

#define CHECK(cond)                                                          \
	do {                                                                 \
		if (!(cond)) {                                               \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, \
				__LINE__, #cond);                            \
			failures++;                                          \
		}                                                            \
	} while (0)

#define CHECK_BUF(b, want)                                                     \
	do {                                                                   \
		const char *w_ = (want);                                       \
		if ((b)->len != strlen(w_) || memcmp((b)->data, w_, (b)->len)) { \
			fprintf(stderr, "%s:%d: got '%.*s'\n  want '%s'\n",     \
				__FILE__, __LINE__, (int)(b)->len,             \
				(const char *)(b)->data, w_);                  \
			failures++;                                            \
		}                                                              \
	} while (0)

/* ---- helpers ---- */

static struct buf read_file(const char *path, bool *ok)
{
	struct buf b;
	buf_init(&b, 0);
	*ok = false;
	FILE *fp = fopen(path, "rb");
	if (!fp)
		return b;
	for (;;) {
		uint8_t *dst = buf_reserve(&b, 65536);
		size_t n = fread(dst, 1, 65536, fp);
		buf_commit(&b, n);
		if (n == 0)
			break;
	}
	*ok = !ferror(fp);
	fclose(fp);
	return b;
}

static void write_file(const char *path, const struct buf *b)
{
	FILE *fp = fopen(path, "wb");
	if (!fp || fwrite(b->data, 1, b->len, fp) != b->len) {
		fprintf(stderr, "%s: cannot write\n", path);
		failures++;
	}
	if (fp)
		fclose(fp);
}

/* Parses msg fed in chunks of `chunk` bytes (0: all at once). */
static struct buf parse_chunked(const uint8_t *msg, size_t len, size_t chunk,
				size_t *mem_r)
{
	struct mime_parser *p = mime_parser_new(NULL);
	if (chunk == 0)
		chunk = len ? len : 1;
	for (size_t off = 0; off < len; off += chunk)
		CHECK(mime_parser_feed(p, msg + off, MIN(chunk, len - off)) == 0);
	struct buf blob;
	buf_init(&blob, 0);
	CHECK(mime_parser_finish(p, &blob) == 0);
	CHECK(mime_parser_feed(p, msg, 0) == -1);
	if (mem_r)
		*mem_r = mime_parser_mem_high_water(p);
	mime_parser_free(&p);
	CHECK(p == NULL);
	return blob;
}

static struct buf parse_split(const uint8_t *msg, size_t len, size_t at)
{
	struct mime_parser *p = mime_parser_new(NULL);
	mime_parser_feed(p, msg, at);
	mime_parser_feed(p, msg + at, len - at);
	struct buf blob;
	buf_init(&blob, 0);
	mime_parser_finish(p, &blob);
	mime_parser_free(&p);
	return blob;
}

static bool buf_same(const struct buf *a, const struct buf *b)
{
	return a->len == b->len && memcmp(a->data, b->data, a->len) == 0;
}

static struct buf parse_str(const char *msg)
{
	return parse_chunked((const uint8_t *)msg, strlen(msg), 0, NULL);
}

static void get_part(const struct buf *blob, const char *section,
		     struct mime_part_info *info)
{
	memset(info, 0xee, sizeof(*info));
	if (mime_blob_find_part(buf_view(blob), section, info) != 0) {
		fprintf(stderr, "section '%s' not found\n", section);
		failures++;
	}
}

/* The bytes of msg at [start, start+len). */
static bool slice_is(const char *msg, uint64_t start, uint64_t len, const char *want)
{
	size_t n = strlen(msg);
	if (start > n || len > n - start || len != strlen(want) ||
	    memcmp(msg + start, want, (size_t)len) != 0) {
		fprintf(stderr, "slice [%llu,+%llu) = '%.*s', want '%s'\n",
			(unsigned long long)start, (unsigned long long)len,
			(int)(start <= n ? MIN(len, n - start) : 0),
			start <= n ? msg + start : "", want);
		return false;
	}
	return true;
}

/* ---- corpus: golden files and chunking invariance ---- */

static void check_golden(const char *path, const struct buf *got, bool update)
{
	if (update) {
		write_file(path, got);
		return;
	}
	bool ok;
	struct buf want = read_file(path, &ok);
	if (!ok) {
		fprintf(stderr, "%s: missing golden file\n", path);
		failures++;
	} else if (!buf_same(&want, got)) {
		fprintf(stderr, "%s: differs:\n  got:  %.*s\n  want: %.*s\n", path,
			(int)got->len, (const char *)got->data, (int)want.len,
			(const char *)want.data);
		failures++;
	}
	buf_cleanup(&want);
}

/* The message ends exactly at a PROT_NONE page, so reading past it faults. */
static void check_guard_page(const struct buf *msg, const struct buf *want)
{
	long pg = sysconf(_SC_PAGESIZE);
	size_t pages = (msg->len + (size_t)pg - 1) / (size_t)pg + 1;
	uint8_t *m = mmap(NULL, pages * (size_t)pg, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return;
	uint8_t *guard = m + (pages - 1) * (size_t)pg;
	CHECK(mprotect(guard, (size_t)pg, PROT_NONE) == 0);
	uint8_t *start = guard - msg->len;
	memcpy(start, msg->data, msg->len);
	struct buf blob = parse_chunked(start, msg->len, 7, NULL);
	CHECK(buf_same(&blob, want));
	buf_cleanup(&blob);
	munmap(m, pages * (size_t)pg);
}

static void check_corpus_message(const char *dir, const char *name, bool update)
{
	char path[2048];
	snprintf(path, sizeof(path), "%.1000s/%.500s", dir, name);
	bool ok;
	struct buf msg = read_file(path, &ok);
	CHECK(ok);
	size_t mem = 0;
	struct buf blob = parse_chunked(msg.data, msg.len, 0, &mem);
	CHECK(mem < 256 * 1024);

	struct buf env, bs, body;
	buf_init(&env, 0);
	buf_init(&bs, 0);
	buf_init(&body, 0);
	CHECK(mime_blob_envelope(buf_view(&blob), &env) == 0);
	CHECK(mime_blob_bodystructure(buf_view(&blob), true, &bs) == 0);
	CHECK(mime_blob_bodystructure(buf_view(&blob), false, &body) == 0);
	CHECK(body.len > 0 && body.len < bs.len);
	buf_append(&env, "\n", 1);
	buf_append(&bs, "\n", 1);
	size_t base = strlen(path) - 4; /* ".eml" */
	snprintf(path + base, sizeof(path) - base, ".envelope");
	check_golden(path, &env, update);
	snprintf(path + base, sizeof(path) - base, ".bodystructure");
	check_golden(path, &bs, update);

	struct buf one = parse_chunked(msg.data, msg.len, 1, NULL);
	if (!buf_same(&one, &blob)) {
		fprintf(stderr, "%s: byte-at-a-time blob differs\n", name);
		failures++;
	}
	buf_cleanup(&one);
	if (msg.len <= 4096) {
		for (size_t at = 0; at <= msg.len; at++) {
			struct buf s = parse_split(msg.data, msg.len, at);
			if (!buf_same(&s, &blob)) {
				fprintf(stderr, "%s: split at %zu differs\n", name, at);
				failures++;
				at = msg.len;
			}
			buf_cleanup(&s);
		}
		check_guard_page(&msg, &blob);
	}
	buf_cleanup(&env);
	buf_cleanup(&bs);
	buf_cleanup(&body);
	buf_cleanup(&blob);
	buf_cleanup(&msg);
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_corpus(void)
{
	const char *src = getenv("MAIL_SOURCE_DIR");
	char dir[1024];
	snprintf(dir, sizeof(dir), "%s/tests/data/mime", src ? src : ".");
	DIR *d = opendir(dir);
	if (!d) {
		fprintf(stderr, "%s: %s\n", dir, strerror(errno));
		failures++;
		return;
	}
	char *names[256];
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL && n < ARRAY_LEN(names)) {
		size_t l = strlen(de->d_name);
		if (l > 4 && strcmp(de->d_name + l - 4, ".eml") == 0)
			names[n++] = xstrdup(de->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof(names[0]), name_cmp);
	CHECK(n >= 15);
	bool update = getenv("MIME_UPDATE_GOLDEN") != NULL;
	for (size_t i = 0; i < n; i++) {
		check_corpus_message(dir, names[i], update);
		free(names[i]);
	}
}

/* ---- offsets against hand-computed expectations ---- */

static void test_offsets_simple(void)
{
	/* 0         1          2            3
	 * 0123456789012345678 9 0123456789 0 1 2 ... */
	const char *msg = "Subject: hi\r\n"  /* 0..12 */
			  "\r\n"             /* 13..14 */
			  "line one\r\n"     /* 15..24 */
			  "line two";        /* 25..32 */
	struct buf blob = parse_str(msg);
	struct mime_part_info pi;
	get_part(&blob, "", &pi);
	CHECK(pi.hdr_start == 0 && pi.hdr_len == 15);
	CHECK(pi.body_start == 15 && pi.body_len == 18 && pi.body_lines == 2);
	CHECK(pi.is_message && pi.msg_hdr_len == 15 && pi.msg_body_start == 15);
	CHECK(strcmp(pi.type, "text") == 0 && strcmp(pi.subtype, "plain") == 0);
	get_part(&blob, "1", &pi); /* a non-multipart message is its own part 1 */
	CHECK(pi.body_start == 15 && pi.body_len == 18 && !pi.is_message);
	struct mime_part_info x;
	CHECK(mime_blob_find_part(buf_view(&blob), "2", &x) == -1);
	CHECK(mime_blob_find_part(buf_view(&blob), "1.1", &x) == 0);
	CHECK(mime_blob_find_part(buf_view(&blob), "0", &x) == -1);
	CHECK(mime_blob_find_part(buf_view(&blob), "1.", &x) == -1);
	CHECK(mime_blob_find_part(buf_view(&blob), "x", &x) == -1);
	CHECK(mime_blob_find_part(buf_view(&blob), "99999999999", &x) == -1);
	buf_cleanup(&blob);
}

static void test_offsets_multipart(void)
{
	const char *h0 = "Content-Type: multipart/mixed; boundary=XX\r\n\r\n";
	const char *pre = "preamble\r\n";
	const char *h1 = "Content-Type: text/plain\r\n\r\n";
	const char *b1 = "part one\r\nsecond line";
	const char *h2 = "Content-Type: message/rfc822\r\n\r\n";
	const char *mh = "Subject: inner\r\nContent-Type: multipart/alternative; "
			 "boundary=\"YY\"\r\n\r\n";
	const char *ih1 = "\r\n"; /* no MIME header at all */
	const char *ib1 = "inner plain\r\n";
	const char *ih2 = "Content-Type: text/html\r\n\r\n";
	const char *ib2 = "<p>x</p>";
	char msg[2048];
	snprintf(msg, sizeof(msg),
		 "%s%s--XX\r\n%s%s\r\n--XX\r\n%s%s--YY\r\n%s%s\r\n--YY\r\n%s%s\r\n"
		 "--YY--\r\n\r\n--XX--\r\nepilogue\r\n",
		 h0, pre, h1, b1, h2, mh, ih1, ib1, ih2, ib2);
	size_t o_h1 = strlen(h0) + strlen(pre) + 6;
	size_t o_b1 = o_h1 + strlen(h1);
	size_t o_h2 = o_b1 + strlen(b1) + 8;
	size_t o_b2 = o_h2 + strlen(h2); /* = the encapsulated message header */
	size_t o_ih1 = o_b2 + strlen(mh) + 6;
	size_t o_ih2 = o_ih1 + strlen(ih1) + strlen(ib1) + 8;
	size_t o_end2 = o_ih2 + strlen(ih2) + strlen(ib2) + 10; /* \r\n--YY--\r\n */

	struct buf blob = parse_str(msg);
	struct mime_part_info pi;
	get_part(&blob, "", &pi);
	CHECK(pi.is_multipart && pi.hdr_len == strlen(h0));
	CHECK(pi.body_start == strlen(h0) && pi.body_len == strlen(msg) - strlen(h0));

	get_part(&blob, "1", &pi); /* BODY[1], BODY[1.MIME] */
	CHECK(pi.hdr_start == o_h1 && pi.hdr_len == strlen(h1));
	CHECK(slice_is(msg, pi.hdr_start, pi.hdr_len, h1));
	CHECK(slice_is(msg, pi.body_start, pi.body_len, b1));
	CHECK(pi.body_start == o_b1 && pi.body_lines == 2 && !pi.is_message);

	get_part(&blob, "2", &pi); /* BODY[2.MIME], BODY[2], BODY[2.HEADER] */
	CHECK(pi.is_message && strcmp(pi.type, "message") == 0);
	CHECK(pi.hdr_start == o_h2 && slice_is(msg, pi.hdr_start, pi.hdr_len, h2));
	CHECK(pi.body_start == o_b2 && pi.body_start + pi.body_len == o_end2);
	CHECK(pi.msg_hdr_start == o_b2 && slice_is(msg, pi.msg_hdr_start, pi.msg_hdr_len, mh));
	CHECK(pi.msg_body_start == o_b2 + strlen(mh));
	CHECK(pi.msg_body_start + pi.msg_body_len == o_end2);

	get_part(&blob, "2.1", &pi); /* part 1 of the encapsulated multipart */
	CHECK(pi.hdr_start == o_ih1 && slice_is(msg, pi.hdr_start, pi.hdr_len, ih1));
	CHECK(slice_is(msg, pi.body_start, pi.body_len, ib1));
	CHECK(pi.body_lines == 1);
	get_part(&blob, "2.2", &pi);
	CHECK(pi.hdr_start == o_ih2 && slice_is(msg, pi.hdr_start, pi.hdr_len, ih2));
	CHECK(slice_is(msg, pi.body_start, pi.body_len, ib2));
	CHECK(strcmp(pi.subtype, "html") == 0 && pi.body_lines == 1);
	struct mime_part_info x;
	CHECK(mime_blob_find_part(buf_view(&blob), "3", &x) == -1);
	CHECK(mime_blob_find_part(buf_view(&blob), "2.3", &x) == -1);
	CHECK(mime_blob_find_part(buf_view(&blob), "1.2", &x) == -1);

	struct buf bs;
	buf_init(&bs, 0);
	CHECK(mime_blob_bodystructure(buf_view(&blob), false, &bs) == 0);
	char want[1024];
	snprintf(want, sizeof(want),
		 "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" %zu 2)"
		 "(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" %zu "
		 "(NIL \"inner\" NIL NIL NIL NIL NIL NIL NIL NIL) "
		 "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" %zu 1)"
		 "(\"text\" \"html\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" %zu 1)"
		 " \"alternative\") 12) \"mixed\")",
		 strlen(b1), o_end2 - o_b2, strlen(ib1), strlen(ib2));
	CHECK_BUF(&bs, want);
	buf_cleanup(&bs);
	buf_cleanup(&blob);
}

/* Boundary edge cases: empty parts, a part without header, a closing
 * boundary without EOL at EOF, LF-only endings. */
static void test_offsets_edges(void)
{
	const char *msg = "Content-Type: multipart/mixed; boundary=b\n\n"
			  "--b\n--b\nContent-Type: text/plain\n--b\n\nx\n--b--";
	struct buf blob = parse_str(msg);
	struct mime_part_info pi;
	get_part(&blob, "1", &pi); /* "--b\n--b": nothing at all */
	CHECK(pi.hdr_len == 0 && pi.body_len == 0 && pi.body_lines == 0);
	get_part(&blob, "2", &pi); /* header cut by the boundary */
	CHECK(slice_is(msg, pi.hdr_start, pi.hdr_len, "Content-Type: text/plain"));
	CHECK(pi.body_len == 0);
	get_part(&blob, "3", &pi);
	CHECK(slice_is(msg, pi.hdr_start, pi.hdr_len, "\n"));
	CHECK(slice_is(msg, pi.body_start, pi.body_len, "x") && pi.body_lines == 1);
	get_part(&blob, "", &pi);
	CHECK(pi.body_start + pi.body_len == strlen(msg));
	buf_cleanup(&blob);

	/* Missing final boundary: the last part runs to the end. */
	const char *m2 = "Content-Type: multipart/mixed; boundary=\"q\"\r\n\r\n"
			 "--q\r\n\r\nabc\r\ndef\r\n";
	blob = parse_str(m2);
	get_part(&blob, "1", &pi);
	CHECK(slice_is(m2, pi.body_start, pi.body_len, "abc\r\ndef\r\n"));
	CHECK(pi.body_lines == 2);
	buf_cleanup(&blob);

	/* Outer boundary closes inner parts; transport padding after boundary. */
	const char *m3 = "Content-Type: multipart/mixed; boundary=o\r\n\r\n"
			 "--o\r\nContent-Type: multipart/alternative; boundary=i\r\n\r\n"
			 "--i\r\n\r\ninner\r\n--o  \r\n\r\nlast\r\n--o--\r\n";
	blob = parse_str(m3);
	get_part(&blob, "1.1", &pi);
	CHECK(slice_is(m3, pi.body_start, pi.body_len, "inner"));
	get_part(&blob, "2", &pi);
	CHECK(slice_is(m3, pi.body_start, pi.body_len, "last"));
	buf_cleanup(&blob);
}

/* ---- envelope / bodystructure details ---- */

static void test_envelope_strings(void)
{
	const char *msg = "Subject: a \"q\" \\ b\r\n"
			  "From: =?utf-8?q?x?= <a@b>\r\n"
			  "To: \"\xc3\xa9t\xc3\xa9\" <e@f>\r\n"
			  "Message-ID: <x\x01y@z>\r\n\r\n";
	struct buf blob = parse_str(msg);
	struct buf env;
	buf_init(&env, 0);
	CHECK(mime_blob_envelope(buf_view(&blob), &env) == 0);
	CHECK_BUF(&env, "(NIL \"a \\\"q\\\" \\\\ b\" ((\"=?utf-8?q?x?=\" NIL \"a\" \"b\")) "
			"((\"=?utf-8?q?x?=\" NIL \"a\" \"b\")) "
			"((\"=?utf-8?q?x?=\" NIL \"a\" \"b\")) "
			"(({5}\r\n\xc3\xa9t\xc3\xa9 NIL \"e\" \"f\")) NIL NIL NIL \"<x\x01y@z>\")");
	buf_cleanup(&env);
	buf_cleanup(&blob);

	/* Out of room: -1, never a write past the maximum. */
	blob = parse_str("Subject: hello\r\n\r\n");
	buf_init(&env, 10);
	CHECK(mime_blob_envelope(buf_view(&blob), &env) == -1);
	CHECK(env.len <= 10);
	buf_cleanup(&env);
	buf_cleanup(&blob);
}

static void test_search_text(void)
{
	bool ok;
	const char *src = getenv("MAIL_SOURCE_DIR");
	char path[1024];
	snprintf(path, sizeof(path), "%s/tests/data/mime/rfc2047.eml", src ? src : ".");
	struct buf msg = read_file(path, &ok);
	CHECK(ok);
	struct buf blob = parse_chunked(msg.data, msg.len, 0, NULL);
	struct view v;
	CHECK(mime_blob_search_text(buf_view(&blob), MIME_SEARCH_SUBJECT, &v) == 0);
	CHECK(view_eq_cstr(v, "Gr\xc3\xbc\xc3\x9f" "e aus K\xc3\xb6ln and caf\xc3\xa9"));
	CHECK(mime_blob_search_text(buf_view(&blob), MIME_SEARCH_FROM, &v) == 0);
	CHECK(view_eq_cstr(v, "J\xc3\xbcrgen M\xc3\xbcller <jm@example.de>"));
	CHECK(mime_blob_search_text(buf_view(&blob), MIME_SEARCH_TO, &v) == 0);
	CHECK(view_eq_cstr(v, "Andr\xc3\xa9 <andre@example.fr>"));
	CHECK(mime_blob_search_text(buf_view(&blob), MIME_SEARCH_CC, &v) == 0);
	CHECK(v.len == 0);
	buf_cleanup(&blob);
	buf_cleanup(&msg);
}

/* ---- RFC 2047 ---- */

static void check_decode(const char *raw, const char *want)
{
	struct buf out;
	buf_init(&out, 0);
	CHECK(mime_decode_header(view_cstr(raw), &out) == 0);
	if (out.len != strlen(want) || (out.len && memcmp(out.data, want, out.len))) {
		fprintf(stderr, "decode '%s': got '%.*s' want '%s'\n", raw,
			(int)out.len, (const char *)out.data, want);
		failures++;
	}
	buf_cleanup(&out);
}

static void test_rfc2047(void)
{
	check_decode("plain text", "plain text");
	check_decode("=?utf-8?B?w6k=?=", "\xc3\xa9");
	check_decode("=?UTF-8?Q?a_b=3Dc?=", "a b=c");
	check_decode("=?iso-8859-1?q?caf=E9?=", "caf\xc3\xa9");
	check_decode("=?iso-8859-15?q?=A4?=", "\xe2\x82\xac");
	check_decode("=?windows-1252?q?=80=93?=", "\xe2\x82\xac\xe2\x80\x9c");
	check_decode("=?us-ascii?q?x?=", "x");
	check_decode("=?utf-8?q?a?= =?utf-8?q?b?=", "ab");	   /* joined */
	check_decode("=?utf-8?q?a?=\r\n =?utf-8?q?b?=", "ab");	   /* folded */
	check_decode("=?utf-8?q?a?= b =?utf-8?q?c?=", "a b c");
	check_decode("=?utf-8?q?=C3?= =?utf-8?q?=A9?=", "\xc3\xa9"); /* split char */
	check_decode("=?utf-8*en?q?x?=", "x");			   /* RFC 2231 lang */
	check_decode("=?koi8-r?q?=C1?=", "=?koi8-r?q?=C1?=");	   /* unknown: raw */
	check_decode("=?utf-8?x?abc?=", "=?utf-8?x?abc?=");
	check_decode("=?utf-8?q?unterminated", "=?utf-8?q?unterminated");
	check_decode("=?utf-8?q?=FF?=", "\xef\xbf\xbd");
	check_decode("raw \xe9t\xe9", "raw \xc3\xa9t\xc3\xa9");	   /* 8-bit latin */
	check_decode("raw \xc3\xa9", "raw \xc3\xa9");		   /* 8-bit utf-8 */
	check_decode("nul\x01", "nul\x01");
	check_decode("", "");

	/* Unterminated "=?" starts everywhere: kept raw, in linear time. */
	struct buf evil;
	buf_init(&evil, 0);
	for (int i = 0; i < 4000; i++)
		buf_append(&evil, "=?a?q?A", 7);
	struct buf dec;
	buf_init(&dec, 0);
	CHECK(mime_decode_header(buf_view(&evil), &dec) == 0);
	CHECK(buf_same(&dec, &evil));
	buf_cleanup(&dec);
	buf_cleanup(&evil);

	struct buf out;
	buf_init(&out, 5);
	CHECK(mime_decode_header(view_cstr("=?utf-8?q?ab=C3=A9=C3=A9?="), &out) == -1);
	CHECK(out.len == 4 && memcmp(out.data, "ab\xc3\xa9", 4) == 0);
	buf_cleanup(&out);
}

/* ---- transfer-encoding decoders ---- */

static void check_decoder(enum mime_cte cte, const char *in, const char *want,
			  bool damaged)
{
	size_t n = strlen(in);
	for (size_t chunk = 1; chunk <= n + 1; chunk++) {
		struct mime_decoder d;
		struct buf out;
		buf_init(&out, 0);
		CHECK(mime_decoder_init(&d, cte) == 0);
		for (size_t off = 0; off < n; off += chunk)
			CHECK(mime_decoder_feed(&d, (const uint8_t *)in + off,
						MIN(chunk, n - off), &out) == 0);
		CHECK(mime_decoder_finish(&d, &out) == 0);
		if (out.len != strlen(want) || (out.len && memcmp(out.data, want, out.len)) ||
		    d.damaged != damaged) {
			fprintf(stderr, "decoder(%d) '%s' chunk %zu: got '%.*s' damaged=%d\n",
				(int)cte, in, chunk, (int)out.len,
				(const char *)out.data, d.damaged);
			failures++;
			chunk = n + 1;
		}
		buf_cleanup(&out);
	}
}

static void test_decoders(void)
{
	check_decoder(MIME_CTE_BASE64, "SGVsbG8sIHdvcmxkIQ==\r\n", "Hello, world!", false);
	check_decoder(MIME_CTE_BASE64, "SGVs\r\nbG8=", "Hello", false);
	check_decoder(MIME_CTE_BASE64, "SGVsbG8", "Hello", false); /* no padding */
	check_decoder(MIME_CTE_BASE64, "SG*Vs!bG8=", "Hello", true);
	check_decoder(MIME_CTE_BASE64, "SGk=SGk=", "HiHi", true);
	check_decoder(MIME_CTE_BASE64, "SGVsb", "Hel", true);
	check_decoder(MIME_CTE_QP, "a=3Db=\r\nc  \r\nd", "a=bc\r\nd", false);
	check_decoder(MIME_CTE_QP, "soft=  \r\nbreak=\nx", "softbreakx", false);
	check_decoder(MIME_CTE_QP, "lower=e9", "lower\xe9", false);
	check_decoder(MIME_CTE_QP, "bad=zz=4", "bad=zz=4", true);
	check_decoder(MIME_CTE_QP, "tab\t\nend\t ", "tab\nend", false);
	check_decoder(MIME_CTE_QP, "a = b", "a = b", true);
	check_decoder(MIME_CTE_QP, "cr\rx", "cr\rx", false);
	check_decoder(MIME_CTE_8BIT, "as is=\r\n", "as is=\r\n", false);
	struct mime_decoder d;
	CHECK(mime_decoder_init(&d, MIME_CTE_UNKNOWN) == -1);
	CHECK(mime_cte_parse(view_cstr(" Base64 ")) == MIME_CTE_BASE64);
	CHECK(mime_cte_parse(view_cstr("Quoted-Printable")) == MIME_CTE_QP);
	CHECK(mime_cte_parse(view_cstr("")) == MIME_CTE_7BIT);
	CHECK(mime_cte_parse(view_cstr("x-uuencode")) == MIME_CTE_UNKNOWN);

	struct buf out;
	buf_init(&out, 2);
	CHECK(mime_decoder_init(&d, MIME_CTE_BASE64) == 0);
	CHECK(mime_decoder_feed(&d, (const uint8_t *)"SGVsbG8=", 8, &out) == -1);
	buf_cleanup(&out);
}

/* ---- adversarial input, bounded memory ---- */

#define MEM_BOUND (384 * 1024)

struct gen {
	struct mime_parser *p;
	uint8_t chunk[4096];
	size_t n;
};

static void gen_put(struct gen *g, const void *d, size_t n)
{
	const uint8_t *s = d;
	while (n) {
		size_t k = MIN(n, sizeof(g->chunk) - g->n);
		memcpy(g->chunk + g->n, s, k);
		g->n += k;
		s += k;
		n -= k;
		if (g->n == sizeof(g->chunk)) {
			mime_parser_feed(g->p, g->chunk, g->n);
			g->n = 0;
		}
	}
}

static void gen_str(struct gen *g, const char *s)
{
	gen_put(g, s, strlen(s));
}

static struct buf gen_finish(struct gen *g, size_t *mem)
{
	mime_parser_feed(g->p, g->chunk, g->n);
	struct buf blob;
	buf_init(&blob, 0);
	CHECK(mime_parser_finish(g->p, &blob) == 0);
	*mem = mime_parser_mem_high_water(g->p);
	mime_parser_free(&g->p);
	struct buf out;
	buf_init(&out, 0);
	CHECK(mime_blob_envelope(buf_view(&blob), &out) == 0);
	buf_reset(&out);
	CHECK(mime_blob_bodystructure(buf_view(&blob), true, &out) == 0);
	buf_cleanup(&out);
	return blob;
}

static uint32_t blob_parts(const struct buf *b)
{
	return b->len >= 12 ? (uint32_t)(b->data[8] | b->data[9] << 8 |
					 b->data[10] << 16 | (uint32_t)b->data[11] << 24)
			    : 0;
}

static void test_deep_nesting(void)
{
	struct gen g = { mime_parser_new(NULL), { 0 }, 0 };
	char line[128];
	for (int i = 0; i < 10000; i++) {
		snprintf(line, sizeof(line),
			 "Content-Type: multipart/mixed; boundary=\"=_%05d_=\"\r\n\r\n"
			 "--=_%05d_=\r\n", i, i);
		gen_str(&g, line);
	}
	gen_str(&g, "\r\ndeep\r\n");
	for (int i = 9999; i >= 0; i--) {
		snprintf(line, sizeof(line), "--=_%05d_=--\r\n", i);
		gen_str(&g, line);
	}
	size_t mem;
	struct buf blob = gen_finish(&g, &mem);
	fprintf(stderr, "deep nesting: %u parts, blob %zu, mem %zu\n",
		blob_parts(&blob), blob.len, mem);
	CHECK(mem < MEM_BOUND);
	CHECK(blob_parts(&blob) <= 200);
	CHECK(blob.len > 24 && (blob.data[5] & MIME_BLOB_F_LIMITED));
	char sec[256] = "1";
	for (int i = 1; i < 64; i++) /* the node at depth 64 */
		strcat(sec, ".1");
	struct mime_part_info pi;
	CHECK(mime_blob_find_part(buf_view(&blob), sec, &pi) == 0);
	CHECK(strcmp(pi.type, "application") == 0); /* depth 64: opaque leaf */
	buf_cleanup(&blob);
}

static void test_many_header_lines(void)
{
	struct gen g = { mime_parser_new(NULL), { 0 }, 0 };
	char line[64];
	for (int i = 0; i < 100000; i++) {
		snprintf(line, sizeof(line), "X-Line-%d: value %d\r\n", i, i);
		gen_str(&g, line);
		if (i % 1000 == 0)
			gen_str(&g, "Subject: again\r\n To: nobody\r\n");
	}
	gen_str(&g, "Content-Type: text/html\r\n\r\nbody\r\n");
	size_t mem;
	struct buf blob = gen_finish(&g, &mem);
	fprintf(stderr, "100k header lines: mem %zu\n", mem);
	CHECK(mem < MEM_BOUND);
	CHECK(blob_parts(&blob) == 1);
	struct mime_part_info pi;
	CHECK(mime_blob_find_part(buf_view(&blob), "", &pi) == 0);
	CHECK(pi.body_len == 6 && pi.body_lines == 1);
	CHECK(strcmp(pi.subtype, "plain") == 0); /* beyond max_header_fields */
	buf_cleanup(&blob);
}

static void test_huge_field(void)
{
	struct gen g = { mime_parser_new(NULL), { 0 }, 0 };
	gen_str(&g, "Subject: ");
	for (int i = 0; i < (1 << 20) / 16; i++)
		gen_str(&g, "0123456789abcdef");
	gen_str(&g, "\r\nTo: ");
	for (int i = 0; i < 20000; i++)
		gen_str(&g, "a@b, ");
	gen_str(&g, "\r\n\r\nbody");
	size_t mem;
	struct buf blob = gen_finish(&g, &mem);
	fprintf(stderr, "1 MB field: mem %zu, blob %zu\n", mem, blob.len);
	CHECK(mem < MEM_BOUND);
	struct mime_part_info pi;
	CHECK(mime_blob_find_part(buf_view(&blob), "", &pi) == 0);
	CHECK(pi.hdr_len == 9 + (1u << 20) + 2 + 4 + 20000 * 5 + 2 + 2);
	CHECK(pi.body_len == 4);
	struct buf env;
	buf_init(&env, 0);
	CHECK(mime_blob_envelope(buf_view(&blob), &env) == 0);
	CHECK(env.len > 16 * 1024 && env.len < 200 * 1024);
	buf_cleanup(&env);
	buf_cleanup(&blob);
}

static void test_nul_and_garbage(void)
{
	static const uint8_t msg[] = "Subj\0ect: a\0b\r\nContent-Type: multipart/mixed;"
				     " boundary=\"z\0\"\r\n\r\n--z\0\r\n\0\0\r\n"
				     "\r\n\0\xff\xfe--z\r\n--z\0--\r\n";
	size_t mem;
	struct buf blob = parse_chunked(msg, sizeof(msg) - 1, 3, &mem);
	struct buf out;
	buf_init(&out, 0);
	CHECK(mime_blob_envelope(buf_view(&blob), &out) == 0);
	CHECK(mime_blob_bodystructure(buf_view(&blob), true, &out) == 0);
	CHECK(memchr(out.data, 0, out.len) == NULL);
	buf_cleanup(&out);
	buf_cleanup(&blob);

	/* Random bytes: never a crash, readers always succeed. */
	uint32_t seed = 12345;
	uint8_t rnd[3000];
	for (int round = 0; round < 50; round++) {
		for (size_t i = 0; i < sizeof(rnd); i++) {
			seed = seed * 1103515245u + 12345u;
			uint8_t c = (uint8_t)(seed >> 16);
			static const char alpha[] = "-\r\n:; =\"boundary";
			rnd[i] = (c & 1) ? (uint8_t)alpha[(c >> 1) % (sizeof(alpha) - 1)] : c;
		}
		blob = parse_chunked(rnd, sizeof(rnd), (size_t)round + 1, NULL);
		buf_init(&out, 0);
		CHECK(mime_blob_envelope(buf_view(&blob), &out) == 0);
		CHECK(mime_blob_bodystructure(buf_view(&blob), true, &out) == 0);
		buf_cleanup(&out);
		buf_cleanup(&blob);
	}
}

static void test_parts_limit(void)
{
	struct mime_limits lim = { .max_parts = 10 };
	struct mime_parser *p = mime_parser_new(&lim);
	const char *h = "Content-Type: multipart/mixed; boundary=b\r\n\r\n";
	mime_parser_feed(p, (const uint8_t *)h, strlen(h));
	for (int i = 0; i < 100; i++) {
		const char *part = "--b\r\nContent-Type: message/rfc822\r\n\r\n"
				   "Subject: x\r\n\r\ny\r\n";
		mime_parser_feed(p, (const uint8_t *)part, strlen(part));
	}
	mime_parser_feed(p, (const uint8_t *)"--b--\r\n", 7);
	struct buf blob;
	buf_init(&blob, 0);
	CHECK(mime_parser_finish(p, &blob) == 0);
	mime_parser_free(&p);
	CHECK(blob_parts(&blob) == 10);
	struct buf out;
	buf_init(&out, 0);
	CHECK(mime_blob_bodystructure(buf_view(&blob), true, &out) == 0);
	buf_cleanup(&out);
	struct mime_part_info pi;
	CHECK(mime_blob_find_part(buf_view(&blob), "5", &pi) == 0);
	CHECK(strcmp(pi.type, "application") == 0); /* no room for its message */
	CHECK(mime_blob_find_part(buf_view(&blob), "6", &pi) == -1);
	buf_cleanup(&blob);

	/* A tiny blob budget drops TLVs but keeps every offset. */
	struct mime_limits small = { .max_blob_len = 64 };
	p = mime_parser_new(&small);
	const char *m = "Subject: a long enough subject to be dropped from the blob\r\n"
			"Content-Type: text/plain\r\n\r\nbody";
	mime_parser_feed(p, (const uint8_t *)m, strlen(m));
	buf_init(&blob, 0);
	CHECK(mime_parser_finish(p, &blob) == 0);
	mime_parser_free(&p);
	CHECK(blob.data[5] & MIME_BLOB_F_DROPPED);
	CHECK(mime_blob_find_part(buf_view(&blob), "", &pi) == 0);
	CHECK(pi.body_len == 4);
	buf_init(&out, 0);
	CHECK(mime_blob_bodystructure(buf_view(&blob), true, &out) == 0);
	buf_cleanup(&out);
	buf_cleanup(&blob);
}

/* Corrupt blobs: readers must refuse, not crash. */
static void test_corrupt_blob(void)
{
	struct buf blob = parse_str("Content-Type: multipart/mixed; boundary=b\r\n\r\n"
				    "--b\r\n\r\nx\r\n--b--\r\n");
	struct buf out;
	buf_init(&out, 0);
	for (size_t cut = 0; cut < blob.len; cut++) {
		struct view v = view_make(blob.data, cut);
		struct mime_part_info pi;
		buf_reset(&out);
		CHECK(mime_blob_bodystructure(v, true, &out) == -1);
		CHECK(mime_blob_find_part(v, "1", &pi) == -1);
	}
	for (size_t i = 0; i < blob.len; i++) {
		uint8_t save = blob.data[i];
		blob.data[i] ^= 0xff;
		struct mime_part_info pi;
		buf_reset(&out);
		mime_blob_bodystructure(buf_view(&blob), true, &out);
		mime_blob_envelope(buf_view(&blob), &out);
		mime_blob_find_part(buf_view(&blob), "1", &pi);
		blob.data[i] = save;
	}
	buf_cleanup(&out);
	buf_cleanup(&blob);
}

int main(void)
{
	test_corpus();
	test_offsets_simple();
	test_offsets_multipart();
	test_offsets_edges();
	test_envelope_strings();
	test_search_text();
	test_rfc2047();
	test_decoders();
	test_deep_nesting();
	test_many_header_lines();
	test_huge_field();
	test_nul_and_garbage();
	test_parts_limit();
	test_corrupt_blob();
	if (failures) {
		fprintf(stderr, "test_mime: %d failure(s)\n", failures);
		return 1;
	}
	printf("test_mime: ok\n");
	return 0;
}
