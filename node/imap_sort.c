/* SORT and THREAD (RFC 5256), SORT=DISPLAY (RFC 5957) and ESORT (RFC 5267)
 * on the selected mailbox.
 *
 * One worker job per command: store_search() runs the search program, then
 * the matching messages' records are read in windows and only their keys
 * are kept -- a fixed record plus at most SORTKEY_MAX bytes per string key
 * for SORT (storage/sortkey.h), the base subject, normalised Message-ID
 * and references for THREAD (storage/thread.h). No body is held: the MIME
 * blob recorded at delivery gives the envelope fields, and
 * THREAD=REFERENCES reads the top-level header only up to the end of its
 * References field (the blob does not record References). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "node/imap_internal.h"
#include "storage/search.h"
#include "storage/sortkey.h"
#include "storage/thread.h"

/* Matching messages read per store_fetch_range, and the widest UID span
 * one read may cover (so sparse matches do not pull in a whole mailbox of
 * records at once). */
#define SORT_WINDOW 256
#define SORT_SPAN 4096
/* Header bytes examined for References at most. */
#define SORT_HEADER_MAX (256 * 1024)
/* Keys one command may hold; beyond it the command fails with NO [LIMIT]
 * (about a million messages with long subjects). */
#define SORT_MEM_MAX ((size_t)256 << 20)

enum sort_kind { JOB_SORT, JOB_ORDEREDSUBJECT, JOB_REFERENCES };

struct sort_job {
	struct imap_session *s;
	enum sort_kind kind;
	const uint32_t *nums; /* per matching message: number to report */
	struct buf blob;
	const char *error;
	bool too_big;
	/* SORT */
	struct sortkey_crit crit[SORTKEY_FIELD_COUNT_];
	size_t n_crit;
	bool need_blob;
	struct sortkey_rec *recs;
	size_t n_recs;
	const uint32_t *uids; /* per matching message (ascending) */
	uint64_t *mods;       /* per matching message, for (MODSEQ n) */
	struct buf arena;
	/* THREAD */
	struct thread_set *ts;
	struct thread_refs *refs;
	struct buf subject;
};

/* Calls fn for each of uids[0..n) (ascending) with its record, or NULL if
 * it was expunged since the search. */
static int each_message(struct sort_job *j, const uint32_t *uids, size_t n,
			int (*fn)(struct sort_job *j, size_t i, const struct msg_info *m))
{
	struct imap_session *s = j->s;
	size_t i = 0;
	while (i < n) {
		size_t e = i + 1;
		while (e < n && e - i < SORT_WINDOW && uids[e] - uids[i] < SORT_SPAN)
			e++;
		struct msg_info *ms = NULL;
		size_t nm = 0;
		if (store_fetch_range(s->sh, s->sel_id, uids[i], uids[e - 1], &ms, &nm, &j->error) != 0)
			return -1;
		int r = 0;
		size_t k = 0;
		for (size_t q = i; q < e && r == 0; q++) {
			while (k < nm && ms[k].uid < uids[q])
				k++;
			r = fn(j, q, k < nm && ms[k].uid == uids[q] ? &ms[k] : NULL);
		}
		for (k = 0; k < nm; k++)
			msg_info_cleanup(&ms[k]);
		free(ms);
		if (r)
			return -1;
		i = e;
	}
	return 0;
}

static int load_env(struct sort_job *j, const struct msg_info *m, struct sortkey_env *env)
{
	if (store_body_mime(j->s->sh, m->body_hash, &j->blob, &j->error) < 0)
		return -1;
	if (sortkey_blob_env(buf_view(&j->blob), env) < 0)
		LOG_WARN("imap", j->s->id, "sort_blob_bad", "uid=%u", m->uid);
	return 0;
}

/* ---- SORT ------------------------------------------------------------------ */

static int sort_one(struct sort_job *j, size_t i, const struct msg_info *m)
{
	if (!m)
		return 0;
	struct sortkey_rec *r = &j->recs[j->n_recs++];
	memset(r, 0, sizeof(*r));
	r->num = j->nums[i];
	r->order = (uint32_t)i;
	r->arrival_ms = m->internal_date_ms;
	r->size = m->size;
	r->sent_ms = (int64_t)m->internal_date_ms;
	if (j->mods)
		j->mods[i] = m->modseq;
	if (!j->need_blob)
		return 0;
	struct sortkey_env env;
	if (load_env(j, m, &env) < 0)
		return -1;
	for (size_t c = 0; c < j->n_crit; c++) {
		enum sortkey_field f = j->crit[c].field;
		int k = sortkey_slot(f);
		if (f == SORTKEY_DATE)
			r->sent_ms = sortkey_sent_ms(env.date, m->internal_date_ms);
		if (k < 0)
			continue;
		size_t off = j->arena.len;
		switch (f) {
		case SORTKEY_CC: sortkey_addr_mailbox(env.cc, &j->arena); break;
		case SORTKEY_FROM: sortkey_addr_mailbox(env.from, &j->arena); break;
		case SORTKEY_TO: sortkey_addr_mailbox(env.to, &j->arena); break;
		case SORTKEY_SUBJECT: sortkey_subject(env.subject, &j->arena, NULL); break;
		case SORTKEY_DISPLAYFROM: sortkey_addr_display(env.from, &j->arena); break;
		case SORTKEY_DISPLAYTO: sortkey_addr_display(env.to, &j->arena); break;
		default: break;
		}
		r->off[k] = (uint32_t)off;
		r->len[k] = (uint32_t)(j->arena.len - off);
	}
	if (j->arena.len + j->n_recs * sizeof(*r) > SORT_MEM_MAX) {
		j->too_big = true;
		return -1;
	}
	return 0;
}

/* ESORT's ALL: the numbers in sort order, ascending runs as ranges. */
static void put_sorted_set(struct buf *b, const struct sortkey_rec *r, size_t n)
{
	for (size_t i = 0; i < n;) {
		size_t e = i;
		while (e + 1 < n && r[e + 1].num == r[e].num + 1)
			e++;
		buf_printf(b, i ? ",%u" : "%u", r[i].num);
		if (e > i)
			buf_printf(b, ":%u", r[e].num);
		i = e + 1;
	}
}

/* RFC 5182 2.1 (and RFC 5267: MIN and MAX are the first and last in sort
 * order): with MIN and/or MAX alone, only those are returned and saved. */
static bool minmax_only(unsigned ret)
{
	return (ret & (IMAP_SEARCH_RET_MIN | IMAP_SEARCH_RET_MAX)) &&
	       !(ret & (IMAP_SEARCH_RET_ALL | IMAP_SEARCH_RET_COUNT));
}

static void saved_clear(struct imap_session *s)
{
	free(s->saved);
	s->saved = NULL;
	s->n_saved = 0;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static void save_result(struct sort_job *j, unsigned ret)
{
	struct imap_session *s = j->s;
	size_t n = j->n_recs;
	saved_clear(s);
	s->saved = xmalloc((n ? n : 1) * sizeof(uint32_t));
	if (minmax_only(ret)) {
		uint32_t a = n ? j->uids[j->recs[0].order] : 0;
		uint32_t b = n ? j->uids[j->recs[n - 1].order] : 0;
		if (n && (ret & IMAP_SEARCH_RET_MIN) && (ret & IMAP_SEARCH_RET_MAX) && a != b) {
			s->saved[s->n_saved++] = MIN(a, b);
			s->saved[s->n_saved++] = MAX(a, b);
		} else if (n) {
			s->saved[s->n_saved++] = (ret & IMAP_SEARCH_RET_MIN) ? a : b;
		}
		return;
	}
	/* "$" is a set: the matches in UID order */
	for (size_t i = 0; i < n; i++)
		s->saved[i] = j->uids[j->recs[i].order];
	s->n_saved = n;
	qsort(s->saved, n, sizeof(uint32_t), cmp_u32);
}

static void sort_output(struct sort_job *j, struct buf *b)
{
	struct imap_session *s = j->s;
	const struct imap_command *cmd = s->cmd;
	size_t n = j->n_recs;
	unsigned ret = cmd->u.sort.esort ? cmd->u.sort.return_opts : IMAP_SEARCH_RET_ALL;
	/* RFC 7162 3.1.5: the highest mod-sequence of what is returned */
	uint64_t maxmod = 0;
	for (size_t i = 0; j->mods && i < n; i++)
		if (!minmax_only(ret) || (i == 0 && (ret & IMAP_SEARCH_RET_MIN)) ||
		    (i == n - 1 && (ret & IMAP_SEARCH_RET_MAX)))
			maxmod = MAX(maxmod, j->mods[j->recs[i].order]);
	if (ret & IMAP_SEARCH_RET_SAVE)
		save_result(j, ret);
	if (!cmd->u.sort.esort) {
		buf_printf(b, "* SORT");
		for (size_t i = 0; i < n; i++)
			buf_printf(b, " %u", j->recs[i].num);
		if (maxmod)
			buf_printf(b, " (MODSEQ %llu)", (unsigned long long)maxmod);
		buf_printf(b, "\r\n");
		return;
	}
	if (!(ret & ~(unsigned)IMAP_SEARCH_RET_SAVE))
		return; /* SAVE alone answers nothing (RFC 5182 2.1) */
	buf_printf(b, "* ESEARCH (TAG \"%s\")%s", s->tag, cmd->uid ? " UID" : "");
	if ((ret & IMAP_SEARCH_RET_MIN) && n)
		buf_printf(b, " MIN %u", j->recs[0].num);
	if ((ret & IMAP_SEARCH_RET_MAX) && n)
		buf_printf(b, " MAX %u", j->recs[n - 1].num);
	if ((ret & IMAP_SEARCH_RET_ALL) && n) {
		buf_printf(b, " ALL ");
		put_sorted_set(b, j->recs, n);
	}
	if (ret & IMAP_SEARCH_RET_COUNT)
		buf_printf(b, " COUNT %zu", n);
	if (maxmod)
		buf_printf(b, " MODSEQ %llu", (unsigned long long)maxmod);
	buf_printf(b, "\r\n");
}

/* ---- THREAD ----------------------------------------------------------------- */

static int refs_piece(void *arg, const uint8_t *p, size_t n)
{
	return thread_refs_feed(arg, p, n) ? 1 : 0;
}

static int thread_one(struct sort_job *j, size_t i, const struct msg_info *m)
{
	if (!m)
		return 0;
	struct sortkey_env env;
	if (load_env(j, m, &env) < 0)
		return -1;
	buf_reset(&j->subject);
	bool refwd = false;
	sortkey_subject(env.subject, &j->subject, &refwd);
	int64_t sent = sortkey_sent_ms(env.date, m->internal_date_ms);
	char id[THREAD_ID_MAX];
	size_t idn = 0, nr = 0;
	struct view rv[THREAD_REFS_MAX];
	if (j->kind == JOB_REFERENCES) {
		idn = thread_msgid_first(env.message_id, id);
		thread_refs_init(j->refs);
		if (env.hdr_len &&
		    store_body_read(j->s->sh, m->body_hash, 0, MIN(env.hdr_len, SORT_HEADER_MAX),
				    refs_piece, j->refs, &j->error) < 0)
			return -1;
		thread_refs_finish(j->refs, env.in_reply_to);
		nr = thread_refs_count(j->refs);
		for (size_t k = 0; k < nr; k++)
			rv[k] = thread_refs_get(j->refs, k);
	}
	thread_set_add(j->ts, j->nums[i], sent, buf_view(&j->subject), refwd, view_make(id, idn),
		       rv, nr);
	if (thread_set_mem(j->ts) > SORT_MEM_MAX) {
		j->too_big = true;
		return -1;
	}
	return 0;
}

/* ---- the job ------------------------------------------------------------------ */

static bool has_modseq_key(const struct imap_search_key *k)
{
	if (k->type == IMAP_SEARCH_MODSEQ)
		return true;
	if (k->type == IMAP_SEARCH_AND || k->type == IMAP_SEARCH_OR || k->type == IMAP_SEARCH_NOT)
		for (size_t i = 0; i < k->u.sub.count; i++)
			if (has_modseq_key(&k->u.sub.keys[i]))
				return true;
	return false;
}

static enum sortkey_field field_of(enum imap_sort_key k)
{
	switch (k) {
	case IMAP_SORT_ARRIVAL: return SORTKEY_ARRIVAL;
	case IMAP_SORT_CC: return SORTKEY_CC;
	case IMAP_SORT_DATE: return SORTKEY_DATE;
	case IMAP_SORT_FROM: return SORTKEY_FROM;
	case IMAP_SORT_SIZE: return SORTKEY_SIZE;
	case IMAP_SORT_SUBJECT: return SORTKEY_SUBJECT;
	case IMAP_SORT_TO: return SORTKEY_TO;
	case IMAP_SORT_DISPLAYFROM: return SORTKEY_DISPLAYFROM;
	case IMAP_SORT_DISPLAYTO: return SORTKEY_DISPLAYTO;
	}
	return SORTKEY_ARRIVAL;
}

static void sort_run(struct imap_session *s)
{
	const struct imap_command *cmd = s->cmd;
	struct sort_job *j = xcalloc(1, sizeof(*j));
	j->s = s;
	buf_init(&j->blob, 0);
	buf_init(&j->arena, 0);
	buf_init(&j->subject, 0);
	const char *what = "SORT";
	if (cmd->cmd == IMAP_CMD_THREAD) {
		what = "THREAD";
		j->kind = view_eq_nocase(cmd->u.thread.algorithm, "REFERENCES") ? JOB_REFERENCES
										  : JOB_ORDEREDSUBJECT;
		j->ts = thread_set_new();
		if (j->kind == JOB_REFERENCES)
			j->refs = xmalloc(sizeof(*j->refs));
	} else {
		/* A repeated key can never decide anything: keep the first. */
		for (size_t i = 0; i < cmd->u.sort.criteria_count; i++) {
			enum sortkey_field f = field_of(cmd->u.sort.criteria[i].key);
			bool seen = false;
			for (size_t k = 0; k < j->n_crit; k++)
				seen |= j->crit[k].field == f;
			if (seen)
				continue;
			j->crit[j->n_crit].field = f;
			j->crit[j->n_crit].reverse = cmd->u.sort.criteria[i].reverse;
			j->need_blob |= sortkey_needs_blob(f);
			j->n_crit++;
		}
	}

	uint32_t *found = NULL, *nums = NULL;
	size_t n = 0;
	struct buf line; /* sized by the mailbox, checked below */
	buf_init(&line, 0);
	int r = store_search(s->sh, s->sel_id, s->search, &found, &n, &j->error);
	if (r == 0) {
		/* Only messages this session knows about; numbers as asked. */
		nums = xmalloc((n ? n : 1) * sizeof(uint32_t));
		size_t k = 0;
		for (size_t i = 0; i < n; i++) {
			uint32_t q = imap_seq_of(s, found[i]);
			if (q) {
				nums[k] = cmd->uid ? found[i] : q;
				found[k++] = found[i];
			}
		}
		n = k;
		j->nums = nums;
		j->uids = found;
		if (j->kind == JOB_SORT && has_modseq_key(cmd->u.sort.root))
			j->mods = xmalloc((n ? n : 1) * sizeof(uint64_t));
		if (j->kind == JOB_SORT && n > SORT_MEM_MAX / sizeof(*j->recs)) {
			j->too_big = true;
			r = -1;
		} else if (j->kind == JOB_SORT) {
			j->recs = xmalloc((n ? n : 1) * sizeof(*j->recs));
			r = each_message(j, found, n, sort_one);
		} else {
			r = each_message(j, found, n, thread_one);
		}
	}
	if (r == 0 && j->kind == JOB_SORT) {
		sortkey_sort(j->recs, j->n_recs, j->crit, j->n_crit, j->arena.data);
		sort_output(j, &line);
	} else if (r == 0) {
		buf_printf(&line, "* THREAD ");
		if (j->kind == JOB_REFERENCES)
			thread_references(j->ts, &line);
		else
			thread_orderedsubject(j->ts, &line);
		if (line.len == 9)
			line.len = 8; /* no threads: "* THREAD" */
		buf_printf(&line, "\r\n");
	}
	if (line.len > IMAP_OUT_MAX - IMAP_STEP_BYTES)
		j->too_big = true;
	bool save = j->kind == JOB_SORT && (cmd->u.sort.return_opts & IMAP_SEARCH_RET_SAVE);
	if ((j->too_big || r < 0) && save)
		saved_clear(s); /* a failed SAVE leaves "$" empty */
	if (j->too_big) {
		buf_printf(&s->out, "%s NO [LIMIT] Too many messages to %s\r\n", s->tag,
			   j->kind == JOB_SORT ? "sort" : "thread");
	} else if (r < 0) {
		LOG_WARN("imap", s->id, "sort_failed", "reason=\"%s\"", j->error ? j->error : "");
		buf_printf(&s->out, "%s NO [SERVERBUG] %s failed\r\n", s->tag, what);
	} else {
		buf_append(&s->out, line.data, line.len);
		buf_printf(&s->out, "%s OK %s%s completed\r\n", s->tag, cmd->uid ? "UID " : "", what);
	}
	LOG_DEBUG("imap", s->id, "sort", "kind=%d matched=%zu arena=%zu", (int)j->kind, n,
		  j->ts ? thread_set_mem(j->ts) : j->arena.cap + n * sizeof(struct sortkey_rec));
	buf_cleanup(&line);
	free(found);
	free(nums);
	free(j->mods);
	free(j->recs);
	free(j->refs);
	thread_set_free(&j->ts);
	buf_cleanup(&j->blob);
	buf_cleanup(&j->arena);
	buf_cleanup(&j->subject);
	free(j);
}

static void sort_done(struct imap_session *s)
{
	search_key_free(&s->search);
}

static bool charset_ok(struct imap_session *s, struct view charset, bool save)
{
	if (view_eq_nocase(charset, "UTF-8") || view_eq_nocase(charset, "US-ASCII"))
		return true;
	if (save)
		saved_clear(s);
	imap_reply(s, "%s NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset\r\n", s->tag);
	return false;
}

static void post(struct imap_session *s, const struct imap_search_key *root, bool save)
{
	const char *err = "Invalid search";
	/* MODSEQ in the criteria enables CONDSTORE (RFC 7162 3.1) */
	if (has_modseq_key(root))
		s->condstore = true;
	search_key_free(&s->search);
	s->search = imap_search_program(s, root, &err);
	if (!s->search) {
		if (save)
			saved_clear(s);
		imap_bad(s, err);
		return;
	}
	imap_post(s, sort_run, sort_done);
}

void imap_cmd_sort(struct imap_session *s)
{
	const struct imap_command *cmd = s->cmd;
	bool save = cmd->u.sort.return_opts & IMAP_SEARCH_RET_SAVE;
	if (charset_ok(s, cmd->u.sort.charset, save))
		post(s, cmd->u.sort.root, save);
}

void imap_cmd_thread(struct imap_session *s)
{
	const struct imap_command *cmd = s->cmd;
	if (!view_eq_nocase(cmd->u.thread.algorithm, "REFERENCES") &&
	    !view_eq_nocase(cmd->u.thread.algorithm, "ORDEREDSUBJECT")) {
		imap_bad(s, "Unknown threading algorithm");
		return;
	}
	if (charset_ok(s, cmd->u.thread.charset, false))
		post(s, cmd->u.thread.root, false);
}
