#include "node/pop3_session.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/loop.h"
#include "node/node.h"
#include "proto/pop3_parse.h"
#include "storage/pwhash.h"
#include "storage/store.h"

#define POP3_IDLE_MS (10u * 60u * 1000u)
#define POP3_MAX_ERRORS 10u
#define POP3_MAX_AUTH_FAILURES 3u
/* Raw message bytes read per worker job; at most twice that goes out. */
#define POP3_PIECE (128u * 1024u)
/* Read the next piece right away while less than this is unsent. */
#define POP3_OUT_LOW (128u * 1024u)

static const char capa_text[] = "+OK Capability list follows\r\n"
				"TOP\r\n"
				"UIDL\r\n"
				"USER\r\n"
				"RESP-CODES\r\n"
				"PIPELINING\r\n"
				"AUTH-RESP-CODE\r\n"
				"SASL PLAIN\r\n"
				"UTF8\r\n"
				"IMPLEMENTATION mailcluster\r\n"
				".\r\n";

/* ---- the per-process set of logged-in users -------------------------------- */

static pthread_mutex_t inuse_mu = PTHREAD_MUTEX_INITIALIZER;
static char **inuse;
static size_t inuse_n, inuse_cap;

static bool inuse_acquire(const char *user)
{
	bool ok = true;
	pthread_mutex_lock(&inuse_mu);
	for (size_t i = 0; i < inuse_n; i++) {
		if (strcmp(inuse[i], user) == 0) {
			ok = false;
			break;
		}
	}
	if (ok) {
		if (inuse_n == inuse_cap) {
			inuse_cap = inuse_cap ? 2 * inuse_cap : 16;
			inuse = xrealloc(inuse, inuse_cap * sizeof(*inuse));
		}
		inuse[inuse_n++] = xstrdup(user);
	}
	pthread_mutex_unlock(&inuse_mu);
	return ok;
}

static void inuse_release(const char *user)
{
	pthread_mutex_lock(&inuse_mu);
	for (size_t i = 0; i < inuse_n; i++) {
		if (strcmp(inuse[i], user) == 0) {
			free(inuse[i]);
			inuse[i] = inuse[--inuse_n];
			break;
		}
	}
	if (inuse_n == 0) {
		free(inuse);
		inuse = NULL;
		inuse_cap = 0;
	}
	pthread_mutex_unlock(&inuse_mu);
}

/* ---- the session ----------------------------------------------------------- */

enum pop3_state {
	POP3_AUTHORIZATION,
	POP3_TRANSACTION,
	POP3_UPDATE,
};

static const char *pop3_state_str(enum pop3_state s)
{
	switch (s) {
	case POP3_AUTHORIZATION: return "authorization";
	case POP3_TRANSACTION: return "transaction";
	case POP3_UPDATE: return "update";
	}
	return "?";
}

enum pop3_output {
	OUT_NONE,
	OUT_BODY,   /* RETR/TOP: pieces from the worker pool */
	OUT_LIST,   /* LIST without argument */
	OUT_UIDL,   /* UIDL without argument */
};

struct pop3_msg {
	uint32_t uid;
	bool deleted;
	uint64_t size;
	uint8_t hash[32];
};

struct pop3_session {
	struct conn *c; /* NULL once the connection is gone */
	struct node *node;
	uint64_t id;
	enum pop3_state state;
	unsigned depth;    /* nesting of our callbacks: free only at 0 */
	bool busy;         /* a command is still running: no input */
	bool job_inflight; /* `w` is posted: only its done may free us */
	bool wait_drain;
	bool skipping;     /* dropping the rest of an over-long line */
	bool sasl_wait;    /* "+ " sent: the next line is the PLAIN response */
	bool utf8;
	bool locked;       /* owner is in the in-use set */
	bool preauth;      /* handed over by the proxy: no password to check */
	unsigned errors;
	unsigned auth_failures;
	char user[POP3_SASL_ID_MAX + 1]; /* from USER, until PASS */

	/* login (and the snapshot) */
	char owner[256];
	struct shard *sh;
	char *pw;
	size_t pw_len;
	bool j_ok, j_in_use, j_failed;
	char j_error[160];

	/* the INBOX snapshot */
	uint64_t mailbox_id;
	uint32_t uidvalidity;
	struct pop3_msg *msgs;
	size_t nmsgs;

	/* multi-line output in progress */
	enum pop3_output output;
	size_t list_next;
	size_t body_idx;
	uint64_t body_off;
	bool body_started, body_eof;
	struct pop3_dotstuff ds;
	struct buf out;

	/* QUIT */
	size_t j_expunged;

	int j_rc;
	struct work w;
};

size_t pop3_session_struct_size(void)
{
	return sizeof(struct pop3_session);
}

static void session_free(struct pop3_session *s)
{
	if (s->locked) {
		inuse_release(s->owner);
		s->locked = false;
	}
	if (s->pw) {
		explicit_bzero(s->pw, s->pw_len);
		free(s->pw);
	}
	explicit_bzero(s->user, sizeof(s->user));
	buf_cleanup(&s->out);
	free(s->msgs);
	free(s);
}

static void s_enter(struct pop3_session *s)
{
	s->depth++;
}

static void s_leave(struct pop3_session *s)
{
	if (--s->depth == 0 && !s->c && !s->job_inflight)
		session_free(s);
}

static void reply(struct pop3_session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void reply(struct pop3_session *s, const char *fmt, ...)
{
	if (!s->c)
		return;
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	size_t len = MIN((size_t)n, sizeof(line) - 3);
	memcpy(line + len, "\r\n", 2);
	conn_write(s->c, line, len + 2);
}

static void close_session(struct pop3_session *s)
{
	s->state = POP3_UPDATE;
	if (s->c)
		conn_close(s->c);
}

/* Counts a protocol error; at the limit, answers and closes (true). */
static bool count_error(struct pop3_session *s, const char *what)
{
	if (++s->errors < POP3_MAX_ERRORS)
		return false;
	LOG_INFO("pop3", s->id, "too_many_errors", "count=%u last=%s", s->errors, what);
	reply(s, "-ERR too many errors");
	close_session(s);
	return true;
}

static void err_reply(struct pop3_session *s, const char *what, const char *text)
{
	if (!count_error(s, what))
		reply(s, "-ERR %s", text);
}

/* The running command is answered: take input again. */
static void command_done(struct pop3_session *s)
{
	s->busy = false;
	if (s->c && s->state != POP3_UPDATE)
		conn_resume(s->c);
}

static void post_job(struct pop3_session *s, work_fn run, work_fn done)
{
	s->busy = true;
	s->job_inflight = true;
	conn_pause(s->c);
	loop_post_work(conn_loop(s->c), &s->w, run, done);
}

/* ---- login ------------------------------------------------------------------ */

static void wipe_password(struct pop3_session *s)
{
	if (!s->pw)
		return;
	explicit_bzero(s->pw, s->pw_len);
	free(s->pw);
	s->pw = NULL;
	s->pw_len = 0;
}

/* Worker: the password, then the lock, then the INBOX snapshot. */
static void login_run(struct work *w)
{
	struct pop3_session *s = container_of(w, struct pop3_session, w);
	struct user_info u;
	enum storage_status st = ST_OK;
	const char *err = NULL;
	bool known = s->sh && store_user_get(s->sh, s->owner, &u, &st, &err) == 0 && u.enabled &&
		     u.pwhash[0];
	if (!known && s->sh && st != ST_OK && st != ST_NOT_FOUND) {
		s->j_failed = true;
		snprintf(s->j_error, sizeof(s->j_error), "%s", err ? err : "storage error");
	}
	/* Unknown users cost what known ones cost. */
	if (s->preauth) {
		s->j_ok = known; /* the proxy had the password checked */
	} else if (known) {
		s->j_ok = pwhash_verify(u.pwhash, s->pw, s->pw_len) == 1;
		explicit_bzero(u.pwhash, sizeof(u.pwhash));
	} else {
		pwhash_dummy_verify(s->pw, s->pw_len);
	}
	if (!s->j_ok)
		return;
	if (!inuse_acquire(s->owner)) {
		s->j_ok = false;
		s->j_in_use = true;
		return;
	}
	s->locked = true;

	struct mailbox_info mb;
	uint32_t *uids = NULL;
	size_t nuids = 0;
	struct msg_info *infos = NULL;
	size_t ninfos = 0;
	if (store_mailbox_get(s->sh, s->owner, "INBOX", &mb, &st, &err) < 0 ||
	    store_uids(s->sh, mb.id, &uids, &nuids, &err) < 0 ||
	    (nuids && store_fetch_range(s->sh, mb.id, uids[0], uids[nuids - 1], &infos, &ninfos,
					&err) < 0)) {
		snprintf(s->j_error, sizeof(s->j_error), "%s", err ? err : "storage error");
		s->j_ok = false;
		s->j_failed = true;
		free(uids);
		inuse_release(s->owner);
		s->locked = false;
		return;
	}
	s->mailbox_id = mb.id;
	s->uidvalidity = mb.uidvalidity;
	s->msgs = xcalloc(ninfos ? ninfos : 1, sizeof(*s->msgs));
	s->nmsgs = ninfos;
	for (size_t i = 0; i < ninfos; i++) {
		s->msgs[i].uid = infos[i].uid;
		s->msgs[i].size = infos[i].size;
		memcpy(s->msgs[i].hash, infos[i].body_hash, sizeof(s->msgs[i].hash));
		msg_info_cleanup(&infos[i]);
	}
	free(infos);
	free(uids);
}

static void maildrop_totals(const struct pop3_session *s, size_t *n_r, uint64_t *bytes_r)
{
	size_t n = 0;
	uint64_t bytes = 0;
	for (size_t i = 0; i < s->nmsgs; i++) {
		if (!s->msgs[i].deleted) {
			n++;
			bytes += s->msgs[i].size;
		}
	}
	*n_r = n;
	*bytes_r = bytes;
}

static void login_done(struct work *w)
{
	struct pop3_session *s = container_of(w, struct pop3_session, w);
	s->job_inflight = false;
	s_enter(s);
	wipe_password(s);
	char qu[300];
	log_quote_cstr(qu, sizeof(qu), s->owner);
	if (!s->c)
		goto out;
	if (s->j_ok) {
		s->state = POP3_TRANSACTION;
		size_t n;
		uint64_t bytes;
		maildrop_totals(s, &n, &bytes);
		LOG_INFO("pop3", s->id, "login", "user=%s messages=%zu bytes=%llu", qu, n,
			 (unsigned long long)bytes);
		reply(s, "+OK maildrop has %zu messages (%llu octets)", n,
		      (unsigned long long)bytes);
	} else if (s->j_in_use) {
		LOG_INFO("pop3", s->id, "login_in_use", "user=%s", qu);
		reply(s, "-ERR [IN-USE] maildrop already locked by another session");
	} else if (s->j_failed) {
		char qe[200];
		LOG_WARN("pop3", s->id, "login_storage_error", "user=%s reason=%s", qu,
			 log_quote_cstr(qe, sizeof(qe), s->j_error));
		reply(s, "-ERR [SYS/TEMP] maildrop unavailable, try again later");
	} else {
		LOG_INFO("pop3", s->id, "login_failed", "user=%s", qu);
		s->owner[0] = '\0';
		if (++s->auth_failures >= POP3_MAX_AUTH_FAILURES) {
			reply(s, "-ERR [AUTH] too many authentication failures");
			close_session(s);
		} else if (!count_error(s, "auth")) {
			reply(s, "-ERR [AUTH] invalid user name or password");
		}
	}
	if (s->state != POP3_TRANSACTION) {
		s->owner[0] = '\0';
		if (s->preauth) /* nothing else to do on a handed-over session */
			close_session(s);
	}
	command_done(s);
out:
	s_leave(s);
}

static void start_login(struct pop3_session *s, struct view user, struct view pass)
{
	char login[POP3_SASL_ID_MAX + 1];
	size_t n = MIN(user.len, sizeof(login) - 1);
	memcpy(login, user.ptr, n);
	login[n] = '\0';
	s->sh = node_user_shard(s->node, login, s->owner, sizeof(s->owner));
	if (!s->owner[0]) /* not an address: logged as given */
		snprintf(s->owner, sizeof(s->owner), "%s", login);
	explicit_bzero(login, sizeof(login));
	s->pw = xmalloc(pass.len + 1);
	memcpy(s->pw, pass.ptr, pass.len);
	s->pw[pass.len] = '\0';
	s->pw_len = pass.len;
	s->j_ok = s->j_in_use = s->j_failed = false;
	s->j_error[0] = '\0';
	post_job(s, login_run, login_done);
}

static void sasl_plain(struct pop3_session *s, struct view b64)
{
	if (view_eq_cstr(b64, "*")) {
		err_reply(s, "auth_cancel", "authentication cancelled");
		return;
	}
	uint8_t dec[POP3_SASL_LINE_MAX];
	struct pop3_sasl_plain sp;
	const char *why = NULL;
	if (view_eq_cstr(b64, "="))
		b64.len = 0;
	if (pop3_sasl_plain_decode(b64, dec, sizeof(dec), &sp, &why) < 0) {
		err_reply(s, "auth_malformed", why);
		return;
	}
	if (sp.authzid.len &&
	    (sp.authzid.len != sp.authcid.len || memcmp(sp.authzid.ptr, sp.authcid.ptr, sp.authcid.len))) {
		explicit_bzero(dec, sizeof(dec));
		err_reply(s, "authzid", "[AUTH] authorization identity not allowed");
		return;
	}
	start_login(s, sp.authcid, sp.passwd);
	explicit_bzero(dec, sizeof(dec));
}

/* ---- message output ------------------------------------------------------------ */

static void output_end(struct pop3_session *s)
{
	s->output = OUT_NONE;
	s->wait_drain = false;
	buf_cleanup(&s->out);
	command_done(s);
}

static int body_piece(void *arg, const uint8_t *p, size_t n)
{
	struct pop3_session *s = arg;
	if (pop3_dotstuff_feed(&s->ds, p, n, &s->out) < 0) {
		s->j_rc = -1;
		return 1;
	}
	s->body_off += n;
	return pop3_dotstuff_done(&s->ds) ? 1 : 0;
}

static void body_run(struct work *w)
{
	struct pop3_session *s = container_of(w, struct pop3_session, w);
	const struct pop3_msg *m = &s->msgs[s->body_idx];
	const char *err = NULL;
	uint64_t before = s->body_off;
	s->j_rc = 0;
	if (store_body_read(s->sh, m->hash, s->body_off, POP3_PIECE, body_piece, s, &err) < 0) {
		s->j_rc = -1;
		snprintf(s->j_error, sizeof(s->j_error), "%s", err ? err : "storage error");
		return;
	}
	if (s->j_rc < 0) {
		snprintf(s->j_error, sizeof(s->j_error), "output buffer full");
		return;
	}
	if (s->body_off - before < POP3_PIECE || pop3_dotstuff_done(&s->ds)) {
		s->body_eof = true;
		pop3_dotstuff_finish(&s->ds, &s->out);
	}
}

static void body_done(struct work *w);

static void body_next(struct pop3_session *s)
{
	post_job(s, body_run, body_done);
}

static void body_done(struct work *w)
{
	struct pop3_session *s = container_of(w, struct pop3_session, w);
	s->job_inflight = false;
	s_enter(s);
	if (!s->c)
		goto out;
	const struct pop3_msg *m = &s->msgs[s->body_idx];
	if (s->j_rc < 0) {
		char qe[200];
		LOG_WARN("pop3", s->id, "body_read_failed", "uid=%u offset=%llu reason=%s", m->uid,
			 (unsigned long long)s->body_off, log_quote_cstr(qe, sizeof(qe), s->j_error));
		if (!s->body_started) {
			reply(s, "-ERR [SYS/TEMP] message unavailable, try again later");
			output_end(s);
		} else {
			/* Mid-response: the framing cannot be recovered. */
			conn_abort(s->c, CONN_CLOSE_ERROR);
		}
		goto out;
	}
	if (!s->body_started) {
		s->body_started = true;
		if (s->ds.top)
			reply(s, "+OK top of message follows");
		else
			reply(s, "+OK %llu octets", (unsigned long long)m->size);
	}
	if (s->c && conn_write(s->c, s->out.data, s->out.len) < 0)
		goto out;
	buf_reset(&s->out);
	if (!s->c)
		goto out;
	if (s->body_eof) {
		LOG_DEBUG("pop3", s->id, s->ds.top ? "top" : "retr", "uid=%u bytes=%llu", m->uid,
			  (unsigned long long)s->body_off);
		output_end(s);
	} else if (conn_out_pending(s->c) < POP3_OUT_LOW) {
		body_next(s);
	} else {
		s->wait_drain = true;
	}
out:
	s_leave(s);
}

static void start_body(struct pop3_session *s, size_t idx, bool top, uint32_t lines)
{
	s->output = OUT_BODY;
	s->body_idx = idx;
	s->body_off = 0;
	s->body_started = s->body_eof = false;
	if (top)
		pop3_dotstuff_init_top(&s->ds, lines);
	else
		pop3_dotstuff_init(&s->ds);
	buf_init(&s->out, 2 * (size_t)POP3_PIECE + 64);
	body_next(s);
}

/* LIST / UIDL listing: writes lines while little is unsent; returns true
 * when the listing is complete. */
static bool listing_continue(struct pop3_session *s)
{
	char batch[8192];
	size_t blen = 0;
	while (s->list_next < s->nmsgs) {
		if (!s->c)
			return true;
		if (conn_out_pending(s->c) >= POP3_OUT_LOW) {
			s->wait_drain = true;
			return false;
		}
		for (; s->list_next < s->nmsgs && blen < sizeof(batch) - 64; s->list_next++) {
			const struct pop3_msg *m = &s->msgs[s->list_next];
			if (m->deleted)
				continue;
			int n;
			if (s->output == OUT_LIST)
				n = snprintf(batch + blen, sizeof(batch) - blen, "%zu %llu\r\n",
					     s->list_next + 1, (unsigned long long)m->size);
			else
				n = snprintf(batch + blen, sizeof(batch) - blen, "%zu %u.%u\r\n",
					     s->list_next + 1, s->uidvalidity, m->uid);
			blen += (size_t)n;
		}
		if (conn_write(s->c, batch, blen) < 0)
			return true;
		blen = 0;
	}
	if (s->c)
		conn_write(s->c, ".\r\n", 3);
	return true;
}

static void start_listing(struct pop3_session *s, enum pop3_output kind)
{
	s->output = kind;
	s->list_next = 0;
	if (listing_continue(s)) {
		s->output = OUT_NONE;
		return;
	}
	s->busy = true;
	conn_pause(s->c);
}

static void pop3_on_drain(struct conn *c)
{
	struct pop3_session *s = conn_user(c);
	if (!s->wait_drain)
		return;
	s_enter(s);
	s->wait_drain = false;
	if (s->output == OUT_BODY) {
		body_next(s);
	} else if (s->output == OUT_LIST || s->output == OUT_UIDL) {
		if (listing_continue(s))
			output_end(s);
	}
	s_leave(s);
}

/* ---- commands ---------------------------------------------------------------- */

/* Message number n of the snapshot, or NULL after answering -ERR. */
static struct pop3_msg *msg_arg(struct pop3_session *s, uint32_t n)
{
	if (n == 0 || n > s->nmsgs) {
		err_reply(s, "no_such_message", "no such message");
		return NULL;
	}
	struct pop3_msg *m = &s->msgs[n - 1];
	if (m->deleted) {
		if (!count_error(s, "deleted"))
			reply(s, "-ERR message %u already deleted", n);
		return NULL;
	}
	return m;
}

static void expunge_run(struct work *w)
{
	struct pop3_session *s = container_of(w, struct pop3_session, w);
	uint32_t *uids = xcalloc(s->nmsgs ? s->nmsgs : 1, sizeof(*uids));
	size_t n = 0;
	for (size_t i = 0; i < s->nmsgs; i++)
		if (s->msgs[i].deleted)
			uids[n++] = s->msgs[i].uid;
	uint32_t *gone = NULL;
	size_t ngone = 0;
	enum storage_status st = ST_OK;
	const char *err = NULL;
	s->j_rc = store_expunge(s->sh, s->mailbox_id, uids, n, false, &gone, &ngone, &st, &err);
	if (s->j_rc < 0)
		snprintf(s->j_error, sizeof(s->j_error), "%s: %s", storage_status_str(st),
			 err ? err : "");
	s->j_expunged = ngone;
	free(gone);
	free(uids);
}

static void quit_reply(struct pop3_session *s, size_t deleted)
{
	char qu[300];
	size_t left;
	uint64_t bytes;
	maildrop_totals(s, &left, &bytes);
	LOG_INFO("pop3", s->id, "quit", "user=%s deleted=%zu left=%zu",
		 log_quote_cstr(qu, sizeof(qu), s->owner), deleted, left);
	/* Let the next session in before this one's close completes. */
	if (s->locked) {
		inuse_release(s->owner);
		s->locked = false;
	}
	reply(s, "+OK bye (%zu messages left)", left);
	close_session(s);
}

static void expunge_done(struct work *w)
{
	struct pop3_session *s = container_of(w, struct pop3_session, w);
	s->job_inflight = false;
	s_enter(s);
	if (s->c) {
		if (s->j_rc < 0) {
			char qe[200];
			LOG_WARN("pop3", s->id, "expunge_failed", "reason=%s",
				 log_quote_cstr(qe, sizeof(qe), s->j_error));
			reply(s, "-ERR [SYS/TEMP] some deleted messages not removed");
			close_session(s);
		} else {
			quit_reply(s, s->j_expunged);
		}
	}
	s_leave(s);
}

static void cmd_quit_transaction(struct pop3_session *s)
{
	size_t ndel = 0;
	for (size_t i = 0; i < s->nmsgs; i++)
		ndel += s->msgs[i].deleted;
	s->state = POP3_UPDATE;
	if (ndel == 0) {
		quit_reply(s, 0);
		return;
	}
	post_job(s, expunge_run, expunge_done);
}

static void cmd_authorization(struct pop3_session *s, const struct pop3_command *cmd)
{
	switch (cmd->verb) {
	case POP3_CMD_USER:
		if (cmd->args[0].len > POP3_SASL_ID_MAX) {
			err_reply(s, "user", "user name too long");
			return;
		}
		memcpy(s->user, cmd->args[0].ptr, cmd->args[0].len);
		s->user[cmd->args[0].len] = '\0';
		reply(s, "+OK send PASS");
		return;
	case POP3_CMD_PASS: {
		if (!s->user[0]) {
			err_reply(s, "pass", "USER first");
			return;
		}
		struct view u = view_cstr(s->user);
		start_login(s, u, cmd->args[0]);
		explicit_bzero(s->user, sizeof(s->user));
		return;
	}
	case POP3_CMD_AUTH:
		if (cmd->nargs == 0) {
			reply(s, "+OK\r\nPLAIN\r\n.");
			return;
		}
		if (!view_eq_nocase(cmd->args[0], "PLAIN")) {
			err_reply(s, "auth_mech", "unsupported authentication mechanism");
			return;
		}
		if (cmd->nargs == 2) {
			sasl_plain(s, cmd->args[1]);
			return;
		}
		s->sasl_wait = true;
		reply(s, "+ ");
		return;
	case POP3_CMD_APOP:
		err_reply(s, "apop", "APOP not supported");
		return;
	case POP3_CMD_STLS:
		err_reply(s, "stls", "STLS not available here");
		return;
	case POP3_CMD_UTF8:
		s->utf8 = true;
		reply(s, "+OK UTF8 enabled");
		return;
	case POP3_CMD_QUIT:
		reply(s, "+OK bye");
		close_session(s);
		return;
	default:
		err_reply(s, "state", "command not valid before login");
		return;
	}
}

static void cmd_transaction(struct pop3_session *s, const struct pop3_command *cmd)
{
	struct pop3_msg *m;
	size_t n;
	uint64_t bytes;
	switch (cmd->verb) {
	case POP3_CMD_STAT:
		maildrop_totals(s, &n, &bytes);
		reply(s, "+OK %zu %llu", n, (unsigned long long)bytes);
		return;
	case POP3_CMD_LIST:
	case POP3_CMD_UIDL:
		if (cmd->nargs == 1) {
			if (!(m = msg_arg(s, cmd->num[0])))
				return;
			if (cmd->verb == POP3_CMD_LIST)
				reply(s, "+OK %u %llu", cmd->num[0], (unsigned long long)m->size);
			else
				reply(s, "+OK %u %u.%u", cmd->num[0], s->uidvalidity, m->uid);
			return;
		}
		if (cmd->verb == POP3_CMD_LIST) {
			maildrop_totals(s, &n, &bytes);
			reply(s, "+OK %zu messages (%llu octets)", n, (unsigned long long)bytes);
			start_listing(s, OUT_LIST);
		} else {
			reply(s, "+OK unique-id listing follows");
			start_listing(s, OUT_UIDL);
		}
		return;
	case POP3_CMD_RETR:
		if ((m = msg_arg(s, cmd->num[0])))
			start_body(s, (size_t)(m - s->msgs), false, 0);
		return;
	case POP3_CMD_TOP:
		if ((m = msg_arg(s, cmd->num[0])))
			start_body(s, (size_t)(m - s->msgs), true, cmd->num[1]);
		return;
	case POP3_CMD_DELE:
		if ((m = msg_arg(s, cmd->num[0]))) {
			m->deleted = true;
			reply(s, "+OK message %u deleted", cmd->num[0]);
		}
		return;
	case POP3_CMD_RSET:
		for (size_t i = 0; i < s->nmsgs; i++)
			s->msgs[i].deleted = false;
		maildrop_totals(s, &n, &bytes);
		reply(s, "+OK maildrop has %zu messages (%llu octets)", n,
		      (unsigned long long)bytes);
		return;
	case POP3_CMD_NOOP:
		reply(s, "+OK");
		return;
	case POP3_CMD_QUIT:
		cmd_quit_transaction(s);
		return;
	default:
		err_reply(s, "state", "command not valid after login");
		return;
	}
}

static void dispatch(struct pop3_session *s, const struct pop3_command *cmd)
{
	if (cmd->verb == POP3_CMD_UNKNOWN) {
		err_reply(s, "unknown", "unknown command");
		return;
	}
	if (cmd->verb == POP3_CMD_CAPA) {
		if (s->c)
			conn_write(s->c, capa_text, sizeof(capa_text) - 1);
		return;
	}
	if (s->state == POP3_AUTHORIZATION)
		cmd_authorization(s, cmd);
	else
		cmd_transaction(s, cmd);
}

static ssize_t pop3_on_data(struct conn *c, const uint8_t *d, size_t len)
{
	struct pop3_session *s = conn_user(c);
	if (s->state == POP3_UPDATE)
		return (ssize_t)len; /* after QUIT: nothing more is read */
	if (s->busy)
		return 0;
	if (s->skipping) {
		bool done;
		size_t n = pop3_skip_line(d, len, &done);
		s->skipping = !done;
		return (ssize_t)n;
	}
	struct pop3_command cmd;
	size_t used = 0;
	enum pop3_result r;
	bool sasl = s->sasl_wait;
	if (sasl)
		r = pop3_parse_raw_line(d, len, POP3_SASL_LINE_MAX, &cmd, &used);
	else
		r = pop3_parse_line(d, len, POP3_LINE_MAX, &cmd, &used);
	if (r == POP3_MORE)
		return 0;
	s_enter(s);
	s->sasl_wait = false;
	if (r == POP3_BAD) {
		s->skipping = cmd.line_open;
		LOG_DEBUG("pop3", s->id, "bad_command", "reason=\"%s\"", cmd.error);
		err_reply(s, "bad_command", cmd.error);
	} else if (sasl) {
		sasl_plain(s, cmd.args[0]);
	} else {
		dispatch(s, &cmd);
	}
	s_leave(s);
	return (ssize_t)used;
}

static void pop3_on_close(struct conn *c, enum conn_close_reason why)
{
	struct pop3_session *s = conn_user(c);
	char qu[300];
	LOG_INFO("pop3", s->id, "close", "reason=%s state=%s user=%s errors=%u",
		 conn_close_reason_str(why), pop3_state_str(s->state),
		 log_quote_cstr(qu, sizeof(qu), s->owner), s->errors);
	s->c = NULL;
	s->wait_drain = false;
	/* A worker job still holds the session: its done frees it. */
	if (s->depth == 0 && !s->job_inflight)
		session_free(s);
}

static const struct conn_handler pop3_handler = {
	.name = "pop3",
	.on_data = pop3_on_data,
	.on_drain = pop3_on_drain,
	.on_close = pop3_on_close,
};

static struct pop3_session *session_new(struct conn *c, void *node)
{
	struct pop3_session *s = xcalloc(1, sizeof(*s));
	s->c = c;
	s->node = node;
	s->id = conn_id(c);
	s->state = POP3_AUTHORIZATION;
	buf_init(&s->out, 0);
	conn_set_handler(c, &pop3_handler, s);
	conn_set_idle_timeout(c, POP3_IDLE_MS);
	return s;
}

void pop3_session_accept(struct conn *c, void *node)
{
	struct pop3_session *s = session_new(c, node);
	char peer[64];
	LOG_INFO("pop3", s->id, "accept", "peer=%s", conn_peer_str(c, peer, sizeof(peer)));
	conn_write(c, "+OK POP3 server ready\r\n", 23);
}

void pop3_session_open(struct conn *c, void *node, const char *user, struct shard *sh,
		       bool utf8, const char *client)
{
	struct pop3_session *s = session_new(c, node);
	char q[300], qc[80];
	LOG_INFO("pop3", s->id, "handoff", "user=%s client=%s",
		 log_quote_cstr(q, sizeof(q), user), log_quote_cstr(qc, sizeof(qc), client));
	snprintf(s->owner, sizeof(s->owner), "%s", user);
	s->sh = sh;
	s->utf8 = utf8;
	s->preauth = true;
	s->pw = xstrdup("");
	s->pw_len = 0;
	s->j_ok = s->j_in_use = s->j_failed = false;
	s->j_error[0] = '\0';
	post_job(s, login_run, login_done);
}
