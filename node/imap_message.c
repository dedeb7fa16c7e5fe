/* SELECT, NOOP/CHECK (change reports), CLOSE/UNSELECT, EXPUNGE, STORE,
 * COPY/MOVE, SEARCH and APPEND. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "node/imap_internal.h"
#include "storage/search.h"

/* ---- the selected mailbox ------------------------------------------------- */

void imap_uids_unpack(struct imap_session *s)
{
	if (s->uids || !s->uid_runs)
		return;
	uint32_t *u = xmalloc((s->n_uids ? s->n_uids : 1) * sizeof(uint32_t));
	size_t k = 0;
	for (size_t r = 0; r < s->n_uid_runs; r++)
		for (uint32_t v = s->uid_runs[2 * r];; v++) {
			u[k++] = v;
			if (v == s->uid_runs[2 * r + 1])
				break;
		}
	free(s->uid_runs);
	s->uid_runs = NULL;
	s->n_uid_runs = 0;
	s->uids = u;
	s->n_uids = k;
}

void imap_uids_pack(struct imap_session *s)
{
	if (!s->uids)
		return;
	if (s->n_uids == 0) {
		free(s->uids);
		s->uids = NULL;
		return;
	}
	size_t runs = 1;
	for (size_t i = 1; i < s->n_uids; i++)
		if (s->uids[i] != s->uids[i - 1] + 1)
			runs++;
	if (runs * 2 >= s->n_uids) {
		/* Runs would not be smaller: keep the list, at its exact size
		 * (store_uids and growth leave up to twice that). */
		s->uids = xrealloc(s->uids, s->n_uids * sizeof(uint32_t));
		return;
	}
	uint32_t *r = xmalloc(runs * 2 * sizeof(uint32_t));
	size_t k = 0;
	r[0] = s->uids[0];
	for (size_t i = 1; i < s->n_uids; i++)
		if (s->uids[i] != s->uids[i - 1] + 1) {
			r[2 * k + 1] = s->uids[i - 1];
			k++;
			r[2 * k] = s->uids[i];
		}
	r[2 * k + 1] = s->uids[s->n_uids - 1];
	free(s->uids);
	s->uids = NULL;
	s->uid_runs = r;
	s->n_uid_runs = runs;
}

void imap_uids_clear(struct imap_session *s)
{
	free(s->uids);
	s->uids = NULL;
	free(s->uid_runs);
	s->uid_runs = NULL;
	s->n_uid_runs = 0;
	s->n_uids = 0;
}

uint32_t imap_seq_of(const struct imap_session *s, uint32_t uid)
{
	size_t lo = 0, hi = s->n_uids;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (s->uids[mid] < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < s->n_uids && s->uids[lo] == uid ? (uint32_t)lo + 1 : 0;
}

int imap_resolve_set(struct imap_session *s, const struct imap_seqset *set, bool uid,
		     uint32_t **uids_r, size_t *n_r, const char **error_r)
{
	*uids_r = NULL;
	*n_r = 0;
	if (set->saved) {
		*error_r = "Saved search results ($) are not supported";
		return -1;
	}
	if (uid) {
		uint32_t *out = xmalloc((s->n_uids ? s->n_uids : 1) * sizeof(uint32_t));
		*n_r = imap_seqset_filter_uids(set, s->uids, s->n_uids, out);
		*uids_r = out;
		return 0;
	}
	if (imap_seqset_max_number(set) > s->n_uids) {
		*error_r = "Invalid message sequence number";
		return -1;
	}
	struct imap_seq_range *r = xmalloc((set->count ? set->count : 1) * sizeof(*r));
	size_t nr = imap_seqset_resolve(set, (uint32_t)s->n_uids, r);
	size_t total = 0;
	for (size_t i = 0; i < nr; i++)
		total += (size_t)(r[i].hi - r[i].lo + 1);
	uint32_t *out = xmalloc((total ? total : 1) * sizeof(uint32_t));
	size_t k = 0;
	for (size_t i = 0; i < nr; i++)
		for (uint64_t q = r[i].lo; q <= r[i].hi; q++)
			out[k++] = s->uids[q - 1];
	free(r);
	*uids_r = out;
	*n_r = k;
	return 0;
}

void imap_apply_expunge(struct imap_session *s, const uint32_t *gone, size_t n, struct buf *b)
{
	if (n == 0)
		return;
	/* Mark, report from the highest sequence number down (so every number
	 * is valid when sent), then compact. */
	uint32_t *seqs = xmalloc(n * sizeof(uint32_t));
	size_t ns = 0;
	for (size_t i = 0; i < n; i++) {
		uint32_t q = imap_seq_of(s, gone[i]);
		if (q)
			seqs[ns++] = q;
	}
	/* gone is ascending, so seqs is too */
	for (size_t i = ns; i-- > 0;) {
		buf_printf(b, "* %u EXPUNGE\r\n", seqs[i]);
		s->uids[seqs[i] - 1] = 0;
	}
	size_t w = 0;
	for (size_t i = 0; i < s->n_uids; i++)
		if (s->uids[i])
			s->uids[w++] = s->uids[i];
	s->n_uids = w;
	free(seqs);
}

void imap_sync_selected(struct imap_session *s)
{
	struct mailbox_info mi;
	enum storage_status st = ST_OK;
	const char *err = NULL;
	if (store_mailbox_get_by_id(s->sh, s->sel_id, &mi, &st, &err) < 0)
		return;
	if (mi.highestmodseq == s->sel_modseq && mi.messages == s->n_uids)
		return;
	uint32_t *now = NULL;
	size_t n_now = 0;
	if (store_uids(s->sh, s->sel_id, &now, &n_now, &err) < 0)
		return;
	/* Expunged: in ours, not in the store's (both ascending). */
	uint32_t *gone = xmalloc((s->n_uids ? s->n_uids : 1) * sizeof(uint32_t));
	size_t ng = 0, j = 0;
	for (size_t i = 0; i < s->n_uids; i++) {
		while (j < n_now && now[j] < s->uids[i])
			j++;
		if (j >= n_now || now[j] != s->uids[i])
			gone[ng++] = s->uids[i];
	}
	imap_apply_expunge(s, gone, ng, &s->out);
	free(gone);
	uint32_t last = s->n_uids ? s->uids[s->n_uids - 1] : 0;
	size_t first_new = 0;
	while (first_new < n_now && now[first_new] <= last)
		first_new++;
	if (first_new < n_now) {
		size_t add = n_now - first_new;
		s->uids = xrealloc(s->uids, (s->n_uids + add) * sizeof(uint32_t));
		memcpy(s->uids + s->n_uids, now + first_new, add * sizeof(uint32_t));
		s->n_uids += add;
		buf_printf(&s->out, "* %zu EXISTS\r\n", s->n_uids);
	}
	free(now);
	struct msg_info *ch = NULL;
	size_t nch = 0;
	uint32_t *van = NULL;
	size_t nvan = 0;
	if (s->sel_modseq &&
	    store_changes_since(s->sh, s->sel_id, s->sel_modseq, &ch, &nch, &van, &nvan, &err) == 0) {
		for (size_t i = 0; i < nch; i++) {
			uint32_t q = imap_seq_of(s, ch[i].uid);
			if (q && ch[i].uid <= last) {
				buf_printf(&s->out, "* %u FETCH (UID %u FLAGS ", q, ch[i].uid);
				imap_put_flags(&s->out, ch[i].flags, ch[i].keywords);
				buf_printf(&s->out, ")\r\n");
			}
			msg_info_cleanup(&ch[i]);
		}
		free(ch);
		free(van);
	}
	s->sel_modseq = mi.highestmodseq;
}

static void unselect(struct imap_session *s)
{
	imap_uids_clear(s);
	s->sel_id = 0;
	free(s->sel_name);
	s->sel_name = NULL;
	s->state = IMAP_STATE_AUTH;
}

static void select_run(struct imap_session *s)
{
	const struct imap_command *cmd = s->cmd;
	bool readonly = cmd->cmd == IMAP_CMD_EXAMINE;
	if (s->state == IMAP_STATE_SELECTED) {
		unselect(s);
		buf_printf(&s->out, "* OK [CLOSED] Previous mailbox closed\r\n");
	}
	char name[MAILBOX_NAME_MAX];
	imap_view_cstr(cmd->u.select.mailbox, name, sizeof(name));
	struct mailbox_info mi;
	enum storage_status st = ST_OK;
	const char *err = NULL;
	uint32_t *uids = NULL;
	size_t n = 0;
	if (store_mailbox_get(s->sh, s->user, name, &mi, &st, &err) < 0) {
		if (st == ST_NOT_FOUND)
			buf_printf(&s->out, "%s NO [NONEXISTENT] Mailbox does not exist\r\n", s->tag);
		else
			buf_printf(&s->out, "%s NO [SERVERBUG] Storage error\r\n", s->tag);
		return;
	}
	if (store_uids(s->sh, mi.id, &uids, &n, &err) < 0) {
		buf_printf(&s->out, "%s NO [SERVERBUG] Storage error\r\n", s->tag);
		return;
	}
	s->uids = uids;
	s->n_uids = n;
	s->sel_id = mi.id;
	s->sel_name = xstrdup(mi.name);
	s->sel_uidvalidity = mi.uidvalidity;
	s->sel_modseq = mi.highestmodseq;
	s->sel_readonly = readonly;
	s->state = IMAP_STATE_SELECTED;
	buf_printf(&s->out,
		   "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
		   "* %zu EXISTS\r\n",
		   n);
	if (!s->rev2)
		buf_printf(&s->out, "* 0 RECENT\r\n");
	buf_printf(&s->out,
		   "* OK [UIDVALIDITY %u] UIDs valid\r\n"
		   "* OK [UIDNEXT %u] Predicted next UID\r\n",
		   mi.uidvalidity, mi.uidnext);
	if (readonly)
		buf_printf(&s->out, "* OK [PERMANENTFLAGS ()] Read-only mailbox\r\n");
	else
		buf_printf(&s->out, "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen "
				    "\\Draft \\*)] Flags permitted\r\n");
	buf_printf(&s->out, "%s OK [%s] %s completed\r\n", s->tag,
		   readonly ? "READ-ONLY" : "READ-WRITE", readonly ? "EXAMINE" : "SELECT");
}

static void select_done(struct imap_session *s)
{
	if (s->state == IMAP_STATE_SELECTED) {
		char q[MAILBOX_NAME_MAX + 16];
		LOG_DEBUG("imap", s->id, "select", "mailbox=%s messages=%zu",
			  log_quote_cstr(q, sizeof(q), s->sel_name), s->n_uids);
	}
}

void imap_cmd_select(struct imap_session *s, bool readonly)
{
	UNUSED(readonly);
	imap_post(s, select_run, select_done);
}

static void close_run(struct imap_session *s)
{
	if (s->cmd->cmd == IMAP_CMD_CLOSE && !s->sel_readonly && s->n_uids) {
		uint32_t *gone = NULL;
		size_t n = 0;
		enum storage_status st = ST_OK;
		const char *err = NULL;
		store_expunge(s->sh, s->sel_id, s->uids, s->n_uids, true, &gone, &n, &st, &err);
		free(gone);
	}
	unselect(s);
	buf_printf(&s->out, "%s OK %s completed\r\n", s->tag,
		   s->cmd->cmd == IMAP_CMD_CLOSE ? "CLOSE" : "UNSELECT");
}

void imap_cmd_close(struct imap_session *s, bool expunge)
{
	if (!expunge) {
		/* UNSELECT, or CLOSE of a read-only mailbox: nothing to store */
		unselect(s);
		imap_reply(s, "%s OK %s completed\r\n", s->tag,
			   s->cmd->cmd == IMAP_CMD_CLOSE ? "CLOSE" : "UNSELECT");
		return;
	}
	imap_post(s, close_run, NULL);
}

static void noop_run(struct imap_session *s)
{
	imap_sync_selected(s);
	buf_printf(&s->out, "%s OK %s completed\r\n", s->tag,
		   s->cmd->cmd == IMAP_CMD_CHECK ? "CHECK" : "NOOP");
}

void imap_cmd_noop(struct imap_session *s)
{
	if (s->state != IMAP_STATE_SELECTED) {
		imap_reply(s, "%s OK %s completed\r\n", s->tag,
			   s->cmd->cmd == IMAP_CMD_CHECK ? "CHECK" : "NOOP");
		return;
	}
	imap_post(s, noop_run, NULL);
}

/* ---- EXPUNGE ----------------------------------------------------------------- */

static void expunge_run(struct imap_session *s)
{
	const struct imap_command *cmd = s->cmd;
	uint32_t *uids = NULL;
	size_t n = 0;
	const char *err = NULL;
	if (cmd->uid) {
		if (imap_resolve_set(s, &cmd->u.expunge.set, true, &uids, &n, &err) < 0) {
			buf_printf(&s->out, "%s BAD %s\r\n", s->tag, err);
			return;
		}
	} else {
		uids = xmalloc((s->n_uids ? s->n_uids : 1) * sizeof(uint32_t));
		memcpy(uids, s->uids, s->n_uids * sizeof(uint32_t));
		n = s->n_uids;
	}
	uint32_t *gone = NULL;
	size_t ng = 0;
	enum storage_status st = ST_OK;
	if (n && store_expunge(s->sh, s->sel_id, uids, n, true, &gone, &ng, &st, &err) < 0) {
		free(uids);
		buf_printf(&s->out, "%s NO [SERVERBUG] Storage error\r\n", s->tag);
		return;
	}
	free(uids);
	imap_apply_expunge(s, gone, ng, &s->out);
	free(gone);
	buf_printf(&s->out, "%s OK %sEXPUNGE completed\r\n", s->tag, cmd->uid ? "UID " : "");
}

void imap_cmd_expunge(struct imap_session *s)
{
	if (s->sel_readonly) {
		imap_reply(s, "%s NO [READ-ONLY] Mailbox is read-only\r\n", s->tag);
		return;
	}
	imap_post(s, expunge_run, NULL);
}

/* ---- STORE --------------------------------------------------------------------- */

static void store_run(struct imap_session *s)
{
	const struct imap_command *cmd = s->cmd;
	uint32_t *uids = NULL;
	size_t n = 0;
	const char *err = NULL;
	if (imap_resolve_set(s, &cmd->u.store.set, cmd->uid, &uids, &n, &err) < 0) {
		buf_printf(&s->out, "%s BAD %s\r\n", s->tag, err);
		return;
	}
	uint32_t bits = 0;
	char **kw = NULL;
	if (imap_parse_flags(cmd->u.store.flags, cmd->u.store.flag_count, &bits, &kw, &err) < 0) {
		free(uids);
		buf_printf(&s->out, "%s BAD %s\r\n", s->tag, err);
		return;
	}
	enum store_flags_mode mode = cmd->u.store.op == IMAP_STORE_ADD	  ? FLAGS_ADD
				     : cmd->u.store.op == IMAP_STORE_REMOVE ? FLAGS_REMOVE
									    : FLAGS_SET;
	struct msg_info *ch = NULL;
	size_t nch = 0;
	uint32_t *failed = NULL;
	size_t nfailed = 0;
	enum storage_status st = ST_OK;
	int r = 0;
	if (n)
		r = store_flags(s->sh, s->sel_id, uids, n, mode, bits, (const char *const *)kw, 0,
				&ch, &nch, &failed, &nfailed, &st, &err);
	free(uids);
	imap_keywords_free(&kw);
	free(failed);
	if (r < 0) {
		buf_printf(&s->out, "%s NO [SERVERBUG] Storage error\r\n", s->tag);
		return;
	}
	for (size_t i = 0; i < nch; i++) {
		uint32_t q = imap_seq_of(s, ch[i].uid);
		if (q && !cmd->u.store.silent) {
			buf_printf(&s->out, "* %u FETCH (FLAGS ", q);
			imap_put_flags(&s->out, ch[i].flags, ch[i].keywords);
			buf_printf(&s->out, " UID %u)\r\n", ch[i].uid);
		}
		msg_info_cleanup(&ch[i]);
	}
	free(ch);
	buf_printf(&s->out, "%s OK %sSTORE completed\r\n", s->tag, cmd->uid ? "UID " : "");
}

void imap_cmd_store(struct imap_session *s)
{
	if (s->cmd->u.store.has_unchangedsince) {
		imap_bad(s, "CONDSTORE is not supported");
		return;
	}
	if (s->sel_readonly) {
		imap_reply(s, "%s NO [READ-ONLY] Mailbox is read-only\r\n", s->tag);
		return;
	}
	imap_post(s, store_run, NULL);
}

/* ---- COPY / MOVE --------------------------------------------------------------- */

static void copy_run(struct imap_session *s)
{
	const struct imap_command *cmd = s->cmd;
	bool move = cmd->cmd == IMAP_CMD_MOVE;
	const char *what = move ? "MOVE" : "COPY";
	uint32_t *uids = NULL;
	size_t n = 0;
	const char *err = NULL;
	if (imap_resolve_set(s, &cmd->u.copy.set, cmd->uid, &uids, &n, &err) < 0) {
		buf_printf(&s->out, "%s BAD %s\r\n", s->tag, err);
		return;
	}
	char name[MAILBOX_NAME_MAX];
	imap_view_cstr(cmd->u.copy.mailbox, name, sizeof(name));
	struct mailbox_info mi;
	enum storage_status st = ST_OK;
	if (store_mailbox_get(s->sh, s->user, name, &mi, &st, &err) < 0) {
		free(uids);
		if (st == ST_NOT_FOUND)
			buf_printf(&s->out, "%s NO [TRYCREATE] Mailbox does not exist\r\n", s->tag);
		else
			buf_printf(&s->out, "%s NO [SERVERBUG] Storage error\r\n", s->tag);
		return;
	}
	if (n == 0) {
		free(uids);
		buf_printf(&s->out, "%s OK %s completed (no messages)\r\n", s->tag, what);
		return;
	}
	uint32_t *src = NULL, *dst = NULL;
	size_t np = 0;
	uint32_t dst_validity = 0;
	int r = store_copy(s->sh, s->sel_id, mi.id, uids, n, move, &src, &dst, &np,
			   &dst_validity, &st, &err);
	free(uids);
	if (r < 0) {
		if (st == ST_OVER_QUOTA)
			buf_printf(&s->out, "%s NO [OVERQUOTA] Quota exceeded\r\n", s->tag);
		else if (st == ST_NOT_FOUND)
			buf_printf(&s->out, "%s NO [TRYCREATE] Mailbox does not exist\r\n", s->tag);
		else
			buf_printf(&s->out, "%s NO [SERVERBUG] Storage error\r\n", s->tag);
		return;
	}
	struct buf cu;
	buf_init(&cu, 0);
	if (np) {
		buf_printf(&cu, "COPYUID %u ", dst_validity);
		imap_put_set(&cu, src, np);
		buf_append(&cu, " ", 1);
		imap_put_set(&cu, dst, np);
	}
	if (move) {
		if (np)
			buf_printf(&s->out, "* OK [%.*s] Moved\r\n", (int)cu.len, (const char *)cu.data);
		imap_apply_expunge(s, src, np, &s->out);
		buf_printf(&s->out, "%s OK %sMOVE completed\r\n", s->tag, cmd->uid ? "UID " : "");
	} else if (np) {
		buf_printf(&s->out, "%s OK [%.*s] %sCOPY completed\r\n", s->tag, (int)cu.len,
			   (const char *)cu.data, cmd->uid ? "UID " : "");
	} else {
		buf_printf(&s->out, "%s OK %sCOPY completed\r\n", s->tag, cmd->uid ? "UID " : "");
	}
	buf_cleanup(&cu);
	free(src);
	free(dst);
}

void imap_cmd_copy(struct imap_session *s, bool move)
{
	if (move && s->sel_readonly) {
		imap_reply(s, "%s NO [READ-ONLY] Mailbox is read-only\r\n", s->tag);
		return;
	}
	imap_post(s, copy_run, NULL);
}

/* ---- SEARCH ----------------------------------------------------------------------- */

static struct search_key *seq_key(struct imap_session *s, const struct imap_seqset *set,
				  bool uid, const char **err)
{
	if (set->saved) {
		*err = "Saved search results ($) are not supported";
		return NULL;
	}
	uint32_t max = uid ? (s->n_uids ? s->uids[s->n_uids - 1] : 0) : (uint32_t)s->n_uids;
	struct imap_seq_range *r = xmalloc((set->count ? set->count : 1) * sizeof(*r));
	size_t nr = imap_seqset_resolve(set, max, r);
	struct search_uid_range *u = xmalloc((nr ? nr : 1) * sizeof(*u));
	for (size_t i = 0; i < nr; i++) {
		if (uid) {
			u[i].first = (uint32_t)r[i].lo;
			u[i].last = (uint32_t)r[i].hi;
		} else {
			u[i].first = s->uids[r[i].lo - 1];
			u[i].last = s->uids[r[i].hi - 1];
		}
	}
	struct search_key *k = search_key_new_uidset(u, nr);
	free(r);
	free(u);
	return k;
}

static struct search_key *conv_key(struct imap_session *s, const struct imap_search_key *k,
				   const char **err)
{
	static const struct {
		enum imap_search_type from;
		enum search_key_type to;
	} leaf[] = {
		{ IMAP_SEARCH_ALL, SEARCH_ALL },
		{ IMAP_SEARCH_ANSWERED, SEARCH_ANSWERED },
		{ IMAP_SEARCH_DELETED, SEARCH_DELETED },
		{ IMAP_SEARCH_DRAFT, SEARCH_DRAFT },
		{ IMAP_SEARCH_FLAGGED, SEARCH_FLAGGED },
		{ IMAP_SEARCH_SEEN, SEARCH_SEEN },
		{ IMAP_SEARCH_OLD, SEARCH_ALL },
		{ IMAP_SEARCH_UNANSWERED, SEARCH_UNANSWERED },
		{ IMAP_SEARCH_UNDELETED, SEARCH_UNDELETED },
		{ IMAP_SEARCH_UNDRAFT, SEARCH_UNDRAFT },
		{ IMAP_SEARCH_UNFLAGGED, SEARCH_UNFLAGGED },
		{ IMAP_SEARCH_UNSEEN, SEARCH_UNSEEN },
		{ IMAP_SEARCH_SAVEDATESUPPORTED, SEARCH_SAVEDATESUPPORTED },
	}, str[] = {
		{ IMAP_SEARCH_KEYWORD, SEARCH_KEYWORD },
		{ IMAP_SEARCH_UNKEYWORD, SEARCH_UNKEYWORD },
		{ IMAP_SEARCH_BCC, SEARCH_BCC },
		{ IMAP_SEARCH_BODY, SEARCH_BODY },
		{ IMAP_SEARCH_CC, SEARCH_CC },
		{ IMAP_SEARCH_FROM, SEARCH_FROM },
		{ IMAP_SEARCH_SUBJECT, SEARCH_SUBJECT },
		{ IMAP_SEARCH_TEXT, SEARCH_TEXT },
		{ IMAP_SEARCH_TO, SEARCH_TO },
	}, date[] = {
		{ IMAP_SEARCH_BEFORE, SEARCH_BEFORE },
		{ IMAP_SEARCH_ON, SEARCH_ON },
		{ IMAP_SEARCH_SINCE, SEARCH_SINCE },
		{ IMAP_SEARCH_SENTBEFORE, SEARCH_SENTBEFORE },
		{ IMAP_SEARCH_SENTON, SEARCH_SENTON },
		{ IMAP_SEARCH_SENTSINCE, SEARCH_SENTSINCE },
		{ IMAP_SEARCH_SAVEDBEFORE, SEARCH_SAVEDBEFORE },
		{ IMAP_SEARCH_SAVEDON, SEARCH_SAVEDON },
		{ IMAP_SEARCH_SAVEDSINCE, SEARCH_SAVEDSINCE },
	};
	for (size_t i = 0; i < ARRAY_LEN(leaf); i++)
		if (leaf[i].from == k->type)
			return search_key_new_leaf(leaf[i].to);
	for (size_t i = 0; i < ARRAY_LEN(str); i++)
		if (str[i].from == k->type)
			return search_key_new_str(str[i].to, k->u.str);
	for (size_t i = 0; i < ARRAY_LEN(date); i++) {
		if (date[i].from != k->type)
			continue;
		struct search_key *d = search_key_new_date(date[i].to, k->u.date.year,
							   k->u.date.month, k->u.date.day);
		if (!d)
			*err = "Invalid date";
		return d;
	}
	switch (k->type) {
	case IMAP_SEARCH_AND: {
		struct search_key *a = search_key_new_and();
		for (size_t i = 0; i < k->u.sub.count; i++) {
			struct search_key *c = conv_key(s, &k->u.sub.keys[i], err);
			if (!c) {
				search_key_free(&a);
				return NULL;
			}
			search_key_and_add(a, c);
		}
		return a;
	}
	case IMAP_SEARCH_OR: {
		struct search_key *a = conv_key(s, &k->u.sub.keys[0], err);
		struct search_key *b = a ? conv_key(s, &k->u.sub.keys[1], err) : NULL;
		if (!b) {
			search_key_free(&a);
			return NULL;
		}
		return search_key_new_or(a, b);
	}
	case IMAP_SEARCH_NOT: {
		struct search_key *a = conv_key(s, &k->u.sub.keys[0], err);
		return a ? search_key_new_not(a) : NULL;
	}
	case IMAP_SEARCH_SEQSET:
		return seq_key(s, &k->u.set, false, err);
	case IMAP_SEARCH_UID:
		return seq_key(s, &k->u.set, true, err);
	case IMAP_SEARCH_RECENT:
	case IMAP_SEARCH_NEW:
		/* \Recent does not exist here: nothing is recent */
		return search_key_new_not(search_key_new_leaf(SEARCH_ALL));
	case IMAP_SEARCH_HEADER:
		return search_key_new_header(k->u.header.field, k->u.header.value);
	case IMAP_SEARCH_LARGER:
		return search_key_new_num(SEARCH_LARGER, k->u.number);
	case IMAP_SEARCH_SMALLER:
		return search_key_new_num(SEARCH_SMALLER, k->u.number);
	case IMAP_SEARCH_MODSEQ: {
		enum search_modseq_entry_type t =
			k->u.modseq.entry_type == IMAP_MODSEQ_ENTRY_PRIV     ? SEARCH_MODSEQ_PRIV
			: k->u.modseq.entry_type == IMAP_MODSEQ_ENTRY_SHARED ? SEARCH_MODSEQ_SHARED
									     : SEARCH_MODSEQ_ANY;
		return search_key_new_modseq(k->u.modseq.value, k->u.modseq.entry, t);
	}
	default:
		*err = "Search key not supported";
		return NULL;
	}
}

static void search_run(struct imap_session *s)
{
	const struct imap_command *cmd = s->cmd;
	uint32_t *found = NULL;
	size_t n = 0;
	const char *err = NULL;
	if (store_search(s->sh, s->sel_id, s->search, &found, &n, &err) < 0) {
		buf_printf(&s->out, "%s NO [SERVERBUG] Search failed\r\n", s->tag);
		return;
	}
	/* Only messages this session knows about; numbers as asked. */
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		uint32_t q = imap_seq_of(s, found[i]);
		if (q)
			found[k++] = cmd->uid ? found[i] : q;
	}
	n = k;
	unsigned ret = cmd->u.search.return_opts;
	if (!cmd->u.search.esearch && !s->rev2) {
		buf_printf(&s->out, "* SEARCH");
		for (size_t i = 0; i < n; i++)
			buf_printf(&s->out, " %u", found[i]);
		buf_printf(&s->out, "\r\n");
	} else {
		if (!cmd->u.search.esearch)
			ret = IMAP_SEARCH_RET_ALL;
		buf_printf(&s->out, "* ESEARCH (TAG \"%s\")%s", s->tag, cmd->uid ? " UID" : "");
		if ((ret & IMAP_SEARCH_RET_MIN) && n)
			buf_printf(&s->out, " MIN %u", found[0]);
		if ((ret & IMAP_SEARCH_RET_MAX) && n)
			buf_printf(&s->out, " MAX %u", found[n - 1]);
		if ((ret & IMAP_SEARCH_RET_ALL) && n) {
			buf_printf(&s->out, " ALL ");
			imap_put_set(&s->out, found, n);
		}
		if (ret & IMAP_SEARCH_RET_COUNT)
			buf_printf(&s->out, " COUNT %zu", n);
		buf_printf(&s->out, "\r\n");
	}
	free(found);
	buf_printf(&s->out, "%s OK %sSEARCH completed\r\n", s->tag, cmd->uid ? "UID " : "");
}

static void search_done(struct imap_session *s)
{
	search_key_free(&s->search);
}

void imap_cmd_search(struct imap_session *s)
{
	const struct imap_command *cmd = s->cmd;
	if (cmd->u.search.has_charset && !view_eq_nocase(cmd->u.search.charset, "UTF-8") &&
	    !view_eq_nocase(cmd->u.search.charset, "US-ASCII")) {
		imap_reply(s, "%s NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset\r\n", s->tag);
		return;
	}
	if (cmd->u.search.return_opts & IMAP_SEARCH_RET_SAVE) {
		imap_bad(s, "SEARCHRES is not supported");
		return;
	}
	const char *err = "Invalid search";
	search_key_free(&s->search);
	s->search = conv_key(s, cmd->u.search.root, &err);
	if (!s->search) {
		imap_bad(s, err);
		return;
	}
	imap_post(s, search_run, search_done);
}

/* ---- APPEND ------------------------------------------------------------------------- */

static int sink_begin(void *ctx, uint64_t size, bool literal8)
{
	struct imap_session *s = ctx;
	UNUSED(size);
	UNUSED(literal8);
	s->bw_count++;
	if (s->bw_count > 1 || !s->sh)
		return -1; /* MULTIAPPEND: refused when the command completes */
	body_writer_free(&s->bw);
	s->bw = body_writer_new(s->sh);
	s->bw_too_large = false;
	return 0;
}

static int sink_data(void *ctx, const uint8_t *data, size_t len)
{
	struct imap_session *s = ctx;
	if (!s->bw || body_writer_add(s->bw, data, len) < 0) {
		s->bw_too_large = true;
		return -1;
	}
	return 0;
}

static int sink_end(void *ctx)
{
	UNUSED(ctx);
	return 0;
}

const struct imap_literal_sink imap_append_sink_ops = {
	.begin = sink_begin,
	.data = sink_data,
	.end = sink_end,
	.ctx = NULL,
};

static void append_run(struct imap_session *s)
{
	const struct imap_command *cmd = s->cmd;
	const struct imap_append_msg *m = &cmd->u.append.msgs[0];
	char name[MAILBOX_NAME_MAX];
	imap_view_cstr(cmd->u.append.mailbox, name, sizeof(name));
	struct mailbox_info mi;
	enum storage_status st = ST_OK;
	const char *err = NULL;
	if (store_mailbox_get(s->sh, s->user, name, &mi, &st, &err) < 0) {
		if (st == ST_NOT_FOUND)
			buf_printf(&s->out, "%s NO [TRYCREATE] Mailbox does not exist\r\n", s->tag);
		else
			buf_printf(&s->out, "%s NO [SERVERBUG] Storage error\r\n", s->tag);
		return;
	}
	uint32_t bits = 0;
	char **kw = NULL;
	imap_parse_flags(m->flags, m->flag_count, &bits, &kw, &err); /* checked on the loop */
	uint64_t date_ms = time_real_ms();
	if (m->has_date) {
		int64_t t = imap_datetime_to_unix(&m->date);
		date_ms = t > 0 ? (uint64_t)t * 1000 : 0;
	}
	struct deliver_target tg = {
		.user = s->user,
		.mailbox_id = mi.id,
		.flags = bits,
		.keywords = (const char *const *)kw,
	};
	int r = store_deliver(s->sh, s->bw, date_ms, &tg, 1, &st, &err);
	imap_keywords_free(&kw);
	if (r < 0 || tg.status_r != ST_OK) {
		enum storage_status why = r < 0 ? st : tg.status_r;
		if (why == ST_OVER_QUOTA)
			buf_printf(&s->out, "%s NO [OVERQUOTA] Quota exceeded\r\n", s->tag);
		else if (why == ST_TOO_LARGE)
			buf_printf(&s->out, "%s NO [TOOBIG] Message too large\r\n", s->tag);
		else if (why == ST_NOT_FOUND)
			buf_printf(&s->out, "%s NO [TRYCREATE] Mailbox does not exist\r\n", s->tag);
		else
			buf_printf(&s->out, "%s NO [SERVERBUG] Storage error\r\n", s->tag);
		return;
	}
	if (s->state == IMAP_STATE_SELECTED && mi.id == s->sel_id)
		imap_sync_selected(s);
	buf_printf(&s->out, "%s OK [APPENDUID %u %u] APPEND completed\r\n", s->tag,
		   tg.uidvalidity_r, tg.uid_r);
}

static void append_done(struct imap_session *s)
{
	body_writer_free(&s->bw);
	s->bw_count = 0;
}

void imap_cmd_append(struct imap_session *s)
{
	const struct imap_command *cmd = s->cmd;
	unsigned count = s->bw_count;
	s->bw_count = 0;
	if (cmd->u.append.count != 1 || count > 1) {
		body_writer_free(&s->bw);
		imap_reply(s, "%s NO [CANNOT] MULTIAPPEND is not supported\r\n", s->tag);
		return;
	}
	if (cmd->u.append.sink_failed) {
		bool big = s->bw_too_large;
		body_writer_free(&s->bw);
		imap_reply(s, "%s NO %s\r\n", s->tag,
			   big ? "[TOOBIG] Message too large" : "[SERVERBUG] Message not received");
		return;
	}
	const struct imap_append_msg *m = &cmd->u.append.msgs[0];
	if (!m->streamed) {
		body_writer_free(&s->bw);
		s->bw = body_writer_new(s->sh);
		if (body_writer_add(s->bw, m->data.ptr, m->data.len) < 0) {
			body_writer_free(&s->bw);
			imap_reply(s, "%s NO [TOOBIG] Message too large\r\n", s->tag);
			return;
		}
	}
	if (!s->bw) {
		imap_reply(s, "%s NO [SERVERBUG] Message not received\r\n", s->tag);
		return;
	}
	uint32_t bits;
	char **kw = NULL;
	const char *err = NULL;
	if (imap_parse_flags(m->flags, m->flag_count, &bits, &kw, &err) < 0) {
		body_writer_free(&s->bw);
		imap_bad(s, err);
		return;
	}
	imap_keywords_free(&kw);
	imap_post(s, append_run, append_done);
}
