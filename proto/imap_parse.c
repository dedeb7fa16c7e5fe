#include "proto/imap_parse.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- limits ---- */

struct imap_limits imap_limits_default(void)
{
	return (struct imap_limits){
		.max_line = 64 * 1024,
		.max_literal = 1024 * 1024,
		.max_nonsync_literal = 1024 * 1024,
		.max_command = 2 * 1024 * 1024,
		.max_stream_literal = 64u * 1024 * 1024,
		.max_skip = 1024 * 1024,
		.max_depth = 16,
		.max_args = 8192,
	};
}

struct imap_limits imap_limits_preauth(void)
{
	return (struct imap_limits){
		.max_line = 8 * 1024,
		.max_literal = 8 * 1024,
		.max_nonsync_literal = 4096,
		.max_command = 16 * 1024,
		.max_stream_literal = 0,
		.max_skip = 16 * 1024,
		.max_depth = 4,
		.max_args = 64,
	};
}

/* ---- character classes ---- */

static bool is_ctl(uint8_t c) { return c < 0x20 || c == 0x7f; }

/* ATOM-CHAR: any CHAR except atom-specials. */
static bool is_atom_char(uint8_t c)
{
	if (c >= 0x80 || is_ctl(c))
		return false;
	switch (c) {
	case '(': case ')': case '{': case ' ': case '%': case '*':
	case '"': case '\\': case ']':
		return false;
	}
	return true;
}

static bool is_astring_char(uint8_t c) { return is_atom_char(c) || c == ']'; }
static bool is_tag_char(uint8_t c) { return is_astring_char(c) && c != '+'; }
/* What layer 1 accepts inside an atom: ASTRING-CHAR, list-wildcards and
 * '\' (flags); layer 2 is stricter per context. */
static bool is_tok_atom_char(uint8_t c)
{
	return is_astring_char(c) || c == '%' || c == '*' || c == '\\';
}
static bool is_digit(uint8_t c) { return c >= '0' && c <= '9'; }
static uint8_t to_upper(uint8_t c)
{
	return c >= 'a' && c <= 'z' ? (uint8_t)(c - 32) : c;
}

static bool view_prefix_nocase(struct view v, const char *s)
{
	size_t n = strlen(s);
	if (v.len < n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (to_upper(v.ptr[i]) != to_upper((uint8_t)s[i]))
			return false;
	return true;
}

static bool utf8_valid(const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len;) {
		uint32_t cp;
		size_t n = utf8_decode(p + i, len - i, &cp);
		if (n == 0)
			return false;
		i += n;
	}
	return true;
}

/* ---- arena: per-command, stable pointers, bounded ---- */

struct arena_block {
	struct arena_block *next;
	size_t size, used;
	max_align_t data[];
};

struct arena {
	struct arena_block *head;
	size_t total; /* bytes allocated from malloc */
	size_t max;
};

static void arena_free_all(struct arena *a)
{
	struct arena_block *b = a->head;
	while (b) {
		struct arena_block *next = b->next;
		free(b);
		b = next;
	}
	a->head = NULL;
	a->total = 0;
}

/* NULL when the command's budget is exhausted. */
static void *arena_alloc(struct arena *a, size_t n)
{
	const size_t align = sizeof(max_align_t);
	if (n == 0)
		n = 1;
	if (n > SIZE_MAX / 2)
		return NULL;
	n = (n + align - 1) & ~(align - 1);
	struct arena_block *b = a->head;
	if (!b || b->size - b->used < n) {
		/* Most commands need a few hundred bytes: a small first
		 * block, then 4 KiB ones. */
		size_t size = MAX(n, (size_t)(a->head ? 4096 : 512) - sizeof(*b));
		if (a->total + size + sizeof(*b) > a->max)
			return NULL;
		b = xmalloc(sizeof(*b) + size);
		b->size = size;
		b->used = 0;
		b->next = a->head;
		a->head = b;
		a->total += size + sizeof(*b);
	}
	void *p = (uint8_t *)b->data + b->used;
	b->used += n;
	memset(p, 0, n);
	return p;
}

/* ---- parser ---- */

enum tok_state {
	TS_START,
	TS_TAG,
	TS_NAME,
	TS_ARG,
	TS_ATOM,
	TS_ATOM_BRACKET,
	TS_ATOM_BRACKET_Q,
	TS_ATOM_BRACKET_QESC,
	TS_QUOTED,
	TS_QUOTED_ESC,
	TS_LIT_TILDE,
	TS_LIT_DIGITS,
	TS_LIT_PLUS,
	TS_LIT_CR,
	TS_LIT_LF,
	TS_LIT_DATA,
	TS_CR,
	TS_SKIP,
	TS_SKIP_LIT,
	TS_FATAL,
};

enum tail_state { TAIL_NONE, TAIL_LBRACE, TAIL_DIGITS, TAIL_PLUS, TAIL_RBRACE,
		  TAIL_CR };

#define NODE_NONE UINT32_MAX
#define NF_LITERAL8 0x01
#define NF_HAS_NUL 0x02
#define NF_STREAMED 0x04
#define NF_UTF8_LIST 0x08

struct node {
	uint8_t type; /* enum imap_arg_type */
	uint8_t flags;
	uint32_t parent;
	size_t off, len;
	uint64_t lit_size;
	uint32_t count, start, fill; /* LIST: tree building */
};

#define TAG_MAX 64
#define ERR_MAX 160
#define SEARCH_DEPTH_MAX 64

struct imap_parser {
	struct imap_limits lim, next_lim;
	bool utf8, next_utf8;
	struct imap_literal_sink sink, next_sink;
	bool has_sink, next_has_sink;

	enum tok_state st;
	bool finished; /* a result was returned: reset before the next byte */

	struct buf data; /* token bytes */
	struct node *nodes;
	size_t nodes_count, nodes_cap;
	uint32_t cur_list;
	unsigned depth;
	bool need_sep;
	uint32_t tok_node;
	size_t tag_off, tag_len;
	bool tag_ok;
	size_t name_off, name_len;
	bool is_append;
	uint32_t top_count;

	size_t line_bytes;     /* non-literal bytes of this command */
	size_t lit_mem;        /* in-memory literal bytes */
	uint64_t skipped;      /* literal bytes discarded */
	bool saw_cr;

	uint64_t lit_num;
	unsigned lit_digits;
	bool lit_overflow, lit_plus, lit8;
	uint64_t lit_remaining;
	bool lit_stream;
	bool sink_failed;

	enum tail_state tail;
	uint64_t tail_num;
	bool tail_plus, tail_overflow;

	char err[ERR_MAX];
	struct imap_literal_info wait;

	struct arena arena;
	struct imap_command cmd;
	bool cmd_valid;
	unsigned bare_lf;
};

enum step { STEP_CONT, STEP_REDO, STEP_OK, STEP_BAD, STEP_WAIT, STEP_FATAL };

static void set_error(struct imap_parser *p, const char *msg)
{
	snprintf(p->err, sizeof(p->err), "%s", msg);
}

/* "msg: TOKEN" with TOKEN reduced to at most 32 printable ASCII bytes. */
static void set_error_tok(struct imap_parser *p, const char *msg,
			  struct view tok)
{
	char t[40];
	size_t n = 0;
	for (size_t i = 0; i < tok.len && n < 32; i++) {
		uint8_t c = tok.ptr[i];
		t[n++] = c > 0x20 && c < 0x7f ? (char)c : '?';
	}
	if (tok.len > 32) {
		memcpy(t + n, "...", 3);
		n += 3;
	}
	t[n] = '\0';
	snprintf(p->err, sizeof(p->err), "%s: %s", msg, t);
}

static void command_reset(struct imap_parser *p)
{
	if (p->data.data) {
		explicit_bzero(p->data.data, p->data.len);
		if (p->data.cap > 16384)
			buf_cleanup(&p->data);
		else
			buf_reset(&p->data);
	}
	if (p->nodes_cap > 256) {
		free(p->nodes);
		p->nodes = NULL;
		p->nodes_cap = 0;
	}
	p->nodes_count = 0;
	arena_free_all(&p->arena);

	p->lim = p->next_lim;
	p->utf8 = p->next_utf8;
	p->sink = p->next_sink;
	p->has_sink = p->next_has_sink;
	p->data.max = p->lim.max_line + p->lim.max_command + p->lim.max_args +
		      64;
	p->arena.max = 32 * p->lim.max_line + 4 * p->lim.max_command + 65536;

	p->st = TS_START;
	p->finished = false;
	p->cur_list = NODE_NONE;
	p->depth = 0;
	p->need_sep = false;
	p->tok_node = NODE_NONE;
	p->tag_off = p->tag_len = 0;
	p->tag_ok = false;
	p->name_off = p->name_len = 0;
	p->is_append = false;
	p->top_count = 0;
	p->line_bytes = p->lit_mem = 0;
	p->skipped = 0;
	p->saw_cr = false;
	p->lit_remaining = 0;
	p->lit_stream = false;
	p->sink_failed = false;
	p->tail = TAIL_NONE;
	p->err[0] = '\0';
	memset(&p->wait, 0, sizeof(p->wait));
	memset(&p->cmd, 0, sizeof(p->cmd));
	p->cmd_valid = false;
}

struct imap_parser *imap_parser_new(const struct imap_limits *limits)
{
	struct imap_parser *p = xcalloc(1, sizeof(*p));
	p->next_lim = limits ? *limits : imap_limits_default();
	buf_init(&p->data, 0);
	command_reset(p);
	return p;
}

void imap_parser_free(struct imap_parser **pp)
{
	struct imap_parser *p = *pp;
	if (!p)
		return;
	if (p->data.data)
		explicit_bzero(p->data.data, p->data.len);
	buf_cleanup(&p->data);
	free(p->nodes);
	arena_free_all(&p->arena);
	free(p);
	*pp = NULL;
}

void imap_parser_reset(struct imap_parser *p)
{
	command_reset(p);
}

bool imap_parser_release(struct imap_parser *p)
{
	if (p->finished)
		command_reset(p);
	if (p->st != TS_START)
		return false;
	/* Between commands: nothing of the next one is held yet, so the
	 * token and node buffers go too (command_reset keeps them for a
	 * pipelined burst). */
	if (p->data.data) {
		explicit_bzero(p->data.data, p->data.len);
		buf_cleanup(&p->data);
	}
	free(p->nodes);
	p->nodes = NULL;
	p->nodes_cap = 0;
	p->nodes_count = 0;
	return true;
}

void imap_parser_set_limits(struct imap_parser *p,
			    const struct imap_limits *limits)
{
	p->next_lim = *limits;
	if (p->st == TS_START && p->data.len == 0 && !p->finished)
		command_reset(p);
}

void imap_parser_set_utf8(struct imap_parser *p, bool utf8_accept)
{
	p->next_utf8 = utf8_accept;
	if (p->st == TS_START && p->data.len == 0 && !p->finished)
		p->utf8 = utf8_accept;
}

void imap_parser_set_sink(struct imap_parser *p,
			  const struct imap_literal_sink *sink)
{
	p->next_has_sink = sink != NULL;
	if (sink)
		p->next_sink = *sink;
	else
		memset(&p->next_sink, 0, sizeof(p->next_sink));
	if (p->st == TS_START && p->data.len == 0 && !p->finished) {
		p->sink = p->next_sink;
		p->has_sink = p->next_has_sink;
	}
}

const struct imap_command *imap_parser_command(const struct imap_parser *p)
{
	return p->cmd_valid ? &p->cmd : NULL;
}

struct view imap_parser_tag(const struct imap_parser *p)
{
	if (!p->tag_ok || p->tag_len == 0)
		return view_cstr("*");
	return view_make(p->data.data + p->tag_off, p->tag_len);
}

const char *imap_parser_error(const struct imap_parser *p) { return p->err; }

struct imap_literal_info imap_parser_literal(const struct imap_parser *p)
{
	return p->wait;
}

size_t imap_parser_mem(const struct imap_parser *p)
{
	return sizeof(*p) + p->data.cap + p->nodes_cap * sizeof(struct node) +
	       p->arena.total;
}

unsigned imap_parser_bare_lf(const struct imap_parser *p) { return p->bare_lf; }

const char *imap_result_str(enum imap_result r)
{
	switch (r) {
	case IMAP_OK: return "ok";
	case IMAP_MORE: return "more";
	case IMAP_LITERAL_WAIT: return "literal-wait";
	case IMAP_BAD: return "bad";
	case IMAP_FATAL: return "fatal";
	}
	return "?";
}

/* ---- layer 1: tokenizer ---- */

static int data_put(struct imap_parser *p, const void *d, size_t n)
{
	return buf_append(&p->data, d, n);
}

/* Enter skip mode: the current byte is processed again there. */
static enum step fail(struct imap_parser *p, const char *msg)
{
	if (p->err[0] == '\0')
		set_error(p, msg);
	p->st = TS_SKIP;
	p->tail = TAIL_NONE;
	return STEP_REDO;
}

static enum step fatal(struct imap_parser *p, const char *msg)
{
	set_error(p, msg);
	p->st = TS_FATAL;
	return STEP_FATAL;
}

static int node_add(struct imap_parser *p, enum imap_arg_type type,
		    uint32_t *idx_r)
{
	if (p->nodes_count >= p->lim.max_args)
		return -1;
	if (p->nodes_count == p->nodes_cap) {
		size_t cap = p->nodes_cap ? p->nodes_cap * 2 : 4;
		if (cap > p->lim.max_args)
			cap = p->lim.max_args;
		p->nodes = xrealloc(p->nodes, cap * sizeof(*p->nodes));
		p->nodes_cap = cap;
	}
	uint32_t i = (uint32_t)p->nodes_count++;
	struct node *n = &p->nodes[i];
	memset(n, 0, sizeof(*n));
	n->type = (uint8_t)type;
	n->parent = p->cur_list;
	n->off = p->data.len;
	if (p->depth == 0)
		p->top_count++;
	*idx_r = i;
	return 0;
}

static int token_end(struct imap_parser *p)
{
	struct node *n = &p->nodes[p->tok_node];
	n->len = p->data.len - n->off;
	if (data_put(p, "", 1) != 0)
		return -1;
	p->need_sep = true;
	p->st = TS_ARG;
	return 0;
}

static bool atom_opens_bracket(struct imap_parser *p)
{
	struct node *n = &p->nodes[p->tok_node];
	struct view v = view_make(p->data.data + n->off, p->data.len - n->off);
	return view_eq_nocase(v, "BODY") || view_eq_nocase(v, "BODY.PEEK") ||
	       view_eq_nocase(v, "BINARY") ||
	       view_eq_nocase(v, "BINARY.PEEK") ||
	       view_eq_nocase(v, "BINARY.SIZE");
}

static enum step line_end(struct imap_parser *p);

static bool is_append_message(struct imap_parser *p)
{
	if (!p->is_append)
		return false;
	if (p->depth == 0)
		return p->top_count >= 1; /* after the mailbox */
	return p->depth == 1 && (p->nodes[p->cur_list].flags & NF_UTF8_LIST);
}

static void lit_finish(struct imap_parser *p)
{
	struct node *n = &p->nodes[p->tok_node];
	if (p->lit_stream) {
		if (!p->sink_failed && p->sink.end &&
		    p->sink.end(p->sink.ctx) != 0)
			p->sink_failed = true;
	} else {
		n->len = p->data.len - n->off;
		/* room reserved at announcement */
		(void)data_put(p, "", 1);
	}
	p->need_sep = true;
	p->st = TS_ARG;
}

/* {n} / {n+} / ~{n} complete with its line end. */
static enum step lit_announce(struct imap_parser *p)
{
	uint64_t n = p->lit_overflow ? UINT64_MAX : p->lit_num;
	bool msg = is_append_message(p);
	bool stream = msg && p->has_sink;
	bool ok;
	if (stream) {
		ok = n <= p->lim.max_stream_literal;
	} else {
		size_t used = p->line_bytes + p->lit_mem;
		ok = n <= p->lim.max_literal && used <= p->lim.max_command &&
		     n <= p->lim.max_command - used;
	}
	/* A streamed message is held nowhere: max_stream_literal is its
	 * only bound, synchronizing or not. */
	if (p->lit_plus && !stream && n > p->lim.max_nonsync_literal)
		ok = false;

	if (!p->lit_plus) {
		p->wait.size = n;
		p->wait.append = msg;
		p->wait.literal8 = p->lit8;
		p->wait.accepted = false;
	}
	uint32_t idx = NODE_NONE;
	if (ok && node_add(p, IMAP_ARG_LITERAL, &idx) != 0) {
		set_error(p, "Too many arguments");
		if (!p->lit_plus)
			return STEP_BAD; /* the client waits: line over */
		ok = false;
	}
	if (!ok) {
		if (!p->lit_plus) {
			set_error(p, msg ? "Message too large"
					 : "Literal too large");
			return STEP_WAIT;
		}
		if (p->lit_overflow || n > p->lim.max_skip - p->skipped)
			return fatal(p, "Literal too large");
		if (p->err[0] == '\0')
			set_error(p, "Literal too large");
		p->skipped += n;
		p->lit_remaining = n;
		p->st = TS_SKIP_LIT;
		return STEP_CONT;
	}
	struct node *nd = &p->nodes[idx];
	nd->lit_size = n;
	if (p->lit8)
		nd->flags |= NF_LITERAL8;
	p->tok_node = idx;
	p->lit_stream = stream;
	p->lit_remaining = n;
	p->st = TS_LIT_DATA;
	if (stream) {
		nd->flags |= NF_STREAMED;
		if (!p->sink_failed && p->sink.begin &&
		    p->sink.begin(p->sink.ctx, n, p->lit8) != 0)
			p->sink_failed = true;
	} else {
		p->lit_mem += (size_t)n;
	}
	if (n == 0)
		lit_finish(p);
	if (!p->lit_plus) {
		p->wait.accepted = true;
		return STEP_WAIT;
	}
	return STEP_CONT;
}

static enum step skip_step(struct imap_parser *p, uint8_t c)
{
	switch (c) {
	case '\n':
		if (p->tail == TAIL_RBRACE || p->tail == TAIL_CR) {
			if (!p->tail_plus)
				return STEP_BAD; /* the client waits for us */
			if (p->tail_overflow ||
			    p->tail_num > p->lim.max_skip - p->skipped)
				return fatal(p, "Literal too large");
			p->skipped += p->tail_num;
			p->lit_remaining = p->tail_num;
			p->tail = TAIL_NONE;
			if (p->lit_remaining > 0)
				p->st = TS_SKIP_LIT;
			return STEP_CONT;
		}
		return STEP_BAD;
	case '\r':
		p->tail = p->tail == TAIL_RBRACE ? TAIL_CR : TAIL_NONE;
		break;
	case '{':
		p->tail = TAIL_LBRACE;
		p->tail_num = 0;
		p->tail_plus = false;
		p->tail_overflow = false;
		break;
	case '+':
		p->tail = p->tail == TAIL_DIGITS ? TAIL_PLUS : TAIL_NONE;
		p->tail_plus = true;
		break;
	case '}':
		p->tail = p->tail == TAIL_DIGITS || p->tail == TAIL_PLUS
				  ? TAIL_RBRACE
				  : TAIL_NONE;
		break;
	default:
		if (is_digit(c) &&
		    (p->tail == TAIL_LBRACE || p->tail == TAIL_DIGITS)) {
			if (p->tail_num > (UINT64_MAX - 9) / 10)
				p->tail_overflow = true;
			else
				p->tail_num = p->tail_num * 10 + (c - '0');
			p->tail = TAIL_DIGITS;
		} else {
			p->tail = TAIL_NONE;
		}
	}
	return STEP_CONT;
}

static enum step step(struct imap_parser *p, uint8_t c)
{
	uint32_t idx;
	switch (p->st) {
	case TS_START:
		if (c == '\n') {
			p->line_bytes = 0;
			return STEP_CONT;
		}
		if (c == '\r')
			return STEP_CONT;
		p->tag_off = p->data.len;
		p->st = TS_TAG;
		return STEP_REDO;
	case TS_TAG:
		if (is_tag_char(c)) {
			if (p->tag_len >= TAG_MAX)
				return fail(p, "Tag too long");
			if (data_put(p, &c, 1) != 0)
				return fatal(p, "Out of memory");
			p->tag_len++;
			return STEP_CONT;
		}
		if (p->tag_len > 0 && (c == ' ' || c == '\r' || c == '\n')) {
			p->tag_ok = true;
			if (data_put(p, "", 1) != 0)
				return fatal(p, "Out of memory");
			if (c != ' ')
				return fail(p, "Missing command");
			p->name_off = p->data.len;
			p->st = TS_NAME;
			return STEP_CONT;
		}
		return fail(p, "Invalid tag");
	case TS_NAME:
		if (is_atom_char(c)) {
			if (p->name_len >= 64)
				return fail(p, "Unknown command");
			if (data_put(p, &c, 1) != 0)
				return fatal(p, "Out of memory");
			p->name_len++;
			return STEP_CONT;
		}
		if (p->name_len == 0)
			return fail(p, "Missing command");
		if (c != ' ' && c != '\r' && c != '\n')
			return fail(p, "Invalid command name");
		if (data_put(p, "", 1) != 0)
			return fatal(p, "Out of memory");
		p->is_append = view_eq_nocase(
			view_make(p->data.data + p->name_off, p->name_len),
			"APPEND");
		p->st = TS_ARG;
		return STEP_REDO;
	case TS_ARG:
		switch (c) {
		case ' ':
			p->need_sep = false;
			return STEP_CONT;
		case '\r':
			p->saw_cr = true;
			p->st = TS_CR;
			return STEP_CONT;
		case '\n':
			return line_end(p);
		case ')':
			if (p->depth == 0)
				return fail(p, "Unexpected )");
			p->cur_list = p->nodes[p->cur_list].parent;
			p->depth--;
			p->need_sep = true;
			return STEP_CONT;
		}
		if (p->need_sep)
			return fail(p, "Missing space between arguments");
		switch (c) {
		case '(': {
			if (p->depth >= p->lim.max_depth)
				return fail(p, "Too deeply nested");
			bool utf8_list = false;
			if (p->depth == 0 && p->is_append && p->nodes_count > 0) {
				struct node *prev = &p->nodes[p->nodes_count - 1];
				utf8_list = prev->parent == NODE_NONE &&
					    prev->type == IMAP_ARG_ATOM &&
					    view_eq_nocase(
						    view_make(p->data.data +
								      prev->off,
							      prev->len),
						    "UTF8");
			}
			if (node_add(p, IMAP_ARG_LIST, &idx) != 0)
				return fail(p, "Too many arguments");
			if (utf8_list)
				p->nodes[idx].flags |= NF_UTF8_LIST;
			p->cur_list = idx;
			p->depth++;
			return STEP_CONT;
		}
		case '"':
			if (node_add(p, IMAP_ARG_STRING, &idx) != 0)
				return fail(p, "Too many arguments");
			p->tok_node = idx;
			p->st = TS_QUOTED;
			return STEP_CONT;
		case '~':
			p->st = TS_LIT_TILDE;
			return STEP_CONT;
		case '{':
			p->lit8 = false;
			p->st = TS_LIT_DIGITS;
			p->lit_num = 0;
			p->lit_digits = 0;
			p->lit_overflow = p->lit_plus = false;
			return STEP_CONT;
		}
		if (!is_tok_atom_char(c))
			return fail(p, "Invalid character");
		if (node_add(p, IMAP_ARG_ATOM, &idx) != 0)
			return fail(p, "Too many arguments");
		p->tok_node = idx;
		p->st = TS_ATOM;
		return STEP_REDO;
	case TS_ATOM:
		if (is_tok_atom_char(c)) {
			if (c == '[' && atom_opens_bracket(p))
				p->st = TS_ATOM_BRACKET;
			if (data_put(p, &c, 1) != 0)
				return fatal(p, "Out of memory");
			return STEP_CONT;
		}
		if (c == ' ' || c == ')' || c == '\r' || c == '\n') {
			if (token_end(p) != 0)
				return fatal(p, "Out of memory");
			struct node *n = &p->nodes[p->tok_node];
			if (view_eq_nocase(view_make(p->data.data + n->off,
						     n->len),
					   "NIL"))
				n->type = IMAP_ARG_NIL;
			return STEP_REDO;
		}
		return fail(p, "Invalid character in atom");
	case TS_ATOM_BRACKET:
		if (c == ']')
			p->st = TS_ATOM;
		else if (c == '"')
			p->st = TS_ATOM_BRACKET_Q;
		else if (!is_tok_atom_char(c) && c != ' ' && c != '(' &&
			 c != ')')
			return fail(p, "Invalid section");
		if (data_put(p, &c, 1) != 0)
			return fatal(p, "Out of memory");
		return STEP_CONT;
	case TS_ATOM_BRACKET_Q:
		if (c == '\\')
			p->st = TS_ATOM_BRACKET_QESC;
		else if (c == '"')
			p->st = TS_ATOM_BRACKET;
		else if (is_ctl(c) || c >= 0x80)
			return fail(p, "Invalid section");
		if (data_put(p, &c, 1) != 0)
			return fatal(p, "Out of memory");
		return STEP_CONT;
	case TS_ATOM_BRACKET_QESC:
		if (c != '"' && c != '\\')
			return fail(p, "Invalid escape in quoted string");
		if (data_put(p, &c, 1) != 0)
			return fatal(p, "Out of memory");
		p->st = TS_ATOM_BRACKET_Q;
		return STEP_CONT;
	case TS_QUOTED:
		if (c == '\\') {
			p->st = TS_QUOTED_ESC;
			return STEP_CONT;
		}
		if (c == '"') {
			struct node *n = &p->nodes[p->tok_node];
			if (!utf8_valid(p->data.data + n->off,
					p->data.len - n->off))
				return fail(p, "Invalid UTF-8 in quoted string");
			if (token_end(p) != 0)
				return fatal(p, "Out of memory");
			return STEP_CONT;
		}
		if (c == '\r' || c == '\n')
			return fail(p, "Unterminated quoted string");
		if (c == 0)
			return fail(p, "NUL in quoted string");
		if (data_put(p, &c, 1) != 0)
			return fatal(p, "Out of memory");
		return STEP_CONT;
	case TS_QUOTED_ESC:
		if (c != '"' && c != '\\')
			return fail(p, "Invalid escape in quoted string");
		if (data_put(p, &c, 1) != 0)
			return fatal(p, "Out of memory");
		p->st = TS_QUOTED;
		return STEP_CONT;
	case TS_LIT_TILDE:
		if (c != '{') {
			/* '~' is an ATOM-CHAR: "~/Mail/" is an atom */
			if (node_add(p, IMAP_ARG_ATOM, &idx) != 0)
				return fail(p, "Too many arguments");
			p->tok_node = idx;
			if (data_put(p, "~", 1) != 0)
				return fatal(p, "Out of memory");
			p->st = TS_ATOM;
			return STEP_REDO;
		}
		p->lit8 = true;
		p->st = TS_LIT_DIGITS;
		p->lit_num = 0;
		p->lit_digits = 0;
		p->lit_overflow = p->lit_plus = false;
		return STEP_CONT;
	case TS_LIT_DIGITS:
		if (is_digit(c)) {
			if (p->lit_num > (UINT64_MAX - 9) / 10)
				p->lit_overflow = true;
			else
				p->lit_num = p->lit_num * 10 + (c - '0');
			p->lit_digits++;
			return STEP_CONT;
		}
		if (p->lit_digits > 0 && c == '+') {
			p->lit_plus = true;
			p->st = TS_LIT_PLUS;
			return STEP_CONT;
		}
		if (p->lit_digits > 0 && c == '}') {
			p->st = TS_LIT_CR;
			return STEP_CONT;
		}
		return fail(p, "Invalid literal");
	case TS_LIT_PLUS:
		if (c != '}')
			return fail(p, "Invalid literal");
		p->st = TS_LIT_CR;
		return STEP_CONT;
	case TS_LIT_CR:
		if (c == '\r') {
			p->st = TS_LIT_LF;
			return STEP_CONT;
		}
		if (c == '\n') {
			p->bare_lf++;
			return lit_announce(p);
		}
		return fail(p, "Literal must end the line");
	case TS_LIT_LF:
		if (c == '\n')
			return lit_announce(p);
		return fail(p, "Literal must end the line");
	case TS_CR:
		if (c == '\n')
			return line_end(p);
		return fail(p, "CR without LF");
	case TS_SKIP:
		return skip_step(p, c);
	case TS_LIT_DATA:
	case TS_SKIP_LIT:
	case TS_FATAL:
		break;
	}
	return fatal(p, "Internal error");
}

static int parse_command(struct imap_parser *p);

/* The tree: each list's elements contiguous, top level first. */
static int build_tree(struct imap_parser *p, const struct imap_arg **args_r,
		      size_t *count_r)
{
	size_t n = p->nodes_count;
	struct imap_arg *out = arena_alloc(&p->arena, (n ? n : 1) *
							      sizeof(*out));
	if (!out)
		return -1;
	uint32_t top = 0;
	for (size_t i = 0; i < n; i++) {
		struct node *nd = &p->nodes[i];
		nd->count = nd->fill = 0;
		if (nd->parent == NODE_NONE)
			top++;
		else
			p->nodes[nd->parent].count++;
	}
	uint32_t next = top, top_fill = 0;
	for (size_t i = 0; i < n; i++) {
		struct node *nd = &p->nodes[i];
		if (nd->type == IMAP_ARG_LIST) {
			nd->start = next;
			next += nd->count;
		}
	}
	for (size_t i = 0; i < n; i++) {
		struct node *nd = &p->nodes[i];
		uint32_t pos = nd->parent == NODE_NONE
				       ? top_fill++
				       : p->nodes[nd->parent].start +
						 p->nodes[nd->parent].fill++;
		struct imap_arg *a = &out[pos];
		a->type = (enum imap_arg_type)nd->type;
		a->literal8 = nd->flags & NF_LITERAL8;
		a->has_nul = nd->flags & NF_HAS_NUL;
		a->streamed = nd->flags & NF_STREAMED;
		a->literal_size = nd->lit_size;
		if (nd->type == IMAP_ARG_LIST) {
			a->list = out + nd->start;
			a->list_count = nd->count;
			a->str = view_make("", 0);
		} else if (a->streamed) {
			a->str = view_make("", 0);
		} else {
			a->str = view_make(p->data.data + nd->off, nd->len);
		}
	}
	*args_r = out;
	*count_r = top;
	return 0;
}

static enum step line_end(struct imap_parser *p)
{
	if (!p->saw_cr)
		p->bare_lf++;
	p->saw_cr = false;
	if (p->depth > 0) {
		set_error(p, "Missing )");
		return STEP_BAD;
	}
	const struct imap_arg *args;
	size_t count;
	if (build_tree(p, &args, &count) != 0) {
		set_error(p, "Command too complex");
		return STEP_BAD;
	}
	p->cmd.tag = view_make(p->data.data + p->tag_off, p->tag_len);
	p->cmd.name = view_make(p->data.data + p->name_off, p->name_len);
	p->cmd.args = args;
	p->cmd.args_count = count;
	if (parse_command(p) != 0) {
		if (p->err[0] == '\0')
			set_error(p, "Invalid arguments");
		memset(&p->cmd, 0, sizeof(p->cmd));
		return STEP_BAD;
	}
	p->cmd_valid = true;
	return STEP_OK;
}

enum imap_result imap_parser_feed(struct imap_parser *p, const uint8_t *data,
				  size_t len, size_t *consumed_r)
{
	size_t i = 0;
	enum step r = STEP_CONT;
	if (p->st == TS_FATAL) {
		*consumed_r = 0;
		return IMAP_FATAL;
	}
	if (p->finished)
		command_reset(p);
	while (i < len) {
		if (p->st == TS_LIT_DATA) {
			size_t k = p->lit_remaining < len - i
					   ? (size_t)p->lit_remaining
					   : len - i;
			const uint8_t *d = data + i;
			struct node *n = &p->nodes[p->tok_node];
			if (!(n->flags & NF_LITERAL8) && memchr(d, 0, k))
				n->flags |= NF_HAS_NUL;
			if (p->lit_stream) {
				if (!p->sink_failed && p->sink.data &&
				    p->sink.data(p->sink.ctx, d, k) != 0)
					p->sink_failed = true;
			} else if (data_put(p, d, k) != 0) {
				fatal(p, "Out of memory");
				r = STEP_FATAL;
				break;
			}
			i += k;
			p->lit_remaining -= k;
			if (p->lit_remaining == 0)
				lit_finish(p);
			continue;
		}
		if (p->st == TS_SKIP_LIT) {
			size_t k = p->lit_remaining < len - i
					   ? (size_t)p->lit_remaining
					   : len - i;
			i += k;
			p->lit_remaining -= k;
			if (p->lit_remaining == 0) {
				p->st = TS_SKIP;
				p->tail = TAIL_NONE;
			}
			continue;
		}
		uint8_t c = data[i];
		if (p->st != TS_START || (c != '\r' && c != '\n')) {
			if (++p->line_bytes > p->lim.max_line) {
				fatal(p, "Line too long");
				r = STEP_FATAL;
				break;
			}
		}
		/* A byte may move through up to three states (e.g. an atom
		 * ends, then ')' is unexpected, then skip mode sees it). */
		int guard = 0;
		do
			r = step(p, c);
		while (r == STEP_REDO && ++guard < 4);
		if (r == STEP_REDO)
			r = fatal(p, "Internal error");
		i++;
		if (r != STEP_CONT)
			break;
	}
	*consumed_r = i;
	switch (r) {
	case STEP_CONT:
	case STEP_REDO:
		return IMAP_MORE;
	case STEP_OK:
		p->finished = true;
		return IMAP_OK;
	case STEP_BAD:
		p->finished = true;
		if (p->err[0] == '\0')
			set_error(p, "Invalid command");
		return IMAP_BAD;
	case STEP_WAIT:
		if (!p->wait.accepted)
			p->finished = true;
		return IMAP_LITERAL_WAIT;
	case STEP_FATAL:
		return IMAP_FATAL;
	}
	return IMAP_FATAL;
}

/* ---- IDLE ---- */

enum imap_result imap_idle_done(const uint8_t *data, size_t len,
				size_t *consumed_r)
{
	*consumed_r = 0;
	const uint8_t *lf = len ? memchr(data, '\n', MIN(len, (size_t)1024))
				: NULL;
	if (!lf)
		return len >= 1024 ? IMAP_FATAL : IMAP_MORE;
	size_t n = (size_t)(lf - data);
	*consumed_r = n + 1;
	if (n > 0 && data[n - 1] == '\r')
		n--;
	return view_eq_nocase(view_make(data, n), "DONE") ? IMAP_OK : IMAP_BAD;
}

/* ---- modified UTF-7 ---- */

static const char b64chars[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

static int b64val(uint8_t c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == ',')
		return 63;
	return -1;
}

static int put_utf8(struct buf *out, uint32_t cp)
{
	uint8_t b[4];
	size_t n;
	if (cp < 0x80) {
		b[0] = (uint8_t)cp, n = 1;
	} else if (cp < 0x800) {
		b[0] = (uint8_t)(0xc0 | (cp >> 6));
		b[1] = (uint8_t)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		b[0] = (uint8_t)(0xe0 | (cp >> 12));
		b[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
		b[2] = (uint8_t)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		b[0] = (uint8_t)(0xf0 | (cp >> 18));
		b[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
		b[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
		b[3] = (uint8_t)(0x80 | (cp & 0x3f));
		n = 4;
	}
	return buf_append(out, b, n);
}

int imap_mutf7_to_utf8(struct view in, struct buf *out, const char **error_r)
{
	size_t i = 0;
	bool after_shift = false;
	while (i < in.len) {
		uint8_t c = in.ptr[i];
		if (c != '&') {
			if (c < 0x20 || c > 0x7e) {
				*error_r = "Invalid character in mailbox name";
				return -1;
			}
			if (buf_append(out, &c, 1) != 0)
				goto full;
			after_shift = false;
			i++;
			continue;
		}
		if (i + 1 < in.len && in.ptr[i + 1] == '-') {
			if (buf_append(out, "&", 1) != 0)
				goto full;
			after_shift = false;
			i += 2;
			continue;
		}
		if (after_shift) {
			*error_r = "Invalid modified UTF-7: null shift";
			return -1;
		}
		i++;
		uint32_t bits = 0, high = 0;
		unsigned nbits = 0, units = 0;
		while (i < in.len && in.ptr[i] != '-') {
			int v = b64val(in.ptr[i]);
			if (v < 0) {
				*error_r = "Invalid modified UTF-7: bad base64";
				return -1;
			}
			bits = (bits << 6) | (uint32_t)v;
			nbits += 6;
			if (nbits >= 16) {
				nbits -= 16;
				uint32_t u = (bits >> nbits) & 0xffff;
				bits &= (1u << nbits) - 1;
				units++;
				if (high) {
					if (u < 0xdc00 || u > 0xdfff) {
						*error_r = "Invalid modified UTF-7: bad surrogate";
						return -1;
					}
					uint32_t cp = 0x10000 +
						      ((high - 0xd800) << 10) +
						      (u - 0xdc00);
					high = 0;
					if (put_utf8(out, cp) != 0)
						goto full;
				} else if (u >= 0xd800 && u <= 0xdbff) {
					high = u;
				} else if (u >= 0xdc00 && u <= 0xdfff) {
					*error_r = "Invalid modified UTF-7: bad surrogate";
					return -1;
				} else if (u >= 0x20 && u <= 0x7e) {
					*error_r = "Invalid modified UTF-7: encoded ASCII";
					return -1;
				} else if (put_utf8(out, u) != 0) {
					goto full;
				}
			}
			i++;
		}
		if (i >= in.len) {
			*error_r = "Invalid modified UTF-7: unterminated";
			return -1;
		}
		if (units == 0 || nbits >= 6 || bits != 0 || high) {
			*error_r = "Invalid modified UTF-7: bad padding";
			return -1;
		}
		i++;
		after_shift = true;
	}
	return 0;
full:
	*error_r = "Mailbox name too long";
	return -1;
}

int imap_utf8_to_mutf7(struct view in, struct buf *out, const char **error_r)
{
	size_t i = 0;
	while (i < in.len) {
		uint8_t c = in.ptr[i];
		if (c >= 0x20 && c <= 0x7e) {
			if (buf_append(out, c == '&' ? "&-" : (const char *)&c,
				       c == '&' ? 2 : 1) != 0)
				goto full;
			i++;
			continue;
		}
		if (buf_append(out, "&", 1) != 0)
			goto full;
		uint32_t bits = 0;
		unsigned nbits = 0;
		while (i < in.len && !(in.ptr[i] >= 0x20 && in.ptr[i] <= 0x7e)) {
			uint32_t cp;
			size_t n = utf8_decode(in.ptr + i, in.len - i, &cp);
			if (n == 0) {
				*error_r = "Invalid UTF-8";
				return -1;
			}
			i += n;
			uint32_t u[2];
			size_t nu = 1;
			if (cp >= 0x10000) {
				u[0] = 0xd800 + ((cp - 0x10000) >> 10);
				u[1] = 0xdc00 + ((cp - 0x10000) & 0x3ff);
				nu = 2;
			} else {
				u[0] = cp;
			}
			for (size_t k = 0; k < nu; k++) {
				bits = (bits << 16) | u[k];
				nbits += 16;
				while (nbits >= 6) {
					nbits -= 6;
					if (buf_append(out,
						       &b64chars[(bits >> nbits) &
								 63],
						       1) != 0)
						goto full;
				}
				bits &= (1u << nbits) - 1;
			}
		}
		if (nbits > 0 &&
		    buf_append(out, &b64chars[(bits << (6 - nbits)) & 63], 1) != 0)
			goto full;
		if (buf_append(out, "-", 1) != 0)
			goto full;
	}
	return 0;
full:
	*error_r = "Output too long";
	return -1;
}

/* ---- sequence sets ---- */

static int range_cmp(const void *a, const void *b)
{
	const struct imap_seq_range *x = a, *y = b;
	if (x->lo != y->lo)
		return x->lo < y->lo ? -1 : 1;
	if (x->hi != y->hi)
		return x->hi < y->hi ? -1 : 1;
	return 0;
}

static size_t ranges_merge(struct imap_seq_range *r, size_t n)
{
	if (n == 0)
		return 0;
	qsort(r, n, sizeof(*r), range_cmp);
	size_t out = 0;
	for (size_t i = 1; i < n; i++) {
		struct imap_seq_range *cur = &r[out];
		if (cur->hi == UINT64_MAX || r[i].lo <= cur->hi + 1) {
			if (r[i].hi > cur->hi)
				cur->hi = r[i].hi;
		} else {
			r[++out] = r[i];
		}
	}
	return out + 1;
}

size_t imap_seqset_resolve(const struct imap_seqset *s, uint32_t max,
			   struct imap_seq_range *out)
{
	size_t n = 0;
	if (max == 0)
		return 0;
	for (size_t i = 0; i < s->count; i++) {
		uint64_t lo = s->ranges[i].lo == IMAP_SEQ_STAR ? max
							       : s->ranges[i].lo;
		uint64_t hi = s->ranges[i].hi == IMAP_SEQ_STAR ? max
							       : s->ranges[i].hi;
		if (lo > hi) {
			uint64_t t = lo;
			lo = hi;
			hi = t;
		}
		if (hi > max)
			hi = max;
		if (lo > hi)
			continue;
		out[n].lo = lo;
		out[n].hi = hi;
		n++;
	}
	return ranges_merge(out, n);
}

uint64_t imap_seqset_max_number(const struct imap_seqset *s)
{
	uint64_t m = 0;
	for (size_t i = 0; i < s->count; i++) {
		if (s->ranges[i].lo != IMAP_SEQ_STAR && s->ranges[i].lo > m)
			m = s->ranges[i].lo;
		if (s->ranges[i].hi != IMAP_SEQ_STAR && s->ranges[i].hi > m)
			m = s->ranges[i].hi;
	}
	return m;
}

bool imap_seqset_contains(const struct imap_seqset *s, uint32_t v,
			  uint32_t max)
{
	for (size_t i = 0; i < s->count; i++) {
		uint64_t lo = s->ranges[i].lo == IMAP_SEQ_STAR ? max
							       : s->ranges[i].lo;
		uint64_t hi = s->ranges[i].hi == IMAP_SEQ_STAR ? max
							       : s->ranges[i].hi;
		if (lo > hi) {
			uint64_t t = lo;
			lo = hi;
			hi = t;
		}
		if (v >= lo && v <= hi)
			return true;
	}
	return false;
}

size_t imap_seqset_filter_uids(const struct imap_seqset *s,
			       const uint32_t *uids, size_t n, uint32_t *out)
{
	if (n == 0 || s->count == 0)
		return 0;
	struct imap_seq_range *r = xmalloc(s->count * sizeof(*r));
	size_t nr = imap_seqset_resolve(s, uids[n - 1], r);
	size_t k = 0, j = 0;
	for (size_t i = 0; i < n && j < nr; i++) {
		while (j < nr && r[j].hi < uids[i])
			j++;
		if (j < nr && uids[i] >= r[j].lo)
			out[k++] = uids[i];
	}
	free(r);
	return k;
}

/* ---- dates ---- */

static const char *const month_names[12] = {
	"JAN", "FEB", "MAR", "APR", "MAY", "JUN",
	"JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
};

static bool leap(unsigned y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned days_in_month(unsigned y, unsigned m)
{
	static const uint8_t d[12] = { 31, 28, 31, 30, 31, 30,
				       31, 31, 30, 31, 30, 31 };
	return m == 2 && leap(y) ? 29 : d[m - 1];
}

static int digits_val(const uint8_t *s, size_t n, unsigned *out)
{
	unsigned v = 0;
	for (size_t i = 0; i < n; i++) {
		if (!is_digit(s[i]))
			return -1;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	*out = v;
	return 0;
}

/* "d-Mon-yyyy" or "dd-Mon-yyyy" (or " d-..." when space_day), whole view. */
static int parse_date_text(struct view v, bool space_day,
			   struct imap_date *out)
{
	size_t dl;
	unsigned day, year, mon = 0;
	if (v.len >= 2 && v.ptr[1] == '-')
		dl = 1;
	else if (v.len >= 3 && v.ptr[2] == '-')
		dl = 2;
	else
		return -1;
	const uint8_t *d = v.ptr;
	size_t dn = dl;
	if (space_day && dl == 2 && d[0] == ' ')
		d++, dn--;
	if (digits_val(d, dn, &day) != 0)
		return -1;
	if (v.len != dl + 9 || v.ptr[dl + 4] != '-')
		return -1;
	for (unsigned m = 0; m < 12; m++) {
		if (to_upper(v.ptr[dl + 1]) == (uint8_t)month_names[m][0] &&
		    to_upper(v.ptr[dl + 2]) == (uint8_t)month_names[m][1] &&
		    to_upper(v.ptr[dl + 3]) == (uint8_t)month_names[m][2])
			mon = m + 1;
	}
	if (mon == 0 || digits_val(v.ptr + dl + 5, 4, &year) != 0 ||
	    year == 0 || day == 0 || day > days_in_month(year, mon))
		return -1;
	out->year = (uint16_t)year;
	out->month = (uint8_t)mon;
	out->day = (uint8_t)day;
	return 0;
}

/* date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time
 * SP zone DQUOTE (quotes already removed). */
static int parse_datetime(struct view v, struct imap_datetime *out)
{
	if (v.len < 25)
		return -1;
	size_t dlen = v.len - 15; /* " hh:mm:ss +zzzz" */
	struct imap_date d;
	if (parse_date_text(view_make(v.ptr, dlen), true, &d) != 0)
		return -1;
	const uint8_t *t = v.ptr + dlen;
	unsigned h, m, s, zh, zm;
	if (t[0] != ' ' || t[3] != ':' || t[6] != ':' || t[9] != ' ' ||
	    (t[10] != '+' && t[10] != '-') || digits_val(t + 1, 2, &h) ||
	    digits_val(t + 4, 2, &m) || digits_val(t + 7, 2, &s) ||
	    digits_val(t + 11, 2, &zh) || digits_val(t + 13, 2, &zm))
		return -1;
	if (h > 23 || m > 59 || s > 60 || zh > 23 || zm > 59)
		return -1;
	out->year = d.year;
	out->month = d.month;
	out->day = d.day;
	out->hour = (uint8_t)h;
	out->min = (uint8_t)m;
	out->sec = (uint8_t)s;
	int z = (int)(zh * 60 + zm);
	out->zone_min = (int16_t)(t[10] == '-' ? -z : z);
	return 0;
}

int64_t imap_datetime_to_unix(const struct imap_datetime *dt)
{
	/* days from civil (Howard Hinnant) */
	int64_t y = dt->year, m = dt->month, d = dt->day;
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	int64_t days = era * 146097 + doe - 719468;
	return days * 86400 + dt->hour * 3600 + dt->min * 60 + dt->sec -
	       (int64_t)dt->zone_min * 60;
}

/* ---- layer 2 helpers ---- */

struct l2 {
	struct imap_parser *p;
	const struct imap_arg *a;
	size_t n, i;
};

static const struct imap_arg *next_arg(struct l2 *c)
{
	return c->i < c->n ? &c->a[c->i++] : NULL;
}

static const struct imap_arg *peek_arg(struct l2 *c)
{
	return c->i < c->n ? &c->a[c->i] : NULL;
}

static struct l2 sub_l2(struct l2 *c, const struct imap_arg *list)
{
	return (struct l2){ c->p, list->list, list->list_count, 0 };
}

static int bad(struct imap_parser *p, const char *msg)
{
	set_error(p, msg);
	return -1;
}

static int bad_tok(struct imap_parser *p, const char *msg, struct view tok)
{
	set_error_tok(p, msg, tok);
	return -1;
}

static void *l2_alloc(struct imap_parser *p, size_t count, size_t size)
{
	if (size && count > SIZE_MAX / size) {
		set_error(p, "Command too complex");
		return NULL;
	}
	void *r = arena_alloc(&p->arena, count * size);
	if (!r)
		set_error(p, "Command too complex");
	return r;
}

static int expect_end(struct l2 *c)
{
	if (c->i < c->n)
		return bad(c->p, "Unexpected extra arguments");
	return 0;
}

static bool is_atomish(const struct imap_arg *a)
{
	return a && (a->type == IMAP_ARG_ATOM || a->type == IMAP_ARG_NIL);
}

static bool atom_is(const struct imap_arg *a, const char *s)
{
	return is_atomish(a) && view_eq_nocase(a->str, s);
}

static int check_literal(struct imap_parser *p, const struct imap_arg *a)
{
	if (a->type != IMAP_ARG_LITERAL)
		return 0;
	if (a->streamed)
		return bad(p, "Unexpected literal");
	if (a->literal8)
		return bad(p, "literal8 not allowed here");
	if (a->has_nul)
		return bad(p, "NUL in literal");
	return 0;
}

static int get_string(struct imap_parser *p, const struct imap_arg *a,
		      struct view *out)
{
	if (!a)
		return bad(p, "Missing argument");
	if (a->type != IMAP_ARG_STRING && a->type != IMAP_ARG_LITERAL)
		return bad(p, "Expected a string");
	if (check_literal(p, a) != 0)
		return -1;
	*out = a->str;
	return 0;
}

static int get_astring(struct imap_parser *p, const struct imap_arg *a,
		       struct view *out)
{
	if (!a)
		return bad(p, "Missing argument");
	if (is_atomish(a)) {
		for (size_t i = 0; i < a->str.len; i++)
			if (!is_astring_char(a->str.ptr[i]))
				return bad_tok(p, "Invalid atom", a->str);
		*out = a->str;
		return 0;
	}
	return get_string(p, a, out);
}

static int get_atom(struct imap_parser *p, const struct imap_arg *a,
		    struct view *out)
{
	if (!a)
		return bad(p, "Missing argument");
	if (!is_atomish(a))
		return bad(p, "Expected an atom");
	for (size_t i = 0; i < a->str.len; i++)
		if (!is_atom_char(a->str.ptr[i]))
			return bad_tok(p, "Invalid atom", a->str);
	*out = a->str;
	return 0;
}

static bool parse_u64(struct view v, uint64_t max, uint64_t *out)
{
	uint64_t n = 0;
	if (v.len == 0 || v.len > 20)
		return false;
	for (size_t i = 0; i < v.len; i++) {
		if (!is_digit(v.ptr[i]))
			return false;
		unsigned d = (unsigned)(v.ptr[i] - '0');
		if (n > (UINT64_MAX - d) / 10)
			return false;
		n = n * 10 + d;
	}
	if (n > max)
		return false;
	*out = n;
	return true;
}

#define NUM32_MAX UINT32_MAX
#define NUM64_MAX INT64_MAX /* number64: 63 bits */

static int get_number(struct imap_parser *p, const struct imap_arg *a,
		      uint64_t max, bool nonzero, uint64_t *out)
{
	if (!a)
		return bad(p, "Missing number");
	if (!is_atomish(a) || !parse_u64(a->str, max, out) ||
	    (nonzero && *out == 0))
		return bad_tok(p, "Invalid number", a->str);
	return 0;
}

/* system flag or keyword; `\*` only when allow_star. */
static bool valid_flag(struct view f, bool allow_star)
{
	size_t i = 0;
	if (f.len == 0)
		return false;
	if (f.ptr[0] == '\\') {
		if (f.len == 2 && f.ptr[1] == '*')
			return allow_star;
		i = 1;
		if (f.len == 1)
			return false;
	}
	for (; i < f.len; i++)
		if (!is_atom_char(f.ptr[i]))
			return false;
	return true;
}

static int get_flag(struct imap_parser *p, const struct imap_arg *a,
		    struct view *out)
{
	if (!a)
		return bad(p, "Missing flag");
	if (!is_atomish(a) || !valid_flag(a->str, false))
		return bad_tok(p, "Invalid flag", a->str);
	*out = a->str;
	return 0;
}

/* "(" [flag *(SP flag)] ")" */
static int get_flag_list(struct imap_parser *p, const struct imap_arg *a,
			 const struct view **flags_r, size_t *count_r)
{
	if (!a || a->type != IMAP_ARG_LIST)
		return bad(p, "Expected a flag list");
	struct view *f = l2_alloc(p, a->list_count, sizeof(*f));
	if (!f)
		return -1;
	for (size_t i = 0; i < a->list_count; i++)
		if (get_flag(p, &a->list[i], &f[i]) != 0)
			return -1;
	*flags_r = f;
	*count_r = a->list_count;
	return 0;
}

static struct view arena_copy(struct imap_parser *p, const void *d, size_t n)
{
	uint8_t *m = l2_alloc(p, n + 1, 1);
	if (!m)
		return view_make(NULL, 0);
	if (n)
		memcpy(m, d, n);
	m[n] = 0;
	return view_make(m, n);
}

/* Decode and validate a mailbox name or LIST reference/pattern. */
static int decode_mailbox(struct imap_parser *p, struct view raw,
			  bool pattern, struct view *out)
{
	if (!pattern && view_eq_nocase(raw, "INBOX")) {
		*out = view_cstr("INBOX");
		return 0;
	}
	if (p->utf8) {
		if (!utf8_valid(raw.ptr, raw.len))
			return bad(p, "Invalid UTF-8 in mailbox name");
		for (size_t i = 0; i < raw.len; i++)
			if (is_ctl(raw.ptr[i]))
				return bad(p,
					   "Invalid character in mailbox name");
		*out = raw;
		return 0;
	}
	struct buf b;
	buf_init(&b, raw.len * 2 + 16);
	const char *err;
	if (imap_mutf7_to_utf8(raw, &b, &err) != 0) {
		buf_cleanup(&b);
		return bad(p, err);
	}
	for (size_t i = 0; i < b.len; i++) {
		if (is_ctl(b.data[i])) {
			buf_cleanup(&b);
			return bad(p, "Invalid character in mailbox name");
		}
	}
	*out = arena_copy(p, b.data ? b.data : (const uint8_t *)"", b.len);
	buf_cleanup(&b);
	return out->ptr ? 0 : -1;
}

static int get_mailbox(struct imap_parser *p, const struct imap_arg *a,
		       struct view *out)
{
	struct view raw;
	if (!a)
		return bad(p, "Missing mailbox name");
	if (get_astring(p, a, &raw) != 0)
		return -1;
	return decode_mailbox(p, raw, false, out);
}

/* list-mailbox = 1*list-char / string */
static int get_list_mailbox(struct imap_parser *p, const struct imap_arg *a,
			    struct view *out)
{
	struct view raw;
	if (!a)
		return bad(p, "Missing mailbox pattern");
	if (is_atomish(a)) {
		for (size_t i = 0; i < a->str.len; i++) {
			uint8_t ch = a->str.ptr[i];
			if (!is_astring_char(ch) && ch != '%' && ch != '*')
				return bad_tok(p, "Invalid mailbox pattern",
					       a->str);
		}
		raw = a->str;
	} else if (get_string(p, a, &raw) != 0) {
		return -1;
	}
	return decode_mailbox(p, raw, true, out);
}

/* sequence-set, as an atom; '$' when allow_saved. */
static int get_seqset(struct imap_parser *p, const struct imap_arg *a,
		      bool allow_saved, struct imap_seqset *out)
{
	if (!a)
		return bad(p, "Missing sequence set");
	if (a->type != IMAP_ARG_ATOM || a->str.len == 0)
		return bad(p, "Invalid sequence set");
	struct view v = a->str;
	size_t n = 1;
	for (size_t i = 0; i < v.len; i++)
		if (v.ptr[i] == ',')
			n++;
	struct imap_seq_range *r = l2_alloc(p, n, sizeof(*r));
	if (!r)
		return -1;
	size_t k = 0;
	bool saved = false;
	size_t i = 0;
	while (i <= v.len) {
		size_t j = i;
		while (j < v.len && v.ptr[j] != ',')
			j++;
		struct view e = view_make(v.ptr + i, j - i);
		if (e.len == 1 && e.ptr[0] == '$') {
			if (!allow_saved)
				return bad(p, "$ not allowed here");
			saved = true;
		} else {
			uint64_t num[2];
			size_t nn = 0, s = 0;
			for (size_t t = 0; t <= e.len && nn < 3; t++) {
				if (t < e.len && e.ptr[t] != ':')
					continue;
				struct view x = view_make(e.ptr + s, t - s);
				if (nn == 2)
					return bad_tok(p, "Invalid sequence set", v);
				if (x.len == 1 && x.ptr[0] == '*')
					num[nn] = IMAP_SEQ_STAR;
				else if (!parse_u64(x, NUM32_MAX, &num[nn]) ||
					 num[nn] == 0)
					return bad_tok(p, "Invalid sequence set", v);
				nn++;
				s = t + 1;
			}
			if (nn == 1)
				num[1] = num[0];
			if (num[0] > num[1]) {
				uint64_t t = num[0];
				num[0] = num[1];
				num[1] = t;
			}
			r[k].lo = num[0];
			r[k].hi = num[1];
			k++;
		}
		i = j + 1;
	}
	out->ranges = r;
	out->count = ranges_merge(r, k);
	out->saved = saved;
	return 0;
}

/* ---- SEARCH ---- */

enum sk_arg { SKA_NONE, SKA_STR, SKA_DATE, SKA_NUM, SKA_NZNUM, SKA_SET,
	      SKA_KEYWORD, SKA_HEADER, SKA_NOT, SKA_OR, SKA_MODSEQ,
	      SKA_OBJECTID };

static const struct {
	const char *name;
	enum imap_search_type type;
	enum sk_arg arg;
} search_keys[] = {
	{ "ALL", IMAP_SEARCH_ALL, SKA_NONE },
	{ "ANSWERED", IMAP_SEARCH_ANSWERED, SKA_NONE },
	{ "BCC", IMAP_SEARCH_BCC, SKA_STR },
	{ "BEFORE", IMAP_SEARCH_BEFORE, SKA_DATE },
	{ "BODY", IMAP_SEARCH_BODY, SKA_STR },
	{ "CC", IMAP_SEARCH_CC, SKA_STR },
	{ "DELETED", IMAP_SEARCH_DELETED, SKA_NONE },
	{ "DRAFT", IMAP_SEARCH_DRAFT, SKA_NONE },
	{ "FLAGGED", IMAP_SEARCH_FLAGGED, SKA_NONE },
	{ "FROM", IMAP_SEARCH_FROM, SKA_STR },
	{ "HEADER", IMAP_SEARCH_HEADER, SKA_HEADER },
	{ "KEYWORD", IMAP_SEARCH_KEYWORD, SKA_KEYWORD },
	{ "LARGER", IMAP_SEARCH_LARGER, SKA_NUM },
	{ "NEW", IMAP_SEARCH_NEW, SKA_NONE },
	{ "NOT", IMAP_SEARCH_NOT, SKA_NOT },
	{ "OLD", IMAP_SEARCH_OLD, SKA_NONE },
	{ "ON", IMAP_SEARCH_ON, SKA_DATE },
	{ "OR", IMAP_SEARCH_OR, SKA_OR },
	{ "RECENT", IMAP_SEARCH_RECENT, SKA_NONE },
	{ "SEEN", IMAP_SEARCH_SEEN, SKA_NONE },
	{ "SENTBEFORE", IMAP_SEARCH_SENTBEFORE, SKA_DATE },
	{ "SENTON", IMAP_SEARCH_SENTON, SKA_DATE },
	{ "SENTSINCE", IMAP_SEARCH_SENTSINCE, SKA_DATE },
	{ "SINCE", IMAP_SEARCH_SINCE, SKA_DATE },
	{ "SMALLER", IMAP_SEARCH_SMALLER, SKA_NUM },
	{ "SUBJECT", IMAP_SEARCH_SUBJECT, SKA_STR },
	{ "TEXT", IMAP_SEARCH_TEXT, SKA_STR },
	{ "TO", IMAP_SEARCH_TO, SKA_STR },
	{ "UID", IMAP_SEARCH_UID, SKA_SET },
	{ "UNANSWERED", IMAP_SEARCH_UNANSWERED, SKA_NONE },
	{ "UNDELETED", IMAP_SEARCH_UNDELETED, SKA_NONE },
	{ "UNDRAFT", IMAP_SEARCH_UNDRAFT, SKA_NONE },
	{ "UNFLAGGED", IMAP_SEARCH_UNFLAGGED, SKA_NONE },
	{ "UNKEYWORD", IMAP_SEARCH_UNKEYWORD, SKA_KEYWORD },
	{ "UNSEEN", IMAP_SEARCH_UNSEEN, SKA_NONE },
	{ "MODSEQ", IMAP_SEARCH_MODSEQ, SKA_MODSEQ },
	{ "OLDER", IMAP_SEARCH_OLDER, SKA_NZNUM },
	{ "YOUNGER", IMAP_SEARCH_YOUNGER, SKA_NZNUM },
	{ "SAVEDBEFORE", IMAP_SEARCH_SAVEDBEFORE, SKA_DATE },
	{ "SAVEDON", IMAP_SEARCH_SAVEDON, SKA_DATE },
	{ "SAVEDSINCE", IMAP_SEARCH_SAVEDSINCE, SKA_DATE },
	{ "SAVEDATESUPPORTED", IMAP_SEARCH_SAVEDATESUPPORTED, SKA_NONE },
	{ "EMAILID", IMAP_SEARCH_EMAILID, SKA_OBJECTID },
	{ "THREADID", IMAP_SEARCH_THREADID, SKA_OBJECTID },
};

static int get_objectid(struct imap_parser *p, const struct imap_arg *a,
			struct view *out)
{
	if (!a)
		return bad(p, "Missing object id");
	if (!is_atomish(a) || a->str.len == 0 || a->str.len > 255)
		return bad(p, "Invalid object id");
	for (size_t i = 0; i < a->str.len; i++) {
		uint8_t ch = a->str.ptr[i];
		if (!(is_digit(ch) || (to_upper(ch) >= 'A' && to_upper(ch) <= 'Z') ||
		      ch == '_' || ch == '-'))
			return bad_tok(p, "Invalid object id", a->str);
	}
	*out = a->str;
	return 0;
}

static int get_date(struct imap_parser *p, const struct imap_arg *a,
		    struct imap_date *out)
{
	if (!a)
		return bad(p, "Missing date");
	if ((!is_atomish(a) && a->type != IMAP_ARG_STRING) ||
	    parse_date_text(a->str, false, out) != 0)
		return bad_tok(p, "Invalid date", a->str);
	return 0;
}

static int parse_search_key(struct l2 *c, struct imap_search_key *k,
			    unsigned depth);

static int parse_search_keys(struct l2 *c, struct imap_search_key *k,
			     unsigned depth)
{
	size_t max = c->n - c->i;
	if (max == 0)
		return bad(c->p, "Missing search key");
	struct imap_search_key *keys = l2_alloc(c->p, max, sizeof(*keys));
	if (!keys)
		return -1;
	size_t n = 0;
	while (c->i < c->n)
		if (parse_search_key(c, &keys[n++], depth + 1) != 0)
			return -1;
	k->type = IMAP_SEARCH_AND;
	k->u.sub.keys = keys;
	k->u.sub.count = n;
	return 0;
}

static int parse_search_key(struct l2 *c, struct imap_search_key *k,
			    unsigned depth)
{
	struct imap_parser *p = c->p;
	const struct imap_arg *a = next_arg(c);
	if (!a)
		return bad(p, "Missing search key");
	if (depth > SEARCH_DEPTH_MAX)
		return bad(p, "Search too complex");
	if (a->type == IMAP_ARG_LIST) {
		struct l2 s = sub_l2(c, a);
		if (s.n == 0)
			return bad(p, "Empty search list");
		if (parse_search_keys(&s, k, depth) != 0)
			return -1;
		if (k->u.sub.count == 1)
			*k = k->u.sub.keys[0]; /* "(x)" is x */
		return 0;
	}
	if (a->type != IMAP_ARG_ATOM || a->str.len == 0)
		return bad(p, "Invalid search key");
	uint8_t c0 = a->str.ptr[0];
	if (is_digit(c0) || c0 == '*' || c0 == '$') {
		k->type = IMAP_SEARCH_SEQSET;
		return get_seqset(p, a, true, &k->u.set);
	}
	size_t t;
	for (t = 0; t < ARRAY_LEN(search_keys); t++)
		if (view_eq_nocase(a->str, search_keys[t].name))
			break;
	if (t == ARRAY_LEN(search_keys))
		return bad_tok(p, "Unknown search key", a->str);
	k->type = search_keys[t].type;
	struct imap_search_key *sub;
	switch (search_keys[t].arg) {
	case SKA_NONE:
		return 0;
	case SKA_STR:
		return get_astring(p, next_arg(c), &k->u.str);
	case SKA_DATE:
		return get_date(p, next_arg(c), &k->u.date);
	case SKA_NUM:
		return get_number(p, next_arg(c), NUM64_MAX, false,
				  &k->u.number);
	case SKA_NZNUM:
		return get_number(p, next_arg(c), NUM32_MAX, true,
				  &k->u.number);
	case SKA_SET:
		return get_seqset(p, next_arg(c), true, &k->u.set);
	case SKA_KEYWORD: {
		const struct imap_arg *f = next_arg(c);
		if (get_flag(p, f, &k->u.str) != 0)
			return -1;
		if (f->str.ptr[0] == '\\')
			return bad_tok(p, "Invalid keyword", f->str);
		return 0;
	}
	case SKA_HEADER:
		if (get_astring(p, next_arg(c), &k->u.header.field) != 0)
			return -1;
		return get_astring(p, next_arg(c), &k->u.header.value);
	case SKA_NOT:
	case SKA_OR: {
		size_t n = search_keys[t].arg == SKA_OR ? 2 : 1;
		sub = l2_alloc(p, n, sizeof(*sub));
		if (!sub)
			return -1;
		for (size_t i = 0; i < n; i++)
			if (parse_search_key(c, &sub[i], depth + 1) != 0)
				return -1;
		k->u.sub.keys = sub;
		k->u.sub.count = n;
		return 0;
	}
	case SKA_MODSEQ: {
		const struct imap_arg *x = peek_arg(c);
		if (x && x->type == IMAP_ARG_STRING) {
			c->i++;
			k->u.modseq.entry = x->str;
			if (!view_prefix_nocase(x->str, "/flags/") ||
			    !valid_flag(view_make(x->str.ptr + 7,
						  x->str.len - 7),
					false))
				return bad(p, "Invalid MODSEQ entry name");
			const struct imap_arg *ty = next_arg(c);
			if (atom_is(ty, "priv"))
				k->u.modseq.entry_type = IMAP_MODSEQ_ENTRY_PRIV;
			else if (atom_is(ty, "shared"))
				k->u.modseq.entry_type = IMAP_MODSEQ_ENTRY_SHARED;
			else if (atom_is(ty, "all"))
				k->u.modseq.entry_type = IMAP_MODSEQ_ENTRY_ALL;
			else
				return bad(p, "Invalid MODSEQ entry type");
		}
		return get_number(p, next_arg(c), NUM64_MAX, false,
				  &k->u.modseq.value);
	}
	case SKA_OBJECTID:
		return get_objectid(p, next_arg(c), &k->u.str);
	}
	return bad(p, "Invalid search key");
}

/* RETURN (opts) for SEARCH / SORT. */
static int parse_search_return(struct l2 *c, bool *given_r, unsigned *opts_r)
{
	const struct imap_arg *a = peek_arg(c);
	if (!atom_is(a, "RETURN"))
		return 0;
	c->i++;
	const struct imap_arg *l = next_arg(c);
	if (!l || l->type != IMAP_ARG_LIST)
		return bad(c->p, "RETURN needs a list");
	*given_r = true;
	unsigned o = 0;
	for (size_t i = 0; i < l->list_count; i++) {
		const struct imap_arg *x = &l->list[i];
		if (atom_is(x, "MIN"))
			o |= IMAP_SEARCH_RET_MIN;
		else if (atom_is(x, "MAX"))
			o |= IMAP_SEARCH_RET_MAX;
		else if (atom_is(x, "ALL"))
			o |= IMAP_SEARCH_RET_ALL;
		else if (atom_is(x, "COUNT"))
			o |= IMAP_SEARCH_RET_COUNT;
		else if (atom_is(x, "SAVE"))
			o |= IMAP_SEARCH_RET_SAVE;
		else
			return bad_tok(c->p, "Unknown RETURN option",
				       x->type == IMAP_ARG_LIST ? view_cstr("(")
								: x->str);
	}
	*opts_r = o ? o : IMAP_SEARCH_RET_ALL;
	return 0;
}

static int parse_search_program(struct l2 *c,
				const struct imap_search_key **root_r)
{
	struct imap_search_key *k = l2_alloc(c->p, 1, sizeof(*k));
	if (!k)
		return -1;
	if (parse_search_keys(c, k, 0) != 0)
		return -1;
	*root_r = k->u.sub.count == 1 ? &k->u.sub.keys[0] : k;
	return 0;
}

static int cmd_search(struct l2 *c)
{
	struct imap_command *cmd = &c->p->cmd;
	if (parse_search_return(c, &cmd->u.search.esearch,
				&cmd->u.search.return_opts) != 0)
		return -1;
	if (atom_is(peek_arg(c), "CHARSET")) {
		c->i++;
		cmd->u.search.has_charset = true;
		if (get_astring(c->p, next_arg(c), &cmd->u.search.charset) != 0)
			return -1;
	}
	return parse_search_program(c, &cmd->u.search.root);
}

static const struct {
	const char *name;
	enum imap_sort_key key;
} sort_keys[] = {
	{ "ARRIVAL", IMAP_SORT_ARRIVAL }, { "CC", IMAP_SORT_CC },
	{ "DATE", IMAP_SORT_DATE },       { "FROM", IMAP_SORT_FROM },
	{ "SIZE", IMAP_SORT_SIZE },       { "SUBJECT", IMAP_SORT_SUBJECT },
	{ "TO", IMAP_SORT_TO },           { "DISPLAYFROM", IMAP_SORT_DISPLAYFROM },
	{ "DISPLAYTO", IMAP_SORT_DISPLAYTO },
};

static int cmd_sort(struct l2 *c)
{
	struct imap_parser *p = c->p;
	struct imap_command *cmd = &p->cmd;
	if (parse_search_return(c, &cmd->u.sort.esort,
				&cmd->u.sort.return_opts) != 0)
		return -1;
	const struct imap_arg *l = next_arg(c);
	if (!l || l->type != IMAP_ARG_LIST || l->list_count == 0)
		return bad(p, "Missing sort criteria");
	struct imap_sort_criterion *cr =
		l2_alloc(p, l->list_count, sizeof(*cr));
	if (!cr)
		return -1;
	size_t n = 0;
	bool reverse = false;
	for (size_t i = 0; i < l->list_count; i++) {
		const struct imap_arg *x = &l->list[i];
		if (atom_is(x, "REVERSE")) {
			if (reverse)
				return bad(p, "Invalid sort criteria");
			reverse = true;
			continue;
		}
		size_t t;
		for (t = 0; t < ARRAY_LEN(sort_keys); t++)
			if (atom_is(x, sort_keys[t].name))
				break;
		if (t == ARRAY_LEN(sort_keys))
			return bad(p, "Unknown sort criterion");
		cr[n].key = sort_keys[t].key;
		cr[n].reverse = reverse;
		reverse = false;
		n++;
	}
	if (reverse || n == 0)
		return bad(p, "Invalid sort criteria");
	cmd->u.sort.criteria = cr;
	cmd->u.sort.criteria_count = n;
	if (get_astring(p, next_arg(c), &cmd->u.sort.charset) != 0)
		return -1;
	return parse_search_program(c, &cmd->u.sort.root);
}

static int cmd_thread(struct l2 *c)
{
	struct imap_parser *p = c->p;
	struct imap_command *cmd = &p->cmd;
	if (get_atom(p, next_arg(c), &cmd->u.thread.algorithm) != 0)
		return -1;
	if (get_astring(p, next_arg(c), &cmd->u.thread.charset) != 0)
		return -1;
	return parse_search_program(c, &cmd->u.thread.root);
}

/* ---- FETCH ---- */

static const struct {
	const char *name;
	enum imap_fetch_type type;
} fetch_simple[] = {
	{ "ENVELOPE", IMAP_FETCH_ENVELOPE },
	{ "FLAGS", IMAP_FETCH_FLAGS },
	{ "INTERNALDATE", IMAP_FETCH_INTERNALDATE },
	{ "RFC822.SIZE", IMAP_FETCH_RFC822_SIZE },
	{ "RFC822", IMAP_FETCH_RFC822 },
	{ "RFC822.HEADER", IMAP_FETCH_RFC822_HEADER },
	{ "RFC822.TEXT", IMAP_FETCH_RFC822_TEXT },
	{ "BODY", IMAP_FETCH_BODY },
	{ "BODYSTRUCTURE", IMAP_FETCH_BODYSTRUCTURE },
	{ "UID", IMAP_FETCH_UID },
	{ "MODSEQ", IMAP_FETCH_MODSEQ },
	{ "SAVEDATE", IMAP_FETCH_SAVEDATE },
	{ "EMAILID", IMAP_FETCH_EMAILID },
	{ "THREADID", IMAP_FETCH_THREADID },
};

/* header-list = "(" header-fld-name *(SP header-fld-name) ")" inside the
 * section text: atoms or quoted strings (escapes were checked by layer 1). */
static int parse_header_list(struct imap_parser *p, struct view v,
			     struct imap_section *s)
{
	if (v.len < 2 || v.ptr[0] != '(' || v.ptr[v.len - 1] != ')')
		return bad(p, "Invalid header list");
	size_t n = 1;
	for (size_t i = 0; i < v.len; i++)
		if (v.ptr[i] == ' ')
			n++;
	struct view *f = l2_alloc(p, n, sizeof(*f));
	if (!f)
		return -1;
	size_t k = 0, i = 1, end = v.len - 1;
	while (i < end) {
		if (k > 0) {
			if (v.ptr[i] != ' ')
				return bad(p, "Invalid header list");
			i++;
		}
		if (i < end && v.ptr[i] == '"') {
			uint8_t *d = l2_alloc(p, end - i + 1, 1);
			if (!d)
				return -1;
			size_t dn = 0;
			i++;
			while (i < end && v.ptr[i] != '"') {
				if (v.ptr[i] == '\\')
					i++;
				if (i >= end)
					break;
				d[dn++] = v.ptr[i++];
			}
			if (i >= end)
				return bad(p, "Invalid header list");
			i++;
			f[k++] = view_make(d, dn);
		} else {
			size_t st = i;
			while (i < end && is_astring_char(v.ptr[i]))
				i++;
			if (i == st)
				return bad(p, "Invalid header list");
			f[k++] = view_make(v.ptr + st, i - st);
		}
	}
	if (k == 0)
		return bad(p, "Empty header list");
	s->fields = f;
	s->field_count = k;
	return 0;
}

static int parse_section(struct imap_parser *p, struct view v, bool binary,
			 struct imap_section *s)
{
	size_t i = 0, np = 0;
	for (size_t t = 0; t < v.len; t++)
		if (v.ptr[t] == '.')
			np++;
	uint32_t *parts = l2_alloc(p, np + 1, sizeof(*parts));
	if (!parts)
		return -1;
	while (i < v.len && is_digit(v.ptr[i])) {
		size_t st = i;
		while (i < v.len && is_digit(v.ptr[i]))
			i++;
		uint64_t num;
		if (!parse_u64(view_make(v.ptr + st, i - st), NUM32_MAX, &num) ||
		    num == 0)
			return bad(p, "Invalid section part");
		parts[s->part_count++] = (uint32_t)num;
		if (i == v.len)
			break;
		if (v.ptr[i] != '.')
			return bad(p, "Invalid section");
		i++;
		if (i == v.len)
			return bad(p, "Invalid section");
	}
	s->parts = parts;
	if (i == v.len)
		return 0;
	if (binary)
		return bad(p, "Invalid BINARY section");
	struct view rest = view_make(v.ptr + i, v.len - i);
	if (view_eq_nocase(rest, "HEADER")) {
		s->text = IMAP_SECTION_HEADER;
	} else if (view_eq_nocase(rest, "TEXT")) {
		s->text = IMAP_SECTION_TEXT;
	} else if (view_eq_nocase(rest, "MIME")) {
		if (s->part_count == 0)
			return bad(p, "MIME needs a part number");
		s->text = IMAP_SECTION_MIME;
	} else if (view_prefix_nocase(rest, "HEADER.FIELDS.NOT ")) {
		s->text = IMAP_SECTION_HEADER_FIELDS_NOT;
		return parse_header_list(p, view_make(rest.ptr + 18,
						      rest.len - 18), s);
	} else if (view_prefix_nocase(rest, "HEADER.FIELDS ")) {
		s->text = IMAP_SECTION_HEADER_FIELDS;
		return parse_header_list(p, view_make(rest.ptr + 14,
						      rest.len - 14), s);
	} else {
		return bad(p, "Invalid section");
	}
	return 0;
}

static int parse_fetch_att(struct imap_parser *p, const struct imap_arg *a,
			   struct imap_fetch_item *it)
{
	if (!is_atomish(a))
		return bad(p, "Invalid FETCH item");
	struct view v = a->str;
	for (size_t t = 0; t < ARRAY_LEN(fetch_simple); t++) {
		if (view_eq_nocase(v, fetch_simple[t].name)) {
			it->type = fetch_simple[t].type;
			return 0;
		}
	}
	size_t pre;
	bool binary = false;
	if (view_prefix_nocase(v, "BODY[")) {
		it->type = IMAP_FETCH_BODY_SECTION, pre = 5;
	} else if (view_prefix_nocase(v, "BODY.PEEK[")) {
		it->type = IMAP_FETCH_BODY_SECTION, pre = 10, it->peek = true;
	} else if (view_prefix_nocase(v, "BINARY[")) {
		it->type = IMAP_FETCH_BINARY, pre = 7, binary = true;
	} else if (view_prefix_nocase(v, "BINARY.PEEK[")) {
		it->type = IMAP_FETCH_BINARY, pre = 12, binary = true;
		it->peek = true;
	} else if (view_prefix_nocase(v, "BINARY.SIZE[")) {
		it->type = IMAP_FETCH_BINARY_SIZE, pre = 12, binary = true;
	} else {
		return bad_tok(p, "Unknown FETCH item", v);
	}
	/* the closing ']' outside quotes */
	size_t i = pre;
	bool q = false;
	for (; i < v.len; i++) {
		if (q && v.ptr[i] == '\\')
			i++;
		else if (v.ptr[i] == '"')
			q = !q;
		else if (!q && v.ptr[i] == ']')
			break;
	}
	if (i >= v.len)
		return bad(p, "Invalid section");
	if (parse_section(p, view_make(v.ptr + pre, i - pre), binary,
			  &it->section) != 0)
		return -1;
	i++;
	if (i == v.len)
		return 0;
	if (it->type == IMAP_FETCH_BINARY_SIZE || v.ptr[i] != '<' ||
	    v.ptr[v.len - 1] != '>')
		return bad_tok(p, "Invalid FETCH item", v);
	struct view in = view_make(v.ptr + i + 1, v.len - i - 2);
	size_t dot = 0;
	while (dot < in.len && in.ptr[dot] != '.')
		dot++;
	if (dot == in.len ||
	    !parse_u64(view_make(in.ptr, dot), NUM64_MAX, &it->partial_offset) ||
	    !parse_u64(view_make(in.ptr + dot + 1, in.len - dot - 1),
		       NUM64_MAX, &it->partial_length) ||
	    it->partial_length == 0)
		return bad(p, "Invalid partial range");
	it->partial = true;
	return 0;
}

static int cmd_fetch(struct l2 *c)
{
	struct imap_parser *p = c->p;
	struct imap_command *cmd = &p->cmd;
	if (get_seqset(p, next_arg(c), true, &cmd->u.fetch.set) != 0)
		return -1;
	const struct imap_arg *a = next_arg(c);
	if (!a)
		return bad(p, "Missing FETCH items");
	static const enum imap_fetch_type all[] = {
		IMAP_FETCH_FLAGS, IMAP_FETCH_INTERNALDATE,
		IMAP_FETCH_RFC822_SIZE, IMAP_FETCH_ENVELOPE, IMAP_FETCH_BODY,
	};
	size_t macro_n = 0;
	if (atom_is(a, "ALL"))
		cmd->u.fetch.macro = IMAP_FETCH_MACRO_ALL, macro_n = 4;
	else if (atom_is(a, "FAST"))
		cmd->u.fetch.macro = IMAP_FETCH_MACRO_FAST, macro_n = 3;
	else if (atom_is(a, "FULL"))
		cmd->u.fetch.macro = IMAP_FETCH_MACRO_FULL, macro_n = 5;
	if (macro_n) {
		struct imap_fetch_item *it = l2_alloc(p, macro_n, sizeof(*it));
		if (!it)
			return -1;
		for (size_t i = 0; i < macro_n; i++)
			it[i].type = all[i];
		cmd->u.fetch.items = it;
		cmd->u.fetch.count = macro_n;
	} else if (a->type == IMAP_ARG_LIST) {
		if (a->list_count == 0)
			return bad(p, "Empty FETCH item list");
		struct imap_fetch_item *it =
			l2_alloc(p, a->list_count, sizeof(*it));
		if (!it)
			return -1;
		for (size_t i = 0; i < a->list_count; i++)
			if (parse_fetch_att(p, &a->list[i], &it[i]) != 0)
				return -1;
		cmd->u.fetch.items = it;
		cmd->u.fetch.count = a->list_count;
	} else {
		struct imap_fetch_item *it = l2_alloc(p, 1, sizeof(*it));
		if (!it || parse_fetch_att(p, a, it) != 0)
			return -1;
		cmd->u.fetch.items = it;
		cmd->u.fetch.count = 1;
	}
	const struct imap_arg *m = next_arg(c);
	if (m) {
		if (m->type != IMAP_ARG_LIST)
			return bad(p, "Invalid FETCH modifiers");
		struct l2 s = sub_l2(c, m);
		const struct imap_arg *x;
		while ((x = next_arg(&s)) != NULL) {
			if (atom_is(x, "CHANGEDSINCE") &&
			    !cmd->u.fetch.has_changedsince) {
				cmd->u.fetch.has_changedsince = true;
				if (get_number(p, next_arg(&s), NUM64_MAX,
					       false,
					       &cmd->u.fetch.changedsince) != 0)
					return -1;
			} else if (atom_is(x, "VANISHED") &&
				   !cmd->u.fetch.vanished) {
				cmd->u.fetch.vanished = true;
			} else {
				return bad(p, "Unknown FETCH modifier");
			}
		}
		if (cmd->u.fetch.vanished &&
		    (!cmd->uid || !cmd->u.fetch.has_changedsince))
			return bad(p, "VANISHED needs UID FETCH and CHANGEDSINCE");
	}
	return expect_end(c);
}

/* ---- STORE ---- */

static int cmd_store(struct l2 *c)
{
	struct imap_parser *p = c->p;
	struct imap_command *cmd = &p->cmd;
	if (get_seqset(p, next_arg(c), true, &cmd->u.store.set) != 0)
		return -1;
	const struct imap_arg *a = next_arg(c);
	if (a && a->type == IMAP_ARG_LIST) {
		if (a->list_count != 2 ||
		    !atom_is(&a->list[0], "UNCHANGEDSINCE"))
			return bad(p, "Unknown STORE modifier");
		cmd->u.store.has_unchangedsince = true;
		if (get_number(p, &a->list[1], NUM64_MAX, false,
			       &cmd->u.store.unchangedsince) != 0)
			return -1;
		a = next_arg(c);
	}
	if (!is_atomish(a))
		return bad(p, "Missing STORE action");
	struct view v = a->str;
	size_t i = 0;
	if (v.len && v.ptr[0] == '+')
		cmd->u.store.op = IMAP_STORE_ADD, i = 1;
	else if (v.len && v.ptr[0] == '-')
		cmd->u.store.op = IMAP_STORE_REMOVE, i = 1;
	struct view rest = view_make(v.ptr + i, v.len - i);
	if (view_eq_nocase(rest, "FLAGS.SILENT"))
		cmd->u.store.silent = true;
	else if (!view_eq_nocase(rest, "FLAGS"))
		return bad_tok(p, "Invalid STORE action", v);
	a = next_arg(c);
	if (!a)
		return bad(p, "Missing flags");
	if (a->type == IMAP_ARG_LIST) {
		if (get_flag_list(p, a, &cmd->u.store.flags,
				  &cmd->u.store.flag_count) != 0)
			return -1;
		return expect_end(c);
	}
	size_t n = c->n - c->i + 1;
	struct view *f = l2_alloc(p, n, sizeof(*f));
	if (!f)
		return -1;
	for (size_t k = 0; k < n; k++, a = next_arg(c))
		if (get_flag(p, a, &f[k]) != 0)
			return -1;
	cmd->u.store.flags = f;
	cmd->u.store.flag_count = n;
	return 0;
}

static int cmd_copy(struct l2 *c)
{
	struct imap_parser *p = c->p;
	if (get_seqset(p, next_arg(c), true, &p->cmd.u.copy.set) != 0 ||
	    get_mailbox(p, next_arg(c), &p->cmd.u.copy.mailbox) != 0)
		return -1;
	return expect_end(c);
}

static int cmd_uid_expunge(struct l2 *c)
{
	if (get_seqset(c->p, next_arg(c), true, &c->p->cmd.u.expunge.set) != 0)
		return -1;
	return expect_end(c);
}

/* ---- APPEND ---- */

static int cmd_append(struct l2 *c)
{
	struct imap_parser *p = c->p;
	struct imap_command *cmd = &p->cmd;
	if (get_mailbox(p, next_arg(c), &cmd->u.append.mailbox) != 0)
		return -1;
	size_t max = c->n - c->i;
	if (max == 0)
		return bad(p, "Missing message");
	struct imap_append_msg *msgs = l2_alloc(p, max, sizeof(*msgs));
	if (!msgs)
		return -1;
	size_t n = 0;
	while (c->i < c->n) {
		struct imap_append_msg *m = &msgs[n++];
		const struct imap_arg *a = next_arg(c);
		if (a->type == IMAP_ARG_LIST) {
			if (get_flag_list(p, a, &m->flags, &m->flag_count) != 0)
				return -1;
			a = next_arg(c);
		}
		if (a && a->type == IMAP_ARG_STRING) {
			if (parse_datetime(a->str, &m->date) != 0)
				return bad(p, "Invalid date-time");
			m->has_date = true;
			a = next_arg(c);
		}
		if (atom_is(a, "UTF8")) {
			a = next_arg(c);
			if (!a || a->type != IMAP_ARG_LIST ||
			    a->list_count != 1 ||
			    a->list[0].type != IMAP_ARG_LITERAL ||
			    !a->list[0].literal8)
				return bad(p, "UTF8 needs (~{n})");
			m->utf8 = true;
			a = &a->list[0];
		}
		if (!a || a->type != IMAP_ARG_LITERAL)
			return bad(p, "Missing message literal");
		if (a->has_nul)
			return bad(p, "NUL in message: use literal8");
		m->literal8 = a->literal8;
		m->streamed = a->streamed;
		m->size = a->literal_size;
		m->data = a->str;
	}
	cmd->u.append.msgs = msgs;
	cmd->u.append.count = n;
	cmd->u.append.sink_failed = p->sink_failed;
	return 0;
}

/* ---- mailbox commands ---- */

static int cmd_mailbox_only(struct l2 *c)
{
	if (get_mailbox(c->p, next_arg(c), &c->p->cmd.u.mailbox) != 0)
		return -1;
	return expect_end(c);
}

static int cmd_select(struct l2 *c)
{
	struct imap_parser *p = c->p;
	struct imap_command *cmd = &p->cmd;
	if (get_mailbox(p, next_arg(c), &cmd->u.select.mailbox) != 0)
		return -1;
	const struct imap_arg *a = next_arg(c);
	if (a) {
		if (a->type != IMAP_ARG_LIST)
			return bad(p, "Invalid SELECT parameters");
		struct l2 s = sub_l2(c, a);
		const struct imap_arg *x;
		while ((x = next_arg(&s)) != NULL) {
			if (atom_is(x, "CONDSTORE") && !cmd->u.select.condstore) {
				cmd->u.select.condstore = true;
				continue;
			}
			if (!atom_is(x, "QRESYNC") || cmd->u.select.qresync)
				return bad(p, "Unknown SELECT parameter");
			cmd->u.select.qresync = true;
			const struct imap_arg *q = next_arg(&s);
			if (!q || q->type != IMAP_ARG_LIST)
				return bad(p, "Invalid QRESYNC parameters");
			struct l2 qs = sub_l2(c, q);
			uint64_t uv;
			if (get_number(p, next_arg(&qs), NUM32_MAX, true, &uv) != 0 ||
			    get_number(p, next_arg(&qs), NUM64_MAX, true,
				       &cmd->u.select.modseq) != 0)
				return -1;
			cmd->u.select.uidvalidity = (uint32_t)uv;
			const struct imap_arg *k = next_arg(&qs);
			if (k && k->type == IMAP_ARG_ATOM) {
				if (get_seqset(p, k, false,
					       &cmd->u.select.known_uids) != 0)
					return -1;
				k = next_arg(&qs);
			}
			if (k) {
				if (k->type != IMAP_ARG_LIST ||
				    k->list_count != 2)
					return bad(p, "Invalid QRESYNC parameters");
				cmd->u.select.has_seq_match = true;
				if (get_seqset(p, &k->list[0], false,
					       &cmd->u.select.known_seqs) != 0 ||
				    get_seqset(p, &k->list[1], false,
					       &cmd->u.select.known_seq_uids) != 0)
					return -1;
			}
			if (expect_end(&qs) != 0)
				return -1;
		}
	}
	return expect_end(c);
}

static int cmd_create(struct l2 *c)
{
	struct imap_parser *p = c->p;
	struct imap_command *cmd = &p->cmd;
	if (get_mailbox(p, next_arg(c), &cmd->u.create.mailbox) != 0)
		return -1;
	const struct imap_arg *a = next_arg(c);
	if (a) {
		if (a->type != IMAP_ARG_LIST || a->list_count != 2 ||
		    !atom_is(&a->list[0], "USE"))
			return bad(p, "Unknown CREATE parameter");
		if (get_flag_list(p, &a->list[1], &cmd->u.create.use,
				  &cmd->u.create.use_count) != 0)
			return -1;
		for (size_t i = 0; i < cmd->u.create.use_count; i++)
			if (cmd->u.create.use[i].ptr[0] != '\\')
				return bad(p, "Invalid special-use flag");
	}
	return expect_end(c);
}

static int cmd_rename(struct l2 *c)
{
	struct imap_parser *p = c->p;
	if (get_mailbox(p, next_arg(c), &p->cmd.u.rename.from) != 0 ||
	    get_mailbox(p, next_arg(c), &p->cmd.u.rename.to) != 0)
		return -1;
	return expect_end(c);
}

static const struct {
	const char *name;
	unsigned bit;
} status_items[] = {
	{ "MESSAGES", IMAP_STATUS_MESSAGES },
	{ "UIDNEXT", IMAP_STATUS_UIDNEXT },
	{ "UIDVALIDITY", IMAP_STATUS_UIDVALIDITY },
	{ "UNSEEN", IMAP_STATUS_UNSEEN },
	{ "DELETED", IMAP_STATUS_DELETED },
	{ "SIZE", IMAP_STATUS_SIZE },
	{ "RECENT", IMAP_STATUS_RECENT },
	{ "HIGHESTMODSEQ", IMAP_STATUS_HIGHESTMODSEQ },
	{ "APPENDLIMIT", IMAP_STATUS_APPENDLIMIT },
	{ "MAILBOXID", IMAP_STATUS_MAILBOXID },
	{ "DELETED-STORAGE", IMAP_STATUS_DELETED_STORAGE },
};

static int get_status_items(struct imap_parser *p, const struct imap_arg *a,
			    unsigned *items_r)
{
	if (!a || a->type != IMAP_ARG_LIST || a->list_count == 0)
		return bad(p, "Expected a list of status items");
	unsigned items = 0;
	for (size_t i = 0; i < a->list_count; i++) {
		size_t t;
		for (t = 0; t < ARRAY_LEN(status_items); t++)
			if (atom_is(&a->list[i], status_items[t].name))
				break;
		if (t == ARRAY_LEN(status_items))
			return bad_tok(p, "Unknown status item",
				       a->list[i].type == IMAP_ARG_LIST
					       ? view_cstr("(")
					       : a->list[i].str);
		items |= status_items[t].bit;
	}
	*items_r = items;
	return 0;
}

static int cmd_status(struct l2 *c)
{
	struct imap_parser *p = c->p;
	if (get_mailbox(p, next_arg(c), &p->cmd.u.status.mailbox) != 0 ||
	    get_status_items(p, next_arg(c), &p->cmd.u.status.items) != 0)
		return -1;
	return expect_end(c);
}

static int cmd_list(struct l2 *c)
{
	struct imap_parser *p = c->p;
	struct imap_command *cmd = &p->cmd;
	bool lsub = cmd->cmd == IMAP_CMD_LSUB;
	const struct imap_arg *a = peek_arg(c);
	if (!lsub && a && a->type == IMAP_ARG_LIST) {
		c->i++;
		cmd->u.list.extended = true;
		unsigned o = 0;
		for (size_t i = 0; i < a->list_count; i++) {
			const struct imap_arg *x = &a->list[i];
			if (atom_is(x, "SUBSCRIBED"))
				o |= IMAP_LIST_SEL_SUBSCRIBED;
			else if (atom_is(x, "REMOTE"))
				o |= IMAP_LIST_SEL_REMOTE;
			else if (atom_is(x, "RECURSIVEMATCH"))
				o |= IMAP_LIST_SEL_RECURSIVEMATCH;
			else if (atom_is(x, "SPECIAL-USE"))
				o |= IMAP_LIST_SEL_SPECIAL_USE;
			else
				return bad(p, "Unknown LIST selection option");
		}
		/* SUBSCRIBED is the only base option: REMOTE and SPECIAL-USE
		 * are independent ones (RFC 5258 3, RFC 6154 6). */
		if ((o & IMAP_LIST_SEL_RECURSIVEMATCH) && !(o & IMAP_LIST_SEL_SUBSCRIBED))
			return bad(p, "RECURSIVEMATCH needs another option");
		cmd->u.list.select_opts = o;
	}
	if (get_list_mailbox(p, next_arg(c), &cmd->u.list.reference) != 0)
		return -1;
	a = next_arg(c);
	if (!lsub && a && a->type == IMAP_ARG_LIST) {
		if (a->list_count == 0)
			return bad(p, "Empty pattern list");
		struct view *pat = l2_alloc(p, a->list_count, sizeof(*pat));
		if (!pat)
			return -1;
		for (size_t i = 0; i < a->list_count; i++)
			if (get_list_mailbox(p, &a->list[i], &pat[i]) != 0)
				return -1;
		cmd->u.list.extended = true;
		cmd->u.list.patterns = pat;
		cmd->u.list.pattern_count = a->list_count;
	} else {
		struct view *pat = l2_alloc(p, 1, sizeof(*pat));
		if (!pat || get_list_mailbox(p, a, pat) != 0)
			return -1;
		cmd->u.list.patterns = pat;
		cmd->u.list.pattern_count = 1;
	}
	a = next_arg(c);
	if (!lsub && a) {
		if (!atom_is(a, "RETURN"))
			return bad(p, "Invalid LIST arguments");
		a = next_arg(c);
		if (!a || a->type != IMAP_ARG_LIST)
			return bad(p, "RETURN needs a list");
		cmd->u.list.extended = true;
		unsigned o = 0;
		for (size_t i = 0; i < a->list_count; i++) {
			const struct imap_arg *x = &a->list[i];
			if (atom_is(x, "SUBSCRIBED")) {
				o |= IMAP_LIST_RET_SUBSCRIBED;
			} else if (atom_is(x, "CHILDREN")) {
				o |= IMAP_LIST_RET_CHILDREN;
			} else if (atom_is(x, "SPECIAL-USE")) {
				o |= IMAP_LIST_RET_SPECIAL_USE;
			} else if (atom_is(x, "STATUS") &&
				   !(o & IMAP_LIST_RET_STATUS)) {
				o |= IMAP_LIST_RET_STATUS;
				if (get_status_items(
					    p, i + 1 < a->list_count ? &a->list[++i]
								     : NULL,
					    &cmd->u.list.status_items) != 0)
					return -1;
			} else {
				return bad(p, "Unknown LIST return option");
			}
		}
		cmd->u.list.return_opts = o;
	}
	return expect_end(c);
}

/* ---- session commands ---- */

static int cmd_no_args(struct l2 *c) { return expect_end(c); }

static int cmd_authenticate(struct l2 *c)
{
	struct imap_parser *p = c->p;
	struct imap_command *cmd = &p->cmd;
	if (get_atom(p, next_arg(c), &cmd->u.authenticate.mechanism) != 0)
		return -1;
	const struct imap_arg *a = next_arg(c);
	if (a) {
		if (!is_atomish(a))
			return bad(p, "Invalid initial response");
		struct view v = a->str;
		cmd->u.authenticate.has_ir = true;
		if (view_eq_cstr(v, "=")) {
			cmd->u.authenticate.ir = view_make(v.ptr, 0);
		} else {
			size_t pad = 0;
			for (size_t i = 0; i < v.len; i++) {
				if (v.ptr[i] == '=') {
					pad++;
				} else if (pad || (b64val(v.ptr[i]) < 0 &&
						   v.ptr[i] != '/') ||
					   v.ptr[i] == ',') {
					return bad(p, "Invalid base64");
				}
			}
			if (pad > 2 || v.len % 4 != 0)
				return bad(p, "Invalid base64");
			cmd->u.authenticate.ir = v;
		}
	}
	return expect_end(c);
}

static int cmd_login(struct l2 *c)
{
	struct imap_parser *p = c->p;
	if (get_astring(p, next_arg(c), &p->cmd.u.login.user) != 0 ||
	    get_astring(p, next_arg(c), &p->cmd.u.login.pass) != 0)
		return -1;
	return expect_end(c);
}

static int cmd_enable(struct l2 *c)
{
	struct imap_parser *p = c->p;
	size_t n = c->n - c->i;
	if (n == 0)
		return bad(p, "Missing capability");
	struct view *caps = l2_alloc(p, n, sizeof(*caps));
	if (!caps)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (get_atom(p, next_arg(c), &caps[i]) != 0)
			return -1;
	p->cmd.u.enable.caps = caps;
	p->cmd.u.enable.count = n;
	return 0;
}

static int cmd_id(struct l2 *c)
{
	struct imap_parser *p = c->p;
	const struct imap_arg *a = next_arg(c);
	if (a && a->type == IMAP_ARG_NIL) {
		p->cmd.u.id.nil = true;
		return expect_end(c);
	}
	if (!a || a->type != IMAP_ARG_LIST || a->list_count % 2 != 0)
		return bad(p, "ID needs NIL or a list of pairs");
	size_t n = a->list_count / 2;
	if (n > 30)
		return bad(p, "Too many ID parameters");
	struct imap_id_param *ip = l2_alloc(p, n ? n : 1, sizeof(*ip));
	if (!ip)
		return -1;
	for (size_t i = 0; i < n; i++) {
		const struct imap_arg *k = &a->list[2 * i];
		const struct imap_arg *v = &a->list[2 * i + 1];
		if (get_string(p, k, &ip[i].key) != 0)
			return -1;
		if (v->type == IMAP_ARG_NIL)
			ip[i].value_nil = true;
		else if (get_string(p, v, &ip[i].value) != 0)
			return -1;
	}
	p->cmd.u.id.params = ip;
	p->cmd.u.id.count = n;
	return expect_end(c);
}

static int cmd_getquota(struct l2 *c)
{
	if (get_astring(c->p, next_arg(c), &c->p->cmd.u.getquota.root) != 0)
		return -1;
	return expect_end(c);
}

static int cmd_setquota(struct l2 *c)
{
	struct imap_parser *p = c->p;
	if (get_astring(p, next_arg(c), &p->cmd.u.setquota.root) != 0)
		return -1;
	const struct imap_arg *a = next_arg(c);
	if (!a || a->type != IMAP_ARG_LIST || a->list_count % 2 != 0)
		return bad(p, "Invalid quota resource list");
	size_t n = a->list_count / 2;
	struct imap_quota_resource *r = l2_alloc(p, n ? n : 1, sizeof(*r));
	if (!r)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (get_atom(p, &a->list[2 * i], &r[i].name) != 0 ||
		    get_number(p, &a->list[2 * i + 1], NUM64_MAX, false,
			       &r[i].limit) != 0)
			return -1;
	}
	p->cmd.u.setquota.resources = r;
	p->cmd.u.setquota.count = n;
	return expect_end(c);
}

static int cmd_compress(struct l2 *c)
{
	if (get_atom(c->p, next_arg(c), &c->p->cmd.u.compress.mechanism) != 0)
		return -1;
	return expect_end(c);
}

/* ---- command table ---- */

#define CF_UID 0x01 /* allowed after UID */

static const struct {
	const char *name;
	enum imap_cmd cmd;
	int (*parse)(struct l2 *c);
	unsigned flags;
} commands[] = {
	{ "CAPABILITY", IMAP_CMD_CAPABILITY, cmd_no_args, 0 },
	{ "NOOP", IMAP_CMD_NOOP, cmd_no_args, 0 },
	{ "LOGOUT", IMAP_CMD_LOGOUT, cmd_no_args, 0 },
	{ "STARTTLS", IMAP_CMD_STARTTLS, cmd_no_args, 0 },
	{ "AUTHENTICATE", IMAP_CMD_AUTHENTICATE, cmd_authenticate, 0 },
	{ "LOGIN", IMAP_CMD_LOGIN, cmd_login, 0 },
	{ "ENABLE", IMAP_CMD_ENABLE, cmd_enable, 0 },
	{ "SELECT", IMAP_CMD_SELECT, cmd_select, 0 },
	{ "EXAMINE", IMAP_CMD_EXAMINE, cmd_select, 0 },
	{ "CREATE", IMAP_CMD_CREATE, cmd_create, 0 },
	{ "DELETE", IMAP_CMD_DELETE, cmd_mailbox_only, 0 },
	{ "RENAME", IMAP_CMD_RENAME, cmd_rename, 0 },
	{ "SUBSCRIBE", IMAP_CMD_SUBSCRIBE, cmd_mailbox_only, 0 },
	{ "UNSUBSCRIBE", IMAP_CMD_UNSUBSCRIBE, cmd_mailbox_only, 0 },
	{ "LIST", IMAP_CMD_LIST, cmd_list, 0 },
	{ "LSUB", IMAP_CMD_LSUB, cmd_list, 0 },
	{ "NAMESPACE", IMAP_CMD_NAMESPACE, cmd_no_args, 0 },
	{ "STATUS", IMAP_CMD_STATUS, cmd_status, 0 },
	{ "APPEND", IMAP_CMD_APPEND, cmd_append, 0 },
	{ "IDLE", IMAP_CMD_IDLE, cmd_no_args, 0 },
	{ "CHECK", IMAP_CMD_CHECK, cmd_no_args, 0 },
	{ "CLOSE", IMAP_CMD_CLOSE, cmd_no_args, 0 },
	{ "UNSELECT", IMAP_CMD_UNSELECT, cmd_no_args, 0 },
	{ "EXPUNGE", IMAP_CMD_EXPUNGE, cmd_no_args, CF_UID },
	{ "SEARCH", IMAP_CMD_SEARCH, cmd_search, CF_UID },
	{ "FETCH", IMAP_CMD_FETCH, cmd_fetch, CF_UID },
	{ "STORE", IMAP_CMD_STORE, cmd_store, CF_UID },
	{ "COPY", IMAP_CMD_COPY, cmd_copy, CF_UID },
	{ "MOVE", IMAP_CMD_MOVE, cmd_copy, CF_UID },
	{ "ID", IMAP_CMD_ID, cmd_id, 0 },
	{ "GETQUOTA", IMAP_CMD_GETQUOTA, cmd_getquota, 0 },
	{ "GETQUOTAROOT", IMAP_CMD_GETQUOTAROOT, cmd_mailbox_only, 0 },
	{ "SETQUOTA", IMAP_CMD_SETQUOTA, cmd_setquota, 0 },
	{ "SORT", IMAP_CMD_SORT, cmd_sort, CF_UID },
	{ "THREAD", IMAP_CMD_THREAD, cmd_thread, CF_UID },
	{ "COMPRESS", IMAP_CMD_COMPRESS, cmd_compress, 0 },
};

const char *imap_cmd_str(enum imap_cmd cmd)
{
	for (size_t i = 0; i < ARRAY_LEN(commands); i++)
		if (commands[i].cmd == cmd)
			return commands[i].name;
	return "UNKNOWN";
}

static int parse_command(struct imap_parser *p)
{
	struct imap_command *cmd = &p->cmd;
	struct l2 c = { p, cmd->args, cmd->args_count, 0 };
	struct view name = cmd->name;
	if (view_eq_nocase(name, "UID")) {
		const struct imap_arg *a = next_arg(&c);
		if (!a || a->type != IMAP_ARG_ATOM)
			return bad(p, "Missing UID command");
		cmd->uid = true;
		name = a->str;
		cmd->name = name;
		cmd->args = c.a + 1;
		cmd->args_count = c.n - 1;
		c = (struct l2){ p, cmd->args, cmd->args_count, 0 };
	}
	size_t t;
	for (t = 0; t < ARRAY_LEN(commands); t++)
		if (view_eq_nocase(name, commands[t].name))
			break;
	if (t == ARRAY_LEN(commands)) {
		if (cmd->uid)
			return bad_tok(p, "Unknown UID command", name);
		cmd->cmd = IMAP_CMD_UNKNOWN;
	} else {
		if (cmd->uid && !(commands[t].flags & CF_UID))
			return bad_tok(p, "Unknown UID command", name);
		cmd->cmd = commands[t].cmd;
	}
	/* a literal8 is only valid as an APPEND message */
	if (cmd->cmd != IMAP_CMD_APPEND) {
		for (size_t i = 0; i < p->nodes_count; i++)
			if (p->nodes[i].flags & NF_LITERAL8)
				return bad(p, "literal8 not allowed here");
	}
	if (cmd->cmd == IMAP_CMD_UNKNOWN)
		return 0;
	if (cmd->uid && cmd->cmd == IMAP_CMD_EXPUNGE)
		return cmd_uid_expunge(&c);
	return commands[t].parse(&c);
}
