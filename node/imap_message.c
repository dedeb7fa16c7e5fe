/* SELECT, NOOP/CHECK (change reports), CLOSE/UNSELECT, EXPUNGE, STORE,
 * COPY/MOVE and SEARCH (APPEND is in imap_append.c). */
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

/* uids[0..n) (ascending, room for s->n_uids) united with the saved
 * result "$", as far as those messages are still in the mailbox. */
static size_t union_saved(const struct imap_session *s, uint32_t *uids, size_t n)
{
	if (s->n_saved == 0)
		return n;
	uint32_t *m = xmalloc((n + s->n_saved) * sizeof(uint32_t));
	size_t i = 0, j = 0, k = 0;
	while (i < n || j < s->n_saved) {
		uint32_t v;
		if (j >= s->n_saved || (i < n && uids[i] <= s->saved[j])) {
			v = uids[i];
			if (j < s->n_saved && s->saved[j] == v)
				j++;
			i++;
		} else {
			v = s->saved[j++];
			if (!imap_seq_of(s, v))
				continue;
		}
		m[k++] = v;
	}
	memcpy(uids, m, k * sizeof(uint32_t));
	free(m);
	return k;
}

int imap_resolve_set(struct imap_session *s, const struct imap_seqset *set, bool uid,
		     uint32_t **uids_r, size_t *n_r, const char **error_r)
{
	*uids_r = NULL;
	*n_r = 0;
	if (uid) {
		uint32_t *out = xmalloc((s->n_uids ? s->n_uids : 1) * sizeof(uint32_t));
		*n_r = imap_seqset_filter_uids(set, s->uids, s->n_uids, out);
		*uids_r = out;
		if (set->saved)
			*n_r = union_saved(s, out, *n_r);
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
	if (set->saved) {
		out = xrealloc(out, (s->n_uids ? s->n_uids : 1) * sizeof(uint32_t));
		k = union_saved(s, out, k);
	}
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
	uint32_t *known = xmalloc(n * sizeof(uint32_t));
	size_t ns = 0;
	for (size_t i = 0; i < n; i++) {
		uint32_t q = imap_seq_of(s, gone[i]);
		if (q) {
			known[ns] = gone[i];
			seqs[ns++] = q;
		}
	}
	if (s->qresync && ns) {
		buf_printf(b, "* VANISHED ");
		imap_put_set(b, known, ns);
		buf_printf(b, "\r\n");
	}
	/* gone is ascending, so seqs is too */
	for (size_t i = ns; i-- > 0;) {
		if (!s->qresync)
			buf_printf(b, "* %u EXPUNGE\r\n", seqs[i]);
		s->uids[seqs[i] - 1] = 0;
	}
	size_t w = 0;
	for (size_t i = 0; i < s->n_uids; i++)
		if (s->uids[i])
			s->uids[w++] = s->uids[i];
	s->n_uids = w;
	free(seqs);
	free(known);
}

uint64_t imap_highestmodseq(const struct imap_session *s)
{
	uint64_t h = s->sel_modseq;
	for (size_t i = 0; i < s->n_pend; i++)
		if (s->pend[i].modseq <= h)
			h = s->pend[i].modseq - 1;
	return h;
}

void imap_put_flag_fetch(struct imap_session *s, struct buf *b, uint32_t seq,
			 const struct msg_info *m)
{
	buf_printf(b, "* %u FETCH (UID %u FLAGS ", seq, m->uid);
	imap_put_flags(b, m->flags, m->keywords);
	if (s->condstore)
		buf_printf(b, " MODSEQ (%llu)", (unsigned long long)m->modseq);
	buf_printf(b, ")\r\n");
}

static bool own_change(const struct imap_change *own, size_t n, const struct msg_info *m)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (own[mid].uid < m->uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < n && own[lo].uid == m->uid && own[lo].modseq == m->modseq;
}

/* Expunges of others found by a sync: held in pend until they may be
 * reported (only UIDs this session still lists, each once). */
static void pend_add(struct imap_session *s, const struct store_expunged *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (!imap_seq_of(s, v[i].uid))
			continue;
		size_t k = 0;
		while (k < s->n_pend && s->pend[k].uid < v[i].uid)
			k++;
		if (k < s->n_pend && s->pend[k].uid == v[i].uid)
			continue;
		s->pend = xrealloc(s->pend, (s->n_pend + 1) * sizeof(*s->pend));
		memmove(s->pend + k + 1, s->pend + k, (s->n_pend - k) * sizeof(*s->pend));
		s->pend[k].uid = v[i].uid;
		s->pend[k].modseq = v[i].modseq;
		s->n_pend++;
	}
}

static void pend_flush(struct imap_session *s)
{
	if (!s->n_pend)
		return;
	uint32_t *gone = xmalloc(s->n_pend * sizeof(uint32_t));
	for (size_t i = 0; i < s->n_pend; i++)
		gone[i] = s->pend[i].uid;
	size_t n = s->n_pend;
	free(s->pend);
	s->pend = NULL;
	s->n_pend = 0;
	imap_apply_expunge(s, gone, n, &s->out);
	free(gone);
}

void imap_sync_own(struct imap_session *s, const struct imap_change *own, size_t n_own)
{
	if (s->state != IMAP_STATE_SELECTED)
		return;
	bool reported = false;
	/* The counter is read before the store: a change made during the
	 * read is seen by the next sync. */
	uint64_t now = store_mailbox_changes(s->sh, s->sel_id);
	struct store_view v;
	memset(&v, 0, sizeof(v));
	bool have_view = false;
	if (now != s->sync_seen) {
		enum storage_status st = ST_OK;
		const char *err = NULL;
		if (store_mailbox_view(s->sh, s->sel_id, s->sel_modseq, false, &v, &st, &err) == 0) {
			s->sync_seen = now;
			have_view = true;
			pend_add(s, v.vanished, v.n_vanished);
		} else if (st == ST_NOT_FOUND) {
			/* A mailbox deleted under us stays as it was: do not
			 * look again until something else changes. */
			s->sync_seen = now;
		} else {
			LOG_WARN("imap", s->id, "sync_failed", "reason=\"%s\"", err ? err : "");
		}
	}
	if (s->sync_expunge && s->n_pend) {
		pend_flush(s);
		reported = true;
	}
	uint32_t last = s->n_uids ? s->uids[s->n_uids - 1] : 0;
	size_t first_new = 0;
	while (first_new < v.n_changed && v.changed[first_new].uid <= last)
		first_new++;
	if (first_new < v.n_changed) {
		size_t add = v.n_changed - first_new;
		s->uids = xrealloc(s->uids, (s->n_uids + add) * sizeof(uint32_t));
		for (size_t i = first_new; i < v.n_changed; i++)
			s->uids[s->n_uids++] = v.changed[i].uid;
		buf_printf(&s->out, "* %zu EXISTS\r\n", s->n_uids);
		reported = true;
	}
	for (size_t i = 0; i < first_new; i++) {
		uint32_t q = imap_seq_of(s, v.changed[i].uid);
		if (!q || own_change(own, n_own, &v.changed[i]))
			continue;
		imap_put_flag_fetch(s, &s->out, q, &v.changed[i]);
		reported = true;
	}
	if (have_view)
		s->sel_modseq = MAX(s->sel_modseq, v.mi.highestmodseq);
	store_view_cleanup(&v);
	uint64_t h = imap_highestmodseq(s);
	if (!s->hms_tagged &&
	    (s->hms_announce || (s->qresync && reported && h > s->hms_sent))) {
		buf_printf(&s->out, "* OK [HIGHESTMODSEQ %llu] Highest\r\n", (unsigned long long)h);
		s->hms_sent = h;
	}
	s->hms_announce = false;
}

void imap_sync_selected(struct imap_session *s)
{
	imap_sync_own(s, NULL, 0);
}

void imap_condstore_on(struct imap_session *s)
{
	if (!s->condstore && s->state == IMAP_STATE_SELECTED)
		s->hms_announce = true;
	s->condstore = true;
}

static void unselect(struct imap_session *s)
{
	imap_uids_clear(s);
	s->sel_id = 0;
	free(s->sel_name);
	s->sel_name = NULL;
	free(s->pend);
	s->pend = NULL;
	s->n_pend = 0;
	free(s->saved);
	s->saved = NULL;
	s->n_saved = 0;
	s->state = IMAP_STATE_AUTH;
}

/* QRESYNC (RFC 7162 3.2.5): what changed since the client's modseq, as
 * VANISHED (EARLIER) and FETCH, limited to the UIDs the client knows when
 * it said which. */
static void qresync_report(struct imap_session *s, const struct store_view *v)
{
	const struct imap_seqset *known = &s->cmd->u.select.known_uids;
	uint32_t max = v->mi.uidnext ? v->mi.uidnext - 1 : 0;
	uint32_t *gone = xmalloc((v->n_vanished ? v->n_vanished : 1) * sizeof(uint32_t));
	size_t ng = 0;
	for (size_t i = 0; i < v->n_vanished; i++) {
		uint32_t u = v->vanished[i].uid;
		if (known->count && !imap_seqset_contains(known, u, max))
			continue;
		if (ng && gone[ng - 1] == u)
			continue;
		gone[ng++] = u;
	}
	if (ng) {
		buf_printf(&s->out, "* VANISHED (EARLIER) ");
		imap_put_set(&s->out, gone, ng);
		buf_printf(&s->out, "\r\n");
	}
	free(gone);
	for (size_t i = 0; i < v->n_changed; i++) {
		const struct msg_info *m = &v->changed[i];
		if (known->count && !imap_seqset_contains(known, m->uid, max))
			continue;
		uint32_t q = imap_seq_of(s, m->uid);
		if (q)
			imap_put_flag_fetch(s, &s->out, q, m);
	}
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
	if (store_mailbox_get(s->sh, s->user, name, &mi, &st, &err) < 0) {
		if (st == ST_NOT_FOUND)
			buf_printf(&s->out, "%s NO [NONEXISTENT] Mailbox does not exist\r\n", s->tag);
		else
			buf_printf(&s->out, "%s NO [SERVERBUG] Storage error\r\n", s->tag);
		return;
	}
	/* The UID list, HIGHESTMODSEQ and what QRESYNC reports come from one
	 * snapshot, so later syncs start from exactly this state. */
	bool qr = cmd->u.select.qresync && cmd->u.select.uidvalidity == mi.uidvalidity;
	uint64_t since = qr ? cmd->u.select.modseq : UINT64_MAX;
	uint64_t seen = store_mailbox_changes(s->sh, mi.id);
	struct store_view v;
	if (store_mailbox_view(s->sh, mi.id, since, true, &v, &st, &err) < 0) {
		if (st == ST_NOT_FOUND)
			buf_printf(&s->out, "%s NO [NONEXISTENT] Mailbox does not exist\r\n", s->tag);
		else
			buf_printf(&s->out, "%s NO [SERVERBUG] Storage error\r\n", s->tag);
		return;
	}
	s->uids = v.uids;
	s->n_uids = v.n_uids;
	v.uids = NULL;
	s->sel_id = mi.id;
	s->sel_name = xstrdup(v.mi.name);
	s->sel_uidvalidity = v.mi.uidvalidity;
	s->sel_modseq = v.mi.highestmodseq;
	s->hms_sent = v.mi.highestmodseq;
	s->sync_seen = seen;
	s->sel_readonly = readonly;
	s->state = IMAP_STATE_SELECTED;
	buf_printf(&s->out,
		   "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
		   "* %zu EXISTS\r\n",
		   s->n_uids);
	if (!s->rev2)
		buf_printf(&s->out, "* 0 RECENT\r\n");
	buf_printf(&s->out,
		   "* OK [UIDVALIDITY %u] UIDs valid\r\n"
		   "* OK [UIDNEXT %u] Predicted next UID\r\n"
		   "* OK [HIGHESTMODSEQ %llu] Highest\r\n",
		   v.mi.uidvalidity, v.mi.uidnext, (unsigned long long)v.mi.highestmodseq);
	if (readonly)
		buf_printf(&s->out, "* OK [PERMANENTFLAGS ()] Read-only mailbox\r\n");
	else
		buf_printf(&s->out, "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen "
				    "\\Draft \\*)] Flags permitted\r\n");
	if (qr)
		qresync_report(s, &v);
	store_view_cleanup(&v);
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
	const struct imap_command *cmd = s->cmd;
	if (cmd->u.select.qresync && !s->qresync) {
		imap_bad(s, "QRESYNC is not enabled");
		return;
	}
	if (cmd->u.select.condstore)
		s->condstore = true;
	/* A failed SELECT leaves no mailbox selected, and "$" goes with it
	 * (RFC 5182 2.1). */
	free(s->saved);
	s->saved = NULL;
	s->n_saved = 0;
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

/* "tag OK [HIGHESTMODSEQ n] what completed" once CONDSTORE is on: an
 * expunge leaves no MODSEQ to read in a FETCH, so the commands that
 * expunge tell the client where its cache stands (RFC 7162). */
static void tagged_ok(struct imap_session *s, const char *what)
{
	if (s->hms_tagged) {
		uint64_t h = imap_highestmodseq(s);
		buf_printf(&s->out, "%s OK [HIGHESTMODSEQ %llu] %s completed\r\n", s->tag,
			   (unsigned long long)h, what);
		s->hms_sent = h;
		s->hms_tagged = false;
	} else {
		buf_printf(&s->out, "%s OK %s completed\r\n", s->tag, what);
	}
}

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
		if (s->n_uids)
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
	s->hms_tagged = s->condstore;
	imap_sync_selected(s);
	tagged_ok(s, cmd->uid ? "UID EXPUNGE" : "EXPUNGE");
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
	if (cmd->u.store.has_unchangedsince && cmd->u.store.unchangedsince == 0) {
		/* Every message has a modseq above 0: nothing may change
		 * (the store reads 0 as "unconditional"). */
		failed = uids;
		nfailed = n;
		uids = NULL;
	} else if (n) {
		r = store_flags(s->sh, s->sel_id, uids, n, mode, bits, (const char *const *)kw,
				cmd->u.store.has_unchangedsince ? cmd->u.store.unchangedsince : 0,
				&ch, &nch, &failed, &nfailed, &st, &err);
	}
	free(uids);
	imap_keywords_free(&kw);
	if (r < 0) {
		free(failed);
		buf_printf(&s->out, "%s NO [SERVERBUG] Storage error\r\n", s->tag);
		return;
	}
	struct imap_change *own = xmalloc((nch ? nch : 1) * sizeof(*own));
	for (size_t i = 0; i < nch; i++) {
		own[i].uid = ch[i].uid;
		own[i].modseq = ch[i].modseq;
		uint32_t q = imap_seq_of(s, ch[i].uid);
		if (q && !cmd->u.store.silent) {
			buf_printf(&s->out, "* %u FETCH (FLAGS ", q);
			imap_put_flags(&s->out, ch[i].flags, ch[i].keywords);
			buf_printf(&s->out, " UID %u", ch[i].uid);
			if (s->condstore)
				buf_printf(&s->out, " MODSEQ (%llu)", (unsigned long long)ch[i].modseq);
			buf_printf(&s->out, ")\r\n");
		} else if (q && s->condstore) {
			/* .SILENT still tells a CONDSTORE client the new
			 * modseq (RFC 7162 3.1.3). */
			buf_printf(&s->out, "* %u FETCH (UID %u MODSEQ (%llu))\r\n", q, ch[i].uid,
				   (unsigned long long)ch[i].modseq);
		}
		msg_info_cleanup(&ch[i]);
	}
	free(ch);
	imap_sync_own(s, own, nch);
	free(own);
	/* [MODIFIED] names what failed the UNCHANGEDSINCE test, as the
	 * command numbered it; messages gone meanwhile are not listed. */
	size_t k = 0;
	for (size_t i = 0; i < nfailed; i++) {
		uint32_t q = imap_seq_of(s, failed[i]);
		bool pending = false;
		for (size_t j = 0; j < s->n_pend && !pending; j++)
			pending = s->pend[j].uid == failed[i];
		if (q && !pending)
			failed[k++] = cmd->uid ? failed[i] : q;
	}
	if (k) {
		buf_printf(&s->out, "%s OK [MODIFIED ", s->tag);
		imap_put_set(&s->out, failed, k);
		buf_printf(&s->out, "] Conditional %sSTORE failed\r\n", cmd->uid ? "UID " : "");
	} else {
		buf_printf(&s->out, "%s OK %sSTORE completed\r\n", s->tag, cmd->uid ? "UID " : "");
	}
	free(failed);
}

void imap_cmd_store(struct imap_session *s)
{
	if (s->cmd->u.store.has_unchangedsince)
		imap_condstore_on(s);
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
		imap_sync_selected(s);
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
		s->hms_tagged = s->condstore;
		imap_sync_selected(s);
		tagged_ok(s, cmd->uid ? "UID MOVE" : "MOVE");
	} else if (np) {
		imap_sync_selected(s);
		buf_printf(&s->out, "%s OK [%.*s] %sCOPY completed\r\n", s->tag, (int)cu.len,
			   (const char *)cu.data, cmd->uid ? "UID " : "");
	} else {
		imap_sync_selected(s);
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
	UNUSED(err);
	uint32_t max = uid ? (s->n_uids ? s->uids[s->n_uids - 1] : 0) : (uint32_t)s->n_uids;
	struct imap_seq_range *r = xmalloc((set->count ? set->count : 1) * sizeof(*r));
	size_t nr = imap_seqset_resolve(set, max, r);
	size_t ns = set->saved ? s->n_saved : 0;
	struct search_uid_range *u = xmalloc((nr + ns ? nr + ns : 1) * sizeof(*u));
	for (size_t i = 0; i < nr; i++) {
		if (uid) {
			u[i].first = (uint32_t)r[i].lo;
			u[i].last = (uint32_t)r[i].hi;
		} else {
			u[i].first = s->uids[r[i].lo - 1];
			u[i].last = s->uids[r[i].hi - 1];
		}
	}
	/* "$": the saved UIDs (a gone message matches nothing). */
	for (size_t i = 0; i < ns; i++)
		u[nr + i].first = u[nr + i].last = s->saved[i];
	struct search_key *k = search_key_new_uidset(u, nr + ns);
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

struct search_key *imap_search_program(struct imap_session *s, const struct imap_search_key *k,
					const char **error_r)
{
	return conv_key(s, k, error_r);
}

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

static void saved_clear(struct imap_session *s)
{
	free(s->saved);
	s->saved = NULL;
	s->n_saved = 0;
}

static void search_run(struct imap_session *s)
{
	const struct imap_command *cmd = s->cmd;
	unsigned ret = cmd->u.search.return_opts;
	bool want_mod = has_modseq_key(cmd->u.search.root);
	uint32_t *found = NULL;
	uint64_t *mods = NULL;
	size_t n = 0;
	const char *err = NULL;
	if (store_search_modseq(s->sh, s->sel_id, s->search, &found, want_mod ? &mods : NULL, &n,
				&err) < 0) {
		if (ret & IMAP_SEARCH_RET_SAVE)
			saved_clear(s);
		buf_printf(&s->out, "%s NO [SERVERBUG] Search failed\r\n", s->tag);
		return;
	}
	/* Only messages this session knows about. */
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (!imap_seq_of(s, found[i]))
			continue;
		if (mods)
			mods[k] = mods[i];
		found[k++] = found[i];
	}
	n = k;
	uint64_t maxmod = 0;
	bool minmax_only = (ret & (IMAP_SEARCH_RET_MIN | IMAP_SEARCH_RET_MAX)) &&
			   !(ret & (IMAP_SEARCH_RET_ALL | IMAP_SEARCH_RET_COUNT));
	for (size_t i = 0; mods && i < n; i++) {
		bool counts = !minmax_only || (i == 0 && (ret & IMAP_SEARCH_RET_MIN)) ||
			      (i == n - 1 && (ret & IMAP_SEARCH_RET_MAX));
		if (counts)
			maxmod = MAX(maxmod, mods[i]);
	}
	free(mods);
	if (ret & IMAP_SEARCH_RET_SAVE) {
		/* RFC 5182 2.1: with MIN and/or MAX alone, only those. */
		saved_clear(s);
		s->saved = xmalloc((n ? n : 1) * sizeof(uint32_t));
		if (minmax_only) {
			if (n && (ret & IMAP_SEARCH_RET_MIN))
				s->saved[s->n_saved++] = found[0];
			if (n && (ret & IMAP_SEARCH_RET_MAX) && !(s->n_saved && n == 1))
				s->saved[s->n_saved++] = found[n - 1];
		} else if (n) {
			memcpy(s->saved, found, n * sizeof(uint32_t));
			s->n_saved = n;
		}
	}
	/* Numbers as asked. */
	for (size_t i = 0; i < n && !cmd->uid; i++)
		found[i] = imap_seq_of(s, found[i]);
	if (!cmd->u.search.esearch && !s->rev2) {
		buf_printf(&s->out, "* SEARCH");
		for (size_t i = 0; i < n; i++)
			buf_printf(&s->out, " %u", found[i]);
		if (maxmod)
			buf_printf(&s->out, " (MODSEQ %llu)", (unsigned long long)maxmod);
		buf_printf(&s->out, "\r\n");
	} else if (!cmd->u.search.esearch || (ret & ~(unsigned)IMAP_SEARCH_RET_SAVE)) {
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
		if (maxmod)
			buf_printf(&s->out, " MODSEQ %llu", (unsigned long long)maxmod);
		buf_printf(&s->out, "\r\n");
	}
	free(found);
	imap_sync_selected(s);
	buf_printf(&s->out, "%s OK %sSEARCH completed\r\n", s->tag, cmd->uid ? "UID " : "");
}

static void search_done(struct imap_session *s)
{
	search_key_free(&s->search);
}

void imap_cmd_search(struct imap_session *s)
{
	const struct imap_command *cmd = s->cmd;
	/* A SEARCH that fails leaves "$" empty (RFC 5182 2.1); "$" in the
	 * criteria is the result saved before this command. */
	bool save = cmd->u.search.return_opts & IMAP_SEARCH_RET_SAVE;
	if (cmd->u.search.has_charset && !view_eq_nocase(cmd->u.search.charset, "UTF-8") &&
	    !view_eq_nocase(cmd->u.search.charset, "US-ASCII")) {
		if (save)
			saved_clear(s);
		imap_reply(s, "%s NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset\r\n", s->tag);
		return;
	}
	if (has_modseq_key(cmd->u.search.root))
		imap_condstore_on(s);
	const char *err = "Invalid search";
	search_key_free(&s->search);
	s->search = conv_key(s, cmd->u.search.root, &err);
	if (!s->search) {
		if (save)
			saved_clear(s);
		imap_bad(s, err);
		return;
	}
	imap_post(s, search_run, search_done);
}
