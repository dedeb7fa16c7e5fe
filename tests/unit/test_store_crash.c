/* Crash safety of the mailbox store: a child process delivers with many
 * concurrent writers (mixed with STORE, EXPUNGE, MOVE and COPY) while the
 * parent kill -9's it at random moments, at least 20 times. After every
 * kill the parent reopens the shard and checks:
 *   - every delivery acknowledged before the kill (store_deliver returned
 *     0 and the child wrote an ack record to a pipe) is present and
 *     byte-exact, unless an acknowledged EXPUNGE/MOVE removed it (an op
 *     that was started but not acknowledged may or may not have happened);
 *   - every message seen after an earlier restart is still there unless
 *     such an op removed it;
 *   - nothing half-written is visible: every message's body reads back
 *     complete, with the size and SHA-256 its record names;
 *   - store_verify() finds no counter mismatch (counts, unseen, sizes,
 *     user usage, body reference counts, chunks);
 *   - UIDs are never handed out twice and never reused across restarts
 *     (each new UID >= the UIDNEXT seen at the previous restart), UIDNEXT
 *     and HIGHESTMODSEQ never go back, MODSEQs within a mailbox are
 *     distinct, new messages' MODSEQs are above the previous HIGHESTMODSEQ,
 *     and UIDVALIDITY never changes.
 * The child is a fresh exec of this binary (`--child`), so RocksDB's
 * background threads of the parent never leak into it.
 *
 * Env: MAIL_TEST_TMP scratch root; MAIL_CRASH_ROUNDS (default 24),
 * MAIL_CRASH_THREADS (default 8), MAIL_CRASH_SEED; MAIL_CRASH_DEBUG=1 logs
 * every ack the child sends. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/sha.h>

#include "storage/store.h"

#define NUSERS 4
#define NBOX 4 /* INBOX Archive Trash Drafts */
#define MAX_BODY (300u * 1024)
#define CHUNK_BYTES (64u * 1024) /* several chunks per large body */

static const char *const box_names[NBOX] = { "INBOX", "Archive", "Trash", "Drafts" };

static int failures;
#define FAIL(...)                                                        \
	do {                                                             \
		fprintf(stderr, "test_store_crash: " __VA_ARGS__);      \
		fputc('\n', stderr);                                     \
		failures++;                                              \
	} while (0)

/* ---- shared: bodies from seeds ------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

/* 100 B .. 300 KiB: mostly small, some over several chunks. */
static size_t body_size(uint64_t seed)
{
	uint64_t h = mix64(seed ^ 0x5157);
	unsigned r = (unsigned)(h % 100);
	uint64_t h2 = mix64(h);
	if (r < 60)
		return 100 + (size_t)(h2 % 4000);
	if (r < 88)
		return 4096 + (size_t)(h2 % 60000);
	return CHUNK_BYTES + (size_t)(h2 % (MAX_BODY - CHUNK_BYTES + 1));
}

/* The exact bytes of message `seed` (len = body_size(seed)) into p. */
static size_t body_gen(uint64_t seed, uint8_t *p)
{
	size_t len = body_size(seed);
	static const char b64[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	int h = snprintf((char *)p, len, "Message-ID: <%016llx@crash.test>\r\nSubject: %llu\r\n\r\n",
			 (unsigned long long)seed, (unsigned long long)seed);
	size_t i = (size_t)h < len ? (size_t)h : len;
	uint64_t s = mix64(seed) | 1;
	for (; i < len; i++) {
		if (i % 78 == 76) {
			p[i] = '\r';
		} else if (i % 78 == 77) {
			p[i] = '\n';
		} else {
			s ^= s << 13;
			s ^= s >> 7;
			s ^= s << 17;
			p[i] = (uint8_t)b64[s & 63];
		}
	}
	return len;
}

/* ---- ack records (child -> parent, one write() each, < PIPE_BUF) ------------ */

enum ack_kind {
	ACK_READY = 1,
	ACK_DELIVER, /* mbid uid uidvalidity seed */
	ACK_INTENT,  /* about to expunge or move mbid/uid */
	ACK_EXPUNGE, /* mbid uid gone */
	ACK_MOVE,    /* mbid uid -> dst_mbid dst_uid */
	ACK_COPY,    /* mbid uid -> dst_mbid dst_uid (seed) */
};

struct ack {
	uint32_t kind;
	uint32_t uidvalidity;
	uint64_t mbid;
	uint64_t seed;
	uint64_t dst_mbid;
	uint32_t uid;
	uint32_t dst_uid;
};

/* ---- child ------------------------------------------------------------------------ */

struct child {
	struct shard *sh;
	int fd;
	uint64_t mb[NUSERS][NBOX];
	unsigned round;
};

struct own {
	uint64_t mbid;
	uint32_t uid;
	uint64_t seed;
};

struct worker {
	struct child *c;
	unsigned idx;
	uint64_t rng;
	struct own *own;
	size_t n_own;
	uint8_t *body;
};

static uint64_t wrand(struct worker *w)
{
	w->rng = mix64(w->rng + 0x9e3779b97f4a7c15ull);
	return w->rng;
}

static void send_ack(struct child *c, const struct ack *a)
{
	if (getenv("MAIL_CRASH_DEBUG"))
		fprintf(stderr, "ack %u mb %llu uid %u seed %llx size %zu dst %llu/%u\n", a->kind,
			(unsigned long long)a->mbid, a->uid, (unsigned long long)a->seed,
			a->seed ? body_size(a->seed) : 0, (unsigned long long)a->dst_mbid, a->dst_uid);
	if (write(c->fd, a, sizeof(*a)) != (ssize_t)sizeof(*a))
		_exit(3);
}

static char user_name[NUSERS][32];

static void own_add(struct worker *w, uint64_t mbid, uint32_t uid, uint64_t seed)
{
	if (w->n_own == 4096) /* forget the oldest half: they stay untouched */
		memmove(w->own, w->own + 2048, 2048 * sizeof(*w->own)), w->n_own = 2048;
	w->own[w->n_own++] = (struct own){ mbid, uid, seed };
}

static void do_deliver(struct worker *w)
{
	struct child *c = w->c;
	uint64_t seed;
	/* Some popular bodies recur across deliveries, users and rounds
	 * (dedup and refcounts across calls); the rest are fresh. */
	if (wrand(w) % 10 == 0)
		seed = 1 + wrand(w) % 12;
	else
		seed = ((uint64_t)c->round << 48) | ((uint64_t)w->idx << 40) | (wrand(w) >> 24);
	if (seed == 0)
		seed = 1;
	size_t len = body_gen(seed, w->body);
	struct body_writer *bw = body_writer_new(c->sh);
	for (size_t off = 0; off < len;) {
		size_t step = (size_t)(1 + wrand(w) % 50000);
		step = MIN(len - off, step);
		body_writer_add(bw, w->body + off, step);
		off += step;
	}
	struct deliver_target t[4];
	memset(t, 0, sizeof(t));
	size_t n = 1;
	unsigned ua = (unsigned)(wrand(w) % NUSERS);
	t[0].user = user_name[ua];
	t[0].mailbox_id = wrand(w) % 5 == 0 ? c->mb[ua][1] : 0;
	if (wrand(w) % 4 == 0) {
		/* the same body to several targets: another user, the same
		 * user's Archive, or the same mailbox twice */
		unsigned ub = (unsigned)(wrand(w) % NUSERS);
		t[n++] = (struct deliver_target){ .user = user_name[ub] };
		if (wrand(w) % 2)
			t[n++] = (struct deliver_target){ .user = user_name[ua],
							  .mailbox_id = c->mb[ua][1] };
		if (wrand(w) % 3 == 0)
			t[n++] = (struct deliver_target){ .user = user_name[ub] };
	}
	for (size_t i = 0; i < n; i++)
		t[i].flags = wrand(w) % 3 == 0 ? FLAG_SEEN : 0;
	const char *err = NULL;
	enum storage_status st;
	int r = store_deliver(c->sh, bw, 0, t, n, &st, &err);
	body_writer_free(&bw);
	if (r < 0) {
		fprintf(stderr, "child: deliver: %s\n", err);
		_exit(4);
	}
	for (size_t i = 0; i < n; i++) {
		if (t[i].status_r != ST_OK) {
			fprintf(stderr, "child: target status %s\n", storage_status_str(t[i].status_r));
			_exit(4);
		}
		unsigned u = (unsigned)(t[i].user[1] - '0');
		uint64_t mbid = t[i].mailbox_id ? t[i].mailbox_id : c->mb[u][0];
		struct ack a = { .kind = ACK_DELIVER, .uidvalidity = t[i].uidvalidity_r, .mbid = mbid,
				 .seed = seed, .uid = t[i].uid_r };
		send_ack(c, &a);
		own_add(w, mbid, t[i].uid_r, seed);
	}
}

static uint64_t mbox_user(struct child *c, uint64_t mbid, unsigned *box_r)
{
	for (unsigned u = 0; u < NUSERS; u++)
		for (unsigned b = 0; b < NBOX; b++)
			if (c->mb[u][b] == mbid) {
				*box_r = b;
				return u;
			}
	_exit(5);
}

static void *worker_main(void *p)
{
	struct worker *w = p;
	struct child *c = w->c;
	const char *err = NULL;
	enum storage_status st;
	for (;;) {
		unsigned op = (unsigned)(wrand(w) % 100);
		if (op < 60 || w->n_own == 0) {
			do_deliver(w);
			continue;
		}
		size_t pick = (size_t)(wrand(w) % w->n_own);
		struct own o = w->own[pick];
		if (op < 75) {
			/* flags: counters (unseen) and modseqs, checked by verify */
			static const char *const kw[] = { "$label1", NULL };
			struct msg_info *ch = NULL;
			uint32_t *failed = NULL;
			size_t nch = 0, nf = 0;
			enum store_flags_mode mode = wrand(w) % 2 ? FLAGS_ADD : FLAGS_REMOVE;
			if (store_flags(c->sh, o.mbid, &o.uid, 1, mode, FLAG_SEEN | FLAG_FLAGGED,
					wrand(w) % 2 ? kw : NULL, 0, &ch, &nch, &failed, &nf, &st,
					&err) < 0) {
				fprintf(stderr, "child: flags: %s\n", err);
				_exit(4);
			}
			for (size_t i = 0; i < nch; i++)
				msg_info_cleanup(&ch[i]);
			free(ch);
			free(failed);
			continue;
		}
		unsigned box;
		unsigned u = (unsigned)mbox_user(c, o.mbid, &box);
		uint32_t *s = NULL, *d = NULL, vv = 0;
		size_t n = 0;
		if (op < 85) {
			struct ack a = { .kind = ACK_INTENT, .mbid = o.mbid, .uid = o.uid };
			send_ack(c, &a);
			if (store_expunge(c->sh, o.mbid, &o.uid, 1, false, &s, &n, &st, &err) < 0 ||
			    n != 1) {
				fprintf(stderr, "child: expunge: %s\n", err ? err : "nothing expunged");
				_exit(4);
			}
			free(s);
			a.kind = ACK_EXPUNGE;
			send_ack(c, &a);
			w->own[pick] = w->own[--w->n_own];
		} else {
			bool move = op < 93;
			uint64_t dst = c->mb[u][move ? (box == 2 ? 0 : 2) : (box == 3 ? 1 : 3)];
			if (move) {
				struct ack a = { .kind = ACK_INTENT, .mbid = o.mbid, .uid = o.uid };
				send_ack(c, &a);
			}
			if (store_copy(c->sh, o.mbid, dst, &o.uid, 1, move, &s, &d, &n, &vv, &st,
				       &err) < 0 ||
			    n != 1) {
				fprintf(stderr, "child: copy: %s\n", err ? err : "nothing copied");
				_exit(4);
			}
			struct ack a = { .kind = move ? ACK_MOVE : ACK_COPY, .uidvalidity = vv,
					 .mbid = o.mbid, .seed = o.seed, .dst_mbid = dst,
					 .uid = o.uid, .dst_uid = d[0] };
			send_ack(c, &a);
			free(s);
			free(d);
			if (move)
				w->own[pick] = (struct own){ dst, a.dst_uid, o.seed };
			else
				own_add(w, dst, a.dst_uid, o.seed);
		}
	}
	return NULL;
}

static int child_main(const char *dir, unsigned round, int fd, unsigned nthreads, uint64_t seed)
{
	alarm(60); /* never outlive a lost parent */
	const char *err = NULL;
	struct storage_options o = { .dir = dir, .body_chunk_bytes = CHUNK_BYTES,
				     .block_cache_bytes = 8u << 20 };
	struct storage *st = storage_open(&o, &err);
	struct shard *sh = st ? storage_shard_open(st, 0, true, &err) : NULL;
	if (!sh) {
		fprintf(stderr, "child: open: %s\n", err);
		return 2;
	}
	struct child c = { .sh = sh, .fd = fd, .round = round };
	for (unsigned u = 0; u < NUSERS; u++) {
		enum storage_status status;
		/* u3 has a (large) quota so the quota path runs */
		if (store_user_create(sh, user_name[u], "", u == 3 ? (1ull << 40) : 0, &status, &err) <
			    0 &&
		    status != ST_EXISTS) {
			fprintf(stderr, "child: user_create: %s\n", err);
			return 2;
		}
		for (unsigned b = 0; b < NBOX; b++) {
			struct mailbox_info mi;
			if (store_mailbox_get(sh, user_name[u], box_names[b], &mi, &status, &err) < 0) {
				fprintf(stderr, "child: mailbox_get: %s\n", err);
				return 2;
			}
			c.mb[u][b] = mi.id;
		}
	}
	struct ack ready = { .kind = ACK_READY };
	send_ack(&c, &ready);
	pthread_t th[64];
	static struct worker w[64];
	nthreads = MIN(nthreads, 64u);
	for (unsigned i = 0; i < nthreads; i++) {
		w[i] = (struct worker){ .c = &c, .idx = i, .rng = mix64(seed + i * 7919 + round),
					.own = malloc(4096 * sizeof(struct own)),
					.body = malloc(MAX_BODY) };
		pthread_create(&th[i], NULL, worker_main, &w[i]);
	}
	for (unsigned i = 0; i < nthreads; i++)
		pthread_join(th[i], NULL);
	return 0;
}

/* ---- parent: what must be in the store ------------------------------------------ */

enum exp_state { EXP_PRESENT = 1, EXP_UNCERTAIN, EXP_GONE };

struct exp {
	uint64_t mbid;
	uint32_t uid;
	uint8_t state;
	bool hash_known;
	bool seen; /* found at the current check */
	bool new_this_round;
	uint64_t seed;   /* 0 = unknown content (a delivery that was never acked) */
	uint8_t hash[32];
	uint64_t size;
};

static struct exp *exps;
static size_t n_exps, cap_exps;
static uint32_t *htab; /* index + 1, open addressing */
static size_t htab_cap;

static uint64_t hkey(uint64_t mbid, uint32_t uid) { return mix64(mbid * 0x100000001ull ^ uid); }

static void htab_insert(size_t idx)
{
	size_t m = htab_cap - 1, i = (size_t)hkey(exps[idx].mbid, exps[idx].uid) & m;
	while (htab[i])
		i = (i + 1) & m;
	htab[i] = (uint32_t)idx + 1;
}

static struct exp *exp_find(uint64_t mbid, uint32_t uid)
{
	if (!htab)
		return NULL;
	size_t m = htab_cap - 1, i = (size_t)hkey(mbid, uid) & m;
	while (htab[i]) {
		struct exp *e = &exps[htab[i] - 1];
		if (e->mbid == mbid && e->uid == uid)
			return e;
		i = (i + 1) & m;
	}
	return NULL;
}

static struct exp *exp_add(uint64_t mbid, uint32_t uid)
{
	if ((n_exps + 1) * 2 > htab_cap) {
		free(htab);
		htab_cap = htab_cap ? htab_cap * 2 : 1 << 14;
		htab = calloc(htab_cap, sizeof(*htab));
		for (size_t i = 0; i < n_exps; i++)
			htab_insert(i);
	}
	if (n_exps == cap_exps) {
		cap_exps = cap_exps ? cap_exps * 2 : 1024;
		exps = realloc(exps, cap_exps * sizeof(*exps));
	}
	struct exp *e = &exps[n_exps];
	memset(e, 0, sizeof(*e));
	e->mbid = mbid;
	e->uid = uid;
	htab_insert(n_exps++);
	return e;
}

struct mbstate {
	uint64_t id;
	uint32_t uidvalidity, uidnext;
	uint64_t hms;
	bool known;
};
static struct mbstate mbs[NUSERS * NBOX];

static struct mbstate *mbs_find(uint64_t id)
{
	for (size_t i = 0; i < ARRAY_LEN(mbs); i++)
		if (mbs[i].known && mbs[i].id == id)
			return &mbs[i];
	return NULL;
}

/* A new UID handed out by an acked delivery/copy/move. */
static void new_uid(unsigned round, uint64_t mbid, uint32_t uid, uint32_t uidvalidity,
		    uint64_t seed)
{
	struct mbstate *m = mbs_find(mbid);
	if (m && uid < m->uidnext)
		FAIL("round %u: mailbox %llu: new UID %u below the UIDNEXT %u seen at the last restart "
		     "(UID reused)", round, (unsigned long long)mbid, uid, m->uidnext);
	if (m && uidvalidity && uidvalidity != m->uidvalidity)
		FAIL("round %u: mailbox %llu: UIDVALIDITY %u, was %u", round,
		     (unsigned long long)mbid, uidvalidity, m->uidvalidity);
	struct exp *e = exp_find(mbid, uid);
	if (e) {
		FAIL("round %u: mailbox %llu: UID %u acknowledged twice (seeds %llx, %llx)", round,
		     (unsigned long long)mbid, uid, (unsigned long long)e->seed,
		     (unsigned long long)seed);
		return;
	}
	e = exp_add(mbid, uid);
	e->state = EXP_PRESENT;
	e->seed = seed;
	e->size = body_size(seed);
	e->new_this_round = true;
}

static void apply_ack(unsigned round, const struct ack *a)
{
	struct exp *e;
	switch (a->kind) {
	case ACK_DELIVER:
		new_uid(round, a->mbid, a->uid, a->uidvalidity, a->seed);
		break;
	case ACK_COPY:
	case ACK_MOVE:
		new_uid(round, a->dst_mbid, a->dst_uid, a->uidvalidity, a->seed);
		if (a->kind == ACK_COPY)
			break;
		/* the source is gone */
		__attribute__((fallthrough));
	case ACK_EXPUNGE:
		e = exp_find(a->mbid, a->uid);
		if (!e)
			FAIL("round %u: ack for unknown message %llu/%u", round,
			     (unsigned long long)a->mbid, a->uid);
		else
			e->state = EXP_GONE;
		break;
	case ACK_INTENT:
		e = exp_find(a->mbid, a->uid);
		if (e && e->state == EXP_PRESENT)
			e->state = EXP_UNCERTAIN;
		break;
	default:
		FAIL("round %u: bad ack kind %u", round, a->kind);
	}
}

/* ---- parent: checking a restarted store --------------------------------------- */

struct reader {
	SHA256_CTX sha;
	const uint8_t *want; /* NULL = hash only */
	uint64_t pos;
	bool differs;
};

static int read_piece(void *arg, const uint8_t *p, size_t n)
{
	struct reader *r = arg;
	SHA256_Update(&r->sha, p, n);
	if (r->want && memcmp(r->want + r->pos, p, n) != 0)
		r->differs = true;
	r->pos += n;
	return 0;
}

static void report_line(void *arg, const char *line)
{
	fprintf(stderr, "round %u: verify: %s\n", *(unsigned *)arg, line);
}

static void check_store(const char *dir, unsigned round, uint8_t *scratch, unsigned long *checked_r)
{
	const char *err = NULL;
	struct storage_options o = { .dir = dir, .body_chunk_bytes = CHUNK_BYTES,
				     .block_cache_bytes = 8u << 20 };
	struct storage *st = storage_open(&o, &err);
	struct shard *sh = st ? storage_shard_open(st, 0, false, &err) : NULL;
	if (!sh) {
		/* killed before the shard was ever created */
		bool never = n_exps == 0;
		if (!never)
			FAIL("round %u: reopen: %s", round, err);
		storage_close(&st);
		return;
	}
	long v = store_verify(sh, report_line, &round, &err);
	if (v != 0)
		FAIL("round %u: store_verify = %ld (%s)", round, v, v < 0 ? err : "mismatches");
	for (size_t i = 0; i < n_exps; i++)
		exps[i].seen = false;
	for (unsigned u = 0; u < NUSERS; u++) {
		for (unsigned b = 0; b < NBOX; b++) {
			struct mailbox_info mi;
			enum storage_status status;
			char name[32];
			snprintf(name, sizeof(name), "u%u@crash.test", u);
			if (store_mailbox_get(sh, name, box_names[b], &mi, &status, &err) < 0)
				continue; /* not created yet (killed early in round 0) */
			struct mbstate *m = &mbs[u * NBOX + b];
			if (m->known) {
				if (mi.id != m->id || mi.uidvalidity != m->uidvalidity)
					FAIL("round %u: %s/%s: id/UIDVALIDITY changed", round, name,
					     box_names[b]);
				if (mi.uidnext < m->uidnext || mi.highestmodseq < m->hms)
					FAIL("round %u: %s/%s: UIDNEXT %u -> %u or HIGHESTMODSEQ %llu -> "
					     "%llu went back", round, name, box_names[b], m->uidnext,
					     mi.uidnext, (unsigned long long)m->hms,
					     (unsigned long long)mi.highestmodseq);
			}
			struct msg_info *ms = NULL;
			size_t n = 0;
			if (store_fetch_range(sh, mi.id, 1, UINT32_MAX, &ms, &n, &err) < 0) {
				FAIL("round %u: fetch_range: %s", round, err);
				continue;
			}
			if (n != mi.messages)
				FAIL("round %u: %s/%s: %zu messages, record says %u", round, name,
				     box_names[b], n, mi.messages);
			uint64_t *mods = malloc((n ? n : 1) * sizeof(*mods));
			for (size_t i = 0; i < n; i++) {
				struct msg_info *x = &ms[i];
				mods[i] = x->modseq;
				if (x->uid >= mi.uidnext || x->modseq > mi.highestmodseq)
					FAIL("round %u: %s/%s uid %u: UID >= UIDNEXT %u or MODSEQ %llu > "
					     "HIGHESTMODSEQ %llu", round, name, box_names[b], x->uid,
					     mi.uidnext, (unsigned long long)x->modseq,
					     (unsigned long long)mi.highestmodseq);
				if (m->known && x->uid >= m->uidnext && x->modseq <= m->hms)
					FAIL("round %u: %s/%s uid %u: new message with old MODSEQ", round,
					     name, box_names[b], x->uid);
				struct exp *e = exp_find(mi.id, x->uid);
				if (e && e->state == EXP_GONE) {
					FAIL("round %u: %s/%s uid %u: expunged/moved message is back",
					     round, name, box_names[b], x->uid);
					continue;
				}
				/* Read every new or uncertain message byte for byte;
				 * older ones by hash (a quarter of them in full). */
				bool full = !e || e->new_this_round || !e->hash_known ||
					    e->state == EXP_UNCERTAIN || (x->uid + round) % 4 == 0;
				struct reader r = { .want = NULL };
				SHA256_Init(&r.sha);
				uint64_t want_len = x->size;
				if (e && e->seed) {
					want_len = body_gen(e->seed, scratch);
					r.want = scratch;
					if (x->size != want_len)
						FAIL("round %u: %s/%s uid %u: size %llu, delivered %llu",
						     round, name, box_names[b], x->uid,
						     (unsigned long long)x->size,
						     (unsigned long long)want_len);
				}
				if (e && e->hash_known && memcmp(e->hash, x->body_hash, 32) != 0)
					FAIL("round %u: %s/%s uid %u: body hash changed", round, name,
					     box_names[b], x->uid);
				if (full && x->size == want_len) {
					if (store_body_read(sh, x->body_hash, 0, UINT64_MAX, read_piece,
							    &r, &err) < 0)
						FAIL("round %u: %s/%s uid %u: body_read: %s", round, name,
						     box_names[b], x->uid, err);
					uint8_t h[32];
					SHA256_Final(h, &r.sha);
					(*checked_r)++;
					if (r.pos != x->size || memcmp(h, x->body_hash, 32) != 0)
						FAIL("round %u: %s/%s uid %u: body half-written: %llu of "
						     "%llu bytes, hash %s", round, name, box_names[b],
						     x->uid, (unsigned long long)r.pos,
						     (unsigned long long)x->size,
						     memcmp(h, x->body_hash, 32) ? "differs" : "ok");
					if (r.differs)
						FAIL("round %u: %s/%s uid %u: content differs from what "
						     "was acknowledged (seed %llx)", round, name,
						     box_names[b], x->uid,
						     (unsigned long long)(e ? e->seed : 0));
				}
				if (!e) {
					/* delivered or copied but killed before the ack */
					e = exp_add(mi.id, x->uid);
					e->seed = 0;
					e->size = x->size;
				}
				if (!e->hash_known) {
					memcpy(e->hash, x->body_hash, 32);
					e->hash_known = true;
				}
				e->state = EXP_PRESENT;
				e->seen = true;
			}
			/* MODSEQs are distinct within the mailbox */
			for (size_t i = 1; i < n; i++)
				for (size_t j = i; j > 0 && mods[j - 1] > mods[j]; j--) {
					uint64_t t = mods[j];
					mods[j] = mods[j - 1];
					mods[j - 1] = t;
				}
			for (size_t i = 1; i < n; i++)
				if (mods[i] == mods[i - 1]) {
					FAIL("round %u: %s/%s: MODSEQ %llu used twice", round, name,
					     box_names[b], (unsigned long long)mods[i]);
					break;
				}
			free(mods);
			for (size_t i = 0; i < n; i++)
				msg_info_cleanup(&ms[i]);
			free(ms);
			*m = (struct mbstate){ .id = mi.id, .uidvalidity = mi.uidvalidity,
					       .uidnext = mi.uidnext, .hms = mi.highestmodseq,
					       .known = true };
		}
	}
	size_t lost = 0;
	for (size_t i = 0; i < n_exps; i++) {
		struct exp *e = &exps[i];
		if (e->state == EXP_PRESENT && !e->seen) {
			if (lost++ < 10)
				FAIL("round %u: acknowledged message %llu/%u (seed %llx) is missing",
				     round, (unsigned long long)e->mbid, e->uid,
				     (unsigned long long)e->seed);
			else
				failures++;
			e->state = EXP_GONE; /* report once */
		}
		if (e->state == EXP_UNCERTAIN && !e->seen)
			e->state = EXP_GONE;
		e->new_this_round = false;
	}
	storage_close(&st);
}

/* ---- parent: rounds ------------------------------------------------------------------ */

static uint64_t prng = 0x2545f4914f6cdd1dull;
static uint64_t prand(void)
{
	prng = mix64(prng + 0x9e3779b97f4a7c15ull);
	return prng;
}

static unsigned env_uint(const char *name, unsigned def)
{
	const char *s = getenv(name);
	return s && *s ? (unsigned)strtoul(s, NULL, 0) : def;
}

/* Read acks until the deadline (ms, monotonic) or EOF; 1 = EOF. */
static int pump(int fd, unsigned round, uint64_t deadline_ms, bool stop_at_ready, bool *ready,
		size_t *n_acks, struct ack *part, size_t *part_len)
{
	for (;;) {
		uint64_t now = time_mono_ms();
		if (now >= deadline_ms)
			return 0;
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int r = poll(&p, 1, (int)(deadline_ms - now));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return 0;
		ssize_t n = read(fd, (uint8_t *)part + *part_len, sizeof(*part) - *part_len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return 1;
		*part_len += (size_t)n;
		if (*part_len < sizeof(*part))
			continue;
		*part_len = 0;
		if (part->kind == ACK_READY) {
			*ready = true;
			if (stop_at_ready)
				return 0;
			continue;
		}
		apply_ack(round, part);
		(*n_acks)++;
	}
}

int main(int argc, char **argv)
{
	for (unsigned u = 0; u < NUSERS; u++)
		snprintf(user_name[u], sizeof(user_name[u]), "u%u@crash.test", u);
	if (argc == 7 && strcmp(argv[1], "--child") == 0)
		return child_main(argv[2], (unsigned)atoi(argv[3]), atoi(argv[4]),
				  (unsigned)atoi(argv[5]), strtoull(argv[6], NULL, 0));

	const char *tmp = getenv("MAIL_TEST_TMP");
	char root[1024], dir[1100];
	snprintf(root, sizeof(root), "%s/store_crash.%d", tmp ? tmp : "/tmp", (int)getpid());
	snprintf(dir, sizeof(dir), "%s/DATA", root);
	char cmd[2300];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s' && mkdir -p '%s'", root, root);
	if (system(cmd) != 0)
		return 1;
	unsigned rounds = env_uint("MAIL_CRASH_ROUNDS", 24);
	unsigned nthreads = env_uint("MAIL_CRASH_THREADS", 8);
	prng ^= env_uint("MAIL_CRASH_SEED", (unsigned)time(NULL));
	fprintf(stderr, "test_store_crash: %u rounds, %u writer threads, MAIL_CRASH_SEED=%llu\n",
		rounds, nthreads, (unsigned long long)(prng ^ 0x2545f4914f6cdd1dull));
	uint8_t *scratch = malloc(MAX_BODY);
	uint64_t t0 = time_mono_ms();
	size_t total_acks = 0;
	unsigned long checked = 0;
	unsigned killed_running = 0;
	for (unsigned round = 0; round < rounds && failures < 50; round++) {
		int fds[2];
		if (pipe(fds) < 0)
			return 1;
		char a_round[16], a_fd[16], a_thr[16], a_seed[32];
		snprintf(a_round, sizeof(a_round), "%u", round);
		snprintf(a_fd, sizeof(a_fd), "%d", fds[1]);
		snprintf(a_thr, sizeof(a_thr), "%u", nthreads);
		snprintf(a_seed, sizeof(a_seed), "%llu", (unsigned long long)prand());
		fflush(stderr);
		pid_t pid = fork();
		if (pid < 0)
			return 1;
		if (pid == 0) {
			close(fds[0]);
			execl("/proc/self/exe", argv[0], "--child", dir, a_round, a_fd, a_thr, a_seed,
			      (char *)NULL);
			_exit(127);
		}
		close(fds[1]);
		bool ready = false;
		size_t n_acks = 0, part_len = 0;
		struct ack part;
		int eof = 0;
		/* Most kills land while the writers run; every fifth one at a
		 * random moment from the start (during open or recovery). */
		bool early = round % 5 == 4;
		if (early) {
			eof = pump(fds[0], round, time_mono_ms() + prand() % 400, false, &ready, &n_acks,
				   &part, &part_len);
		} else {
			eof = pump(fds[0], round, time_mono_ms() + 30000, true, &ready, &n_acks, &part,
				   &part_len);
			if (!ready)
				FAIL("round %u: child not ready within 30 s", round);
			else
				eof = pump(fds[0], round, time_mono_ms() + 20 + prand() % 281, false,
					   &ready, &n_acks, &part, &part_len);
		}
		if (eof) {
			int stt = 0;
			waitpid(pid, &stt, 0);
			FAIL("round %u: child exited by itself (status %#x)", round, stt);
		} else {
			kill(pid, SIGKILL);
			int stt = 0;
			waitpid(pid, &stt, 0);
			if (!WIFSIGNALED(stt) || WTERMSIG(stt) != SIGKILL)
				FAIL("round %u: child ended with status %#x before the kill", round, stt);
			else if (ready)
				killed_running++;
			/* drain what it wrote before dying */
			pump(fds[0], round, time_mono_ms() + 5000, false, &ready, &n_acks, &part,
			     &part_len);
		}
		close(fds[0]);
		total_acks += n_acks;
		check_store(dir, round, scratch, &checked);
		fprintf(stderr, "round %2u: %s, %zu acks, %zu messages tracked, %.1f s\n", round,
			early ? "early kill" : "kill while writing", n_acks, n_exps,
			(double)(time_mono_ms() - t0) / 1000);
	}
	if (killed_running < rounds * 3 / 4 && failures == 0)
		FAIL("only %u kills while writing", killed_running);
	if (total_acks == 0)
		FAIL("no delivery was acknowledged at all");
	fprintf(stderr, "test_store_crash: %u rounds, %u kills while writing, %zu acks, %lu bodies "
		"read back, %d failures, %.1f s\n", rounds, killed_running, total_acks, checked,
		failures, (double)(time_mono_ms() - t0) / 1000);
	free(scratch);
	free(exps);
	free(htab);
	if (failures == 0) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
		if (system(cmd) != 0)
			return 1;
	} else {
		fprintf(stderr, "data left in %s\n", root);
	}
	return failures ? 1 : 0;
}
