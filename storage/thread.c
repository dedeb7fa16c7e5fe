#include "storage/thread.h"

#include <stdio.h>
#include <stdlib.h>

/* ===== Message IDs ===== */

enum { T_OUT, T_COMMENT, T_ID, T_QUOTE };

static void tok_init(struct thread_idtok *t)
{
	t->state = T_OUT;
	t->escape = t->overflow = false;
	t->depth = 0;
	t->len = 0;
}

static void tok_add(struct thread_idtok *t, uint8_t c)
{
	if (t->len < THREAD_ID_MAX)
		t->cur[t->len++] = (char)c;
	else
		t->overflow = true;
}

static bool is_ws(uint8_t c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* One byte of a field value; true when a valid id is complete in
 * t->cur[0..len). */
static bool tok_byte(struct thread_idtok *t, uint8_t c)
{
	switch (t->state) {
	case T_OUT:
		if (c == '(') {
			t->state = T_COMMENT;
			t->depth = 1;
			t->escape = false;
		} else if (c == '<') {
			t->state = T_ID;
			t->len = 0;
			t->overflow = false;
		}
		return false;
	case T_COMMENT:
		if (t->escape)
			t->escape = false;
		else if (c == '\\')
			t->escape = true;
		else if (c == '(' && t->depth < 1000)
			t->depth++;
		else if (c == ')' && --t->depth == 0)
			t->state = T_OUT;
		return false;
	case T_ID:
		if (c == '>') {
			t->state = T_OUT;
			return t->len > 0 && !t->overflow;
		}
		if (c == '<') { /* "<<id>": start again */
			t->len = 0;
			t->overflow = false;
		} else if (c == '"') {
			t->state = T_QUOTE;
			t->escape = false;
		} else if (!is_ws(c)) {
			tok_add(t, c);
		}
		return false;
	case T_QUOTE:
		if (t->escape) {
			t->escape = false;
			tok_add(t, c);
		} else if (c == '\\') {
			t->escape = true;
		} else if (c == '"') {
			t->state = T_ID;
		} else if (c != '\r' && c != '\n') {
			tok_add(t, c);
		}
		return false;
	}
	return false;
}

size_t thread_msgid_first(struct view v, char *out)
{
	struct thread_idtok t;
	tok_init(&t);
	for (size_t i = 0; i < v.len; i++)
		if (tok_byte(&t, v.ptr[i])) {
			memcpy(out, t.cur, t.len);
			return t.len;
		}
	return 0;
}

enum { H_LINE, H_NAME, H_CR, H_VALUE, H_SKIP, H_DONE };

void thread_refs_init(struct thread_refs *r)
{
	r->head = r->count = 0;
	r->hstate = H_LINE;
	r->name_len = 0;
	r->in_field = false;
	tok_init(&r->tok);
}

static void refs_push(struct thread_refs *r, const char *id, size_t len)
{
	unsigned slot;
	if (r->count == THREAD_REFS_MAX) {
		slot = r->head; /* drop the oldest */
		r->head = (r->head + 1) % THREAD_REFS_MAX;
	} else {
		slot = (r->head + r->count) % THREAD_REFS_MAX;
		r->count++;
	}
	memcpy(r->ids[slot], id, len);
	r->lens[slot] = (uint16_t)len;
}

static uint8_t lower(uint8_t c)
{
	return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

bool thread_refs_feed(struct thread_refs *r, const uint8_t *p, size_t n)
{
	static const char name[] = "references";
	for (size_t i = 0; i < n; i++) {
		uint8_t c = p[i];
		switch (r->hstate) {
		case H_DONE:
			return true;
		case H_LINE:
			if (c == ' ' || c == '\t') {
				r->hstate = r->in_field ? H_VALUE : H_SKIP;
				break;
			}
			if (r->in_field || c == '\n') {
				r->hstate = H_DONE; /* the field, or the header, ended */
				return true;
			}
			if (c == '\r') {
				r->hstate = H_CR;
				break;
			}
			r->name_len = 0;
			r->hstate = H_NAME;
			/* fall through */
		case H_NAME:
			if (c == ':') {
				if (r->name_len == sizeof(name) - 1) {
					r->in_field = true;
					tok_init(&r->tok);
					r->hstate = H_VALUE;
				} else {
					r->hstate = H_SKIP;
				}
			} else if (c == '\n') {
				r->hstate = H_LINE;
			} else if (r->name_len < sizeof(name) - 1 &&
				   lower(c) == (uint8_t)name[r->name_len]) {
				r->name_len++;
			} else if (!((c == ' ' || c == '\t') && r->name_len == sizeof(name) - 1)) {
				r->hstate = H_SKIP;
			}
			break;
		case H_CR:
			if (c == '\n') {
				r->hstate = H_DONE; /* CRLF: end of the header */
				return true;
			}
			r->hstate = c == '\r' ? H_CR : H_SKIP;
			break;
		case H_VALUE:
			if (c == '\n')
				r->hstate = H_LINE;
			else if (tok_byte(&r->tok, c))
				refs_push(r, r->tok.cur, r->tok.len);
			break;
		case H_SKIP:
			if (c == '\n')
				r->hstate = H_LINE;
			break;
		}
	}
	return r->hstate == H_DONE;
}

void thread_refs_finish(struct thread_refs *r, struct view in_reply_to)
{
	r->hstate = H_DONE;
	if (r->count)
		return;
	char id[THREAD_ID_MAX];
	size_t n = thread_msgid_first(in_reply_to, id);
	if (n)
		refs_push(r, id, n);
}

size_t thread_refs_count(const struct thread_refs *r)
{
	return r->count;
}

struct view thread_refs_get(const struct thread_refs *r, size_t i)
{
	unsigned slot = (unsigned)((r->head + i) % THREAD_REFS_MAX);
	return view_make(r->ids[slot], r->lens[slot]);
}

/* ===== The thread set ===== */

#define NONE (-1)
#define ROOT 0

struct tmsg {
	uint32_t num;
	uint32_t subj_off, subj_len;
	bool refwd;
	int64_t sent;
};

/* A container: a message, or a dummy standing for a referenced id. */
struct tnode {
	int32_t msg; /* index in msgs, NONE for a dummy */
	int32_t parent, child, next, prev;
	uint32_t id_off, id_len; /* id_len 0: not in the id table */
};

/* Open-addressing table of node indices (+1; 0 = empty) keyed by bytes in
 * the arena. */
struct table {
	uint32_t *slots;
	uint32_t *key_off, *key_len; /* per slot */
	size_t cap, used;
};

struct thread_set {
	struct tmsg *msgs;
	size_t n_msgs, cap_msgs;
	struct tnode *nodes;
	size_t n_nodes, cap_nodes;
	struct buf arena;
	struct table ids;
	int32_t *scratch; /* children being sorted, traversal orders */
	size_t cap_scratch;
};

static uint64_t hash_bytes(const uint8_t *p, size_t n)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 1099511628211ull;
	}
	return h;
}

static const uint8_t *arena_at(const struct thread_set *ts, uint32_t off)
{
	return ts->arena.data ? ts->arena.data + off : (const uint8_t *)"";
}

static uint32_t arena_add(struct thread_set *ts, struct view v)
{
	uint32_t off = (uint32_t)ts->arena.len;
	if (v.len && buf_append(&ts->arena, v.ptr, v.len) != 0)
		abort();
	return off;
}

static void table_init(struct table *t)
{
	memset(t, 0, sizeof(*t));
}

static void table_free(struct table *t)
{
	free(t->slots);
	free(t->key_off);
	free(t->key_len);
	memset(t, 0, sizeof(*t));
}

/* Slot of key: the matching one or the empty one where it would go. */
static size_t table_slot(const struct thread_set *ts, const struct table *t, struct view key)
{
	size_t mask = t->cap - 1, i = (size_t)hash_bytes(key.ptr, key.len) & mask;
	while (t->slots[i] && !(t->key_len[i] == key.len &&
				memcmp(arena_at(ts, t->key_off[i]), key.ptr, key.len) == 0))
		i = (i + 1) & mask;
	return i;
}

static int32_t table_get(const struct thread_set *ts, const struct table *t, struct view key)
{
	if (!t->cap)
		return NONE;
	size_t i = table_slot(ts, t, key);
	return t->slots[i] ? (int32_t)t->slots[i] - 1 : NONE;
}

/* Insert or replace; key_off/key_len name bytes already in the arena. */
static void table_put(struct thread_set *ts, struct table *t, uint32_t key_off, uint32_t key_len,
		      int32_t node)
{
	if ((t->used + 1) * 2 > t->cap) {
		struct table n;
		n.cap = t->cap ? t->cap * 2 : 64;
		n.used = 0;
		n.slots = xcalloc(n.cap, sizeof(uint32_t));
		n.key_off = xmalloc(n.cap * sizeof(uint32_t));
		n.key_len = xmalloc(n.cap * sizeof(uint32_t));
		for (size_t i = 0; i < t->cap; i++) {
			if (!t->slots[i])
				continue;
			struct view k = view_make(arena_at(ts, t->key_off[i]), t->key_len[i]);
			size_t j = table_slot(ts, &n, k);
			n.slots[j] = t->slots[i];
			n.key_off[j] = t->key_off[i];
			n.key_len[j] = t->key_len[i];
			n.used++;
		}
		table_free(t);
		*t = n;
	}
	struct view k = view_make(arena_at(ts, key_off), key_len);
	size_t i = table_slot(ts, t, k);
	if (!t->slots[i]) {
		t->used++;
		t->key_off[i] = key_off;
		t->key_len[i] = key_len;
	}
	t->slots[i] = (uint32_t)node + 1;
}

static int32_t node_new(struct thread_set *ts, int32_t msg)
{
	if (ts->n_nodes == ts->cap_nodes) {
		ts->cap_nodes = ts->cap_nodes ? ts->cap_nodes * 2 : 64;
		ts->nodes = xrealloc(ts->nodes, ts->cap_nodes * sizeof(*ts->nodes));
	}
	struct tnode *x = &ts->nodes[ts->n_nodes];
	x->msg = msg;
	x->parent = x->child = x->next = x->prev = NONE;
	x->id_off = x->id_len = 0;
	return (int32_t)ts->n_nodes++;
}

struct thread_set *thread_set_new(void)
{
	struct thread_set *ts = xcalloc(1, sizeof(*ts));
	buf_init(&ts->arena, UINT32_MAX);
	table_init(&ts->ids);
	node_new(ts, NONE); /* ROOT */
	return ts;
}

void thread_set_free(struct thread_set **tsp)
{
	struct thread_set *ts = *tsp;
	if (!ts)
		return;
	free(ts->msgs);
	free(ts->nodes);
	buf_cleanup(&ts->arena);
	table_free(&ts->ids);
	free(ts->scratch);
	free(ts);
	*tsp = NULL;
}

size_t thread_set_mem(const struct thread_set *ts)
{
	return sizeof(*ts) + ts->cap_msgs * sizeof(struct tmsg) +
	       ts->cap_nodes * sizeof(struct tnode) + ts->arena.cap +
	       ts->ids.cap * 3 * sizeof(uint32_t) + ts->cap_scratch * sizeof(int32_t);
}

static void unlink_node(struct thread_set *ts, int32_t c)
{
	struct tnode *x = &ts->nodes[c];
	if (x->parent == NONE)
		return;
	if (x->prev != NONE)
		ts->nodes[x->prev].next = x->next;
	else
		ts->nodes[x->parent].child = x->next;
	if (x->next != NONE)
		ts->nodes[x->next].prev = x->prev;
	x->parent = x->next = x->prev = NONE;
}

/* c becomes the first child of p. */
static void link_first(struct thread_set *ts, int32_t p, int32_t c)
{
	struct tnode *x = &ts->nodes[c];
	x->parent = p;
	x->prev = NONE;
	x->next = ts->nodes[p].child;
	if (x->next != NONE)
		ts->nodes[x->next].prev = c;
	ts->nodes[p].child = c;
}

/* c becomes a child of p without changing p's first child (the one a
 * dummy's subject and date come from). */
static void link_second(struct thread_set *ts, int32_t p, int32_t c)
{
	int32_t f = ts->nodes[p].child;
	if (f == NONE) {
		link_first(ts, p, c);
		return;
	}
	struct tnode *x = &ts->nodes[c];
	x->parent = p;
	x->prev = f;
	x->next = ts->nodes[f].next;
	if (x->next != NONE)
		ts->nodes[x->next].prev = c;
	ts->nodes[f].next = c;
}

/* Would making a the parent of b close a loop (is b a or an ancestor of
 * a)? */
static bool would_loop(const struct thread_set *ts, int32_t a, int32_t b)
{
	if (a != b && ts->nodes[b].child == NONE)
		return false; /* b has no descendants: the usual case, O(1) */
	for (int32_t x = a; x != NONE; x = ts->nodes[x].parent)
		if (x == b)
			return true;
	return false;
}

static int32_t id_node(struct thread_set *ts, struct view id)
{
	int32_t x = table_get(ts, &ts->ids, id);
	if (x != NONE)
		return x;
	x = node_new(ts, NONE);
	ts->nodes[x].id_off = arena_add(ts, id);
	ts->nodes[x].id_len = (uint32_t)id.len;
	table_put(ts, &ts->ids, ts->nodes[x].id_off, (uint32_t)id.len, x);
	return x;
}

void thread_set_add(struct thread_set *ts, uint32_t num, int64_t sent_ms, struct view subject,
		    bool refwd, struct view msgid, const struct view *refs, size_t n_refs)
{
	if (ts->n_msgs >= INT32_MAX / 2 || ts->n_nodes >= INT32_MAX / 2)
		return; /* far beyond any mailbox; keeps indices in range */
	if (ts->n_msgs == ts->cap_msgs) {
		ts->cap_msgs = ts->cap_msgs ? ts->cap_msgs * 2 : 64;
		ts->msgs = xrealloc(ts->msgs, ts->cap_msgs * sizeof(*ts->msgs));
	}
	int32_t m = (int32_t)ts->n_msgs++;
	struct tmsg *tm = &ts->msgs[m];
	tm->num = num;
	tm->sent = sent_ms;
	tm->refwd = refwd;
	tm->subj_off = arena_add(ts, subject);
	tm->subj_len = (uint32_t)subject.len;

	/* (1) the message's container: a dummy that stood for its id, or a
	 * new one; a duplicate id counts as no id */
	int32_t c = NONE;
	if (msgid.len) {
		int32_t x = table_get(ts, &ts->ids, msgid);
		if (x == NONE) {
			c = id_node(ts, msgid);
			ts->nodes[c].msg = m;
		} else if (ts->nodes[x].msg == NONE) {
			c = x;
			ts->nodes[c].msg = m;
		}
	}
	if (c == NONE)
		c = node_new(ts, m);
	/* (1A) link the references in a chain, leaving existing links */
	int32_t prev = NONE;
	for (size_t i = 0; i < n_refs; i++) {
		if (refs[i].len == 0)
			continue;
		int32_t r = id_node(ts, refs[i]);
		if (prev != NONE && ts->nodes[r].parent == NONE && !would_loop(ts, prev, r))
			link_first(ts, prev, r);
		prev = r;
	}
	/* (1B) the last reference is the parent, replacing an older link */
	if (ts->nodes[c].parent != prev) {
		unlink_node(ts, c);
		if (prev != NONE && !would_loop(ts, prev, c))
			link_first(ts, prev, c);
	}
}

/* ---- sorting siblings ---- */

static int32_t *scratch(struct thread_set *ts, size_t n)
{
	if (n > ts->cap_scratch) {
		ts->cap_scratch = MAX(n, ts->cap_scratch * 2);
		ts->scratch = xrealloc(ts->scratch, ts->cap_scratch * sizeof(int32_t));
	}
	return ts->scratch;
}

/* The message a node sorts as: itself, or a dummy's first child. */
static int32_t key_msg(const struct thread_set *ts, int32_t x)
{
	while (x != NONE && ts->nodes[x].msg == NONE)
		x = ts->nodes[x].child;
	return x == NONE ? NONE : ts->nodes[x].msg;
}

static int cmp_date(const void *pa, const void *pb, void *arg)
{
	const struct thread_set *ts = arg;
	int32_t a = key_msg(ts, *(const int32_t *)pa), b = key_msg(ts, *(const int32_t *)pb);
	if (a == NONE || b == NONE)
		return (a == NONE) - (b == NONE);
	int64_t da = ts->msgs[a].sent, db = ts->msgs[b].sent;
	if (da != db)
		return da < db ? -1 : 1;
	return a < b ? -1 : a > b; /* message index = sequence order */
}

/* Sort the children of p by sent date (a dummy by its first child). The
 * scratch array is used from offset `at` (callers keep a traversal order
 * below it). */
static void sort_children(struct thread_set *ts, int32_t p, size_t at)
{
	size_t k = 0;
	for (int32_t c = ts->nodes[p].child; c != NONE; c = ts->nodes[c].next)
		k++;
	if (k < 2)
		return;
	int32_t *a = scratch(ts, at + k) + at;
	k = 0;
	for (int32_t c = ts->nodes[p].child; c != NONE; c = ts->nodes[c].next)
		a[k++] = c;
	qsort_r(a, k, sizeof(int32_t), cmp_date, ts);
	for (size_t i = 0; i < k; i++) {
		ts->nodes[a[i]].prev = i ? a[i - 1] : NONE;
		ts->nodes[a[i]].next = i + 1 < k ? a[i + 1] : NONE;
	}
	ts->nodes[p].child = a[0];
}

/* Pre-order of the tree under ROOT into the scratch array (ROOT first);
 * returns the count. Iterative: chains may be as deep as the mailbox. */
static size_t preorder(struct thread_set *ts)
{
	int32_t *stack = xmalloc(ts->n_nodes * sizeof(int32_t));
	int32_t *order = scratch(ts, ts->n_nodes);
	size_t ns = 0, no = 0;
	stack[ns++] = ROOT;
	while (ns) {
		int32_t x = stack[--ns];
		order[no++] = x;
		for (int32_t c = ts->nodes[x].child; c != NONE; c = ts->nodes[c].next)
			stack[ns++] = c;
	}
	free(stack);
	return no;
}

/* ---- output ---- */

static void put_num(struct buf *out, uint32_t n)
{
	char t[12];
	int k = snprintf(t, sizeof(t), "%u", n);
	if (buf_append(out, t, (size_t)k) != 0)
		abort();
}

static void put_c(struct buf *out, char ch)
{
	if (buf_append(out, &ch, 1) != 0)
		abort();
}

/* "(members)" for every child of ROOT: a chain of single children is a
 * run of numbers, two or more children are nested lists. */
static void emit(struct thread_set *ts, struct buf *out)
{
	int32_t *stack = xmalloc((ts->n_nodes ? ts->n_nodes : 1) * sizeof(int32_t));
	for (int32_t top = ts->nodes[ROOT].child; top != NONE; top = ts->nodes[top].next) {
		if (key_msg(ts, top) == NONE)
			continue; /* an empty dummy (not expected after pruning) */
		size_t ns = 0;
		put_c(out, '(');
		int32_t cur = top;
		bool space = false;
		for (;;) {
			int32_t first;
			for (;;) {
				if (ts->nodes[cur].msg != NONE) {
					if (space)
						put_c(out, ' ');
					put_num(out, ts->msgs[ts->nodes[cur].msg].num);
					space = true;
				}
				first = ts->nodes[cur].child;
				if (first == NONE || ts->nodes[first].next != NONE)
					break;
				cur = first;
			}
			if (first != NONE) {
				if (space)
					put_c(out, ' ');
				put_c(out, '(');
				stack[ns++] = ts->nodes[first].next;
				cur = first;
				space = false;
				continue;
			}
			/* a leaf: close lists until a sibling is pending */
			bool more = false;
			while (ns) {
				put_c(out, ')');
				int32_t s = stack[--ns];
				if (s != NONE) {
					put_c(out, '(');
					stack[ns++] = ts->nodes[s].next;
					cur = s;
					space = false;
					more = true;
					break;
				}
			}
			if (!more)
				break;
		}
		put_c(out, ')');
	}
	free(stack);
}

/* ---- REFERENCES ---- */

static uint32_t thread_subject_msg(const struct thread_set *ts, int32_t x, struct view *subj)
{
	int32_t m = ts->nodes[x].msg != NONE ? ts->nodes[x].msg : key_msg(ts, ts->nodes[x].child);
	if (m == NONE) {
		*subj = view_make("", 0);
		return 0;
	}
	*subj = view_make(arena_at(ts, ts->msgs[m].subj_off), ts->msgs[m].subj_len);
	return ts->msgs[m].subj_off;
}

static bool is_dummy(const struct thread_set *ts, int32_t x)
{
	return ts->nodes[x].msg == NONE;
}

static bool is_refwd(const struct thread_set *ts, int32_t x)
{
	return !is_dummy(ts, x) && ts->msgs[ts->nodes[x].msg].refwd;
}

static void move_children(struct thread_set *ts, int32_t from, int32_t to)
{
	int32_t c;
	while ((c = ts->nodes[from].child) != NONE) {
		unlink_node(ts, c);
		link_second(ts, to, c);
	}
}

static void gather_subjects(struct thread_set *ts)
{
	size_t n = 0;
	for (int32_t c = ts->nodes[ROOT].child; c != NONE; c = ts->nodes[c].next)
		n++;
	if (n < 2)
		return;
	int32_t *roots = xmalloc(n * sizeof(int32_t));
	n = 0;
	for (int32_t c = ts->nodes[ROOT].child; c != NONE; c = ts->nodes[c].next)
		roots[n++] = c;
	struct table subj;
	table_init(&subj);
	/* (5B) one message per subject, preferring dummies, then originals
	 * over replies */
	for (size_t i = 0; i < n; i++) {
		int32_t x = roots[i];
		struct view s;
		uint32_t off = thread_subject_msg(ts, x, &s);
		if (s.len == 0)
			continue;
		int32_t t = table_get(ts, &subj, s);
		if (t == NONE ||
		    (!is_dummy(ts, t) &&
		     (is_dummy(ts, x) || (is_refwd(ts, t) && !is_refwd(ts, x)))))
			table_put(ts, &subj, off, (uint32_t)s.len, x);
	}
	/* (5C) merge the others into it */
	for (size_t i = 0; i < n; i++) {
		int32_t x = roots[i];
		if (ts->nodes[x].parent != ROOT)
			continue; /* already moved under a new dummy */
		struct view s;
		uint32_t off = thread_subject_msg(ts, x, &s);
		if (s.len == 0)
			continue;
		int32_t t = table_get(ts, &subj, s);
		if (t == NONE || t == x)
			continue;
		if (is_dummy(ts, t) && is_dummy(ts, x)) {
			move_children(ts, x, t);
			unlink_node(ts, x);
		} else if (is_dummy(ts, t) || (is_refwd(ts, x) && !is_refwd(ts, t))) {
			unlink_node(ts, x);
			link_second(ts, t, x);
		} else {
			int32_t d = node_new(ts, NONE);
			unlink_node(ts, t);
			unlink_node(ts, x);
			link_first(ts, ROOT, d);
			link_first(ts, d, t);
			link_second(ts, d, x);
			table_put(ts, &subj, off, (uint32_t)s.len, d);
		}
	}
	table_free(&subj);
	free(roots);
}

void thread_references(struct thread_set *ts, struct buf *out)
{
	/* (2) every container without a parent goes under the root */
	for (size_t i = 1; i < ts->n_nodes; i++)
		if (ts->nodes[i].parent == NONE)
			link_first(ts, ROOT, (int32_t)i);
	/* (3) prune dummies, children before their parents */
	size_t no = preorder(ts);
	int32_t *order = ts->scratch;
	for (size_t i = no; i-- > 1;) {
		int32_t x = order[i];
		if (!is_dummy(ts, x))
			continue;
		int32_t p = ts->nodes[x].parent, first = ts->nodes[x].child;
		if (first == NONE) {
			unlink_node(ts, x);
		} else if (p != ROOT || ts->nodes[first].next == NONE) {
			int32_t c;
			while ((c = ts->nodes[x].child) != NONE) {
				unlink_node(ts, c);
				link_first(ts, p, c);
			}
			unlink_node(ts, x);
		}
	}
	/* (4) sort the top level (a dummy by its earliest child) */
	for (int32_t c = ts->nodes[ROOT].child; c != NONE; c = ts->nodes[c].next)
		if (is_dummy(ts, c))
			sort_children(ts, c, 0);
	sort_children(ts, ROOT, 0);
	/* (5) threads with the same base subject */
	gather_subjects(ts);
	/* (6) sort every set of siblings, the deepest first */
	no = preorder(ts);
	for (size_t i = no; i-- > 0;)
		sort_children(ts, ts->scratch[i], no);
	emit(ts, out);
}

/* ---- ORDEREDSUBJECT ---- */

static int cmp_subject_date(const void *pa, const void *pb, void *arg)
{
	const struct thread_set *ts = arg;
	const struct tmsg *a = &ts->msgs[*(const int32_t *)pa], *b = &ts->msgs[*(const int32_t *)pb];
	int r = memcmp(arena_at(ts, a->subj_off), arena_at(ts, b->subj_off),
		       MIN(a->subj_len, b->subj_len));
	if (r)
		return r < 0 ? -1 : 1;
	if (a->subj_len != b->subj_len)
		return a->subj_len < b->subj_len ? -1 : 1;
	if (a->sent != b->sent)
		return a->sent < b->sent ? -1 : 1;
	return *(const int32_t *)pa < *(const int32_t *)pb ? -1 : 1;
}

static bool same_subject(const struct thread_set *ts, int32_t a, int32_t b)
{
	const struct tmsg *x = &ts->msgs[a], *y = &ts->msgs[b];
	return x->subj_len == y->subj_len &&
	       memcmp(arena_at(ts, x->subj_off), arena_at(ts, y->subj_off), x->subj_len) == 0;
}

void thread_orderedsubject(struct thread_set *ts, struct buf *out)
{
	size_t n = ts->n_msgs;
	if (!n)
		return;
	/* Messages by subject then date; each run of one subject is a thread
	 * whose first message is the root and the others its children. */
	int32_t *m = xmalloc(n * sizeof(int32_t));
	for (size_t i = 0; i < n; i++)
		m[i] = (int32_t)i;
	qsort_r(m, n, sizeof(int32_t), cmp_subject_date, ts);
	for (size_t i = 0; i < n;) {
		size_t j = i + 1;
		while (j < n && same_subject(ts, m[i], m[j]))
			j++;
		int32_t root = node_new(ts, m[i]);
		link_first(ts, ROOT, root);
		for (size_t k = j; k-- > i + 1;) {
			int32_t c = node_new(ts, m[k]);
			link_first(ts, root, c);
		}
		i = j;
	}
	free(m);
	sort_children(ts, ROOT, 0);
	emit(ts, out);
}
