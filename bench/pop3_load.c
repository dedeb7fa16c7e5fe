/* mailbench pop3: POP3 sessions on the loop, one command in flight per
 * session. A session logs in (USER/PASS), learns the maildrop with STAT,
 * then runs the weighted mix; RETR/TOP/DELE pick a message not deleted in
 * this session. POP3 locks a maildrop per session, so sessions take users
 * from a queue of users not in use by this run (least recently used
 * first); with fewer users than clients some logins meet [IN-USE].
 *
 * Multi-line replies are read as a stream: listing lines (LIST, UIDL) are
 * parsed, message lines (RETR, TOP) only counted, dot-unstuffed, so a large
 * message costs no memory. --check holds replies to RFC 1939: status lines
 * start with +OK or -ERR, STAT and listings have their syntax, listed
 * message numbers exist, and a RETR returns exactly the octets LIST gave. */
#include "bench/mailload.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <openssl/ssl.h>

#include "bench/loadstat.h"
#include "common/loop.h"
#include "common/tls.h"

enum pop {
	POP_CONNECT,
	POP_USER,
	POP_PASS,
	POP_STAT,
	POP_LIST,
	POP_UIDL,
	POP_RETR,
	POP_TOP,
	POP_DELE,
	POP_NOOP,
	POP_QUIT,
	POP_N,
	POP_NONE = POP_N,
};

static const char *const pop_names[POP_N] = {
	"CONNECT", "USER", "PASS", "STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "NOOP", "QUIT",
};

static const enum pop pmix_op[PMIX_N] = {
	[PMIX_STAT] = POP_STAT, [PMIX_LIST] = POP_LIST, [PMIX_UIDL] = POP_UIDL,
	[PMIX_RETR] = POP_RETR, [PMIX_TOP] = POP_TOP,	[PMIX_DELE] = POP_DELE,
	[PMIX_NOOP] = POP_NOOP, [PMIX_QUIT] = POP_QUIT,
};

#define POP_LINE_MAX 4096

struct pbench;

enum rstate {
	RS_STATUS, /* reading the status line */
	RS_LINES,  /* a listing: line by line */
	RS_BODY,   /* a message: counted */
};

struct pclient {
	struct pbench *b;
	unsigned idx;
	struct conn *c;
	enum pop op;
	enum rstate rs;
	struct buf line;
	bool bol;
	unsigned dot;        /* message: 1 after a leading '.', 2 after ".\r" */
	uint64_t body_bytes; /* unstuffed */
	uint64_t t_start;
	unsigned user;
	bool has_user;
	uint32_t count;
	uint64_t *sizes; /* by message number - 1; 0: unknown */
	uint8_t *deleted;
	size_t cap;
	uint32_t live_msgs;
	uint32_t msgno;
	unsigned session_done;
	bool quit_done;
	bool error_counted;
	bool timer_restart;
	bool was_ready;
	struct timer timer;
};

struct pbench {
	const struct load_config *cfg;
	struct loop *loop;
	struct load_stats *st;
	struct tls_client *tc;
	struct pclient *cl;
	unsigned ncl;
	unsigned live;
	bool stopping;
	uint64_t issued;
	uint64_t start_ns, end_ns, stop_ns, window_ns;
	unsigned ready;
	uint64_t rng;
	unsigned cum[PMIX_N];
	unsigned wsum;
	uint32_t nusers;
	/* users not in use, oldest first */
	unsigned *freeq;
	uint32_t fq_head, fq_len;
	struct timer tick;
	uint64_t sessions, logins_ok, retr_bytes;
};

static void pc_start(struct pclient *pc);
static void pc_next(struct pclient *pc);

static void begin_stop(struct pbench *b)
{
	if (b->stopping)
		return;
	b->stopping = true;
	b->stop_ns = time_mono_ns();
}

/* Sessions kept open: measured from when all have logged in. */
static void window_start(struct pbench *b)
{
	if (b->window_ns || b->cfg->session_cmds || b->cfg->logins)
		return;
	b->window_ns = time_mono_ns();
	load_figure(b->st, "setup_seconds", (double)(b->window_ns - b->start_ns) / 1e9, false);
	load_window_start(b->st, 1u << POP_CONNECT | 1u << POP_USER | 1u << POP_PASS);
	if (b->cfg->duration_s)
		b->end_ns = b->window_ns + (uint64_t)b->cfg->duration_s * 1000000000ull;
}

static void pc_errorf(struct pclient *pc, const char *kind, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void pc_errorf(struct pclient *pc, const char *kind, const char *fmt, ...)
{
	char ex[160];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(ex, sizeof(ex), fmt, ap);
	va_end(ap);
	load_error(pc->b->st, kind, ex);
}

static uint32_t rnd_below(struct pbench *b, uint32_t n)
{
	return n ? (uint32_t)(load_rand(&b->rng) % n) : 0;
}

static void user_take(struct pclient *pc)
{
	struct pbench *b = pc->b;
	if (b->fq_len) {
		pc->user = b->freeq[b->fq_head];
		b->fq_head = (b->fq_head + 1) % b->nusers;
		b->fq_len--;
		pc->has_user = true;
	} else {
		pc->user = b->cfg->user_lo + rnd_below(b, b->nusers);
		pc->has_user = false;
	}
}

static void user_give_back(struct pclient *pc)
{
	struct pbench *b = pc->b;
	if (!pc->has_user)
		return;
	b->freeq[(b->fq_head + b->fq_len) % b->nusers] = pc->user;
	b->fq_len++;
	pc->has_user = false;
}

static void pc_send(struct pclient *pc, enum pop op, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void pc_send(struct pclient *pc, enum pop op, const char *fmt, ...)
{
	char line[600];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n > sizeof(line) - 3)
		n = (int)sizeof(line) - 3;
	line[n++] = '\r';
	line[n++] = '\n';
	pc->op = op;
	pc->rs = RS_STATUS;
	buf_reset(&pc->line);
	pc->t_start = time_mono_ns();
	conn_write(pc->c, line, (size_t)n);
}

static void set_count(struct pclient *pc, uint32_t n)
{
	if (n > pc->cap) {
		pc->cap = n;
		pc->sizes = xrealloc(pc->sizes, n * sizeof(*pc->sizes));
		pc->deleted = xrealloc(pc->deleted, n);
	}
	memset(pc->sizes, 0, n * sizeof(*pc->sizes));
	memset(pc->deleted, 0, n);
	pc->count = pc->live_msgs = n;
}

/* A message not deleted in this session, or 0. */
static uint32_t pick_msg(struct pclient *pc)
{
	if (!pc->live_msgs)
		return 0;
	for (int tries = 0; tries < 8; tries++) {
		uint32_t m = 1 + rnd_below(pc->b, pc->count);
		if (!pc->deleted[m - 1])
			return m;
	}
	uint32_t start = rnd_below(pc->b, pc->count);
	for (uint32_t i = 0; i < pc->count; i++) {
		uint32_t m = (start + i) % pc->count;
		if (!pc->deleted[m])
			return m + 1;
	}
	return 0;
}

static void pc_quit(struct pclient *pc)
{
	pc_send(pc, POP_QUIT, "QUIT");
}

static void pc_next(struct pclient *pc)
{
	struct pbench *b = pc->b;
	const struct load_config *cfg = b->cfg;
	if (!pc->c || conn_closing(pc->c))
		return;
	if ((cfg->count && b->issued >= cfg->count) || (b->end_ns && time_mono_ns() >= b->end_ns))
		begin_stop(b);
	if (b->stopping || cfg->logins ||
	    (cfg->session_cmds && pc->session_done >= cfg->session_cmds)) {
		pc_quit(pc);
		return;
	}
	b->issued++;
	pc->session_done++;
	unsigned r = rnd_below(b, b->wsum), k = 0;
	while (k + 1 < PMIX_N && r >= b->cum[k])
		k++;
	enum pop op = pmix_op[k];
	if (op == POP_RETR || op == POP_TOP || op == POP_DELE) {
		pc->msgno = pick_msg(pc);
		if (!pc->msgno)
			op = POP_STAT;
	}
	switch (op) {
	case POP_RETR: pc_send(pc, op, "RETR %u", pc->msgno); break;
	case POP_TOP: pc_send(pc, op, "TOP %u 0", pc->msgno); break;
	case POP_DELE: pc_send(pc, op, "DELE %u", pc->msgno); break;
	case POP_LIST: pc_send(pc, op, "LIST"); break;
	case POP_UIDL: pc_send(pc, op, "UIDL"); break;
	case POP_NOOP: pc_send(pc, op, "NOOP"); break;
	case POP_QUIT: pc_quit(pc); break;
	default: pc_send(pc, POP_STAT, "STAT"); break;
	}
}

static bool multi_line(enum pop op)
{
	return op == POP_LIST || op == POP_UIDL || op == POP_RETR || op == POP_TOP;
}

/* "n m" with both numbers plain decimal: 0 or -1. */
static int two_numbers(const char *s, uint64_t *a, uint64_t *b)
{
	char *end;
	if (!isdigit((unsigned char)s[0]))
		return -1;
	*a = strtoull(s, &end, 10);
	if (*end != ' ' || !isdigit((unsigned char)end[1]))
		return -1;
	*b = strtoull(end + 1, &end, 10);
	return *end == '\0' ? 0 : -1;
}

static void pc_done(struct pclient *pc, bool ok, const char *status_line)
{
	struct pbench *b = pc->b;
	enum pop op = pc->op;
	pc->op = POP_NONE;
	pc->rs = RS_STATUS;
	if (!ok) {
		char kind[48];
		bool in_use = strstr(status_line, "[IN-USE]") != NULL;
		snprintf(kind, sizeof(kind), "%s_%s", pop_names[op], in_use ? "IN_USE" : "ERR");
		load_op_failed(b->st, op);
		load_error(b->st, kind, status_line);
		if (op == POP_USER || op == POP_PASS || op == POP_STAT) {
			pc_quit(pc);
			return;
		}
		if (op == POP_QUIT) {
			pc->quit_done = true;
			conn_close(pc->c);
			return;
		}
		pc_next(pc);
		return;
	}
	load_op_ok(b->st, op, time_mono_ns() - pc->t_start);
	char qu[300];
	switch (op) {
	case POP_CONNECT:
		if (b->cfg->logins && b->cfg->count && b->issued >= b->cfg->count)
			begin_stop(b);
		if (b->cfg->logins && b->stopping) {
			pc_quit(pc);
			return;
		}
		load_user_name(b->cfg, pc->user, qu, sizeof(qu));
		if (b->cfg->logins)
			b->issued++;
		pc_send(pc, POP_USER, "USER %s", qu);
		return;
	case POP_USER:
		pc_send(pc, POP_PASS, "PASS %s", b->cfg->password);
		return;
	case POP_PASS:
		b->logins_ok++;
		if (b->cfg->logins) {
			if (b->cfg->count && b->issued >= b->cfg->count)
				begin_stop(b);
			if (b->end_ns && time_mono_ns() >= b->end_ns)
				begin_stop(b);
			pc_quit(pc);
			return;
		}
		pc_send(pc, POP_STAT, "STAT");
		return;
	case POP_STAT:
		if (!pc->was_ready) {
			pc->was_ready = true;
			if (++b->ready == b->ncl)
				window_start(b);
		}
		break;
	case POP_RETR:
		b->retr_bytes += pc->body_bytes;
		if (b->cfg->check && pc->msgno && pc->sizes[pc->msgno - 1] &&
		    pc->sizes[pc->msgno - 1] != pc->body_bytes)
			pc_errorf(pc, "check_retr_size",
				  "RETR %u gave %" PRIu64 " octets, LIST said %" PRIu64, pc->msgno,
				  pc->body_bytes, pc->sizes[pc->msgno - 1]);
		break;
	case POP_DELE:
		if (pc->msgno && !pc->deleted[pc->msgno - 1]) {
			pc->deleted[pc->msgno - 1] = 1;
			pc->live_msgs--;
		}
		break;
	case POP_QUIT:
		pc->quit_done = true;
		conn_close(pc->c);
		return;
	default:
		break;
	}
	pc_next(pc);
}

static void on_status(struct pclient *pc, char *line)
{
	struct pbench *b = pc->b;
	bool check = b->cfg->check;
	bool ok = strncmp(line, "+OK", 3) == 0 && (line[3] == '\0' || line[3] == ' ');
	bool err = strncmp(line, "-ERR", 4) == 0 && (line[4] == '\0' || line[4] == ' ');
	if (!ok && !err) {
		pc_errorf(pc, "protocol", "%s reply: %.100s",
			  pc->op < POP_N ? pop_names[pc->op] : "unexpected", line);
		pc->error_counted = true;
		conn_close(pc->c);
		return;
	}
	if (pc->op == POP_NONE) {
		pc_errorf(pc, "unexpected_reply", "%.100s", line);
		return;
	}
	if (ok && pc->op == POP_STAT) {
		uint64_t n, sz;
		if (two_numbers(line + 4, &n, &sz) < 0 || n > (4u << 20)) {
			if (check)
				pc_errorf(pc, "check_stat", "%.100s", line);
			n = 0;
		}
		/* Deletions of this session stay: STAT counts what is left,
		 * but numbers keep referring to the original messages. */
		if (pc->count == 0 || pc->session_done == 0)
			set_count(pc, (uint32_t)n);
		else if (check && n + (pc->count - pc->live_msgs) != pc->count)
			pc_errorf(pc, "check_stat", "STAT %" PRIu64 " with %u messages, %u deleted",
				  n, pc->count, pc->count - pc->live_msgs);
	}
	if (ok && multi_line(pc->op)) {
		pc->rs = pc->op == POP_LIST || pc->op == POP_UIDL ? RS_LINES : RS_BODY;
		pc->bol = true;
		pc->dot = 0;
		pc->body_bytes = 0;
		buf_reset(&pc->line);
		return;
	}
	pc_done(pc, ok, line);
}

static void on_listing_line(struct pclient *pc, char *line)
{
	struct pbench *b = pc->b;
	if (!b->cfg->check)
		return;
	char *sp = strchr(line, ' ');
	uint64_t n = 0, size = 0;
	if (pc->op == POP_LIST) {
		if (two_numbers(line, &n, &size) < 0) {
			pc_errorf(pc, "check_list", "LIST line '%.80s'", line);
			return;
		}
	} else {
		char *end;
		n = strtoull(line, &end, 10);
		size_t ul = sp ? strlen(sp + 1) : 0;
		bool uid_ok = sp == end && ul >= 1 && ul <= 70;
		for (size_t i = 0; uid_ok && i < ul; i++)
			uid_ok = sp[1 + i] >= 0x21 && sp[1 + i] <= 0x7e;
		if (!isdigit((unsigned char)line[0]) || !uid_ok) {
			pc_errorf(pc, "check_uidl", "UIDL line '%.80s'", line);
			return;
		}
	}
	if (n == 0 || n > pc->count || pc->deleted[n - 1]) {
		pc_errorf(pc, "check_listing_msg", "%s lists message %" PRIu64 " of %u%s",
			  pop_names[pc->op], n, pc->count,
			  n && n <= pc->count && pc->deleted[n - 1] ? " (deleted)" : "");
		return;
	}
	if (pc->op == POP_LIST)
		pc->sizes[n - 1] = size;
}

/* A listing, line by line; returns bytes used, sets done at its end. */
static size_t read_lines(struct pclient *pc, const uint8_t *d, size_t n, bool *done)
{
	size_t off = 0;
	while (off < n) {
		const uint8_t *lf = memchr(d + off, '\n', n - off);
		size_t take = lf ? (size_t)(lf - (d + off)) + 1 : n - off;
		if (buf_append(&pc->line, d + off, take) < 0) {
			pc_errorf(pc, "line_too_long", "%s listing", pop_names[pc->op]);
			pc->error_counted = true;
			conn_close(pc->c);
			return n;
		}
		off += take;
		if (!lf)
			break;
		size_t l = pc->line.len - 1;
		if (l && pc->line.data[l - 1] == '\r')
			l--;
		char *s = (char *)pc->line.data;
		s[l] = '\0';
		if (l == 1 && s[0] == '.') {
			*done = true;
			return off;
		}
		on_listing_line(pc, s[0] == '.' ? s + 1 : s);
		buf_reset(&pc->line);
	}
	return off;
}

/* A message, counted and unstuffed; returns bytes used. */
static size_t read_body(struct pclient *pc, const uint8_t *d, size_t n, bool *done)
{
	size_t off = 0;
	while (off < n) {
		if (pc->bol) {
			uint8_t ch = d[off];
			if (pc->dot == 0 && ch == '.') {
				pc->dot = 1;
				off++;
				continue;
			}
			if (pc->dot == 1 && ch == '\r') {
				pc->dot = 2;
				off++;
				continue;
			}
			if ((pc->dot == 1 || pc->dot == 2) && ch == '\n') {
				*done = true;
				return off + 1;
			}
			if (pc->dot == 2)
				pc->body_bytes++; /* ".\r" then data: keep the CR */
			pc->dot = 0;
			pc->bol = false;
		}
		const uint8_t *lf = memchr(d + off, '\n', n - off);
		if (!lf) {
			pc->body_bytes += n - off;
			return n;
		}
		size_t take = (size_t)(lf - (d + off)) + 1;
		pc->body_bytes += take;
		off += take;
		pc->bol = true;
	}
	return off;
}

static ssize_t pc_on_data(struct conn *c, const uint8_t *d, size_t n)
{
	struct pclient *pc = conn_user(c);
	size_t off = 0;
	while (off < n && !conn_closing(c)) {
		if (pc->rs == RS_STATUS) {
			const uint8_t *lf = memchr(d + off, '\n', n - off);
			size_t take = lf ? (size_t)(lf - (d + off)) + 1 : n - off;
			if (buf_append(&pc->line, d + off, take) < 0) {
				pc_errorf(pc, "line_too_long", "status line");
				pc->error_counted = true;
				return -1;
			}
			off += take;
			if (!lf)
				break;
			size_t l = pc->line.len - 1;
			if (l && pc->line.data[l - 1] == '\r')
				l--;
			char s[POP_LINE_MAX + 1];
			memcpy(s, pc->line.data, l);
			s[l] = '\0';
			buf_reset(&pc->line);
			on_status(pc, s);
			continue;
		}
		bool done = false;
		off += pc->rs == RS_LINES ? read_lines(pc, d + off, n - off, &done)
					  : read_body(pc, d + off, n - off, &done);
		if (done)
			pc_done(pc, true, "");
	}
	return (ssize_t)n;
}

static void pc_timer(struct timer *t)
{
	struct pclient *pc = t->arg;
	pc->timer_restart = false;
	if (!pc->b->stopping)
		pc_start(pc);
}

static void pc_on_close(struct conn *c, enum conn_close_reason why)
{
	struct pclient *pc = conn_user(c);
	struct pbench *b = pc->b;
	pc->c = NULL;
	b->live--;
	user_give_back(pc);
	bool clean = pc->quit_done;
	if (!clean && !pc->error_counted) {
		char kind[48];
		snprintf(kind, sizeof(kind), "%s_%s",
			 why == CONN_CLOSE_CONNECT ? "connect" : why == CONN_CLOSE_TIMEOUT ? "timeout"
				 : why == CONN_CLOSE_PEER ? "closed" : why == CONN_CLOSE_TLS ? "tls"
				 : "aborted",
			 pc->op < POP_N ? pop_names[pc->op] : "idle");
		load_error(b->st, kind, NULL);
	}
	if (!clean && pc->op < POP_N)
		load_op_failed(b->st, pc->op);
	pc->op = POP_NONE;
	if (b->stopping)
		return;
	if (clean) {
		pc_start(pc);
	} else {
		pc->timer_restart = true;
		timer_start(b->loop, &pc->timer, 100);
	}
}

static const struct conn_handler pc_handler = {
	.name = "pop3c",
	.on_data = pc_on_data,
	.on_close = pc_on_close,
};

static void pc_start(struct pclient *pc)
{
	struct pbench *b = pc->b;
	const struct load_config *cfg = b->cfg;
	user_take(pc);
	pc->op = POP_NONE;
	pc->rs = RS_STATUS;
	buf_reset(&pc->line);
	pc->count = pc->live_msgs = 0;
	pc->session_done = 0;
	pc->quit_done = false;
	pc->error_counted = false;
	b->sessions++;
	pc->t_start = time_mono_ns();
	pc->c = conn_connect(b->loop, (const struct sockaddr *)&cfg->sa, cfg->sa_len, &pc_handler, pc);
	if (!pc->c) {
		load_error(b->st, "connect_CONNECT", "socket failed");
		load_op_failed(b->st, POP_CONNECT);
		user_give_back(pc);
		pc->timer_restart = true;
		timer_start(b->loop, &pc->timer, 100);
		return;
	}
	b->live++;
	pc->op = POP_CONNECT;
	conn_set_idle_timeout(pc->c, cfg->timeout_ms);
	if (cfg->tls) {
		SSL *ssl = tls_client_new_ssl(b->tc, cfg->servername);
		if (!ssl || conn_starttls_client(pc->c, ssl) < 0) {
			load_error(b->st, "tls_setup", NULL);
			pc->error_counted = true;
			conn_abort(pc->c, CONN_CLOSE_LOCAL);
		}
	}
}

static void stop_all(struct pbench *b)
{
	begin_stop(b);
	for (unsigned i = 0; i < b->ncl; i++)
		if (timer_armed(&b->cl[i].timer))
			timer_stop(b->loop, &b->cl[i].timer);
}

static void tick(struct timer *t)
{
	struct pbench *b = t->arg;
	uint64_t now = time_mono_ns();
	if (!b->window_ns && now - b->start_ns >= (uint64_t)b->cfg->timeout_ms * 1000000ull)
		window_start(b);
	if ((b->end_ns && now >= b->end_ns) || (b->cfg->count && b->issued >= b->cfg->count))
		stop_all(b);
	char extra[64];
	snprintf(extra, sizeof(extra), "sessions=%u%s", b->live,
		 !b->cfg->session_cmds && !b->cfg->logins && !b->window_ns ? " (logging in)" : "");
	load_progress(b->st, extra);
	timer_start(b->loop, t, 1000);
}

static bool run_finished(void *arg)
{
	struct pbench *b = arg;
	return b->stopping && b->live == 0;
}

int bench_pop3_run(const struct load_config *cfg)
{
	const char *err = NULL;
	struct loop_config lc = { .buf_count = 1024 };
	struct loop *l = loop_new(&lc, &err);
	if (!l) {
		fprintf(stderr, "mailbench: %s\n", err);
		return 1;
	}
	struct load_stats *st = xcalloc(1, sizeof(*st));
	load_stats_init(st, "pop3", cfg->progress);
	struct pbench b = { .cfg = cfg, .loop = l, .st = st, .rng = time_mono_ns() | 1 };
	b.nusers = cfg->user_hi - cfg->user_lo + 1;
	b.ncl = cfg->clients;
	for (unsigned k = 0; k < PMIX_N; k++) {
		b.wsum += cfg->weights[k];
		b.cum[k] = b.wsum;
	}
	for (unsigned i = 0; i < POP_N; i++)
		load_op_name(st, i, pop_names[i], i != POP_CONNECT);
	if (b.nusers < cfg->clients)
		fprintf(stderr, "mailbench: pop3: %u users for %u clients: some logins will find "
				"the maildrop in use\n", b.nusers, cfg->clients);
	if (cfg->tls) {
		b.tc = tls_client_new(cfg->tls_ca, NULL, NULL, &err);
		if (!b.tc) {
			fprintf(stderr, "mailbench: TLS: %s\n", err);
			free(st);
			loop_free(&l);
			return 1;
		}
	}
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < cfg->clients + 64u) {
		rl.rlim_cur = MIN(rl.rlim_max, (rlim_t)cfg->clients + 64);
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	b.freeq = xcalloc(b.nusers, sizeof(*b.freeq));
	for (uint32_t i = 0; i < b.nusers; i++)
		b.freeq[i] = cfg->user_lo + i;
	b.fq_len = b.nusers;
	b.cl = xcalloc(b.ncl, sizeof(*b.cl));
	b.start_ns = st->start_ns = time_mono_ns();
	if (cfg->duration_s && (cfg->session_cmds || cfg->logins))
		b.end_ns = st->start_ns + (uint64_t)cfg->duration_s * 1000000000ull;
	for (unsigned i = 0; i < b.ncl; i++) {
		struct pclient *pc = &b.cl[i];
		pc->b = &b;
		pc->idx = i;
		buf_init(&pc->line, POP_LINE_MAX);
		timer_init(&pc->timer, pc_timer, pc);
	}
	timer_init(&b.tick, tick, &b);
	timer_start(l, &b.tick, 1000);
	for (unsigned i = 0; i < b.ncl; i++)
		pc_start(&b.cl[i]);
	uint64_t max_ms = cfg->duration_s ? (uint64_t)cfg->duration_s * 1000 + 2ull * cfg->timeout_ms + 5000
					  : UINT32_MAX;
	if (loop_run_until(l, run_finished, &b, (uint32_t)MIN(max_ms, (uint64_t)UINT32_MAX)) < 0) {
		stop_all(&b);
		loop_run_until(l, run_finished, &b, 2000);
	}
	st->end_ns = b.stop_ns ? b.stop_ns : time_mono_ns();
	timer_stop(l, &b.tick);
	unsigned left = 0;
	for (unsigned i = 0; i < b.ncl; i++) {
		struct pclient *pc = &b.cl[i];
		if (timer_armed(&pc->timer))
			timer_stop(l, &pc->timer);
		if (pc->c) {
			left++;
			pc->error_counted = true;
			pc->quit_done = true;
			conn_abort(pc->c, CONN_CLOSE_LOCAL);
		}
	}
	if (left)
		load_error(st, "unfinished_at_end", NULL);
	load_progress_end(st);
	double secs = (double)(st->end_ns - st->start_ns) / 1e9;
	snprintf(st->desc, sizeof(st->desc), "pop3 %s%s: %u clients, users %u-%u, %s%s", cfg->target,
		 cfg->tls ? " (TLS)" : "", cfg->clients, cfg->user_lo, cfg->user_hi,
		 cfg->logins ? "logins only" : cfg->session_cmds ? "login per session"
								 : "sessions kept open",
		 cfg->check ? ", checked" : "");
	load_figure(st, "clients", cfg->clients, true);
	load_figure(st, "sessions", (double)b.sessions, true);
	load_figure(st, "logins", (double)b.logins_ok, true);
	load_figure(st, "logins_per_second", secs > 0 ? (double)b.logins_ok / secs : 0, false);
	load_figure(st, "retr_bytes", (double)b.retr_bytes, true);
	load_report(st, stdout, cfg->json);
	for (unsigned i = 0; i < b.ncl; i++) {
		buf_cleanup(&b.cl[i].line);
		free(b.cl[i].sizes);
		free(b.cl[i].deleted);
	}
	free(b.cl);
	free(b.freeq);
	tls_client_free(&b.tc);
	loop_free(&l);
	int status = st->errors ? 1 : 0;
	free(st);
	return status;
}
