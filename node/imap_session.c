#include "node/imap_session.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/log.h"
#include "node/imap_internal.h"
#include "node/node.h"
#include "storage/pwhash.h"
#include "storage/search.h"

/* APPENDLIMIT=<storage.max_message> follows (caps_str). */
#define IMAP_CAPS                                                                       \
	"IMAP4rev2 IMAP4rev1 LITERAL+ SASL-IR AUTH=PLAIN ENABLE ID IDLE NAMESPACE UIDPLUS " \
	"MOVE UNSELECT SPECIAL-USE CHILDREN CONDSTORE QRESYNC ESEARCH SEARCHRES BINARY "   \
	"SAVEDATE COMPRESS=DEFLATE SORT SORT=DISPLAY ESORT THREAD=ORDEREDSUBJECT "         \
	"THREAD=REFERENCES LIST-EXTENDED LIST-STATUS CREATE-SPECIAL-USE STATUS=SIZE "      \
	"MULTIAPPEND QUOTA QUOTA=RES-STORAGE"
#define IMAP_MAX_ERRORS 20
#define IMAP_MAX_AUTH_FAILURES 3
#define IMAP_IDLE_PREAUTH_MS (60 * 1000)
#define IMAP_IDLE_AUTH_MS (30 * 60 * 1000)
#define IMAP_SASL_LINE_MAX 8192

const char *imap_state_str(enum imap_state st)
{
	switch (st) {
	case IMAP_STATE_NOT_AUTH: return "not_auth";
	case IMAP_STATE_AUTH: return "auth";
	case IMAP_STATE_SELECTED: return "selected";
	case IMAP_STATE_LOGOUT: return "logout";
	}
	return "?";
}

#define IMAP_CAPS_MAX 512

/* IMAP_CAPS and this node's APPENDLIMIT. */
static const char *caps_str(const struct imap_session *s, char out[IMAP_CAPS_MAX])
{
	snprintf(out, IMAP_CAPS_MAX, IMAP_CAPS " APPENDLIMIT=%llu",
		 (unsigned long long)node_max_message(s->node));
	return out;
}

/* Parser limits; an APPEND message may be as large as the store takes. */
static struct imap_limits session_limits(const struct imap_session *s, bool authed)
{
	if (!authed)
		return imap_limits_preauth();
	struct imap_limits lim = imap_limits_default();
	lim.max_stream_literal = node_max_message(s->node);
	return lim;
}

static void enter_state(struct imap_session *s, enum imap_state st)
{
	if (s->state == st)
		return;
	LOG_DEBUG("imap", s->id, "state", "from=%s to=%s", imap_state_str(s->state),
		  imap_state_str(st));
	s->state = st;
}

static void auth_user_free(struct imap_session *s)
{
	if (s->auth_user) {
		explicit_bzero(s->auth_user, AUTH_USER_MAX);
		free(s->auth_user);
		s->auth_user = NULL;
	}
}

/* The parser exists only while a command is being read or run: an idle
 * session has none, and the next input starts one with the session's
 * settings (the ones imap_parser_set_* would have applied). */
static struct imap_parser *session_parser(struct imap_session *s)
{
	if (s->parser)
		return s->parser;
	bool authed = s->user != NULL;
	struct imap_limits lim = session_limits(s, authed);
	s->parser = imap_parser_new(&lim);
	if (s->utf8)
		imap_parser_set_utf8(s->parser, true);
	if (authed) {
		struct imap_literal_sink sink = imap_append_sink_ops;
		sink.ctx = s;
		imap_parser_set_sink(s->parser, &sink);
	}
	return s->parser;
}

static void session_free(struct imap_session *s)
{
	if (timer_armed(&s->idle_timer))
		timer_stop(s->loop, &s->idle_timer);
	imap_parser_free(&s->parser);
	imap_append_reset(s);
	imap_fetch_free(&s->fetch);
	search_key_free(&s->search);
	if (s->auth_pass) {
		explicit_bzero(s->auth_pass, s->auth_pass_len);
		free(s->auth_pass);
	}
	auth_user_free(s);
	buf_cleanup(&s->out);
	imap_uids_clear(s);
	free(s->pend);
	free(s->saved);
	free(s->after_sync);
	free(s->sel_name);
	free(s->user);
	free(s->tag);
	free(s);
}

/* Free when the connection is gone and nothing refers to the session. */
static bool session_maybe_free(struct imap_session *s)
{
	if (s->closed && !s->busy && s->in_cb == 0) {
		session_free(s);
		return true;
	}
	return false;
}

static void session_write(struct imap_session *s, const void *p, size_t len)
{
	if (s->c && !conn_closing(s->c))
		conn_write(s->c, p, len);
}

void imap_reply(struct imap_session *s, const char *fmt, ...)
{
	if (!s->c || conn_closing(s->c))
		return;
	char tmp[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n < sizeof(tmp)) {
		conn_write(s->c, tmp, (size_t)n);
		return;
	}
	char *big = xmalloc((size_t)n + 1);
	va_start(ap, fmt);
	vsnprintf(big, (size_t)n + 1, fmt, ap);
	va_end(ap);
	conn_write(s->c, big, (size_t)n);
	free(big);
}

static void too_many_errors(struct imap_session *s)
{
	if (s->errors < IMAP_MAX_ERRORS || !s->c)
		return;
	LOG_INFO("imap", s->id, "too_many_errors", "errors=%u", s->errors);
	imap_reply(s, "* BYE too many errors\r\n");
	conn_close(s->c);
}

void imap_bad(struct imap_session *s, const char *text)
{
	s->errors++;
	imap_reply(s, "%s BAD %s\r\n", s->tag ? s->tag : "*", text);
	too_many_errors(s);
}

static void set_tag(struct imap_session *s, struct view tag)
{
	free(s->tag);
	s->tag = xmalloc(tag.len + 1);
	memcpy(s->tag, tag.ptr, tag.len);
	s->tag[tag.len] = '\0';
}

/* ---- helpers shared by the command files --------------------------------- */

void imap_view_cstr(struct view v, char *dst, size_t dst_len)
{
	size_t n = MIN(v.len, dst_len - 1);
	memcpy(dst, v.ptr, n);
	dst[n] = '\0';
}

void imap_put_quoted(struct buf *b, struct view v)
{
	buf_append(b, "\"", 1);
	for (size_t i = 0; i < v.len; i++) {
		if (v.ptr[i] == '"' || v.ptr[i] == '\\')
			buf_append(b, "\\", 1);
		buf_append(b, &v.ptr[i], 1);
	}
	buf_append(b, "\"", 1);
}

void imap_put_mailbox(struct imap_session *s, struct buf *b, const char *name)
{
	if (strcmp(name, "INBOX") == 0) {
		buf_append(b, "INBOX", 5);
		return;
	}
	if (s->utf8) {
		imap_put_quoted(b, view_cstr(name));
		return;
	}
	struct buf m;
	buf_init(&m, 4 * MAILBOX_NAME_MAX);
	const char *err = NULL;
	if (imap_utf8_to_mutf7(view_cstr(name), &m, &err) < 0)
		imap_put_quoted(b, view_cstr(name));
	else
		imap_put_quoted(b, buf_view(&m));
	buf_cleanup(&m);
}

void imap_put_flags(struct buf *b, uint32_t flags, char *const *keywords)
{
	static const struct {
		uint32_t bit;
		const char *name;
	} sys[] = {
		{ FLAG_ANSWERED, "\\Answered" }, { FLAG_FLAGGED, "\\Flagged" },
		{ FLAG_DELETED, "\\Deleted" },   { FLAG_SEEN, "\\Seen" },
		{ FLAG_DRAFT, "\\Draft" },
	};
	bool first = true;
	buf_append(b, "(", 1);
	for (size_t i = 0; i < ARRAY_LEN(sys); i++) {
		if (!(flags & sys[i].bit))
			continue;
		buf_printf(b, "%s%s", first ? "" : " ", sys[i].name);
		first = false;
	}
	for (size_t i = 0; keywords && keywords[i]; i++) {
		buf_printf(b, "%s%s", first ? "" : " ", keywords[i]);
		first = false;
	}
	buf_append(b, ")", 1);
}

void imap_put_set(struct buf *b, const uint32_t *v, size_t n)
{
	for (size_t i = 0; i < n;) {
		size_t j = i;
		while (j + 1 < n && v[j + 1] == v[j] + 1)
			j++;
		if (j > i)
			buf_printf(b, "%s%u:%u", i ? "," : "", v[i], v[j]);
		else
			buf_printf(b, "%s%u", i ? "," : "", v[i]);
		i = j + 1;
	}
}

void imap_put_internaldate(struct buf *b, uint64_t ms)
{
	static const char *const mon[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
					   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	buf_printf(b, "\"%02d-%s-%04d %02d:%02d:%02d +0000\"", tm.tm_mday, mon[tm.tm_mon],
		   tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static bool keyword_char_ok(uint8_t ch)
{
	/* ATOM-CHAR minus resp-specials: no specials, controls or 8-bit. */
	return ch > 0x20 && ch < 0x7f && !strchr("(){%*\"\\]", ch);
}

int imap_parse_flags(const struct view *flags, size_t n, uint32_t *bits_r,
		     char ***keywords_r, const char **error_r)
{
	static const struct {
		const char *name;
		uint32_t bit;
	} sys[] = {
		{ "\\Seen", FLAG_SEEN },       { "\\Answered", FLAG_ANSWERED },
		{ "\\Flagged", FLAG_FLAGGED }, { "\\Deleted", FLAG_DELETED },
		{ "\\Draft", FLAG_DRAFT },     { "\\Recent", 0 },
	};
	*bits_r = 0;
	*keywords_r = NULL;
	char **kw = xcalloc(n + 1, sizeof(char *));
	size_t nk = 0;
	for (size_t i = 0; i < n; i++) {
		struct view f = flags[i];
		if (f.len > 0 && f.ptr[0] == '\\') {
			size_t k;
			for (k = 0; k < ARRAY_LEN(sys); k++)
				if (view_eq_nocase(f, sys[k].name))
					break;
			if (k == ARRAY_LEN(sys)) {
				*error_r = "Unknown system flag";
				goto fail;
			}
			*bits_r |= sys[k].bit;
			continue;
		}
		if (f.len == 0 || f.len > KEYWORD_MAX) {
			*error_r = "Invalid keyword";
			goto fail;
		}
		for (size_t k = 0; k < f.len; k++) {
			if (!keyword_char_ok(f.ptr[k])) {
				*error_r = "Invalid keyword";
				goto fail;
			}
		}
		bool dup = false;
		for (size_t k = 0; k < nk; k++)
			if (strlen(kw[k]) == f.len && strncasecmp(kw[k], (const char *)f.ptr, f.len) == 0)
				dup = true;
		if (dup)
			continue;
		kw[nk] = xmalloc(f.len + 1);
		memcpy(kw[nk], f.ptr, f.len);
		kw[nk][f.len] = '\0';
		nk++;
	}
	*keywords_r = kw;
	return 0;
fail:
	imap_keywords_free(&kw);
	return -1;
}

void imap_keywords_free(char ***kwp)
{
	char **kw = *kwp;
	if (!kw)
		return;
	*kwp = NULL;
	for (size_t i = 0; kw[i]; i++)
		free(kw[i]);
	free(kw);
}

/* ---- jobs ------------------------------------------------------------------ */

static void job_run(struct work *w)
{
	struct imap_session *s = container_of(w, struct imap_session, work);
	imap_uids_unpack(s);
	if (s->presync) {
		/* Commands without a sync of their own report others' changes
		 * before their output. */
		s->presync = false;
		imap_sync_selected(s);
	}
	s->run(s);
}

/* The command is over: the UID list is packed, and the parser goes too
 * (when nothing of the next command is in it), so an idle session holds
 * none. */
static void cmd_clear(struct imap_session *s)
{
	s->cmd = NULL;
	imap_uids_pack(s);
	if (s->parser && imap_parser_release(s->parser))
		imap_parser_free(&s->parser);
}

static void job_finish(struct imap_session *s)
{
	s->busy = false;
	cmd_clear(s);
	if (s->c)
		conn_resume(s->c);
}

static void job_done(struct work *w)
{
	struct imap_session *s = container_of(w, struct imap_session, work);
	s->in_flight = false;
	s->in_cb++;
	if (!s->closed && s->done)
		s->done(s);
	if (!s->closed && s->out.len)
		session_write(s, s->out.data, s->out.len);
	/* An idle session owns no output buffer; a multi-step command keeps
	 * it between steps unless it grew large. */
	if (!s->more || s->out.cap > IMAP_STEP_BYTES * 2)
		buf_cleanup(&s->out);
	else
		buf_reset(&s->out);
	if (!s->closed && s->fatal) {
		imap_reply(s, "* BYE internal error\r\n");
		conn_close(s->c);
		s->more = false;
	}
	if (s->closed || !s->more) {
		s->more = false;
		job_finish(s);
	} else if (!s->c || conn_out_pending(s->c) == 0) {
		/* Nothing waiting to drain: go on at once. */
		s->in_flight = true;
		loop_post_work(s->loop, &s->work, job_run, job_done);
	}
	/* else: on_drain posts the next step */
	s->in_cb--;
	session_maybe_free(s);
}

void imap_post(struct imap_session *s, void (*run)(struct imap_session *s),
	       void (*done)(struct imap_session *s))
{
	s->busy = true;
	s->run = run;
	s->done = done;
	s->more = false;
	s->fatal = false;
	buf_reset(&s->out);
	conn_pause(s->c);
	s->in_flight = true;
	loop_post_work(s->loop, &s->work, job_run, job_done);
}

static void on_drain(struct conn *c)
{
	struct imap_session *s = conn_user(c);
	if (s->busy && s->more && s->c && !s->in_flight) {
		s->in_flight = true;
		loop_post_work(s->loop, &s->work, job_run, job_done);
	}
}

/* ---- authentication -------------------------------------------------------- */

static void auth_run(struct imap_session *s)
{
	struct user_info u;
	enum storage_status st = ST_OK;
	const char *err = NULL;
	bool known = s->auth_sh &&
		     store_user_get(s->auth_sh, s->auth_user, &u, &st, &err) == 0 &&
		     u.pwhash[0] != '\0';
	if (!known && st != ST_OK && st != ST_NOT_FOUND)
		s->auth_broken = true;
	if (known) {
		int r = pwhash_verify(u.pwhash, s->auth_pass, s->auth_pass_len);
		s->auth_ok = r == 1 && u.enabled;
		if (r < 0)
			s->auth_broken = true;
		explicit_bzero(u.pwhash, sizeof(u.pwhash));
	} else {
		pwhash_dummy_verify(s->auth_pass, s->auth_pass_len);
		s->auth_ok = false;
	}
}

/* Enter the authenticated state as `user` (canonical) of shard sh. */
static void login_complete(struct imap_session *s, const char *user, struct shard *sh)
{
	free(s->user);
	s->user = xstrdup(user);
	s->sh = sh;
	enter_state(s, IMAP_STATE_AUTH);
	if (s->parser) {
		struct imap_limits lim = session_limits(s, true);
		imap_parser_set_limits(s->parser, &lim);
		struct imap_literal_sink sink = imap_append_sink_ops;
		sink.ctx = s;
		imap_parser_set_sink(s->parser, &sink);
	}
	if (s->c)
		conn_set_idle_timeout(s->c, IMAP_IDLE_AUTH_MS);
}

static void auth_done(struct imap_session *s)
{
	explicit_bzero(s->auth_pass, s->auth_pass_len);
	free(s->auth_pass);
	s->auth_pass = NULL;
	s->auth_pass_len = 0;
	char q[300];
	log_quote_cstr(q, sizeof(q), s->auth_user);
	if (!s->auth_ok) {
		s->auth_failures++;
		s->errors++;
		LOG_INFO("imap", s->id, "login_failed", "user=%s mech=%s reason=%s", q, s->auth_mech,
			 s->auth_broken ? "storage" : "credentials");
		if (s->auth_broken)
			imap_reply(s, "%s NO [UNAVAILABLE] Authentication temporarily unavailable\r\n",
				   s->tag);
		else
			imap_reply(s, "%s NO [AUTHENTICATIONFAILED] Authentication failed\r\n",
				   s->tag);
		auth_user_free(s);
		if (s->auth_failures >= IMAP_MAX_AUTH_FAILURES) {
			imap_reply(s, "* BYE too many authentication failures\r\n");
			if (s->c)
				conn_close(s->c);
		} else {
			too_many_errors(s);
		}
		return;
	}
	login_complete(s, s->auth_user, s->auth_sh);
	auth_user_free(s);
	LOG_INFO("imap", s->id, "login", "user=%s mech=%s", q, s->auth_mech);
	char caps[IMAP_CAPS_MAX];
	imap_reply(s, "%s OK [CAPABILITY %s] Logged in\r\n", s->tag, caps_str(s, caps));
}

/* Takes the credentials (copied); the caller wipes its own. */
static void start_auth(struct imap_session *s, const char *mech, struct view user,
		       struct view pass)
{
	s->auth_mech = mech;
	if (!s->auth_user)
		s->auth_user = xmalloc(AUTH_USER_MAX);
	s->auth_ok = false;
	s->auth_broken = false;
	char login[256];
	imap_view_cstr(user, login, sizeof(login));
	s->auth_sh = NULL;
	if (user.len < sizeof(login) && memchr(user.ptr, '\0', user.len) == NULL)
		s->auth_sh = node_user_shard(s->node, login, s->auth_user, AUTH_USER_MAX);
	if (!s->auth_sh)
		snprintf(s->auth_user, AUTH_USER_MAX, "%s", login);
	explicit_bzero(login, sizeof(login));
	s->auth_pass_len = pass.len;
	s->auth_pass = xmalloc(pass.len + 1);
	memcpy(s->auth_pass, pass.ptr, pass.len);
	s->auth_pass[pass.len] = '\0';
	imap_post(s, auth_run, auth_done);
	/* The login needs nothing more of the command (tag and credentials
	 * are copied): its memory, the password token included, goes now
	 * rather than after the password hashing queued behind others. */
	cmd_clear(s);
}

static int b64_val(uint8_t ch)
{
	if (ch >= 'A' && ch <= 'Z')
		return ch - 'A';
	if (ch >= 'a' && ch <= 'z')
		return ch - 'a' + 26;
	if (ch >= '0' && ch <= '9')
		return ch - '0' + 52;
	if (ch == '+')
		return 62;
	if (ch == '/')
		return 63;
	return -1;
}

/* Strict base64 into out (room for in.len * 3 / 4 + 3). Returns the length
 * or -1. */
static ssize_t b64_decode(struct view in, uint8_t *out)
{
	if (in.len % 4 != 0)
		return -1;
	size_t o = 0;
	for (size_t i = 0; i < in.len; i += 4) {
		int v[4];
		int pad = 0;
		for (int k = 0; k < 4; k++) {
			uint8_t ch = in.ptr[i + (size_t)k];
			if (ch == '=' && i + 4 == in.len && k >= 2) {
				v[k] = 0;
				pad++;
				continue;
			}
			if (pad)
				return -1;
			v[k] = b64_val(ch);
			if (v[k] < 0)
				return -1;
		}
		uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
			     (uint32_t)v[3];
		out[o++] = (uint8_t)(w >> 16);
		if (pad < 2)
			out[o++] = (uint8_t)(w >> 8);
		if (pad < 1)
			out[o++] = (uint8_t)w;
	}
	return (ssize_t)o;
}

/* SASL PLAIN: [authzid] NUL authcid NUL passwd. */
static void auth_plain(struct imap_session *s, struct view b64)
{
	size_t cap = b64.len / 4 * 3 + 3;
	uint8_t *raw = xmalloc(cap);
	ssize_t n = b64_decode(b64, raw);
	const uint8_t *nul1 = n > 0 ? memchr(raw, '\0', (size_t)n) : NULL;
	const uint8_t *nul2 =
		nul1 ? memchr(nul1 + 1, '\0', (size_t)(raw + n - (nul1 + 1))) : NULL;
	if (!nul2) {
		if (n > 0)
			explicit_bzero(raw, (size_t)n);
		free(raw);
		imap_bad(s, "Invalid SASL PLAIN response");
		return;
	}
	struct view authz = view_make(raw, (size_t)(nul1 - raw));
	struct view authc = view_make(nul1 + 1, (size_t)(nul2 - nul1 - 1));
	struct view pass = view_make(nul2 + 1, (size_t)(raw + n - (nul2 + 1)));
	if (authz.len && (authz.len != authc.len || memcmp(authz.ptr, authc.ptr, authc.len) != 0)) {
		/* No proxy authorisation here: fail like a wrong password. */
		pass = view_make("", 0);
		authc = view_make("", 0);
	}
	start_auth(s, "plain", authc, pass);
	explicit_bzero(raw, (size_t)n);
	free(raw);
}

static void cmd_authenticate(struct imap_session *s)
{
	const struct imap_command *cmd = s->cmd;
	if (!view_eq_nocase(cmd->u.authenticate.mechanism, "PLAIN")) {
		imap_reply(s, "%s NO [CANNOT] Unsupported authentication mechanism\r\n", s->tag);
		return;
	}
	if (cmd->u.authenticate.has_ir) {
		auth_plain(s, cmd->u.authenticate.ir);
		return;
	}
	s->sasl_wait = true;
	imap_reply(s, "+ \r\n");
}

/* The client's line after "+ ": base64, or "*" to cancel. */
static ssize_t sasl_line(struct imap_session *s, const uint8_t *data, size_t len)
{
	const uint8_t *lf = memchr(data, '\n', MIN(len, (size_t)IMAP_SASL_LINE_MAX));
	if (!lf) {
		if (len >= IMAP_SASL_LINE_MAX) {
			imap_reply(s, "* BYE SASL response too long\r\n");
			conn_close(s->c);
			return (ssize_t)len;
		}
		return 0;
	}
	size_t consumed = (size_t)(lf - data) + 1;
	size_t l = (size_t)(lf - data);
	if (l && data[l - 1] == '\r')
		l--;
	s->sasl_wait = false;
	/* The line is a copy of the peer's input the loop keeps: we cannot
	 * wipe it, but we never keep it. */
	if (l == 1 && data[0] == '*')
		imap_bad(s, "Authentication cancelled");
	else
		auth_plain(s, view_make(data, l));
	return (ssize_t)consumed;
}

/* ---- simple commands --------------------------------------------------------- */

static void cmd_enable(struct imap_session *s)
{
	const struct imap_command *cmd = s->cmd;
	char list[128] = "";
	for (size_t i = 0; i < cmd->u.enable.count; i++) {
		struct view cap = cmd->u.enable.caps[i];
		if (view_eq_nocase(cap, "CONDSTORE") || view_eq_nocase(cap, "QRESYNC")) {
			/* QRESYNC implies CONDSTORE (RFC 7162 3.2.3) */
			bool qr = view_eq_nocase(cap, "QRESYNC");
			const char *name = qr ? " QRESYNC" : " CONDSTORE";
			if (!strstr(list, name))
				strcat(list, name);
			s->condstore = true;
			s->qresync = s->qresync || qr;
			continue;
		}
		if (view_eq_nocase(cap, "IMAP4rev2") && !s->rev2) {
			s->rev2 = true;
			strcat(list, " IMAP4rev2");
		} else if (view_eq_nocase(cap, "UTF8=ACCEPT") && !strstr(list, "UTF8")) {
			strcat(list, " UTF8=ACCEPT");
		} else {
			continue;
		}
		s->utf8 = true;
		if (s->parser)
			imap_parser_set_utf8(s->parser, true);
	}
	imap_reply(s, "* ENABLED%s\r\n%s OK Enabled\r\n", list, s->tag);
}

static void reply_synced(struct imap_session *s, const char *text);

static void cmd_id(struct imap_session *s)
{
	char *t = NULL;
	if (asprintf(&t, "* ID (\"name\" \"mailcluster\" \"version\" \"0.1\")\r\n%s OK ID completed\r\n",
		     s->tag) < 0)
		abort();
	reply_synced(s, t);
	free(t);
}

/* RFC 4978: the tagged OK goes out uncompressed, everything after it is
 * compressed both ways (the loop does the rest). */
static void cmd_compress(struct imap_session *s)
{
	if (!view_eq_nocase(s->cmd->u.compress.mechanism, "DEFLATE")) {
		imap_bad(s, "Unknown compression mechanism");
		return;
	}
	if (conn_compress_active(s->c)) {
		imap_reply(s, "%s NO [COMPRESSIONACTIVE] DEFLATE already active\r\n", s->tag);
		return;
	}
	imap_reply(s, "%s OK DEFLATE active\r\n", s->tag);
	if (conn_compress_start(s->c) < 0)
		conn_close(s->c); /* only when closing anyway */
}

static void cmd_logout(struct imap_session *s)
{
	enter_state(s, IMAP_STATE_LOGOUT);
	imap_reply(s, "* BYE Logging out\r\n%s OK Logout completed\r\n", s->tag);
	LOG_INFO("imap", s->id, "logout", NULL);
	conn_close(s->c);
}

/* ---- mailbox management ----------------------------------------------------- */

static void status_write(struct imap_session *s, enum storage_status st, const char *what)
{
	switch (st) {
	case ST_NOT_FOUND:
		buf_printf(&s->out, "%s NO [NONEXISTENT] Mailbox does not exist\r\n", s->tag);
		break;
	case ST_EXISTS:
		buf_printf(&s->out, "%s NO [ALREADYEXISTS] Mailbox already exists\r\n", s->tag);
		break;
	case ST_INVALID:
		buf_printf(&s->out, "%s NO [CANNOT] %s not possible\r\n", s->tag, what);
		break;
	case ST_OVER_QUOTA:
		buf_printf(&s->out, "%s NO [OVERQUOTA] Quota exceeded\r\n", s->tag);
		break;
	default:
		buf_printf(&s->out, "%s NO [SERVERBUG] Storage error\r\n", s->tag);
		break;
	}
}

static void name_of(struct view v, char *out)
{
	imap_view_cstr(v, out, MAILBOX_NAME_MAX);
	/* "a/b/" is "a/b" (RFC 9051 6.3.4) */
	size_t n = strlen(out);
	while (n > 1 && out[n - 1] == '/')
		out[--n] = '\0';
}

static bool name_ok(struct view v)
{
	return v.len > 0 && v.len < MAILBOX_NAME_MAX && memchr(v.ptr, '\0', v.len) == NULL;
}

static void create_run(struct imap_session *s)
{
	const struct imap_command *cmd = s->cmd;
	char name[MAILBOX_NAME_MAX];
	name_of(cmd->u.create.mailbox, name);
	uint32_t use = 0;
	for (size_t i = 0; i < cmd->u.create.use_count; i++) {
		struct view u = cmd->u.create.use[i];
		if (view_eq_nocase(u, "\\Sent"))
			use |= SPECIAL_SENT;
		else if (view_eq_nocase(u, "\\Drafts"))
			use |= SPECIAL_DRAFTS;
		else if (view_eq_nocase(u, "\\Trash"))
			use |= SPECIAL_TRASH;
		else if (view_eq_nocase(u, "\\Junk"))
			use |= SPECIAL_JUNK;
		else if (view_eq_nocase(u, "\\Archive"))
			use |= SPECIAL_ARCHIVE;
		else {
			buf_printf(&s->out, "%s NO [USEATTR] Unsupported special use\r\n", s->tag);
			return;
		}
	}
	struct mailbox_info mi;
	enum storage_status st = ST_OK;
	const char *err = NULL;
	if (store_mailbox_create(s->sh, s->user, name, use, &mi, &st, &err) < 0)
		status_write(s, st, "CREATE");
	else
		buf_printf(&s->out, "%s OK CREATE completed\r\n", s->tag);
}

static void delete_run(struct imap_session *s)
{
	char name[MAILBOX_NAME_MAX];
	name_of(s->cmd->u.mailbox, name);
	enum storage_status st = ST_OK;
	const char *err = NULL;
	if (s->state == IMAP_STATE_SELECTED && strcmp(name, s->sel_name) == 0) {
		buf_printf(&s->out, "%s NO [INUSE] Mailbox is selected\r\n", s->tag);
		return;
	}
	if (store_mailbox_delete(s->sh, s->user, name, &st, &err) < 0)
		status_write(s, st, "DELETE");
	else
		buf_printf(&s->out, "%s OK DELETE completed\r\n", s->tag);
}

static void rename_run(struct imap_session *s)
{
	char from[MAILBOX_NAME_MAX], to[MAILBOX_NAME_MAX];
	name_of(s->cmd->u.rename.from, from);
	name_of(s->cmd->u.rename.to, to);
	enum storage_status st = ST_OK;
	const char *err = NULL;
	if (store_mailbox_rename(s->sh, s->user, from, to, &st, &err) < 0)
		status_write(s, st, "RENAME");
	else
		buf_printf(&s->out, "%s OK RENAME completed\r\n", s->tag);
}

static void subscribe_run(struct imap_session *s)
{
	char name[MAILBOX_NAME_MAX];
	name_of(s->cmd->u.mailbox, name);
	bool on = s->cmd->cmd == IMAP_CMD_SUBSCRIBE;
	enum storage_status st = ST_OK;
	const char *err = NULL;
	if (store_mailbox_subscribe(s->sh, s->user, name, on, &st, &err) < 0)
		status_write(s, st, on ? "SUBSCRIBE" : "UNSUBSCRIBE");
	else
		buf_printf(&s->out, "%s OK %s completed\r\n", s->tag,
			   on ? "SUBSCRIBE" : "UNSUBSCRIBE");
}

/* "* STATUS name (...)" with the asked items, in RFC 9051 order. DELETED
 * and DELETED-STORAGE read the mailbox's message records. -1 (nothing
 * written) on a storage error. */
static int put_status(struct imap_session *s, const struct mailbox_info *mi, unsigned it)
{
	uint32_t ndel = 0;
	uint64_t del_bytes = 0;
	const char *err = NULL;
	if ((it & (IMAP_STATUS_DELETED | IMAP_STATUS_DELETED_STORAGE)) &&
	    store_mailbox_deleted(s->sh, mi->id, &ndel, &del_bytes, &err) < 0)
		return -1;
	buf_printf(&s->out, "* STATUS ");
	imap_put_mailbox(s, &s->out, mi->name);
	buf_printf(&s->out, " (");
	const char *sp = "";
#define STATUS_ITEM(bit, fmt, val)                                             \
	do {                                                                   \
		if (it & (bit)) {                                              \
			buf_printf(&s->out, "%s" fmt, sp, val);                \
			sp = " ";                                              \
		}                                                              \
	} while (0)
	STATUS_ITEM(IMAP_STATUS_MESSAGES, "MESSAGES %u", mi->messages);
	STATUS_ITEM(IMAP_STATUS_UIDNEXT, "UIDNEXT %u", mi->uidnext);
	STATUS_ITEM(IMAP_STATUS_UIDVALIDITY, "UIDVALIDITY %u", mi->uidvalidity);
	STATUS_ITEM(IMAP_STATUS_UNSEEN, "UNSEEN %u", mi->unseen);
	STATUS_ITEM(IMAP_STATUS_DELETED, "DELETED %u", ndel);
	STATUS_ITEM(IMAP_STATUS_SIZE, "SIZE %llu", (unsigned long long)mi->size);
	STATUS_ITEM(IMAP_STATUS_RECENT, "RECENT %u", 0u);
	STATUS_ITEM(IMAP_STATUS_HIGHESTMODSEQ, "HIGHESTMODSEQ %llu",
		    (unsigned long long)mi->highestmodseq);
	STATUS_ITEM(IMAP_STATUS_APPENDLIMIT, "APPENDLIMIT %llu",
		    (unsigned long long)node_max_message(s->node));
	STATUS_ITEM(IMAP_STATUS_DELETED_STORAGE, "DELETED-STORAGE %llu",
		    (unsigned long long)del_bytes);
#undef STATUS_ITEM
	buf_printf(&s->out, ")\r\n");
	return 0;
}

static void status_run(struct imap_session *s)
{
	const struct imap_command *cmd = s->cmd;
	char name[MAILBOX_NAME_MAX];
	name_of(cmd->u.status.mailbox, name);
	struct mailbox_info mi;
	enum storage_status st = ST_OK;
	const char *err = NULL;
	if (store_mailbox_get(s->sh, s->user, name, &mi, &st, &err) < 0) {
		status_write(s, st, "STATUS");
		return;
	}
	if (put_status(s, &mi, cmd->u.status.items) < 0)
		buf_printf(&s->out, "%s NO [SERVERBUG] Storage error\r\n", s->tag);
	else
		buf_printf(&s->out, "%s OK STATUS completed\r\n", s->tag);
}

/* ---- LIST, LSUB (LIST-EXTENDED, LIST-STATUS, SPECIAL-USE) ------------------- */

#define LIST_MAX_PATTERNS 256

/* Does name match pat? '*' matches anything, '%' anything but the
 * delimiter. Run as a set of pattern positions advanced one name byte at a
 * time, so any pattern costs at most strlen(pat) * strlen(name) steps (a
 * backtracking matcher is exponential in the number of wildcards). */
static bool list_match(const char *pat, const char *name, bool nocase)
{
	size_t pl = strlen(pat);
	uint8_t a[2 * MAILBOX_NAME_MAX + 2], b[2 * MAILBOX_NAME_MAX + 2];
	if (pl > 2 * MAILBOX_NAME_MAX)
		return false;
	uint8_t *cur = a, *next = b;
	memset(cur, 0, pl + 1);
	cur[0] = 1;
	for (const char *n = name;; n++) {
		/* a wildcard may match nothing */
		for (size_t p = 0; p < pl; p++)
			if (cur[p] && (pat[p] == '*' || pat[p] == '%'))
				cur[p + 1] = 1;
		if (!*n)
			return cur[pl];
		memset(next, 0, pl + 1);
		bool any = false;
		char c = nocase ? (char)tolower((unsigned char)*n) : *n;
		for (size_t p = 0; p < pl; p++) {
			if (!cur[p])
				continue;
			char q = nocase ? (char)tolower((unsigned char)pat[p]) : pat[p];
			if (q == '*' || (q == '%' && *n != '/'))
				next[p] = 1;
			else if (q == c && q != '%')
				next[p + 1] = 1;
			else
				continue;
			any = true;
		}
		if (!any)
			return false;
		uint8_t *t = cur;
		cur = next;
		next = t;
	}
}

/* Names in hierarchy order: the delimiter sorts before every other byte,
 * so a mailbox's descendants directly follow it. */
static int list_cmp_names(const char *x, const char *y)
{
	for (;; x++, y++) {
		unsigned a = (unsigned char)*x, b = (unsigned char)*y;
		if (a == '/')
			a = 1;
		if (b == '/')
			b = 1;
		if (a != b || !a)
			return (int)a - (int)b;
	}
}

struct list_ent {
	char *name;                    /* owned for levels, else the box's */
	const struct mailbox_info *mb; /* NULL: a level of hierarchy only */
	bool match;                    /* matches a pattern */
	bool sel;                      /* meets the selection criteria */
};

static int list_ent_cmp(const void *x, const void *y)
{
	return list_cmp_names(((const struct list_ent *)x)->name,
			      ((const struct list_ent *)y)->name);
}

/* Is d below a in the hierarchy? */
static bool list_is_desc(const char *d, const char *a)
{
	size_t n = strlen(a);
	return strncmp(d, a, n) == 0 && d[n] == '/';
}

static void put_special_use(struct buf *b, uint32_t use, const char **sp)
{
	static const struct {
		uint32_t bit;
		const char *name;
	} su[] = {
		{ SPECIAL_ALL, "\\All" },	  { SPECIAL_ARCHIVE, "\\Archive" },
		{ SPECIAL_DRAFTS, "\\Drafts" },	  { SPECIAL_FLAGGED, "\\Flagged" },
		{ SPECIAL_JUNK, "\\Junk" },	  { SPECIAL_SENT, "\\Sent" },
		{ SPECIAL_TRASH, "\\Trash" },
	};
	for (size_t k = 0; k < ARRAY_LEN(su); k++) {
		if (use & su[k].bit) {
			buf_printf(b, "%s%s", *sp, su[k].name);
			*sp = " ";
		}
	}
}

static void list_run(struct imap_session *s)
{
	const struct imap_command *cmd = s->cmd;
	bool lsub = cmd->cmd == IMAP_CMD_LSUB;
	const char *what = lsub ? "LSUB" : "LIST";
	unsigned sel = cmd->u.list.select_opts, ret = cmd->u.list.return_opts;
	if (lsub)
		sel = IMAP_LIST_SEL_SUBSCRIBED;
	bool recursive = lsub || (sel & IMAP_LIST_SEL_RECURSIVEMATCH);
	/* LIST "" "" asks for the delimiter; not so in the extended syntax
	 * (RFC 5258 3). */
	if (!cmd->u.list.extended && cmd->u.list.pattern_count == 1 &&
	    cmd->u.list.patterns[0].len == 0) {
		buf_printf(&s->out, "* %s (\\Noselect) \"/\" \"\"\r\n%s OK %s completed\r\n", what,
			   s->tag, what);
		return;
	}
	struct mailbox_info *boxes = NULL;
	size_t nb = 0;
	const char *err = NULL;
	if (store_mailbox_list(s->sh, s->user, &boxes, &nb, &err) < 0) {
		buf_printf(&s->out, "%s NO [SERVERBUG] Storage error\r\n", s->tag);
		return;
	}
	/* The mailboxes, and every level above them that is no mailbox
	 * ("a" when only "a/b" exists). */
	size_t cap = nb + 8, n = 0;
	struct list_ent *e = xcalloc(cap, sizeof(*e));
	for (size_t i = 0; i < nb; i++)
		e[n++] = (struct list_ent){ .name = boxes[i].name, .mb = &boxes[i] };
	qsort(e, n, sizeof(*e), list_ent_cmp);
	size_t n_boxes = n;
	for (size_t i = 0; i < n_boxes; i++) {
		for (const char *sl = strchr(e[i].name, '/'); sl; sl = strchr(sl + 1, '/')) {
			char pre[MAILBOX_NAME_MAX];
			snprintf(pre, sizeof(pre), "%.*s", (int)(sl - e[i].name), e[i].name);
			struct list_ent key = { .name = pre };
			if (bsearch(&key, e, n_boxes, sizeof(*e), list_ent_cmp))
				continue;
			bool dup = false;
			for (size_t k = n_boxes; k < n && !dup; k++)
				dup = strcmp(e[k].name, pre) == 0;
			if (dup)
				continue;
			if (n == cap) {
				cap *= 2;
				e = xrealloc(e, cap * sizeof(*e));
			}
			e[n++] = (struct list_ent){ .name = xstrdup(pre) };
		}
	}
	qsort(e, n, sizeof(*e), list_ent_cmp);
	char ref[MAILBOX_NAME_MAX];
	imap_view_cstr(cmd->u.list.reference, ref, sizeof(ref));
	for (size_t i = 0; i < n; i++) {
		const struct mailbox_info *mb = e[i].mb;
		for (size_t k = 0; k < cmd->u.list.pattern_count && !e[i].match; k++) {
			char pat[2 * MAILBOX_NAME_MAX + 1];
			snprintf(pat, sizeof(pat), "%s%.*s", ref, (int)cmd->u.list.patterns[k].len,
				 (const char *)cmd->u.list.patterns[k].ptr);
			e[i].match = list_match(pat, e[i].name, strcmp(e[i].name, "INBOX") == 0);
		}
		if (sel & (IMAP_LIST_SEL_SUBSCRIBED | IMAP_LIST_SEL_SPECIAL_USE))
			e[i].sel = mb && (!(sel & IMAP_LIST_SEL_SUBSCRIBED) || mb->subscribed) &&
				   (!(sel & IMAP_LIST_SEL_SPECIAL_USE) || mb->special_use);
		else
			e[i].sel = true;
	}
	for (size_t i = 0; i < n; i++) {
		const struct mailbox_info *mb = e[i].mb;
		if (!e[i].match)
			continue;
		bool children = i + 1 < n && list_is_desc(e[i + 1].name, e[i].name);
		/* RECURSIVEMATCH (and LSUB's rule for '%'): a name that does
		 * not meet the criteria is listed when a descendant that the
		 * patterns do not list does; a name that does gets CHILDINFO
		 * when any descendant does (RFC 5258 3.5). */
		bool desc_sel = false, desc_sel_hidden = false;
		for (size_t k = i + 1; recursive && k < n && list_is_desc(e[k].name, e[i].name);
		     k++) {
			if (e[k].sel) {
				desc_sel = true;
				desc_sel_hidden = desc_sel_hidden || !e[k].match;
			}
		}
		if (!e[i].sel && !desc_sel_hidden)
			continue;
		bool childinfo = !lsub && recursive && desc_sel;
		buf_printf(&s->out, "* %s (", what);
		const char *sp = "";
		if (lsub) {
			if (!e[i].sel)
				buf_printf(&s->out, "\\Noselect");
		} else {
			if (!mb) {
				buf_printf(&s->out, "%s ", (sel & IMAP_LIST_SEL_SUBSCRIBED)
								   ? "\\NonExistent"
								   : "\\Noselect");
			}
			buf_printf(&s->out, "%s", children ? "\\HasChildren" : "\\HasNoChildren");
			sp = " ";
			if (mb && mb->subscribed &&
			    ((ret & IMAP_LIST_RET_SUBSCRIBED) || (sel & IMAP_LIST_SEL_SUBSCRIBED))) {
				buf_printf(&s->out, " \\Subscribed");
			}
			if (mb)
				put_special_use(&s->out, mb->special_use, &sp);
		}
		buf_printf(&s->out, ") \"/\" ");
		imap_put_mailbox(s, &s->out, e[i].name);
		if (childinfo)
			buf_printf(&s->out, " (\"CHILDINFO\" (\"SUBSCRIBED\"))");
		buf_printf(&s->out, "\r\n");
		/* LIST-STATUS (RFC 5819): for selectable mailboxes only; one
		 * whose status cannot be read is left out. */
		if (mb && (ret & IMAP_LIST_RET_STATUS))
			put_status(s, mb, cmd->u.list.status_items);
	}
	for (size_t i = 0; i < n; i++)
		if (!e[i].mb)
			free(e[i].name);
	free(e);
	free(boxes);
	buf_printf(&s->out, "%s OK %s completed\r\n", s->tag, what);
}

static void cmd_list(struct imap_session *s)
{
	const struct imap_command *cmd = s->cmd;
	if (cmd->u.list.reference.len >= MAILBOX_NAME_MAX) {
		imap_bad(s, "Reference too long");
		return;
	}
	if (cmd->u.list.pattern_count > LIST_MAX_PATTERNS) {
		imap_bad(s, "Too many patterns");
		return;
	}
	for (size_t k = 0; k < cmd->u.list.pattern_count; k++) {
		if (cmd->u.list.patterns[k].len >= MAILBOX_NAME_MAX) {
			imap_bad(s, "Pattern too long");
			return;
		}
	}
	if ((cmd->u.list.return_opts & IMAP_LIST_RET_STATUS) &&
	    (cmd->u.list.status_items & IMAP_STATUS_MAILBOXID)) {
		imap_bad(s, "MAILBOXID is not supported");
		return;
	}
	if ((cmd->u.list.return_opts & IMAP_LIST_RET_STATUS) &&
	    (cmd->u.list.status_items & IMAP_STATUS_HIGHESTMODSEQ))
		imap_condstore_on(s); /* a STATUS HIGHESTMODSEQ (RFC 7162 3.1) */
	imap_post(s, list_run, NULL);
}

/* ---- QUOTA (RFC 9208) ---------------------------------------------------------- */

/* One quota root, "", for all of a user's mailboxes; its one resource is
 * STORAGE (KiB; usage rounded up, limit down). A user without a quota has
 * no quota root. */
static void put_quota(struct buf *b, const struct user_info *u)
{
	buf_printf(b, "* QUOTA \"\" (STORAGE %llu %llu)\r\n",
		   (unsigned long long)((u->used_bytes + 1023) / 1024),
		   (unsigned long long)(u->quota_bytes / 1024));
}

static void quota_run(struct imap_session *s)
{
	const struct imap_command *cmd = s->cmd;
	struct user_info u;
	enum storage_status st = ST_OK;
	const char *err = NULL;
	struct mailbox_info mi;
	if (cmd->cmd == IMAP_CMD_GETQUOTAROOT) {
		char name[MAILBOX_NAME_MAX];
		name_of(cmd->u.mailbox, name);
		if (store_mailbox_get(s->sh, s->user, name, &mi, &st, &err) < 0) {
			status_write(s, st, "GETQUOTAROOT");
			return;
		}
	}
	if (store_user_get(s->sh, s->user, &u, &st, &err) < 0) {
		buf_printf(&s->out, "%s NO [SERVERBUG] Storage error\r\n", s->tag);
		return;
	}
	explicit_bzero(u.pwhash, sizeof(u.pwhash));
	if (cmd->cmd == IMAP_CMD_GETQUOTAROOT) {
		buf_printf(&s->out, "* QUOTAROOT ");
		imap_put_mailbox(s, &s->out, mi.name);
		if (u.quota_bytes) {
			buf_printf(&s->out, " \"\"\r\n");
			put_quota(&s->out, &u);
		} else {
			buf_printf(&s->out, "\r\n");
		}
		buf_printf(&s->out, "%s OK GETQUOTAROOT completed\r\n", s->tag);
		return;
	}
	if (cmd->u.getquota.root.len != 0 || !u.quota_bytes) {
		buf_printf(&s->out, "%s NO [NONEXISTENT] No such quota root\r\n", s->tag);
		return;
	}
	put_quota(&s->out, &u);
	buf_printf(&s->out, "%s OK GETQUOTA completed\r\n", s->tag);
}

/* ---- IDLE ---------------------------------------------------------------------- */

static void idle_sync_run(struct imap_session *s)
{
	s->sync_expunge = true;
	imap_sync_selected(s);
}

static void idle_sync_done(struct imap_session *s)
{
	if (s->idling && s->c)
		timer_start(s->loop, &s->idle_timer, IMAP_IDLE_POLL_MS);
}

static void idle_tick(struct timer *t)
{
	struct imap_session *s = t->arg;
	if (!s->idling || !s->c)
		return;
	uint64_t now = store_mailbox_changes(s->sh, s->sel_id);
	if (s->busy || (now == s->sync_seen && s->n_pend == 0)) {
		timer_start(s->loop, t, IMAP_IDLE_POLL_MS);
		return;
	}
	/* The sync reads the counter before the store: a change during it
	 * is seen at the next tick. */
	imap_post(s, idle_sync_run, idle_sync_done);
}

static void cmd_idle(struct imap_session *s)
{
	s->idling = true;
	imap_reply(s, "+ idling\r\n");
	if (s->state == IMAP_STATE_SELECTED) {
		/* Anything since the last command (held-back expunges too) is
		 * reported at the first tick. */
		timer_start(s->loop, &s->idle_timer, 0);
	}
}

/* Input while idling: only "DONE" is expected. */
static ssize_t idle_input(struct imap_session *s, const uint8_t *data, size_t len)
{
	size_t consumed = 0;
	enum imap_result r = imap_idle_done(data, len, &consumed);
	if (r == IMAP_MORE)
		return 0;
	s->idling = false;
	if (timer_armed(&s->idle_timer))
		timer_stop(s->loop, &s->idle_timer);
	if (r == IMAP_OK) {
		imap_reply(s, "%s OK IDLE terminated\r\n", s->tag);
	} else if (r == IMAP_BAD) {
		imap_bad(s, "Expected DONE");
	} else {
		imap_reply(s, "* BYE line too long\r\n");
		conn_close(s->c);
		return (ssize_t)len;
	}
	return (ssize_t)consumed;
}

/* ---- dispatch ---------------------------------------------------------------- */

enum cmd_states {
	ANY = 7,
	NOTAUTH = 1,
	AUTH_ONLY = 2,
	AUTHED = 6, /* authenticated or selected */
	SELECTED = 4,
};

static unsigned state_bit(enum imap_state st)
{
	switch (st) {
	case IMAP_STATE_NOT_AUTH: return 1;
	case IMAP_STATE_AUTH: return 2;
	case IMAP_STATE_SELECTED: return 4;
	default: return 0;
	}
}

static unsigned cmd_allowed(enum imap_cmd c)
{
	switch (c) {
	case IMAP_CMD_CAPABILITY:
	case IMAP_CMD_NOOP:
	case IMAP_CMD_LOGOUT:
	case IMAP_CMD_ID:
		return ANY;
	case IMAP_CMD_IDLE:
	case IMAP_CMD_COMPRESS:
		return AUTHED;
	case IMAP_CMD_LOGIN:
	case IMAP_CMD_AUTHENTICATE:
		return NOTAUTH;
	case IMAP_CMD_ENABLE:
		return AUTH_ONLY; /* RFC 9051 6.3.1 */
	case IMAP_CMD_SELECT:
	case IMAP_CMD_EXAMINE:
	case IMAP_CMD_CREATE:
	case IMAP_CMD_DELETE:
	case IMAP_CMD_RENAME:
	case IMAP_CMD_SUBSCRIBE:
	case IMAP_CMD_UNSUBSCRIBE:
	case IMAP_CMD_LIST:
	case IMAP_CMD_LSUB:
	case IMAP_CMD_NAMESPACE:
	case IMAP_CMD_STATUS:
	case IMAP_CMD_APPEND:
	case IMAP_CMD_GETQUOTA:
	case IMAP_CMD_GETQUOTAROOT:
	case IMAP_CMD_SETQUOTA:
		return AUTHED;
	case IMAP_CMD_CHECK:
	case IMAP_CMD_CLOSE:
	case IMAP_CMD_UNSELECT:
	case IMAP_CMD_EXPUNGE:
	case IMAP_CMD_SEARCH:
	case IMAP_CMD_FETCH:
	case IMAP_CMD_STORE:
	case IMAP_CMD_COPY:
	case IMAP_CMD_MOVE:
	case IMAP_CMD_SORT:
	case IMAP_CMD_THREAD:
		return SELECTED;
	default:
		return 0;
	}
}

/* May this command report expunges made by others (which renumber)? Not
 * during FETCH, STORE, SEARCH and the other commands that take sequence
 * numbers (RFC 9051 7.5.1), and not while further commands are already
 * waiting, which the client sent with the old numbering in mind (5.5),
 * unless the command is one whose purpose is to report: NOOP, CHECK,
 * EXPUNGE. */
static bool expunge_ok(const struct imap_session *s, const struct imap_command *cmd)
{
	switch (cmd->cmd) {
	case IMAP_CMD_NOOP:
	case IMAP_CMD_CHECK:
	case IMAP_CMD_EXPUNGE:
		return true;
	case IMAP_CMD_FETCH:
	case IMAP_CMD_STORE:
	case IMAP_CMD_SEARCH:
	case IMAP_CMD_COPY:
	case IMAP_CMD_MOVE:
	case IMAP_CMD_SORT:
	case IMAP_CMD_THREAD:
		if (!cmd->uid)
			return false;
		break;
	default:
		break;
	}
	return !s->pipelined;
}

/* Commands that sync the selected mailbox themselves (or leave it); every
 * other command run on the pool in the selected state syncs first. */
static bool syncs_itself(enum imap_cmd c)
{
	switch (c) {
	case IMAP_CMD_SELECT:
	case IMAP_CMD_EXAMINE:
	case IMAP_CMD_CLOSE:
	case IMAP_CMD_UNSELECT:
	case IMAP_CMD_NOOP:
	case IMAP_CMD_CHECK:
	case IMAP_CMD_FETCH:
	case IMAP_CMD_STORE:
	case IMAP_CMD_SEARCH:
	case IMAP_CMD_COPY:
	case IMAP_CMD_MOVE:
	case IMAP_CMD_EXPUNGE:
	case IMAP_CMD_IDLE:
	case IMAP_CMD_LOGOUT:
		return true;
	default:
		return false;
	}
}

static void after_sync_run(struct imap_session *s)
{
	buf_append(&s->out, s->after_sync, strlen(s->after_sync));
	free(s->after_sync);
	s->after_sync = NULL;
}

/* A reply made on the loop thread, preceded by the untagged updates when
 * the selected mailbox changed (then it goes through the pool). */
static void reply_synced(struct imap_session *s, const char *text)
{
	if (s->state == IMAP_STATE_SELECTED && s->presync &&
	    (store_mailbox_changes(s->sh, s->sel_id) != s->sync_seen ||
	     (s->n_pend && s->sync_expunge))) {
		free(s->after_sync);
		s->after_sync = xstrdup(text);
		imap_post(s, after_sync_run, NULL);
		return;
	}
	imap_reply(s, "%s", text);
}

static void dispatch(struct imap_session *s, const struct imap_command *cmd)
{
	s->cmd = cmd;
	/* Handlers resolve sequence sets on the loop thread: the UID list is
	 * expanded for the command (cmd_clear packs it again). */
	imap_uids_unpack(s);
	LOG_DEBUG("imap", s->id, "command", "name=%s uid=%d state=%s", imap_cmd_str(cmd->cmd),
		  cmd->uid ? 1 : 0, imap_state_str(s->state));
	unsigned allowed = cmd_allowed(cmd->cmd);
	s->hms_tagged = false;
	s->sync_expunge = expunge_ok(s, cmd);
	s->presync = s->state == IMAP_STATE_SELECTED && !syncs_itself(cmd->cmd);
	if (cmd->cmd != IMAP_CMD_APPEND)
		imap_append_reset(s);
	if (!allowed) {
		if (cmd->cmd == IMAP_CMD_UNKNOWN)
			imap_bad(s, "Unknown command");
		else
			imap_bad(s, "Command not supported");
		s->presync = false;
		cmd_clear(s);
		return;
	}
	if (!(allowed & state_bit(s->state))) {
		if (s->state == IMAP_STATE_NOT_AUTH)
			imap_bad(s, "Log in first");
		else if (allowed == NOTAUTH)
			imap_bad(s, "Already authenticated");
		else if (allowed == AUTH_ONLY)
			imap_bad(s, "Not valid with a mailbox selected");
		else
			imap_bad(s, "No mailbox selected");
		imap_append_reset(s);
		s->presync = false;
		cmd_clear(s);
		return;
	}
	switch (cmd->cmd) {
	case IMAP_CMD_CAPABILITY: {
		char *t = NULL, caps[IMAP_CAPS_MAX];
		if (asprintf(&t, "* CAPABILITY %s\r\n%s OK CAPABILITY completed\r\n",
			     caps_str(s, caps), s->tag) < 0)
			abort();
		reply_synced(s, t);
		free(t);
		break;
	}
	case IMAP_CMD_NOOP:
	case IMAP_CMD_CHECK:
		imap_cmd_noop(s);
		break;
	case IMAP_CMD_LOGOUT:
		cmd_logout(s);
		break;
	case IMAP_CMD_ID:
		cmd_id(s);
		break;
	case IMAP_CMD_IDLE:
		cmd_idle(s);
		break;
	case IMAP_CMD_COMPRESS:
		cmd_compress(s);
		break;
	case IMAP_CMD_LOGIN:
		start_auth(s, "login", cmd->u.login.user, cmd->u.login.pass);
		break;
	case IMAP_CMD_AUTHENTICATE:
		cmd_authenticate(s);
		break;
	case IMAP_CMD_ENABLE:
		cmd_enable(s);
		break;
	case IMAP_CMD_NAMESPACE: {
		char *t = NULL;
		if (asprintf(&t, "* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n%s OK NAMESPACE completed\r\n",
			     s->tag) < 0)
			abort();
		reply_synced(s, t);
		free(t);
		break;
	}
	case IMAP_CMD_SELECT:
	case IMAP_CMD_EXAMINE:
		if (!name_ok(cmd->u.select.mailbox)) {
			imap_bad(s, "Invalid mailbox name");
			break;
		}
		imap_cmd_select(s, cmd->cmd == IMAP_CMD_EXAMINE);
		break;
	case IMAP_CMD_CREATE:
		if (!name_ok(cmd->u.create.mailbox))
			imap_bad(s, "Invalid mailbox name");
		else
			imap_post(s, create_run, NULL);
		break;
	case IMAP_CMD_DELETE:
	case IMAP_CMD_SUBSCRIBE:
	case IMAP_CMD_UNSUBSCRIBE:
		if (!name_ok(cmd->u.mailbox))
			imap_bad(s, "Invalid mailbox name");
		else
			imap_post(s, cmd->cmd == IMAP_CMD_DELETE ? delete_run : subscribe_run, NULL);
		break;
	case IMAP_CMD_RENAME:
		if (!name_ok(cmd->u.rename.from) || !name_ok(cmd->u.rename.to))
			imap_bad(s, "Invalid mailbox name");
		else
			imap_post(s, rename_run, NULL);
		break;
	case IMAP_CMD_LIST:
	case IMAP_CMD_LSUB:
		cmd_list(s);
		break;
	case IMAP_CMD_STATUS:
		if (cmd->u.status.items & IMAP_STATUS_HIGHESTMODSEQ)
			imap_condstore_on(s);
		if (!name_ok(cmd->u.status.mailbox))
			imap_bad(s, "Invalid mailbox name");
		else if (cmd->u.status.items & IMAP_STATUS_MAILBOXID)
			imap_bad(s, "MAILBOXID is not supported");
		else
			imap_post(s, status_run, NULL);
		break;
	case IMAP_CMD_GETQUOTAROOT:
		if (!name_ok(cmd->u.mailbox))
			imap_bad(s, "Invalid mailbox name");
		else
			imap_post(s, quota_run, NULL);
		break;
	case IMAP_CMD_GETQUOTA:
		imap_post(s, quota_run, NULL);
		break;
	case IMAP_CMD_SETQUOTA: {
		char *t = NULL;
		if (asprintf(&t, "%s NO [NOPERM] Quotas are set by the administrator\r\n",
			     s->tag) < 0)
			abort();
		reply_synced(s, t);
		free(t);
		break;
	}
	case IMAP_CMD_APPEND:
		imap_cmd_append(s);
		break;
	case IMAP_CMD_CLOSE:
		imap_cmd_close(s, !s->sel_readonly);
		break;
	case IMAP_CMD_UNSELECT:
		imap_cmd_close(s, false);
		break;
	case IMAP_CMD_EXPUNGE:
		imap_cmd_expunge(s);
		break;
	case IMAP_CMD_SEARCH:
		imap_cmd_search(s);
		break;
	case IMAP_CMD_FETCH:
		imap_cmd_fetch(s);
		break;
	case IMAP_CMD_STORE:
		imap_cmd_store(s);
		break;
	case IMAP_CMD_COPY:
	case IMAP_CMD_MOVE:
		imap_cmd_copy(s, cmd->cmd == IMAP_CMD_MOVE);
		break;
	case IMAP_CMD_SORT:
		imap_cmd_sort(s);
		break;
	case IMAP_CMD_THREAD:
		imap_cmd_thread(s);
		break;
	default:
		imap_bad(s, "Command not supported");
		break;
	}
	if (!s->busy) {
		s->presync = false;
		s->hms_announce = false;
		cmd_clear(s);
	}
}

static ssize_t on_data_inner(struct imap_session *s, const uint8_t *data, size_t len)
{
	if (s->busy || s->state == IMAP_STATE_LOGOUT)
		return 0;
	if (s->sasl_wait)
		return sasl_line(s, data, len);
	if (s->idling)
		return idle_input(s, data, len);
	size_t consumed = 0;
	enum imap_result r = imap_parser_feed(session_parser(s), data, len, &consumed);
	switch (r) {
	case IMAP_MORE:
		break;
	case IMAP_LITERAL_WAIT: {
		struct imap_literal_info li = imap_parser_literal(s->parser);
		if (li.accepted && li.append) {
			/* The sink refused this message (the command's limits):
			 * answer now and forget the command, so the client sends
			 * none of it. */
			set_tag(s, imap_parser_tag(s->parser));
			if (imap_append_refused(s)) {
				imap_parser_reset(s->parser);
				cmd_clear(s);
				break;
			}
		}
		if (li.accepted) {
			imap_reply(s, "+ OK\r\n");
			break;
		}
		set_tag(s, imap_parser_tag(s->parser));
		imap_append_reset(s);
		if (li.append)
			imap_reply(s, "%s NO [TOOBIG] %s\r\n", s->tag, imap_parser_error(s->parser));
		else
			imap_bad(s, imap_parser_error(s->parser));
		break;
	}
	case IMAP_BAD:
		set_tag(s, imap_parser_tag(s->parser));
		imap_append_reset(s);
		imap_bad(s, imap_parser_error(s->parser));
		cmd_clear(s);
		break;
	case IMAP_FATAL:
		imap_append_reset(s);
		LOG_INFO("imap", s->id, "fatal", "reason=\"%s\"", imap_parser_error(s->parser));
		imap_reply(s, "* BYE %s\r\n", imap_parser_error(s->parser));
		conn_close(s->c);
		return (ssize_t)len;
	case IMAP_OK: {
		const struct imap_command *cmd = imap_parser_command(s->parser);
		set_tag(s, cmd->tag);
		s->pipelined = consumed < len;
		dispatch(s, cmd);
		break;
	}
	}
	return (ssize_t)consumed;
}

static ssize_t on_data(struct conn *c, const uint8_t *data, size_t len)
{
	struct imap_session *s = conn_user(c);
	s->in_cb++;
	ssize_t r = on_data_inner(s, data, len);
	s->in_cb--;
	if (session_maybe_free(s))
		return -1;
	return r;
}

static void on_close(struct conn *c, enum conn_close_reason why)
{
	struct imap_session *s = conn_user(c);
	LOG_INFO("imap", s->id, "close", "reason=%s state=%s errors=%u",
		 conn_close_reason_str(why), imap_state_str(s->state), s->errors);
	s->c = NULL;
	s->closed = true;
	if (s->busy && !s->in_flight)
		s->busy = false; /* a FETCH waiting for a drain that will not come */
	session_maybe_free(s);
}

static const struct conn_handler imap_handler = {
	.name = "imap",
	.on_data = on_data,
	.on_drain = on_drain,
	.on_close = on_close,
};

static struct imap_session *session_new(struct conn *c, void *node)
{
	struct imap_session *s = xcalloc(1, sizeof(*s));
	s->c = c;
	s->node = node;
	s->loop = node_loop(node);
	s->id = conn_id(c);
	s->state = IMAP_STATE_NOT_AUTH;
	timer_init(&s->idle_timer, idle_tick, s);
	buf_init(&s->out, IMAP_OUT_MAX);
	conn_set_handler(c, &imap_handler, s);
	conn_set_idle_timeout(c, IMAP_IDLE_PREAUTH_MS);
	return s;
}

void imap_session_accept(struct conn *c, void *node)
{
	struct imap_session *s = session_new(c, node);
	char peer[64];
	LOG_INFO("imap", s->id, "accept", "peer=%s", conn_peer_str(c, peer, sizeof(peer)));
	char caps[IMAP_CAPS_MAX];
	imap_reply(s, "* OK [CAPABILITY %s] mailcluster IMAP4rev2 ready\r\n", caps_str(s, caps));
}

void imap_session_open(struct conn *c, void *node, const char *user, struct shard *sh,
		       const char *tag, const char *client)
{
	struct imap_session *s = session_new(c, node);
	login_complete(s, user, sh);
	char q[300], qc[80];
	LOG_INFO("imap", s->id, "login", "user=%s mech=handoff client=%s",
		 log_quote_cstr(q, sizeof(q), user), log_quote_cstr(qc, sizeof(qc), client));
	char caps[IMAP_CAPS_MAX];
	if (tag && tag[0])
		imap_reply(s, "%s OK [CAPABILITY %s] Logged in\r\n", tag, caps_str(s, caps));
	else
		imap_reply(s, "* PREAUTH [CAPABILITY %s] Logged in as %s\r\n", caps_str(s, caps),
			   user);
}

bool imap_tag_valid(const char *tag)
{
	size_t n = strlen(tag);
	if (n == 0 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++) {
		uint8_t ch = (uint8_t)tag[i];
		/* ASTRING-CHAR minus "+" (RFC 9051 tag) */
		if (ch <= 0x20 || ch >= 0x7f || strchr("(){%*\"\\+", ch))
			return false;
	}
	return true;
}
