/* Unit tests for storage/sortkey.c: folding, RFC 5256 base subjects (every
 * rule of section 2.1 and its corner cases), RFC 2047 subjects, address and
 * display keys read from real MIME blobs, sent dates in UTC with the
 * internal-date fallback, and the multi-key sort with REVERSE and the
 * sequence-number tie-break. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/mime.h"
#include "storage/search.h"
#include "storage/sortkey.h"
#include "tests/unit/check.h"

static bool buf_is(const struct buf *b, const char *want)
{
	if (b->len == strlen(want) && memcmp(b->data ? (const char *)b->data : "", want, b->len) == 0)
		return true;
	fprintf(stderr, "  got '%.*s' want '%s'\n", (int)b->len, (const char *)b->data, want);
	return false;
}

static bool fold_is(const char *in, const char *want)
{
	struct buf b;
	buf_init(&b, 0);
	sortkey_casemap(view_cstr(in), &b, 1000);
	bool ok = buf_is(&b, want);
	buf_cleanup(&b);
	return ok;
}

/* Base subject of a raw Subject value, and the reply/forward mark. */
static bool subj_is(const char *raw, const char *want, bool want_refwd)
{
	struct buf b;
	buf_init(&b, 0);
	bool refwd = !want_refwd;
	sortkey_subject(view_cstr(raw), &b, &refwd);
	bool ok = buf_is(&b, want);
	if (refwd != want_refwd) {
		fprintf(stderr, "  '%s': refwd %d want %d\n", raw, refwd, want_refwd);
		ok = false;
	}
	buf_cleanup(&b);
	return ok;
}

static void test_casemap(void)
{
	CHECK(fold_is("abc XYZ 09 _[]", "ABC XYZ 09 _[]"));
	CHECK(fold_is("\xc3\xa4\xc3\xb6\xc3\xbc\xc3\xa9", "\xc3\x84\xc3\x96\xc3\x9c\xc3\x89")); /* äöüé */
	CHECK(fold_is("\xc3\xbf", "\xc5\xb8"));	   /* ÿ -> Ÿ */
	CHECK(fold_is("\xc3\x9f", "\xc3\x9f"));	   /* ß stays */
	CHECK(fold_is("\xc5\x82\xc5\xbc", "\xc5\x81\xc5\xbb")); /* łż -> ŁŻ */
	CHECK(fold_is("\xce\xb1\xcf\x82", "\xce\x91\xce\xa3")); /* ας -> ΑΣ */
	CHECK(fold_is("\xd0\xb6\xd1\x91", "\xd0\x96\xd0\x81")); /* жё -> ЖЁ */
	CHECK(fold_is("a\xff" "b", "A\xff" "B")); /* not UTF-8: kept */
	/* the limit cuts at a character boundary */
	struct buf b;
	buf_init(&b, 0);
	sortkey_casemap(view_cstr("ab\xc3\xa4"), &b, 3);
	CHECK(buf_is(&b, "AB"));
	buf_cleanup(&b);
}

static void test_base_subject(void)
{
	CHECK(subj_is("", "", false));
	CHECK(subj_is("Hello world", "HELLO WORLD", false));
	CHECK(subj_is("  multiple   spaces\tand\ttabs  ", "MULTIPLE SPACES AND TABS", false));
	/* subj-refwd */
	CHECK(subj_is("Re: lunch", "LUNCH", true));
	CHECK(subj_is("RE: Re: re: lunch", "LUNCH", true));
	CHECK(subj_is("re:re:lunch", "LUNCH", true));
	CHECK(subj_is("Fwd: lunch", "LUNCH", true));
	CHECK(subj_is("Fw: lunch", "LUNCH", true));
	CHECK(subj_is("FWD : lunch", "LUNCH", true));
	CHECK(subj_is("Re[2]: lunch", "LUNCH", true));
	CHECK(subj_is("Re [2] : lunch", "LUNCH", true)); /* the blob takes the WSP */
	CHECK(subj_is("Re [2]: lunch", "LUNCH", true));
	CHECK(subj_is("Re:", "", true));
	CHECK(subj_is("Refresh: lunch", "REFRESH: LUNCH", false));
	CHECK(subj_is("Re(2): lunch", "RE(2): LUNCH", false));
	CHECK(subj_is("Reply lunch", "REPLY LUNCH", false));
	/* subj-blob */
	CHECK(subj_is("[PATCH] fix it", "FIX IT", false));
	CHECK(subj_is("[PATCH 1/2] [net] fix it", "FIX IT", false));
	CHECK(subj_is("[PATCH]", "[PATCH]", false));
	CHECK(subj_is("[a] [b]", "[B]", false));
	CHECK(subj_is("[list] Re: lunch", "LUNCH", true));
	CHECK(subj_is("[list][other] Fwd: lunch", "LUNCH", true));
	CHECK(subj_is("Re: [list] lunch", "LUNCH", true));
	CHECK(subj_is("Re: [list] Re: lunch", "LUNCH", true));
	CHECK(subj_is("[open lunch", "[OPEN LUNCH", false));
	CHECK(subj_is("[\xd0\xa1\xd0\xbf\xd0\xb8\xd1\x81\xd0\xbe\xd0\xba] Re: \xd1\x82\xd0\xb5\xd1\x81\xd1\x82",
		      "\xd0\xa2\xd0\x95\xd0\xa1\xd0\xa2", true)); /* [Список] Re: тест */
	/* subj-trailer */
	CHECK(subj_is("lunch (fwd)", "LUNCH", true));
	CHECK(subj_is("lunch (FWD) (fwd)  ", "LUNCH", true));
	CHECK(subj_is("lunch(fwd)", "LUNCH", true));
	CHECK(subj_is("(fwd)", "", true));
	CHECK(subj_is("lunch (fwd) x", "LUNCH (FWD) X", false));
	/* subj-fwd */
	CHECK(subj_is("[fwd: lunch]", "LUNCH", true));
	CHECK(subj_is("[Fwd: Re: lunch (fwd)]", "LUNCH", true));
	CHECK(subj_is("Re: [fwd: [list] lunch]", "LUNCH", true));
	CHECK(subj_is("Fwd: [fwd: [fwd: lunch]]", "LUNCH", true));
	CHECK(subj_is("[fwd: [fwd: lunch]]", "LUNCH", true));
	CHECK(subj_is("[fwd: lunch] tail", "TAIL", false));
	CHECK(subj_is("[fwd:]", "", true));
	/* RFC 2047: decoded before the rules run */
	CHECK(subj_is("=?utf-8?q?Re=3A_caf=C3=A9?=", "CAF\xc3\x89", true));
	CHECK(subj_is("=?iso-8859-1?q?=E4pfel?= und Birnen", "\xc3\x84PFEL UND BIRNEN", false));
	CHECK(subj_is("Re: =?utf-8?b?w6lsw6h2ZQ==?=", "\xc3\x89L\xc3\x88VE", true)); /* élève */
	/* keys are cut at SORTKEY_MAX without splitting a character */
	char big[2000];
	memset(big, 'a', sizeof(big));
	big[SORTKEY_MAX - 1] = '\xc3';
	big[SORTKEY_MAX] = '\xa4';
	big[sizeof(big) - 1] = 0;
	struct buf b;
	buf_init(&b, 0);
	sortkey_subject(view_cstr(big), &b, NULL);
	CHECK(b.len == SORTKEY_MAX - 1);
	buf_cleanup(&b);
}

/* A blob from a message's header. */
static struct buf blob_of(const char *msg)
{
	struct buf blob;
	buf_init(&blob, 0);
	struct mime_parser *p = mime_parser_new(NULL);
	mime_parser_feed(p, (const uint8_t *)msg, strlen(msg));
	CHECK(mime_parser_finish(p, &blob) == 0);
	mime_parser_free(&p);
	return blob;
}

static bool key_is(void (*fn)(struct view, struct buf *), struct view list, const char *want)
{
	struct buf b;
	buf_init(&b, 0);
	fn(list, &b);
	bool ok = buf_is(&b, want);
	buf_cleanup(&b);
	return ok;
}

static bool view_is(struct view v, const char *want)
{
	if (v.len == strlen(want) && memcmp(v.ptr, want, v.len) == 0)
		return true;
	fprintf(stderr, "  got '%.*s' want '%s'\n", (int)v.len, (const char *)v.ptr, want);
	return false;
}

static void test_blob(void)
{
	const char *hdr = "Date: Sun, 31 Dec 2000 16:01:33 -0800\r\n"
			  "Subject: Re: [list] Budget\r\n"
			  "From: \"Zed Alpha\" <Alice@Example.ORG>\r\n"
			  "To: =?utf-8?q?=C3=89mile?= <emile@example.net>, bob@example.net\r\n"
			  "Cc: undisclosed-recipients:;\r\n"
			  "Message-ID: <m1@example.org>\r\n"
			  "In-Reply-To: <m0@example.org>\r\n"
			  "\r\n";
	char msg[1024];
	snprintf(msg, sizeof(msg), "%sbody\r\n", hdr);
	struct buf blob = blob_of(msg);
	struct sortkey_env env;
	CHECK(sortkey_blob_env(buf_view(&blob), &env) == 0);
	CHECK(view_is(env.date, "Sun, 31 Dec 2000 16:01:33 -0800"));
	CHECK(view_is(env.subject, "Re: [list] Budget"));
	CHECK(view_is(env.message_id, "<m1@example.org>"));
	CHECK(view_is(env.in_reply_to, "<m0@example.org>"));
	CHECK(env.hdr_len == strlen(hdr));
	CHECK(key_is(sortkey_addr_mailbox, env.from, "ALICE"));
	CHECK(key_is(sortkey_addr_display, env.from, "ZED ALPHA"));
	CHECK(key_is(sortkey_addr_mailbox, env.to, "EMILE"));
	CHECK(key_is(sortkey_addr_display, env.to, "\xc3\x89MILE"));
	CHECK(key_is(sortkey_addr_mailbox, env.cc, "UNDISCLOSED-RECIPIENTS")); /* group */
	CHECK(key_is(sortkey_addr_display, env.cc, "UNDISCLOSED-RECIPIENTS"));
	struct sortkey_addr a;
	CHECK(sortkey_first_addr(env.from, &a) && a.has_host && view_is(a.host, "Example.ORG"));
	/* RFC 5256 2.2's example: 31 Dec 2000 16:01:33 -0800 is 1 Jan 2001
	 * 00:01:33 UTC */
	int64_t want = (search_days_from_civil(2001, 1, 1) * 86400 + 61 + 32) * 1000;
	CHECK(sortkey_sent_ms(env.date, 5) == want);
	buf_cleanup(&blob);

	/* Without a display name the address is the display key; without the
	 * fields the keys are empty and the date is the internal date. */
	blob = blob_of("From: bob@Example.net\r\nDate: not a date\r\n\r\nx\r\n");
	CHECK(sortkey_blob_env(buf_view(&blob), &env) == 0);
	CHECK(key_is(sortkey_addr_display, env.from, "BOB@EXAMPLE.NET"));
	CHECK(key_is(sortkey_addr_mailbox, env.to, ""));
	CHECK(key_is(sortkey_addr_display, env.cc, ""));
	CHECK(env.subject.len == 0 && env.message_id.len == 0);
	CHECK(sortkey_sent_ms(env.date, 12345) == 12345);
	CHECK(sortkey_sent_ms(view_make("", 0), 777) == 777);
	buf_cleanup(&blob);

	/* a comment as the display name (old style "addr (Name)") */
	blob = blob_of("From: carol@example.net (Carol Q)\r\n\r\n");
	CHECK(sortkey_blob_env(buf_view(&blob), &env) == 0);
	CHECK(key_is(sortkey_addr_display, env.from, "CAROL Q"));
	buf_cleanup(&blob);

	/* not a blob */
	CHECK(sortkey_blob_env(view_cstr("MIMBxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"), &env) < 0);
	CHECK(sortkey_blob_env(view_make("", 0), &env) < 0);
	CHECK(!sortkey_first_addr(view_cstr("\x05" "ab"), &a)); /* truncated */
}

/* ---- sorting ---- */

struct sort_fixture {
	struct sortkey_rec r[6];
	struct buf arena;
};

static void put_key(struct sort_fixture *f, int i, enum sortkey_field fld, const char *s)
{
	int k = sortkey_slot(fld);
	f->r[i].off[k] = (uint32_t)f->arena.len;
	f->r[i].len[k] = (uint32_t)strlen(s);
	buf_append(&f->arena, s, strlen(s));
}

static bool order_is(struct sort_fixture *f, const struct sortkey_crit *c, size_t nc,
		     const char *want)
{
	struct sortkey_rec r[6];
	memcpy(r, f->r, sizeof(r));
	sortkey_sort(r, 6, c, nc, f->arena.data);
	char got[64] = "";
	for (int i = 0; i < 6; i++)
		snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%u", i ? " " : "", r[i].num);
	if (strcmp(got, want) == 0)
		return true;
	fprintf(stderr, "  order '%s' want '%s'\n", got, want);
	return false;
}

static void test_sort(void)
{
	struct sort_fixture f;
	memset(&f, 0, sizeof(f));
	buf_init(&f.arena, 0);
	/* num, arrival, size, sent, subject, from */
	static const struct {
		uint64_t arrival, size;
		int64_t sent;
		const char *subject, *from;
	} m[6] = {
		{ 500, 300, 40, "B", "ZED" },  { 100, 100, 10, "A", "ALICE" },
		{ 300, 300, 10, "B", "" },     { 200, 50, 30, "", "BOB" },
		{ 600, 1000, 20, "A", "ALICE" }, { 400, 100, 50, "C", "ALICE" },
	};
	for (int i = 0; i < 6; i++) {
		f.r[i].num = (uint32_t)(i + 1) * 10; /* as UIDs: 10 .. 60 */
		f.r[i].order = (uint32_t)i;
		f.r[i].arrival_ms = m[i].arrival;
		f.r[i].size = m[i].size;
		f.r[i].sent_ms = m[i].sent;
		put_key(&f, i, SORTKEY_SUBJECT, m[i].subject);
		put_key(&f, i, SORTKEY_FROM, m[i].from);
	}
	struct sortkey_crit c[3];
	c[0] = (struct sortkey_crit){ SORTKEY_ARRIVAL, false };
	CHECK(order_is(&f, c, 1, "20 40 30 60 10 50"));
	c[0].reverse = true;
	CHECK(order_is(&f, c, 1, "50 10 60 30 40 20"));
	c[0] = (struct sortkey_crit){ SORTKEY_SIZE, false };
	CHECK(order_is(&f, c, 1, "40 20 60 10 30 50")); /* ties by order */
	c[0].reverse = true; /* REVERSE does not reverse the tie-break */
	CHECK(order_is(&f, c, 1, "50 10 30 20 60 40"));
	c[0] = (struct sortkey_crit){ SORTKEY_SUBJECT, false };
	c[1] = (struct sortkey_crit){ SORTKEY_DATE, false };
	CHECK(order_is(&f, c, 2, "40 20 50 30 10 60")); /* "" < "A" < "B" < "C" */
	c[1].reverse = true;
	CHECK(order_is(&f, c, 2, "40 50 20 10 30 60"));
	c[0] = (struct sortkey_crit){ SORTKEY_FROM, true };
	c[1] = (struct sortkey_crit){ SORTKEY_SIZE, false };
	c[2] = (struct sortkey_crit){ SORTKEY_ARRIVAL, true };
	CHECK(order_is(&f, c, 3, "10 40 60 20 50 30"));
	c[0] = (struct sortkey_crit){ SORTKEY_DATE, false };
	CHECK(order_is(&f, c, 1, "20 30 50 40 10 60"));
	buf_cleanup(&f.arena);
	CHECK(sortkey_slot(SORTKEY_DATE) < 0 && sortkey_slot(SORTKEY_DISPLAYTO) >= 0);
	CHECK(!sortkey_needs_blob(SORTKEY_SIZE) && sortkey_needs_blob(SORTKEY_DATE));
}

int main(void)
{
	test_casemap();
	test_base_subject();
	test_blob();
	test_sort();
	return check_finish("test_sortkey");
}
