/* bench/imap_reply.c: the response reader (every split of a stream gives
 * the same responses, literals skipped and counted, the line bound), the
 * outline parser, the strict grammar (valid responses from RFC 9051's
 * examples pass, broken ones fail) and the FETCH attributes mailbench
 * tracks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/imap_reply.h"
#include "tests/unit/check.h"

static const char stream[] =
	"* OK [CAPABILITY IMAP4rev2 LITERAL+] ready\r\n"
	"* 3 EXISTS\r\n"
	"* 1 FETCH (UID 7 RFC822.SIZE 5 BODY[] {5}\r\nab\ncd FLAGS (\\Seen))\r\n"
	"* 2 FETCH (BODY[HEADER] {0}\r\n UID 8)\r\n"
	"+ idling\r\n"
	"a1 OK done\n"
	"* 3 FETCH (BODY[1] {3}\r\n{1} BODY[2] {2}\r\n\r\n)\r\n";

struct seen {
	char line[200];
	uint64_t lit_bytes;
	unsigned lits;
};

/* Feeds the stream in pieces of `step` bytes (0: at once). */
static size_t read_all(size_t step, struct seen *out, size_t max)
{
	struct imap_reply_reader r;
	imap_reply_reader_init(&r, 1024);
	size_t len = strlen(stream), off = 0, n = 0;
	while (off < len) {
		size_t piece = step ? MIN(step, len - off) : len - off;
		size_t p = 0;
		while (p < piece) {
			size_t used = 0;
			enum imap_reply_result res =
				imap_reply_feed(&r, (const uint8_t *)stream + off + p, piece - p, &used);
			CHECK(res != IMAP_REPLY_TOO_LONG);
			p += used;
			if (res == IMAP_REPLY_DONE && n < max) {
				struct view v = imap_reply_reader_line(&r);
				snprintf(out[n].line, sizeof(out[n].line), "%.*s", (int)v.len,
					 (const char *)v.ptr);
				out[n].lit_bytes = r.lit_bytes;
				out[n].lits = r.lits;
				n++;
			}
			if (res == IMAP_REPLY_MORE)
				CHECK(p == piece);
		}
		off += piece;
	}
	imap_reply_reader_cleanup(&r);
	return n;
}

static void test_reader(void)
{
	struct seen whole[10], part[10];
	memset(whole, 0, sizeof(whole));
	size_t n = read_all(0, whole, 10);
	CHECK(n == 7);
	CHECK(strcmp(whole[0].line, "* OK [CAPABILITY IMAP4rev2 LITERAL+] ready") == 0);
	CHECK(strcmp(whole[2].line, "* 1 FETCH (UID 7 RFC822.SIZE 5 BODY[] {5}\r\n FLAGS (\\Seen))") == 0);
	CHECK(whole[2].lit_bytes == 5 && whole[2].lits == 1);
	CHECK(strcmp(whole[3].line, "* 2 FETCH (BODY[HEADER] {0}\r\n UID 8)") == 0);
	CHECK(whole[3].lits == 1 && whole[3].lit_bytes == 0);
	CHECK(strcmp(whole[5].line, "a1 OK done") == 0);
	/* A literal's bytes are never taken for an announcement. */
	CHECK(strcmp(whole[6].line, "* 3 FETCH (BODY[1] {3}\r\n BODY[2] {2}\r\n)") == 0);
	CHECK(whole[6].lits == 2 && whole[6].lit_bytes == 5);
	for (size_t step = 1; step < strlen(stream); step++) {
		memset(part, 0, sizeof(part));
		size_t k = read_all(step, part, 10);
		CHECK(k == n);
		for (size_t i = 0; i < n && i < k; i++)
			CHECK(memcmp(&whole[i], &part[i], sizeof(whole[i])) == 0);
	}
	/* The line bound. */
	struct imap_reply_reader r;
	imap_reply_reader_init(&r, 16);
	size_t used;
	const char *longl = "* OK 0123456789abcdefghij\r\n";
	CHECK(imap_reply_feed(&r, (const uint8_t *)longl, strlen(longl), &used) ==
	      IMAP_REPLY_TOO_LONG);
	imap_reply_reader_cleanup(&r);
	/* A literal of any size is skipped, not stored. */
	imap_reply_reader_init(&r, 64);
	const char *big = "* 1 FETCH (BODY[] {100000}\r\n";
	CHECK(imap_reply_feed(&r, (const uint8_t *)big, strlen(big), &used) == IMAP_REPLY_MORE);
	uint8_t chunk[1000];
	memset(chunk, 'x', sizeof(chunk));
	for (int i = 0; i < 100; i++)
		CHECK(imap_reply_feed(&r, chunk, sizeof(chunk), &used) == IMAP_REPLY_MORE &&
		      used == sizeof(chunk));
	CHECK(imap_reply_feed(&r, (const uint8_t *)")\r\n", 3, &used) == IMAP_REPLY_DONE);
	CHECK(r.lit_bytes == 100000 && r.line.len < 64);
	imap_reply_reader_cleanup(&r);
}

static void test_parse(void)
{
	struct imap_reply rp;
	const char *why = NULL;
	CHECK(imap_reply_parse(view_cstr("a12 NO [TRYCREATE] no such mailbox"), &rp, &why) == 0);
	CHECK(rp.kind == IMAP_REPLY_TAGGED && view_eq_cstr(rp.tag, "a12") &&
	      rp.status == IMAP_STATUS_NO && view_eq_cstr(rp.code, "TRYCREATE") &&
	      rp.code_args.len == 0 && view_eq_cstr(rp.text, "no such mailbox"));
	CHECK(imap_reply_parse(view_cstr("x OK [APPENDUID 38505 3955] APPEND completed"), &rp,
			       &why) == 0);
	uint32_t uv = 0, uid = 0;
	CHECK(view_eq_cstr(rp.code, "APPENDUID") &&
	      imap_reply_appenduid(rp.code_args, &uv, &uid) == 0 && uv == 38505 && uid == 3955);
	CHECK(imap_reply_appenduid(view_cstr("1 2:3"), &uv, &uid) < 0);
	CHECK(imap_reply_parse(view_cstr("* 23 FETCH (UID 9)"), &rp, &why) == 0);
	CHECK(rp.kind == IMAP_REPLY_UNTAGGED && rp.has_number && rp.number == 23 &&
	      view_eq_cstr(rp.word, "FETCH") && view_eq_cstr(rp.rest, "(UID 9)"));
	CHECK(imap_reply_parse(view_cstr("* BYE bye"), &rp, &why) == 0);
	CHECK(rp.status == IMAP_STATUS_BYE && view_eq_cstr(rp.text, "bye"));
	CHECK(imap_reply_parse(view_cstr("* SEARCH 1 2"), &rp, &why) == 0);
	CHECK(rp.status == IMAP_STATUS_NONE && view_eq_cstr(rp.word, "SEARCH") &&
	      view_eq_cstr(rp.rest, "1 2"));
	CHECK(imap_reply_parse(view_cstr("+ go ahead"), &rp, &why) == 0);
	CHECK(rp.kind == IMAP_REPLY_CONTINUE && view_eq_cstr(rp.text, "go ahead"));
	CHECK(imap_reply_parse(view_cstr("a1 MAYBE"), &rp, &why) < 0);
	CHECK(imap_reply_parse(view_cstr("a1 BYE"), &rp, &why) < 0);
	CHECK(imap_reply_parse(view_cstr(""), &rp, &why) < 0);
	CHECK(imap_reply_parse(view_cstr("* 99999999999 EXISTS"), &rp, &why) < 0);
}

static const char *const good[] = {
	"* OK [CAPABILITY IMAP4rev2 LITERAL+ AUTH=PLAIN] ready",
	"* OK ready",
	"a1 OK",
	"a1 OK [READ-WRITE]",
	"a1 OK [READ-WRITE] SELECT completed",
	"A142 NO [NONEXISTENT] Unknown mailbox",
	"* 3 EXISTS",
	"* 0 EXISTS",
	"* 2 EXPUNGE",
	"* 0 RECENT",
	"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Junk)",
	"* FLAGS ()",
	"* OK [PERMANENTFLAGS (\\Seen \\Deleted \\*)] Limited",
	"* OK [UIDVALIDITY 3857529045] UIDs valid",
	"* OK [UIDNEXT 4392] Predicted next UID",
	"* OK [HIGHESTMODSEQ 715194045007]",
	"* 12 FETCH (FLAGS (\\Seen) INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" RFC822.SIZE 4286 "
	"ENVELOPE (\"Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\" \"IMAP4rev2 WG mtg summary and "
	"minutes\" ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) ((\"Terry Gray\" NIL "
	"\"gray\" \"cac.washington.edu\")) ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) "
	"((NIL NIL \"imap\" \"cac.washington.edu\")) ((NIL NIL \"minutes\" \"CNRI.Reston.VA.US\")"
	"(\"John Klensin\" NIL \"KLENSIN\" \"MIT.EDU\")) NIL NIL "
	"\"<B27397-0100000@cac.washington.edu>\") BODY (\"TEXT\" \"PLAIN\" (\"CHARSET\" "
	"\"US-ASCII\") NIL NIL \"7BIT\" 3028 92))",
	"* 1 FETCH (INTERNALDATE \" 7-Jul-1996 02:44:25 +0000\")",
	"* 1 FETCH (UID 5 BODY[HEADER.FIELDS (FROM TO)] {12}\r\n)",
	"* 1 FETCH (BODY[]<0> {5}\r\n UID 3)",
	"* 1 FETCH (BODY[1.2.MIME] NIL BINARY[1] ~{3}\r\n BINARY.SIZE[1] 3)",
	"* 1 FETCH (RFC822.HEADER \"\" MODSEQ (12) FLAGS ($MB3 \\Seen))",
	"* 1 FETCH (BODYSTRUCTURE ((\"text\" \"plain\" NIL NIL NIL \"7bit\" 1 1)(\"text\" \"html\" NIL NIL NIL \"7bit\" 1 1) \"mixed\"))",
	"* LIST (\\HasNoChildren) \"/\" INBOX",
	"* LIST (\\Noselect) \"/\" \"\"",
	"* LIST () NIL \"a b\"",
	"* LIST (\\Sent) \"/\" {4}\r\n",
	"* SEARCH",
	"* SEARCH 2 3 6",
	"* SEARCH 2 (MODSEQ 917162500)",
	"* STATUS INBOX (MESSAGES 231 UIDNEXT 44292)",
	"* STATUS \"a b\" ()",
	"* CAPABILITY IMAP4rev2 STARTTLS AUTH=GSSAPI",
	"+ idling",
	"+",
	"+ ",
	"a2 OK [APPENDUID 38505 3955] APPEND completed",
	"a3 OK [COPYUID 38505 304,319:320 3956:3958] Done",
	"* BYE Logging out",
	"* ENABLED IMAP4rev2",
	"* ENABLED",
	"* ID (\"name\" \"x\" \"version\" NIL)",
	"* NAMESPACE ((\"\" \"/\")) NIL NIL",
	"* ESEARCH (TAG \"a\") UID COUNT 5 ALL 1:3,5",
	"* OK [ALERT] System shutdown in 10 minutes",
	"* NO [UNAVAILABLE] try later",
	"a1 OK [CAPABILITY IMAP4rev2 IDLE] Logged in",
	"* OK [X-SOMETHING some words] fine",
	"* OK text with \"quotes\" and (parens",
	"* LIST () \"/\" \"f\xc3\xbc\"",
};

static const char *const bad[] = {
	"",
	"* ",
	"*",
	"a1 MAYBE",
	"a1 BYE x",
	"a1 PREAUTH",
	"a1OK",
	"+x",
	"* 1 FETCH (UID 0)",
	"* 1 FETCH (UID 5",
	"* 1 FETCH (UID 5 FLAGS (\\Seen)",
	"* 1 FETCH (FLAGS (\\Seen) UID 5)x",
	"* 1 FETCH UID 5",
	"* 1 FETCH ()",
	"* 0 EXPUNGE",
	"* 0 FETCH (UID 1)",
	"* 1 FROB",
	"* OK [UIDNEXT x] y",
	"* OK [UIDVALIDITY 0] y",
	"* OK [READ-WRITE x] y",
	"* OK [PERMANENTFLAGS \\Seen] y",
	"a1 OK [APPENDUID 1] x",
	"a1 OK [UNCLOSED x",
	"* 1 FETCH (ENVELOPE (NIL))",
	"* 1 FETCH (INTERNALDATE \"bad\")",
	"* 1 FETCH (INTERNALDATE \"17-Foo-1996 02:44:25 -0700\")",
	"* 1 FETCH (RFC822.SIZE -1)",
	"* 1 FETCH (RFC822.SIZE 99999999999999999999999)",
	"* 1 FETCH (BODY[TEXT {5}\r\n)",
	"* 1 FETCH (BODY[TEXT] {5})",
	"* 1 FETCH (BODY[] \"a\r\nb\")",
	"* SEARCH 1 x",
	"* SEARCH 0",
	"* FLAGS \\Seen",
	"* FLAGS (\\)",
	"* LIST () \"/\"",
	"* LIST () \"\\a\" INBOX",
	"* LIST () \"/\" \"unterminated",
	"* STATUS INBOX (MESSAGES)",
	"* CAPABILITY",
	"* ID (\"x\"",
	"* X (((",
	"* X )",
	"* OK text\rwith CR",
	"* LIST () \"/\" \"bad \xff utf8\"",
};

static void test_check(void)
{
	const char *why = NULL;
	for (size_t i = 0; i < ARRAY_LEN(good); i++) {
		why = NULL;
		int r = imap_reply_check(view_cstr(good[i]), &why);
		if (r != 0)
			fprintf(stderr, "valid response refused: %s (%s)\n", good[i], why);
		CHECK(r == 0);
	}
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		why = NULL;
		int r = imap_reply_check(view_cstr(bad[i]), &why);
		if (r == 0)
			fprintf(stderr, "broken response accepted: %s\n", bad[i]);
		CHECK(r < 0 && why && why[0]);
	}
	/* Nesting is bounded. */
	char deep[400] = "* X ";
	for (int i = 0; i < 100; i++)
		strcat(deep, "(");
	CHECK(imap_reply_check(view_cstr(deep), &why) < 0);
}

static void test_fetch(void)
{
	struct imap_fetch_atts a;
	const char *why = NULL;
	CHECK(imap_reply_fetch(view_cstr("(UID 17 FLAGS (\\Seen $MB3) RFC822.SIZE 4096 "
					 "BODY[] {4096}\r\n)"),
			       &a, &why) == 0);
	CHECK(a.has_uid && a.uid == 17 && a.has_flags && a.has_size && a.size == 4096 &&
	      a.literals == 1 && view_eq_cstr(a.flags, "\\Seen $MB3"));
	CHECK(imap_flags_has(a.flags, "$mb3") && imap_flags_has(a.flags, "\\SEEN") &&
	      !imap_flags_has(a.flags, "$MB30") && !imap_flags_has(a.flags, "\\Deleted"));
	CHECK(imap_reply_fetch(view_cstr("(FLAGS ())"), &a, &why) == 0);
	CHECK(!a.has_uid && a.has_flags && a.flags.len == 0 && !imap_flags_has(a.flags, "x"));
	CHECK(imap_reply_fetch(view_cstr("(UID 1) junk"), &a, &why) < 0);
	CHECK(imap_reply_fetch(view_cstr("(UID 4294967296)"), &a, &why) < 0);
}

int main(void)
{
	test_reader();
	test_parse();
	test_check();
	test_fetch();
	return check_finish("imap_reply");
}
