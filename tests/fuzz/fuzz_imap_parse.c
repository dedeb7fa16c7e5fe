/* libFuzzer target for node/imap_parse.c: the input is a client's byte
 * stream, after one configuration byte.
 *
 * The configuration byte picks the limits (default, pre-auth, or tiny ones
 * that make every limit reachable), UTF8=ACCEPT and whether APPEND streams
 * to a sink. The stream is parsed whole, one byte at a time and in pieces
 * of pseudo-random sizes, answering literal waits; every split must give
 * the same results, the same commands (layer-1 tree and a digest of the
 * typed decoding, which walks every pointer) and the same streamed bytes.
 * Typed results are checked for their invariants (normalised sequence
 * sets, UTF-8 mailbox names that survive a modified UTF-7 round trip).
 * Modified UTF-7 is also fuzzed directly: whatever decodes must re-encode
 * to the same bytes.
 *
 * Built with -DFUZZ_STANDALONE_MAIN it has its own main() that runs each file
 * named on the command line, or each file of a named directory, through the
 * target once, so CI can replay tests/fuzz/corpus/imap_parse without
 * libFuzzer. */
#include <stdio.h>
#include <stdlib.h>

#include "common/base.h"
#include "proto/imap_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_REQUIRE(cond)                                                   \
	do {                                                                 \
		if (!(cond)) {                                               \
			fprintf(stderr, "%s:%d: property failed: %s\n",     \
				__FILE__, __LINE__, #cond);                  \
			abort();                                             \
		}                                                            \
	} while (0)

/* FNV-1a over everything a command decodes to. */
struct digest {
	uint64_t h;
};

static void dig(struct digest *d, const void *p, size_t n)
{
	const uint8_t *b = p;
	for (size_t i = 0; i < n; i++) {
		d->h ^= b[i];
		d->h *= 1099511628211ull;
	}
}
static void dig_u(struct digest *d, uint64_t v) { dig(d, &v, sizeof(v)); }
static void dig_v(struct digest *d, struct view v)
{
	dig_u(d, v.len);
	if (v.len)
		dig(d, v.ptr, v.len);
}

static bool utf8_ok(struct view v)
{
	struct buf m, back;
	const char *err;
	buf_init(&m, 0);
	buf_init(&back, 0);
	bool ok = imap_utf8_to_mutf7(v, &m, &err) == 0 &&
		  imap_mutf7_to_utf8(buf_view(&m), &back, &err) == 0 &&
		  back.len == v.len &&
		  (v.len == 0 || memcmp(back.data, v.ptr, v.len) == 0);
	buf_cleanup(&m);
	buf_cleanup(&back);
	return ok;
}

static void dig_mailbox(struct digest *d, struct view v)
{
	for (size_t i = 0; i < v.len; i++)
		FUZZ_REQUIRE(v.ptr[i] >= 0x20 && v.ptr[i] != 0x7f);
	FUZZ_REQUIRE(utf8_ok(v));
	dig_v(d, v);
}

static void dig_set(struct digest *d, const struct imap_seqset *s)
{
	dig_u(d, s->saved);
	for (size_t i = 0; i < s->count; i++) {
		const struct imap_seq_range *r = &s->ranges[i];
		FUZZ_REQUIRE(r->lo <= r->hi);
		FUZZ_REQUIRE(r->lo >= 1);
		FUZZ_REQUIRE(r->lo <= UINT32_MAX || r->lo == IMAP_SEQ_STAR);
		FUZZ_REQUIRE(r->hi <= UINT32_MAX || r->hi == IMAP_SEQ_STAR);
		if (i > 0)
			FUZZ_REQUIRE(s->ranges[i - 1].hi != IMAP_SEQ_STAR &&
				     s->ranges[i - 1].hi + 1 < r->lo);
		dig_u(d, r->lo);
		dig_u(d, r->hi);
	}
	if (s->count > 0) {
		struct imap_seq_range *out = xmalloc(s->count * sizeof(*out));
		uint32_t max = (uint32_t)(s->ranges[0].lo % 1000) + 1;
		size_t n = imap_seqset_resolve(s, max, out);
		for (size_t i = 0; i < n; i++) {
			FUZZ_REQUIRE(out[i].lo >= 1 && out[i].lo <= out[i].hi &&
				     out[i].hi <= max);
			FUZZ_REQUIRE(imap_seqset_contains(s, (uint32_t)out[i].lo,
							  max));
		}
		free(out);
	}
}

static void dig_key(struct digest *d, const struct imap_search_key *k,
		    unsigned depth)
{
	FUZZ_REQUIRE(depth < 1000);
	dig_u(d, k->type);
	switch (k->type) {
	case IMAP_SEARCH_AND:
	case IMAP_SEARCH_OR:
	case IMAP_SEARCH_NOT:
		FUZZ_REQUIRE(k->u.sub.count >= 1);
		for (size_t i = 0; i < k->u.sub.count; i++)
			dig_key(d, &k->u.sub.keys[i], depth + 1);
		break;
	case IMAP_SEARCH_SEQSET:
	case IMAP_SEARCH_UID:
		dig_set(d, &k->u.set);
		break;
	case IMAP_SEARCH_HEADER:
		dig_v(d, k->u.header.field);
		dig_v(d, k->u.header.value);
		break;
	case IMAP_SEARCH_KEYWORD: case IMAP_SEARCH_UNKEYWORD:
	case IMAP_SEARCH_BCC: case IMAP_SEARCH_BODY: case IMAP_SEARCH_CC:
	case IMAP_SEARCH_FROM: case IMAP_SEARCH_SUBJECT: case IMAP_SEARCH_TEXT:
	case IMAP_SEARCH_TO: case IMAP_SEARCH_EMAILID: case IMAP_SEARCH_THREADID:
		dig_v(d, k->u.str);
		break;
	case IMAP_SEARCH_MODSEQ:
		dig_u(d, k->u.modseq.value);
		dig_v(d, k->u.modseq.entry);
		break;
	default:
		dig(d, &k->u.date, sizeof(k->u.date));
		dig_u(d, k->u.number);
		break;
	}
}

static void dig_views(struct digest *d, const struct view *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dig_v(d, v[i]);
}

static void dig_args(struct digest *d, const struct imap_arg *a, size_t n,
		     unsigned depth)
{
	FUZZ_REQUIRE(depth < 1000);
	for (size_t i = 0; i < n; i++) {
		dig_u(d, a[i].type);
		dig_u(d, a[i].literal8 | a[i].has_nul << 1 | a[i].streamed << 2);
		if (a[i].type == IMAP_ARG_LIST) {
			dig_args(d, a[i].list, a[i].list_count, depth + 1);
		} else {
			dig_v(d, a[i].str);
			FUZZ_REQUIRE(a[i].str.ptr[a[i].str.len] == 0);
			if (a[i].type == IMAP_ARG_LITERAL && !a[i].streamed)
				FUZZ_REQUIRE(a[i].str.len == a[i].literal_size);
		}
	}
}

static uint64_t digest_command(const struct imap_command *c)
{
	struct digest d = { 14695981039346656037ull };
	dig_u(&d, c->cmd);
	dig_u(&d, c->uid);
	dig_v(&d, c->tag);
	dig_v(&d, c->name);
	dig_args(&d, c->args, c->args_count, 0);
	switch (c->cmd) {
	case IMAP_CMD_AUTHENTICATE:
		dig_v(&d, c->u.authenticate.mechanism);
		dig_v(&d, c->u.authenticate.ir);
		break;
	case IMAP_CMD_LOGIN:
		dig_v(&d, c->u.login.user);
		dig_v(&d, c->u.login.pass);
		break;
	case IMAP_CMD_ENABLE:
		dig_views(&d, c->u.enable.caps, c->u.enable.count);
		break;
	case IMAP_CMD_SELECT:
	case IMAP_CMD_EXAMINE:
		dig_mailbox(&d, c->u.select.mailbox);
		dig_u(&d, c->u.select.modseq + c->u.select.uidvalidity);
		dig_set(&d, &c->u.select.known_uids);
		dig_set(&d, &c->u.select.known_seqs);
		dig_set(&d, &c->u.select.known_seq_uids);
		break;
	case IMAP_CMD_CREATE:
		dig_mailbox(&d, c->u.create.mailbox);
		dig_views(&d, c->u.create.use, c->u.create.use_count);
		break;
	case IMAP_CMD_DELETE:
	case IMAP_CMD_SUBSCRIBE:
	case IMAP_CMD_UNSUBSCRIBE:
	case IMAP_CMD_GETQUOTAROOT:
		dig_mailbox(&d, c->u.mailbox);
		break;
	case IMAP_CMD_RENAME:
		dig_mailbox(&d, c->u.rename.from);
		dig_mailbox(&d, c->u.rename.to);
		break;
	case IMAP_CMD_LIST:
	case IMAP_CMD_LSUB:
		dig_u(&d, c->u.list.select_opts << 16 | c->u.list.return_opts);
		dig_mailbox(&d, c->u.list.reference);
		FUZZ_REQUIRE(c->u.list.pattern_count >= 1);
		for (size_t i = 0; i < c->u.list.pattern_count; i++)
			dig_mailbox(&d, c->u.list.patterns[i]);
		break;
	case IMAP_CMD_STATUS:
		dig_mailbox(&d, c->u.status.mailbox);
		FUZZ_REQUIRE(c->u.status.items != 0);
		break;
	case IMAP_CMD_APPEND:
		dig_mailbox(&d, c->u.append.mailbox);
		FUZZ_REQUIRE(c->u.append.count >= 1);
		for (size_t i = 0; i < c->u.append.count; i++) {
			const struct imap_append_msg *m = &c->u.append.msgs[i];
			dig_views(&d, m->flags, m->flag_count);
			if (m->has_date)
				dig_u(&d, (uint64_t)imap_datetime_to_unix(&m->date));
			dig_u(&d, m->size);
			if (!m->streamed) {
				FUZZ_REQUIRE(m->data.len == m->size);
				dig_v(&d, m->data);
			}
		}
		break;
	case IMAP_CMD_EXPUNGE:
		dig_set(&d, &c->u.expunge.set);
		break;
	case IMAP_CMD_SEARCH:
		dig_v(&d, c->u.search.charset);
		dig_key(&d, c->u.search.root, 0);
		break;
	case IMAP_CMD_FETCH:
		dig_set(&d, &c->u.fetch.set);
		FUZZ_REQUIRE(c->u.fetch.count >= 1);
		for (size_t i = 0; i < c->u.fetch.count; i++) {
			const struct imap_fetch_item *it = &c->u.fetch.items[i];
			dig_u(&d, it->type);
			for (size_t k = 0; k < it->section.part_count; k++)
				dig_u(&d, it->section.parts[k]);
			dig_views(&d, it->section.fields,
				  it->section.field_count);
			dig_u(&d, it->partial_offset + it->partial_length);
		}
		break;
	case IMAP_CMD_STORE:
		dig_set(&d, &c->u.store.set);
		dig_views(&d, c->u.store.flags, c->u.store.flag_count);
		break;
	case IMAP_CMD_COPY:
	case IMAP_CMD_MOVE:
		dig_set(&d, &c->u.copy.set);
		dig_mailbox(&d, c->u.copy.mailbox);
		break;
	case IMAP_CMD_ID:
		for (size_t i = 0; i < c->u.id.count; i++) {
			dig_v(&d, c->u.id.params[i].key);
			dig_v(&d, c->u.id.params[i].value);
		}
		break;
	case IMAP_CMD_GETQUOTA:
		dig_v(&d, c->u.getquota.root);
		break;
	case IMAP_CMD_SETQUOTA:
		for (size_t i = 0; i < c->u.setquota.count; i++) {
			dig_v(&d, c->u.setquota.resources[i].name);
			dig_u(&d, c->u.setquota.resources[i].limit);
		}
		break;
	case IMAP_CMD_SORT:
		for (size_t i = 0; i < c->u.sort.criteria_count; i++)
			dig_u(&d, c->u.sort.criteria[i].key);
		dig_v(&d, c->u.sort.charset);
		dig_key(&d, c->u.sort.root, 0);
		break;
	case IMAP_CMD_THREAD:
		dig_v(&d, c->u.thread.algorithm);
		dig_key(&d, c->u.thread.root, 0);
		break;
	case IMAP_CMD_COMPRESS:
		dig_v(&d, c->u.compress.mechanism);
		break;
	default:
		break;
	}
	return d.h;
}

struct sink_state {
	struct digest d;
	uint64_t bytes, expected;
	unsigned open;
};

static int s_begin(void *ctx, uint64_t size, bool lit8)
{
	struct sink_state *s = ctx;
	FUZZ_REQUIRE(s->open == 0);
	s->open = 1;
	s->expected = size;
	s->bytes = 0;
	dig_u(&s->d, size << 1 | lit8);
	return 0;
}

static int s_data(void *ctx, const uint8_t *data, size_t len)
{
	struct sink_state *s = ctx;
	FUZZ_REQUIRE(s->open == 1 && len > 0);
	/* fail some messages to exercise sink_failed: after a failure the
	 * parser calls no more hooks for this literal */
	if (s->expected % 7 == 3) {
		s->open = 0;
		return -1;
	}
	s->bytes += len;
	FUZZ_REQUIRE(s->bytes <= s->expected);
	dig(&s->d, data, len);
	return 0;
}

static int s_end(void *ctx)
{
	struct sink_state *s = ctx;
	FUZZ_REQUIRE(s->open == 1);
	s->open = 0;
	return 0;
}

struct outcome {
	struct digest d;
	size_t results;
	enum imap_result last;
};

static void run(const uint8_t *data, size_t size, const struct imap_limits *lim,
		bool utf8, bool use_sink, unsigned mode, struct outcome *o,
		struct sink_state *ss)
{
	struct imap_parser *p = imap_parser_new(lim);
	imap_parser_set_utf8(p, utf8);
	memset(ss, 0, sizeof(*ss));
	struct imap_literal_sink sink = { s_begin, s_data, s_end, ss };
	if (use_sink)
		imap_parser_set_sink(p, &sink);
	memset(o, 0, sizeof(*o));
	o->last = IMAP_MORE;
	uint32_t rnd = (uint32_t)size * 2654435761u + mode;
	size_t off = 0;
	while (off < size) {
		size_t want;
		if (mode == 0) {
			want = size - off;
		} else if (mode == 1) {
			want = 1;
		} else {
			rnd = rnd * 1103515245 + 12345;
			want = 1 + (rnd >> 16) % 17;
		}
		if (want > size - off)
			want = size - off;
		size_t end = off + want;
		while (off < end) {
			size_t used = 0;
			enum imap_result r =
				imap_parser_feed(p, data + off, end - off, &used);
			FUZZ_REQUIRE(used <= end - off);
			off += used;
			if (r == IMAP_MORE) {
				FUZZ_REQUIRE(off == end);
				break;
			}
			o->results++;
			o->last = r;
			dig_u(&o->d, r);
			dig_u(&o->d, off);
			struct view tag = imap_parser_tag(p);
			dig_v(&o->d, tag);
			const char *err = imap_parser_error(p);
			for (const char *e = err; *e; e++)
				FUZZ_REQUIRE(*e >= 0x20 && *e < 0x7f);
			FUZZ_REQUIRE(strlen(err) < 160);
			switch (r) {
			case IMAP_OK:
				FUZZ_REQUIRE(imap_parser_command(p) != NULL);
				dig_u(&o->d,
				      digest_command(imap_parser_command(p)));
				break;
			case IMAP_BAD:
				FUZZ_REQUIRE(err[0] != '\0');
				FUZZ_REQUIRE(imap_parser_command(p) == NULL);
				dig(&o->d, err, strlen(err));
				break;
			case IMAP_LITERAL_WAIT: {
				struct imap_literal_info li =
					imap_parser_literal(p);
				dig_u(&o->d, li.size);
				dig_u(&o->d, li.accepted);
				break;
			}
			case IMAP_FATAL:
				FUZZ_REQUIRE(err[0] != '\0');
				dig(&o->d, err, strlen(err));
				FUZZ_REQUIRE(imap_parser_feed(p, data, size,
							      &used) ==
						     IMAP_FATAL &&
					     used == 0);
				goto out;
			case IMAP_MORE:
				break;
			}
			/* memory stays bounded by the limits */
			FUZZ_REQUIRE(imap_parser_mem(p) <
				     4096 + 2 * (lim->max_line + lim->max_command) +
					     64 * (size_t)lim->max_args +
					     32 * lim->max_line +
					     4 * lim->max_command + 65536);
		}
	}
out:
	imap_parser_free(&p);
}

static void check_mutf7(const uint8_t *data, size_t size)
{
	struct buf u, m;
	const char *err;
	buf_init(&u, 0);
	buf_init(&m, 0);
	if (imap_mutf7_to_utf8(view_make(data, size), &u, &err) == 0) {
		FUZZ_REQUIRE(imap_utf8_to_mutf7(buf_view(&u), &m, &err) == 0);
		FUZZ_REQUIRE(m.len == size &&
			     (size == 0 || memcmp(m.data, data, size) == 0));
	}
	buf_cleanup(&u);
	buf_cleanup(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t empty[1];
	if (size == 0)
		data = empty; /* never form NULL + 0 */
	uint8_t cfg = size ? data[0] : 0;
	const uint8_t *in = size ? data + 1 : data;
	size_t in_len = size ? size - 1 : 0;

	struct imap_limits lim;
	switch (cfg & 3) {
	case 0:
	case 3:
		lim = imap_limits_default();
		break;
	case 1:
		lim = imap_limits_preauth();
		break;
	default:
		lim = (struct imap_limits){
			.max_line = 80,
			.max_literal = 20,
			.max_nonsync_literal = 12,
			.max_command = 120,
			.max_stream_literal = 40,
			.max_skip = 30,
			.max_depth = 3,
			.max_args = 12,
		};
	}
	bool utf8 = cfg & 4;
	bool use_sink = cfg & 8;

	struct outcome o[3];
	struct sink_state ss[3];
	for (unsigned mode = 0; mode < 3; mode++)
		run(in, in_len, &lim, utf8, use_sink, mode, &o[mode], &ss[mode]);
	for (unsigned mode = 1; mode < 3; mode++) {
		FUZZ_REQUIRE(o[mode].results == o[0].results);
		FUZZ_REQUIRE(o[mode].last == o[0].last);
		FUZZ_REQUIRE(o[mode].d.h == o[0].d.h);
		FUZZ_REQUIRE(ss[mode].d.h == ss[0].d.h);
	}
	check_mutf7(in, in_len);
	return 0;
}

#include "tests/fuzz/fuzz_main.h"
