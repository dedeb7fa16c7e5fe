/* The mailbox store (storage/store.h) against a real RocksDB on disk:
 * users, mailboxes (INBOX rules, rename with children, delete releasing
 * bodies), delivery to several targets with per-target statuses, quota and
 * size limits, body dedup and reference counts, body reads across chunk
 * boundaries, STORE with UNCHANGEDSINCE, EXPUNGE and the expunge log,
 * COPY/MOVE with UIDPLUS pairs, UID and MODSEQ monotonicity, concurrent
 * delivery to one mailbox, and the replication hooks (checkpoint + WAL
 * batches reproduce the shard key for key). store_verify is run after
 * every group of operations. */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage/store.h"

static int failures;
#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, \
				__LINE__, #cond);                              \
			failures++;                                            \
		}                                                              \
	} while (0)

#define CHUNK 1000

static const char *err;
static enum storage_status status;

/* ---- helpers --------------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* A message of exactly `len` bytes (len >= 40), distinct per seed. */
static uint8_t *make_msg(uint64_t seed, size_t len)
{
	uint8_t *p = malloc(len);
	int h = snprintf((char *)p, len, "Subject: m%016llx\r\n\r\n", (unsigned long long)seed);
	uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
	for (size_t i = (size_t)h; i < len; i++)
		p[i] = (i % 78 == 77) ? '\n' : (uint8_t)('!' + rng_next(&s) % 90);
	return p;
}

static struct body_writer *writer_for(struct shard *sh, const uint8_t *p, size_t len)
{
	struct body_writer *bw = body_writer_new(sh);
	/* Uneven pieces, as the network would hand them over. */
	for (size_t off = 0; off < len;) {
		size_t step = MIN(len - off, (size_t)(1 + (off * 7919) % 1733));
		CHECK(body_writer_add(bw, p + off, step) == 0);
		off += step;
	}
	CHECK(body_writer_size(bw) == len);
	return bw;
}

/* Deliver one message to one target; returns the UID (0 on failure). */
static uint32_t deliver1(struct shard *sh, const char *user, uint64_t mbid, uint64_t seed,
			 size_t len, uint32_t flags, const char *const *kws,
			 enum storage_status *tst)
{
	uint8_t *p = make_msg(seed, len);
	struct body_writer *bw = writer_for(sh, p, len);
	struct deliver_target t = { .user = user, .mailbox_id = mbid, .flags = flags, .keywords = kws };
	int r = store_deliver(sh, bw, 1700000000000ull + seed, &t, 1, &status, &err);
	body_writer_free(&bw);
	free(p);
	if (tst)
		*tst = t.status_r;
	if (r < 0) {
		fprintf(stderr, "deliver: %s\n", err);
		return 0;
	}
	return t.status_r == ST_OK ? t.uid_r : 0;
}

static int collect(void *arg, const uint8_t *p, size_t n)
{
	buf_append(arg, p, n);
	return 0;
}

static struct mailbox_info mbox(struct shard *sh, const char *user, const char *name)
{
	struct mailbox_info mi;
	memset(&mi, 0, sizeof(mi));
	if (store_mailbox_get(sh, user, name, &mi, &status, &err) < 0)
		fprintf(stderr, "mailbox_get %s %s: %s\n", user, name, err);
	return mi;
}

static struct user_info user(struct shard *sh, const char *addr)
{
	struct user_info u;
	memset(&u, 0, sizeof(u));
	if (store_user_get(sh, addr, &u, &status, &err) < 0)
		fprintf(stderr, "user_get %s: %s\n", addr, err);
	return u;
}

static void free_msgs(struct msg_info *m, size_t n)
{
	for (size_t i = 0; i < n; i++)
		msg_info_cleanup(&m[i]);
	free(m);
}

/* One message by UID; returns false if absent. */
static bool fetch1(struct shard *sh, uint64_t mbid, uint32_t uid, struct msg_info *out)
{
	struct msg_info *m = NULL;
	size_t n = 0;
	if (store_fetch_range(sh, mbid, uid, uid, &m, &n, &err) < 0 || n != 1) {
		free_msgs(m, n);
		return false;
	}
	*out = m[0];
	free(m);
	return true;
}

static void report_line(void *arg, const char *line)
{
	UNUSED(arg);
	fprintf(stderr, "verify: %s\n", line);
}

static void verify(struct shard *sh, int line)
{
	long v = store_verify(sh, report_line, NULL, &err);
	if (v != 0) {
		fprintf(stderr, "%s:%d: store_verify = %ld\n", __FILE__, line, v);
		failures++;
	}
}
#define VERIFY(sh) verify(sh, __LINE__)

struct key_count {
	char prefix;
	size_t n;
	uint64_t refs; /* body records: sum of refcounts */
};

static int count_keys(void *arg, struct view k, struct view v)
{
	struct key_count *c = arg;
	if (k.len && k.ptr[0] == (uint8_t)c->prefix) {
		c->n++;
		/* body record: version(1) refcount(8) ... */
		if (c->prefix == 'h' && v.len >= 9) {
			uint64_t r = 0;
			for (int i = 1; i < 9; i++)
				r = r << 8 | v.ptr[i];
			c->refs += r;
		}
	}
	return 0;
}

static struct key_count keys(struct shard *sh, char prefix)
{
	struct key_count c = { .prefix = prefix };
	CHECK(shard_scan_all(sh, count_keys, &c, &err) == 0);
	return c;
}

/* Refcount of one body (0 = no record). */
struct one_body {
	const uint8_t *hash;
	uint64_t refs;
	bool found;
};

static int find_body(void *arg, struct view k, struct view v)
{
	struct one_body *b = arg;
	if (k.len == 33 && k.ptr[0] == 'h' && memcmp(k.ptr + 1, b->hash, 32) == 0 && v.len >= 9) {
		b->found = true;
		for (int i = 1; i < 9; i++)
			b->refs = b->refs << 8 | v.ptr[i];
		return 1;
	}
	return 0;
}

static uint64_t body_refs(struct shard *sh, const uint8_t hash[32])
{
	struct one_body b = { .hash = hash };
	CHECK(shard_scan_all(sh, find_body, &b, &err) == 0);
	return b.found ? b.refs : 0;
}

static bool has_kw(char **kws, const char *k)
{
	for (size_t i = 0; kws && kws[i]; i++)
		if (strcasecmp(kws[i], k) == 0)
			return true;
	return false;
}

static size_t n_kw(char **kws)
{
	size_t n = 0;
	while (kws && kws[n])
		n++;
	return n;
}

static int rm_rf(const char *path)
{
	char cmd[4200];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
	return system(cmd);
}

/* ---- users ----------------------------------------------------------------- */

static void test_users(struct shard *sh)
{
	CHECK(store_user_create(sh, "alice@example.test", "$argon2id$x", 0, &status, &err) == 0);
	CHECK(status == ST_OK);
	CHECK(store_user_create(sh, "alice@example.test", "", 0, &status, &err) == -1);
	CHECK(status == ST_EXISTS);
	CHECK(store_user_create(sh, "", "", 0, &status, &err) == -1 && status == ST_INVALID);

	struct user_info u = user(sh, "alice@example.test");
	CHECK(strcmp(u.address, "alice@example.test") == 0);
	CHECK(strcmp(u.pwhash, "$argon2id$x") == 0);
	CHECK(u.quota_bytes == 0 && u.used_bytes == 0 && u.used_messages == 0);
	CHECK(u.enabled && u.created_ms > 0);
	CHECK(store_user_get(sh, "nobody@example.test", &u, &status, &err) == -1 &&
	      status == ST_NOT_FOUND);

	struct mailbox_info *l = NULL;
	size_t n = 0;
	CHECK(store_mailbox_list(sh, "alice@example.test", &l, &n, &err) == 0);
	static const struct {
		const char *name;
		uint32_t special;
	} want[] = { { "Archive", SPECIAL_ARCHIVE }, { "Drafts", SPECIAL_DRAFTS },
		     { "INBOX", SPECIAL_NONE },      { "Junk", SPECIAL_JUNK },
		     { "Sent", SPECIAL_SENT },       { "Trash", SPECIAL_TRASH } };
	CHECK(n == ARRAY_LEN(want));
	for (size_t i = 0; i < n && i < ARRAY_LEN(want); i++) {
		CHECK(strcmp(l[i].name, want[i].name) == 0);
		CHECK(l[i].special_use == want[i].special);
		CHECK(l[i].subscribed);
		CHECK(l[i].uidnext == 1 && l[i].messages == 0 && l[i].uidvalidity != 0);
		CHECK(l[i].recent == 0);
		for (size_t j = 0; j < i; j++)
			CHECK(l[j].id != l[i].id);
	}
	free(l);

	/* update: NULL / UINT64_MAX / -1 leave fields alone */
	CHECK(store_user_update(sh, "alice@example.test", "$new", UINT64_MAX, -1, &status, &err) == 0);
	u = user(sh, "alice@example.test");
	CHECK(strcmp(u.pwhash, "$new") == 0 && u.quota_bytes == 0 && u.enabled);
	CHECK(store_user_update(sh, "alice@example.test", NULL, 12345, 0, &status, &err) == 0);
	u = user(sh, "alice@example.test");
	CHECK(strcmp(u.pwhash, "$new") == 0 && u.quota_bytes == 12345 && !u.enabled);
	CHECK(store_user_update(sh, "alice@example.test", NULL, 0, 1, &status, &err) == 0);
	u = user(sh, "alice@example.test");
	CHECK(u.quota_bytes == 0 && u.enabled);
	CHECK(store_user_update(sh, "nobody@example.test", NULL, 1, 1, &status, &err) == -1 &&
	      status == ST_NOT_FOUND);
	VERIFY(sh);
}

/* ---- mailboxes --------------------------------------------------------------- */

static void test_mailboxes(struct shard *sh)
{
	const char *a = "alice@example.test";
	struct mailbox_info mi, inbox = mbox(sh, a, "INBOX");
	CHECK(inbox.id != 0);
	mi = mbox(sh, a, "inbox");
	CHECK(mi.id == inbox.id);
	mi = mbox(sh, a, "InBoX");
	CHECK(mi.id == inbox.id && strcmp(mi.name, "INBOX") == 0);
	CHECK(store_mailbox_get(sh, a, "sent", &mi, &status, &err) == -1 && status == ST_NOT_FOUND);
	CHECK(store_mailbox_get(sh, a, "Nope", &mi, &status, &err) == -1 && status == ST_NOT_FOUND);
	CHECK(store_mailbox_get_by_id(sh, inbox.id, &mi, &status, &err) == 0 &&
	      strcmp(mi.name, "INBOX") == 0);
	CHECK(store_mailbox_get_by_id(sh, 999999, &mi, &status, &err) == -1 &&
	      status == ST_NOT_FOUND);

	struct mailbox_info w;
	CHECK(store_mailbox_create(sh, a, "Work", SPECIAL_NONE, &w, &status, &err) == 0);
	CHECK(w.id > inbox.id && w.uidnext == 1 && !w.subscribed && w.uidvalidity != 0);
	CHECK(store_mailbox_create(sh, a, "Work", SPECIAL_NONE, &mi, &status, &err) == -1 &&
	      status == ST_EXISTS);
	CHECK(store_mailbox_create(sh, a, "inbox", SPECIAL_NONE, &mi, &status, &err) == -1 &&
	      status == ST_EXISTS);
	CHECK(store_mailbox_create(sh, "nobody@example.test", "X", 0, &mi, &status, &err) == -1 &&
	      status == ST_NOT_FOUND);
	static const char *bad[] = { "", "/x", "x/", "a//b", "a\001b" };
	for (size_t i = 0; i < ARRAY_LEN(bad); i++)
		CHECK(store_mailbox_create(sh, a, bad[i], 0, &mi, &status, &err) == -1 &&
		      status == ST_INVALID);
	struct mailbox_info wa, wab;
	CHECK(store_mailbox_create(sh, a, "Work/a", 0, &wa, &status, &err) == 0);
	CHECK(store_mailbox_create(sh, a, "Work/a/b", 0, &wab, &status, &err) == 0);
	CHECK(store_mailbox_create(sh, a, "Workshop", 0, &mi, &status, &err) == 0);
	CHECK(wa.uidvalidity != w.uidvalidity && wab.uidvalidity != wa.uidvalidity);

	/* subscribe */
	CHECK(store_mailbox_subscribe(sh, a, "Work", true, &status, &err) == 0);
	CHECK(mbox(sh, a, "Work").subscribed);
	CHECK(store_mailbox_subscribe(sh, a, "Work", false, &status, &err) == 0);
	CHECK(!mbox(sh, a, "Work").subscribed);
	CHECK(store_mailbox_subscribe(sh, a, "Nope", true, &status, &err) == -1 &&
	      status == ST_NOT_FOUND);
	CHECK(store_mailbox_subscribe(sh, a, "Work/a", true, &status, &err) == 0);

	/* a message in Work/a survives the rename */
	uint32_t uid = deliver1(sh, a, wa.id, 10, 300, 0, NULL, NULL);
	CHECK(uid == 1);

	/* rename: children move, ids stay, "Workshop" (a prefix, not a child) stays */
	CHECK(store_mailbox_rename(sh, a, "Work", "Jobs", &status, &err) == 0);
	CHECK(store_mailbox_get(sh, a, "Work", &mi, &status, &err) == -1 && status == ST_NOT_FOUND);
	CHECK(store_mailbox_get(sh, a, "Work/a", &mi, &status, &err) == -1);
	CHECK(mbox(sh, a, "Jobs").id == w.id);
	mi = mbox(sh, a, "Jobs/a");
	CHECK(mi.id == wa.id && mi.messages == 1 && mi.subscribed && mi.uidvalidity == wa.uidvalidity);
	CHECK(strcmp(mi.name, "Jobs/a") == 0);
	CHECK(mbox(sh, a, "Jobs/a/b").id == wab.id);
	CHECK(mbox(sh, a, "Workshop").id != 0);
	struct msg_info m;
	CHECK(fetch1(sh, wa.id, uid, &m));
	msg_info_cleanup(&m);
	CHECK(store_mailbox_rename(sh, a, "Jobs", "Workshop", &status, &err) == -1 &&
	      status == ST_EXISTS);
	CHECK(store_mailbox_rename(sh, a, "Nope", "Nope2", &status, &err) == -1 &&
	      status == ST_NOT_FOUND);
	CHECK(store_mailbox_rename(sh, a, "Jobs", "Jobs/x", &status, &err) == -1 &&
	      status == ST_INVALID);
	CHECK(store_mailbox_rename(sh, a, "Jobs", "INBOX", &status, &err) == -1 &&
	      status == ST_INVALID);

	/* list in name order */
	struct mailbox_info *l = NULL;
	size_t n = 0;
	CHECK(store_mailbox_list(sh, a, &l, &n, &err) == 0);
	CHECK(n == 10);
	for (size_t i = 1; i < n; i++)
		CHECK(strcmp(l[i - 1].name, l[i].name) < 0);
	free(l);
	VERIFY(sh);

	/* renaming INBOX moves its messages and leaves it empty */
	uint32_t u1 = deliver1(sh, a, 0, 11, 500, 0, NULL, NULL);
	uint32_t u2 = deliver1(sh, a, 0, 12, 2500, FLAG_SEEN, NULL, NULL);
	uint32_t u3 = deliver1(sh, a, 0, 13, 700, 0, NULL, NULL);
	CHECK(u1 && u2 == u1 + 1 && u3 == u2 + 1);
	struct mailbox_info in_before = mbox(sh, a, "INBOX");
	CHECK(in_before.messages == 3 && in_before.unseen == 2 && in_before.size == 3700);
	struct user_info ub = user(sh, a);
	CHECK(store_mailbox_rename(sh, a, "inbox", "Old", &status, &err) == 0);
	struct mailbox_info in_after = mbox(sh, a, "INBOX"), old = mbox(sh, a, "Old");
	CHECK(in_after.id == inbox.id && in_after.messages == 0 && in_after.size == 0 &&
	      in_after.unseen == 0);
	CHECK(in_after.uidvalidity == inbox.uidvalidity);
	CHECK(in_after.uidnext == in_before.uidnext); /* UIDs are never reused */
	CHECK(old.id != 0 && old.id != inbox.id && old.messages == 3 && old.unseen == 2 &&
	      old.size == 3700);
	uint32_t *uids = NULL;
	CHECK(store_uids(sh, inbox.id, &uids, &n, &err) == 0 && n == 0);
	free(uids);
	CHECK(store_uids(sh, old.id, &uids, &n, &err) == 0 && n == 3);
	free(uids);
	struct user_info ua = user(sh, a);
	CHECK(ua.used_bytes == ub.used_bytes && ua.used_messages == ub.used_messages);
	/* a new delivery to INBOX still gets a fresh UID */
	uint32_t u4 = deliver1(sh, a, 0, 14, 100, 0, NULL, NULL);
	CHECK(u4 > u3);
	VERIFY(sh);

	/* delete: INBOX refused; bodies released */
	CHECK(store_mailbox_delete(sh, a, "INBOX", &status, &err) == -1 && status == ST_INVALID);
	CHECK(store_mailbox_delete(sh, a, "inbox", &status, &err) == -1 && status == ST_INVALID);
	CHECK(store_mailbox_delete(sh, a, "Nope", &status, &err) == -1 && status == ST_NOT_FOUND);
	/* Old's message seed 11 also goes to Archive so its body must stay */
	struct mailbox_info arch = mbox(sh, a, "Archive");
	CHECK(deliver1(sh, a, arch.id, 11, 500, 0, NULL, NULL) != 0);
	struct msg_info m11, m12;
	uint32_t *ou = NULL;
	CHECK(store_uids(sh, old.id, &ou, &n, &err) == 0 && n == 3);
	CHECK(n == 3 && fetch1(sh, old.id, ou[0], &m11) && fetch1(sh, old.id, ou[1], &m12));
	free(ou);
	CHECK(body_refs(sh, m11.body_hash) == 2);
	CHECK(body_refs(sh, m12.body_hash) == 1);
	struct key_count hb = keys(sh, 'h'), cb = keys(sh, 'c');
	ub = user(sh, a);
	CHECK(store_mailbox_delete(sh, a, "Old", &status, &err) == 0);
	CHECK(store_mailbox_get(sh, a, "Old", &mi, &status, &err) == -1 && status == ST_NOT_FOUND);
	CHECK(store_mailbox_get_by_id(sh, old.id, &mi, &status, &err) == -1);
	CHECK(body_refs(sh, m11.body_hash) == 1);
	CHECK(body_refs(sh, m12.body_hash) == 0);
	struct key_count ha = keys(sh, 'h'), ca = keys(sh, 'c');
	CHECK(ha.n == hb.n - 2);                    /* seed 12 and 13 bodies gone */
	CHECK(ca.n == cb.n - 3 - 1);               /* 2500 B = 3 chunks, 700 B = 1 */
	ua = user(sh, a);
	CHECK(ua.used_bytes == ub.used_bytes - 3700 && ua.used_messages == ub.used_messages - 3);
	msg_info_cleanup(&m11);
	msg_info_cleanup(&m12);
	/* deleting a parent keeps its children */
	CHECK(store_mailbox_delete(sh, a, "Jobs", &status, &err) == 0);
	CHECK(mbox(sh, a, "Jobs/a").id == wa.id);
	/* a re-created name gets a new id and a new UIDVALIDITY */
	CHECK(store_mailbox_create(sh, a, "Old", 0, &mi, &status, &err) == 0);
	CHECK(mi.id != old.id && mi.uidvalidity != old.uidvalidity && mi.uidnext == 1);
	VERIFY(sh);
}

/* ---- delivery --------------------------------------------------------------- */

static void test_deliver(struct shard *sh)
{
	const char *b = "bob@example.test", *c = "carol@example.test", *a = "alice@example.test";
	CHECK(store_user_create(sh, b, "", 0, &status, &err) == 0);
	CHECK(store_user_create(sh, c, "", 0, &status, &err) == 0);
	struct mailbox_info bin = mbox(sh, b, "INBOX"), bsent = mbox(sh, b, "Sent");
	struct mailbox_info cin = mbox(sh, c, "INBOX");
	struct user_info ub0 = user(sh, b), uc0 = user(sh, c);
	struct key_count h0 = keys(sh, 'h'), c0 = keys(sh, 'c');

	/* several targets: bob twice (INBOX, INBOX), bob's Sent, carol, a
	 * missing user, a missing mailbox */
	size_t len = 3456;
	uint8_t *p = make_msg(100, len);
	struct body_writer *bw = writer_for(sh, p, len);
	static const char *const kws[] = { "$Forwarded", "work", NULL };
	struct deliver_target t[] = {
		{ .user = b },
		{ .user = b, .mailbox_id = bin.id },
		{ .user = b, .mailbox_id = bsent.id, .flags = FLAG_SEEN | FLAG_ANSWERED, .keywords = kws },
		{ .user = c },
		{ .user = "ghost@example.test" },
		{ .user = b, .mailbox_id = 987654 },
	};
	CHECK(store_deliver(sh, bw, 1234567, t, ARRAY_LEN(t), &status, &err) == 0);
	body_writer_free(&bw);
	CHECK(status == ST_OK);
	CHECK(t[0].status_r == ST_OK && t[0].uid_r == 1 && t[0].uidvalidity_r == bin.uidvalidity);
	CHECK(t[1].status_r == ST_OK && t[1].uid_r == 2 && t[1].uidvalidity_r == bin.uidvalidity);
	CHECK(t[2].status_r == ST_OK && t[2].uid_r == 1 && t[2].uidvalidity_r == bsent.uidvalidity);
	CHECK(t[3].status_r == ST_OK && t[3].uid_r == 1 && t[3].uidvalidity_r == cin.uidvalidity);
	CHECK(t[4].status_r == ST_NOT_FOUND && t[4].uid_r == 0);
	CHECK(t[5].status_r == ST_NOT_FOUND);
	/* one body record with refcount 4, chunks stored once */
	struct key_count h1 = keys(sh, 'h'), c1 = keys(sh, 'c');
	CHECK(h1.n == h0.n + 1 && h1.refs == h0.refs + 4);
	CHECK(c1.n == c0.n + 4); /* 3456 B in 1000 B chunks */
	struct user_info ub1 = user(sh, b), uc1 = user(sh, c);
	CHECK(ub1.used_bytes == ub0.used_bytes + 3 * len && ub1.used_messages == ub0.used_messages + 3);
	CHECK(uc1.used_bytes == uc0.used_bytes + len && uc1.used_messages == 1);
	bin = mbox(sh, b, "INBOX");
	CHECK(bin.messages == 2 && bin.unseen == 2 && bin.size == 2 * len && bin.uidnext == 3);
	bsent = mbox(sh, b, "Sent");
	CHECK(bsent.messages == 1 && bsent.unseen == 0 && bsent.highestmodseq > 1);

	/* fetch_range / uids and the recorded fields */
	struct msg_info *ms = NULL;
	size_t n = 0;
	CHECK(store_fetch_range(sh, bsent.id, 1, UINT32_MAX, &ms, &n, &err) == 0 && n == 1);
	if (n == 1) {
		CHECK(ms[0].uid == 1 && ms[0].flags == (FLAG_SEEN | FLAG_ANSWERED));
		CHECK(n_kw(ms[0].keywords) == 2 && has_kw(ms[0].keywords, "$Forwarded") &&
		      has_kw(ms[0].keywords, "work"));
		CHECK(ms[0].internal_date_ms == 1234567 && ms[0].save_date_ms > 1234567);
		CHECK(ms[0].size == len);
	}
	uint8_t hash[32];
	memcpy(hash, ms[0].body_hash, 32);
	free_msgs(ms, n);
	CHECK(store_fetch_range(sh, bin.id, 1, 2, &ms, &n, &err) == 0 && n == 2);
	CHECK(n == 2 && ms[0].uid == 1 && ms[1].uid == 2 && ms[0].flags == 0 &&
	      n_kw(ms[0].keywords) == 0 && memcmp(ms[0].body_hash, hash, 32) == 0 &&
	      ms[0].modseq < ms[1].modseq);
	free_msgs(ms, n);
	CHECK(store_fetch_range(sh, bin.id, 2, 2, &ms, &n, &err) == 0 && n == 1);
	free_msgs(ms, n);
	CHECK(store_fetch_range(sh, bin.id, 3, 100, &ms, &n, &err) == 0 && n == 0);
	free_msgs(ms, n);
	CHECK(store_fetch_range(sh, bin.id, 2, 1, &ms, &n, &err) == 0 && n == 0);
	free_msgs(ms, n);
	CHECK(store_fetch_range(sh, 987654, 1, 100, &ms, &n, &err) == 0 && n == 0);
	free_msgs(ms, n);
	uint32_t *uids = NULL;
	CHECK(store_uids(sh, bin.id, &uids, &n, &err) == 0 && n == 2 && uids[0] == 1 && uids[1] == 2);
	free(uids);

	/* body_read: every range (across 1000 B chunk boundaries) equals the slice */
	struct buf got;
	buf_init(&got, 0);
	CHECK(store_body_read(sh, hash, 0, UINT64_MAX, collect, &got, &err) == 0);
	CHECK(got.len == len && memcmp(got.data, p, len) == 0);
	static const uint64_t offs[] = { 0, 1, 998, 999, 1000, 1001, 1999, 2000, 2500, 3000, 3455 };
	static const uint64_t lens[] = { 0, 1, 2, 999, 1000, 1001, 2001, 3456, 5000, UINT64_MAX };
	for (size_t i = 0; i < ARRAY_LEN(offs); i++) {
		for (size_t j = 0; j < ARRAY_LEN(lens); j++) {
			got.len = 0;
			CHECK(store_body_read(sh, hash, offs[i], lens[j], collect, &got, &err) == 0);
			size_t want = (size_t)MIN(lens[j], len - offs[i]);
			if (got.len != want || memcmp(got.data, p + offs[i], want) != 0) {
				fprintf(stderr, "body_read(%llu, %llu): %zu bytes, want %zu\n",
					(unsigned long long)offs[i], (unsigned long long)lens[j],
					got.len, want);
				failures++;
			}
		}
	}
	got.len = 0;
	CHECK(store_body_read(sh, hash, len, 10, collect, &got, &err) == 0 && got.len == 0);
	CHECK(store_body_read(sh, hash, len + 100, UINT64_MAX, collect, &got, &err) == 0 &&
	      got.len == 0);
	uint8_t nohash[32] = { 1 };
	CHECK(store_body_read(sh, nohash, 0, UINT64_MAX, collect, &got, &err) == -1);
	struct buf mime;
	buf_init(&mime, 0);
	CHECK(store_body_mime(sh, hash, &mime, &err) == 0 && mime.len > 0);
	CHECK(store_body_mime(sh, nohash, &mime, &err) == -1);
	buf_cleanup(&mime);
	buf_cleanup(&got);

	/* the same bytes delivered again: same body record, refcount 5 */
	bw = writer_for(sh, p, len);
	struct deliver_target t2 = { .user = c };
	CHECK(store_deliver(sh, bw, 0, &t2, 1, &status, &err) == 0 && t2.uid_r == 2);
	body_writer_free(&bw);
	CHECK(keys(sh, 'h').n == h1.n && keys(sh, 'c').n == c1.n);
	CHECK(body_refs(sh, hash) == 5);
	free(p);

	/* an empty body and a one-byte body */
	bw = body_writer_new(sh);
	struct deliver_target t3 = { .user = c };
	CHECK(store_deliver(sh, bw, 0, &t3, 1, &status, &err) == 0 && t3.status_r == ST_OK);
	body_writer_free(&bw);
	struct msg_info e;
	CHECK(fetch1(sh, cin.id, t3.uid_r, &e) && e.size == 0);
	got.len = 0;
	CHECK(store_body_read(sh, e.body_hash, 0, UINT64_MAX, collect, &got, &err) == 0 &&
	      got.len == 0);
	msg_info_cleanup(&e);
	VERIFY(sh);

	/* quota: per target */
	const char *q = "quota@example.test";
	CHECK(store_user_create(sh, q, "", 1000, &status, &err) == 0);
	enum storage_status ts;
	CHECK(deliver1(sh, q, 0, 200, 600, 0, NULL, &ts) == 1 && ts == ST_OK);
	CHECK(deliver1(sh, q, 0, 201, 600, 0, NULL, &ts) == 0 && ts == ST_OVER_QUOTA);
	CHECK(status == ST_OK); /* the call itself succeeded */
	CHECK(deliver1(sh, q, 0, 202, 400, 0, NULL, &ts) == 2 && ts == ST_OK); /* exactly full */
	CHECK(deliver1(sh, q, 0, 203, 40, 0, NULL, &ts) == 0 && ts == ST_OVER_QUOTA);
	p = make_msg(204, 300);
	bw = writer_for(sh, p, 300);
	struct deliver_target tq[] = { { .user = q }, { .user = a }, { .user = q } };
	CHECK(store_deliver(sh, bw, 0, tq, 3, &status, &err) == 0);
	CHECK(tq[0].status_r == ST_OVER_QUOTA && tq[1].status_r == ST_OK &&
	      tq[2].status_r == ST_OVER_QUOTA);
	body_writer_free(&bw);
	free(p);
	struct user_info uq = user(sh, q);
	CHECK(uq.used_bytes == 1000 && uq.used_messages == 2);
	/* two targets of one user: the second one sees the first one's usage */
	CHECK(store_user_update(sh, q, NULL, 1500, -1, &status, &err) == 0);
	p = make_msg(205, 300);
	bw = writer_for(sh, p, 300);
	struct deliver_target tq2[] = { { .user = q }, { .user = q } };
	CHECK(store_deliver(sh, bw, 0, tq2, 2, &status, &err) == 0);
	CHECK(tq2[0].status_r == ST_OK && tq2[1].status_r == ST_OVER_QUOTA);
	body_writer_free(&bw);
	free(p);
	/* a disabled user does not receive */
	CHECK(store_user_update(sh, q, NULL, 0, 0, &status, &err) == 0);
	CHECK(deliver1(sh, q, 0, 206, 100, 0, NULL, &ts) == 0 && ts == ST_DISABLED);
	CHECK(store_user_update(sh, q, NULL, UINT64_MAX, 1, &status, &err) == 0);
	/* nothing at all accepted: no body record left behind */
	struct key_count hq = keys(sh, 'h');
	CHECK(store_user_update(sh, q, NULL, 1, -1, &status, &err) == 0);
	CHECK(deliver1(sh, q, 0, 207, 100, 0, NULL, &ts) == 0 && ts == ST_OVER_QUOTA);
	CHECK(keys(sh, 'h').n == hq.n);
	VERIFY(sh);
}

/* A target naming another user's mailbox is NOT_FOUND, also when an
 * earlier target of the same call delivers to that mailbox. Own shard, so
 * a failure here does not spill into the other tests' store_verify. */
static void test_deliver_cross_user(struct shard *sh)
{
	const char *b = "bob@example.test", *c = "carol@example.test";
	CHECK(store_user_create(sh, b, "", 0, &status, &err) == 0);
	CHECK(store_user_create(sh, c, "", 0, &status, &err) == 0);
	struct mailbox_info bin = mbox(sh, b, "INBOX");
	/* alone: refused */
	uint8_t *p = make_msg(900, 500);
	struct body_writer *bw = writer_for(sh, p, 500);
	struct deliver_target t1 = { .user = c, .mailbox_id = bin.id };
	CHECK(store_deliver(sh, bw, 0, &t1, 1, &status, &err) == 0 && t1.status_r == ST_NOT_FOUND);
	body_writer_free(&bw);
	/* after a target that loaded bob's INBOX in the same call */
	bw = writer_for(sh, p, 500);
	struct deliver_target t2[] = { { .user = b }, { .user = c, .mailbox_id = bin.id } };
	CHECK(store_deliver(sh, bw, 0, t2, 2, &status, &err) == 0);
	body_writer_free(&bw);
	free(p);
	CHECK(t2[0].status_r == ST_OK);
	if (t2[1].status_r != ST_NOT_FOUND)
		fprintf(stderr, "cross-user: carol's target into bob's INBOX got %s (uid %u)\n",
			storage_status_str(t2[1].status_r), t2[1].uid_r);
	CHECK(t2[1].status_r == ST_NOT_FOUND);
	CHECK(mbox(sh, b, "INBOX").messages == 1);
	CHECK(user(sh, c).used_messages == 0);
	VERIFY(sh);
}

static void test_too_large(struct shard *sh, uint64_t max)
{
	struct body_writer *bw = body_writer_new(sh);
	uint8_t *p = make_msg(300, 10000);
	int r = 0;
	uint64_t total = 0;
	while (total <= max && r == 0) {
		r = body_writer_add(bw, p, 10000);
		if (r == 0)
			total += 10000;
	}
	CHECK(r == -1);
	CHECK(body_writer_size(bw) <= max);
	CHECK(body_writer_add(bw, p, 1) == -1); /* stays refused */
	struct key_count h0 = keys(sh, 'h');
	struct deliver_target t = { .user = "bob@example.test" };
	CHECK(store_deliver(sh, bw, 0, &t, 1, &status, &err) == -1 && status == ST_TOO_LARGE);
	body_writer_free(&bw);
	CHECK(keys(sh, 'h').n == h0.n);
	/* exactly the maximum is fine */
	bw = body_writer_new(sh);
	uint8_t *big = make_msg(301, (size_t)max);
	CHECK(body_writer_add(bw, big, (size_t)max) == 0);
	CHECK(store_deliver(sh, bw, 0, &t, 1, &status, &err) == 0 && t.status_r == ST_OK);
	body_writer_free(&bw);
	free(big);
	free(p);
	VERIFY(sh);
}

/* ---- APPEND / MULTIAPPEND ------------------------------------------------------ */

static void test_append(struct shard *sh, uint64_t max)
{
	const char *g = "grace@example.test";
	CHECK(store_user_create(sh, g, "", 50000, &status, &err) == 0);
	struct mailbox_info in0 = mbox(sh, g, "Drafts");
	uint8_t *p[3];
	size_t len[3] = { 3000, 4000, 3000 };
	for (int i = 0; i < 3; i++)
		p[i] = make_msg(i == 2 ? 900 : 900 + (uint64_t)i, len[i]); /* 0 and 2 alike */
	const char *kw[] = { "$Label1", NULL };
	struct append_msg m[3];
	for (int i = 0; i < 3; i++)
		m[i] = (struct append_msg){ .bw = writer_for(sh, p[i], len[i]),
					    .internal_date_ms = i == 1 ? 1600000000000ull : 0,
					    .flags = i == 0 ? FLAG_SEEN : FLAG_DELETED,
					    .keywords = i == 2 ? kw : NULL };
	uint32_t uv = 0;
	struct key_count h0 = keys(sh, 'h');
	CHECK(store_append(sh, g, in0.id, m, 3, &uv, &status, &err) == 0 && status == ST_OK);
	CHECK(uv == in0.uidvalidity);
	CHECK(m[0].uid_r == in0.uidnext && m[1].uid_r == m[0].uid_r + 1 &&
	      m[2].uid_r == m[1].uid_r + 1);
	for (int i = 0; i < 3; i++)
		body_writer_free(&m[i].bw);
	/* one new body record for the two alike */
	CHECK(keys(sh, 'h').n == h0.n + 2);
	struct mailbox_info in1 = mbox(sh, g, "Drafts");
	CHECK(in1.messages == in0.messages + 3 && in1.unseen == in0.unseen + 2 &&
	      in1.size == in0.size + 10000 && in1.uidnext == in0.uidnext + 3);
	CHECK(user(sh, g).used_bytes == 10000 && user(sh, g).used_messages == 3);
	struct msg_info mi;
	CHECK(fetch1(sh, in0.id, m[1].uid_r, &mi) && mi.internal_date_ms == 1600000000000ull &&
	      mi.flags == FLAG_DELETED);
	msg_info_cleanup(&mi);
	CHECK(fetch1(sh, in0.id, m[2].uid_r, &mi) && has_kw(mi.keywords, "$Label1") &&
	      mi.internal_date_ms > 1600000000000ull);
	msg_info_cleanup(&mi);
	uint32_t nd = 0;
	uint64_t bd = 0;
	CHECK(store_mailbox_deleted(sh, in0.id, &nd, &bd, &err) == 0 && nd == 2 && bd == 7000);
	VERIFY(sh);

	/* all or nothing: over quota together, though each would fit */
	struct key_count m0 = keys(sh, 'i');
	h0 = keys(sh, 'h');
	uint8_t *q = make_msg(950, 30000);
	uint8_t *q2 = make_msg(951, 30000);
	struct append_msg mq[2] = { { .bw = writer_for(sh, q, 30000) },
				    { .bw = writer_for(sh, q2, 30000) } };
	CHECK(store_append(sh, g, in0.id, mq, 2, &uv, &status, &err) == -1 &&
	      status == ST_OVER_QUOTA);
	body_writer_free(&mq[0].bw);
	body_writer_free(&mq[1].bw);
	/* a message over the size limit */
	mq[0].bw = writer_for(sh, q, 30000);
	mq[1].bw = body_writer_new(sh);
	uint8_t *big = make_msg(952, (size_t)max + 1);
	CHECK(body_writer_add(mq[1].bw, big, (size_t)max + 1) == -1);
	CHECK(store_append(sh, g, in0.id, mq, 2, &uv, &status, &err) == -1 &&
	      status == ST_TOO_LARGE);
	body_writer_free(&mq[0].bw);
	body_writer_free(&mq[1].bw);
	/* a mailbox of another user, a missing one */
	mq[0].bw = writer_for(sh, q, 30000);
	struct mailbox_info other = mbox(sh, "bob@example.test", "INBOX");
	CHECK(store_append(sh, g, other.id, mq, 1, &uv, &status, &err) == -1 &&
	      status == ST_NOT_FOUND);
	body_writer_free(&mq[0].bw);
	mq[0].bw = writer_for(sh, q, 30000);
	CHECK(store_append(sh, g, 999999, mq, 1, &uv, &status, &err) == -1 &&
	      status == ST_NOT_FOUND);
	body_writer_free(&mq[0].bw);
	CHECK(keys(sh, 'i').n == m0.n && keys(sh, 'h').n == h0.n);
	struct mailbox_info in2 = mbox(sh, g, "Drafts");
	CHECK(in2.messages == in1.messages && in2.uidnext == in1.uidnext &&
	      in2.highestmodseq == in1.highestmodseq);
	CHECK(user(sh, g).used_bytes == 10000);
	/* one that fits still goes in */
	mq[0].bw = writer_for(sh, q, 30000);
	CHECK(store_append(sh, g, in0.id, mq, 1, &uv, &status, &err) == 0 &&
	      mq[0].uid_r == in1.uidnext);
	body_writer_free(&mq[0].bw);
	CHECK(store_mailbox_deleted(sh, in0.id, &nd, &bd, &err) == 0 && nd == 2 && bd == 7000);
	free(q);
	free(q2);
	free(big);
	for (int i = 0; i < 3; i++)
		free(p[i]);
	VERIFY(sh);
}

/* ---- flags, expunge, changes, copy/move ---------------------------------------- */

static void test_flags_expunge(struct shard *sh)
{
	const char *d = "dave@example.test";
	CHECK(store_user_create(sh, d, "", 0, &status, &err) == 0);
	struct mailbox_info in = mbox(sh, d, "INBOX");
	uint32_t uids[10];
	for (int i = 0; i < 10; i++)
		uids[i] = deliver1(sh, d, 0, 400 + (uint64_t)i, 200 + (size_t)i * 300, 0, NULL, NULL);
	for (int i = 0; i < 10; i++)
		CHECK(uids[i] == (uint32_t)i + 1);
	in = mbox(sh, d, "INBOX");
	CHECK(in.messages == 10 && in.unseen == 10);
	uint64_t hms = in.highestmodseq;

	struct msg_info *ch = NULL;
	size_t nch = 0, nf = 0;
	uint32_t *failed = NULL;
	/* ADD \Seen on 1..5 */
	CHECK(store_flags(sh, in.id, uids, 5, FLAGS_ADD, FLAG_SEEN, NULL, 0, &ch, &nch, &failed, &nf,
			  &status, &err) == 0);
	CHECK(status == ST_OK && nch == 5 && nf == 0);
	for (size_t i = 0; i < nch; i++) {
		CHECK(ch[i].flags == FLAG_SEEN && ch[i].uid == uids[i]);
		CHECK(ch[i].modseq == hms + 1 + i); /* each changed message a new modseq */
	}
	free_msgs(ch, nch);
	free(failed);
	in = mbox(sh, d, "INBOX");
	CHECK(in.unseen == 5 && in.highestmodseq == hms + 5);
	hms = in.highestmodseq;
	/* the same again changes nothing: no new modseq */
	CHECK(store_flags(sh, in.id, uids, 5, FLAGS_ADD, FLAG_SEEN, NULL, 0, &ch, &nch, &failed, &nf,
			  &status, &err) == 0);
	CHECK(nch == 0 && nf == 0);
	free_msgs(ch, nch);
	free(failed);
	CHECK(mbox(sh, d, "INBOX").highestmodseq == hms);

	/* keywords: ADD (case-insensitive, no duplicates), REMOVE, SET */
	static const char *const k1[] = { "$Important", "proj", NULL };
	static const char *const k1b[] = { "$important", "Other", NULL };
	static const char *const k2[] = { "PROJ", NULL };
	CHECK(store_flags(sh, in.id, &uids[0], 1, FLAGS_ADD, FLAG_FLAGGED, k1, 0, &ch, &nch, &failed,
			  &nf, &status, &err) == 0 && nch == 1);
	CHECK(nch == 1 && ch[0].flags == (FLAG_SEEN | FLAG_FLAGGED) && n_kw(ch[0].keywords) == 2);
	free_msgs(ch, nch);
	free(failed);
	CHECK(store_flags(sh, in.id, &uids[0], 1, FLAGS_ADD, 0, k1b, 0, &ch, &nch, &failed, &nf,
			  &status, &err) == 0 && nch == 1);
	CHECK(nch == 1 && n_kw(ch[0].keywords) == 3 && has_kw(ch[0].keywords, "other"));
	free_msgs(ch, nch);
	free(failed);
	CHECK(store_flags(sh, in.id, &uids[0], 1, FLAGS_REMOVE, FLAG_SEEN, k2, 0, &ch, &nch, &failed,
			  &nf, &status, &err) == 0 && nch == 1);
	CHECK(nch == 1 && ch[0].flags == FLAG_FLAGGED && n_kw(ch[0].keywords) == 2 &&
	      !has_kw(ch[0].keywords, "proj"));
	free_msgs(ch, nch);
	free(failed);
	CHECK(mbox(sh, d, "INBOX").unseen == 6);
	CHECK(store_flags(sh, in.id, &uids[0], 1, FLAGS_SET, FLAG_DRAFT | FLAG_SEEN, k2, 0, &ch, &nch,
			  &failed, &nf, &status, &err) == 0 && nch == 1);
	CHECK(nch == 1 && ch[0].flags == (FLAG_DRAFT | FLAG_SEEN) && n_kw(ch[0].keywords) == 1 &&
	      has_kw(ch[0].keywords, "proj"));
	free_msgs(ch, nch);
	free(failed);
	struct msg_info m;
	CHECK(fetch1(sh, in.id, uids[0], &m) && m.flags == (FLAG_DRAFT | FLAG_SEEN) &&
	      n_kw(m.keywords) == 1);
	msg_info_cleanup(&m);
	CHECK(mbox(sh, d, "INBOX").unseen == 5);
	/* a keyword over KEYWORD_MAX is not stored */
	char longkw[KEYWORD_MAX + 10];
	memset(longkw, 'k', sizeof(longkw) - 1);
	longkw[sizeof(longkw) - 1] = '\0';
	const char *const kl[] = { longkw, NULL };
	CHECK(store_flags(sh, in.id, &uids[1], 1, FLAGS_ADD, 0, kl, 0, &ch, &nch, &failed, &nf,
			  &status, &err) == 0 && nch == 0);
	free_msgs(ch, nch);
	free(failed);

	/* UNCHANGEDSINCE: messages modified after it fail, the rest change */
	in = mbox(sh, d, "INBOX");
	struct msg_info m1, m7;
	CHECK(fetch1(sh, in.id, uids[0], &m1) && fetch1(sh, in.id, uids[7], &m7));
	uint64_t since = m7.modseq; /* uids[0] was changed later than this */
	CHECK(m1.modseq > since);
	uint32_t pick[] = { uids[0], uids[6], uids[7], 999 /* absent */ };
	CHECK(store_flags(sh, in.id, pick, 4, FLAGS_ADD, FLAG_ANSWERED, NULL, since, &ch, &nch,
			  &failed, &nf, &status, &err) == 0);
	CHECK(status == ST_MODIFIED);
	CHECK(nf == 1 && failed[0] == uids[0]);
	CHECK(nch == 2 && ch[0].uid == uids[6] && ch[1].uid == uids[7]);
	free_msgs(ch, nch);
	free(failed);
	struct msg_info m1b;
	CHECK(fetch1(sh, in.id, uids[0], &m1b) && m1b.modseq == m1.modseq && m1b.flags == m1.flags);
	msg_info_cleanup(&m1);
	msg_info_cleanup(&m1b);
	msg_info_cleanup(&m7);
	CHECK(store_flags(sh, 987654, uids, 1, FLAGS_ADD, FLAG_SEEN, NULL, 0, &ch, &nch, &failed, &nf,
			  &status, &err) == -1 && status == ST_NOT_FOUND);
	free_msgs(ch, nch);
	free(failed);
	VERIFY(sh);

	/* MODSEQs of the mailbox are all distinct and <= HIGHESTMODSEQ */
	in = mbox(sh, d, "INBOX");
	struct msg_info *all = NULL;
	size_t na = 0;
	CHECK(store_fetch_range(sh, in.id, 1, UINT32_MAX, &all, &na, &err) == 0 && na == 10);
	for (size_t i = 0; i < na; i++) {
		CHECK(all[i].modseq <= in.highestmodseq && all[i].modseq > 1);
		for (size_t j = 0; j < i; j++)
			CHECK(all[i].modseq != all[j].modseq);
	}
	free_msgs(all, na);

	/* EXPUNGE only \Deleted: mark 3, 5, 9 (5 also \Seen) */
	uint64_t before_del = in.highestmodseq;
	uint32_t del[] = { uids[2], uids[4], uids[8] };
	CHECK(store_flags(sh, in.id, del, 3, FLAGS_ADD, FLAG_DELETED, NULL, 0, &ch, &nch, &failed,
			  &nf, &status, &err) == 0 && nch == 3);
	free_msgs(ch, nch);
	free(failed);
	uint64_t after_mark = mbox(sh, d, "INBOX").highestmodseq;
	struct user_info ud0 = user(sh, d);
	uint32_t *gone = NULL;
	size_t ng = 0;
	CHECK(store_expunge(sh, in.id, uids, 10, true, &gone, &ng, &status, &err) == 0);
	CHECK(ng == 3 && gone[0] == uids[2] && gone[1] == uids[4] && gone[2] == uids[8]);
	free(gone);
	in = mbox(sh, d, "INBOX");
	CHECK(in.messages == 7 && in.highestmodseq == after_mark + 3);
	struct user_info ud1 = user(sh, d);
	uint64_t gone_bytes = (200 + 2 * 300) + (200 + 4 * 300) + (200 + 8 * 300);
	CHECK(ud1.used_bytes == ud0.used_bytes - gone_bytes && ud1.used_messages == ud0.used_messages - 3);
	uint32_t *left = NULL;
	size_t nl = 0;
	CHECK(store_uids(sh, in.id, &left, &nl, &err) == 0 && nl == 7);
	for (size_t i = 0; i < nl; i++)
		CHECK(left[i] != uids[2] && left[i] != uids[4] && left[i] != uids[8]);
	free(left);
	/* expunging again / absent UIDs: nothing */
	CHECK(store_expunge(sh, in.id, del, 3, false, &gone, &ng, &status, &err) == 0 && ng == 0);
	free(gone);
	CHECK(store_expunge(sh, 987654, del, 3, false, &gone, &ng, &status, &err) == -1 &&
	      status == ST_NOT_FOUND);
	free(gone);
	/* without only_deleted */
	CHECK(store_expunge(sh, in.id, &uids[9], 1, false, &gone, &ng, &status, &err) == 0 && ng == 1);
	free(gone);
	VERIFY(sh);

	/* changes since: flag changes after before_del + vanished UIDs */
	struct msg_info *chg = NULL;
	uint32_t *van = NULL;
	size_t nchg = 0, nvan = 0;
	CHECK(store_changes_since(sh, in.id, before_del, &chg, &nchg, &van, &nvan, &err) == 0);
	CHECK(nvan == 4 && van[0] == uids[2] && van[1] == uids[4] && van[2] == uids[8] &&
	      van[3] == uids[9]);
	CHECK(nchg == 0); /* the only changed messages since then were expunged */
	free_msgs(chg, nchg);
	free(van);
	CHECK(store_changes_since(sh, in.id, after_mark + 2, &chg, &nchg, &van, &nvan, &err) == 0);
	CHECK(nvan == 2 && van[0] == uids[8] && van[1] == uids[9]);
	free_msgs(chg, nchg);
	free(van);
	CHECK(store_changes_since(sh, in.id, 0, &chg, &nchg, &van, &nvan, &err) == 0);
	CHECK(nchg == 6 && nvan == 4); /* 0 = everything */
	free_msgs(chg, nchg);
	free(van);
	uint64_t now = mbox(sh, d, "INBOX").highestmodseq;
	uint32_t two[] = { uids[1], uids[3] };
	CHECK(store_flags(sh, in.id, two, 2, FLAGS_ADD, FLAG_FLAGGED, NULL, 0, &ch, &nch, &failed,
			  &nf, &status, &err) == 0 && nch == 2);
	free_msgs(ch, nch);
	free(failed);
	CHECK(store_changes_since(sh, in.id, now, &chg, &nchg, &van, &nvan, &err) == 0);
	CHECK(nchg == 2 && nvan == 0 && chg[0].uid == uids[1] && chg[1].uid == uids[3]);
	CHECK(nchg == 2 && chg[0].modseq > now && chg[1].modseq > chg[0].modseq);
	free_msgs(chg, nchg);
	free(van);

	/* UIDs are never reused after expunge */
	uint32_t nu = deliver1(sh, d, 0, 420, 100, 0, NULL, NULL);
	CHECK(nu == 11);
	in = mbox(sh, d, "INBOX");
	CHECK(in.uidnext == 12);
	struct msg_info mn;
	CHECK(fetch1(sh, in.id, nu, &mn) && mn.modseq == in.highestmodseq);
	msg_info_cleanup(&mn);
	VERIFY(sh);
}

static void test_copy_move(struct shard *sh)
{
	const char *e = "erin@example.test";
	CHECK(store_user_create(sh, e, "", 0, &status, &err) == 0);
	struct mailbox_info in = mbox(sh, e, "INBOX"), ar = mbox(sh, e, "Archive");
	uint32_t u[6];
	for (int i = 0; i < 6; i++)
		u[i] = deliver1(sh, e, 0, 500 + (uint64_t)i, 1500, i % 2 ? FLAG_SEEN : 0, NULL, NULL);
	/* Archive already has two, so COPYUID pairs are not trivial */
	CHECK(deliver1(sh, e, ar.id, 510, 100, 0, NULL, NULL) == 1);
	CHECK(deliver1(sh, e, ar.id, 511, 100, 0, NULL, NULL) == 2);
	struct msg_info m0;
	CHECK(fetch1(sh, in.id, u[0], &m0));
	struct user_info ue0 = user(sh, e);

	uint32_t *s = NULL, *dd = NULL, vv = 0;
	size_t n = 0;
	uint32_t pick[] = { u[0], u[1], 777, u[2] };
	CHECK(store_copy(sh, in.id, ar.id, pick, 4, false, &s, &dd, &n, &vv, &status, &err) == 0);
	CHECK(n == 3 && vv == ar.uidvalidity);
	CHECK(n == 3 && s[0] == u[0] && s[1] == u[1] && s[2] == u[2]);
	CHECK(n == 3 && dd[0] == 3 && dd[1] == 4 && dd[2] == 5);
	free(s);
	free(dd);
	CHECK(body_refs(sh, m0.body_hash) == 2);
	struct user_info ue1 = user(sh, e);
	CHECK(ue1.used_bytes == ue0.used_bytes + 3 * 1500 && ue1.used_messages == ue0.used_messages + 3);
	ar = mbox(sh, e, "Archive");
	CHECK(ar.messages == 5 && ar.uidnext == 6 && ar.unseen == 2 + 2);
	struct msg_info c0;
	CHECK(fetch1(sh, ar.id, 3, &c0) && memcmp(c0.body_hash, m0.body_hash, 32) == 0 &&
	      c0.internal_date_ms == m0.internal_date_ms && c0.flags == m0.flags);
	msg_info_cleanup(&c0);
	CHECK(mbox(sh, e, "INBOX").messages == 6);
	VERIFY(sh);

	/* MOVE: gone from the source (expunge log), usage and refs unchanged */
	uint64_t hms = mbox(sh, e, "INBOX").highestmodseq;
	uint32_t mv[] = { u[3], u[4] };
	CHECK(store_copy(sh, in.id, ar.id, mv, 2, true, &s, &dd, &n, &vv, &status, &err) == 0);
	CHECK(n == 2 && s[0] == u[3] && s[1] == u[4] && dd[0] == 6 && dd[1] == 7 &&
	      vv == ar.uidvalidity);
	free(s);
	free(dd);
	struct user_info ue2 = user(sh, e);
	CHECK(ue2.used_bytes == ue1.used_bytes && ue2.used_messages == ue1.used_messages);
	in = mbox(sh, e, "INBOX");
	CHECK(in.messages == 4 && in.highestmodseq > hms);
	struct msg_info *chg = NULL;
	uint32_t *van = NULL;
	size_t nchg, nvan;
	CHECK(store_changes_since(sh, in.id, hms, &chg, &nchg, &van, &nvan, &err) == 0);
	CHECK(nvan == 2 && van[0] == u[3] && van[1] == u[4] && nchg == 0);
	free_msgs(chg, nchg);
	free(van);
	CHECK(mbox(sh, e, "Archive").messages == 7);
	VERIFY(sh);

	/* within one mailbox: copy ok, move refused */
	CHECK(store_copy(sh, in.id, in.id, &u[5], 1, false, &s, &dd, &n, &vv, &status, &err) == 0);
	CHECK(n == 1 && s[0] == u[5] && dd[0] == 7 && vv == in.uidvalidity);
	free(s);
	free(dd);
	CHECK(mbox(sh, e, "INBOX").messages == 5 && mbox(sh, e, "INBOX").uidnext == 8);
	CHECK(store_copy(sh, in.id, in.id, &u[5], 1, true, &s, &dd, &n, &vv, &status, &err) == -1 &&
	      status == ST_INVALID);
	free(s);
	free(dd);
	/* to another user's mailbox: not found */
	struct mailbox_info other = mbox(sh, "bob@example.test", "INBOX");
	CHECK(store_copy(sh, in.id, other.id, &u[5], 1, false, &s, &dd, &n, &vv, &status, &err) ==
		      -1 &&
	      status == ST_NOT_FOUND);
	free(s);
	free(dd);
	/* COPY over quota: refused as a whole, nothing changed */
	struct user_info ue3 = user(sh, e);
	CHECK(store_user_update(sh, e, NULL, ue3.used_bytes + 2000, -1, &status, &err) == 0);
	uint32_t cp2[] = { u[0], u[2] };
	struct mailbox_info ar_before = mbox(sh, e, "Archive");
	CHECK(store_copy(sh, in.id, ar.id, cp2, 2, false, &s, &dd, &n, &vv, &status, &err) == -1 &&
	      status == ST_OVER_QUOTA);
	free(s);
	free(dd);
	struct mailbox_info ar_after = mbox(sh, e, "Archive");
	CHECK(ar_after.messages == ar_before.messages && ar_after.uidnext == ar_before.uidnext);
	CHECK(user(sh, e).used_bytes == ue3.used_bytes);
	/* MOVE is allowed at the quota (usage does not grow) */
	CHECK(store_copy(sh, in.id, ar.id, cp2, 2, true, &s, &dd, &n, &vv, &status, &err) == 0 &&
	      n == 2);
	free(s);
	free(dd);
	CHECK(store_user_update(sh, e, NULL, 0, -1, &status, &err) == 0);
	msg_info_cleanup(&m0);
	VERIFY(sh);
}

/* ---- concurrency ------------------------------------------------------------------ */

#define CONC_THREADS 8
#define CONC_PER_THREAD 200

struct conc_arg {
	struct shard *sh;
	uint64_t mbid;
	int idx;
	int fails;
	uint32_t uids[CONC_PER_THREAD];
};

static void *conc_thread(void *p)
{
	struct conc_arg *a = p;
	for (int i = 0; i < CONC_PER_THREAD; i++) {
		uint64_t seed = 100000 + (uint64_t)a->idx * 1000 + (uint64_t)i;
		size_t len = 100 + (size_t)(seed % 2000);
		uint8_t *b = make_msg(seed, len);
		struct body_writer *bw = body_writer_new(a->sh);
		body_writer_add(bw, b, len);
		struct deliver_target t = { .user = "conc@example.test", .mailbox_id = a->mbid };
		const char *e = NULL;
		enum storage_status st;
		if (store_deliver(a->sh, bw, 0, &t, 1, &st, &e) < 0 || t.status_r != ST_OK)
			a->fails++;
		a->uids[i] = t.uid_r;
		body_writer_free(&bw);
		free(b);
	}
	return NULL;
}

static int cmp_u32(const void *x, const void *y)
{
	uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
	return a < b ? -1 : a > b;
}

static void test_concurrency(struct shard *sh)
{
	CHECK(store_user_create(sh, "conc@example.test", "", 0, &status, &err) == 0);
	struct mailbox_info in = mbox(sh, "conc@example.test", "INBOX");
	struct user_info u0 = user(sh, "conc@example.test");
	static struct conc_arg args[CONC_THREADS];
	pthread_t th[CONC_THREADS];
	for (int i = 0; i < CONC_THREADS; i++) {
		args[i] = (struct conc_arg){ .sh = sh, .mbid = in.id, .idx = i };
		pthread_create(&th[i], NULL, conc_thread, &args[i]);
	}
	uint32_t *acked = malloc(sizeof(uint32_t) * CONC_THREADS * CONC_PER_THREAD);
	size_t na = 0;
	for (int i = 0; i < CONC_THREADS; i++) {
		pthread_join(th[i], NULL);
		CHECK(args[i].fails == 0);
		for (int j = 0; j < CONC_PER_THREAD; j++)
			acked[na++] = args[i].uids[j];
	}
	const size_t total = CONC_THREADS * CONC_PER_THREAD;
	/* every returned UID distinct: 1..1600 */
	qsort(acked, na, sizeof(*acked), cmp_u32);
	size_t dups = 0;
	for (size_t i = 1; i < na; i++)
		if (acked[i] == acked[i - 1])
			dups++;
	if (dups)
		fprintf(stderr, "concurrency: %zu of %zu returned UIDs were handed out twice\n", dups,
			total);
	CHECK(dups == 0 && na == total && acked[0] == 1 && acked[na - 1] == total);
	free(acked);
	uint32_t *uids = NULL;
	size_t n = 0;
	CHECK(store_uids(sh, in.id, &uids, &n, &err) == 0);
	CHECK(n == total);
	for (size_t i = 0; i < n && i < total; i++)
		if (uids[i] != i + 1) {
			fprintf(stderr, "concurrency: uid[%zu] = %u\n", i, uids[i]);
			failures++;
			break;
		}
	free(uids);
	in = mbox(sh, "conc@example.test", "INBOX");
	if (in.messages != total || in.uidnext != total + 1 || in.unseen != total)
		fprintf(stderr, "concurrency: messages=%u uidnext=%u unseen=%u (want %zu)\n",
			in.messages, in.uidnext, in.unseen, total);
	CHECK(in.messages == total && in.uidnext == total + 1 && in.unseen == total);
	struct user_info u1 = user(sh, "conc@example.test");
	CHECK(u1.used_messages == u0.used_messages + total);
	/* MODSEQs distinct */
	struct msg_info *ms = NULL;
	CHECK(store_fetch_range(sh, in.id, 1, UINT32_MAX, &ms, &n, &err) == 0);
	uint32_t *mods = malloc(sizeof(uint32_t) * (n ? n : 1));
	for (size_t i = 0; i < n; i++)
		mods[i] = (uint32_t)ms[i].modseq;
	qsort(mods, n, sizeof(*mods), cmp_u32);
	for (size_t i = 1; i < n; i++)
		CHECK(mods[i] != mods[i - 1]);
	free(mods);
	free_msgs(ms, n);
	VERIFY(sh);
}

/* ---- replication hooks --------------------------------------------------------------- */

struct kv {
	uint8_t *k, *v;
	size_t kl, vl;
};
struct kvs {
	struct kv *a;
	size_t n, cap;
};

static int kv_collect(void *arg, struct view k, struct view v)
{
	struct kvs *s = arg;
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 256;
		s->a = realloc(s->a, s->cap * sizeof(*s->a));
	}
	struct kv *e = &s->a[s->n++];
	e->k = malloc(k.len ? k.len : 1);
	e->v = malloc(v.len ? v.len : 1);
	memcpy(e->k, k.ptr, k.len);
	memcpy(e->v, v.ptr, v.len);
	e->kl = k.len;
	e->vl = v.len;
	return 0;
}

static void kvs_free(struct kvs *s)
{
	for (size_t i = 0; i < s->n; i++) {
		free(s->a[i].k);
		free(s->a[i].v);
	}
	free(s->a);
	s->a = NULL;
	s->n = s->cap = 0;
}

/* Number of differing entries (0 = equal key for key). */
static size_t kvs_diff(struct shard *x, struct shard *y)
{
	struct kvs a = { 0 }, b = { 0 };
	CHECK(shard_scan_all(x, kv_collect, &a, &err) == 0);
	CHECK(shard_scan_all(y, kv_collect, &b, &err) == 0);
	size_t diff = a.n > b.n ? a.n - b.n : b.n - a.n;
	for (size_t i = 0; i < MIN(a.n, b.n); i++) {
		if (a.a[i].kl != b.a[i].kl || memcmp(a.a[i].k, b.a[i].k, a.a[i].kl) != 0 ||
		    a.a[i].vl != b.a[i].vl || memcmp(a.a[i].v, b.a[i].v, a.a[i].vl) != 0) {
			if (diff < 5)
				fprintf(stderr, "replica differs at entry %zu (key '%c' len %zu)\n", i,
					a.a[i].k[0], a.a[i].kl);
			diff++;
		}
	}
	if (a.n != b.n)
		fprintf(stderr, "replica: %zu keys, primary %zu\n", b.n, a.n);
	kvs_free(&a);
	kvs_free(&b);
	return diff;
}

struct batches {
	uint64_t *seq;
	struct buf *b;
	size_t n, cap;
	uint64_t after;
	bool order_bad;
};

static int batch_collect(void *arg, uint64_t seq, struct view batch)
{
	struct batches *s = arg;
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 64;
		s->seq = realloc(s->seq, s->cap * sizeof(*s->seq));
		s->b = realloc(s->b, s->cap * sizeof(*s->b));
	}
	if (s->n && seq <= s->seq[s->n - 1])
		s->order_bad = true;
	s->seq[s->n] = seq;
	buf_init(&s->b[s->n], 0);
	buf_append(&s->b[s->n], batch.ptr, batch.len);
	s->n++;
	return 0;
}

static void batches_free(struct batches *s)
{
	for (size_t i = 0; i < s->n; i++)
		buf_cleanup(&s->b[i]);
	free(s->seq);
	free(s->b);
	memset(s, 0, sizeof(*s));
}

/* Some writes of every kind, to ship. */
static void more_writes(struct shard *sh, uint64_t base)
{
	const char *f = "frank@example.test";
	struct mailbox_info in = mbox(sh, f, "INBOX"), tr = mbox(sh, f, "Trash");
	uint32_t u[4];
	for (int i = 0; i < 4; i++)
		u[i] = deliver1(sh, f, 0, base + (uint64_t)i, 900 + (size_t)i * 700, 0, NULL, NULL);
	struct msg_info *ch = NULL;
	uint32_t *failed = NULL, *s = NULL, *d = NULL, vv;
	size_t nch, nf, n;
	CHECK(store_flags(sh, in.id, u, 2, FLAGS_ADD, FLAG_SEEN | FLAG_DELETED, NULL, 0, &ch, &nch,
			  &failed, &nf, &status, &err) == 0);
	free_msgs(ch, nch);
	free(failed);
	CHECK(store_expunge(sh, in.id, u, 4, true, &s, &n, &status, &err) == 0 && n == 2);
	free(s);
	CHECK(store_copy(sh, in.id, tr.id, &u[2], 1, true, &s, &d, &n, &vv, &status, &err) == 0);
	free(s);
	free(d);
	char name[32];
	snprintf(name, sizeof(name), "F%llu", (unsigned long long)base);
	struct mailbox_info mi;
	CHECK(store_mailbox_create(sh, f, name, 0, &mi, &status, &err) == 0);
	CHECK(store_mailbox_delete(sh, f, name, &status, &err) == 0);
}

static void test_replication(struct shard *sh, const char *root)
{
	CHECK(store_user_create(sh, "frank@example.test", "", 0, &status, &err) == 0);
	uint64_t s0 = shard_latest_seq(sh);
	CHECK(s0 > 0);
	more_writes(sh, 600);
	uint64_t s = shard_latest_seq(sh);
	CHECK(s > s0);
	/* nothing after the latest */
	struct batches none = { 0 };
	CHECK(shard_updates_since(sh, s, batch_collect, &none, &err) == 0 && none.n == 0);

	char data2[1024], shards2[1100], cp[1200];
	snprintf(data2, sizeof(data2), "%s/DATA2", root);
	snprintf(shards2, sizeof(shards2), "%s/shards", data2);
	snprintf(cp, sizeof(cp), "%s/shards/0001", data2);
	CHECK(mkdir(data2, 0750) == 0 && mkdir(shards2, 0750) == 0);
	CHECK(shard_checkpoint(sh, cp, &err) == 0);
	CHECK(shard_checkpoint(sh, cp, &err) == -1); /* must not exist */
	more_writes(sh, 700);
	more_writes(sh, 800);
	uint64_t s_end = shard_latest_seq(sh);

	struct batches bs = { 0 };
	CHECK(shard_updates_since(sh, s, batch_collect, &bs, &err) == 0);
	CHECK(bs.n > 0 && !bs.order_bad);
	CHECK(bs.n > 0 && bs.seq[0] == s + 1);

	struct storage_options o2 = { .dir = data2, .body_chunk_bytes = CHUNK };
	struct storage *st2 = storage_open(&o2, &err);
	CHECK(st2 != NULL);
	struct shard *rep = st2 ? storage_shard_open(st2, 1, false, &err) : NULL;
	CHECK(rep != NULL);
	if (!rep) {
		fprintf(stderr, "open replica: %s\n", err);
		batches_free(&bs);
		storage_close(&st2);
		return;
	}
	CHECK(shard_latest_seq(rep) == s);
	for (size_t i = 0; i < bs.n; i++)
		CHECK(shard_apply_batch(rep, bs.seq[i], buf_view(&bs.b[i]), &err) == 0);
	CHECK(shard_latest_seq(rep) == s_end);
	CHECK(kvs_diff(sh, rep) == 0);
	CHECK(store_verify(rep, report_line, NULL, &err) == 0);
	/* a bad batch is refused */
	CHECK(shard_apply_batch(rep, s_end + 1, view_make("short", 5), &err) == -1);
	/* a batch that skips ahead (a gap) is refused */
	if (bs.n > 0)
		CHECK(shard_apply_batch(rep, s_end + 5, buf_view(&bs.b[0]), &err) == -1);

	/* Batches from an earlier sequence (s0 < s, already contained in the
	 * checkpoint) are skipped by sequence: replaying the whole history on
	 * a copy that has it leaves it unchanged, sequence included. */
	struct batches early = { 0 };
	CHECK(shard_updates_since(sh, s0, batch_collect, &early, &err) == 0);
	CHECK(early.n > bs.n);
	char cp3[1200];
	snprintf(cp3, sizeof(cp3), "%s/shards/0002", data2);
	/* a second replica from the same point: the checkpoint of the
	 * replica itself is not at s anymore, so take one of the primary at
	 * s_end and replay everything since s0 on it */
	CHECK(shard_checkpoint(sh, cp3, &err) == 0);
	struct shard *rep2 = storage_shard_open(st2, 2, false, &err);
	CHECK(rep2 != NULL);
	if (rep2) {
		for (size_t i = 0; i < early.n; i++)
			CHECK(shard_apply_batch(rep2, early.seq[i], buf_view(&early.b[i]), &err) == 0);
		size_t d = kvs_diff(sh, rep2);
		uint64_t l2 = shard_latest_seq(rep2);
		CHECK(d == 0);
		CHECK(l2 == s_end);
	}
	storage_close(&st2);
	batches_free(&early);
	batches_free(&bs);
	batches_free(&none);
	VERIFY(sh);
}

/* ---- durability across reopen ------------------------------------------------------- */

static struct shard *reopen(struct storage **st, const struct storage_options *o)
{
	storage_close(st);
	*st = storage_open(o, &err);
	if (!*st)
		return NULL;
	return storage_shard_open(*st, 0, false, &err);
}

int main(void)
{
	const char *tmp = getenv("MAIL_TEST_TMP");
	char root[900], data[1000];
	snprintf(root, sizeof(root), "%s/store.%d", tmp ? tmp : "/tmp", (int)getpid());
	snprintf(data, sizeof(data), "%s/DATA", root);
	rm_rf(root);
	char cmd[2000];
	snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", root);
	if (system(cmd) != 0)
		return 1;
	const uint64_t max = 200000;
	struct storage_options o = { .dir = data, .body_chunk_bytes = CHUNK,
				     .max_message_bytes = max };
	struct storage *st = storage_open(&o, &err);
	struct shard *sh = st ? storage_shard_open(st, 0, true, &err) : NULL;
	if (!sh) {
		fprintf(stderr, "open: %s\n", err);
		return 1;
	}
	CHECK(storage_shard_open(st, 0, true, &err) == sh);
	CHECK(storage_shard_get(st, 0) == sh && storage_shard_get(st, 7) == NULL);
	CHECK(shard_id(sh) == 0 && strstr(shard_dir(sh), "/shards/0000") != NULL);
	CHECK(storage_shard_open(st, 5, false, &err) == NULL); /* no create */
	CHECK(storage_shard_open(st, 70000, true, &err) == NULL);
	CHECK(strcmp(storage_status_str(ST_OVER_QUOTA), "over_quota") == 0);

	test_users(sh);
	test_mailboxes(sh);
	test_deliver(sh);
	test_too_large(sh, max);
	test_append(sh, max);
	test_flags_expunge(sh);
	test_copy_move(sh);
	test_replication(sh, root);

	/* everything survives close and reopen */
	struct mailbox_info before = mbox(sh, "dave@example.test", "INBOX");
	sh = reopen(&st, &o);
	CHECK(sh != NULL);
	if (sh) {
		struct mailbox_info after = mbox(sh, "dave@example.test", "INBOX");
		CHECK(after.id == before.id && after.uidnext == before.uidnext &&
		      after.highestmodseq == before.highestmodseq && after.messages == before.messages);
		VERIFY(sh);
		/* a scratch shard can be dropped */
		struct shard *x = storage_shard_open(st, 3, true, &err);
		CHECK(x != NULL);
		CHECK(storage_shard_drop(st, 3, &err) == 0);
		CHECK(storage_shard_get(st, 3) == NULL);
		char p[1200];
		snprintf(p, sizeof(p), "%s/shards/0003", data);
		struct stat sb;
		CHECK(stat(p, &sb) == -1 && errno == ENOENT);
		struct shard *s1 = storage_shard_open(st, 1, true, &err);
		struct shard *s2 = storage_shard_open(st, 2, true, &err);
		CHECK(s1 && s2);
		if (s1 && s2) {
			test_deliver_cross_user(s2);
			test_concurrency(s1);
		}
	}
	storage_close(&st);
	if (failures == 0)
		rm_rf(root);
	else
		fprintf(stderr, "%d failures; data left in %s\n", failures, root);
	return failures ? 1 : 0;
}
