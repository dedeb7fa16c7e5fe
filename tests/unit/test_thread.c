/* Unit tests for storage/thread.c: Message-ID normalisation, the References
 * scanner fed at every split, and both THREAD algorithms on the RFC 5256
 * cases that go wrong in practice: dummies for missing parents (kept at the
 * top, spliced below it), loops in References, duplicate and missing
 * Message-IDs, a truncated References header (step 1B), subject merging in
 * every branch of step 5, sibling order by sent date, and a 100,000-deep
 * chain threaded without recursion. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/sortkey.h"
#include "storage/thread.h"
#include "tests/unit/check.h"

/* ---- Message IDs ---- */

static bool id_is(const char *v, const char *want)
{
	char id[THREAD_ID_MAX];
	size_t n = thread_msgid_first(view_cstr(v), id);
	if (n == strlen(want) && memcmp(id, want, n) == 0)
		return true;
	fprintf(stderr, "  '%s': got '%.*s' want '%s'\n", v, (int)n, id, want);
	return false;
}

static void test_msgid(void)
{
	CHECK(id_is("<a@b>", "a@b"));
	CHECK(id_is("  <a@b> <c@d>", "a@b"));
	CHECK(id_is("<\"01KF8JCEOCBS0045PS\"@xxx.yyy.com>", "01KF8JCEOCBS0045PS@xxx.yyy.com"));
	CHECK(id_is("<\"a\\\"b c\"@host>", "a\"b c@host"));
	CHECK(id_is("(comment <x@y>) <a@b>", "a@b"));
	CHECK(id_is("(nested (comment) <x@y>) <a@b>", "a@b"));
	CHECK(id_is("<a\r\n @b>", "a@b"));
	CHECK(id_is("<<a@b>", "a@b"));
	CHECK(id_is("<> <a@b>", "a@b"));
	CHECK(id_is("Case@Sensitive <Case@Sensitive>", "Case@Sensitive"));
	CHECK(id_is("", ""));
	CHECK(id_is("no id here", ""));
	CHECK(id_is("<unterminated@id", ""));
	char big[THREAD_ID_MAX + 10];
	memset(big, 'x', sizeof(big));
	big[0] = '<';
	big[sizeof(big) - 2] = '>';
	big[sizeof(big) - 1] = 0;
	CHECK(id_is(big, "")); /* too long: not a valid id */
	big[THREAD_ID_MAX + 1] = '>';
	big[THREAD_ID_MAX + 2] = 0;
	char want[THREAD_ID_MAX + 1];
	memset(want, 'x', THREAD_ID_MAX);
	want[THREAD_ID_MAX] = 0;
	CHECK(id_is(big, want)); /* exactly THREAD_ID_MAX */
}

/* ---- References ---- */

static struct thread_refs refs;

static bool refs_are(const char *want)
{
	char got[4096] = "";
	for (size_t i = 0; i < thread_refs_count(&refs); i++) {
		struct view v = thread_refs_get(&refs, i);
		snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%.*s", i ? " " : "",
			 (int)v.len, (const char *)v.ptr);
	}
	if (strcmp(got, want) == 0)
		return true;
	fprintf(stderr, "  refs '%s' want '%s'\n", got, want);
	return false;
}

/* Feeds hdr split at every offset (and byte by byte); every way must give
 * want. */
static bool scan_is(const char *hdr, const char *irt, const char *want)
{
	size_t n = strlen(hdr);
	bool ok = true;
	for (size_t split = 0; split <= n + 1 && ok; split++) {
		thread_refs_init(&refs);
		if (split <= n) {
			thread_refs_feed(&refs, (const uint8_t *)hdr, split);
			thread_refs_feed(&refs, (const uint8_t *)hdr + split, n - split);
		} else {
			for (size_t i = 0; i < n; i++)
				thread_refs_feed(&refs, (const uint8_t *)hdr + i, 1);
		}
		thread_refs_finish(&refs, view_cstr(irt));
		ok = refs_are(want);
	}
	return ok;
}

static void test_refs(void)
{
	CHECK(scan_is("Subject: x\r\nReferences: <a@b>\r\n <c@d>\r\n\t<e@f>\r\nX: <no@no>\r\n\r\n",
		      "<irt@x>", "a@b c@d e@f"));
	CHECK(scan_is("references:<a@b><c@d>\nX: y\n\n", "", "a@b c@d"));
	CHECK(scan_is("REFERENCES : <a@b>\r\n\r\n", "", "a@b"));
	CHECK(scan_is("References: <a@b>\r\nReferences: <z@z>\r\n\r\n", "", "a@b"));
	CHECK(scan_is("Referencesx: <z@z>\r\nX-References: <y@y>\r\n\r\n", "<irt@x>", "irt@x"));
	CHECK(scan_is("Subject: x\r\n\r\nReferences: <body@b>\r\n", "", ""));
	CHECK(scan_is("References: garbage (<c@c>)\r\n\r\n", "<i@x> <j@x>", "i@x"));
	CHECK(scan_is("Subject: x\r\n\r\n", "<i@x>", "i@x"));
	CHECK(scan_is("References: <a@b> <unterminated\r\n\r\n", "", "a@b"));
	CHECK(scan_is("References: <a@b>", "", "a@b")); /* header cut short */
	/* feeding stops being needed once the field is over */
	thread_refs_init(&refs);
	const char *h = "References: <a@b>\r\nSubject: x\r\n\r\n";
	CHECK(thread_refs_feed(&refs, (const uint8_t *)h, strlen(h)));
	/* a long References keeps the last THREAD_REFS_MAX, oldest first */
	struct buf b;
	buf_init(&b, 0);
	buf_printf(&b, "References:");
	for (int i = 0; i < THREAD_REFS_MAX + 10; i++)
		buf_printf(&b, " <r%d@x>", i);
	buf_printf(&b, "\r\n\r\n");
	thread_refs_init(&refs);
	thread_refs_feed(&refs, b.data, b.len);
	thread_refs_finish(&refs, view_make("", 0));
	CHECK(thread_refs_count(&refs) == THREAD_REFS_MAX);
	struct view v0 = thread_refs_get(&refs, 0), vl = thread_refs_get(&refs, THREAD_REFS_MAX - 1);
	CHECK(v0.len == 5 && memcmp(v0.ptr, "r10@x", 5) == 0);
	char last[16];
	snprintf(last, sizeof(last), "r%d@x", THREAD_REFS_MAX + 9);
	CHECK(vl.len == strlen(last) && memcmp(vl.ptr, last, vl.len) == 0);
	buf_cleanup(&b);
}

/* ---- threading ---- */

struct tmsg_spec {
	uint32_t num;
	int64_t date;
	const char *subject; /* raw Subject value */
	const char *msgid;   /* raw Message-ID value */
	const char *refs;    /* raw References value, NULL: none */
	const char *irt;     /* raw In-Reply-To */
};

static bool threads_are(bool references, const struct tmsg_spec *m, size_t n, const char *want)
{
	struct thread_set *ts = thread_set_new();
	for (size_t i = 0; i < n; i++) {
		struct buf subj;
		buf_init(&subj, 0);
		bool refwd = false;
		sortkey_subject(view_cstr(m[i].subject ? m[i].subject : ""), &subj, &refwd);
		char id[THREAD_ID_MAX];
		size_t idn = thread_msgid_first(view_cstr(m[i].msgid ? m[i].msgid : ""), id);
		thread_refs_init(&refs);
		if (m[i].refs) {
			char hdr[2048];
			snprintf(hdr, sizeof(hdr), "References: %s\r\n\r\n", m[i].refs);
			thread_refs_feed(&refs, (const uint8_t *)hdr, strlen(hdr));
		}
		thread_refs_finish(&refs, view_cstr(m[i].irt ? m[i].irt : ""));
		struct view rv[THREAD_REFS_MAX];
		size_t nr = thread_refs_count(&refs);
		for (size_t k = 0; k < nr; k++)
			rv[k] = thread_refs_get(&refs, k);
		thread_set_add(ts, m[i].num, m[i].date, buf_view(&subj), refwd, view_make(id, idn),
			       rv, references ? nr : 0);
		buf_cleanup(&subj);
	}
	struct buf out;
	buf_init(&out, 0);
	if (references)
		thread_references(ts, &out);
	else
		thread_orderedsubject(ts, &out);
	bool ok = out.len == strlen(want) && memcmp(out.data ? (char *)out.data : "", want, out.len) == 0;
	if (!ok)
		fprintf(stderr, "  %s: got '%.*s'\n      want '%s'\n",
			references ? "REFERENCES" : "ORDEREDSUBJECT", (int)out.len, (char *)out.data,
			want);
	buf_cleanup(&out);
	thread_set_free(&ts);
	CHECK(ts == NULL);
	return ok;
}

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define REFS(m, want) threads_are(true, m, N(m), want)
#define ORDERED(m, want) threads_are(false, m, N(m), want)

static void test_references(void)
{
	/* the RFC's shape: (3 6 (4 23)(44 7 96)) */
	static const struct tmsg_spec rfc[] = {
		{ 3, 1, "s", "<A>", NULL, NULL },
		{ 6, 2, "Re: s", "<B>", "<A>", NULL },
		{ 4, 3, "Re: s", "<C>", "<A> <B>", NULL },
		{ 23, 4, "Re: s", "<D>", "<A> <B> <C>", NULL },
		{ 44, 5, "Re: s", "<E>", "<A> <B>", NULL },
		{ 7, 6, "Re: s", "<F>", "<A> <B> <E>", NULL },
		{ 96, 7, "Re: s", "<G>", "<A> <B> <E> <F>", NULL },
	};
	CHECK(REFS(rfc, "(3 6 (4 23)(44 7 96))"));

	/* siblings in sent-date order, not arrival order */
	static const struct tmsg_spec sib[] = {
		{ 1, 10, "a", "<A>", NULL, NULL },
		{ 2, 30, "Re: a", "<B>", "<A>", NULL },
		{ 3, 20, "Re: a", "<C>", NULL, "<A>" }, /* In-Reply-To only */
	};
	CHECK(REFS(sib, "(1 (3)(2))"));

	/* a missing parent: a dummy at the top with its two children; one
	 * child alone replaces the dummy */
	static const struct tmsg_spec dummy[] = {
		{ 1, 10, "x", "<B>", "<MISSING>", NULL },
		{ 2, 20, "y", "<C>", "<MISSING>", NULL },
		{ 3, 30, "z", "<D>", "<OTHER>", NULL },
	};
	CHECK(REFS(dummy, "((1)(2))(3)"));

	/* a dummy below the top is spliced out: 2's parent becomes 1 */
	static const struct tmsg_spec splice[] = {
		{ 1, 10, "x", "<A>", NULL, NULL },
		{ 2, 20, "y", "<C>", "<A> <MISSING1> <MISSING2>", NULL },
		{ 3, 30, "z", "<D>", "<A> <MISSING1> <MISSING3>", NULL },
	};
	CHECK(REFS(splice, "(1 (2)(3))"));

	/* loops: each references the other; a message referencing itself */
	static const struct tmsg_spec loop[] = {
		{ 1, 10, "p", "<A>", "<B>", NULL },
		{ 2, 20, "q", "<B>", "<A>", NULL },
		{ 3, 30, "r", "<C>", "<C>", NULL },
		{ 4, 40, "s", "<D>", "<X> <Y> <X> <D>", NULL },
	};
	CHECK(REFS(loop, "(2 1)(3)(4)"));

	/* duplicate Message-IDs: only the first keeps it; missing ids */
	static const struct tmsg_spec dup[] = {
		{ 1, 10, "a", "<A>", NULL, NULL },
		{ 2, 20, "b", "<A>", NULL, NULL },
		{ 3, 30, "c", NULL, "<A>", NULL },
		{ 4, 40, "d", "not an id", "<A>", NULL },
		{ 5, 50, "e", "", NULL, NULL },
	};
	CHECK(REFS(dup, "(1 (3)(4))(2)(5)"));

	/* step 1B: a later, truncated References moves the message */
	static const struct tmsg_spec trunc[] = {
		{ 1, 10, "a", "<A>", NULL, NULL },
		{ 2, 20, "b", "<B>", NULL, NULL },
		{ 3, 30, "c", "<X>", "<A> <C>", NULL }, /* a dummy C under A, 3 under C */
		{ 4, 40, "d", "<C>", "<B>", NULL },     /* C's own header: parent B */
	};
	CHECK(REFS(trunc, "(1)(2 4 3)"));

	/* step 5: a reply without references joins the original */
	static const struct tmsg_spec reply[] = {
		{ 1, 10, "Budget", "<A>", NULL, NULL },
		{ 2, 20, "Re: budget", "<B>", NULL, NULL },
		{ 3, 30, "RE: [fwd: BUDGET]", "<C>", NULL, NULL },
	};
	CHECK(REFS(reply, "(1 (2)(3))"));

	/* the original arrives after the reply: the original wins the table */
	static const struct tmsg_spec late[] = {
		{ 1, 10, "Re: plan", "<A>", NULL, NULL },
		{ 2, 20, "plan", "<B>", NULL, NULL },
	};
	CHECK(REFS(late, "(2 1)"));

	/* two originals with one subject: a new dummy holds both */
	static const struct tmsg_spec twins[] = {
		{ 1, 10, "hello", "<A>", NULL, NULL },
		{ 2, 20, "Hello", "<B>", NULL, NULL },
		{ 3, 30, "other", "<C>", NULL, NULL },
	};
	CHECK(REFS(twins, "((1)(2))(3)"));

	/* a message joins a dummy with its subject; two dummies merge */
	static const struct tmsg_spec dummies[] = {
		{ 1, 10, "topic", "<A>", "<M1>", NULL },
		{ 2, 20, "Re: topic", "<B>", "<M1>", NULL },
		{ 3, 30, "topic", "<C>", NULL, NULL },
		{ 4, 40, "Re: topic", "<D>", "<M2>", NULL },
		{ 5, 50, "Re: topic", "<E>", "<M2>", NULL },
	};
	CHECK(REFS(dummies, "((1)(2)(3)(4)(5))"));

	/* empty subjects are never merged */
	static const struct tmsg_spec empty[] = {
		{ 1, 10, "", "<A>", NULL, NULL },
		{ 2, 20, "Re:", "<B>", NULL, NULL },
		{ 3, 30, NULL, "<C>", NULL, NULL },
	};
	CHECK(REFS(empty, "(1)(2)(3)"));

	/* threads in order of their first message; equal dates by sequence */
	static const struct tmsg_spec order[] = {
		{ 1, 50, "a", "<A>", NULL, NULL },
		{ 2, 10, "b", "<B>", NULL, NULL },
		{ 3, 50, "c", "<C>", NULL, NULL },
		{ 4, 5, "Re: a", "<D>", "<A>", NULL },
	};
	CHECK(REFS(order, "(2)(1 4)(3)"));

	/* message ids are case-sensitive */
	static const struct tmsg_spec cases[] = {
		{ 1, 10, "a", "<Id@X>", NULL, NULL },
		{ 2, 20, "b", "<x@y>", "<id@x>", NULL },
	};
	CHECK(REFS(cases, "(1)(2)"));

	CHECK(REFS(((struct tmsg_spec[]){ { 9, 1, "only", NULL, NULL, NULL } }), "(9)"));
	struct thread_set *ts = thread_set_new();
	struct buf out;
	buf_init(&out, 0);
	thread_references(ts, &out);
	CHECK(out.len == 0);
	thread_set_free(&ts);
	ts = thread_set_new();
	thread_orderedsubject(ts, &out);
	CHECK(out.len == 0);
	thread_set_free(&ts);
	thread_set_free(&ts); /* NULL-safe */
}

static void test_orderedsubject(void)
{
	static const struct tmsg_spec m[] = {
		{ 1, 30, "b", NULL, NULL, NULL },
		{ 2, 20, "a", NULL, NULL, NULL },
		{ 3, 10, "Re: b", NULL, NULL, NULL },
		{ 4, 40, "A", NULL, NULL, NULL },
		{ 5, 50, "c", NULL, NULL, NULL },
		{ 6, 25, "[list] Fwd: a", NULL, NULL, NULL },
		{ 7, 25, "", NULL, NULL, NULL },
		{ 8, 5, "Re:", NULL, NULL, NULL },
	};
	/* threads: "" (8 7) from 5, b (3 1) from 10, a (2 (6)(4)) from 20,
	 * c (5) */
	CHECK(ORDERED(m, "(8 7)(3 1)(2 (6)(4))(5)"));
}

/* A chain as deep as a big mailbox: no recursion anywhere. */
static void test_deep(void)
{
	enum { DEPTH = 100000 };
	struct thread_set *ts = thread_set_new();
	char id[32], ref[32];
	for (uint32_t i = 1; i <= DEPTH; i++) {
		snprintf(id, sizeof(id), "m%u@x", i);
		snprintf(ref, sizeof(ref), "m%u@x", i - 1);
		struct view r = view_cstr(ref);
		thread_set_add(ts, i, i, view_cstr("DEEP"), i > 1, view_cstr(id), &r, i > 1);
	}
	struct buf out;
	buf_init(&out, 0);
	thread_references(ts, &out);
	CHECK(out.len > 2 && out.data[0] == '(' && out.data[out.len - 1] == ')');
	CHECK(memcmp(out.data, "(1 2 3 ", 7) == 0);
	CHECK(memcmp(out.data + out.len - 14, " 99999 100000)", 14) == 0);
	size_t spaces = 0;
	for (size_t i = 0; i < out.len; i++)
		spaces += out.data[i] == ' ';
	CHECK(spaces == DEPTH - 1);
	fprintf(stderr, "deep chain: %zu bytes of output, set held %zu KiB\n", out.len,
		thread_set_mem(ts) / 1024);
	buf_cleanup(&out);
	thread_set_free(&ts);

	/* the same chain announced backwards: every message references all
	 * of its ancestors that fit, arriving newest first */
	ts = thread_set_new();
	for (uint32_t i = DEPTH / 10; i >= 1; i--) {
		struct view rv[THREAD_REFS_MAX];
		char ids[THREAD_REFS_MAX][32];
		size_t nr = 0;
		for (uint32_t a = i > THREAD_REFS_MAX ? i - THREAD_REFS_MAX : 1; a < i; a++) {
			snprintf(ids[nr], sizeof(ids[nr]), "m%u@x", a);
			rv[nr] = view_cstr(ids[nr]);
			nr++;
		}
		snprintf(id, sizeof(id), "m%u@x", i);
		thread_set_add(ts, i, i, view_cstr("DEEP"), false, view_cstr(id), rv, nr);
	}
	thread_references(ts, &out);
	spaces = 0;
	for (size_t i = 0; i < out.len; i++)
		spaces += out.data[i] == ' ';
	CHECK(memcmp(out.data, "(1 2 3 ", 7) == 0 && spaces == DEPTH / 10 - 1 &&
	      out.data[out.len - 1] == ')' && memchr(out.data + 1, '(', out.len - 1) == NULL);
	buf_cleanup(&out);
	thread_set_free(&ts);
}

int main(void)
{
	test_msgid();
	test_refs();
	test_references();
	test_orderedsubject();
	test_deep();
	return check_finish("test_thread");
}
