/* mailbench imap and idle: IMAP sessions on the loop, one command in
 * flight per session, replies read by bench/imap_reply.c.
 *
 * Each session keeps what it was told about its selected mailbox: the
 * message count and the UID of each sequence number it has seen (0 while
 * unknown), updated by EXISTS, EXPUNGE and FETCH. --check holds every
 * reply to the grammar and to what the session knows (a sequence number
 * beyond EXISTS, a UID that changes for the same sequence number without
 * an EXPUNGE, UIDs out of order, an EXISTS that shrinks), and keeps one
 * model per user mailbox shared by that user's sessions: the size of each
 * UID (from APPENDUID and RFC822.SIZE; every session must see the same),
 * and flags. Flags of a message change under concurrent STOREs, so only a
 * flag owned by one session is compared: session i toggles the keyword
 * $MB<i> on messages whose UID it knows; once that STORE has completed, a
 * FETCH of FLAGS by any session, sent after the completion, must show the
 * keyword as session i left it. */
#include "bench/mailload.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <openssl/ssl.h>

#include "bench/imap_reply.h"
#include "bench/loadstat.h"
#include "common/loop.h"
#include "common/tls.h"

enum iop {
	IOP_CONNECT,
	IOP_LOGIN,
	IOP_SELECT,
	IOP_LOGOUT,
	IOP_FETCH_FLAGS,
	IOP_FETCH_HEADERS,
	IOP_FETCH_BODY,
	IOP_STORE,
	IOP_SEARCH,
	IOP_APPEND,
	IOP_COPY,
	IOP_MOVE,
	IOP_EXPUNGE,
	IOP_IDLE,
	IOP_NOOP,
	IOP_LIST,
	IOP_STATUS,
	IOP_N,
	IOP_NONE = IOP_N,
};

static const char *const iop_names[IOP_N] = {
	"CONNECT", "LOGIN",	  "SELECT", "LOGOUT", "FETCH_FLAGS", "FETCH_HEADERS",
	"FETCH_BODY", "STORE",	  "SEARCH", "APPEND", "COPY",	     "MOVE",
	"EXPUNGE",    "IDLE",	  "NOOP",   "LIST",   "STATUS",
};

static const enum iop mix_op[IMIX_N] = {
	[IMIX_SELECT] = IOP_SELECT,	      [IMIX_FETCH_FLAGS] = IOP_FETCH_FLAGS,
	[IMIX_FETCH_HEADERS] = IOP_FETCH_HEADERS, [IMIX_FETCH_BODY] = IOP_FETCH_BODY,
	[IMIX_STORE] = IOP_STORE,	      [IMIX_SEARCH] = IOP_SEARCH,
	[IMIX_APPEND] = IOP_APPEND,	      [IMIX_COPY] = IOP_COPY,
	[IMIX_MOVE] = IOP_MOVE,		      [IMIX_EXPUNGE] = IOP_EXPUNGE,
	[IMIX_IDLE] = IOP_IDLE,		      [IMIX_NOOP] = IOP_NOOP,
	[IMIX_LIST] = IOP_LIST,		      [IMIX_STATUS] = IOP_STATUS,
	[IMIX_LOGOUT] = IOP_LOGOUT,
};

enum imode {
	MODE_MIX,      /* the weighted mix */
	MODE_LOGINS,   /* connect, LOGIN, LOGOUT */
	MODE_IDLE,     /* LOGIN, SELECT, IDLE and stay */
	MODE_POPULATE, /* APPEND until the mailbox holds `populate` messages */
};

enum iphase {
	PH_NONE,      /* no continuation expected */
	PH_WAIT_CONT, /* APPEND sync literal or IDLE: waiting for "+" */
	PH_IDLING,    /* IDLE accepted */
	PH_DONE_SENT, /* IDLE: DONE sent */
};

/* ---- the shared model for --check ------------------------------------------ */

#define MODEL_MAX_UIDS (1u << 20)
/* Largest EXISTS a session keeps a UID list for (4 bytes each). */
#define EXISTS_MAX (4u << 20)

struct owner {
	struct owner *next;
	unsigned client;
	bool known;   /* set is what the owner's last completed STORE left */
	bool set;
	bool pending; /* a STORE by the owner is in flight */
	uint64_t stable_ns; /* when that STORE completed */
};

struct msg_model {
	uint32_t uid; /* 0: empty slot */
	bool has_size;
	uint64_t size;
	struct owner *owners;
};

struct mbox_model {
	uint32_t uidvalidity;
	struct msg_model *slots;
	size_t cap, n;
};

static void model_clear(struct mbox_model *m)
{
	for (size_t i = 0; i < m->cap; i++) {
		struct owner *o = m->slots[i].owners;
		while (o) {
			struct owner *nx = o->next;
			free(o);
			o = nx;
		}
	}
	free(m->slots);
	m->slots = NULL;
	m->cap = m->n = 0;
}

static struct msg_model *model_get(struct mbox_model *m, uint32_t uid, bool create)
{
	if (create && m->n >= MODEL_MAX_UIDS)
		create = false; /* a server inventing UIDs does not grow us */
	if (m->cap == 0) {
		if (!create)
			return NULL;
		m->cap = 64;
		m->slots = xcalloc(m->cap, sizeof(*m->slots));
	}
	if (create && (m->n + 1) * 10 > m->cap * 7) {
		struct msg_model *old = m->slots;
		size_t oldcap = m->cap;
		m->cap *= 2;
		m->slots = xcalloc(m->cap, sizeof(*m->slots));
		for (size_t i = 0; i < oldcap; i++) {
			if (!old[i].uid)
				continue;
			size_t k = (old[i].uid * 2654435761u) & (m->cap - 1);
			while (m->slots[k].uid)
				k = (k + 1) & (m->cap - 1);
			m->slots[k] = old[i];
		}
		free(old);
	}
	size_t k = (uid * 2654435761u) & (m->cap - 1);
	while (m->slots[k].uid) {
		if (m->slots[k].uid == uid)
			return &m->slots[k];
		k = (k + 1) & (m->cap - 1);
	}
	if (!create || m->n >= MODEL_MAX_UIDS)
		return NULL;
	m->slots[k].uid = uid;
	m->n++;
	return &m->slots[k];
}

static struct owner *owner_get(struct msg_model *mm, unsigned client, bool create)
{
	for (struct owner *o = mm->owners; o; o = o->next)
		if (o->client == client)
			return o;
	if (!create)
		return NULL;
	struct owner *o = xcalloc(1, sizeof(*o));
	o->client = client;
	o->next = mm->owners;
	mm->owners = o;
	return o;
}

/* ---- the run ------------------------------------------------------------------ */

struct ibench;

struct iclient {
	struct ibench *b;
	unsigned idx;
	struct conn *c;
	struct imap_reply_reader rd;
	enum iop op;
	enum iphase phase;
	bool cmd_uid;
	char tag[16];
	char cmdline[64]; /* the command in flight, for error examples */
	uint32_t tagn;
	uint64_t t_start, t_cont, t_done;
	unsigned user;
	unsigned session_done;
	bool literal_plus;
	bool selected;
	bool bye_seen;
	bool logged_out;
	bool error_counted; /* this connection's end is already an error */
	bool finished;      /* no new session (idle, populate) */
	bool timer_restart; /* the timer restarts the session (else ends IDLE) */
	bool was_ready;     /* has been through LOGIN and SELECT once */
	unsigned nsessions;
	uint32_t exists, uidvalidity;
	uint32_t *uids;
	size_t uids_cap;
	struct mbox_model *model;
	/* the command in flight */
	uint32_t seq;
	uint32_t st_uid;
	bool st_own, st_add;
	struct buf msg;
	uint64_t appended;
	uint32_t populate_left;
	struct timer timer;
};

struct ibench {
	const struct load_config *cfg;
	enum imode mode;
	struct loop *loop;
	struct load_stats *st;
	struct tls_client *tc;
	struct iclient *cl;
	unsigned ncl;
	unsigned live;
	bool stopping;
	uint64_t issued;
	uint64_t start_ns, end_ns;
	unsigned ready;
	uint64_t stop_ns;
	uint64_t window_ns; /* kept-open sessions: measuring since */
	uint64_t rng;
	unsigned cum[IMIX_N];
	unsigned wsum;
	struct mbox_model **models;
	uint32_t nusers;
	struct timer tick;
	/* idle */
	unsigned idle_started, idling, idle_failed;
	uint64_t all_idle_ns;
	/* populate */
	uint64_t next_user;
	uint64_t appended_ok;
	uint32_t populate_target;
	/* figures */
	uint64_t sessions, logins_ok;
	uint64_t checked_uids, checked_sizes, checked_flags;
};

static void ic_start(struct iclient *ic);
static void ic_next(struct iclient *ic);

/* No new commands from now on; rates are computed up to here. */
static void begin_stop(struct ibench *b)
{
	if (b->stopping)
		return;
	b->stopping = true;
	b->stop_ns = time_mono_ns();
}

static bool ic_is_loopback_v4(const struct load_config *cfg)
{
	const struct sockaddr_in *in = (const struct sockaddr_in *)&cfg->sa;
	return cfg->sa.ss_family == AF_INET && ((const uint8_t *)&in->sin_addr)[0] == 127;
}

static void ic_error(struct iclient *ic, const char *kind, const char *example)
{
	load_error(ic->b->st, kind, example);
}

static void ic_errorf(struct iclient *ic, const char *kind, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void ic_errorf(struct iclient *ic, const char *kind, const char *fmt, ...)
{
	char ex[160];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(ex, sizeof(ex), fmt, ap);
	va_end(ap);
	load_error(ic->b->st, kind, ex);
}

static void view_str(struct view v, char *out, size_t out_len)
{
	size_t n = MIN(v.len, out_len - 1);
	memcpy(out, v.ptr, n);
	out[n] = '\0';
}

/* Write "TAG " + the command + CRLF and make it the command in flight. */
static void ic_send(struct iclient *ic, enum iop op, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void ic_send(struct iclient *ic, enum iop op, const char *fmt, ...)
{
	char line[1024];
	snprintf(ic->tag, sizeof(ic->tag), "%c%u", 'a' + (char)(ic->idx % 26), ++ic->tagn);
	int n = snprintf(line, sizeof(line), "%s ", ic->tag);
	va_list ap;
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	if ((size_t)n > sizeof(line) - 3)
		n = (int)sizeof(line) - 3;
	snprintf(ic->cmdline, sizeof(ic->cmdline), "%.*s", n, line);
	line[n++] = '\r';
	line[n++] = '\n';
	ic->op = op;
	ic->phase = PH_NONE;
	ic->t_start = time_mono_ns();
	conn_write(ic->c, line, (size_t)n);
}

static void quote(char *out, size_t out_len, const char *s)
{
	size_t o = 0;
	out[o++] = '"';
	for (; *s && o + 3 < out_len; s++) {
		if (*s == '"' || *s == '\\')
			out[o++] = '\\';
		out[o++] = *s;
	}
	out[o++] = '"';
	out[o] = '\0';
}

static void ic_set_exists(struct iclient *ic, uint32_t n)
{
	if (n > ic->uids_cap) {
		size_t cap = MAX((size_t)n + n / 2, (size_t)64);
		ic->uids = xrealloc(ic->uids, cap * sizeof(*ic->uids));
		ic->uids_cap = cap;
	}
	if (n > ic->exists)
		memset(ic->uids + ic->exists, 0, (n - ic->exists) * sizeof(*ic->uids));
	ic->exists = n;
}

static void ic_logout(struct iclient *ic)
{
	ic_send(ic, IOP_LOGOUT, "LOGOUT");
}

static void ic_select(struct iclient *ic)
{
	char mb[512];
	quote(mb, sizeof(mb), ic->b->cfg->mailbox);
	ic->selected = false;
	ic->exists = 0;
	ic->model = NULL;
	ic->uidvalidity = 0;
	ic_send(ic, IOP_SELECT, "SELECT %s", mb);
}

/* ---- the mix --------------------------------------------------------------- */

static uint32_t rnd_below(struct ibench *b, uint32_t n)
{
	return n ? (uint32_t)(load_rand(&b->rng) % n) : 0;
}

static void ic_append(struct iclient *ic)
{
	struct ibench *b = ic->b;
	char to[256], mb[512];
	load_user_name(b->cfg, ic->user, to, sizeof(to));
	buf_reset(&ic->msg);
	load_message(&ic->msg, to, b->cfg->msg_size, ic->idx, ++ic->appended);
	quote(mb, sizeof(mb), b->cfg->mailbox);
	if (ic->literal_plus) {
		ic_send(ic, IOP_APPEND, "APPEND %s {%zu+}", mb, ic->msg.len);
		conn_write(ic->c, ic->msg.data, ic->msg.len);
		conn_write(ic->c, "\r\n", 2);
	} else {
		ic_send(ic, IOP_APPEND, "APPEND %s {%zu}", mb, ic->msg.len);
		ic->phase = PH_WAIT_CONT;
	}
}

static void ic_store(struct iclient *ic)
{
	struct ibench *b = ic->b;
	uint32_t seq = 1 + rnd_below(b, ic->exists);
	ic->seq = seq;
	ic->st_own = false;
	uint32_t uid = ic->uids[seq - 1];
	if (b->cfg->check && ic->model && uid && (load_rand(&b->rng) & 1)) {
		/* Our own keyword: its state is ours to know. */
		ic->st_own = true;
		ic->st_uid = uid;
		ic->st_add = load_rand(&b->rng) & 1;
		struct msg_model *mm = model_get(ic->model, uid, true);
		if (mm)
			owner_get(mm, ic->idx, true)->pending = true;
		else
			ic->st_own = false;
		ic->cmd_uid = true;
		ic_send(ic, IOP_STORE, "UID STORE %u %cFLAGS ($MB%u)", uid, ic->st_add ? '+' : '-',
			ic->idx);
		return;
	}
	static const char *const how[] = { "+FLAGS (\\Seen)",	 "+FLAGS (\\Seen)",
					   "+FLAGS (\\Seen)",	 "-FLAGS (\\Seen)",
					   "+FLAGS (\\Flagged)", "-FLAGS (\\Flagged)",
					   "+FLAGS (\\Deleted)", "+FLAGS (\\Deleted)" };
	ic_send(ic, IOP_STORE, "STORE %u %s", seq, how[rnd_below(b, ARRAY_LEN(how))]);
}

static void ic_issue(struct iclient *ic, enum iop op)
{
	struct ibench *b = ic->b;
	const struct load_config *cfg = b->cfg;
	ic->cmd_uid = false;
	uint32_t n = ic->exists;
	char mb[512];
	switch (op) {
	case IOP_FETCH_FLAGS:
	case IOP_FETCH_HEADERS: {
		uint32_t span = MIN(n, cfg->fetch_range);
		uint32_t lo = 1 + rnd_below(b, n - span + 1);
		uint32_t hi = lo + span - 1;
		if (op == IOP_FETCH_FLAGS)
			ic_send(ic, op, "FETCH %u:%u (UID FLAGS)", lo, hi);
		else
			ic_send(ic, op,
				"FETCH %u:%u (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO "
				"SUBJECT DATE MESSAGE-ID)])",
				lo, hi);
		break;
	}
	case IOP_FETCH_BODY:
		ic->seq = 1 + rnd_below(b, n);
		ic_send(ic, op, "FETCH %u (UID RFC822.SIZE BODY.PEEK[])", ic->seq);
		break;
	case IOP_STORE:
		ic_store(ic);
		break;
	case IOP_SEARCH: {
		static const char *const crit[] = { "UNSEEN", "FLAGGED", "SUBJECT \"message 1\"",
						    "DELETED", "FROM \"mailbench\"" };
		unsigned k = rnd_below(b, ARRAY_LEN(crit));
		ic->cmd_uid = k & 1;
		ic_send(ic, op, "%sSEARCH %s", ic->cmd_uid ? "UID " : "", crit[k]);
		break;
	}
	case IOP_APPEND:
		ic_append(ic);
		break;
	case IOP_COPY:
	case IOP_MOVE:
		quote(mb, sizeof(mb), cfg->copy_to);
		ic_send(ic, op, "%s %u %s", op == IOP_COPY ? "COPY" : "MOVE", 1 + rnd_below(b, n), mb);
		break;
	case IOP_EXPUNGE:
		ic_send(ic, op, "EXPUNGE");
		break;
	case IOP_IDLE:
		ic_send(ic, op, "IDLE");
		ic->phase = PH_WAIT_CONT;
		break;
	case IOP_NOOP:
		ic_send(ic, op, "NOOP");
		break;
	case IOP_LIST:
		ic_send(ic, op, "LIST \"\" \"*\"");
		break;
	case IOP_STATUS:
		quote(mb, sizeof(mb), cfg->copy_to);
		ic_send(ic, op, "STATUS %s (MESSAGES UIDNEXT UNSEEN)", mb);
		break;
	case IOP_SELECT:
		ic_select(ic);
		break;
	case IOP_LOGOUT:
		ic_logout(ic);
		break;
	default:
		ic_send(ic, IOP_NOOP, "NOOP");
		break;
	}
}

static bool needs_message(enum iop op)
{
	return op == IOP_FETCH_FLAGS || op == IOP_FETCH_HEADERS || op == IOP_FETCH_BODY ||
	       op == IOP_STORE || op == IOP_COPY || op == IOP_MOVE;
}

static void ic_next(struct iclient *ic)
{
	struct ibench *b = ic->b;
	const struct load_config *cfg = b->cfg;
	if (!ic->c || conn_closing(ic->c))
		return;
	switch (b->mode) {
	case MODE_LOGINS:
		if ((cfg->count && b->issued >= cfg->count) ||
		    (b->end_ns && time_mono_ns() >= b->end_ns))
			begin_stop(b);
		ic_logout(ic);
		return;
	case MODE_IDLE:
		if (b->stopping) {
			ic_logout(ic);
			return;
		}
		ic_send(ic, IOP_IDLE, "IDLE");
		ic->phase = PH_WAIT_CONT;
		return;
	case MODE_POPULATE:
		if (ic->populate_left == 0 || b->stopping) {
			ic_logout(ic);
			return;
		}
		ic_append(ic);
		return;
	case MODE_MIX:
		break;
	}
	if ((cfg->count && b->issued >= cfg->count) || (b->end_ns && time_mono_ns() >= b->end_ns))
		begin_stop(b);
	if (b->stopping || (cfg->session_cmds && ic->session_done >= cfg->session_cmds)) {
		ic_logout(ic);
		return;
	}
	b->issued++;
	ic->session_done++;
	unsigned r = rnd_below(b, b->wsum), k = 0;
	while (k + 1 < IMIX_N && r >= b->cum[k])
		k++;
	enum iop op = mix_op[k];
	if (needs_message(op) && ic->exists == 0)
		op = cfg->weights[IMIX_APPEND] ? IOP_APPEND : IOP_NOOP;
	ic_issue(ic, op);
}

/* ---- replies ------------------------------------------------------------- */

static void check_fetch(struct iclient *ic, const struct imap_reply *rp)
{
	struct ibench *b = ic->b;
	bool check = b->cfg->check;
	struct imap_fetch_atts a;
	const char *why = NULL;
	uint32_t n = rp->number;
	if (imap_reply_fetch(rp->rest, &a, &why) < 0)
		return; /* the syntax check counted it */
	if (n == 0 || n > ic->exists) {
		if (check)
			ic_errorf(ic, "check_fetch_seq", "FETCH of message %u with EXISTS %u", n,
				  ic->exists);
		return;
	}
	if (a.has_uid) {
		uint32_t known = ic->uids[n - 1];
		if (check && known)
			b->checked_uids++;
		if (check && known && known != a.uid)
			ic_errorf(ic, "check_uid_changed",
				  "message %u had UID %u, now UID %u without an EXPUNGE", n, known,
				  a.uid);
		if (check && ((n > 1 && ic->uids[n - 2] && ic->uids[n - 2] >= a.uid) ||
			      (n < ic->exists && ic->uids[n] && ic->uids[n] <= a.uid)))
			ic_errorf(ic, "check_uid_order", "UID %u of message %u out of order", a.uid,
				  n);
		ic->uids[n - 1] = a.uid;
	}
	if (!check)
		return;
	uint32_t uid = a.has_uid ? a.uid : ic->uids[n - 1];
	if (ic->op == IOP_FETCH_BODY && a.has_size && ic->rd.lits == 1 && n == ic->seq &&
	    ic->rd.lit_bytes != a.size)
		ic_errorf(ic, "check_body_size", "BODY[] of UID %u has %" PRIu64
			  " bytes, RFC822.SIZE %" PRIu64, uid, ic->rd.lit_bytes, a.size);
	if (ic->op == IOP_STORE && ic->st_own && a.has_flags && uid == ic->st_uid) {
		char kw[24];
		snprintf(kw, sizeof(kw), "$MB%u", ic->idx);
		if (imap_flags_has(a.flags, kw) != ic->st_add)
			ic_errorf(ic, "check_store_reply", "STORE %cFLAGS %s on UID %u answered FLAGS (%.*s)",
				  ic->st_add ? '+' : '-', kw, uid, (int)MIN(a.flags.len, 80),
				  (const char *)a.flags.ptr);
	}
	if (!ic->model || !uid)
		return;
	struct msg_model *mm = model_get(ic->model, uid, a.has_size);
	if (!mm)
		return;
	if (a.has_size) {
		if (mm->has_size)
			b->checked_sizes++;
		if (mm->has_size && mm->size != a.size)
			ic_errorf(ic, "check_uid_size",
				  "UID %u has RFC822.SIZE %" PRIu64 ", another session saw %" PRIu64,
				  uid, a.size, mm->size);
		mm->has_size = true;
		mm->size = a.size;
	}
	if (!a.has_flags)
		return;
	for (struct owner *o = mm->owners; o; o = o->next) {
		if (!o->known || o->pending || o->stable_ns >= ic->t_start)
			continue;
		char kw[24];
		snprintf(kw, sizeof(kw), "$MB%u", o->client);
		bool has = imap_flags_has(a.flags, kw);
		b->checked_flags++;
		if (has != o->set)
			ic_errorf(ic, "check_flags",
				  "UID %u: FLAGS (%.*s) %s %s, which session %u %s before this command",
				  uid, (int)MIN(a.flags.len, 60), (const char *)a.flags.ptr,
				  has ? "has" : "lacks", kw, o->client, o->set ? "set" : "cleared");
	}
}

/* Sessions kept open: what is measured starts once every session has
 * logged in and selected (scrypt logins can take seconds), or after one
 * reply timeout if some never do. */
static void window_start(struct ibench *b)
{
	if (b->window_ns || b->mode != MODE_MIX || b->cfg->session_cmds)
		return;
	b->window_ns = time_mono_ns();
	load_figure(b->st, "setup_seconds", (double)(b->window_ns - b->start_ns) / 1e9, false);
	load_window_start(b->st, 1u << IOP_CONNECT | 1u << IOP_LOGIN | 1u << IOP_SELECT);
	if (b->cfg->duration_s)
		b->end_ns = b->window_ns + (uint64_t)b->cfg->duration_s * 1000000000ull;
}

static void on_untagged(struct iclient *ic, const struct imap_reply *rp, struct view line)
{
	struct ibench *b = ic->b;
	bool check = b->cfg->check;
	char ex[160];
	if (ic->op == IOP_CONNECT) {
		if (rp->status == IMAP_STATUS_OK || rp->status == IMAP_STATUS_PREAUTH) {
			load_op_ok(b->st, IOP_CONNECT, time_mono_ns() - ic->t_start);
			if (view_eq_nocase(rp->code, "CAPABILITY"))
				ic->literal_plus = imap_flags_has(rp->code_args, "LITERAL+");
			if (rp->status == IMAP_STATUS_PREAUTH) {
				ic_select(ic);
				return;
			}
			if (b->mode == MODE_LOGINS) {
				if (b->cfg->count && b->issued >= b->cfg->count)
					begin_stop(b);
				if (b->stopping) {
					ic_logout(ic);
					return;
				}
				b->issued++;
			}
			char user[256], qu[600], qp[600];
			load_user_name(b->cfg, ic->user, user, sizeof(user));
			quote(qu, sizeof(qu), user);
			quote(qp, sizeof(qp), b->cfg->password);
			ic_send(ic, IOP_LOGIN, "LOGIN %s %s", qu, qp);
			return;
		}
		view_str(line, ex, sizeof(ex));
		load_op_failed(b->st, IOP_CONNECT);
		ic_error(ic, "greeting", ex);
		ic->error_counted = true;
		conn_close(ic->c);
		ic->op = IOP_NONE;
		return;
	}
	if (rp->status == IMAP_STATUS_BYE) {
		ic->bye_seen = true;
		if (ic->op != IOP_LOGOUT) {
			view_str(line, ex, sizeof(ex));
			ic_error(ic, "bye", ex);
			ic->error_counted = true;
		}
		return;
	}
	if (rp->status != IMAP_STATUS_NONE) {
		if (ic->op == IOP_SELECT && view_eq_nocase(rp->code, "UIDVALIDITY")) {
			ic->uidvalidity = (uint32_t)strtoul((const char *)rp->code_args.ptr, NULL, 10);
		}
		return;
	}
	if (rp->has_number) {
		uint32_t n = rp->number;
		if (view_eq_nocase(rp->word, "EXISTS")) {
			if (n > EXISTS_MAX) {
				ic_errorf(ic, "exists_too_large", "EXISTS %u", n);
				ic->error_counted = true;
				conn_close(ic->c);
				return;
			}
			if (check && n < ic->exists && ic->op != IOP_SELECT)
				ic_errorf(ic, "check_exists_shrank", "EXISTS %u after EXISTS %u", n,
					  ic->exists);
			ic_set_exists(ic, n);
		} else if (view_eq_nocase(rp->word, "EXPUNGE")) {
			if (n == 0 || n > ic->exists) {
				if (check)
					ic_errorf(ic, "check_expunge_seq", "EXPUNGE %u with EXISTS %u", n,
						  ic->exists);
				return;
			}
			memmove(ic->uids + n - 1, ic->uids + n, (ic->exists - n) * sizeof(*ic->uids));
			ic->exists--;
		} else if (view_eq_nocase(rp->word, "FETCH")) {
			check_fetch(ic, rp);
		}
		return;
	}
	if (check && view_eq_nocase(rp->word, "SEARCH") && !ic->cmd_uid) {
		const uint8_t *p = rp->rest.ptr, *end = p + rp->rest.len;
		while (p < end) {
			uint64_t v = 0;
			while (p < end && *p >= '0' && *p <= '9')
				v = v * 10 + (uint64_t)(*p++ - '0');
			if (v > ic->exists) {
				ic_errorf(ic, "check_search_seq", "SEARCH found message %" PRIu64
					  " with EXISTS %u", v, ic->exists);
				break;
			}
			while (p < end && (*p < '0' || *p > '9'))
				p++;
		}
	}
}

static void on_continue(struct iclient *ic, struct view line)
{
	struct ibench *b = ic->b;
	char ex[160];
	if (ic->phase != PH_WAIT_CONT) {
		view_str(line, ex, sizeof(ex));
		ic_error(ic, "unexpected_continuation", ex);
		return;
	}
	if (ic->op == IOP_APPEND) {
		ic->phase = PH_NONE;
		conn_write(ic->c, ic->msg.data, ic->msg.len);
		conn_write(ic->c, "\r\n", 2);
		return;
	}
	/* IDLE */
	ic->phase = PH_IDLING;
	ic->t_cont = time_mono_ns();
	if (b->mode == MODE_IDLE) {
		b->idling++;
		conn_set_idle_timeout(ic->c, 0);
		if (b->idle_started < b->cfg->connections)
			ic_start(&b->cl[b->idle_started++]);
		if (!b->stopping)
			return;
	}
	if (b->stopping || b->cfg->idle_ms == 0) {
		conn_write(ic->c, "DONE\r\n", 6);
		ic->phase = PH_DONE_SENT;
		ic->t_done = time_mono_ns();
		return;
	}
	conn_set_idle_timeout(ic->c, b->cfg->idle_ms + b->cfg->timeout_ms);
	ic->timer_restart = false;
	timer_start(b->loop, &ic->timer, b->cfg->idle_ms);
}

static void ic_end_idle(struct iclient *ic)
{
	if (ic->phase != PH_IDLING || !ic->c || conn_closing(ic->c))
		return;
	if (timer_armed(&ic->timer))
		timer_stop(ic->b->loop, &ic->timer);
	conn_write(ic->c, "DONE\r\n", 6);
	conn_set_idle_timeout(ic->c, ic->b->cfg->timeout_ms);
	ic->phase = PH_DONE_SENT;
	ic->t_done = time_mono_ns();
}

static void on_tagged(struct iclient *ic, const struct imap_reply *rp, struct view line)
{
	struct ibench *b = ic->b;
	char ex[160], kind[48];
	if (ic->op == IOP_NONE || ic->op == IOP_CONNECT || !view_eq_cstr(rp->tag, ic->tag)) {
		view_str(line, ex, sizeof(ex));
		ic_error(ic, "unexpected_tag", ex);
		return;
	}
	enum iop op = ic->op;
	uint64_t now = time_mono_ns();
	if (ic->phase == PH_WAIT_CONT && rp->status == IMAP_STATUS_OK) {
		view_str(line, ex, sizeof(ex));
		ic_error(ic, "completed_without_continuation", ex);
	}
	ic->op = IOP_NONE;
	ic->phase = PH_NONE;
	if (rp->status != IMAP_STATUS_OK) {
		load_op_failed(b->st, op);
		snprintf(kind, sizeof(kind), "%s_%s", iop_names[op],
			 rp->status == IMAP_STATUS_NO ? "NO" : "BAD");
		char l[96];
		view_str(line, l, sizeof(l));
		snprintf(ex, sizeof(ex), "%.60s -> %s", ic->cmdline, l);
		ic_error(ic, kind, ex);
		if (op == IOP_STORE && ic->st_own && ic->model) {
			struct msg_model *mm = model_get(ic->model, ic->st_uid, false);
			struct owner *o = mm ? owner_get(mm, ic->idx, false) : NULL;
			if (o)
				o->pending = o->known = false;
		}
		if (op == IOP_LOGIN || op == IOP_SELECT) {
			ic_logout(ic);
			return;
		}
		if (op == IOP_LOGOUT) {
			ic->logged_out = true;
			conn_close(ic->c);
			return;
		}
		ic_next(ic);
		return;
	}
	uint64_t lat = now - ic->t_start;
	if (op == IOP_IDLE)
		lat = (ic->t_cont - ic->t_start) + (now - ic->t_done);
	load_op_ok(b->st, op, lat);
	switch (op) {
	case IOP_LOGIN:
		b->logins_ok++;
		if (view_eq_nocase(rp->code, "CAPABILITY"))
			ic->literal_plus = imap_flags_has(rp->code_args, "LITERAL+");
		if (b->mode == MODE_LOGINS)
			ic_logout(ic);
		else
			ic_select(ic);
		return;
	case IOP_SELECT:
		ic->selected = true;
		if (b->cfg->check && ic->uidvalidity) {
			uint32_t u = ic->user - b->cfg->user_lo;
			if (!b->models[u])
				b->models[u] = xcalloc(1, sizeof(struct mbox_model));
			struct mbox_model *m = b->models[u];
			if (m->uidvalidity != ic->uidvalidity) {
				model_clear(m);
				m->uidvalidity = ic->uidvalidity;
			}
			ic->model = m;
		}
		if (b->mode == MODE_POPULATE)
			ic->populate_left = b->populate_target > ic->exists
						    ? b->populate_target - ic->exists : 0;
		if (!ic->was_ready) {
			ic->was_ready = true;
			if (++b->ready == b->ncl)
				window_start(b);
		}
		break;
	case IOP_LOGOUT:
		ic->logged_out = true;
		conn_close(ic->c);
		return;
	case IOP_APPEND: {
		b->appended_ok++;
		if (ic->populate_left)
			ic->populate_left--;
		uint32_t uv, uid;
		if (ic->model && view_eq_nocase(rp->code, "APPENDUID") &&
		    imap_reply_appenduid(rp->code_args, &uv, &uid) == 0 && uv == ic->model->uidvalidity) {
			struct msg_model *mm = model_get(ic->model, uid, true);
			if (mm && mm->has_size && mm->size != ic->msg.len)
				ic_errorf(ic, "check_uid_size", "APPENDUID %u of %zu bytes, seen with %" PRIu64,
					  uid, ic->msg.len, mm->size);
			if (mm) {
				mm->has_size = true;
				mm->size = ic->msg.len;
			}
		}
		break;
	}
	case IOP_STORE:
		if (ic->st_own && ic->model && model_get(ic->model, ic->st_uid, false)) {
			struct msg_model *mm = model_get(ic->model, ic->st_uid, false);
			struct owner *o = owner_get(mm, ic->idx, true);
			o->known = true;
			o->set = ic->st_add;
			o->pending = false;
			o->stable_ns = now;
		}
		break;
	default:
		break;
	}
	ic_next(ic);
}

static void on_response(struct iclient *ic, struct view line)
{
	struct ibench *b = ic->b;
	const char *why = NULL;
	char ex[160];
	if (b->cfg->check && imap_reply_check(line, &why) < 0) {
		char l[100];
		view_str(line, l, sizeof(l));
		snprintf(ex, sizeof(ex), "%s: %s", why, l);
		ic_error(ic, "check_syntax", ex);
	}
	struct imap_reply rp;
	if (imap_reply_parse(line, &rp, &why) < 0) {
		char l[100];
		view_str(line, l, sizeof(l));
		snprintf(ex, sizeof(ex), "%s: %s", why, l);
		ic_error(ic, "protocol", ex);
		return;
	}
	switch (rp.kind) {
	case IMAP_REPLY_CONTINUE:
		on_continue(ic, line);
		break;
	case IMAP_REPLY_UNTAGGED:
		on_untagged(ic, &rp, line);
		break;
	case IMAP_REPLY_TAGGED:
		on_tagged(ic, &rp, line);
		break;
	}
}

/* ---- connections -------------------------------------------------------------- */

static ssize_t ic_on_data(struct conn *c, const uint8_t *d, size_t n)
{
	struct iclient *ic = conn_user(c);
	size_t off = 0;
	while (off < n) {
		if (conn_closing(c))
			return (ssize_t)n;
		size_t used = 0;
		enum imap_reply_result r = imap_reply_feed(&ic->rd, d + off, n - off, &used);
		off += used;
		if (r == IMAP_REPLY_MORE)
			break;
		if (r == IMAP_REPLY_TOO_LONG) {
			ic_error(ic, "reply_too_long", NULL);
			ic->error_counted = true;
			return -1;
		}
		on_response(ic, imap_reply_reader_line(&ic->rd));
	}
	return (ssize_t)off;
}

static void ic_timer(struct timer *t)
{
	struct iclient *ic = t->arg;
	if (ic->timer_restart) {
		ic->timer_restart = false;
		if (!ic->b->stopping)
			ic_start(ic);
		return;
	}
	ic_end_idle(ic);
}

static bool ic_wants_new_session(struct iclient *ic)
{
	struct ibench *b = ic->b;
	if (b->stopping || ic->finished)
		return false;
	return b->mode == MODE_MIX || b->mode == MODE_LOGINS || b->mode == MODE_POPULATE;
}

static void ic_on_close(struct conn *c, enum conn_close_reason why)
{
	struct iclient *ic = conn_user(c);
	struct ibench *b = ic->b;
	ic->c = NULL;
	b->live--;
	bool clean = ic->logged_out || (ic->op == IOP_LOGOUT && ic->bye_seen);
	if (!clean && !ic->error_counted) {
		char kind[48];
		snprintf(kind, sizeof(kind), "%s_%s",
			 why == CONN_CLOSE_CONNECT ? "connect" : why == CONN_CLOSE_TIMEOUT ? "timeout"
				 : why == CONN_CLOSE_PEER ? "closed" : why == CONN_CLOSE_TLS ? "tls"
				 : "aborted",
			 ic->op < IOP_N ? iop_names[ic->op] : "idle");
		ic_error(ic, kind, NULL);
	}
	if (!clean && ic->op < IOP_N)
		load_op_failed(b->st, ic->op);
	if (b->mode == MODE_IDLE && !clean) {
		if (ic->phase == PH_IDLING || ic->phase == PH_DONE_SENT)
			b->idling--;
		b->idle_failed++;
		ic->finished = true;
		if (!b->stopping && b->idle_started < b->cfg->connections)
			ic_start(&b->cl[b->idle_started++]);
	}
	if (b->mode == MODE_IDLE)
		ic->finished = true;
	ic->op = IOP_NONE;
	ic->phase = PH_NONE;
	if (ic_wants_new_session(ic)) {
		if (clean) {
			ic_start(ic);
		} else {
			/* Do not spin on a server that refuses us. */
			ic->timer_restart = true;
			timer_start(b->loop, &ic->timer, 100);
		}
	}
}

static const struct conn_handler ic_handler = {
	.name = "imapc",
	.on_data = ic_on_data,
	.on_close = ic_on_close,
};

static void ic_start(struct iclient *ic)
{
	struct ibench *b = ic->b;
	const struct load_config *cfg = b->cfg;
	if (b->mode == MODE_POPULATE) {
		if (b->next_user > cfg->user_hi) {
			ic->finished = true;
			return;
		}
		ic->user = (unsigned)b->next_user++;
	} else if (b->mode == MODE_IDLE) {
		ic->user = cfg->user_lo + ic->idx % b->nusers;
	} else if (ic->nsessions == 0) {
		/* Client i starts as user i: with as many users as clients,
		 * every mailbox has one session at first. */
		ic->user = cfg->user_lo + ic->idx % b->nusers;
	} else {
		ic->user = cfg->user_lo + rnd_below(b, b->nusers);
	}
	ic->nsessions++;
	ic->op = IOP_NONE;
	ic->phase = PH_NONE;
	ic->session_done = 0;
	ic->literal_plus = false;
	ic->selected = false;
	ic->bye_seen = false;
	ic->logged_out = false;
	ic->error_counted = false;
	ic->exists = 0;
	ic->model = NULL;
	imap_reply_reader_cleanup(&ic->rd);
	imap_reply_reader_init(&ic->rd, 256 * 1024);
	b->sessions++;
	struct sockaddr_in src;
	bool bind_src = b->mode == MODE_IDLE && cfg->sources > 1 && ic_is_loopback_v4(cfg);
	if (bind_src) {
		memset(&src, 0, sizeof(src));
		src.sin_family = AF_INET;
		src.sin_addr.s_addr = htonl(0x7f000001u + ic->idx % cfg->sources);
	}
	ic->t_start = time_mono_ns();
	ic->c = conn_connect_from(b->loop, (const struct sockaddr *)&cfg->sa, cfg->sa_len,
				  bind_src ? (const struct sockaddr *)&src : NULL,
				  bind_src ? sizeof(src) : 0, &ic_handler, ic);
	if (!ic->c) {
		ic_error(ic, "connect_CONNECT", "socket or bind failed");
		load_op_failed(b->st, IOP_CONNECT);
		if (b->mode == MODE_IDLE) {
			b->idle_failed++;
			ic->finished = true;
			if (b->idle_started < cfg->connections)
				ic_start(&b->cl[b->idle_started++]);
			return;
		}
		ic->timer_restart = true;
		timer_start(b->loop, &ic->timer, 100);
		return;
	}
	b->live++;
	ic->op = IOP_CONNECT;
	conn_set_idle_timeout(ic->c, cfg->timeout_ms);
	if (cfg->tls) {
		SSL *ssl = tls_client_new_ssl(b->tc, cfg->servername);
		if (!ssl || conn_starttls_client(ic->c, ssl) < 0) {
			ic_error(ic, "tls_setup", NULL);
			ic->error_counted = true;
			conn_abort(ic->c, CONN_CLOSE_LOCAL);
		}
	}
}

/* ---- driving a run ----------------------------------------------------------- */

static bool run_finished(void *arg)
{
	struct ibench *b = arg;
	if (b->mode == MODE_POPULATE) {
		if (b->live)
			return false;
		for (unsigned i = 0; i < b->ncl; i++)
			if (timer_armed(&b->cl[i].timer))
				return false;
		return true;
	}
	return b->stopping && b->live == 0;
}

static void stop_all(struct ibench *b)
{
	begin_stop(b);
	for (unsigned i = 0; i < b->ncl; i++) {
		struct iclient *ic = &b->cl[i];
		if (timer_armed(&ic->timer) && ic->timer_restart)
			timer_stop(b->loop, &ic->timer);
		if (ic->phase == PH_IDLING)
			ic_end_idle(ic);
	}
}

struct idle_mem {
	uint64_t before[LOAD_MAX_PIDS], after[LOAD_MAX_PIDS], last[LOAD_MAX_PIDS];
	unsigned stable_ticks;
	bool settled;
};

static struct idle_mem *idle_mem_of(struct ibench *b);

static void tick(struct timer *t)
{
	struct ibench *b = t->arg;
	uint64_t now = time_mono_ns();
	char extra[160] = "";
	if (b->mode == MODE_IDLE) {
		snprintf(extra, sizeof(extra), "idle=%u/%u failed=%u open=%u", b->idling,
			 b->cfg->connections, b->idle_failed, b->live);
		if (!b->stopping && !b->all_idle_ns &&
		    b->idling + b->idle_failed >= b->cfg->connections)
			b->all_idle_ns = now;
		if (!b->stopping && b->all_idle_ns) {
			/* Hold; the memory figure is taken once RSS is steady. */
			struct idle_mem *m = idle_mem_of(b);
			bool moving = false;
			for (unsigned i = 0; i < b->cfg->npids; i++) {
				uint64_t r = load_rss_kib(b->cfg->pids[i]);
				if (r > m->last[i] + 64 || r + 64 < m->last[i])
					moving = true;
				m->last[i] = r;
			}
			m->stable_ticks = moving ? 0 : m->stable_ticks + 1;
			uint64_t held = now - b->all_idle_ns;
			bool hold_over = held >= (uint64_t)b->cfg->duration_s * 1000000000ull;
			bool settle_over = m->stable_ticks >= 1 || held >= 20000000000ull ||
					   !b->cfg->npids;
			if (hold_over && settle_over) {
				for (unsigned i = 0; i < b->cfg->npids; i++)
					m->after[i] = m->last[i];
				m->settled = m->stable_ticks >= 1;
				load_figure(b->st, "held_seconds", (double)held / 1e9, false);
				stop_all(b);
			}
		}
	} else {
		snprintf(extra, sizeof(extra), "sessions=%u%s", b->live,
			 b->mode == MODE_MIX && !b->cfg->session_cmds && !b->window_ns ? " (logging in)"
											 : "");
		if (!b->window_ns && now - b->start_ns >= (uint64_t)b->cfg->timeout_ms * 1000000ull)
			window_start(b);
		if (b->end_ns && now >= b->end_ns)
			stop_all(b);
	}
	if (b->cfg->count && b->issued >= b->cfg->count &&
	    (b->mode == MODE_MIX || b->mode == MODE_LOGINS))
		stop_all(b);
	if (b->mode != MODE_POPULATE)
		load_progress(b->st, extra);
	timer_start(b->loop, t, b->mode == MODE_IDLE ? 1000 : 1000);
}

static struct idle_mem the_idle_mem;
static struct idle_mem *idle_mem_of(struct ibench *b)
{
	UNUSED(b);
	return &the_idle_mem;
}

static void raise_nofile(unsigned want)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < want + 64) {
		rl.rlim_cur = MIN(rl.rlim_max, (rlim_t)want + 64);
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* Runs one load of `mode` with `nclients` sessions on loop l. */
static int ibench_run(struct loop *l, const struct load_config *cfg, enum imode mode,
		      unsigned nclients, struct load_stats *st, struct ibench *out,
		      uint32_t populate_target)
{
	struct ibench *b = out;
	memset(b, 0, sizeof(*b));
	b->populate_target = populate_target;
	b->next_user = cfg->user_lo;
	b->cfg = cfg;
	b->mode = mode;
	b->loop = l;
	b->st = st;
	b->rng = time_mono_ns() | 1;
	b->nusers = cfg->user_hi - cfg->user_lo + 1;
	b->ncl = nclients;
	for (unsigned k = 0; k < IMIX_N; k++) {
		b->wsum += cfg->weights[k];
		b->cum[k] = b->wsum;
	}
	for (unsigned i = 0; i < IOP_N; i++)
		load_op_name(st, i, iop_names[i], i != IOP_CONNECT);
	const char *err = NULL;
	if (cfg->tls) {
		b->tc = tls_client_new(cfg->tls_ca, NULL, NULL, &err);
		if (!b->tc) {
			fprintf(stderr, "mailbench: TLS: %s\n", err);
			return -1;
		}
	}
	if (cfg->check)
		b->models = xcalloc(b->nusers, sizeof(*b->models));
	raise_nofile(nclients + 16);
	b->cl = xcalloc(nclients, sizeof(*b->cl));
	for (unsigned i = 0; i < nclients; i++) {
		struct iclient *ic = &b->cl[i];
		ic->b = b;
		ic->idx = i;
		ic->op = IOP_NONE;
		imap_reply_reader_init(&ic->rd, 256 * 1024);
		buf_init(&ic->msg, 0);
		timer_init(&ic->timer, ic_timer, ic);
	}
	b->start_ns = st->start_ns = time_mono_ns();
	bool windowed = mode == MODE_MIX && !cfg->session_cmds;
	if (cfg->duration_s && mode != MODE_IDLE && mode != MODE_POPULATE && !windowed)
		b->end_ns = b->start_ns + (uint64_t)cfg->duration_s * 1000000000ull;
	timer_init(&b->tick, tick, b);
	timer_start(l, &b->tick, 1000);
	if (mode == MODE_IDLE) {
		unsigned first = MIN(cfg->concurrency, nclients);
		for (unsigned i = 0; i < first; i++)
			ic_start(&b->cl[b->idle_started++]);
	} else {
		for (unsigned i = 0; i < nclients; i++)
			ic_start(&b->cl[i]);
	}
	/* Bounded: the run's own bounds plus one reply timeout to finish. An
	 * idle run's ramp is bounded by the reply timeout per session. */
	uint64_t max_ms;
	if (mode == MODE_IDLE)
		max_ms = (uint64_t)cfg->timeout_ms * (1 + cfg->connections / MAX(1u, cfg->concurrency)) +
			 (uint64_t)cfg->duration_s * 1000 + 30000;
	else if (mode == MODE_POPULATE || !cfg->duration_s)
		max_ms = UINT32_MAX;
	else
		max_ms = (uint64_t)cfg->duration_s * 1000 + 2ull * cfg->timeout_ms + 5000;
	int rc = loop_run_until(l, run_finished, b, (uint32_t)MIN(max_ms, (uint64_t)UINT32_MAX));
	if (rc < 0) {
		stop_all(b);
		/* A last chance for LOGOUTs in flight. */
		loop_run_until(l, run_finished, b, 2000);
	}
	st->end_ns = b->stop_ns && mode != MODE_IDLE ? b->stop_ns : time_mono_ns();
	timer_stop(l, &b->tick);
	unsigned left = 0;
	for (unsigned i = 0; i < nclients; i++) {
		struct iclient *ic = &b->cl[i];
		if (timer_armed(&ic->timer))
			timer_stop(l, &ic->timer);
		if (ic->c) {
			left++;
			ic->finished = true;
			ic->error_counted = true;
			conn_abort(ic->c, CONN_CLOSE_LOCAL);
		}
	}
	if (left)
		load_error(st, "unfinished_at_end", NULL);
	load_progress_end(st);
	return 0;
}

static void ibench_free(struct ibench *b)
{
	for (unsigned i = 0; i < b->ncl; i++) {
		imap_reply_reader_cleanup(&b->cl[i].rd);
		buf_cleanup(&b->cl[i].msg);
		free(b->cl[i].uids);
	}
	free(b->cl);
	if (b->models) {
		for (uint32_t u = 0; u < b->nusers; u++) {
			if (b->models[u]) {
				model_clear(b->models[u]);
				free(b->models[u]);
			}
		}
		free(b->models);
	}
	tls_client_free(&b->tc);
}

static struct loop *make_loop(void)
{
	const char *err = NULL;
	struct loop_config lc = { .buf_count = 1024 };
	struct loop *l = loop_new(&lc, &err);
	if (!l)
		fprintf(stderr, "mailbench: %s\n", err);
	return l;
}

static void describe(struct load_stats *st, const struct load_config *cfg, const char *what)
{
	snprintf(st->desc, sizeof(st->desc), "%s %s%s: %u clients, users %u-%u, %s%s%s", what,
		 cfg->target, cfg->tls ? " (TLS)" : "", cfg->clients, cfg->user_lo, cfg->user_hi,
		 cfg->logins ? "logins only" : cfg->session_cmds ? "login per session" : "sessions kept open",
		 cfg->check ? ", checked" : "", "");
}

int bench_imap_run(const struct load_config *cfg)
{
	struct loop *l = make_loop();
	if (!l)
		return 1;
	struct load_stats *st = xcalloc(1, sizeof(*st));
	load_stats_init(st, "imap", cfg->progress);
	struct ibench b;
	int rc = ibench_run(l, cfg, cfg->logins ? MODE_LOGINS : MODE_MIX, cfg->clients, st, &b, 0);
	if (rc == 0) {
		describe(st, cfg, "imap");
		double secs = (double)(st->end_ns - st->start_ns) / 1e9;
		load_figure(st, "clients", cfg->clients, true);
		load_figure(st, "sessions", (double)b.sessions, true);
		load_figure(st, "logins", (double)b.logins_ok, true);
		load_figure(st, "logins_per_second", secs > 0 ? (double)b.logins_ok / secs : 0, false);
		load_figure(st, "appended", (double)b.appended_ok, true);
		if (cfg->check) {
			load_figure(st, "checked_uids", (double)b.checked_uids, true);
			load_figure(st, "checked_sizes", (double)b.checked_sizes, true);
			load_figure(st, "checked_flags", (double)b.checked_flags, true);
		}
		load_report(st, stdout, cfg->json);
	}
	ibench_free(&b);
	loop_free(&l);
	int status = rc < 0 ? 1 : st->errors ? 1 : 0;
	free(st);
	return status;
}

int bench_populate_imap(const struct load_config *cfg)
{
	struct loop *l = make_loop();
	if (!l)
		return 1;
	struct load_stats *st = xcalloc(1, sizeof(*st));
	load_stats_init(st, "populate", false);
	struct load_config c = *cfg;
	c.check = false;
	struct ibench b;
	unsigned n = MIN(cfg->clients, cfg->user_hi - cfg->user_lo + 1);
	int rc = ibench_run(l, &c, MODE_POPULATE, n, st, &b, cfg->populate);
	if (rc == 0) {
		double secs = (double)(st->end_ns - st->start_ns) / 1e9;
		if (cfg->json)
			printf("{\"bench\":\"populate\",\"via\":\"imap\",\"users\":%u,"
			       "\"messages_per_inbox\":%u,\"appended\":%" PRIu64 ",\"seconds\":%.3f,"
			       "\"errors\":%" PRIu64 "}\n",
			       cfg->user_hi - cfg->user_lo + 1, cfg->populate, b.appended_ok, secs,
			       st->errors);
		else
			printf("populate: users %u-%u filled to %u messages by IMAP APPEND: %" PRIu64
			       " appended in %.1f s, %" PRIu64 " errors\n",
			       cfg->user_lo, cfg->user_hi, cfg->populate, b.appended_ok, secs,
			       st->errors);
		for (size_t i = 0; i < st->nerrs; i++)
			fprintf(stderr, "mailbench: populate: %s x%" PRIu64 " %s\n", st->errs[i].kind,
				st->errs[i].n, st->errs[i].example);
	}
	ibench_free(&b);
	loop_free(&l);
	int status = rc < 0 ? 1 : st->errors ? 1 : 0;
	free(st);
	return status;
}

static bool never(void *arg)
{
	UNUSED(arg);
	return false;
}

int bench_idle_run(const struct load_config *cfg)
{
	struct loop *l = make_loop();
	if (!l)
		return 1;
	struct load_config c = *cfg;
	if (!c.sources && ic_is_loopback_v4(cfg))
		c.sources = 1 + c.connections / 20000;
	struct load_stats *st = xcalloc(1, sizeof(*st));
	struct ibench b;
	int rc = 0;
	if (c.warmup) {
		struct load_config w = c;
		w.count = c.warmup;
		w.duration_s = 0;
		w.logins = true;
		load_stats_init(st, "warmup", false);
		unsigned n = MIN(c.warmup, MIN(c.concurrency, 32u));
		rc = ibench_run(l, &w, MODE_LOGINS, n, st, &b, 0);
		ibench_free(&b);
	}
	memset(&the_idle_mem, 0, sizeof(the_idle_mem));
	if (c.npids) {
		/* Let the warmup's memory go back before the first reading. */
		uint64_t until = time_mono_ns() + 500000000ull;
		while (time_mono_ns() < until)
			loop_run_until(l, never, NULL, 100);
	}
	for (unsigned i = 0; i < c.npids; i++)
		the_idle_mem.before[i] = the_idle_mem.last[i] = load_rss_kib(c.pids[i]);
	load_stats_init(st, "idle", c.progress);
	if (rc == 0)
		rc = ibench_run(l, &c, MODE_IDLE, c.connections, st, &b, 0);
	if (rc == 0) {
		snprintf(st->desc, sizeof(st->desc),
			 "idle %s%s: %u connections (LOGIN, SELECT %s, IDLE), users %u-%u, %u source "
			 "address%s", c.target, c.tls ? " (TLS)" : "", c.connections, c.mailbox,
			 c.user_lo, c.user_hi, MAX(c.sources, 1u), c.sources > 1 ? "es" : "");
		load_figure(st, "connections", c.connections, true);
		load_figure(st, "idle_reached", (double)b.idling + 0, true);
		load_figure(st, "failed", b.idle_failed, true);
		if (b.all_idle_ns)
			load_figure(st, "setup_seconds", (double)(b.all_idle_ns - b.start_ns) / 1e9, false);
		uint64_t sb = 0, sa = 0;
		for (unsigned i = 0; i < c.npids; i++) {
			sb += the_idle_mem.before[i];
			sa += the_idle_mem.after[i];
		}
		if (c.npids) {
			load_figure(st, "rss_before_kib", (double)sb, true);
			load_figure(st, "rss_after_kib", (double)sa, true);
			unsigned n = b.idling ? b.idling : 1;
			load_figure(st, "bytes_per_connection",
				    ((double)sa - (double)sb) * 1024.0 / (double)n, true);
			load_figure(st, "rss_settled", the_idle_mem.settled ? 1 : 0, true);
			/* Per process, in --pid order: pid1_before_kib, ... */
			static char keys[LOAD_MAX_PIDS][3][32];
			for (unsigned i = 0; i < c.npids && c.npids > 1; i++) {
				snprintf(keys[i][0], sizeof(keys[i][0]), "pid%u_before_kib", i + 1);
				snprintf(keys[i][1], sizeof(keys[i][1]), "pid%u_after_kib", i + 1);
				snprintf(keys[i][2], sizeof(keys[i][2]), "pid%u_bytes_per_connection", i + 1);
				load_figure(st, keys[i][0], (double)the_idle_mem.before[i], true);
				load_figure(st, keys[i][1], (double)the_idle_mem.after[i], true);
				load_figure(st, keys[i][2],
					    ((double)the_idle_mem.after[i] - (double)the_idle_mem.before[i]) *
						    1024.0 / (double)n, true);
			}
		}
		load_report(st, stdout, c.json);
		if (!c.json)
			for (unsigned i = 0; i < c.npids; i++)
				printf("pid %d: RSS %" PRIu64 " -> %" PRIu64 " KiB\n", (int)c.pids[i],
				       the_idle_mem.before[i], the_idle_mem.after[i]);
	}
	ibench_free(&b);
	loop_free(&l);
	int status = rc < 0 ? 1 : st->errors ? 1 : 0;
	free(st);
	return status;
}
