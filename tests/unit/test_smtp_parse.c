/* proto/smtp_parse.c: tables of good and bad command lines (each parsed
 * from an exact-size heap copy and again ending at a guard page), command
 * streams fed whole, one byte at a time and split at every offset, line and
 * path limits, the DATA unstuffer across every split point (and every pair
 * of split points for short messages) against expected output, BDAT
 * counting, SASL decoding and reply formatting. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/base.h"
#include "proto/smtp_parse.h"
#include "proxy/smtp_session.h"
#include "tests/unit/check.h"

/* ---- guard page ------------------------------------------------------------- */

static uint8_t *guard_base;
static size_t guard_page;

static void guard_init(void)
{
	guard_page = (size_t)sysconf(_SC_PAGESIZE);
	void *m = mmap(NULL, 8 * guard_page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);
	if (m == MAP_FAILED)
		abort();
	guard_base = m;
	if (mprotect(guard_base + 7 * guard_page, guard_page, PROT_NONE) != 0)
		abort();
}

/* Copies p so that its last byte is the last byte before the guard page. */
static const uint8_t *at_guard(const void *p, size_t len)
{
	if (len > 7 * guard_page)
		abort();
	uint8_t *dst = guard_base + 7 * guard_page - len;
	memcpy(dst, p, len);
	return dst;
}

/* ---- single commands ---------------------------------------------------------- */

static struct smtp_limits lim;

static enum smtp_result parse_n(const char *line, size_t len, struct smtp_command *cmd,
				size_t *used)
{
	/* guard page first: must give the same result */
	struct smtp_command g;
	size_t gused;
	enum smtp_result gr = smtp_parse_command(at_guard(line, len), len, &lim, &g, &gused);

	static uint8_t *keep;
	free(keep);
	keep = xmalloc(len ? len : 1);
	memcpy(keep, line, len);
	enum smtp_result r = smtp_parse_command(keep, len, &lim, cmd, used);
	CHECK(gr == r && gused == *used && g.verb == cmd->verb && g.reply_code == cmd->reply_code);
	if (r == SMTP_MORE)
		CHECK(*used == 0);
	return r;
}

static enum smtp_result parse1(const char *line, struct smtp_command *cmd)
{
	size_t used;
	size_t len = strlen(line);
	enum smtp_result r = parse_n(line, len, cmd, &used);
	if (r == SMTP_OK || (r == SMTP_BAD && !cmd->line_open))
		CHECK(used == len);
	return r;
}

struct cmd_case {
	const char *line;
	enum smtp_result res;
	enum smtp_verb verb;
	int code; /* BAD/FATAL reply code */
};

static const struct cmd_case cmd_cases[] = {
	{ "EHLO client.example\r\n", SMTP_OK, SMTP_CMD_EHLO, 0 },
	{ "ehlo [192.0.2.1]\r\n", SMTP_OK, SMTP_CMD_EHLO, 0 },
	{ "HELO x\n", SMTP_OK, SMTP_CMD_HELO, 0 },
	{ "EHLO\r\n", SMTP_BAD, SMTP_CMD_EHLO, 501 },
	{ "EHLO   \r\n", SMTP_BAD, SMTP_CMD_EHLO, 501 },
	{ "MAIL FROM:<a@b.example>\r\n", SMTP_OK, SMTP_CMD_MAIL, 0 },
	{ "mail from:<>\r\n", SMTP_OK, SMTP_CMD_MAIL, 0 },
	{ "MAIL FROM: <a@b.example>\r\n", SMTP_OK, SMTP_CMD_MAIL, 0 },
	{ "MAIL FROM:a@b.example\r\n", SMTP_BAD, SMTP_CMD_MAIL, 501 },
	{ "MAIL TO:<a@b.example>\r\n", SMTP_BAD, SMTP_CMD_MAIL, 501 },
	{ "MAIL FROM:<a@b.example\r\n", SMTP_BAD, SMTP_CMD_MAIL, 501 },
	{ "MAIL FROM:<a@b.example>x\r\n", SMTP_BAD, SMTP_CMD_MAIL, 501 },
	{ "MAIL FROM:<@a.example,@b.example:u@c.example>\r\n", SMTP_OK, SMTP_CMD_MAIL, 0 },
	{ "MAIL FROM:<@a.example:u@c.example>\r\n", SMTP_OK, SMTP_CMD_MAIL, 0 },
	{ "MAIL FROM:<@a.example,u@c.example>\r\n", SMTP_BAD, SMTP_CMD_MAIL, 501 },
	{ "MAIL FROM:<\"john doe\"@b.example>\r\n", SMTP_OK, SMTP_CMD_MAIL, 0 },
	{ "MAIL FROM:<\"a\\\"b>\"@b.example>\r\n", SMTP_OK, SMTP_CMD_MAIL, 0 },
	{ "MAIL FROM:<\"unterminated@b.example>\r\n", SMTP_BAD, SMTP_CMD_MAIL, 501 },
	{ "MAIL FROM:<u@[192.0.2.1]>\r\n", SMTP_OK, SMTP_CMD_MAIL, 0 },
	{ "MAIL FROM:<u@[192.0.2.256]>\r\n", SMTP_BAD, SMTP_CMD_MAIL, 501 },
	{ "MAIL FROM:<u@[IPv6:2001:db8::1]>\r\n", SMTP_OK, SMTP_CMD_MAIL, 0 },
	{ "MAIL FROM:<u@[IPv6:2001:db8::g]>\r\n", SMTP_BAD, SMTP_CMD_MAIL, 501 },
	{ "MAIL FROM:<u@[x-tag:abc]>\r\n", SMTP_OK, SMTP_CMD_MAIL, 0 },
	{ "MAIL FROM:<u@[]>\r\n", SMTP_BAD, SMTP_CMD_MAIL, 501 },
	{ "MAIL FROM:<a..b@c.example>\r\n", SMTP_BAD, SMTP_CMD_MAIL, 501 },
	{ "MAIL FROM:<.a@c.example>\r\n", SMTP_BAD, SMTP_CMD_MAIL, 501 },
	{ "MAIL FROM:<a.@c.example>\r\n", SMTP_BAD, SMTP_CMD_MAIL, 501 },
	{ "MAIL FROM:<a@-c.example>\r\n", SMTP_BAD, SMTP_CMD_MAIL, 501 },
	{ "MAIL FROM:<a@c-.example>\r\n", SMTP_BAD, SMTP_CMD_MAIL, 501 },
	{ "MAIL FROM:<a@c..example>\r\n", SMTP_BAD, SMTP_CMD_MAIL, 501 },
	{ "MAIL FROM:<a@c.example.>\r\n", SMTP_BAD, SMTP_CMD_MAIL, 501 },
	{ "MAIL FROM:<a@>\r\n", SMTP_BAD, SMTP_CMD_MAIL, 501 },
	{ "MAIL FROM:<@c.example>\r\n", SMTP_BAD, SMTP_CMD_MAIL, 501 },
	{ "MAIL FROM:<postmaster>\r\n", SMTP_BAD, SMTP_CMD_MAIL, 501 },
	{ "MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME\r\n", SMTP_OK, SMTP_CMD_MAIL, 0 },
	{ "MAIL FROM:<a@b.example>  size=0  body=7bit \r\n", SMTP_OK, SMTP_CMD_MAIL, 0 },
	{ "MAIL FROM:<a@b.example> BODY=BINARYMIME\r\n", SMTP_OK, SMTP_CMD_MAIL, 0 },
	{ "MAIL FROM:<a@b.example> BODY=9BIT\r\n", SMTP_BAD, SMTP_CMD_MAIL, 501 },
	{ "MAIL FROM:<a@b.example> SIZE=\r\n", SMTP_BAD, SMTP_CMD_MAIL, 501 },
	{ "MAIL FROM:<a@b.example> SIZE=12x\r\n", SMTP_BAD, SMTP_CMD_MAIL, 501 },
	{ "MAIL FROM:<a@b.example> SIZE=99999999999999999999\r\n", SMTP_BAD, SMTP_CMD_MAIL, 552 },
	{ "MAIL FROM:<a@b.example> SIZE=999999999999999999999\r\n", SMTP_BAD, SMTP_CMD_MAIL, 501 },
	{ "MAIL FROM:<a@b.example> SIZE=52428801\r\n", SMTP_BAD, SMTP_CMD_MAIL, 552 },
	{ "MAIL FROM:<a@b.example> SIZE=52428800\r\n", SMTP_OK, SMTP_CMD_MAIL, 0 },
	{ "MAIL FROM:<a@b.example> SIZE=1 SIZE=2\r\n", SMTP_BAD, SMTP_CMD_MAIL, 501 },
	{ "MAIL FROM:<a@b.example> RET=HDRS ENVID=QQ+2Bx AUTH=<>\r\n", SMTP_OK, SMTP_CMD_MAIL, 0 },
	{ "MAIL FROM:<a@b.example> RET=ALL\r\n", SMTP_BAD, SMTP_CMD_MAIL, 501 },
	{ "MAIL FROM:<a@b.example> ENVID=a+zz\r\n", SMTP_BAD, SMTP_CMD_MAIL, 501 },
	{ "MAIL FROM:<a@b.example> ENVID=a+2\r\n", SMTP_BAD, SMTP_CMD_MAIL, 501 },
	{ "MAIL FROM:<a@b.example> AUTH=u+40b.example\r\n", SMTP_OK, SMTP_CMD_MAIL, 0 },
	{ "MAIL FROM:<a@b.example> XFOO=1\r\n", SMTP_BAD, SMTP_CMD_MAIL, 555 },
	{ "MAIL FROM:<a@b.example> NOTIFY=NEVER\r\n", SMTP_BAD, SMTP_CMD_MAIL, 555 },
	{ "MAIL FROM:<a@b.example> =1\r\n", SMTP_BAD, SMTP_CMD_MAIL, 501 },
	{ "MAIL FROM:<a@b.example> SMTPUTF8=yes\r\n", SMTP_BAD, SMTP_CMD_MAIL, 501 },
	{ "MAIL FROM:<j\xc3\xb6rg@b\xc3\xbc" "cher.example> SMTPUTF8\r\n", SMTP_OK, SMTP_CMD_MAIL, 0 },
	{ "MAIL FROM:<j\xc3\xb6rg@b.example>\r\n", SMTP_BAD, SMTP_CMD_MAIL, 553 },
	{ "MAIL FROM:<j\xc3rg@b.example> SMTPUTF8\r\n", SMTP_BAD, SMTP_CMD_MAIL, 501 },
	{ "MAIL FROM:<j\xc0\xafrg@b.example> SMTPUTF8\r\n", SMTP_BAD, SMTP_CMD_MAIL, 501 },
	{ "MAIL FROM:<j\xed\xa0\x80@b.example> SMTPUTF8\r\n", SMTP_BAD, SMTP_CMD_MAIL, 501 },
	{ "RCPT TO:<b@c.example>\r\n", SMTP_OK, SMTP_CMD_RCPT, 0 },
	{ "RCPT TO:<Postmaster>\r\n", SMTP_OK, SMTP_CMD_RCPT, 0 },
	{ "RCPT TO:<bob>\r\n", SMTP_BAD, SMTP_CMD_RCPT, 501 },
	{ "RCPT TO:<>\r\n", SMTP_BAD, SMTP_CMD_RCPT, 501 },
	{ "RCPT TO:<b@c.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+40c.example\r\n", SMTP_OK,
	  SMTP_CMD_RCPT, 0 },
	{ "RCPT TO:<b@c.example> NOTIFY=NEVER,DELAY\r\n", SMTP_BAD, SMTP_CMD_RCPT, 501 },
	{ "RCPT TO:<b@c.example> NOTIFY=SUCCESS,\r\n", SMTP_BAD, SMTP_CMD_RCPT, 501 },
	{ "RCPT TO:<b@c.example> ORCPT=rfc822\r\n", SMTP_BAD, SMTP_CMD_RCPT, 501 },
	{ "RCPT TO:<b@c.example> SIZE=10\r\n", SMTP_BAD, SMTP_CMD_RCPT, 555 },
	{ "RCPT TO:<\xc3\xbc@c.example>\r\n", SMTP_OK, SMTP_CMD_RCPT, 0 },
	{ "RCPT FROM:<b@c.example>\r\n", SMTP_BAD, SMTP_CMD_RCPT, 501 },
	{ "DATA\r\n", SMTP_OK, SMTP_CMD_DATA, 0 },
	{ "data  \r\n", SMTP_OK, SMTP_CMD_DATA, 0 },
	{ "DATA x\r\n", SMTP_BAD, SMTP_CMD_DATA, 501 },
	{ "BDAT 100\r\n", SMTP_OK, SMTP_CMD_BDAT, 0 },
	{ "BDAT 0 LAST\r\n", SMTP_OK, SMTP_CMD_BDAT, 0 },
	{ "bdat 5 last\r\n", SMTP_OK, SMTP_CMD_BDAT, 0 },
	{ "BDAT\r\n", SMTP_FATAL, SMTP_CMD_BDAT, 554 },
	{ "BDAT x\r\n", SMTP_FATAL, SMTP_CMD_BDAT, 554 },
	{ "BDAT 5LAST\r\n", SMTP_FATAL, SMTP_CMD_BDAT, 554 },
	{ "BDAT 5 FIRST\r\n", SMTP_FATAL, SMTP_CMD_BDAT, 554 },
	{ "BDAT 999999999999999999999\r\n", SMTP_FATAL, SMTP_CMD_BDAT, 554 },
	{ "BDAT 18446744073709551615\r\n", SMTP_OK, SMTP_CMD_BDAT, 0 },
	{ "BDAT 18446744073709551616\r\n", SMTP_FATAL, SMTP_CMD_BDAT, 554 },
	{ "RSET\r\n", SMTP_OK, SMTP_CMD_RSET, 0 },
	{ "RSET now\r\n", SMTP_BAD, SMTP_CMD_RSET, 501 },
	{ "NOOP\r\n", SMTP_OK, SMTP_CMD_NOOP, 0 },
	{ "NOOP anything\r\n", SMTP_OK, SMTP_CMD_NOOP, 0 },
	{ "QUIT\r\n", SMTP_OK, SMTP_CMD_QUIT, 0 },
	{ "VRFY bob\r\n", SMTP_OK, SMTP_CMD_VRFY, 0 },
	{ "VRFY\r\n", SMTP_BAD, SMTP_CMD_VRFY, 501 },
	{ "EXPN list\r\n", SMTP_OK, SMTP_CMD_EXPN, 0 },
	{ "HELP\r\n", SMTP_OK, SMTP_CMD_HELP, 0 },
	{ "HELP MAIL\r\n", SMTP_OK, SMTP_CMD_HELP, 0 },
	{ "STARTTLS\r\n", SMTP_OK, SMTP_CMD_STARTTLS, 0 },
	{ "STARTTLS x\r\n", SMTP_BAD, SMTP_CMD_STARTTLS, 501 },
	{ "AUTH PLAIN\r\n", SMTP_OK, SMTP_CMD_AUTH, 0 },
	{ "AUTH PLAIN AHVzZXIAcGFzcw==\r\n", SMTP_OK, SMTP_CMD_AUTH, 0 },
	{ "AUTH PLAIN =\r\n", SMTP_OK, SMTP_CMD_AUTH, 0 },
	{ "AUTH LOGIN\r\n", SMTP_OK, SMTP_CMD_AUTH, 0 },
	{ "AUTH\r\n", SMTP_BAD, SMTP_CMD_AUTH, 501 },
	{ "AUTH PL@IN\r\n", SMTP_BAD, SMTP_CMD_AUTH, 501 },
	{ "AUTH PLAIN a b\r\n", SMTP_BAD, SMTP_CMD_AUTH, 501 },
	{ "AUTH PLAIN a!b\r\n", SMTP_BAD, SMTP_CMD_AUTH, 501 },
	{ "XYZZY plugh\r\n", SMTP_OK, SMTP_CMD_UNKNOWN, 0 },
	{ "\r\n", SMTP_OK, SMTP_CMD_UNKNOWN, 0 },
	{ "MAILFROM:<a@b>\r\n", SMTP_OK, SMTP_CMD_UNKNOWN, 0 },
	{ "GET / HTTP/1.1\r\n", SMTP_FATAL, SMTP_CMD_UNKNOWN, 554 },
	{ "POST /x HTTP/1.0\r\n", SMTP_FATAL, SMTP_CMD_UNKNOWN, 554 },
	{ "NOOP a\rb\r\n", SMTP_BAD, SMTP_CMD_UNKNOWN, 500 },
	{ "NOOP a\r\r\n", SMTP_BAD, SMTP_CMD_UNKNOWN, 500 },
	{ "NOOP a\x1b\r\n", SMTP_BAD, SMTP_CMD_UNKNOWN, 500 },
	{ "NOOP\ta\r\n", SMTP_OK, SMTP_CMD_UNKNOWN, 0 },
	{ "EHLO x", SMTP_MORE, SMTP_CMD_UNKNOWN, 0 },
	{ "EHLO x\r", SMTP_MORE, SMTP_CMD_UNKNOWN, 0 },
	{ "", SMTP_MORE, SMTP_CMD_UNKNOWN, 0 },
};

static void test_command_table(void)
{
	for (size_t i = 0; i < ARRAY_LEN(cmd_cases); i++) {
		const struct cmd_case *t = &cmd_cases[i];
		struct smtp_command c;
		size_t used;
		/* lines containing NUL: strlen stops early, so use the literal
		 * length; all cases end in "\n" or are MORE */
		size_t len = strlen(t->line);
		enum smtp_result r = parse_n(t->line, len, &c, &used);
		bool ok = r == t->res && (r == SMTP_MORE || r == SMTP_FATAL || c.verb == t->verb ||
					  t->res == SMTP_BAD) &&
			  ((r != SMTP_BAD && r != SMTP_FATAL) || c.reply_code == t->code);
		if (r == SMTP_OK)
			ok = ok && c.verb == t->verb && used == len &&
			     c.flags == smtp_verb_flags(t->verb);
		if (r == SMTP_BAD)
			ok = ok && used == len && c.error && c.enh;
		if (!ok) {
			fprintf(stderr, "case %zu [%s]: r=%d verb=%s code=%d err=%s\n", i, t->line,
				(int)r, smtp_verb_str(c.verb), c.reply_code,
				c.error ? c.error : "-");
			CHECK(!"command case");
		}
	}
}

static void test_command_fields(void)
{
	struct smtp_command c;
	size_t used;
	CHECK(parse_n("NOOP a\0b\r\n", 10, &c, &used) == SMTP_BAD && used == 10 &&
	      c.reply_code == 500);
	CHECK(parse1("EHLO  mx.example  \r\n", &c) == SMTP_OK && view_eq_cstr(c.arg, "mx.example"));
	CHECK(parse1("HELO x\n", &c) == SMTP_OK && c.bare_lf);
	CHECK(parse1("MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME\r\n", &c) == SMTP_OK &&
	      c.has_size && c.size == 1000 && c.body == SMTP_BODY_8BITMIME &&
	      view_eq_cstr(c.path.mailbox, "a@b.example") && view_eq_cstr(c.path.local, "a") &&
	      view_eq_cstr(c.path.domain, "b.example") && !c.path.null);
	CHECK(parse1("MAIL FROM:<>\r\n", &c) == SMTP_OK && c.path.null && c.path.mailbox.len == 0);
	CHECK(parse1("MAIL FROM:<@a.example,@b.example:u@c.example>\r\n", &c) == SMTP_OK &&
	      c.path.source_route && view_eq_cstr(c.path.mailbox, "u@c.example"));
	CHECK(parse1("MAIL FROM:<\"john doe\"@b.example>\r\n", &c) == SMTP_OK && c.path.quoted &&
	      view_eq_cstr(c.path.local, "\"john doe\""));
	CHECK(parse1("MAIL FROM:<u@[IPv6:2001:db8::1]>\r\n", &c) == SMTP_OK && c.path.addr_literal &&
	      view_eq_cstr(c.path.domain, "[IPv6:2001:db8::1]"));
	CHECK(parse1("MAIL FROM:<a@b.example> RET=HDRS ENVID=QQ+2Bx AUTH=<>\r\n", &c) == SMTP_OK &&
	      c.ret == SMTP_RET_HDRS && view_eq_cstr(c.envid, "QQ+2Bx") && c.has_auth_param &&
	      view_eq_cstr(c.auth_param, "<>"));
	CHECK(parse1("MAIL FROM:<j\xc3\xb6rg@b.example> SMTPUTF8\r\n", &c) == SMTP_OK && c.smtputf8 &&
	      c.path.utf8);
	CHECK(parse1("MAIL FROM:<a@b.example> XFOO=1\r\n", &c) == SMTP_BAD &&
	      view_eq_cstr(c.unknown_param, "XFOO") && strcmp(c.enh, "5.5.4") == 0);
	CHECK(parse1("RCPT TO:<Postmaster>\r\n", &c) == SMTP_OK && c.path.postmaster);
	CHECK(parse1("RCPT TO:<b@c.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+40c.example\r\n",
		     &c) == SMTP_OK &&
	      c.notify == (SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE) &&
	      view_eq_cstr(c.orcpt, "rfc822;b+40c.example"));
	CHECK(parse1("RCPT TO:<b@c.example> NOTIFY=NEVER\r\n", &c) == SMTP_OK &&
	      c.notify == SMTP_NOTIFY_NEVER);
	CHECK(parse1("RCPT TO:<\xc3\xbc@c.example>\r\n", &c) == SMTP_OK && c.path.utf8);
	CHECK(parse1("BDAT 5 last\r\n", &c) == SMTP_OK && c.bdat_size == 5 && c.bdat_last);
	CHECK(parse1("BDAT 18446744073709551615\r\n", &c) == SMTP_OK &&
	      c.bdat_size == UINT64_MAX && !c.bdat_last);
	CHECK(parse1("AUTH plain AHVzZXIAcGFzcw==\r\n", &c) == SMTP_OK &&
	      view_eq_cstr(c.auth_mech, "plain") && c.has_initial &&
	      view_eq_cstr(c.auth_initial, "AHVzZXIAcGFzcw=="));
	CHECK(parse1("AUTH LOGIN\r\n", &c) == SMTP_OK && !c.has_initial);
	CHECK(parse1("XYZZY plugh\r\n", &c) == SMTP_OK && view_eq_cstr(c.keyword, "XYZZY") &&
	      view_eq_cstr(c.arg, "plugh"));

	/* flags */
	CHECK(smtp_verb_flags(SMTP_CMD_EHLO) & SMTP_F_SYNC);
	CHECK(smtp_verb_flags(SMTP_CMD_STARTTLS) & SMTP_F_SYNC);
	CHECK(smtp_verb_flags(SMTP_CMD_DATA) & SMTP_F_SYNC);
	CHECK(smtp_verb_flags(SMTP_CMD_AUTH) & SMTP_F_SYNC);
	CHECK(smtp_verb_flags(SMTP_CMD_QUIT) & SMTP_F_SYNC);
	CHECK(!(smtp_verb_flags(SMTP_CMD_MAIL) & SMTP_F_SYNC));
	CHECK(!(smtp_verb_flags(SMTP_CMD_RCPT) & SMTP_F_SYNC));
	CHECK(!(smtp_verb_flags(SMTP_CMD_BDAT) & SMTP_F_SYNC));
	CHECK(!(smtp_verb_flags(SMTP_CMD_MAIL) & SMTP_F_PRE_TLS));
	CHECK(!(smtp_verb_flags(SMTP_CMD_AUTH) & SMTP_F_PRE_TLS));
	CHECK(smtp_verb_flags(SMTP_CMD_AUTH) & SMTP_F_PRE_AUTH);
	CHECK(!(smtp_verb_flags(SMTP_CMD_MAIL) & SMTP_F_PRE_AUTH));
	CHECK(smtp_verb_flags(SMTP_CMD_UNKNOWN) == 0);
	CHECK(strcmp(smtp_verb_str(SMTP_CMD_STARTTLS), "STARTTLS") == 0);
}

/* ---- limits ----------------------------------------------------------------------- */

static char *mkline(const char *head, size_t fill, char ch, const char *tail)
{
	size_t hl = strlen(head), tl = strlen(tail);
	char *s = xmalloc(hl + fill + tl + 1);
	memcpy(s, head, hl);
	memset(s + hl, ch, fill);
	memcpy(s + hl + fill, tail, tl + 1);
	return s;
}

static void test_limits(void)
{
	struct smtp_command c;
	size_t used;
	/* 512 with CRLF is fine, 513 is not */
	char *s = mkline("NOOP ", 512 - 7, 'x', "\r\n");
	CHECK(strlen(s) == 512 && parse1(s, &c) == SMTP_OK);
	free(s);
	s = mkline("NOOP ", 513 - 7, 'x', "\r\n");
	CHECK(parse1(s, &c) == SMTP_BAD && c.line_too_long && !c.line_open && c.reply_code == 500);
	free(s);
	/* no LF yet: MORE below the limit, BAD with line_open at it */
	s = mkline("NOOP ", 511 - 5, 'x', "");
	CHECK(parse_n(s, strlen(s), &c, &used) == SMTP_MORE && used == 0);
	free(s);
	s = mkline("NOOP ", 512 - 5, 'x', "");
	CHECK(parse_n(s, strlen(s), &c, &used) == SMTP_BAD && c.line_open && used == 512);
	free(s);
	/* AUTH gets 12288 */
	s = mkline("AUTH PLAIN ", 12288 - 13, 'A', "\r\n");
	CHECK(strlen(s) == 12288 && parse1(s, &c) == SMTP_OK && c.verb == SMTP_CMD_AUTH);
	free(s);
	s = mkline("AUTH PLAIN ", 12289 - 13, 'A', "\r\n");
	CHECK(parse1(s, &c) == SMTP_BAD && c.line_too_long);
	free(s);
	s = mkline("NOOP ", 1000, 'A', "\r\nQUIT\r\n");
	CHECK(parse_n(s, strlen(s), &c, &used) == SMTP_BAD && c.line_too_long && !c.line_open &&
	      used == strlen(s) - 6);
	free(s);

	/* local part 64 / 65 */
	s = mkline("MAIL FROM:<", 64, 'l', "@d.example>\r\n");
	CHECK(parse1(s, &c) == SMTP_OK);
	free(s);
	s = mkline("MAIL FROM:<", 65, 'l', "@d.example>\r\n");
	CHECK(parse1(s, &c) == SMTP_BAD && c.reply_code == 501);
	free(s);
	/* domain: 255 octets in 63-octet labels; path 256 with brackets */
	char dom[300];
	size_t dl = 0;
	while (dl + 64 <= 255) {
		memset(dom + dl, 'd', 63);
		dom[dl + 63] = '.';
		dl += 64;
	}
	size_t rest = 255 - dl; /* 255 - 192 = 63 */
	memset(dom + dl, 'e', rest);
	dl += rest;
	dom[dl] = 0;
	CHECK(dl == 255);
	char line[600];
	snprintf(line, sizeof(line), "RCPT TO:<@%s:a@%s>\r\n", "r.example", dom);
	CHECK(parse1(line, &c) == SMTP_BAD); /* path > 256 */
	/* domain 252 + "a@" + brackets = 256 */
	dom[252] = 0;
	dom[251] = 'e';
	snprintf(line, sizeof(line), "RCPT TO:<a@%s>\r\n", dom);
	CHECK(parse1(line, &c) == SMTP_OK);
	dom[252] = 'e';
	dom[253] = 0;
	snprintf(line, sizeof(line), "RCPT TO:<a@%s>\r\n", dom);
	CHECK(parse1(line, &c) == SMTP_BAD);
	/* a label of 64 */
	s = mkline("RCPT TO:<a@", 64, 'x', ".example>\r\n");
	CHECK(parse1(s, &c) == SMTP_BAD);
	free(s);

	/* smaller limits, SMTPUTF8 not advertised, no size limit */
	struct smtp_limits save = lim;
	lim.smtputf8 = false;
	lim.max_size = 0;
	lim.max_line = 0; /* raised to the RFC minimum */
	lim.max_auth_line = 0;
	s = mkline("NOOP ", 512 - 7, 'x', "\r\n");
	CHECK(parse1(s, &c) == SMTP_OK);
	free(s);
	s = mkline("AUTH PLAIN ", 513 - 13, 'A', "\r\n");
	CHECK(parse1(s, &c) == SMTP_BAD && c.line_too_long);
	free(s);
	CHECK(parse_n("", 0, &c, &used) == SMTP_MORE);
	CHECK(parse1("MAIL FROM:<j\xc3\xb6rg@b.example> SMTPUTF8\r\n", &c) == SMTP_BAD);
	CHECK(parse1("MAIL FROM:<a@b.example> SMTPUTF8\r\n", &c) == SMTP_BAD && c.reply_code == 555);
	CHECK(parse1("RCPT TO:<\xc3\xbc@c.example>\r\n", &c) == SMTP_BAD);
	CHECK(parse1("MAIL FROM:<a@b.example> SIZE=18446744073709551615\r\n", &c) == SMTP_OK &&
	      c.size == UINT64_MAX);
	lim = save;

	/* skip_line */
	bool done;
	CHECK(smtp_skip_line((const uint8_t *)"abc", 3, &done) == 3 && !done);
	CHECK(smtp_skip_line((const uint8_t *)"ab\ncd", 5, &done) == 3 && done);

	/* raw SASL lines */
	CHECK(smtp_parse_raw_line((const uint8_t *)"dXNlcg==\r\n", 10, &lim, &c, &used) ==
		      SMTP_OK &&
	      used == 10 && view_eq_cstr(c.arg, "dXNlcg=="));
	CHECK(smtp_parse_raw_line((const uint8_t *)"dXNl", 4, &lim, &c, &used) == SMTP_MORE);
	CHECK(smtp_parse_raw_line((const uint8_t *)"a\0\r\n", 4, &lim, &c, &used) == SMTP_BAD &&
	      used == 4);
}

/* ---- command streams ------------------------------------------------------------------ */

static void log_result(struct buf *log, enum smtp_result r, const struct smtp_command *c)
{
	if (r == SMTP_BAD || r == SMTP_FATAL) {
		buf_printf(log, "%s %d %s %s%s\n", r == SMTP_BAD ? "BAD" : "FATAL", c->reply_code,
			   c->enh, c->error, c->line_too_long ? " long" : "");
		return;
	}
	buf_printf(log, "OK %s arg=[%.*s] mb=[%.*s] size=%llu bdat=%llu%s%s\n",
		   smtp_verb_str(c->verb), (int)c->arg.len, (const char *)c->arg.ptr,
		   (int)c->path.mailbox.len, (const char *)c->path.mailbox.ptr,
		   (unsigned long long)c->size, (unsigned long long)c->bdat_size,
		   c->bdat_last ? " last" : "", c->bare_lf ? " lf" : "");
}

static int out_buf(void *ctx, const uint8_t *p, size_t len)
{
	return buf_append(ctx, p, len);
}

/* Feeds `data` in chunks ending at cuts[], as a session does: unconsumed
 * bytes are kept, over-long lines skipped, DATA bodies unstuffed and BDAT
 * chunks counted; everything is logged. */
static void drive(const uint8_t *data, size_t size, const size_t *cuts, size_t ncuts,
		  struct buf *log)
{
	struct buf in, body;
	buf_init(&in, 0);
	buf_init(&body, 0);
	enum { M_CMD, M_SKIP, M_DATA, M_BDAT, M_DEAD } mode = M_CMD;
	struct smtp_data d;
	struct smtp_bdat b;
	smtp_bdat_init(&b, 1000);
	size_t off = 0;
	for (size_t k = 0; k <= ncuts; k++) {
		size_t end = k < ncuts ? cuts[k] : size;
		if (end < off)
			continue;
		buf_append(&in, data + off, end - off);
		off = end;
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
				if (smtp_data_feed(&d, copy, in.len, &used, out_buf, &body) == 1) {
					const char *enh, *text;
					int code = smtp_data_status(&d, &enh, &text);
					buf_printf(log, "BODY %d lf=%llu [%.*s]\n", code,
						   (unsigned long long)d.bare_lf, (int)body.len,
						   (const char *)body.data);
					buf_reset(&body);
					mode = M_CMD;
				}
				CHECK(used > 0);
			} else if (mode == M_BDAT) {
				used = smtp_bdat_take(&b, in.len);
				buf_append(&body, copy, used);
				if (smtp_bdat_chunk_done(&b)) {
					buf_printf(log, "CHUNK [%.*s]%s%s\n", (int)body.len,
						   (const char *)body.data, b.last ? " last" : "",
						   b.too_big ? " big" : "");
					buf_reset(&body);
					mode = M_CMD;
				}
			} else {
				struct smtp_command cmd;
				enum smtp_result r = smtp_parse_command(copy, in.len, &lim, &cmd, &used);
				if (r == SMTP_MORE) {
					CHECK(used == 0);
					stop = true;
				} else {
					CHECK(used > 0 && used <= in.len);
					log_result(log, r, &cmd);
					if (r == SMTP_FATAL)
						mode = M_DEAD;
					else if (r == SMTP_BAD && cmd.line_open)
						mode = M_SKIP;
					else if (r == SMTP_OK && cmd.verb == SMTP_CMD_DATA) {
						smtp_data_init(&d, 1000, SMTP_LF_ACCEPT);
						mode = M_DATA;
					} else if (r == SMTP_OK && cmd.verb == SMTP_CMD_BDAT) {
						smtp_bdat_begin(&b, cmd.bdat_size, cmd.bdat_last);
						if (cmd.bdat_size == 0)
							buf_printf(log, "CHUNK []%s\n",
								   cmd.bdat_last ? " last" : "");
						else
							mode = M_BDAT;
					}
				}
			}
			free(copy);
			buf_consume(&in, used);
			if (stop)
				break;
		}
	}
	buf_printf(log, "rest=%zu mode=%d\n", in.len, (int)mode);
	buf_cleanup(&in);
	buf_cleanup(&body);
}

static bool same(const struct buf *a, const struct buf *b)
{
	return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

static void check_splits(const char *what, const char *text, size_t size, const char *expect)
{
	const uint8_t *data = (const uint8_t *)text;
	struct buf whole, other;
	buf_init(&whole, 0);
	buf_init(&other, 0);
	drive(data, size, NULL, 0, &whole);
	if (expect && (whole.len != strlen(expect) || memcmp(whole.data, expect, whole.len) != 0)) {
		fprintf(stderr, "%s: got:\n%.*s---expected:\n%s", what, (int)whole.len,
			(const char *)whole.data, expect);
		CHECK(!"stream result");
	}
	for (size_t cut = 0; cut <= size; cut++) {
		buf_reset(&other);
		drive(data, size, &cut, 1, &other);
		if (!same(&whole, &other)) {
			fprintf(stderr, "%s: split at %zu differs:\n%.*s---\n%.*s", what, cut,
				(int)whole.len, (const char *)whole.data, (int)other.len,
				(const char *)other.data);
			CHECK(!"split result differs");
			break;
		}
	}
	size_t *cuts = xmalloc((size + 1) * sizeof(*cuts));
	for (size_t i = 0; i <= size; i++)
		cuts[i] = i;
	buf_reset(&other);
	drive(data, size, cuts, size + 1, &other);
	CHECK(same(&whole, &other));
	free(cuts);
	buf_cleanup(&whole);
	buf_cleanup(&other);
}

static void test_streams(void)
{
	static const char s1[] = "EHLO c.example\r\n"
				 "MAIL FROM:<a@b.example> SIZE=10\r\n"
				 "RCPT TO:<x@y.example>\r\n"
				 "RCPT TO:<bad>\r\n"
				 "DATA\r\n"
				 "Subject: hi\r\n\r\n..dot\r\n.\r\nQUIT\r\n";
	check_splits("pipelined", s1, sizeof(s1) - 1,
		     "OK EHLO arg=[c.example] mb=[] size=0 bdat=0\n"
		     "OK MAIL arg=[] mb=[a@b.example] size=10 bdat=0\n"
		     "OK RCPT arg=[] mb=[x@y.example] size=0 bdat=0\n"
		     "BAD 501 5.1.3 Bad recipient address syntax\n"
		     "OK DATA arg=[] mb=[] size=0 bdat=0\n"
		     "BODY 250 lf=0 [Subject: hi\r\n\r\n.dot\r\n]\n"
		     "OK QUIT arg=[] mb=[] size=0 bdat=0\n"
		     "rest=0 mode=0\n");

	static const char s2[] = "MAIL FROM:<a@b.example>\r\nBDAT 5\r\n12345BDAT 3 LAST\r\nabcRSET\r\n";
	check_splits("bdat", s2, sizeof(s2) - 1,
		     "OK MAIL arg=[] mb=[a@b.example] size=0 bdat=0\n"
		     "OK BDAT arg=[] mb=[] size=0 bdat=5\n"
		     "CHUNK [12345]\n"
		     "OK BDAT arg=[] mb=[] size=0 bdat=3 last\n"
		     "CHUNK [abc] last\n"
		     "OK RSET arg=[] mb=[] size=0 bdat=0\n"
		     "rest=0 mode=0\n");

	/* an over-long line is skipped wherever it is split */
	char *longl = mkline("NOOP ", 700, 'z', "\r\nNOOP ok\r\n");
	check_splits("long line", longl, strlen(longl),
		     "BAD 500 5.5.2 Line too long long\n"
		     "OK NOOP arg=[ok] mb=[] size=0 bdat=0\n"
		     "rest=0 mode=0\n");
	free(longl);

	static const char s3[] = "STARTTLS\r\nEHLO evil\r\nGET / HTTP/1.1\r\nNOOP\r\n";
	check_splits("fatal", s3, sizeof(s3) - 1,
		     "OK STARTTLS arg=[] mb=[] size=0 bdat=0\n"
		     "OK EHLO arg=[evil] mb=[] size=0 bdat=0\n"
		     "FATAL 554 5.7.0 HTTP is not spoken here\n"
		     "rest=6 mode=4\n");

	static const char s4[] = "HELO a\nDATA\n.\nx\r\n.\n\r\n.\r\nQUIT\n";
	check_splits("bare lf", s4, sizeof(s4) - 1,
		     "OK HELO arg=[a] mb=[] size=0 bdat=0 lf\n"
		     "OK DATA arg=[] mb=[] size=0 bdat=0 lf\n"
		     "BODY 250 lf=2 [\nx\r\n\n\r\n]\n"
		     "OK QUIT arg=[] mb=[] size=0 bdat=0 lf\n"
		     "rest=0 mode=0\n");
}

/* ---- DATA ----------------------------------------------------------------------------------- */

struct data_case {
	const char *in;     /* body as sent after "DATA\r\n", terminator included */
	size_t in_len;      /* 0: strlen */
	enum smtp_lf_policy policy;
	uint64_t max;
	const char *out;    /* expected message */
	size_t out_len;     /* 0: strlen */
	size_t consumed;    /* 0: all of in */
	int status;
	uint64_t bare_lf, bare_cr, nul;
};

#define A SMTP_LF_ACCEPT
#define N SMTP_LF_NORMALIZE
#define R SMTP_LF_REJECT

static const struct data_case data_cases[] = {
	{ ".\r\n", 0, A, 0, "", 0, 0, 250, 0, 0, 0 },
	{ "a\r\n.\r\n", 0, A, 0, "a\r\n", 0, 0, 250, 0, 0, 0 },
	{ "..\r\n.\r\n", 0, A, 0, ".\r\n", 0, 0, 250, 0, 0, 0 },
	{ "..a\r\n...\r\n.\r\n", 0, A, 0, ".a\r\n..\r\n", 0, 0, 250, 0, 0, 0 },
	{ "a.\r\n.b\r\n.\r\n", 0, A, 0, "a.\r\nb\r\n", 0, 0, 250, 0, 0, 0 },
	{ "x .\r\ny\r\n.\r\n", 0, A, 0, "x .\r\ny\r\n", 0, 0, 250, 0, 0, 0 },
	{ "a\r\n.\r\nMAIL", 0, A, 0, "a\r\n", 0, 6, 250, 0, 0, 0 },
	/* LF.LF and friends never end the message */
	{ "a\n.\nb\r\n.\r\n", 0, A, 0, "a\n.\nb\r\n", 0, 0, 250, 2, 0, 0 },
	{ "a\n.\r\nb\r\n.\r\n", 0, A, 0, "a\n.\r\nb\r\n", 0, 0, 250, 1, 0, 0 },
	{ "a\r\n.\nb\r\n.\r\n", 0, A, 0, "a\r\n\nb\r\n", 0, 0, 250, 1, 0, 0 },
	{ "a\r.\r\nb\r\n.\r\n", 0, A, 0, "a\r.\r\nb\r\n", 0, 0, 250, 0, 1, 0 },
	{ "a\r\n.\rb\r\n.\r\n", 0, A, 0, "a\r\n\rb\r\n", 0, 0, 250, 0, 1, 0 },
	{ "a\r\n.\r\rb\r\n.\r\n", 0, A, 0, "a\r\n\r\rb\r\n", 0, 0, 250, 0, 2, 0 },
	{ "a\r\r\n.\r\n", 0, A, 0, "a\r\r\n", 0, 0, 250, 0, 1, 0 },
	{ "\n.\n", 0, A, 0, "\n.\n", 0, 0, 0, 2, 0, 0 }, /* not ended */
	/* bare LF policies */
	{ "a\nb\r\n.\r\n", 0, N, 0, "a\r\nb\r\n", 0, 0, 250, 1, 0, 0 },
	{ "a\n.\nb\r\n.\r\n", 0, N, 0, "a\r\n.\r\nb\r\n", 0, 0, 250, 2, 0, 0 },
	{ "a\nb\r\n.\r\n", 0, R, 0, "a\nb\r\n", 0, 0, 550, 1, 0, 0 },
	{ "ab\r\n.\r\n", 0, R, 0, "ab\r\n", 0, 0, 250, 0, 0, 0 },
	/* bare CR under the same policies */
	{ "a\rb\r\n.\r\n", 0, R, 0, "a\rb\r\n", 0, 0, 550, 0, 1, 0 },
	{ "a\rb\r\n.\r\n", 0, N, 0, "a\r\nb\r\n", 0, 0, 250, 0, 1, 0 },
	{ "a\r\r\n.\r\n", 0, N, 0, "a\r\n\r\n", 0, 0, 250, 0, 1, 0 },
	{ "a\r.\r\nb\r\n.\r\n", 0, N, 0, "a\r\n.\r\nb\r\n", 0, 0, 250, 0, 1, 0 },
	{ "a\r\n.\rb\r\n.\r\n", 0, N, 0, "a\r\n\r\nb\r\n", 0, 0, 250, 0, 1, 0 },
	{ "a\r.\r.\r\n.\r\n", 0, R, 0, "a\r.\r.\r\n", 0, 0, 550, 0, 2, 0 },
	{ "a\n.\r\n.\r\n", 0, R, 0, "a\n.\r\n", 0, 0, 550, 1, 0, 0 },
	/* NUL */
	{ "a\0b\r\n.\r\n", 8, A, 0, "a\0b\r\n", 5, 0, 250, 0, 0, 1 },
	/* SIZE: exactly at the limit, over it */
	{ "1234\r\n.\r\n", 0, A, 6, "1234\r\n", 0, 0, 250, 0, 0, 0 },
	{ "12345\r\n.\r\n", 0, A, 6, NULL, 0, 0, 552, 0, 0, 0 },
	{ "..34\r\n.\r\n", 0, A, 5, ".34\r\n", 0, 0, 250, 0, 0, 0 }, /* 5 after unstuffing */
	/* empty lines, many dots */
	{ "\r\n\r\n.\r\n", 0, A, 0, "\r\n\r\n", 0, 0, 250, 0, 0, 0 },
	{ "....\r\n.\r\n", 0, A, 0, "...\r\n", 0, 0, 250, 0, 0, 0 },
	{ ".\r\n.\r\n", 0, A, 0, "", 0, 3, 250, 0, 0, 0 },
};

struct data_run {
	struct buf out;
	int rc;
	size_t consumed;
	struct smtp_data d;
};

static void data_run(const struct data_case *t, const size_t *cuts, size_t ncuts,
		     struct data_run *r)
{
	size_t len = t->in_len ? t->in_len : strlen(t->in);
	buf_init(&r->out, 0);
	smtp_data_init(&r->d, t->max, t->policy);
	r->rc = 0;
	r->consumed = 0;
	size_t off = 0;
	for (size_t k = 0; k <= ncuts && r->rc == 0; k++) {
		size_t end = k < ncuts ? cuts[k] : len;
		if (end < off)
			continue;
		uint8_t *copy = xmalloc(end - off + 1);
		memcpy(copy, t->in + off, end - off);
		size_t used;
		r->rc = smtp_data_feed(&r->d, copy, end - off, &used, out_buf, &r->out);
		CHECK(used <= end - off);
		if (r->rc == 0)
			CHECK(used == end - off);
		r->consumed += used;
		free(copy);
		off = end;
	}
}

static void data_expect(size_t idx, const char *how, const struct data_case *t,
			struct data_run *r)
{
	size_t len = t->in_len ? t->in_len : strlen(t->in);
	size_t want_used = t->consumed ? t->consumed : len;
	const char *enh, *text;
	int status = r->rc == 1 ? smtp_data_status(&r->d, &enh, &text) : 0;
	bool ok = status == t->status && r->d.bare_lf == t->bare_lf && r->d.bare_cr == t->bare_cr &&
		  r->d.nul == t->nul;
	if (r->rc == 1)
		ok = ok && r->consumed == want_used;
	if (t->out) {
		size_t ol = t->out_len ? t->out_len : strlen(t->out);
		ok = ok && r->out.len == ol && (ol == 0 || memcmp(r->out.data, t->out, ol) == 0) &&
		     r->d.size == ol;
	} else {
		ok = ok && r->d.too_big;
	}
	if (!ok) {
		fprintf(stderr, "data case %zu (%s): rc=%d status=%d used=%zu out=[%.*s] lf=%llu cr=%llu\n",
			idx, how, r->rc, status, r->consumed, (int)r->out.len,
			(const char *)r->out.data, (unsigned long long)r->d.bare_lf,
			(unsigned long long)r->d.bare_cr);
		CHECK(!"data case");
	}
	buf_cleanup(&r->out);
}

static int out_fail(void *ctx, const uint8_t *p, size_t len)
{
	UNUSED(ctx);
	UNUSED(p);
	UNUSED(len);
	return -1;
}

static void test_data(void)
{
	for (size_t i = 0; i < ARRAY_LEN(data_cases); i++) {
		const struct data_case *t = &data_cases[i];
		size_t len = t->in_len ? t->in_len : strlen(t->in);
		struct data_run r;
		data_run(t, NULL, 0, &r);
		data_expect(i, "whole", t, &r);
		/* every pair of cut points (includes every single cut) */
		for (size_t a = 0; a <= len; a++) {
			for (size_t b = a; b <= len; b++) {
				size_t cuts[2] = { a, b };
				data_run(t, cuts, 2, &r);
				data_expect(i, "split", t, &r);
			}
		}
		size_t *cuts = xmalloc((len + 1) * sizeof(*cuts));
		for (size_t k = 0; k <= len; k++)
			cuts[k] = k;
		data_run(t, cuts, len + 1, &r);
		data_expect(i, "bytes", t, &r);
		free(cuts);
		/* guard page, whole */
		struct smtp_data d;
		smtp_data_init(&d, t->max, t->policy);
		struct buf o;
		buf_init(&o, 0);
		size_t used;
		int rc = smtp_data_feed(&d, at_guard(t->in, len), len, &used, out_buf, &o);
		CHECK(rc == (t->status != 0));
		buf_cleanup(&o);
	}

	/* a long message with dots everywhere, split at every offset */
	struct buf msg, want;
	buf_init(&msg, 0);
	buf_init(&want, 0);
	for (int i = 0; i < 40; i++) {
		buf_printf(&msg, "%s%d\r\n", i % 3 == 0 ? ".." : (i % 3 == 1 ? "." : ""), i);
		buf_printf(&want, "%s%d\r\n", i % 3 == 0 ? "." : "", i);
	}
	buf_printf(&msg, ".\r\nQUIT\r\n");
	for (size_t cut = 0; cut <= msg.len; cut++) {
		struct smtp_data d;
		smtp_data_init(&d, 0, SMTP_LF_ACCEPT);
		struct buf o;
		buf_init(&o, 0);
		size_t u1 = 0, u2 = 0;
		int rc = smtp_data_feed(&d, msg.data, cut, &u1, out_buf, &o);
		if (rc == 0)
			rc = smtp_data_feed(&d, msg.data + cut, msg.len - cut, &u2, out_buf, &o);
		CHECK(rc == 1 && u1 + u2 == msg.len - 6 && same(&o, &want));
		buf_cleanup(&o);
	}
	buf_cleanup(&msg);
	buf_cleanup(&want);

	/* done is sticky; output failure is reported after the end */
	struct smtp_data d;
	smtp_data_init(&d, 0, SMTP_LF_ACCEPT);
	size_t used;
	CHECK(smtp_data_feed(&d, (const uint8_t *)"abc\r\n.\r\n", 8, &used, out_fail, NULL) == 1);
	const char *enh, *text;
	CHECK(d.out_failed && smtp_data_status(&d, &enh, &text) == 451);
	CHECK(smtp_data_feed(&d, (const uint8_t *)"x", 1, &used, out_fail, NULL) == 1 && used == 0);
}

/* ---- BDAT, SASL, replies ---------------------------------------------------------------------- */

static void test_bdat(void)
{
	struct smtp_bdat b;
	smtp_bdat_init(&b, 10);
	CHECK(smtp_bdat_begin(&b, 6, false));
	CHECK(smtp_bdat_take(&b, 4) == 4 && !smtp_bdat_chunk_done(&b));
	CHECK(smtp_bdat_take(&b, 100) == 2 && smtp_bdat_chunk_done(&b));
	CHECK(smtp_bdat_take(&b, 100) == 0);
	CHECK(!smtp_bdat_begin(&b, 5, true) && b.too_big && b.last && b.remaining == 5);
	smtp_bdat_init(&b, 0);
	CHECK(smtp_bdat_begin(&b, UINT64_MAX, false) && smtp_bdat_begin(&b, 5, true) &&
	      b.total == UINT64_MAX);
}

static void test_sasl(void)
{
	uint8_t out[600];
	struct smtp_sasl_plain p;
	const char *err;
	/* "\0user\0pass" */
	CHECK(smtp_sasl_plain_decode(view_cstr("AHVzZXIAcGFzcw=="), out, sizeof(out), &p, &err) ==
		      0 &&
	      p.authzid.len == 0 && view_eq_cstr(p.authcid, "user") && view_eq_cstr(p.passwd, "pass"));
	/* "az\0u\0p" */
	CHECK(smtp_sasl_plain_decode(view_cstr("YXoAdQBw"), out, sizeof(out), &p, &err) == 0 &&
	      view_eq_cstr(p.authzid, "az") && view_eq_cstr(p.authcid, "u") &&
	      view_eq_cstr(p.passwd, "p"));
	/* "u\0p" (one NUL), "\0u\0p\0" (three), "\0\0p" (empty authcid) */
	CHECK(smtp_sasl_plain_decode(view_cstr("dQBw"), out, sizeof(out), &p, &err) == -1);
	out[0] = 0x55;
	CHECK(smtp_sasl_plain_decode(view_cstr("AHUAcAA="), out, sizeof(out), &p, &err) == -1 &&
	      out[0] == 0 && out[1] == 0);
	CHECK(smtp_sasl_plain_decode(view_cstr("AABw"), out, sizeof(out), &p, &err) == -1);
	CHECK(smtp_sasl_plain_decode(view_cstr("="), out, sizeof(out), &p, &err) == -1);
	CHECK(smtp_sasl_plain_decode(view_cstr("AHVzZXIAcGFzcw="), out, sizeof(out), &p, &err) == -1);
	CHECK(smtp_sasl_plain_decode(view_cstr("AHVzZXIAcGFzcw=="), out, 5, &p, &err) == -1);
	/* base64 strictness */
	size_t n;
	CHECK(smtp_base64_decode(view_cstr("QQ=="), out, 10, &n) == 0 && n == 1 && out[0] == 'A');
	CHECK(smtp_base64_decode(view_cstr("QR=="), out, 10, &n) == -1); /* pad bits */
	CHECK(smtp_base64_decode(view_cstr("Q==="), out, 10, &n) == -1);
	CHECK(smtp_base64_decode(view_cstr("QQ==QQ=="), out, 10, &n) == -1);
	CHECK(smtp_base64_decode(view_cstr("Q=Q="), out, 10, &n) == -1);
	CHECK(smtp_base64_decode(view_cstr("QUJD"), out, 3, &n) == 0 && n == 3);
	CHECK(smtp_base64_decode(view_cstr("QUJD"), out, 2, &n) == -1);
	CHECK(smtp_base64_decode(view_cstr(""), out, 2, &n) == 0 && n == 0);
	/* LOGIN */
	struct view v;
	CHECK(smtp_sasl_login_decode(view_cstr("dXNlcg=="), out, sizeof(out), 255, &v, &err) == 0 &&
	      view_eq_cstr(v, "user"));
	CHECK(smtp_sasl_login_decode(view_cstr("dQBw"), out, sizeof(out), 255, &v, &err) == -1);
	CHECK(smtp_sasl_login_decode(view_cstr("dXNlcg=="), out, sizeof(out), 3, &v, &err) == -1);
	CHECK(smtp_sasl_login_decode(view_cstr(""), out, sizeof(out), 3, &v, &err) == -1);
	CHECK(smtp_sasl_is_cancel(view_cstr("*")) && !smtp_sasl_is_cancel(view_cstr("**")));
	/* encode round trip and the LOGIN prompts */
	struct buf e;
	buf_init(&e, 0);
	smtp_base64_encode(&e, "Username:", 9);
	CHECK(view_eq_cstr(buf_view(&e), SMTP_LOGIN_PROMPT_USER));
	buf_reset(&e);
	smtp_base64_encode(&e, "Password:", 9);
	CHECK(view_eq_cstr(buf_view(&e), SMTP_LOGIN_PROMPT_PASS));
	for (size_t l = 0; l < 10; l++) {
		buf_reset(&e);
		smtp_base64_encode(&e, "abcdefghij", l);
		CHECK(smtp_base64_decode(buf_view(&e), out, sizeof(out), &n) == 0 && n == l &&
		      memcmp(out, "abcdefghij", l) == 0);
	}
	buf_cleanup(&e);
}

static void test_replies(void)
{
	struct buf b;
	buf_init(&b, 0);
	CHECK(smtp_reply(&b, 250, "2.1.0", "Sender <%s> ok", "a@b") == 0);
	CHECK(view_eq_cstr(buf_view(&b), "250 2.1.0 Sender <a@b> ok\r\n"));
	buf_reset(&b);
	CHECK(smtp_reply(&b, 220, NULL, "mx ESMTP\r\nevil") == 0);
	CHECK(view_eq_cstr(buf_view(&b), "220 mx ESMTP??evil\r\n"));
	buf_reset(&b);
	char big[2000];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	CHECK(smtp_reply(&b, 500, "5.5.2", "%s", big) == 0 && b.len == SMTP_REPLY_LINE_MAX &&
	      b.data[b.len - 2] == '\r');
	buf_reset(&b);

	struct smtp_ehlo_caps caps = {
		.size = 52428800,
		.pipelining = true,
		.eightbitmime = true,
		.smtputf8 = true,
		.chunking = true,
		.enhancedstatuscodes = true,
		.starttls = true,
		.auth = "PLAIN LOGIN",
	};
	CHECK(smtp_ehlo_reply(&b, "mx.example", "Hello", &caps) == 0);
	CHECK(view_eq_cstr(buf_view(&b), "250-mx.example Hello\r\n"
					 "250-PIPELINING\r\n"
					 "250-SIZE 52428800\r\n"
					 "250-8BITMIME\r\n"
					 "250-CHUNKING\r\n"
					 "250-SMTPUTF8\r\n"
					 "250-ENHANCEDSTATUSCODES\r\n"
					 "250-STARTTLS\r\n"
					 "250 AUTH PLAIN LOGIN\r\n"));
	buf_reset(&b);
	struct smtp_multi m;
	smtp_multi_begin(&m, &b, 214, "2.0.0");
	smtp_multi_add(&m, "one");
	smtp_multi_add(&m, "two");
	CHECK(smtp_multi_end(&m) == 0 &&
	      view_eq_cstr(buf_view(&b), "214-2.0.0 one\r\n214 2.0.0 two\r\n"));
	buf_reset(&b);
	smtp_multi_begin(&m, &b, 250, NULL);
	CHECK(smtp_multi_end(&m) == -1 && b.len == 0);
	buf_cleanup(&b);
	/* output maximum */
	buf_init(&b, 20);
	buf_append(&b, "xx", 2);
	smtp_multi_begin(&m, &b, 250, NULL);
	smtp_multi_add(&m, "short");
	smtp_multi_add(&m, "this one does not fit");
	CHECK(smtp_multi_end(&m) == -1 && b.len == 2);
	buf_cleanup(&b);
}

int main(void)
{
	guard_init();
	lim = smtp_limits_default();
	test_command_table();
	test_command_fields();
	test_limits();
	test_streams();
	test_data();
	test_bdat();
	test_sasl();
	test_replies();
	/* an idle receiver session's own memory (the loop's conn and TLS on top) */
	fprintf(stderr, "sizeof(struct smtp_session) = %zu\n", smtp_session_struct_size());
	CHECK(smtp_session_struct_size() <= 1024);
	return check_finish("test_smtp_parse");
}
