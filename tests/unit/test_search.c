/* SEARCH over a real store: a dozen crafted messages (RFC 2047 headers,
 * base64, quoted-printable with soft breaks, Latin-1 and windows-1252
 * bodies, a multipart with an attachment, dates in several zones, a body
 * spanning many storage chunks) searched with every key and with NOT, OR
 * and nested AND. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "storage/search.h"
#include "storage/store.h"

static int failures;
#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, \
				__LINE__, #cond);                              \
			failures++;                                            \
		}                                                              \
	} while (0)

#define USER "searcher@example.test"
#define NMSG 14

static struct shard *sh;
static uint64_t inbox_id;
static uint32_t u[NMSG + 1]; /* u[1..14]: UIDs of m1..m14 */
static struct msg_info *infos;
static size_t n_infos;

static uint64_t date_ms(int y, int m, int d, int hh, int mm, int ss)
{
	return (uint64_t)(search_days_from_civil(y, m, d) * 86400 + hh * 3600 + mm * 60 + ss) *
	       1000;
}

/* ---- building keys --------------------------------------------------------- */

static struct search_key *S(enum search_key_type t, const char *s)
{
	struct search_key *k = search_key_new_str(t, view_cstr(s));
	CHECK(k != NULL);
	return k;
}

static struct search_key *L(enum search_key_type t)
{
	struct search_key *k = search_key_new_leaf(t);
	CHECK(k != NULL);
	return k;
}

static struct search_key *D(enum search_key_type t, const char *imap_date)
{
	int y, m, d;
	CHECK(search_parse_date(view_cstr(imap_date), &y, &m, &d) == 0);
	struct search_key *k = search_key_new_date(t, y, m, d);
	CHECK(k != NULL);
	return k;
}

static struct search_key *H(const char *field, const char *s)
{
	return search_key_new_header(view_cstr(field), view_cstr(s));
}

static struct search_key *N(enum search_key_type t, uint64_t n)
{
	return search_key_new_num(t, n);
}

/* AND of the arguments, NULL-terminated. */
static struct search_key *AND(struct search_key *first, ...)
{
	struct search_key *a = search_key_new_and();
	va_list ap;
	va_start(ap, first);
	for (struct search_key *k = first; k; k = va_arg(ap, struct search_key *))
		search_key_and_add(a, k);
	va_end(ap);
	return a;
}

/* ---- running searches --------------------------------------------------------- */

/* Runs q (and frees it); want is a bit set over message numbers 1..NMSG. */
static void expect_mask(struct search_key *q, uint32_t want, int line)
{
	uint32_t *uids = NULL;
	size_t n = 0;
	const char *err = NULL;
	if (store_search(sh, inbox_id, q, &uids, &n, &err) != 0) {
		fprintf(stderr, "line %d: store_search failed: %s\n", line, err);
		failures++;
		search_key_free(&q);
		return;
	}
	uint32_t got = 0;
	bool sorted = true;
	for (size_t i = 0; i < n; i++) {
		if (i && uids[i] <= uids[i - 1])
			sorted = false;
		for (int m = 1; m <= NMSG; m++)
			if (u[m] == uids[i])
				got |= 1u << m;
	}
	if (got != want || !sorted || n != (size_t)__builtin_popcount(want)) {
		fprintf(stderr, "line %d: got", line);
		for (int m = 1; m <= NMSG; m++)
			if (got & (1u << m))
				fprintf(stderr, " m%d", m);
		fprintf(stderr, " (n=%zu%s), want", n, sorted ? "" : ", unsorted");
		for (int m = 1; m <= NMSG; m++)
			if (want & (1u << m))
				fprintf(stderr, " m%d", m);
		fprintf(stderr, "\n");
		failures++;
	}
	free(uids);
	search_key_free(&q);
}

static uint32_t mask_of(const int *ms, size_t n)
{
	uint32_t m = 0;
	for (size_t i = 0; i < n; i++)
		m |= 1u << ms[i];
	return m;
}

#define ALL_MASK (((1u << (NMSG + 1)) - 1) & ~1u)
#define EXPECT(q, ...)                                                           \
	do {                                                                     \
		const int ms_[] = { __VA_ARGS__ };                               \
		expect_mask((q), mask_of(ms_, ARRAY_LEN(ms_)), __LINE__);        \
	} while (0)
#define EXPECT_NONE(q) expect_mask((q), 0, __LINE__)
#define EXPECT_ALL_BUT(q, ...)                                                   \
	do {                                                                     \
		const int ms_[] = { __VA_ARGS__ };                               \
		expect_mask((q), ALL_MASK & ~mask_of(ms_, ARRAY_LEN(ms_)), __LINE__); \
	} while (0)

/* ---- the messages -------------------------------------------------------------- */

#define CT_UTF8 "Content-Type: text/plain; charset=utf-8\r\n"

static const char m1[] =
	"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n"
	"From: Alice Example <alice@example.com>\r\n"
	"To: Bob <bob@example.org>\r\n"
	"Cc: carol@example.net\r\n"
	"Subject: Quarterly report\r\n"
	"X-Custom: hello-world\r\n"
	"Message-ID: <m1@example.com>\r\n"
	"\r\n"
	"The quick brown fox jumps over the lazy dog.\r\n";

static const char m2[] =
	"Date: Tue, 2 Jan 2024 08:00:00 +0100\r\n"
	"From: =?ISO-8859-1?Q?J=F6rg?= <joerg@example.de>\r\n"
	"To: team@example.de\r\n"
	"Subject: =?UTF-8?B?R3LDvMOfZSBhdXMgTcO8bmNoZW4=?=\r\n"
	"\r\n"
	"Hallo zusammen.\r\n";

static const char m3[] =
	"Date: Wed, 10 Jan 2024 12:00:00 +0000\r\n"
	"From: base64@example.com\r\n"
	"Subject: encoded body\r\n"
	"MIME-Version: 1.0\r\n" CT_UTF8
	"Content-Transfer-Encoding: base64\r\n"
	"\r\n"
	"RGFzIEdlaGVpbW5pcyBpc3QgWmVicmFzY2huaXR6ZWwgdW5k\r\n"
	"IHNvbnN0IG5pY2h0cy4NClp3ZWl0ZSBaZWlsZS4NCg==\r\n";

static const char m4[] =
	"Date: Wed, 10 Jan 2024 12:00:00 +0000\r\n"
	"From: qp@example.com\r\n"
	"Subject: quoted printable\r\n"
	"MIME-Version: 1.0\r\n" CT_UTF8
	"Content-Transfer-Encoding: quoted-printable\r\n"
	"\r\n"
	"This is a long line that contains the word super=\r\n"
	"califragilistic and a caf=C3=A9 au lait.\r\n";

/* No Subject; an 8-bit Latin-1 body. */
static const char m5[] =
	"Date: Wed, 10 Jan 2024 12:00:00 +0000\r\n"
	"From: latin@example.fr\r\n"
	"MIME-Version: 1.0\r\n"
	"Content-Type: text/plain; charset=\"ISO-8859-1\"\r\n"
	"Content-Transfer-Encoding: 8bit\r\n"
	"\r\n"
	"Le gar\xe7on a mang\xe9 une cr\xeape.\r\n";

static const char m6[] =
	"Date: Wed, 10 Jan 2024 12:00:00 +0000\r\n"
	"From: multi@example.com\r\n"
	"Subject: with attachment\r\n"
	"MIME-Version: 1.0\r\n"
	"Content-Type: multipart/mixed; boundary=\"XYZ\"\r\n"
	"\r\n"
	"preamble\r\n"
	"--XYZ\r\n"
	"Content-Type: text/plain; charset=windows-1252\r\n"
	"Content-Transfer-Encoding: quoted-printable\r\n"
	"\r\n"
	"=93smart quotes=94 and the word umbrella\r\n"
	"--XYZ\r\n"
	"Content-Type: application/octet-stream\r\n"
	"Content-Transfer-Encoding: base64\r\n"
	"\r\n"
	"c2VjcmV0LWF0dGFjaG1lbnQtd29yZA==\r\n"
	"--XYZ--\r\n";

/* 2 Jan as written, 1 Jan 16:30 in UTC. */
static const char m7[] =
	"Date: Tue, 02 Jan 2024 01:30:00 +0900\r\n"
	"From: tokyo@example.jp\r\n"
	"Subject: Tokyo meeting\r\n"
	"\r\n"
	"see you\r\n";

/* 1 Jan as written, 2 Jan 04:30 in UTC. */
static const char m8[] =
	"Date: Mon, 01 Jan 2024 23:30:00 -0500\r\n"
	"From: nyc@example.com\r\n"
	"Subject: New York dinner\r\n"
	"\r\n"
	"see you too\r\n";

static const char m9[] =
	"From: nodate@example.com\r\n"
	"Subject: undated\r\n"
	"\r\n"
	"nothing\r\n";

/* m10 is built in main(): a long 8-bit UTF-8 body. */
static const char m10_head[] =
	"Date: 10 Jan 2024 12:00 GMT\r\n"
	"From: big@example.com\r\n"
	"Subject: big one\r\n" CT_UTF8
	"Content-Transfer-Encoding: 8bit\r\n"
	"\r\n";

static const char m11[] =
	"Date: Wed, 10 Jan 24 12:00:00 EST\r\n"
	"From: fold@example.com\r\n"
	"Subject: folded custom\r\n"
	"X-Custom: alpha\r\n"
	" beta\r\n"
	"\r\n"
	"body of eleven\r\n";

static const char m12[] =
	"Date: garbage\r\n"
	"From: bad@example.com\r\n"
	"To: =?utf-8?q?Zo=C3=AB?= <zoe@example.com>\r\n"
	"Bcc: hidden@example.com\r\n"
	"Subject: bad date\r\n"
	"\r\n"
	"twelve\r\n";

static const char m13[] =
	"Date: Wed, 10 Jan 2024 12:00:00 +0000 (UTC)\r\n"
	"From: ascii@example.com\r\n"
	"Subject: plain ascii subject\r\n"
	"\r\n"
	"The Lazy Dog sleeps.\r\n";

static void fill_to(struct buf *b, size_t len)
{
	static const char filler[] = "lorem ipsum dolor sit amet\r\n";
	while (b->len < len)
		buf_append(b, &filler[b->len % (sizeof(filler) - 1)], 1);
}

static void b64_encode(const uint8_t *p, size_t n, struct buf *out)
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t col = 0;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < n)
			v |= p[i + 2];
		char q[4] = { tab[v >> 18], tab[(v >> 12) & 63], i + 1 < n ? tab[(v >> 6) & 63] : '=',
			      i + 2 < n ? tab[v & 63] : '=' };
		buf_append(out, q, 4);
		if ((col += 4) == 76) {
			buf_append(out, "\r\n", 2);
			col = 0;
		}
	}
	buf_append(out, "\r\n", 2);
}

/* m14: a multipart whose QP part has a soft line break and an =XX escape
 * split by chunk boundaries (1000 and 2000), and whose base64 Latin-1 part
 * has a word whose encoding spans the boundary at 4000. */
static void build_m14(struct buf *b)
{
	static const char head[] =
		"Date: Sat, 20 Jan 2024 10:00:00 +0000\r\n"
		"From: stream@example.org\r\n"
		"Subject: streaming decoders\r\n"
		"MIME-Version: 1.0\r\n"
		"Content-Type: multipart/mixed; boundary=B14\r\n"
		"\r\n"
		"--B14\r\n" CT_UTF8
		"Content-Transfer-Encoding: quoted-printable\r\n"
		"\r\n";
	static const char word[] = "Fu\xdfg\xe4nger\xfc" "bergang";
	for (size_t pad = 0; pad < 200; pad++) {
		buf_reset(b);
		buf_append(b, head, strlen(head));
		fill_to(b, 995);
		buf_append(b, "tele=\r\nscope ", 13); /* '=' at 999 */
		fill_to(b, 1998);
		buf_append(b, "=C3=BCberfall\r\n", 15); /* "=C" | "3=BC..." */
		fill_to(b, 2500);
		static const char h2[] = "\r\n--B14\r\n"
					 "Content-Type: text/plain; charset=iso-8859-1\r\n"
					 "Content-Transfer-Encoding: base64\r\n\r\n";
		buf_append(b, h2, strlen(h2));
		size_t body2 = b->len;
		struct buf text;
		buf_init(&text, 0);
		fill_to(&text, 1000 + pad);
		size_t w = text.len;
		buf_append(&text, word, strlen(word));
		fill_to(&text, text.len + 500);
		b64_encode(text.data, text.len, b);
		buf_cleanup(&text);
		buf_append(b, "--B14--\r\n", 9);
		/* Where the word's encoding lies in the message. */
		size_t g0 = w / 3, g1 = (w + strlen(word) - 1) / 3;
		size_t e0 = body2 + 4 * g0 + 2 * (4 * g0 / 76);
		size_t e1 = body2 + 4 * g1 + 2 * (4 * g1 / 76) + 4;
		if (e0 % 1000 > 4 && e0 / 1000 != e1 / 1000)
			return;
	}
	CHECK(!"no padding puts the word across a chunk boundary");
}

static uint32_t deliver(const void *msg, size_t len, uint64_t internal_ms)
{
	const char *err = NULL;
	enum storage_status st;
	struct body_writer *bw = body_writer_new(sh);
	/* Uneven pieces, as the network would send them. */
	const uint8_t *p = msg;
	for (size_t off = 0; off < len;) {
		size_t step = MIN(len - off, 1 + off % 333);
		CHECK(body_writer_add(bw, p + off, step) == 0);
		off += step;
	}
	struct deliver_target t = { .user = USER };
	if (store_deliver(sh, bw, internal_ms, &t, 1, &st, &err) != 0) {
		fprintf(stderr, "deliver: %s\n", err);
		failures++;
	}
	CHECK(t.status_r == ST_OK);
	body_writer_free(&bw);
	return t.uid_r;
}

static void set_flags(int m, enum store_flags_mode mode, uint32_t flags, const char *kw)
{
	const char *kws[2] = { kw, NULL };
	struct msg_info *changed = NULL;
	uint32_t *failed = NULL;
	size_t n_changed = 0, n_failed = 0;
	enum storage_status st;
	const char *err = NULL;
	CHECK(store_flags(sh, inbox_id, &u[m], 1, mode, flags, kw ? kws : NULL, 0, &changed,
			  &n_changed, &failed, &n_failed, &st, &err) == 0);
	for (size_t i = 0; i < n_changed; i++)
		msg_info_cleanup(&changed[i]);
	free(changed);
	free(failed);
}

static const struct msg_info *info_of(int m)
{
	for (size_t i = 0; i < n_infos; i++)
		if (infos[i].uid == u[m])
			return &infos[i];
	return NULL;
}

/* ---- parsers ------------------------------------------------------------------ */

static void test_date_parsers(void)
{
	int y, m, d;
	CHECK(search_parse_date(view_cstr("1-Feb-1994"), &y, &m, &d) == 0);
	CHECK(y == 1994 && m == 2 && d == 1);
	CHECK(search_parse_date(view_cstr("\"29-feb-2024\""), &y, &m, &d) == 0);
	CHECK(y == 2024 && m == 2 && d == 29);
	CHECK(search_parse_date(view_cstr("31-DEC-1999"), &y, &m, &d) == 0);
	CHECK(search_parse_date(view_cstr("29-Feb-2023"), &y, &m, &d) < 0);
	CHECK(search_parse_date(view_cstr("32-Jan-2024"), &y, &m, &d) < 0);
	CHECK(search_parse_date(view_cstr("1-Foo-2024"), &y, &m, &d) < 0);
	CHECK(search_parse_date(view_cstr("1-Jan-24"), &y, &m, &d) < 0);
	CHECK(search_parse_date(view_cstr("1-Jan-20245"), &y, &m, &d) < 0);
	CHECK(search_parse_date(view_cstr("100-Jan-2024"), &y, &m, &d) < 0);
	CHECK(search_parse_date(view_cstr("-Jan-2024"), &y, &m, &d) < 0);
	CHECK(search_parse_date(view_cstr(""), &y, &m, &d) < 0);
	CHECK(search_parse_date(view_cstr("1-Jan-2024 "), &y, &m, &d) < 0);

	struct search_datetime dt;
	CHECK(search_parse_rfc5322_date(view_cstr("Tue, 02 Jan 2024 01:30:00 +0900"), &dt) == 0);
	CHECK(dt.year == 2024 && dt.month == 1 && dt.day == 2 && dt.hour == 1 && dt.min == 30 &&
	      dt.zone_min == 540);
	CHECK(search_datetime_to_unix(&dt) == (int64_t)(date_ms(2024, 1, 1, 16, 30, 0) / 1000));
	CHECK(search_parse_rfc5322_date(view_cstr("Mon, 01 Jan 2024 23:30:00 -0500"), &dt) == 0);
	CHECK(search_datetime_to_unix(&dt) == (int64_t)(date_ms(2024, 1, 2, 4, 30, 0) / 1000));
	CHECK(search_parse_rfc5322_date(view_cstr("10 Jan 2024 12:00 GMT"), &dt) == 0);
	CHECK(dt.day == 10 && dt.sec == 0 && dt.zone_min == 0);
	CHECK(search_parse_rfc5322_date(view_cstr("Wed, 10 Jan 24 12:00:00 EST"), &dt) == 0);
	CHECK(dt.year == 2024 && dt.zone_min == -300);
	CHECK(search_parse_rfc5322_date(view_cstr("Fri, 1 Jan 99 00:00:00 PDT"), &dt) == 0);
	CHECK(dt.year == 1999 && dt.zone_min == -420);
	CHECK(search_parse_rfc5322_date(view_cstr("1 Jan 103 00:00 +0000"), &dt) == 0);
	CHECK(dt.year == 2003);
	CHECK(search_parse_rfc5322_date(
		      view_cstr(" (c) Thu,\r\n 29 (x (y)) Feb 2024 23:59:60 +0000 (UTC)"), &dt) == 0);
	CHECK(dt.month == 2 && dt.day == 29 && dt.sec == 60);
	CHECK(search_parse_rfc5322_date(view_cstr("garbage"), &dt) < 0);
	CHECK(search_parse_rfc5322_date(view_cstr(""), &dt) < 0);
	CHECK(search_parse_rfc5322_date(view_cstr("30 Feb 2024 10:00 +0000"), &dt) < 0);
	CHECK(search_parse_rfc5322_date(view_cstr("1 Jan 2024 25:00 +0000"), &dt) < 0);
	CHECK(search_parse_rfc5322_date(view_cstr("1 Jan 2024 10:00 +09"), &dt) < 0);
	CHECK(search_parse_rfc5322_date(view_cstr("1 Jan 2024 10 +0000"), &dt) < 0);
}

static void test_constructors(void)
{
	CHECK(search_key_new_leaf(SEARCH_KEYWORD) == NULL);
	CHECK(search_key_new_str(SEARCH_SEEN, view_cstr("x")) == NULL);
	CHECK(search_key_new_num(SEARCH_BODY, 1) == NULL);
	CHECK(search_key_new_date(SEARCH_ON, 2023, 2, 29) == NULL);
	CHECK(search_key_new_date(SEARCH_LARGER, 2024, 2, 29) == NULL);
	struct search_uid_range r[] = { { 9, 7 }, { 1, 2 }, { 3, 3 }, { 20, UINT32_MAX },
					{ 30, 40 }, { 8, 12 } };
	struct search_key *k = search_key_new_uidset(r, ARRAY_LEN(r));
	CHECK(k->n_uids == 3);
	CHECK(k->uids[0].first == 1 && k->uids[0].last == 3);
	CHECK(k->uids[1].first == 7 && k->uids[1].last == 12);
	CHECK(k->uids[2].first == 20 && k->uids[2].last == UINT32_MAX);
	search_key_free(&k);
	CHECK(k == NULL);
	search_key_free(&k);
	CHECK(strcmp(search_key_type_str(SEARCH_SENTSINCE), "SENTSINCE") == 0);
}

/* ---- searches ------------------------------------------------------------------ */

static void test_flags_and_meta(void)
{
	EXPECT_ALL_BUT(L(SEARCH_ALL), 0);
	EXPECT_ALL_BUT(search_key_new_and(), 0);
	EXPECT(L(SEARCH_SEEN), 1, 2, 7);
	EXPECT_ALL_BUT(L(SEARCH_UNSEEN), 1, 2, 7);
	EXPECT(L(SEARCH_FLAGGED), 2);
	EXPECT_ALL_BUT(L(SEARCH_UNFLAGGED), 2);
	EXPECT(L(SEARCH_DELETED), 3);
	EXPECT_ALL_BUT(L(SEARCH_UNDELETED), 3);
	EXPECT(L(SEARCH_ANSWERED), 4);
	EXPECT_ALL_BUT(L(SEARCH_UNANSWERED), 4);
	EXPECT(L(SEARCH_DRAFT), 5);
	EXPECT_ALL_BUT(L(SEARCH_UNDRAFT), 5);
	EXPECT(S(SEARCH_KEYWORD, "work"), 1);
	EXPECT(S(SEARCH_KEYWORD, "$Important"), 6);
	EXPECT_ALL_BUT(S(SEARCH_UNKEYWORD, "Work"), 1);
	EXPECT_NONE(S(SEARCH_KEYWORD, "nosuchkeyword"));
	EXPECT_ALL_BUT(L(SEARCH_SAVEDATESUPPORTED), 0);

	/* Internal dates: m1 is the last second of 1 Jan, m2 the first of 2 Jan. */
	EXPECT(D(SEARCH_BEFORE, "2-Jan-2024"), 1, 9);
	EXPECT(D(SEARCH_ON, "1-Jan-2024"), 1);
	EXPECT(D(SEARCH_ON, "2-Jan-2024"), 2);
	EXPECT_ALL_BUT(D(SEARCH_SINCE, "2-Jan-2024"), 1, 9);
	EXPECT(D(SEARCH_SINCE, "10-Feb-2024"), 12);
	EXPECT_NONE(D(SEARCH_BEFORE, "1-Jan-2000"));

	/* Save dates: every message was saved today (UTC). */
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	static const char *const mon[12] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
					     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	char today[32];
	snprintf(today, sizeof(today), "%d-%s-%d", tm.tm_mday, mon[tm.tm_mon], tm.tm_year + 1900);
	EXPECT_ALL_BUT(D(SEARCH_SAVEDON, today), 0);
	EXPECT_ALL_BUT(D(SEARCH_SAVEDSINCE, today), 0);
	EXPECT_NONE(D(SEARCH_SAVEDBEFORE, today));
	EXPECT_ALL_BUT(D(SEARCH_SAVEDSINCE, "1-Jan-2024"), 0);

	/* LARGER / SMALLER at exact boundaries, for every message size. */
	for (int m = 1; m <= NMSG; m++) {
		const struct msg_info *mi = info_of(m);
		CHECK(mi != NULL);
		if (!mi)
			continue;
		uint32_t larger = 0, smaller = 0, larger1 = 0, smaller1 = 0;
		for (int o = 1; o <= NMSG; o++) {
			const struct msg_info *oi = info_of(o);
			if (oi && oi->size > mi->size)
				larger |= 1u << o;
			if (oi && oi->size < mi->size)
				smaller |= 1u << o;
			if (oi && oi->size > mi->size - 1)
				larger1 |= 1u << o;
			if (oi && oi->size < mi->size + 1)
				smaller1 |= 1u << o;
		}
		CHECK(!(larger & (1u << m)) && (larger1 & (1u << m)));
		expect_mask(N(SEARCH_LARGER, mi->size), larger, __LINE__);
		expect_mask(N(SEARCH_SMALLER, mi->size), smaller, __LINE__);
		expect_mask(N(SEARCH_LARGER, mi->size - 1), larger1, __LINE__);
		expect_mask(N(SEARCH_SMALLER, mi->size + 1), smaller1, __LINE__);
	}
	EXPECT_NONE(N(SEARCH_SMALLER, 0));
	EXPECT_ALL_BUT(N(SEARCH_LARGER, 0), 0);

	/* UID sets. */
	struct search_uid_range r1[] = { { u[2], u[4] }, { u[10], u[10] } };
	EXPECT(search_key_new_uidset(r1, 2), 2, 3, 4, 10);
	EXPECT(AND(search_key_new_uidset(r1, 2), L(SEARCH_SEEN), NULL), 2);
	struct search_uid_range r2[] = { { u[NMSG] + 1, UINT32_MAX } };
	EXPECT_NONE(search_key_new_uidset(r2, 1));
	EXPECT_NONE(search_key_new_uidset(NULL, 0));
	struct search_uid_range r3[] = { { 1, UINT32_MAX } };
	EXPECT_ALL_BUT(search_key_new_uidset(r3, 1), 0);
	EXPECT_ALL_BUT(search_key_new_not(search_key_new_uidset(r1, 2)), 2, 3, 4, 10);
}

static void test_modseq(void)
{
	struct mailbox_info mb;
	enum storage_status st;
	const char *err = NULL;
	CHECK(store_mailbox_get(sh, USER, "INBOX", &mb, &st, &err) == 0);
	uint64_t before = mb.highestmodseq;
	EXPECT_NONE(N(SEARCH_MODSEQ, before + 1));
	EXPECT_ALL_BUT(N(SEARCH_MODSEQ, 0), 0);
	set_flags(8, FLAGS_ADD, FLAG_SEEN, NULL);
	EXPECT(N(SEARCH_MODSEQ, before + 1), 8);
	EXPECT(search_key_new_modseq(before + 1, view_cstr("/flags/\\seen"), SEARCH_MODSEQ_ANY),
	       8);
	set_flags(13, FLAGS_ADD, 0, "Later");
	EXPECT(N(SEARCH_MODSEQ, before + 1), 8, 13);
	EXPECT(AND(N(SEARCH_MODSEQ, before + 1), L(SEARCH_SEEN), NULL), 8);
	EXPECT(S(SEARCH_KEYWORD, "later"), 13);
	set_flags(13, FLAGS_REMOVE, 0, "Later");
	EXPECT_NONE(S(SEARCH_KEYWORD, "later"));
}

static void test_headers(void)
{
	EXPECT(S(SEARCH_FROM, "alice"), 1);
	EXPECT(S(SEARCH_FROM, "ALICE@EXAMPLE.COM"), 1);
	EXPECT(S(SEARCH_FROM, "j\xc3\xb6rg"), 2);       /* Q-encoded Latin-1 */
	EXPECT(S(SEARCH_FROM, "J\xc3\x96RG <joerg"), 2); /* upper-case Ö */
	EXPECT(S(SEARCH_SUBJECT, "m\xc3\xbc" "nchen"), 2);
	EXPECT(S(SEARCH_SUBJECT, "GR\xc3\x9c\xc3\x9f" "E AUS"), 2);
	EXPECT_NONE(S(SEARCH_SUBJECT, "UTF-8?B"));
	EXPECT(S(SEARCH_SUBJECT, "report"), 1);
	EXPECT(S(SEARCH_TO, "zo\xc3\xab"), 12);
	EXPECT(S(SEARCH_TO, "bob@example.org"), 1);
	EXPECT(S(SEARCH_CC, "carol"), 1);
	EXPECT(S(SEARCH_BCC, "hidden"), 12);
	EXPECT_NONE(S(SEARCH_BCC, "alice"));
	/* An empty string: the field is there. */
	EXPECT_ALL_BUT(S(SEARCH_SUBJECT, ""), 5);
	EXPECT(S(SEARCH_CC, ""), 1);

	EXPECT(H("X-Custom", ""), 1, 11);
	EXPECT(H("x-custom", "HELLO"), 1);
	EXPECT(H("X-CUSTOM", "alpha beta"), 11); /* unfolded */
	EXPECT(H("Message-ID", "m1@"), 1);
	EXPECT(H("Subject", "m\xc3\xbcnchen"), 2); /* decoded */
	EXPECT_NONE(H("X-Missing", ""));
	EXPECT_NONE(H("X-Custom", "gamma"));
	EXPECT(H("Content-Transfer-Encoding", "quoted"), 4);

	/* SENT*: the date as written, whatever its zone. */
	EXPECT(D(SEARCH_SENTON, "2-Jan-2024"), 2, 7);
	EXPECT(D(SEARCH_SENTON, "1-Jan-2024"), 1, 8);
	EXPECT(D(SEARCH_SENTBEFORE, "2-Jan-2024"), 1, 8, 9);
	EXPECT_ALL_BUT(D(SEARCH_SENTSINCE, "2-Jan-2024"), 1, 8, 9);
	EXPECT(D(SEARCH_SENTON, "10-Jan-2024"), 3, 4, 5, 6, 10, 11, 13);
	EXPECT(D(SEARCH_SENTON, "25-Dec-2023"), 9);  /* no Date: internal date */
	EXPECT(D(SEARCH_SENTON, "10-Feb-2024"), 12); /* bad Date: internal date */
	EXPECT(D(SEARCH_SENTSINCE, "10-Feb-2024"), 12);
}

static void test_bodies(void)
{
	EXPECT(S(SEARCH_BODY, "quick brown"), 1);
	EXPECT(S(SEARCH_BODY, "LAZY DOG"), 1, 13);
	EXPECT(S(SEARCH_BODY, "zebraschnitzel"), 3);     /* base64 */
	EXPECT(S(SEARCH_BODY, "nichts.\r\nzweite"), 3);  /* across lines */
	EXPECT(S(SEARCH_BODY, "supercalifragilistic"), 4); /* QP soft break */
	EXPECT(S(SEARCH_BODY, "CAF\xc3\x89 au"), 4);    /* QP =C3=A9, É folded */
	EXPECT_NONE(S(SEARCH_BODY, "super="));
	EXPECT(S(SEARCH_BODY, "gar\xc3\xa7on"), 5);     /* Latin-1 body */
	EXPECT(S(SEARCH_BODY, "CR\xc3\x8aPE"), 5);
	EXPECT(S(SEARCH_BODY, "\xe2\x80\x9csmart quotes\xe2\x80\x9d"), 6); /* cp1252 */
	EXPECT(S(SEARCH_BODY, "umbrella"), 6);
	EXPECT_NONE(S(SEARCH_BODY, "secret-attachment")); /* not a text part */
	EXPECT_NONE(S(SEARCH_BODY, "preamble"));
	EXPECT_NONE(S(SEARCH_BODY, "Quarterly")); /* header, not body */
	EXPECT(S(SEARCH_BODY, "magictoken"), 10);  /* across chunks */
	EXPECT(S(SEARCH_BODY, "GR\xc3\x9cN"), 10);  /* ü split by a chunk */
	EXPECT(S(SEARCH_BODY, "telescope"), 14);        /* QP soft break at 1000 */
	EXPECT(S(SEARCH_BODY, "\xc3\x9c" "BERFALL"), 14); /* =C|3 at 2000 */
	EXPECT(S(SEARCH_BODY, "FU\xc3\x9fG\xc3\x84NGER\xc3\x9c" "BERGANG"), 14); /* base64 */
	EXPECT_NONE(S(SEARCH_BODY, "tele="));
	EXPECT_ALL_BUT(S(SEARCH_BODY, ""), 0);
	EXPECT_NONE(S(SEARCH_BODY, "no such text anywhere"));

	EXPECT(S(SEARCH_TEXT, "quarterly"), 1);
	EXPECT(S(SEARCH_TEXT, "zebraschnitzel"), 3);
	EXPECT(S(SEARCH_TEXT, "alice@example.com"), 1);
	EXPECT(S(SEARCH_TEXT, "x-custom: alpha"), 11);
	EXPECT(S(SEARCH_TEXT, "see you"), 7, 8);
	EXPECT(S(SEARCH_TEXT, "m\xc3\xbcnchen"), 2);
	EXPECT_NONE(S(SEARCH_TEXT, "secret-attachment"));
}

static void test_combinations(void)
{
	EXPECT(AND(L(SEARCH_UNSEEN), S(SEARCH_BODY, "lazy"), NULL), 13);
	EXPECT(search_key_new_or(S(SEARCH_SUBJECT, "tokyo"), S(SEARCH_SUBJECT, "york")), 7, 8);
	EXPECT(AND(search_key_new_or(L(SEARCH_FLAGGED), L(SEARCH_DELETED)),
		   search_key_new_not(S(SEARCH_BODY, "zebra")), NULL),
	       2);
	EXPECT(search_key_new_or(S(SEARCH_BODY, "umbrella"), H("X-Custom", "")), 1, 6, 11);
	EXPECT_ALL_BUT(search_key_new_not(search_key_new_or(L(SEARCH_SEEN), L(SEARCH_DELETED))), 1,
		       2, 3, 7);
	EXPECT_ALL_BUT(search_key_new_not(S(SEARCH_BODY, "see you")), 7, 8);
	EXPECT(search_key_new_not(search_key_new_not(S(SEARCH_BODY, "see you"))), 7, 8);
	/* Nested AND inside OR inside AND. */
	EXPECT(AND(D(SEARCH_SENTSINCE, "2-Jan-2024"),
		   search_key_new_or(AND(S(SEARCH_FROM, "tokyo"), L(SEARCH_SEEN), NULL),
				     AND(S(SEARCH_BODY, "magic"), N(SEARCH_LARGER, 5000), NULL)),
		   NULL),
	       7, 10);
	EXPECT(AND(L(SEARCH_UNDELETED), AND(S(SEARCH_TEXT, "example.com"),
					    search_key_new_not(S(SEARCH_FROM, "alice")), NULL),
		   N(SEARCH_SMALLER, 1000), NULL),
	       4, 6, 8, 9, 11, 12, 13);
	EXPECT_NONE(AND(L(SEARCH_SEEN), L(SEARCH_DELETED), NULL));
	EXPECT_NONE(AND(S(SEARCH_BODY, "zebra"), S(SEARCH_BODY, "umbrella"), NULL));
	EXPECT(AND(S(SEARCH_BODY, "quick"), S(SEARCH_BODY, "lazy"), H("X-Custom", "world"), NULL),
	       1);

	/* A program nested too deep is refused, not overflowed. */
	struct search_key *deep = L(SEARCH_ALL);
	for (int i = 0; i < SEARCH_MAX_DEPTH + 5; i++)
		deep = search_key_new_not(deep);
	uint32_t *uids = NULL;
	size_t n = 0;
	const char *err = NULL;
	CHECK(store_search(sh, inbox_id, deep, &uids, &n, &err) < 0 && err != NULL);
	CHECK(uids == NULL && n == 0);
	search_key_free(&deep);

	/* An empty mailbox. */
	struct mailbox_info trash;
	enum storage_status st;
	CHECK(store_mailbox_get(sh, USER, "Trash", &trash, &st, &err) == 0);
	struct search_key *all = L(SEARCH_ALL);
	CHECK(store_search(sh, trash.id, all, &uids, &n, &err) == 0 && n == 0);
	free(uids);
	search_key_free(&all);
}

int main(void)
{
	const char *tmp = getenv("MAIL_TEST_TMP");
	char dir[1024];
	snprintf(dir, sizeof(dir), "%s/search.%d", tmp ? tmp : "/tmp", (int)getpid());
	const char *err = NULL;
	struct storage_options so = { .dir = dir, .body_chunk_bytes = 1000 };
	struct storage *stg = storage_open(&so, &err);
	if (!stg) {
		fprintf(stderr, "storage_open: %s\n", err);
		return 1;
	}
	sh = storage_shard_open(stg, 1, true, &err);
	if (!sh) {
		fprintf(stderr, "shard: %s\n", err);
		return 1;
	}
	enum storage_status st;
	CHECK(store_user_create(sh, USER, "", 0, &st, &err) == 0);
	struct mailbox_info inbox;
	CHECK(store_mailbox_get(sh, USER, "INBOX", &inbox, &st, &err) == 0);
	inbox_id = inbox.id;

	test_date_parsers();
	test_constructors();

	/* m10: MAGICTOKEN straddles the 3000-byte chunk boundary and the ü of
	 * "grün" is split by the one at 5000. */
	struct buf big;
	buf_init(&big, 0);
	buf_append(&big, m10_head, strlen(m10_head));
	fill_to(&big, 2995);
	buf_append(&big, "MAGICTOKEN", 10);
	fill_to(&big, 4997);
	buf_append(&big, "gr\xc3\xbcn", 5);
	fill_to(&big, 8000);
	buf_append(&big, "\r\n", 2);

	uint64_t d_jan10 = date_ms(2024, 1, 10, 12, 0, 0);
	u[1] = deliver(m1, strlen(m1), date_ms(2024, 1, 1, 23, 59, 59));
	u[2] = deliver(m2, strlen(m2), date_ms(2024, 1, 2, 0, 0, 0));
	u[3] = deliver(m3, strlen(m3), d_jan10);
	u[4] = deliver(m4, strlen(m4), d_jan10);
	u[5] = deliver(m5, strlen(m5), d_jan10);
	u[6] = deliver(m6, strlen(m6), d_jan10);
	u[7] = deliver(m7, strlen(m7), d_jan10);
	u[8] = deliver(m8, strlen(m8), d_jan10);
	u[9] = deliver(m9, strlen(m9), date_ms(2023, 12, 25, 8, 0, 0));
	u[10] = deliver(big.data, big.len, d_jan10);
	u[11] = deliver(m11, strlen(m11), d_jan10);
	u[12] = deliver(m12, strlen(m12), date_ms(2024, 2, 10, 9, 0, 0));
	u[13] = deliver(m13, strlen(m13), d_jan10);
	build_m14(&big);
	CHECK(memcmp(big.data + 999, "=\r\n", 3) == 0 && memcmp(big.data + 1998, "=C3", 3) == 0);
	u[14] = deliver(big.data, big.len, d_jan10);
	buf_cleanup(&big);
	for (int m = 2; m <= NMSG; m++)
		CHECK(u[m] > u[m - 1]);

	set_flags(1, FLAGS_ADD, FLAG_SEEN, "Work");
	set_flags(2, FLAGS_ADD, FLAG_SEEN | FLAG_FLAGGED, NULL);
	set_flags(3, FLAGS_ADD, FLAG_DELETED, NULL);
	set_flags(4, FLAGS_ADD, FLAG_ANSWERED, NULL);
	set_flags(5, FLAGS_ADD, FLAG_DRAFT, NULL);
	set_flags(6, FLAGS_ADD, 0, "$Important");
	set_flags(7, FLAGS_ADD, FLAG_SEEN, NULL);
	CHECK(store_fetch_range(sh, inbox_id, 1, UINT32_MAX, &infos, &n_infos, &err) == 0);
	CHECK(n_infos == NMSG);

	test_flags_and_meta();
	test_headers();
	test_bodies();
	test_combinations();
	test_modseq(); /* changes flags: last */

	for (size_t i = 0; i < n_infos; i++)
		msg_info_cleanup(&infos[i]);
	free(infos);
	storage_close(&stg);
	char cmd[1200];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	if (failures) {
		fprintf(stderr, "%d failure(s)\n", failures);
		return 1;
	}
	printf("test_search: ok\n");
	return 0;
}
