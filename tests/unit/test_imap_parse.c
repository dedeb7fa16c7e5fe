/* Unit tests for node/imap_parse.c: IMAP command tokenizer and decoder. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/base.h"
#include "proto/imap_parse.h"

static int failures;

#define CHECK(cond)                                                          \
	do {                                                                 \
		if (!(cond)) {                                               \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, \
				__LINE__, #cond);                            \
			failures++;                                          \
		}                                                            \
	} while (0)

#define CHECK_STR(got, want)                                                 \
	do {                                                                 \
		const char *g_ = (got), *w_ = (want);                        \
		if (strcmp(g_, w_) != 0) {                                   \
			fprintf(stderr,                                      \
				"%s:%d: CHECK_STR failed\n  got:  %s\n  want: %s\n", \
				__FILE__, __LINE__, g_, w_);                 \
			failures++;                                          \
		}                                                            \
	} while (0)

/* ---- canonical dump of a command ---- */

static void put(struct buf *b, const char *s) { buf_append(b, s, strlen(s)); }

static void putv(struct buf *b, struct view v)
{
	for (size_t i = 0; i < v.len; i++) {
		uint8_t c = v.ptr[i];
		if (c >= 0x20 && c < 0x7f && c != '|')
			buf_append(b, &c, 1);
		else
			buf_printf(b, "\\x%02x", c);
	}
}

static void put_set(struct buf *b, const struct imap_seqset *s)
{
	for (size_t i = 0; i < s->count; i++) {
		if (i)
			put(b, ",");
		const struct imap_seq_range *r = &s->ranges[i];
		if (r->lo == IMAP_SEQ_STAR)
			put(b, "*");
		else
			buf_printf(b, "%llu", (unsigned long long)r->lo);
		if (r->hi != r->lo) {
			if (r->hi == IMAP_SEQ_STAR)
				put(b, ":*");
			else
				buf_printf(b, ":%llu",
					   (unsigned long long)r->hi);
		}
	}
	if (s->saved)
		put(b, s->count ? ",$" : "$");
}

static void put_views(struct buf *b, const struct view *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (i)
			put(b, ",");
		putv(b, v[i]);
	}
}

static const char *const sk_names[] = {
	"AND", "OR", "NOT", "SEQ", "UID", "ALL", "ANSWERED", "DELETED",
	"DRAFT", "FLAGGED", "SEEN", "RECENT", "NEW", "OLD", "UNANSWERED",
	"UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN", "KEYWORD", "UNKEYWORD",
	"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO", "HEADER",
	"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE",
	"SAVEDBEFORE", "SAVEDON", "SAVEDSINCE", "SAVEDATESUPPORTED", "LARGER",
	"SMALLER", "OLDER", "YOUNGER", "MODSEQ", "EMAILID", "THREADID",
};

static void put_key(struct buf *b, const struct imap_search_key *k)
{
	switch (k->type) {
	case IMAP_SEARCH_AND:
	case IMAP_SEARCH_OR:
	case IMAP_SEARCH_NOT:
		buf_printf(b, "(%s", sk_names[k->type]);
		for (size_t i = 0; i < k->u.sub.count; i++) {
			put(b, " ");
			put_key(b, &k->u.sub.keys[i]);
		}
		put(b, ")");
		return;
	default:
		break;
	}
	put(b, sk_names[k->type]);
	switch (k->type) {
	case IMAP_SEARCH_SEQSET:
	case IMAP_SEARCH_UID:
		put(b, ":");
		put_set(b, &k->u.set);
		break;
	case IMAP_SEARCH_KEYWORD: case IMAP_SEARCH_UNKEYWORD:
	case IMAP_SEARCH_BCC: case IMAP_SEARCH_BODY: case IMAP_SEARCH_CC:
	case IMAP_SEARCH_FROM: case IMAP_SEARCH_SUBJECT: case IMAP_SEARCH_TEXT:
	case IMAP_SEARCH_TO: case IMAP_SEARCH_EMAILID: case IMAP_SEARCH_THREADID:
		put(b, ":");
		putv(b, k->u.str);
		break;
	case IMAP_SEARCH_HEADER:
		put(b, ":");
		putv(b, k->u.header.field);
		put(b, "=");
		putv(b, k->u.header.value);
		break;
	case IMAP_SEARCH_BEFORE: case IMAP_SEARCH_ON: case IMAP_SEARCH_SINCE:
	case IMAP_SEARCH_SENTBEFORE: case IMAP_SEARCH_SENTON:
	case IMAP_SEARCH_SENTSINCE: case IMAP_SEARCH_SAVEDBEFORE:
	case IMAP_SEARCH_SAVEDON: case IMAP_SEARCH_SAVEDSINCE:
		buf_printf(b, ":%04u-%02u-%02u", k->u.date.year, k->u.date.month,
			   k->u.date.day);
		break;
	case IMAP_SEARCH_LARGER: case IMAP_SEARCH_SMALLER:
	case IMAP_SEARCH_OLDER: case IMAP_SEARCH_YOUNGER:
		buf_printf(b, ":%llu", (unsigned long long)k->u.number);
		break;
	case IMAP_SEARCH_MODSEQ:
		buf_printf(b, ":%llu", (unsigned long long)k->u.modseq.value);
		if (k->u.modseq.entry_type) {
			put(b, "/");
			putv(b, k->u.modseq.entry);
			buf_printf(b, "/%d", (int)k->u.modseq.entry_type);
		}
		break;
	default:
		break;
	}
}

static const char *const fetch_names[] = {
	"ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "RFC822",
	"RFC822.HEADER", "RFC822.TEXT", "BODY", "BODYSTRUCTURE", "UID",
	"MODSEQ", "SAVEDATE", "EMAILID", "THREADID", "BODY", "BINARY",
	"BINARY.SIZE",
};
static const char *const section_names[] = {
	"", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME",
};

static void put_fetch(struct buf *b, const struct imap_fetch_item *it)
{
	put(b, fetch_names[it->type]);
	if (it->type < IMAP_FETCH_BODY_SECTION)
		return;
	if (it->peek)
		put(b, ".PEEK");
	put(b, "[");
	const struct imap_section *s = &it->section;
	for (size_t i = 0; i < s->part_count; i++)
		buf_printf(b, "%s%u", i ? "." : "", s->parts[i]);
	if (s->text) {
		if (s->part_count)
			put(b, ".");
		put(b, section_names[s->text]);
	}
	if (s->field_count) {
		put(b, "(");
		put_views(b, s->fields, s->field_count);
		put(b, ")");
	}
	put(b, "]");
	if (it->partial)
		buf_printf(b, "<%llu.%llu>",
			   (unsigned long long)it->partial_offset,
			   (unsigned long long)it->partial_length);
}

static void dump_command(struct buf *b, const struct imap_command *c)
{
	if (c->uid)
		put(b, "UID ");
	put(b, imap_cmd_str(c->cmd));
	switch (c->cmd) {
	case IMAP_CMD_UNKNOWN:
		put(b, " name=");
		putv(b, c->name);
		buf_printf(b, " args=%zu", c->args_count);
		break;
	case IMAP_CMD_AUTHENTICATE:
		put(b, " mech=");
		putv(b, c->u.authenticate.mechanism);
		if (c->u.authenticate.has_ir) {
			put(b, " ir=");
			putv(b, c->u.authenticate.ir);
		}
		break;
	case IMAP_CMD_LOGIN:
		put(b, " user=");
		putv(b, c->u.login.user);
		put(b, " pass=");
		putv(b, c->u.login.pass);
		break;
	case IMAP_CMD_ENABLE:
		put(b, " ");
		put_views(b, c->u.enable.caps, c->u.enable.count);
		break;
	case IMAP_CMD_SELECT:
	case IMAP_CMD_EXAMINE:
		put(b, " mb=");
		putv(b, c->u.select.mailbox);
		if (c->u.select.condstore)
			put(b, " condstore");
		if (c->u.select.qresync) {
			buf_printf(b, " qresync=%u,%llu", c->u.select.uidvalidity,
				   (unsigned long long)c->u.select.modseq);
			if (c->u.select.known_uids.count) {
				put(b, " known=");
				put_set(b, &c->u.select.known_uids);
			}
			if (c->u.select.has_seq_match) {
				put(b, " match=");
				put_set(b, &c->u.select.known_seqs);
				put(b, "/");
				put_set(b, &c->u.select.known_seq_uids);
			}
		}
		break;
	case IMAP_CMD_CREATE:
		put(b, " mb=");
		putv(b, c->u.create.mailbox);
		if (c->u.create.use_count) {
			put(b, " use=");
			put_views(b, c->u.create.use, c->u.create.use_count);
		}
		break;
	case IMAP_CMD_DELETE:
	case IMAP_CMD_SUBSCRIBE:
	case IMAP_CMD_UNSUBSCRIBE:
	case IMAP_CMD_GETQUOTAROOT:
		put(b, " mb=");
		putv(b, c->u.mailbox);
		break;
	case IMAP_CMD_RENAME:
		put(b, " from=");
		putv(b, c->u.rename.from);
		put(b, " to=");
		putv(b, c->u.rename.to);
		break;
	case IMAP_CMD_LIST:
	case IMAP_CMD_LSUB:
		if (c->u.list.extended)
			buf_printf(b, " ext sel=%#x ret=%#x st=%#x",
				   c->u.list.select_opts, c->u.list.return_opts,
				   c->u.list.status_items);
		put(b, " ref=");
		putv(b, c->u.list.reference);
		put(b, " pat=");
		put_views(b, c->u.list.patterns, c->u.list.pattern_count);
		break;
	case IMAP_CMD_STATUS:
		put(b, " mb=");
		putv(b, c->u.status.mailbox);
		buf_printf(b, " items=%#x", c->u.status.items);
		break;
	case IMAP_CMD_APPEND:
		put(b, " mb=");
		putv(b, c->u.append.mailbox);
		for (size_t i = 0; i < c->u.append.count; i++) {
			const struct imap_append_msg *m = &c->u.append.msgs[i];
			put(b, " [");
			if (m->flag_count) {
				put(b, "flags=");
				put_views(b, m->flags, m->flag_count);
				put(b, " ");
			}
			if (m->has_date)
				buf_printf(b, "date=%lld ",
					   (long long)imap_datetime_to_unix(
						   &m->date));
			if (m->literal8)
				put(b, "lit8 ");
			if (m->utf8)
				put(b, "utf8 ");
			if (m->streamed)
				put(b, "streamed ");
			buf_printf(b, "size=%llu", (unsigned long long)m->size);
			if (!m->streamed) {
				put(b, " data=");
				putv(b, m->data);
			}
			put(b, "]");
		}
		if (c->u.append.sink_failed)
			put(b, " sink_failed");
		break;
	case IMAP_CMD_EXPUNGE:
		if (c->uid) {
			put(b, " set=");
			put_set(b, &c->u.expunge.set);
		}
		break;
	case IMAP_CMD_SEARCH:
		if (c->u.search.esearch)
			buf_printf(b, " ret=%#x", c->u.search.return_opts);
		if (c->u.search.has_charset) {
			put(b, " charset=");
			putv(b, c->u.search.charset);
		}
		put(b, " ");
		put_key(b, c->u.search.root);
		break;
	case IMAP_CMD_FETCH:
		put(b, " set=");
		put_set(b, &c->u.fetch.set);
		if (c->u.fetch.macro)
			buf_printf(b, " macro=%d", (int)c->u.fetch.macro);
		put(b, " items=");
		for (size_t i = 0; i < c->u.fetch.count; i++) {
			if (i)
				put(b, ",");
			put_fetch(b, &c->u.fetch.items[i]);
		}
		if (c->u.fetch.has_changedsince)
			buf_printf(b, " changedsince=%llu",
				   (unsigned long long)c->u.fetch.changedsince);
		if (c->u.fetch.vanished)
			put(b, " vanished");
		break;
	case IMAP_CMD_STORE:
		put(b, " set=");
		put_set(b, &c->u.store.set);
		if (c->u.store.has_unchangedsince)
			buf_printf(b, " unchangedsince=%llu",
				   (unsigned long long)c->u.store.unchangedsince);
		buf_printf(b, " op=%c%s flags=",
			   "=+-"[c->u.store.op],
			   c->u.store.silent ? " silent" : "");
		put_views(b, c->u.store.flags, c->u.store.flag_count);
		break;
	case IMAP_CMD_COPY:
	case IMAP_CMD_MOVE:
		put(b, " set=");
		put_set(b, &c->u.copy.set);
		put(b, " mb=");
		putv(b, c->u.copy.mailbox);
		break;
	case IMAP_CMD_ID:
		if (c->u.id.nil)
			put(b, " NIL");
		for (size_t i = 0; i < c->u.id.count; i++) {
			put(b, " ");
			putv(b, c->u.id.params[i].key);
			put(b, "=");
			if (c->u.id.params[i].value_nil)
				put(b, "NIL");
			else
				putv(b, c->u.id.params[i].value);
		}
		break;
	case IMAP_CMD_GETQUOTA:
		put(b, " root=");
		putv(b, c->u.getquota.root);
		break;
	case IMAP_CMD_SETQUOTA:
		put(b, " root=");
		putv(b, c->u.setquota.root);
		for (size_t i = 0; i < c->u.setquota.count; i++) {
			put(b, " ");
			putv(b, c->u.setquota.resources[i].name);
			buf_printf(b, "=%llu", (unsigned long long)
					       c->u.setquota.resources[i].limit);
		}
		break;
	case IMAP_CMD_SORT:
		if (c->u.sort.esort)
			buf_printf(b, " ret=%#x", c->u.sort.return_opts);
		put(b, " crit=");
		for (size_t i = 0; i < c->u.sort.criteria_count; i++)
			buf_printf(b, "%s%s%d", i ? "," : "",
				   c->u.sort.criteria[i].reverse ? "-" : "",
				   (int)c->u.sort.criteria[i].key);
		put(b, " charset=");
		putv(b, c->u.sort.charset);
		put(b, " ");
		put_key(b, c->u.sort.root);
		break;
	case IMAP_CMD_THREAD:
		put(b, " alg=");
		putv(b, c->u.thread.algorithm);
		put(b, " charset=");
		putv(b, c->u.thread.charset);
		put(b, " ");
		put_key(b, c->u.thread.root);
		break;
	case IMAP_CMD_COMPRESS:
		put(b, " ");
		putv(b, c->u.compress.mechanism);
		break;
	default:
		break;
	}
}

/* Layer-1 tree, to check the tokenizer independently of layer 2. */
static void dump_args(struct buf *b, const struct imap_arg *a, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (i)
			put(b, " ");
		switch (a[i].type) {
		case IMAP_ARG_ATOM:
			putv(b, a[i].str);
			break;
		case IMAP_ARG_NIL:
			put(b, "NIL");
			break;
		case IMAP_ARG_STRING:
			put(b, "\"");
			putv(b, a[i].str);
			put(b, "\"");
			break;
		case IMAP_ARG_LITERAL:
			buf_printf(b, "%s{%llu}", a[i].literal8 ? "~" : "",
				   (unsigned long long)a[i].literal_size);
			if (!a[i].streamed)
				putv(b, a[i].str);
			break;
		case IMAP_ARG_LIST:
			put(b, "(");
			dump_args(b, a[i].list, a[i].list_count);
			put(b, ")");
			break;
		}
	}
}

/* ---- driving the parser ---- */

/* Feed the stream in pieces of the given sizes (cycled; 0 = all at once),
 * answering literal waits, and record every result. */
static void run_split(struct imap_parser *p, const uint8_t *data, size_t len,
		      const size_t *pieces, size_t npieces, struct buf *out)
{
	size_t off = 0, pi = 0;
	while (off < len) {
		size_t want = npieces ? pieces[pi++ % npieces] : len - off;
		if (want == 0 || want > len - off)
			want = len - off;
		size_t end = off + want;
		while (off < end) {
			size_t used = 0;
			enum imap_result r =
				imap_parser_feed(p, data + off, end - off, &used);
			if (used > end - off) {
				put(out, "OVERCONSUMED|");
				return;
			}
			off += used;
			switch (r) {
			case IMAP_MORE:
				if (off != end)
					put(out, "MORE-NOT-ALL|");
				break;
			case IMAP_OK: {
				const struct imap_command *c =
					imap_parser_command(p);
				put(out, "OK ");
				putv(out, c->tag);
				put(out, " ");
				dump_command(out, c);
				put(out, "|");
				break;
			}
			case IMAP_BAD:
				put(out, "BAD ");
				putv(out, imap_parser_tag(p));
				put(out, " ");
				put(out, imap_parser_error(p));
				put(out, "|");
				break;
			case IMAP_LITERAL_WAIT: {
				struct imap_literal_info li =
					imap_parser_literal(p);
				buf_printf(out, "WAIT %llu %s|",
					   (unsigned long long)li.size,
					   li.accepted ? "ok" : "no");
				if (!li.accepted) {
					put(out, "REFUSED ");
					putv(out, imap_parser_tag(p));
					put(out, " ");
					put(out, imap_parser_error(p));
					put(out, "|");
				}
				break;
			}
			case IMAP_FATAL:
				put(out, "FATAL ");
				put(out, imap_parser_error(p));
				put(out, "|");
				return;
			}
			if (r == IMAP_MORE)
				break;
		}
	}
}

static char *run_str(const struct imap_limits *lim, bool utf8,
		     const uint8_t *data, size_t len, const size_t *pieces,
		     size_t npieces)
{
	struct imap_parser *p = imap_parser_new(lim);
	imap_parser_set_utf8(p, utf8);
	struct buf out;
	buf_init(&out, 0);
	run_split(p, data, len, pieces, npieces, &out);
	buf_append(&out, "", 1);
	imap_parser_free(&p);
	CHECK(p == NULL);
	return (char *)out.data;
}

/* Parse one stream, check the result string, and that every split gives
 * the same: one byte at a time, split at every offset, and ending at a
 * guard page. */
static char *guard_pages;
static size_t page_size;

static void check_stream(const struct imap_limits *lim, bool utf8,
			 const char *in, size_t in_len, const char *want,
			 int line)
{
	const uint8_t *data = (const uint8_t *)in;
	char *whole = run_str(lim, utf8, data, in_len, NULL, 0);
	if (want && strcmp(whole, want) != 0) {
		fprintf(stderr, "line %d: input %.*s\n  got:  %s\n  want: %s\n",
			line, (int)MIN(in_len, (size_t)200), in, whole, want);
		failures++;
	}
	size_t one = 1;
	char *bytes = run_str(lim, utf8, data, in_len, &one, 1);
	if (strcmp(whole, bytes) != 0) {
		fprintf(stderr, "line %d: byte-at-a-time differs\n  %s\n  %s\n",
			line, whole, bytes);
		failures++;
	}
	free(bytes);
	for (size_t cut = 1; cut < in_len; cut++) {
		size_t pieces[2] = { cut, in_len };
		char *s = run_str(lim, utf8, data, in_len, pieces, 2);
		if (strcmp(whole, s) != 0) {
			fprintf(stderr, "line %d: split at %zu differs\n  %s\n  %s\n",
				line, cut, whole, s);
			failures++;
			free(s);
			break;
		}
		free(s);
	}
	/* input ending right before a PROT_NONE page */
	if (in_len <= page_size) {
		uint8_t *g = (uint8_t *)guard_pages + page_size - in_len;
		memcpy(g, in, in_len);
		char *s = run_str(lim, utf8, g, in_len, NULL, 0);
		CHECK(strcmp(whole, s) == 0);
		free(s);
		size_t three = 3;
		s = run_str(lim, utf8, g, in_len, &three, 1);
		CHECK(strcmp(whole, s) == 0);
		free(s);
	}
	free(whole);
}

#define STREAM(in, want) check_stream(NULL, false, in, sizeof(in) - 1, want, __LINE__)

struct tcase {
	const char *in;
	const char *want; /* result string for a single command */
};

/* Commands that parse: input line, expected "OK tag dump|". */
static const struct tcase ok_cases[] = {
	{ "a CAPABILITY\r\n", "OK a CAPABILITY|" },
	{ "a noop\r\n", "OK a NOOP|" },
	{ "a LOGOUT\r\n", "OK a LOGOUT|" },
	{ "a STARTTLS\r\n", "OK a STARTTLS|" },
	{ "a1 LOGIN alice secret\r\n", "OK a1 LOGIN user=alice pass=secret|" },
	{ "a1 LOGIN \"al ice\" \"p\\\"w\\\\\"\r\n",
	  "OK a1 LOGIN user=al ice pass=p\"w\\|" },
	{ "a1 LOGIN {5}\r\nalice {3}\r\npwd\r\n",
	  "WAIT 5 ok|WAIT 3 ok|OK a1 LOGIN user=alice pass=pwd|" },
	{ "a1 LOGIN {5+}\r\nalice {0+}\r\n\r\n",
	  "OK a1 LOGIN user=alice pass=|" },
	{ "a1 LOGIN {0}\r\n \"x\"\r\n", "WAIT 0 ok|OK a1 LOGIN user= pass=x|" },
	{ "a1 LOGIN NIL nil\r\n", "OK a1 LOGIN user=NIL pass=nil|" },
	{ "a1 LOGIN a]b c\r\n", "OK a1 LOGIN user=a]b pass=c|" },
	{ "a2 AUTHENTICATE PLAIN\r\n", "OK a2 AUTHENTICATE mech=PLAIN|" },
	{ "a2 AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n",
	  "OK a2 AUTHENTICATE mech=PLAIN ir=AGFsaWNlAHNlY3JldA==|" },
	{ "a2 AUTHENTICATE EXTERNAL =\r\n",
	  "OK a2 AUTHENTICATE mech=EXTERNAL ir=|" },
	{ "a2 authenticate xoauth2 dXNlcj1h+/8=\r\n",
	  "OK a2 AUTHENTICATE mech=xoauth2 ir=dXNlcj1h+/8=|" },
	{ "e ENABLE CONDSTORE UTF8=ACCEPT\r\n",
	  "OK e ENABLE CONDSTORE,UTF8=ACCEPT|" },
	{ "s SELECT INBOX\r\n", "OK s SELECT mb=INBOX|" },
	{ "s SELECT inbox\r\n", "OK s SELECT mb=INBOX|" },
	{ "s SELECT \"Sent Items\"\r\n", "OK s SELECT mb=Sent Items|" },
	{ "s EXAMINE &AOQ-bc\r\n", "OK s EXAMINE mb=\\xc3\\xa4bc|" },
	{ "s SELECT \"&ZeVnLIqe-\"\r\n",
	  "OK s SELECT mb=\\xe6\\x97\\xa5\\xe6\\x9c\\xac\\xe8\\xaa\\x9e|" },
	{ "s SELECT a&-b\r\n", "OK s SELECT mb=a&b|" },
	{ "s SELECT INBOX (CONDSTORE)\r\n", "OK s SELECT mb=INBOX condstore|" },
	{ "s SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))\r\n",
	  "OK s SELECT mb=INBOX qresync=67890007,20050715194045000 known=41,43:211,214:541|" },
	{ "s SELECT INBOX (QRESYNC (67890007 90060115194045000 1:29997 (5000,7500,9000,9990:9999 15000,22500,27000,29970,29973,29976:29999)))\r\n",
	  "OK s SELECT mb=INBOX qresync=67890007,90060115194045000 known=1:29997 match=5000,7500,9000,9990:9999/15000,22500,27000,29970,29973,29976:29999|" },
	{ "s SELECT INBOX (QRESYNC (1 2))\r\n", "OK s SELECT mb=INBOX qresync=1,2|" },
	{ "s SELECT INBOX (QRESYNC (1 2 (1 5)))\r\n",
	  "OK s SELECT mb=INBOX qresync=1,2 match=1/5|" },
	{ "c CREATE Archive/2024\r\n", "OK c CREATE mb=Archive/2024|" },
	{ "c CREATE Sent (USE (\\Sent))\r\n", "OK c CREATE mb=Sent use=\\Sent|" },
	{ "c CREATE x (USE (\\Drafts \\Junk))\r\n",
	  "OK c CREATE mb=x use=\\Drafts,\\Junk|" },
	{ "d DELETE foo\r\n", "OK d DELETE mb=foo|" },
	{ "r RENAME foo \"bar baz\"\r\n", "OK r RENAME from=foo to=bar baz|" },
	{ "r SUBSCRIBE &AOQ-\r\n", "OK r SUBSCRIBE mb=\\xc3\\xa4|" },
	{ "r UNSUBSCRIBE foo\r\n", "OK r UNSUBSCRIBE mb=foo|" },
	{ "l LIST \"\" *\r\n", "OK l LIST ref= pat=*|" },
	{ "l LIST \"\" %\r\n", "OK l LIST ref= pat=%|" },
	{ "l LIST \"\" \"\"\r\n", "OK l LIST ref= pat=|" },
	{ "l LIST ~/Mail/ %/&AOQ-*\r\n", "OK l LIST ref=~/Mail/ pat=%/\\xc3\\xa4*|" },
	{ "l LIST (SUBSCRIBED) \"\" \"*\"\r\n",
	  "OK l LIST ext sel=0x1 ret=0 st=0 ref= pat=*|" },
	{ "l LIST (SUBSCRIBED RECURSIVEMATCH) \"\" %\r\n",
	  "OK l LIST ext sel=0x5 ret=0 st=0 ref= pat=%|" },
	{ "l LIST \"\" (INBOX Drafts \"Sent*\")\r\n",
	  "OK l LIST ext sel=0 ret=0 st=0 ref= pat=INBOX,Drafts,Sent*|" },
	{ "l LIST \"\" \"*\" RETURN (CHILDREN SPECIAL-USE SUBSCRIBED)\r\n",
	  "OK l LIST ext sel=0 ret=0x7 st=0 ref= pat=*|" },
	{ "l LIST \"\" % RETURN (STATUS (MESSAGES UNSEEN))\r\n",
	  "OK l LIST ext sel=0 ret=0x8 st=0x9 ref= pat=%|" },
	{ "l LIST (SPECIAL-USE) \"\" * RETURN (STATUS (SIZE HIGHESTMODSEQ) CHILDREN)\r\n",
	  "OK l LIST ext sel=0x8 ret=0xa st=0xa0 ref= pat=*|" },
	{ "l LIST () \"\" %\r\n", "OK l LIST ext sel=0 ret=0 st=0 ref= pat=%|" },
	{ "l LSUB \"\" *\r\n", "OK l LSUB ref= pat=*|" },
	{ "n NAMESPACE\r\n", "OK n NAMESPACE|" },
	{ "s STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN)\r\n",
	  "OK s STATUS mb=INBOX items=0xf|" },
	{ "s STATUS foo (SIZE DELETED HIGHESTMODSEQ APPENDLIMIT RECENT MAILBOXID)\r\n",
	  "OK s STATUS mb=foo items=0x3f0|" },
	{ "s STATUS foo (DELETED-STORAGE deleted)\r\n", "OK s STATUS mb=foo items=0x410|" },
	{ "a APPEND INBOX {5}\r\nhello\r\n",
	  "WAIT 5 ok|OK a APPEND mb=INBOX [size=5 data=hello]|" },
	{ "a APPEND INBOX (\\Seen) {3+}\r\nabc\r\n",
	  "OK a APPEND mb=INBOX [flags=\\Seen size=3 data=abc]|" },
	{ "a APPEND Sent (\\Seen $Forwarded) \" 5-Jan-2024 10:11:12 +0100\" {2+}\r\nhi\r\n",
	  "OK a APPEND mb=Sent [flags=\\Seen,$Forwarded date=1704445872 size=2 data=hi]|" },
	{ "a APPEND Sent \"05-jan-2024 10:11:12 -0030\" {1+}\r\nx\r\n",
	  "OK a APPEND mb=Sent [date=1704451272 size=1 data=x]|" },
	{ "a APPEND INBOX () {0+}\r\n\r\n", "OK a APPEND mb=INBOX [size=0 data=]|" },
	{ "a APPEND INBOX UTF8 (~{2+}\r\nhi)\r\n",
	  "OK a APPEND mb=INBOX [lit8 utf8 size=2 data=hi]|" },
	{ "a APPEND INBOX (\\Seen) {1+}\r\na (\\Draft) {1+}\r\nb {1+}\r\nc\r\n",
	  "OK a APPEND mb=INBOX [flags=\\Seen size=1 data=a] [flags=\\Draft size=1 data=b] [size=1 data=c]|" },
	{ "a APPEND {5+}\r\nINBOX {2+}\r\nhi\r\n",
	  "OK a APPEND mb=INBOX [size=2 data=hi]|" },
	{ "i IDLE\r\n", "OK i IDLE|" },
	{ "c CHECK\r\n", "OK c CHECK|" },
	{ "c CLOSE\r\n", "OK c CLOSE|" },
	{ "c UNSELECT\r\n", "OK c UNSELECT|" },
	{ "c EXPUNGE\r\n", "OK c EXPUNGE|" },
	{ "c UID EXPUNGE 3000:3002,*\r\n", "OK c UID EXPUNGE set=3000:3002,*|" },
	{ "s SEARCH ALL\r\n", "OK s SEARCH ALL|" },
	{ "s SEARCH UNSEEN FROM alice\r\n",
	  "OK s SEARCH (AND UNSEEN FROM:alice)|" },
	{ "s SEARCH CHARSET UTF-8 SUBJECT {4}\r\n\xc3\xa4\xc3\xb6\r\n",
	  "WAIT 4 ok|OK s SEARCH charset=UTF-8 SUBJECT:\\xc3\\xa4\\xc3\\xb6|" },
	{ "s SEARCH OR FROM a NOT (TO b SINCE 1-Feb-2024)\r\n",
	  "OK s SEARCH (OR FROM:a (NOT (AND TO:b SINCE:2024-02-01)))|" },
	{ "s SEARCH NOT NOT OR OR SEEN DRAFT OR 1:5 UID 7,9 $\r\n",
	  "OK s SEARCH (AND (NOT (NOT (OR (OR SEEN DRAFT) (OR SEQ:1:5 UID:7,9)))) SEQ:$)|" },
	{ "s SEARCH 1:*,4,7:9 UID $\r\n", "OK s SEARCH (AND SEQ:1:* UID:$)|" },
	{ "s SEARCH RETURN (MIN MAX COUNT) UNDELETED\r\n",
	  "OK s SEARCH ret=0xb UNDELETED|" },
	{ "s SEARCH RETURN () FLAGGED\r\n", "OK s SEARCH ret=0x4 FLAGGED|" },
	{ "s SEARCH RETURN (SAVE) CHARSET US-ASCII KEYWORD $Junk\r\n",
	  "OK s SEARCH ret=0x10 charset=US-ASCII KEYWORD:$Junk|" },
	{ "s UID SEARCH HEADER Message-ID \"<x@y>\" LARGER 1000 SMALLER 99999\r\n",
	  "OK s UID SEARCH (AND HEADER:Message-ID=<x@y> LARGER:1000 SMALLER:99999)|" },
	{ "s SEARCH MODSEQ 620162338\r\n", "OK s SEARCH MODSEQ:620162338|" },
	{ "s SEARCH MODSEQ \"/flags/\\\\draft\" all 620162338\r\n",
	  "OK s SEARCH MODSEQ:620162338//flags/\\draft/3|" },
	{ "s SEARCH YOUNGER 3600 SAVEDSINCE \"5-Mar-2023\" SAVEDATESUPPORTED\r\n",
	  "OK s SEARCH (AND YOUNGER:3600 SAVEDSINCE:2023-03-05 SAVEDATESUPPORTED)|" },
	{ "s SEARCH EMAILID M6d99ac3275bb4e THREADID T64b478a75b7ea9\r\n",
	  "OK s SEARCH (AND EMAILID:M6d99ac3275bb4e THREADID:T64b478a75b7ea9)|" },
	{ "s SEARCH ANSWERED DELETED DRAFT FLAGGED RECENT NEW OLD UNANSWERED UNDELETED UNDRAFT UNFLAGGED UNKEYWORD foo\r\n",
	  "OK s SEARCH (AND ANSWERED DELETED DRAFT FLAGGED RECENT NEW OLD UNANSWERED UNDELETED UNDRAFT UNFLAGGED UNKEYWORD:foo)|" },
	{ "s SEARCH BCC a BODY b CC c TEXT d BEFORE 29-Feb-2024 ON 1-Jan-2000 SENTBEFORE 2-Jan-2000 SENTON 3-Jan-2000 SENTSINCE 4-Jan-2000 OLDER 5 SAVEDBEFORE 6-Jan-2000 SAVEDON 7-Jan-2000\r\n",
	  "OK s SEARCH (AND BCC:a BODY:b CC:c TEXT:d BEFORE:2024-02-29 ON:2000-01-01 SENTBEFORE:2000-01-02 SENTON:2000-01-03 SENTSINCE:2000-01-04 OLDER:5 SAVEDBEFORE:2000-01-06 SAVEDON:2000-01-07)|" },
	{ "s SEARCH ((SEEN) (OR 1 2))\r\n",
	  "OK s SEARCH (AND SEEN (OR SEQ:1 SEQ:2))|" },
	{ "f FETCH 1 FLAGS\r\n", "OK f FETCH set=1 items=FLAGS|" },
	{ "f FETCH 1:*,4,7:9 (FLAGS)\r\n", "OK f FETCH set=1:* items=FLAGS|" },
	{ "f FETCH 9:7,4,20:* (UID)\r\n", "OK f FETCH set=4,7:9,20:* items=UID|" },
	{ "f FETCH 2:4,5,1 ALL\r\n",
	  "OK f FETCH set=1:5 macro=1 items=FLAGS,INTERNALDATE,RFC822.SIZE,ENVELOPE|" },
	{ "f FETCH * FAST\r\n",
	  "OK f FETCH set=* macro=2 items=FLAGS,INTERNALDATE,RFC822.SIZE|" },
	{ "f FETCH $ FULL\r\n",
	  "OK f FETCH set=$ macro=3 items=FLAGS,INTERNALDATE,RFC822.SIZE,ENVELOPE,BODY|" },
	{ "f FETCH 1 (ENVELOPE FLAGS INTERNALDATE RFC822.SIZE RFC822 RFC822.HEADER RFC822.TEXT BODY BODYSTRUCTURE UID MODSEQ SAVEDATE EMAILID THREADID)\r\n",
	  "OK f FETCH set=1 items=ENVELOPE,FLAGS,INTERNALDATE,RFC822.SIZE,RFC822,RFC822.HEADER,RFC822.TEXT,BODY,BODYSTRUCTURE,UID,MODSEQ,SAVEDATE,EMAILID,THREADID|" },
	{ "f FETCH 1 BODY[]\r\n", "OK f FETCH set=1 items=BODY[]|" },
	{ "f FETCH 1 (BODY.PEEK[HEADER.FIELDS (From To \"Sub ject\" Message-ID)]<0.2048>)\r\n",
	  "OK f FETCH set=1 items=BODY.PEEK[HEADER.FIELDS(From,To,Sub ject,Message-ID)]<0.2048>|" },
	{ "f FETCH 1 (body[1.2.HEADER.FIELDS.NOT (X-A)] BODY[1.2.MIME] BODY[3.TEXT] BODY[2] BODY[TEXT]<10.20>)\r\n",
	  "OK f FETCH set=1 items=BODY[1.2.HEADER.FIELDS.NOT(X-A)],BODY[1.2.MIME],BODY[3.TEXT],BODY[2],BODY[TEXT]<10.20>|" },
	{ "f FETCH 1 (BINARY[1] BINARY.PEEK[1.2]<0.100> BINARY.SIZE[3] BINARY[])\r\n",
	  "OK f FETCH set=1 items=BINARY[1],BINARY.PEEK[1.2]<0.100>,BINARY.SIZE[3],BINARY[]|" },
	{ "f UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)\r\n",
	  "OK f UID FETCH set=1:* items=FLAGS changedsince=12345|" },
	{ "f UID FETCH 300:500 (FLAGS) (CHANGEDSINCE 12345 VANISHED)\r\n",
	  "OK f UID FETCH set=300:500 items=FLAGS changedsince=12345 vanished|" },
	{ "f FETCH 1 (BODY.PEEK[HEADER.FIELDS (\"a\\\"b\" c)])\r\n",
	  "OK f FETCH set=1 items=BODY.PEEK[HEADER.FIELDS(a\"b,c)]|" },
	{ "t STORE 1:3 +FLAGS (\\Seen \\Flagged)\r\n",
	  "OK t STORE set=1:3 op=+ flags=\\Seen,\\Flagged|" },
	{ "t STORE 1 -FLAGS.SILENT \\Deleted\r\n",
	  "OK t STORE set=1 op=- silent flags=\\Deleted|" },
	{ "t STORE 2 FLAGS ()\r\n", "OK t STORE set=2 op== flags=|" },
	{ "t STORE 2 flags.silent $Junk \\Seen\r\n",
	  "OK t STORE set=2 op== silent flags=$Junk,\\Seen|" },
	{ "t STORE 1 (UNCHANGEDSINCE 5) +FLAGS (\\Seen)\r\n",
	  "OK t STORE set=1 unchangedsince=5 op=+ flags=\\Seen|" },
	{ "t UID STORE 7,9 +FLAGS.SILENT (\\Answered)\r\n",
	  "OK t UID STORE set=7,9 op=+ silent flags=\\Answered|" },
	{ "c COPY 2:4 MEETING\r\n", "OK c COPY set=2:4 mb=MEETING|" },
	{ "c UID COPY 1:* \"Trash\"\r\n", "OK c UID COPY set=1:* mb=Trash|" },
	{ "m MOVE 1 &AOQ-\r\n", "OK m MOVE set=1 mb=\\xc3\\xa4|" },
	{ "m uid move 42 Archive\r\n", "OK m UID MOVE set=42 mb=Archive|" },
	{ "i ID NIL\r\n", "OK i ID NIL|" },
	{ "i ID (\"name\" \"Thunderbird\" \"version\" \"115.0\" \"os\" NIL)\r\n",
	  "OK i ID name=Thunderbird version=115.0 os=NIL|" },
	{ "i ID ()\r\n", "OK i ID|" },
	{ "q GETQUOTA \"\"\r\n", "OK q GETQUOTA root=|" },
	{ "q GETQUOTAROOT INBOX\r\n", "OK q GETQUOTAROOT mb=INBOX|" },
	{ "q SETQUOTA \"\" (STORAGE 512 MESSAGE 1000)\r\n",
	  "OK q SETQUOTA root= STORAGE=512 MESSAGE=1000|" },
	{ "o SORT (REVERSE ARRIVAL SUBJECT) UTF-8 ALL\r\n",
	  "OK o SORT crit=-0,5 charset=UTF-8 ALL|" },
	{ "o UID SORT (DATE) US-ASCII UNDELETED SINCE 1-Feb-1994\r\n",
	  "OK o UID SORT crit=2 charset=US-ASCII (AND UNDELETED SINCE:1994-02-01)|" },
	{ "o SORT RETURN (COUNT) (SIZE) UTF-8 ALL\r\n",
	  "OK o SORT ret=0x8 crit=4 charset=UTF-8 ALL|" },
	{ "h THREAD REFERENCES UTF-8 ALL\r\n",
	  "OK h THREAD alg=REFERENCES charset=UTF-8 ALL|" },
	{ "h UID THREAD ORDEREDSUBJECT UTF-8 SINCE 5-MAR-2000\r\n",
	  "OK h UID THREAD alg=ORDEREDSUBJECT charset=UTF-8 SINCE:2000-03-05|" },
	{ "z COMPRESS DEFLATE\r\n", "OK z COMPRESS DEFLATE|" },
	{ "x XFOO bar (baz) {2+}\r\nab\r\n", "OK x UNKNOWN name=XFOO args=3|" },
	{ "x GETMETADATA \"\" /shared/comment\r\n",
	  "OK x UNKNOWN name=GETMETADATA args=2|" },
	{ "a.b-c]d LOGOUT\n", "OK a.b-c]d LOGOUT|" },
	{ "\r\n\r\nA NOOP\r\n", "OK A NOOP|" },
	{ "A  NOOP\r\n", "BAD A Missing command|" },
	{ "A NOOP \r\n", "OK A NOOP|" },
	{ "A LOGIN  a   b\r\n", "OK A LOGIN user=a pass=b|" },
};

/* Commands that fail: input, expected result string. */
static const struct tcase bad_cases[] = {
	{ "\r\n", "" },
	{ " NOOP\r\n", "BAD * Invalid tag|" },
	{ "a\r\n", "BAD a Missing command|" },
	{ "a+ NOOP\r\n", "BAD * Invalid tag|" },
	{ "a(b NOOP\r\n", "BAD * Invalid tag|" },
	{ "a NOOP x\r\n", "BAD a Unexpected extra arguments|" },
	{ "a LOGIN alice\r\n", "BAD a Missing argument|" },
	{ "a LOGIN alice (x)\r\n", "BAD a Expected a string|" },
	{ "a LOGIN \"unterminated\r\n", "BAD a Unterminated quoted string|" },
	{ "a LOGIN \"bad\\escape\" x\r\n", "BAD a Invalid escape in quoted string|" },
	{ "a LOGIN \"\xff\" x\r\n", "BAD a Invalid UTF-8 in quoted string|" },
	{ "a LOGIN \"\xc0\x80\" x\r\n", "BAD a Invalid UTF-8 in quoted string|" },
	{ "a LOGIN a\"b c\r\n", "BAD a Invalid character in atom|" },
	{ "a LOGIN a\xc3\xa4 c\r\n", "BAD a Invalid character in atom|" },
	{ "a LOGIN {5x}\r\nabcde\r\n", "BAD a Invalid literal|BAD abcde Missing command|" },
	{ "a LOGIN {}\r\n", "BAD a Invalid literal|" },
	{ "a LOGIN {3} x\r\n", "BAD a Literal must end the line|" },
	{ "a LOGIN ((a)\r\n", "BAD a Missing )|" },
	{ "a LOGIN a)\r\n", "BAD a Unexpected )|" },
	{ "a LOGIN (a)(b)\r\n", "BAD a Missing space between arguments|" },
	{ "a LOGIN a\rb\r\n", "BAD a CR without LF|" },
	{ "a LOGIN a b\r\r\n", "BAD a CR without LF|" },
	{ "a LOGIN ~{1+}\r\nx y\r\n", "BAD a literal8 not allowed here|" },
	{ "a SELECT\r\n", "BAD a Missing mailbox name|" },
	{ "a SELECT &AOQ\r\n", "BAD a Invalid modified UTF-7: unterminated|" },
	{ "a SELECT &AGE-\r\n", "BAD a Invalid modified UTF-7: encoded ASCII|" },
	{ "a SELECT &AOQ-&AOQ-\r\n", "BAD a Invalid modified UTF-7: null shift|" },
	{ "a SELECT &AO-\r\n", "BAD a Invalid modified UTF-7: bad padding|" },
	{ "a SELECT &2D3-\r\n", "BAD a Invalid modified UTF-7: bad padding|" },
	{ "a SELECT &2D0A5A-\r\n", "BAD a Invalid modified UTF-7: bad surrogate|" },
	{ "a SELECT &3gA-\r\n", "BAD a Invalid modified UTF-7: bad surrogate|" },
	{ "a SELECT &A*Q-\r\n", "BAD a Invalid atom: &A*Q-|" },
	{ "a SELECT \"\xc3\xa4\"\r\n", "BAD a Invalid character in mailbox name|" },
	{ "a SELECT INBOX (FOO)\r\n", "BAD a Unknown SELECT parameter|" },
	{ "a SELECT INBOX (QRESYNC (0 1))\r\n", "BAD a Invalid number: 0|" },
	{ "a FETCH 0 FLAGS\r\n", "BAD a Invalid sequence set: 0|" },
	{ "a FETCH 1: FLAGS\r\n", "BAD a Invalid sequence set: 1:|" },
	{ "a FETCH 1:2:3 FLAGS\r\n", "BAD a Invalid sequence set: 1:2:3|" },
	{ "a FETCH 4294967296 FLAGS\r\n", "BAD a Invalid sequence set: 4294967296|" },
	{ "a FETCH 1,,2 FLAGS\r\n", "BAD a Invalid sequence set: 1,,2|" },
	{ "a FETCH 1 FOO\r\n", "BAD a Unknown FETCH item: FOO|" },
	{ "a FETCH 1 ()\r\n", "BAD a Empty FETCH item list|" },
	{ "a FETCH 1 BODY[MIME]\r\n", "BAD a MIME needs a part number|" },
	{ "a FETCH 1 BODY[1.]\r\n", "BAD a Invalid section|" },
	{ "a FETCH 1 BODY[0]\r\n", "BAD a Invalid section part|" },
	{ "a FETCH 1 BODY[HEADER.FIELDS ()]\r\n", "BAD a Empty header list|" },
	{ "a FETCH 1 BODY[]<5>\r\n", "BAD a Invalid partial range|" },
	{ "a FETCH 1 BODY[]<5.0>\r\n", "BAD a Invalid partial range|" },
	{ "a FETCH 1 BINARY[HEADER]\r\n", "BAD a Invalid BINARY section|" },
	{ "a FETCH 1 BINARY.SIZE[1]<0.1>\r\n", "BAD a Invalid FETCH item: BINARY.SIZE[1]<0.1>|" },
	{ "a FETCH 1 BODY[HEADER.FIELDS (A)\r\n", "BAD a Invalid section|" },
	{ "a FETCH 1 BODY[HEADER.FIELDS {1}\r\n", "BAD a Invalid section|" },
	{ "a FETCH 1 (FLAGS) (VANISHED)\r\n",
	  "BAD a VANISHED needs UID FETCH and CHANGEDSINCE|" },
	{ "a FETCH 1 (FLAGS) (FOO 1)\r\n", "BAD a Unknown FETCH modifier|" },
	{ "a STORE 1 FLAGS \\\r\n", "BAD a Invalid flag: \\|" },
	{ "a STORE 1 +FLAGZ (\\Seen)\r\n", "BAD a Invalid STORE action: +FLAGZ|" },
	{ "a STORE 1 +FLAGS (\\*)\r\n", "BAD a Invalid flag: \\*|" },
	{ "a STORE 1 (UNCHANGEDSINCE x) FLAGS ()\r\n", "BAD a Invalid number: x|" },
	{ "a SEARCH\r\n", "BAD a Missing search key|" },
	{ "a SEARCH FOO\r\n", "BAD a Unknown search key: FOO|" },
	{ "a SEARCH OR SEEN\r\n", "BAD a Missing search key|" },
	{ "a SEARCH ()\r\n", "BAD a Empty search list|" },
	{ "a SEARCH SINCE 30-Feb-2024\r\n", "BAD a Invalid date: 30-Feb-2024|" },
	{ "a SEARCH SINCE 1-Foo-2024\r\n", "BAD a Invalid date: 1-Foo-2024|" },
	{ "a SEARCH LARGER 99999999999999999999\r\n",
	  "BAD a Invalid number: 99999999999999999999|" },
	{ "a SEARCH RETURN (FOO) ALL\r\n", "BAD a Unknown RETURN option: FOO|" },
	{ "a SEARCH KEYWORD \\Seen\r\n", "BAD a Invalid keyword: \\Seen|" },
	{ "a SEARCH \"ALL\"\r\n", "BAD a Invalid search key|" },
	{ "a APPEND INBOX\r\n", "BAD a Missing message|" },
	{ "a APPEND INBOX (\\Seen)\r\n", "BAD a Missing message literal|" },
	{ "a APPEND INBOX \"bad date\" {1+}\r\nx\r\n", "BAD a Invalid date-time|" },
	{ "a APPEND INBOX UTF8 ({1+}\r\nx)\r\n", "BAD a UTF8 needs (~{n})|" },
	{ "a LIST (FOO) \"\" *\r\n", "BAD a Unknown LIST selection option|" },
	{ "a LIST (RECURSIVEMATCH) \"\" *\r\n",
	  "BAD a RECURSIVEMATCH needs another option|" },
	{ "a LIST (SPECIAL-USE REMOTE RECURSIVEMATCH) \"\" *\r\n",
	  "BAD a RECURSIVEMATCH needs another option|" },
	{ "a LIST \"\" * RETURN (FOO)\r\n", "BAD a Unknown LIST return option|" },
	{ "a LIST \"\" * FOO\r\n", "BAD a Invalid LIST arguments|" },
	{ "a STATUS INBOX ()\r\n", "BAD a Expected a list of status items|" },
	{ "a STATUS INBOX (FOO)\r\n", "BAD a Unknown status item: FOO|" },
	{ "a UID FOO 1\r\n", "BAD a Unknown UID command: FOO|" },
	{ "a UID LOGIN a b\r\n", "BAD a Unknown UID command: LOGIN|" },
	{ "a ID (\"a\")\r\n", "BAD a ID needs NIL or a list of pairs|" },
	{ "a SORT () UTF-8 ALL\r\n", "BAD a Missing sort criteria|" },
	{ "a SORT (REVERSE) UTF-8 ALL\r\n", "BAD a Invalid sort criteria|" },
	{ "a AUTHENTICATE PLAIN abc\r\n", "BAD a Invalid base64|" },
	{ "a AUTHENTICATE PLAIN a=bc\r\n", "BAD a Invalid base64|" },
	{ "a CREATE x (USE (Sent))\r\n", "BAD a Invalid special-use flag|" },
	{ "a ENABLE\r\n", "BAD a Missing capability|" },
	{ "a COPY 1\r\n", "BAD a Missing mailbox name|" },
	{ "a{ NOOP\r\n", "BAD * Invalid tag|" },
	{ "a NOOP {3+}\r\nabc\r\n", "BAD a Unexpected extra arguments|" },
};

static void test_tables(void)
{
	for (size_t i = 0; i < ARRAY_LEN(ok_cases); i++)
		check_stream(NULL, false, ok_cases[i].in, strlen(ok_cases[i].in),
			     ok_cases[i].want, (int)i);
	for (size_t i = 0; i < ARRAY_LEN(bad_cases); i++) {
		/* some inputs contain NULs: their length is up to the last
		 * LF of the literal text */
		const char *in = bad_cases[i].in;
		size_t len = strlen(in);
		check_stream(NULL, false, in, len, bad_cases[i].want,
			     1000 + (int)i);
	}
}

/* Inputs with embedded NULs need explicit lengths. */
static void test_nul_inputs(void)
{
	STREAM("a LOGIN \"nul\0\" x\r\nb NOOP\r\n",
	       "BAD a NUL in quoted string|OK b NOOP|");
	STREAM("a LOGIN {1+}\r\n\0 y\r\n", "BAD a NUL in literal|");
	STREAM("a APPEND INBOX {1+}\r\n\0\r\n",
	       "BAD a NUL in message: use literal8|");
	STREAM("a APPEND INBOX ~{3+}\r\na\0b\r\n",
	       "OK a APPEND mb=INBOX [lit8 size=3 data=a\\x00b]|");
	STREAM("a LOGIN {2+}\r\nab\0{1+}\r\nx\r\nb NOOP\r\n",
	       "BAD a Missing space between arguments|OK b NOOP|");
	STREAM("a \0NOOP\r\n", "BAD a Missing command|");
}

static void test_pipelining(void)
{
	STREAM("a NOOP\r\nb LOGIN x y\r\nc SELECT INBOX\r\nd FETCH 1 FLAGS\r\n",
	       "OK a NOOP|OK b LOGIN user=x pass=y|OK c SELECT mb=INBOX|"
	       "OK d FETCH set=1 items=FLAGS|");
	/* a BAD in the middle does not disturb the next command */
	STREAM("a NOOP\r\nb FETCH x\r\nc NOOP\r\n",
	       "OK a NOOP|BAD b Invalid sequence set: x|OK c NOOP|");
	/* a line in error skips the data of a {n+} literal on it */
	STREAM("a X ) {10+}\r\nb NOOP\r\n\r\n\r\nc NOOP\r\n",
	       "BAD a Unexpected )|OK c NOOP|");
	/* after the skipped literal the line goes on */
	STREAM("a X ) {3+}\r\nabc d NOOP\r\ne NOOP\r\n",
	       "BAD a Unexpected )|OK e NOOP|");
	STREAM("a FOO) {3+}\r\nabc\r\ne NOOP\r\n",
	       "BAD a Invalid command name|OK e NOOP|");
	/* ... but not of a synchronizing one: the client waits for us */
	STREAM("a X ) {10}\r\nb NOOP\r\n", "BAD a Unexpected )|OK b NOOP|");
	/* ... and several literals on the line */
	STREAM("a X ) {1+}\r\nx {2+}\r\nyy\r\nb NOOP\r\n",
	       "BAD a Unexpected )|OK b NOOP|");
	/* literal then more arguments */
	STREAM("a APPEND {5}\r\nINBOX (\\Seen) {1}\r\nx\r\nb NOOP\r\n",
	       "WAIT 5 ok|WAIT 1 ok|OK a APPEND mb=INBOX [flags=\\Seen size=1 data=x]|"
	       "OK b NOOP|");
	STREAM("a SEARCH SUBJECT {3}\r\nabc FROM {1+}\r\nx SEEN\r\n",
	       "WAIT 3 ok|OK a SEARCH (AND SUBJECT:abc FROM:x SEEN)|");
	/* bare LF */
	STREAM("a NOOP\nb NOOP\r\n", "OK a NOOP|OK b NOOP|");
}

static void test_limits(void)
{
	struct imap_limits lim = imap_limits_default();
	lim.max_line = 64;
	lim.max_literal = 16;
	lim.max_nonsync_literal = 16;
	lim.max_command = 100;
	lim.max_skip = 32;
	lim.max_depth = 3;
	lim.max_args = 8;
	char in[512];

	/* line over the limit: fatal, sticky */
	memset(in, 'a', sizeof(in));
	memcpy(in, "a LOGIN ", 8);
	check_stream(&lim, false, in, 100, "FATAL Line too long|", __LINE__);
	/* exactly at the limit is fine */
	snprintf(in, sizeof(in), "a LOGIN x %s\r\n",
		 "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy");
	CHECK(strlen(in) == 64);
	check_stream(&lim, false, in, strlen(in),
		     "OK a LOGIN user=x pass=yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy|",
		     __LINE__);

	/* synchronizing literal over the limit: refused, next command ok */
	const char *s1 = "a LOGIN {17}\r\nb NOOP\r\n";
	check_stream(&lim, false, s1, strlen(s1),
		     "WAIT 17 no|REFUSED a Literal too large|OK b NOOP|", __LINE__);
	const char *s1b = "a LOGIN {16}\r\n0123456789abcdef x\r\n";
	check_stream(&lim, false, s1b, strlen(s1b),
		     "WAIT 16 ok|OK a LOGIN user=0123456789abcdef pass=x|", __LINE__);
	/* huge numbers never overflow */
	const char *s2 = "a LOGIN {99999999999999999999999}\r\nb NOOP\r\n";
	check_stream(&lim, false, s2, strlen(s2),
		     "WAIT 18446744073709551615 no|REFUSED a Literal too large|OK b NOOP|",
		     __LINE__);
	/* non-synchronizing over the limit but skippable: BAD after skip */
	const char *s3 = "a LOGIN {20+}\r\n01234567890123456789 x\r\nb NOOP\r\n";
	check_stream(&lim, false, s3, strlen(s3),
		     "BAD a Literal too large|OK b NOOP|", __LINE__);
	/* ... and not skippable: fatal */
	const char *s4 = "a LOGIN {33+}\r\n";
	check_stream(&lim, false, s4, strlen(s4), "FATAL Literal too large|",
		     __LINE__);
	const char *s5 = "a LOGIN {99999999999999999999999+}\r\n";
	check_stream(&lim, false, s5, strlen(s5), "FATAL Literal too large|",
		     __LINE__);
	/* skip budget is per command */
	const char *s6 = "a ) {20+}\r\n01234567890123456789 {20+}\r\n";
	check_stream(&lim, false, s6, strlen(s6), "FATAL Literal too large|",
		     __LINE__);
	/* total command size: literals add up */
	const char *s7 = "a X {16+}\r\n0123456789abcdef {16+}\r\n0123456789abcdef "
			 "{16+}\r\n0123456789abcdef {16+}\r\n0123456789abcdef\r\n";
	lim.max_command = 90;
	check_stream(&lim, false, s7, strlen(s7),
		     "BAD a Literal too large|", __LINE__);
	lim.max_command = 100;
	/* nesting */
	const char *s8 = "a X (((a)))\r\nb X ((((a))))\r\n";
	check_stream(&lim, false, s8, strlen(s8),
		     "OK a UNKNOWN name=X args=1|BAD b Too deeply nested|", __LINE__);
	/* args */
	const char *s9 = "a X 1 2 3 4 5 6 7 8\r\nb X 1 2 3 4 5 6 7 8 9\r\n"
			 "c X (1 2 3 4 5 6 7)\r\n";
	check_stream(&lim, false, s9, strlen(s9),
		     "OK a UNKNOWN name=X args=8|BAD b Too many arguments|"
		     "OK c UNKNOWN name=X args=1|",
		     __LINE__);
	/* LITERAL-: {n+} over 4096 refused */
	struct imap_limits pre = imap_limits_preauth();
	CHECK(pre.max_line < lim.max_line || pre.max_line <= 8192);
	struct imap_limits def = imap_limits_default();
	CHECK(pre.max_line < def.max_line);
	CHECK(pre.max_literal < def.max_literal);
	CHECK(pre.max_command < def.max_command);
	CHECK(pre.max_depth < def.max_depth);
	CHECK(pre.max_args < def.max_args);
	CHECK(pre.max_stream_literal < def.max_stream_literal);
	CHECK(pre.max_nonsync_literal == 4096);
	struct buf p1;
	buf_init(&p1, 0);
	put(&p1, "a LOGIN {4097+}\r\n");
	for (int i = 0; i < 4097; i++)
		put(&p1, "x");
	put(&p1, " y\r\nb NOOP\r\n");
	check_stream(&pre, false, (const char *)p1.data, p1.len,
		     "BAD a Literal too large|OK b NOOP|", __LINE__);
	buf_cleanup(&p1);
	const char *p2 = "a LOGIN {9000}\r\nb NOOP\r\n";
	check_stream(&pre, false, p2, strlen(p2),
		     "WAIT 9000 no|REFUSED a Literal too large|OK b NOOP|", __LINE__);
	const char *p3 = "a X ((((((a))))))\r\n";
	check_stream(&pre, false, p3, strlen(p3), "BAD a Too deeply nested|",
		     __LINE__);
	/* the same under default limits passes */
	check_stream(&def, false, p3, strlen(p3), "OK a UNKNOWN name=X args=1|",
		     __LINE__);
	/* preauth line limit */
	struct buf big;
	buf_init(&big, 0);
	put(&big, "a LOGIN x ");
	for (int i = 0; i < 9000; i++)
		put(&big, "y");
	put(&big, "\r\n");
	struct imap_parser *pp = imap_parser_new(&pre);
	size_t used;
	CHECK(imap_parser_feed(pp, big.data, big.len, &used) == IMAP_FATAL);
	CHECK(imap_parser_feed(pp, (const uint8_t *)"b NOOP\r\n", 8, &used) ==
	      IMAP_FATAL);
	CHECK(used == 0);
	imap_parser_reset(pp);
	CHECK(imap_parser_feed(pp, (const uint8_t *)"b NOOP\r\n", 8, &used) ==
	      IMAP_OK);
	/* switching limits after authentication */
	imap_parser_set_limits(pp, &def);
	CHECK(imap_parser_feed(pp, big.data, big.len, &used) == IMAP_OK);
	CHECK(used == big.len);
	imap_parser_free(&pp);
	buf_cleanup(&big);

	/* search nesting is bounded even without parentheses */
	buf_init(&big, 0);
	put(&big, "a SEARCH");
	for (int i = 0; i < 1000; i++)
		put(&big, " NOT");
	put(&big, " ALL\r\n");
	pp = imap_parser_new(NULL);
	CHECK(imap_parser_feed(pp, big.data, big.len, &used) == IMAP_BAD);
	CHECK_STR(imap_parser_error(pp), "Search too complex");
	imap_parser_free(&pp);
	buf_cleanup(&big);
}

/* ---- APPEND streaming ---- */

struct sink_state {
	struct buf got;
	unsigned begins, ends, calls;
	uint64_t size;
	size_t max_mem;
	struct imap_parser *p;
	int fail_after; /* data calls before failing; -1 never */
};

static int s_begin(void *ctx, uint64_t size, bool lit8)
{
	struct sink_state *s = ctx;
	UNUSED(lit8);
	s->begins++;
	s->size = size;
	return 0;
}

static int s_data(void *ctx, const uint8_t *d, size_t n)
{
	struct sink_state *s = ctx;
	s->calls++;
	if (s->fail_after >= 0 && (int)s->calls > s->fail_after)
		return -1;
	buf_append(&s->got, d, n);
	size_t m = imap_parser_mem(s->p);
	if (m > s->max_mem)
		s->max_mem = m;
	return 0;
}

static int s_end(void *ctx)
{
	struct sink_state *s = ctx;
	s->ends++;
	return 0;
}

static void test_sink(void)
{
	const size_t msg_len = 1024 * 1024;
	uint8_t *msg = xmalloc(msg_len);
	uint32_t seed = 12345;
	for (size_t i = 0; i < msg_len; i++) {
		seed = seed * 1103515245 + 12345;
		msg[i] = (uint8_t)(seed >> 16);
		if (msg[i] == 0)
			msg[i] = 1;
	}
	struct sink_state s;
	memset(&s, 0, sizeof(s));
	buf_init(&s.got, 0);
	s.fail_after = -1;
	struct imap_parser *p = imap_parser_new(NULL);
	s.p = p;
	struct imap_literal_sink sink = { s_begin, s_data, s_end, &s };
	imap_parser_set_sink(p, &sink);

	struct buf in;
	buf_init(&in, 0);
	buf_printf(&in, "A003 APPEND saved-messages (\\Seen) {%zu}\r\n", msg_len);
	size_t head_len = in.len;
	buf_append(&in, msg, msg_len);
	put(&in, " (\\Draft) {3+}\r\nxyz\r\nA004 NOOP\r\n");

	size_t off = 0;
	int oks = 0, waits = 0;
	while (off < in.len) {
		seed = seed * 1103515245 + 12345;
		size_t chunk = 1 + (seed >> 8) % 70000;
		if (chunk > in.len - off)
			chunk = in.len - off;
		size_t end = off + chunk;
		while (off < end) {
			size_t used;
			enum imap_result r =
				imap_parser_feed(p, in.data + off, end - off, &used);
			off += used;
			if (r == IMAP_LITERAL_WAIT) {
				struct imap_literal_info li = imap_parser_literal(p);
				CHECK(li.accepted && li.append &&
				      li.size == msg_len);
				CHECK(off == head_len);
				waits++;
			} else if (r == IMAP_OK) {
				const struct imap_command *c =
					imap_parser_command(p);
				if (oks == 0) {
					CHECK(c->cmd == IMAP_CMD_APPEND);
					CHECK(c->u.append.count == 2);
					CHECK(c->u.append.msgs[0].streamed);
					CHECK(c->u.append.msgs[0].size == msg_len);
					CHECK(c->u.append.msgs[0].flag_count == 1);
					CHECK(c->u.append.msgs[1].streamed);
					CHECK(c->u.append.msgs[1].size == 3);
					CHECK(!c->u.append.sink_failed);
				} else {
					CHECK(c->cmd == IMAP_CMD_NOOP);
				}
				oks++;
			} else {
				CHECK(r == IMAP_MORE);
				break;
			}
		}
	}
	CHECK(oks == 2 && waits == 1);
	CHECK(s.begins == 2 && s.ends == 2);
	CHECK(s.got.len == msg_len + 3);
	CHECK(memcmp(s.got.data, msg, msg_len) == 0);
	CHECK(memcmp(s.got.data + msg_len, "xyz", 3) == 0);
	CHECK(s.calls > 10);
	CHECK(s.max_mem < 64 * 1024);
	CHECK(imap_parser_mem(p) < 64 * 1024);

	/* a failing sink: the command completes, flagged */
	buf_cleanup(&s.got);
	buf_init(&s.got, 0);
	s.fail_after = 1;
	s.calls = 0;
	const char *t = "B APPEND INBOX {10+}\r\n0123456789\r\n";
	size_t used, o = 0;
	bool seen_ok = false;
	for (; o < strlen(t); o += used) {
		size_t n = MIN((size_t)4, strlen(t) - o);
		enum imap_result r = imap_parser_feed(
			p, (const uint8_t *)t + o, n, &used);
		if (r == IMAP_OK) {
			CHECK(imap_parser_command(p)->u.append.sink_failed);
			CHECK(o + used == strlen(t));
			seen_ok = true;
		}
	}
	CHECK(seen_ok);
	CHECK(s.got.len == 2); /* "01" arrived with the header's chunk */

	/* a streamed {n+} message is bounded by max_stream_literal alone
	 * (nothing of it is held), not by max_nonsync_literal */
	buf_cleanup(&s.got);
	buf_init(&s.got, 0);
	s.fail_after = -1;
	s.calls = 0;
	{
		struct buf big;
		buf_init(&big, 0);
		buf_printf(&big, "C APPEND INBOX {%zu+}\r\n", 2 * msg_len);
		buf_append(&big, msg, msg_len);
		buf_append(&big, msg, msg_len);
		put(&big, "\r\n");
		int ok = 0;
		for (o = 0; o < big.len; o += used) {
			enum imap_result r = imap_parser_feed(p, big.data + o,
							      MIN((size_t)65536, big.len - o), &used);
			if (r != IMAP_OK && r != IMAP_MORE) {
				CHECK(r == IMAP_OK || r == IMAP_MORE);
				imap_parser_reset(p);
				break;
			}
			if (r == IMAP_OK) {
				const struct imap_command *c = imap_parser_command(p);
				CHECK(c->u.append.count == 1 && c->u.append.msgs[0].streamed &&
				      c->u.append.msgs[0].size == 2 * msg_len &&
				      !c->u.append.sink_failed);
				ok++;
			}
		}
		CHECK(ok == 1 && s.got.len == 2 * msg_len);
		buf_cleanup(&big);
	}

	/* without a sink the message is held, bounded by max_literal */
	imap_parser_set_sink(p, NULL);
	CHECK(imap_parser_feed(p, in.data, head_len, &used) == IMAP_LITERAL_WAIT);
	CHECK(imap_parser_literal(p).accepted); /* 1 MiB == max_literal */
	CHECK(imap_parser_feed(p, in.data + head_len, in.len - head_len,
			       &used) == IMAP_OK);
	{
		const struct imap_command *c = imap_parser_command(p);
		CHECK(c->u.append.count == 2 && !c->u.append.msgs[0].streamed);
		CHECK(c->u.append.msgs[0].data.len == msg_len &&
		      memcmp(c->u.append.msgs[0].data.ptr, msg, msg_len) == 0);
		CHECK(view_eq_cstr(c->u.append.msgs[1].data, "xyz"));
	}
	imap_parser_release(p);
	CHECK(imap_parser_mem(p) < 64 * 1024);
	/* one byte over max_literal is refused */
	struct imap_limits l2 = imap_limits_default();
	l2.max_literal = msg_len - 1;
	imap_parser_set_limits(p, &l2);
	CHECK(imap_parser_feed(p, in.data, head_len, &used) == IMAP_LITERAL_WAIT);
	CHECK(!imap_parser_literal(p).accepted && imap_parser_literal(p).append);
	CHECK_STR(imap_parser_error(p), "Message too large");
	imap_parser_free(&p);
	buf_cleanup(&in);
	buf_cleanup(&s.got);
	free(msg);
}

/* ---- mUTF-7 ---- */

static void mutf7_round(const char *m7, const char *utf8)
{
	struct buf b;
	const char *err = NULL;
	buf_init(&b, 0);
	CHECK(imap_mutf7_to_utf8(view_cstr(m7), &b, &err) == 0);
	CHECK(b.len == strlen(utf8) && (!b.len || memcmp(b.data, utf8, b.len) == 0));
	buf_reset(&b);
	CHECK(imap_utf8_to_mutf7(view_cstr(utf8), &b, &err) == 0);
	CHECK(b.len == strlen(m7) && (!b.len || memcmp(b.data, m7, b.len) == 0));
	buf_cleanup(&b);
}

static void test_mutf7(void)
{
	mutf7_round("&AOQ-", "\xc3\xa4");
	mutf7_round("&ZeVnLIqe-", "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e");
	mutf7_round("&-", "&");
	mutf7_round("", "");
	mutf7_round("plain", "plain");
	mutf7_round("~peter/mail/&U,BTFw-/&ZeVnLIqe-",
		    "~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e");
	mutf7_round("&2D3eAA-", "\xf0\x9f\x98\x80"); /* U+1F600 surrogates */
	mutf7_round("a&-b&AOQA9gD8-c", "a&b\xc3\xa4\xc3\xb6\xc3\xbc" "c");
	static const char *const bad[] = {
		"&AOQ", "&AOQ-&AOQ-", "&AGE-", "&AO-", "&2D3-", "&3gA-",
		"&2D3YPQ-", "\xc3\xa4", "&A/Q-", "&-&", "tab\tx", "&AOR-",
	};
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		struct buf b;
		const char *err = NULL;
		buf_init(&b, 0);
		int r = imap_mutf7_to_utf8(view_cstr(bad[i]), &b, &err);
		if (r != -1 || err == NULL) {
			fprintf(stderr, "mutf7 accepted %s\n", bad[i]);
			failures++;
		}
		buf_cleanup(&b);
	}
	/* invalid UTF-8 cannot be encoded */
	struct buf b;
	const char *err = NULL;
	buf_init(&b, 0);
	CHECK(imap_utf8_to_mutf7(view_cstr("\xc3"), &b, &err) == -1);
	CHECK(imap_utf8_to_mutf7(view_cstr("\xed\xa0\x80"), &b, &err) == -1);
	buf_cleanup(&b);
	/* round trip of every BMP scalar in chunks */
	for (uint32_t base = 0x80; base < 0x110000; base += 0x1000) {
		struct buf u, m, back;
		buf_init(&u, 0);
		buf_init(&m, 0);
		buf_init(&back, 0);
		for (uint32_t cp = base; cp < base + 0x1000 && cp < 0x110000;
		     cp += 7) {
			if (cp >= 0xd800 && cp <= 0xdfff)
				continue;
			uint8_t e[4];
			size_t n;
			if (cp < 0x800) {
				e[0] = (uint8_t)(0xc0 | (cp >> 6));
				e[1] = (uint8_t)(0x80 | (cp & 0x3f));
				n = 2;
			} else if (cp < 0x10000) {
				e[0] = (uint8_t)(0xe0 | (cp >> 12));
				e[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
				e[2] = (uint8_t)(0x80 | (cp & 0x3f));
				n = 3;
			} else {
				e[0] = (uint8_t)(0xf0 | (cp >> 18));
				e[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
				e[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
				e[3] = (uint8_t)(0x80 | (cp & 0x3f));
				n = 4;
			}
			buf_append(&u, e, n);
			if (cp % 5 == 0)
				buf_append(&u, "a&", 2);
		}
		CHECK(imap_utf8_to_mutf7(buf_view(&u), &m, &err) == 0);
		CHECK(imap_mutf7_to_utf8(buf_view(&m), &back, &err) == 0);
		CHECK(back.len == u.len && memcmp(back.data, u.data, u.len) == 0);
		buf_cleanup(&u);
		buf_cleanup(&m);
		buf_cleanup(&back);
	}
	/* UTF8=ACCEPT: names are UTF-8, '&' literal */
	const char *in = "a SELECT \"\xc3\xa4&AOQ-\"\r\n";
	check_stream(NULL, true, in, strlen(in),
		     "OK a SELECT mb=\\xc3\\xa4&AOQ-|", __LINE__);
	const char *in2 = "a SELECT {2}\r\n\xc3\x28\r\n";
	check_stream(NULL, true, in2, strlen(in2),
		     "WAIT 2 ok|BAD a Invalid UTF-8 in mailbox name|", __LINE__);
}

/* ---- sequence sets ---- */

static const struct imap_command *parse1(struct imap_parser *p, const char *s)
{
	size_t used;
	enum imap_result r =
		imap_parser_feed(p, (const uint8_t *)s, strlen(s), &used);
	if (r != IMAP_OK || used != strlen(s)) {
		fprintf(stderr, "parse1 failed: %s -> %s %s\n", s,
			imap_result_str(r), imap_parser_error(p));
		failures++;
		return NULL;
	}
	return imap_parser_command(p);
}

static void test_seqsets(void)
{
	struct imap_parser *p = imap_parser_new(NULL);
	const struct imap_command *c =
		parse1(p, "a FETCH 1:*,4,7:9,$ FLAGS\r\n");
	if (c) {
		const struct imap_seqset *s = &c->u.fetch.set;
		CHECK(s->saved && s->count == 1 && s->ranges[0].lo == 1 &&
		      s->ranges[0].hi == IMAP_SEQ_STAR);
		struct imap_seq_range out[4];
		CHECK(imap_seqset_resolve(s, 10, out) == 1);
		CHECK(out[0].lo == 1 && out[0].hi == 10);
		CHECK(imap_seqset_resolve(s, 0, out) == 0);
	}
	c = parse1(p, "a FETCH 10:*,3,5:6 FLAGS\r\n");
	if (c) {
		const struct imap_seqset *s = &c->u.fetch.set;
		CHECK(s->count == 3);
		struct imap_seq_range out[3];
		/* * = 4: 10:* is 4:10 -> 4; 5:6 beyond; 3 and 4 merge */
		size_t n = imap_seqset_resolve(s, 4, out);
		CHECK(n == 1 && out[0].lo == 3 && out[0].hi == 4);
		(void)n;
		CHECK(imap_seqset_max_number(s) == 10);
		CHECK(imap_seqset_contains(s, 4, 4));
		CHECK(!imap_seqset_contains(s, 2, 4));
		CHECK(imap_seqset_contains(s, 12, 20));
		CHECK(!imap_seqset_contains(s, 7, 20));
		uint32_t uids[] = { 1, 3, 5, 6, 7, 9, 10, 11, 40 };
		uint32_t got[9];
		size_t k = imap_seqset_filter_uids(s, uids, 9, got);
		CHECK(k == 6 && got[0] == 3 && got[1] == 5 && got[2] == 6 &&
		      got[3] == 10 && got[4] == 11 && got[5] == 40);
		uint32_t few[] = { 2, 7 }; /* '*' = 7: 10:* means 7:10 */
		k = imap_seqset_filter_uids(s, few, 2, got);
		CHECK(k == 1 && got[0] == 7);
	}
	c = parse1(p, "a UID FETCH *:5,4294967295 UID\r\n");
	if (c) {
		const struct imap_seqset *s = &c->u.fetch.set;
		CHECK(s->count == 1 && s->ranges[0].lo == 5 &&
		      s->ranges[0].hi == IMAP_SEQ_STAR);
	}
	c = parse1(p, "a UID FETCH 1:2,*,3 UID\r\n");
	if (c) {
		const struct imap_seqset *s = &c->u.fetch.set;
		CHECK(s->count == 2 && s->ranges[0].hi == 3 &&
		      s->ranges[1].lo == IMAP_SEQ_STAR);
		struct imap_seq_range out[2];
		CHECK(imap_seqset_resolve(s, 3, out) == 1 && out[0].hi == 3);
		CHECK(imap_seqset_resolve(s, 9, out) == 2 && out[1].lo == 9);
	}
	/* search trees */
	c = parse1(p, "a SEARCH OR (NOT SEEN FROM x) OR NOT 1:3 UID 4\r\n");
	if (c) {
		const struct imap_search_key *k = c->u.search.root;
		CHECK(k->type == IMAP_SEARCH_OR && k->u.sub.count == 2);
		const struct imap_search_key *a = &k->u.sub.keys[0];
		CHECK(a->type == IMAP_SEARCH_AND && a->u.sub.count == 2);
		CHECK(a->u.sub.keys[0].type == IMAP_SEARCH_NOT);
		CHECK(a->u.sub.keys[0].u.sub.keys[0].type == IMAP_SEARCH_SEEN);
		CHECK(a->u.sub.keys[1].type == IMAP_SEARCH_FROM);
		CHECK(view_eq_cstr(a->u.sub.keys[1].u.str, "x"));
		const struct imap_search_key *b = &k->u.sub.keys[1];
		CHECK(b->type == IMAP_SEARCH_OR);
		CHECK(b->u.sub.keys[0].type == IMAP_SEARCH_NOT);
		CHECK(b->u.sub.keys[0].u.sub.keys[0].type == IMAP_SEARCH_SEQSET);
		CHECK(b->u.sub.keys[1].type == IMAP_SEARCH_UID);
		CHECK(b->u.sub.keys[1].u.set.ranges[0].lo == 4);
	}
	imap_parser_free(&p);
	imap_parser_free(&p); /* NULL-safe */
}

static void test_idle_done(void)
{
	size_t used;
	CHECK(imap_idle_done((const uint8_t *)"DONE\r\n", 6, &used) == IMAP_OK &&
	      used == 6);
	CHECK(imap_idle_done((const uint8_t *)"done\nA1", 7, &used) == IMAP_OK &&
	      used == 5);
	CHECK(imap_idle_done((const uint8_t *)"DON", 3, &used) == IMAP_MORE &&
	      used == 0);
	CHECK(imap_idle_done(NULL, 0, &used) == IMAP_MORE);
	CHECK(imap_idle_done((const uint8_t *)"a NOOP\r\n", 8, &used) ==
		      IMAP_BAD &&
	      used == 8);
	CHECK(imap_idle_done((const uint8_t *)"DONE \r\n", 7, &used) == IMAP_BAD);
	uint8_t junk[2000];
	memset(junk, 'x', sizeof(junk));
	CHECK(imap_idle_done(junk, sizeof(junk), &used) == IMAP_FATAL);
	/* IDLE then DONE then the next command */
	struct imap_parser *p = imap_parser_new(NULL);
	const char *s = "i IDLE\r\nDONE\r\nn NOOP\r\n";
	CHECK(imap_parser_feed(p, (const uint8_t *)s, strlen(s), &used) == IMAP_OK);
	CHECK(imap_parser_command(p)->cmd == IMAP_CMD_IDLE);
	size_t off = used;
	CHECK(imap_idle_done((const uint8_t *)s + off, strlen(s) - off, &used) ==
	      IMAP_OK);
	off += used;
	CHECK(imap_parser_feed(p, (const uint8_t *)s + off, strlen(s) - off,
			       &used) == IMAP_OK);
	CHECK(imap_parser_command(p)->cmd == IMAP_CMD_NOOP);
	imap_parser_release(p);
	CHECK(imap_parser_command(p) == NULL);
	imap_parser_free(&p);
}

static void test_tree(void)
{
	struct imap_parser *p = imap_parser_new(NULL);
	const struct imap_command *c =
		parse1(p, "a X (a (b \"c\" NIL) {1+}\r\nd) e {0+}\r\n ()\r\n");
	if (c) {
		struct buf b;
		buf_init(&b, 0);
		dump_args(&b, c->args, c->args_count);
		buf_append(&b, "", 1);
		CHECK_STR((char *)b.data,
			  "(a (b \"c\" NIL) {1}d) e {0} ()");
		CHECK(c->args[0].list[1].list[2].type == IMAP_ARG_NIL);
		CHECK(c->args[0].list[2].str.ptr[1] == 0);
		buf_cleanup(&b);
	}
	/* literal8 only in APPEND */
	size_t used;
	const char *s = "a X ~{1+}\r\nx\r\n";
	CHECK(imap_parser_feed(p, (const uint8_t *)s, strlen(s), &used) ==
	      IMAP_BAD);
	/* error text never echoes raw bytes beyond a bounded token */
	struct buf big;
	buf_init(&big, 0);
	put(&big, "a SEARCH ");
	for (int i = 0; i < 200; i++)
		put(&big, "Z");
	put(&big, "\x01\r\n");
	CHECK(imap_parser_feed(p, big.data, big.len, &used) == IMAP_BAD);
	CHECK(strlen(imap_parser_error(p)) < 64);
	buf_cleanup(&big);
	buf_init(&big, 0);
	put(&big, "a SEARCH Z\x7f\r\n");
	CHECK(imap_parser_feed(p, big.data, big.len, &used) == IMAP_BAD);
	for (const char *e = imap_parser_error(p); *e; e++)
		CHECK(*e >= 0x20 && *e < 0x7f);
	buf_cleanup(&big);
	imap_parser_free(&p);
}

static void test_datetime(void)
{
	struct imap_datetime dt = { 1970, 1, 1, 0, 0, 0, 0 };
	CHECK(imap_datetime_to_unix(&dt) == 0);
	struct imap_datetime dt2 = { 2000, 2, 29, 12, 0, 0, 60 };
	CHECK(imap_datetime_to_unix(&dt2) == 951825600 - 3600);
	const char *bad[] = {
		"a APPEND x \"31-Apr-2024 10:00:00 +0000\" {1+}\r\nx\r\n",
		"a APPEND x \"1-Jan-2024 24:00:00 +0000\" {1+}\r\nx\r\n",
		"a APPEND x \"1-Jan-2024 10:00:00 0000\" {1+}\r\nx\r\n",
		"a APPEND x \"1-Jan-2024 10:00:00 +0060\" {1+}\r\nx\r\n",
	};
	for (size_t i = 0; i < ARRAY_LEN(bad); i++)
		check_stream(NULL, false, bad[i], strlen(bad[i]),
			     "BAD a Invalid date-time|", __LINE__);
}

int main(void)
{
	page_size = (size_t)sysconf(_SC_PAGESIZE);
	guard_pages = mmap(NULL, 2 * page_size, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (guard_pages == MAP_FAILED ||
	    mprotect(guard_pages + page_size, page_size, PROT_NONE) != 0) {
		perror("mmap");
		return 1;
	}
	test_tables();
	test_nul_inputs();
	test_pipelining();
	test_limits();
	test_sink();
	test_mutf7();
	test_seqsets();
	test_idle_done();
	test_tree();
	test_datetime();
	munmap(guard_pages, 2 * page_size);
	if (failures) {
		fprintf(stderr, "%d failure(s)\n", failures);
		return 1;
	}
	printf("test_imap_parse: %zu ok + %zu bad table cases passed\n",
	       ARRAY_LEN(ok_cases), ARRAY_LEN(bad_cases));
	return 0;
}
