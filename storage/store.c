/* The mailbox store over RocksDB shards. See store.h for the contracts and
 * codec.h for the key layout.
 *
 * Writers of one shard take its mutex for their read-modify-write step:
 * they read through the pending group (a WriteBatchWithIndex over the DB),
 * so they see each other's uncommitted changes, and add their own puts to
 * it. The first writer to wait becomes the group's leader: it swaps in a
 * fresh group, writes the old one with one synced WAL write outside the
 * mutex, and wakes everyone in it (group commit). Readers use the DB only,
 * so they see nothing before it is durable. Operations that scan ranges
 * first let the pending group commit (sh_quiesce), then scan the DB. */
#include "storage/store.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/sha.h>
#include <rocksdb/c.h>

#include "storage/codec.h"
#include "storage/mime.h"

#define MAX_SHARDS 65536

struct storage {
	struct storage_options opts;
	char *dir;
	rocksdb_cache_t *cache;
	rocksdb_block_based_table_options_t *table;
	pthread_mutex_t mu;
	struct shard **shards; /* by id */
};

struct shard {
	struct storage *st;
	uint32_t id;
	char *dir;
	rocksdb_t *db;
	rocksdb_options_t *opts;
	rocksdb_readoptions_t *ro;
	rocksdb_writeoptions_t *wo;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	rocksdb_writebatch_wi_t *pending;
	unsigned pending_ops;
	uint64_t group_open; /* group now accumulating */
	uint64_t group_done; /* every group <= this one is written (or failed) */
	bool leader;
	unsigned savepoint_ops; /* pending_ops when this operation began */
	unsigned begin_waiters; /* writers waiting for a group write to end */
	bool quiescing;         /* an operation scans the DB: writers wait */
	bool broken;          /* a WAL write failed: refuse writes */
	uint64_t broken_from; /* first failed group */
};

static __thread char errbuf[320];

static int fail(const char **error_r, enum storage_status *status_r, enum storage_status st,
		const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail(const char **error_r, enum storage_status *status_r, enum storage_status st,
		const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(errbuf, sizeof(errbuf), fmt, ap);
	va_end(ap);
	if (error_r)
		*error_r = errbuf;
	if (status_r)
		*status_r = st;
	return -1;
}

static int rocks_fail(const char **error_r, enum storage_status *status_r, char *err)
{
	fail(error_r, status_r, ST_IO, "storage: %s", err ? err : "unknown error");
	free(err);
	return -1;
}

const char *storage_status_str(enum storage_status s)
{
	switch (s) {
	case ST_OK: return "ok";
	case ST_NOT_FOUND: return "not_found";
	case ST_EXISTS: return "exists";
	case ST_OVER_QUOTA: return "over_quota";
	case ST_TOO_LARGE: return "too_large";
	case ST_INVALID: return "invalid";
	case ST_MODIFIED: return "modified";
	case ST_IO: return "io";
	case ST_DISABLED: return "disabled";
	}
	return "?";
}

static void set_ok(enum storage_status *status_r)
{
	if (status_r)
		*status_r = ST_OK;
}

/* ---- storage and shards -------------------------------------------------- */

static int mkdir_p(const char *path)
{
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s", path);
	for (char *p = tmp + 1; *p; p++) {
		if (*p == '/') {
			*p = '\0';
			if (mkdir(tmp, 0750) < 0 && errno != EEXIST)
				return -1;
			*p = '/';
		}
	}
	return mkdir(tmp, 0750) < 0 && errno != EEXIST ? -1 : 0;
}

struct storage *storage_open(const struct storage_options *opts, const char **error_r)
{
	struct storage *st = xcalloc(1, sizeof(*st));
	st->opts = *opts;
	if (!st->opts.block_cache_bytes)
		st->opts.block_cache_bytes = 256u << 20;
	if (st->opts.write_buffer_budget) {
		size_t per = st->opts.write_buffer_budget /
			     (2 * (size_t)MAX(1u, st->opts.expected_shards));
		st->opts.write_buffer_bytes = MAX(per, (size_t)1 << 20);
	}
	if (!st->opts.write_buffer_bytes)
		st->opts.write_buffer_bytes = 8u << 20;
	if (!st->opts.blob_min_bytes)
		st->opts.blob_min_bytes = 4096;
	if (!st->opts.body_chunk_bytes)
		st->opts.body_chunk_bytes = 256u << 10;
	if (!st->opts.max_message_bytes)
		st->opts.max_message_bytes = 64u << 20;
	st->dir = xstrdup(opts->dir);
	char path[4096];
	snprintf(path, sizeof(path), "%s/shards", st->dir);
	if (mkdir_p(path) < 0) {
		fail(error_r, NULL, ST_IO, "storage: cannot create %s: %s", path, strerror(errno));
		free(st->dir);
		free(st);
		return NULL;
	}
	st->cache = rocksdb_cache_create_lru(st->opts.block_cache_bytes);
	st->table = rocksdb_block_based_options_create();
	rocksdb_block_based_options_set_block_cache(st->table, st->cache);
	rocksdb_block_based_options_set_cache_index_and_filter_blocks(st->table, 1);
	rocksdb_block_based_options_set_filter_policy(st->table,
						      rocksdb_filterpolicy_create_bloom(10));
	pthread_mutex_init(&st->mu, NULL);
	st->shards = xcalloc(MAX_SHARDS, sizeof(*st->shards));
	return st;
}

static void shard_free(struct shard *sh)
{
	if (sh->db)
		rocksdb_close(sh->db);
	if (sh->pending)
		rocksdb_writebatch_wi_destroy(sh->pending);
	rocksdb_options_destroy(sh->opts);
	rocksdb_readoptions_destroy(sh->ro);
	rocksdb_writeoptions_destroy(sh->wo);
	pthread_mutex_destroy(&sh->mu);
	pthread_cond_destroy(&sh->cv);
	free(sh->dir);
	free(sh);
}

void storage_close(struct storage **stp)
{
	struct storage *st = *stp;
	if (!st)
		return;
	*stp = NULL;
	for (uint32_t i = 0; i < MAX_SHARDS; i++)
		if (st->shards[i])
			shard_free(st->shards[i]);
	free(st->shards);
	rocksdb_block_based_options_destroy(st->table);
	rocksdb_cache_destroy(st->cache);
	pthread_mutex_destroy(&st->mu);
	free(st->dir);
	free(st);
}

struct shard *storage_shard_open(struct storage *st, uint32_t id, bool create,
				 const char **error_r)
{
	if (id >= MAX_SHARDS) {
		fail(error_r, NULL, ST_INVALID, "shard id %u out of range", id);
		return NULL;
	}
	pthread_mutex_lock(&st->mu);
	struct shard *sh = st->shards[id];
	if (sh) {
		pthread_mutex_unlock(&st->mu);
		return sh;
	}
	sh = xcalloc(1, sizeof(*sh));
	sh->st = st;
	sh->id = id;
	char path[4096];
	snprintf(path, sizeof(path), "%s/shards/%04u", st->dir, id);
	sh->dir = xstrdup(path);
	sh->opts = rocksdb_options_create();
	rocksdb_options_set_create_if_missing(sh->opts, create);
	rocksdb_options_set_block_based_table_factory(sh->opts, st->table);
	rocksdb_options_set_write_buffer_size(sh->opts, st->opts.write_buffer_bytes);
	rocksdb_options_set_max_write_buffer_number(sh->opts, 2);
	rocksdb_options_set_enable_blob_files(sh->opts, 1);
	rocksdb_options_set_min_blob_size(sh->opts, st->opts.blob_min_bytes);
	rocksdb_options_set_enable_blob_gc(sh->opts, 1);
	rocksdb_options_set_compression(sh->opts, rocksdb_lz4_compression);
	/* Keep WAL history for replicas catching up (get_updates_since). */
	rocksdb_options_set_WAL_ttl_seconds(sh->opts, 3600);
	rocksdb_options_set_WAL_size_limit_MB(sh->opts, 1024);
	rocksdb_options_set_max_open_files(sh->opts, 256);
	/* Many small shards per node: no 4 MiB MANIFEST preallocation each. */
	rocksdb_options_set_manifest_preallocation_size(sh->opts, 64 * 1024);
	sh->ro = rocksdb_readoptions_create();
	sh->wo = rocksdb_writeoptions_create();
	rocksdb_writeoptions_set_sync(sh->wo, st->opts.no_sync ? 0 : 1);
	pthread_mutex_init(&sh->mu, NULL);
	pthread_cond_init(&sh->cv, NULL);
	sh->pending = rocksdb_writebatch_wi_create(0, 1);
	sh->group_open = 1;
	char *err = NULL;
	if (create)
		mkdir_p(path);
	sh->db = rocksdb_open(sh->opts, path, &err);
	if (!sh->db) {
		fail(error_r, NULL, ST_IO, "shard %u: %s", id, err ? err : "open failed");
		free(err);
		shard_free(sh);
		pthread_mutex_unlock(&st->mu);
		return NULL;
	}
	st->shards[id] = sh;
	pthread_mutex_unlock(&st->mu);
	return sh;
}

struct shard *storage_shard_get(struct storage *st, uint32_t id)
{
	if (id >= MAX_SHARDS)
		return NULL;
	pthread_mutex_lock(&st->mu);
	struct shard *sh = st->shards[id];
	pthread_mutex_unlock(&st->mu);
	return sh;
}

void storage_shard_close(struct storage *st, uint32_t id)
{
	if (id >= MAX_SHARDS)
		return;
	pthread_mutex_lock(&st->mu);
	struct shard *sh = st->shards[id];
	st->shards[id] = NULL;
	pthread_mutex_unlock(&st->mu);
	if (sh)
		shard_free(sh);
}

static int rm_rf(const char *path)
{
	DIR *d = opendir(path);
	if (!d)
		return unlink(path) == 0 || errno == ENOENT ? 0 : -1;
	struct dirent *e;
	int r = 0;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		char p[4096];
		snprintf(p, sizeof(p), "%s/%s", path, e->d_name);
		if (rm_rf(p) < 0)
			r = -1;
	}
	closedir(d);
	return rmdir(path) < 0 ? -1 : r;
}

int storage_shard_drop(struct storage *st, uint32_t id, const char **error_r)
{
	storage_shard_close(st, id);
	char path[4096];
	snprintf(path, sizeof(path), "%s/shards/%04u", st->dir, id);
	if (rm_rf(path) < 0 && errno != ENOENT)
		return fail(error_r, NULL, ST_IO, "drop shard %u: %s", id, strerror(errno));
	return 0;
}

uint32_t shard_id(const struct shard *sh) { return sh->id; }
const char *shard_dir(const struct shard *sh) { return sh->dir; }

/* ---- group commit --------------------------------------------------------- */

/* Invariants (mu held):
 * - While a group is being written (leader), no writer computes: the
 *   group's changes are neither in `pending` nor yet in the DB, so a read
 *   then would be stale. Writers that arrive meanwhile wait in sh_begin
 *   (begin_waiters).
 * - When the write completes they all compute in turn, and the leadership
 *   of the next group goes to the last of them (a writer whose changes are
 *   pending waits while begin_waiters > 0), so one fsync covers everyone
 *   who queued during the previous one: group commit.
 * - A quiescing operation (one that scans the DB) keeps new writers out
 *   until it ends, and leads its own commit. */

static void sh_wake(struct shard *sh)
{
	pthread_cond_broadcast(&sh->cv);
}

/* Called with sh->mu held; returns with it held. Makes every change added
 * to the pending group up to now durable. Returns 0 or -1 (WAL write
 * failed for that group). */
static int sh_commit_upto(struct shard *sh, uint64_t my_group, const char **error_r)
{
	while (sh->group_done < my_group) {
		if (sh->leader || (sh->begin_waiters > 0 && !sh->quiescing)) {
			pthread_cond_wait(&sh->cv, &sh->mu);
			continue;
		}
		sh->leader = true;
		rocksdb_writebatch_wi_t *group = sh->pending;
		uint64_t gid = sh->group_open;
		bool empty = sh->pending_ops == 0;
		sh->pending = rocksdb_writebatch_wi_create(0, 1);
		sh->pending_ops = 0;
		sh->group_open++;
		pthread_mutex_unlock(&sh->mu);
		char *err = NULL;
		if (!empty)
			rocksdb_write_writebatch_wi(sh->db, sh->wo, group, &err);
		rocksdb_writebatch_wi_destroy(group);
		pthread_mutex_lock(&sh->mu);
		if (err) {
			if (!sh->broken) {
				sh->broken = true;
				sh->broken_from = gid;
			}
			snprintf(errbuf, sizeof(errbuf), "storage: WAL write failed: %s", err);
			free(err);
		}
		sh->group_done = gid;
		sh->leader = false;
		sh_wake(sh);
	}
	if (sh->broken && my_group >= sh->broken_from) {
		if (error_r)
			*error_r = "storage: a WAL write failed on this shard; it refuses writes";
		return -1;
	}
	return 0;
}

/* An operation's changes can be undone until it ends: a save point in
 * the pending group marks where they start (mu held). */
static void sh_savepoint(struct shard *sh)
{
	rocksdb_writebatch_wi_set_save_point(sh->pending);
	sh->savepoint_ops = sh->pending_ops;
}

/* Make the DB alone current and keep it so until this operation ends
 * (mu held; only before the operation has written anything). */
static int sh_quiesce(struct shard *sh, const char **error_r)
{
	sh->quiescing = true;
	int r = 0;
	if (sh->pending_ops || sh->leader)
		r = sh_commit_upto(sh, sh->group_open, error_r);
	sh_savepoint(sh);
	return r;
}

static int sh_begin(struct shard *sh, enum storage_status *status_r, const char **error_r)
{
	pthread_mutex_lock(&sh->mu);
	if (sh->leader || sh->quiescing) {
		sh->begin_waiters++;
		while (sh->leader || sh->quiescing)
			pthread_cond_wait(&sh->cv, &sh->mu);
		if (--sh->begin_waiters == 0)
			sh_wake(sh);
	}
	if (sh->broken) {
		pthread_mutex_unlock(&sh->mu);
		return fail(error_r, status_r, ST_IO,
			    "storage: shard %u refuses writes after a WAL failure", sh->id);
	}
	sh_savepoint(sh);
	return 0;
}

static void sh_unlock(struct shard *sh)
{
	if (sh->quiescing) {
		sh->quiescing = false;
		sh_wake(sh);
	}
	pthread_mutex_unlock(&sh->mu);
}

/* The operation failed: drop what it added and release the lock. */
static void sh_abort(struct shard *sh)
{
	if (sh->pending_ops != sh->savepoint_ops) {
		char *err = NULL;
		rocksdb_writebatch_wi_rollback_to_save_point(sh->pending, &err);
		if (err) {
			/* Cannot happen (a save point is always set); never
			 * commit a half operation: refuse writes instead. */
			sh->broken = true;
			sh->broken_from = sh->group_open;
			free(err);
		}
		sh->pending_ops = sh->savepoint_ops;
	}
	sh_wake(sh); /* a writer may wait for this one to add its changes */
	sh_unlock(sh);
}

/* Keep the message already in *error_r; set the status. */
static int fail_io(const char **error_r, enum storage_status *status_r)
{
	if (status_r)
		*status_r = ST_IO;
	if (error_r && !*error_r)
		*error_r = "storage error";
	return -1;
}

/* Commit what this operation added (if anything) and release the lock. */
static int sh_end(struct shard *sh, bool wrote, enum storage_status *status_r,
		  const char **error_r)
{
	int r = 0;
	if (wrote && sh_commit_upto(sh, sh->group_open, error_r) < 0) {
		if (status_r)
			*status_r = ST_IO;
		r = -1;
	}
	if (!wrote)
		sh_wake(sh);
	sh_unlock(sh);
	return r;
}

static void w_put(struct shard *sh, const void *k, size_t kl, const void *v, size_t vl)
{
	rocksdb_writebatch_wi_put(sh->pending, k, kl, v, vl);
	sh->pending_ops++;
}

static void w_del(struct shard *sh, const void *k, size_t kl)
{
	rocksdb_writebatch_wi_delete(sh->pending, k, kl);
	sh->pending_ops++;
}

/* Read through the pending group (writers, mu held). 1 found, 0 not, -1 error. */
static int w_get(struct shard *sh, const void *k, size_t kl, struct buf *out, const char **error_r)
{
	char *err = NULL;
	size_t vl = 0;
	char *v = rocksdb_writebatch_wi_get_from_batch_and_db(sh->pending, sh->db, sh->ro, k, kl,
							      &vl, &err);
	if (err)
		return rocks_fail(error_r, NULL, err);
	if (!v)
		return 0;
	out->len = 0;
	buf_append(out, v, vl);
	free(v);
	return 1;
}

/* Read committed data only (readers). */
static int r_get(struct shard *sh, const void *k, size_t kl, struct buf *out, const char **error_r)
{
	char *err = NULL;
	size_t vl = 0;
	char *v = rocksdb_get(sh->db, sh->ro, k, kl, &vl, &err);
	if (err)
		return rocks_fail(error_r, NULL, err);
	if (!v)
		return 0;
	out->len = 0;
	buf_append(out, v, vl);
	free(v);
	return 1;
}

/* ---- change counters --------------------------------------------------- */

#define CHANGE_SLOTS 65536u
static _Atomic uint64_t change_slots[CHANGE_SLOTS];

static _Atomic uint64_t *change_slot(const struct shard *sh, uint64_t mbid)
{
	uint64_t h = (mbid ^ ((uint64_t)sh->id << 40)) * 0x9e3779b97f4a7c15ull;
	return &change_slots[h >> 48];
}

static void mailbox_changed(const struct shard *sh, uint64_t mbid)
{
	atomic_fetch_add_explicit(change_slot(sh, mbid), 1, memory_order_release);
}

uint64_t store_mailbox_changes(const struct shard *sh, uint64_t mailbox_id)
{
	return atomic_load_explicit(change_slot(sh, mailbox_id), memory_order_acquire);
}

/* ---- raw key/value access --------------------------------------------- */

int shard_kv_get(struct shard *sh, struct view key, struct buf *out, const char **error_r)
{
	return r_get(sh, key.ptr, key.len, out, error_r);
}

int shard_kv_write(struct shard *sh, const struct kv_op *ops, size_t n, const char **error_r)
{
	if (sh_begin(sh, NULL, error_r) < 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (ops[i].del)
			w_del(sh, ops[i].key.ptr, ops[i].key.len);
		else
			w_put(sh, ops[i].key.ptr, ops[i].key.len, ops[i].value.ptr, ops[i].value.len);
	}
	return sh_end(sh, n > 0, NULL, error_r);
}

static int scan_prefix(struct shard *sh, const void *prefix, size_t plen,
		       int (*fn)(void *arg, struct view k, struct view v), void *arg,
		       const char **error_r);

int shard_kv_scan(struct shard *sh, struct view prefix,
		  int (*fn)(void *arg, struct view k, struct view v), void *arg,
		  const char **error_r)
{
	return scan_prefix(sh, prefix.ptr, prefix.len, fn, arg, error_r);
}

/* ---- keys -------------------------------------------------------------- */

struct key {
	uint8_t b[600];
	size_t len;
};

static void key_user(struct key *k, const char *user)
{
	size_t n = MIN(strlen(user), sizeof(k->b) - 1);
	k->b[0] = KEY_USER;
	memcpy(k->b + 1, user, n);
	k->len = 1 + n;
}

static void key_mbname(struct key *k, const char *user, const char *name)
{
	size_t ul = MIN(strlen(user), (size_t)256), nl = MIN(strlen(name), (size_t)MAILBOX_NAME_MAX);
	k->b[0] = KEY_MBNAME;
	memcpy(k->b + 1, user, ul);
	k->b[1 + ul] = 0;
	memcpy(k->b + 2 + ul, name, nl);
	k->len = 2 + ul + nl;
}

static void key_mailbox(struct key *k, uint64_t id)
{
	k->b[0] = KEY_MAILBOX;
	be64(k->b + 1, id);
	k->len = 9;
}

static void key_message(struct key *k, uint64_t mbid, uint32_t uid)
{
	k->b[0] = KEY_MESSAGE;
	be64(k->b + 1, mbid);
	be32(k->b + 9, uid);
	k->len = 13;
}

static void key_expunge(struct key *k, uint64_t mbid, uint64_t modseq, uint32_t uid)
{
	k->b[0] = KEY_EXPUNGE;
	be64(k->b + 1, mbid);
	be64(k->b + 9, modseq);
	be32(k->b + 17, uid);
	k->len = 21;
}

static void key_body(struct key *k, const uint8_t hash[32])
{
	k->b[0] = KEY_BODY;
	memcpy(k->b + 1, hash, 32);
	k->len = 33;
}

static void key_chunk(struct key *k, const uint8_t hash[32], uint32_t idx)
{
	k->b[0] = KEY_CHUNK;
	memcpy(k->b + 1, hash, 32);
	be32(k->b + 33, idx);
	k->len = 37;
}

static void key_counter(struct key *k, const char *name)
{
	size_t n = strlen(name);
	k->b[0] = KEY_COUNTER;
	memcpy(k->b + 1, name, n);
	k->len = 1 + n;
}

/* ---- records ------------------------------------------------------------ */

static void enc_user(struct buf *b, const struct user_info *u)
{
	b->len = 0;
	put_u8(b, RECORD_VERSION);
	put_u64(b, u->quota_bytes);
	put_u64(b, u->used_bytes);
	put_u64(b, u->used_messages);
	put_u8(b, u->enabled ? 1 : 0);
	put_u64(b, u->created_ms);
	put_str16(b, u->pwhash);
}

static bool dec_user(struct view v, const char *address, struct user_info *u)
{
	struct dec d = dec_make(v.ptr, v.len);
	memset(u, 0, sizeof(*u));
	snprintf(u->address, sizeof(u->address), "%s", address);
	if (get_u8(&d) != RECORD_VERSION)
		return false;
	u->quota_bytes = get_u64(&d);
	u->used_bytes = get_u64(&d);
	u->used_messages = get_u64(&d);
	u->enabled = get_u8(&d) != 0;
	u->created_ms = get_u64(&d);
	get_str16(&d, u->pwhash, sizeof(u->pwhash));
	return !d.bad;
}

struct mbox_rec {
	char user[256];
	struct mailbox_info m;
};

static void enc_mbox(struct buf *b, const struct mbox_rec *r)
{
	b->len = 0;
	put_u8(b, RECORD_VERSION);
	put_str16(b, r->user);
	put_str16(b, r->m.name);
	put_u32(b, r->m.uidvalidity);
	put_u32(b, r->m.uidnext);
	put_u64(b, r->m.highestmodseq);
	put_u32(b, r->m.messages);
	put_u32(b, r->m.unseen);
	put_u64(b, r->m.size);
	put_u32(b, r->m.special_use);
	put_u8(b, r->m.subscribed ? 1 : 0);
}

static bool dec_mbox(struct view v, uint64_t id, struct mbox_rec *r)
{
	struct dec d = dec_make(v.ptr, v.len);
	memset(r, 0, sizeof(*r));
	if (get_u8(&d) != RECORD_VERSION)
		return false;
	get_str16(&d, r->user, sizeof(r->user));
	get_str16(&d, r->m.name, sizeof(r->m.name));
	r->m.id = id;
	r->m.uidvalidity = get_u32(&d);
	r->m.uidnext = get_u32(&d);
	r->m.highestmodseq = get_u64(&d);
	r->m.messages = get_u32(&d);
	r->m.unseen = get_u32(&d);
	r->m.size = get_u64(&d);
	r->m.special_use = get_u32(&d);
	r->m.subscribed = get_u8(&d) != 0;
	return !d.bad;
}

static void enc_msg(struct buf *b, const struct msg_info *m)
{
	b->len = 0;
	put_u8(b, RECORD_VERSION);
	put_u64(b, m->modseq);
	put_u32(b, m->flags);
	put_u64(b, m->internal_date_ms);
	put_u64(b, m->save_date_ms);
	put_u64(b, m->size);
	buf_append(b, m->body_hash, 32);
	size_t nk = 0;
	while (m->keywords && m->keywords[nk])
		nk++;
	put_u16(b, (uint16_t)nk);
	for (size_t i = 0; i < nk; i++)
		put_str16(b, m->keywords[i]);
}

void msg_info_cleanup(struct msg_info *m)
{
	if (m->keywords) {
		for (char **k = m->keywords; *k; k++)
			free(*k);
		free(m->keywords);
	}
	m->keywords = NULL;
}

static bool dec_msg(struct view v, uint32_t uid, struct msg_info *m)
{
	struct dec d = dec_make(v.ptr, v.len);
	memset(m, 0, sizeof(*m));
	if (get_u8(&d) != RECORD_VERSION)
		return false;
	m->uid = uid;
	m->modseq = get_u64(&d);
	m->flags = get_u32(&d);
	m->internal_date_ms = get_u64(&d);
	m->save_date_ms = get_u64(&d);
	m->size = get_u64(&d);
	get_raw(&d, m->body_hash, 32);
	uint16_t nk = get_u16(&d);
	if (d.bad || nk > 1000)
		return false;
	m->keywords = xcalloc((size_t)nk + 1, sizeof(char *));
	for (uint16_t i = 0; i < nk; i++) {
		struct view kv = get_view16(&d);
		if (d.bad)
			break;
		m->keywords[i] = strndup((const char *)kv.ptr, kv.len);
	}
	if (d.bad) {
		msg_info_cleanup(m);
		return false;
	}
	return true;
}

struct body_rec {
	uint64_t refcount;
	uint64_t size;
	uint32_t nchunks;
	uint32_t chunk_size; /* every chunk but the last has this size */
	struct view mime; /* borrowed from the value */
};

static void enc_body(struct buf *b, const struct body_rec *r)
{
	b->len = 0;
	put_u8(b, RECORD_VERSION);
	put_u64(b, r->refcount);
	put_u64(b, r->size);
	put_u32(b, r->nchunks);
	put_u32(b, r->chunk_size);
	put_u32(b, (uint32_t)r->mime.len);
	buf_append(b, r->mime.ptr, r->mime.len);
}

static bool dec_body(struct view v, struct body_rec *r)
{
	struct dec d = dec_make(v.ptr, v.len);
	memset(r, 0, sizeof(*r));
	if (get_u8(&d) != RECORD_VERSION)
		return false;
	r->refcount = get_u64(&d);
	r->size = get_u64(&d);
	r->nchunks = get_u32(&d);
	r->chunk_size = get_u32(&d);
	uint32_t ml = get_u32(&d);
	if (!dec_need(&d, ml))
		return false;
	r->mime = view_make(d.p, ml);
	return true;
}

/* ---- helpers used by writers (mu held) ---------------------------------- */

static uint64_t w_counter_next(struct shard *sh, const char *name, uint64_t floor,
			       const char **error_r, int *err_r)
{
	struct key k;
	key_counter(&k, name);
	struct buf v;
	buf_init(&v, 0);
	uint64_t cur = 0;
	int r = w_get(sh, k.b, k.len, &v, error_r);
	if (r < 0) {
		*err_r = -1;
		buf_cleanup(&v);
		return 0;
	}
	if (r == 1 && v.len == 8)
		cur = rd64(v.data);
	uint64_t next = MAX(cur + 1, floor);
	uint8_t out[8];
	be64(out, next);
	w_put(sh, k.b, k.len, out, 8);
	buf_cleanup(&v);
	return next;
}

static int w_load_user(struct shard *sh, const char *user, struct user_info *u,
		       const char **error_r)
{
	struct key k;
	key_user(&k, user);
	struct buf v;
	buf_init(&v, 0);
	int r = w_get(sh, k.b, k.len, &v, error_r);
	if (r == 1 && !dec_user(buf_view(&v), user, u))
		r = fail(error_r, NULL, ST_IO, "corrupt user record for %s", user);
	buf_cleanup(&v);
	return r;
}

static void w_save_user(struct shard *sh, const struct user_info *u)
{
	struct key k;
	key_user(&k, u->address);
	struct buf v;
	buf_init(&v, 0);
	enc_user(&v, u);
	w_put(sh, k.b, k.len, v.data, v.len);
	buf_cleanup(&v);
}

static int w_mailbox_id(struct shard *sh, const char *user, const char *name, uint64_t *id_r,
			const char **error_r)
{
	struct key k;
	key_mbname(&k, user, name);
	struct buf v;
	buf_init(&v, 0);
	int r = w_get(sh, k.b, k.len, &v, error_r);
	if (r == 1) {
		if (v.len != 8)
			r = fail(error_r, NULL, ST_IO, "corrupt mailbox index");
		else
			*id_r = rd64(v.data);
	}
	buf_cleanup(&v);
	return r;
}

static int w_load_mbox(struct shard *sh, uint64_t id, struct mbox_rec *m, const char **error_r)
{
	struct key k;
	key_mailbox(&k, id);
	struct buf v;
	buf_init(&v, 0);
	int r = w_get(sh, k.b, k.len, &v, error_r);
	if (r == 1 && !dec_mbox(buf_view(&v), id, m))
		r = fail(error_r, NULL, ST_IO, "corrupt mailbox record %llu",
			 (unsigned long long)id);
	buf_cleanup(&v);
	return r;
}

static void w_save_mbox(struct shard *sh, const struct mbox_rec *m)
{
	struct key k;
	key_mailbox(&k, m->m.id);
	struct buf v;
	buf_init(&v, 0);
	enc_mbox(&v, m);
	w_put(sh, k.b, k.len, v.data, v.len);
	buf_cleanup(&v);
}

static int w_load_msg(struct shard *sh, uint64_t mbid, uint32_t uid, struct msg_info *m,
		      const char **error_r)
{
	struct key k;
	key_message(&k, mbid, uid);
	struct buf v;
	buf_init(&v, 0);
	int r = w_get(sh, k.b, k.len, &v, error_r);
	if (r == 1 && !dec_msg(buf_view(&v), uid, m))
		r = fail(error_r, NULL, ST_IO, "corrupt message record");
	buf_cleanup(&v);
	return r;
}

static void w_save_msg(struct shard *sh, uint64_t mbid, const struct msg_info *m)
{
	struct key k;
	key_message(&k, mbid, m->uid);
	struct buf v;
	buf_init(&v, 0);
	enc_msg(&v, m);
	w_put(sh, k.b, k.len, v.data, v.len);
	buf_cleanup(&v);
}

/* Add delta (may be negative) to a body's reference count; at zero the
 * body and its chunks go in the same batch. */
static int w_body_ref(struct shard *sh, const uint8_t hash[32], int64_t delta,
		      const char **error_r)
{
	struct key k;
	key_body(&k, hash);
	struct buf v;
	buf_init(&v, 0);
	int r = w_get(sh, k.b, k.len, &v, error_r);
	struct body_rec br;
	if (r != 1 || !dec_body(buf_view(&v), &br)) {
		buf_cleanup(&v);
		return r < 0 ? -1 : fail(error_r, NULL, ST_IO, "missing or corrupt body record");
	}
	if (delta < 0 && br.refcount <= (uint64_t)-delta) {
		for (uint32_t i = 0; i < br.nchunks; i++) {
			struct key ck;
			key_chunk(&ck, hash, i);
			w_del(sh, ck.b, ck.len);
		}
		w_del(sh, k.b, k.len);
	} else {
		br.refcount = (uint64_t)((int64_t)br.refcount + delta);
		struct buf nv;
		buf_init(&nv, 0);
		enc_body(&nv, &br);
		w_put(sh, k.b, k.len, nv.data, nv.len);
		buf_cleanup(&nv);
	}
	buf_cleanup(&v);
	return 0;
}

static bool valid_mailbox_name(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n >= MAILBOX_NAME_MAX || name[0] == '/' || name[n - 1] == '/')
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)name[i];
		if (ch < 0x20 || ch == 0x7f)
			return false;
		if (ch == '/' && name[i + 1] == '/')
			return false;
	}
	return true;
}

/* "inbox" in any case is INBOX (RFC 9051 5.1). */
static const char *canon_name(const char *name, char *tmp, size_t tmp_len)
{
	if (strcasecmp(name, "INBOX") == 0)
		return "INBOX";
	if (strncasecmp(name, "INBOX/", 6) == 0) {
		snprintf(tmp, tmp_len, "INBOX%s", name + 5);
		return tmp;
	}
	return name;
}

static uint64_t now_ms(void)
{
	return time_real_ms();
}

/* Create the mailbox records (mu held). */
static int w_mailbox_create(struct shard *sh, const char *user, const char *name,
			    uint32_t special, bool subscribed, struct mailbox_info *out,
			    enum storage_status *status_r, const char **error_r)
{
	uint64_t id;
	int r = w_mailbox_id(sh, user, name, &id, error_r);
	if (r < 0)
		return -1;
	if (r == 1)
		return fail(error_r, status_r, ST_EXISTS, "mailbox exists");
	int e = 0;
	uint64_t mbid = w_counter_next(sh, "mailbox_id", 1, error_r, &e);
	/* UIDVALIDITY: strictly increasing per shard, seeded by the clock, so a
	 * re-created name never sees an old value again. */
	uint64_t uidv = w_counter_next(sh, "uidvalidity", (uint64_t)time(NULL) & 0x7fffffff,
				       error_r, &e);
	if (e < 0)
		return -1;
	struct mbox_rec m;
	memset(&m, 0, sizeof(m));
	snprintf(m.user, sizeof(m.user), "%s", user);
	snprintf(m.m.name, sizeof(m.m.name), "%s", name);
	m.m.id = mbid;
	m.m.uidvalidity = (uint32_t)(uidv & 0xffffffff) ? (uint32_t)uidv : 1;
	m.m.uidnext = 1;
	m.m.highestmodseq = 1;
	m.m.special_use = special;
	m.m.subscribed = subscribed;
	struct key k;
	key_mbname(&k, user, name);
	uint8_t idb[8];
	be64(idb, mbid);
	w_put(sh, k.b, k.len, idb, 8);
	w_save_mbox(sh, &m);
	if (out)
		*out = m.m;
	return 0;
}

/* ---- users ------------------------------------------------------------- */

int store_user_create(struct shard *sh, const char *address, const char *pwhash,
		      uint64_t quota_bytes, enum storage_status *status_r, const char **error_r)
{
	if (!address[0] || strlen(address) >= 256)
		return fail(error_r, status_r, ST_INVALID, "bad address");
	if (sh_begin(sh, status_r, error_r) < 0)
		return -1;
	struct user_info u;
	int r = w_load_user(sh, address, &u, error_r);
	if (r != 0) {
		sh_abort(sh);
		return r < 0 ? fail_io(error_r, status_r)
			     : fail(error_r, status_r, ST_EXISTS, "user exists");
	}
	memset(&u, 0, sizeof(u));
	snprintf(u.address, sizeof(u.address), "%s", address);
	snprintf(u.pwhash, sizeof(u.pwhash), "%s", pwhash ? pwhash : "");
	u.quota_bytes = quota_bytes;
	u.enabled = true;
	u.created_ms = now_ms();
	static const struct {
		const char *name;
		uint32_t special;
	} defaults[] = {
		{ "INBOX", SPECIAL_NONE }, { "Sent", SPECIAL_SENT },
		{ "Drafts", SPECIAL_DRAFTS }, { "Trash", SPECIAL_TRASH },
		{ "Junk", SPECIAL_JUNK }, { "Archive", SPECIAL_ARCHIVE },
	};
	for (size_t i = 0; i < ARRAY_LEN(defaults); i++) {
		if (w_mailbox_create(sh, address, defaults[i].name, defaults[i].special, true, NULL,
				     status_r, error_r) < 0) {
			/* Only possible on I/O failure: nothing committed, but
			 * the pending group holds our puts; fail the shard's
			 * next commit safely by letting it proceed (the
			 * records are self-consistent up to here). */
			sh_abort(sh);
			return -1;
		}
	}
	w_save_user(sh, &u);
	set_ok(status_r);
	return sh_end(sh, true, status_r, error_r);
}

int store_user_get(struct shard *sh, const char *address, struct user_info *out,
		   enum storage_status *status_r, const char **error_r)
{
	struct key k;
	key_user(&k, address);
	struct buf v;
	buf_init(&v, 0);
	int r = r_get(sh, k.b, k.len, &v, error_r);
	if (r == 0)
		r = fail(error_r, status_r, ST_NOT_FOUND, "no such user");
	else if (r == 1 && !dec_user(buf_view(&v), address, out))
		r = fail(error_r, status_r, ST_IO, "corrupt user record");
	else if (r == 1) {
		set_ok(status_r);
		r = 0;
	} else if (status_r) {
		*status_r = ST_IO;
	}
	buf_cleanup(&v);
	return r;
}

int store_user_update(struct shard *sh, const char *address, const char *pwhash,
		      uint64_t quota_bytes, int enabled, enum storage_status *status_r,
		      const char **error_r)
{
	if (sh_begin(sh, status_r, error_r) < 0)
		return -1;
	struct user_info u;
	int r = w_load_user(sh, address, &u, error_r);
	if (r != 1) {
		sh_abort(sh);
		return r < 0 ? fail_io(error_r, status_r)
			     : fail(error_r, status_r, ST_NOT_FOUND, "no such user");
	}
	if (pwhash)
		snprintf(u.pwhash, sizeof(u.pwhash), "%s", pwhash);
	if (quota_bytes != UINT64_MAX)
		u.quota_bytes = quota_bytes;
	if (enabled >= 0)
		u.enabled = enabled != 0;
	w_save_user(sh, &u);
	set_ok(status_r);
	return sh_end(sh, true, status_r, error_r);
}

int store_user_list(struct shard *sh, const char *after, const char *domain, size_t max,
		    struct user_info **out, size_t *n_r, bool *more_r, const char **error_r)
{
	struct key k;
	key_user(&k, after);
	size_t dl = domain ? strlen(domain) : 0;
	struct user_info *list = xcalloc(max ? max : 1, sizeof(*list));
	size_t n = 0;
	bool more = false;
	rocksdb_iterator_t *it = rocksdb_create_iterator(sh->db, sh->ro);
	rocksdb_iter_seek(it, (const char *)k.b, k.len);
	for (; rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t kl, vl;
		const char *key = rocksdb_iter_key(it, &kl);
		if (kl < 1 || key[0] != KEY_USER)
			break;
		if (kl == k.len && memcmp(key, k.b, kl) == 0)
			continue; /* the resume point itself */
		if (kl - 1 >= sizeof(list->address))
			continue;
		char addr[256];
		memcpy(addr, key + 1, kl - 1);
		addr[kl - 1] = '\0';
		if (dl) {
			const char *at = strrchr(addr, '@');
			if (!at || strcmp(at + 1, domain) != 0)
				continue;
		}
		if (n == max) {
			more = true;
			break;
		}
		const char *v = rocksdb_iter_value(it, &vl);
		if (dec_user(view_make(v, vl), addr, &list[n])) {
			explicit_bzero(list[n].pwhash, sizeof(list[n].pwhash));
			n++;
		}
	}
	char *err = NULL;
	rocksdb_iter_get_error(it, &err);
	rocksdb_iter_destroy(it);
	if (err) {
		free(list);
		return rocks_fail(error_r, NULL, err);
	}
	*out = list;
	*n_r = n;
	*more_r = more;
	return 0;
}

/* ---- scans (readers, or writers after sh_quiesce) ------------------------- */

/* Iterate keys with `prefix` in order; fn returns non-zero to stop. */
static int scan_prefix(struct shard *sh, const void *prefix, size_t plen,
		       int (*fn)(void *arg, struct view k, struct view v), void *arg,
		       const char **error_r)
{
	rocksdb_iterator_t *it = rocksdb_create_iterator(sh->db, sh->ro);
	rocksdb_iter_seek(it, prefix, plen);
	int r = 0;
	while (rocksdb_iter_valid(it)) {
		size_t kl, vl;
		const char *k = rocksdb_iter_key(it, &kl);
		if (kl < plen || memcmp(k, prefix, plen) != 0)
			break;
		const char *v = rocksdb_iter_value(it, &vl);
		if (fn(arg, view_make(k, kl), view_make(v, vl)))
			break;
		rocksdb_iter_next(it);
	}
	char *err = NULL;
	rocksdb_iter_get_error(it, &err);
	if (err)
		r = rocks_fail(error_r, NULL, err);
	rocksdb_iter_destroy(it);
	return r;
}

struct mb_collect {
	struct shard *sh;
	struct mailbox_info *list;
	size_t n, cap;
	bool bad;
};

static int collect_mailbox(void *arg, struct view k, struct view v)
{
	UNUSED(k);
	struct mb_collect *c = arg;
	if (v.len != 8)
		return 0;
	uint64_t id = rd64(v.ptr);
	struct key mk;
	key_mailbox(&mk, id);
	struct buf rv;
	buf_init(&rv, 0);
	struct mbox_rec m;
	if (r_get(c->sh, mk.b, mk.len, &rv, NULL) == 1 && dec_mbox(buf_view(&rv), id, &m)) {
		if (c->n == c->cap) {
			c->cap = c->cap ? c->cap * 2 : 16;
			c->list = xrealloc(c->list, c->cap * sizeof(*c->list));
		}
		c->list[c->n++] = m.m;
	} else {
		c->bad = true;
	}
	buf_cleanup(&rv);
	return 0;
}

int store_mailbox_list(struct shard *sh, const char *user, struct mailbox_info **out,
		       size_t *n_r, const char **error_r)
{
	struct key k;
	key_mbname(&k, user, "");
	struct mb_collect c = { .sh = sh };
	if (scan_prefix(sh, k.b, k.len, collect_mailbox, &c, error_r) < 0) {
		free(c.list);
		return -1;
	}
	*out = c.list;
	*n_r = c.n;
	return 0;
}

/* ---- mailboxes ---------------------------------------------------------- */

int store_mailbox_create(struct shard *sh, const char *user, const char *name,
			 uint32_t special_use, struct mailbox_info *out,
			 enum storage_status *status_r, const char **error_r)
{
	char tmp[MAILBOX_NAME_MAX + 8];
	name = canon_name(name, tmp, sizeof(tmp));
	if (!valid_mailbox_name(name))
		return fail(error_r, status_r, ST_INVALID, "invalid mailbox name");
	if (sh_begin(sh, status_r, error_r) < 0)
		return -1;
	struct user_info u;
	int r = w_load_user(sh, user, &u, error_r);
	if (r != 1) {
		sh_abort(sh);
		return r < 0 ? fail_io(error_r, status_r)
			     : fail(error_r, status_r, ST_NOT_FOUND, "no such user");
	}
	if (w_mailbox_create(sh, user, name, special_use, false, out, status_r, error_r) < 0) {
		sh_abort(sh);
		return -1;
	}
	set_ok(status_r);
	return sh_end(sh, true, status_r, error_r);
}

int store_mailbox_get_by_id(struct shard *sh, uint64_t id, struct mailbox_info *out,
			    enum storage_status *status_r, const char **error_r)
{
	struct key k;
	key_mailbox(&k, id);
	struct buf v;
	buf_init(&v, 0);
	struct mbox_rec m;
	int r = r_get(sh, k.b, k.len, &v, error_r);
	if (r == 0)
		r = fail(error_r, status_r, ST_NOT_FOUND, "no such mailbox");
	else if (r == 1 && !dec_mbox(buf_view(&v), id, &m))
		r = fail(error_r, status_r, ST_IO, "corrupt mailbox record");
	else if (r == 1) {
		*out = m.m;
		set_ok(status_r);
		r = 0;
	}
	buf_cleanup(&v);
	return r;
}

int store_mailbox_get(struct shard *sh, const char *user, const char *name,
		      struct mailbox_info *out, enum storage_status *status_r,
		      const char **error_r)
{
	char tmp[MAILBOX_NAME_MAX + 8];
	name = canon_name(name, tmp, sizeof(tmp));
	struct key k;
	key_mbname(&k, user, name);
	struct buf v;
	buf_init(&v, 0);
	int r = r_get(sh, k.b, k.len, &v, error_r);
	uint64_t id = r == 1 && v.len == 8 ? rd64(v.data) : 0;
	buf_cleanup(&v);
	if (r < 0)
		return fail_io(error_r, status_r);
	if (r == 0 || !id)
		return fail(error_r, status_r, ST_NOT_FOUND, "no such mailbox");
	return store_mailbox_get_by_id(sh, id, out, status_r, error_r);
}

/* Remove every message of a mailbox (mu held, quiesced): releases bodies,
 * user usage; the mailbox record itself is left to the caller. */
struct wipe {
	struct shard *sh;
	uint64_t mbid;
	uint64_t bytes, count;
	int err;
	const char **error_r;
};

static int wipe_one(void *arg, struct view k, struct view v)
{
	struct wipe *w = arg;
	struct msg_info m;
	if (k.len != 13 || !dec_msg(v, rd32(k.ptr + 9), &m)) {
		w->err = -1;
		return 1;
	}
	w->bytes += m.size;
	w->count++;
	w_del(w->sh, k.ptr, k.len);
	if (w_body_ref(w->sh, m.body_hash, -1, w->error_r) < 0)
		w->err = -1;
	msg_info_cleanup(&m);
	return w->err;
}

static int w_wipe_mailbox(struct shard *sh, struct mbox_rec *m, struct user_info *u,
			  const char **error_r)
{
	uint8_t prefix[9];
	prefix[0] = KEY_MESSAGE;
	be64(prefix + 1, m->m.id);
	struct wipe w = { .sh = sh, .mbid = m->m.id, .error_r = error_r };
	if (scan_prefix(sh, prefix, 9, wipe_one, &w, error_r) < 0 || w.err < 0)
		return -1;
	u->used_bytes -= MIN(u->used_bytes, w.bytes);
	u->used_messages -= MIN(u->used_messages, w.count);
	return 0;
}

struct rename_ctx {
	struct shard *sh;
	const char *user, *from, *to;
	size_t flen;
	int err;
	unsigned moved;
	const char **error_r;
};

static int rename_one(void *arg, struct view k, struct view v)
{
	struct rename_ctx *rc = arg;
	size_t ul = strlen(rc->user);
	const char *name = (const char *)k.ptr + 2 + ul;
	size_t nl = k.len - 2 - ul;
	if (!(nl == rc->flen || (nl > rc->flen && name[rc->flen] == '/')) ||
	    memcmp(name, rc->from, rc->flen) != 0)
		return 0;
	char newname[MAILBOX_NAME_MAX];
	size_t tl = strlen(rc->to), rest = nl - rc->flen;
	if (tl + rest >= sizeof(newname)) {
		rc->err = fail(rc->error_r, NULL, ST_INVALID, "new name too long");
		return 1;
	}
	memcpy(newname, rc->to, tl);
	memcpy(newname + tl, name + rc->flen, rest);
	newname[tl + rest] = '\0';
	if (!valid_mailbox_name(newname)) {
		rc->err = fail(rc->error_r, NULL, ST_INVALID, "new name too long or invalid");
		return 1;
	}
	uint64_t id = rd64(v.ptr);
	struct mbox_rec m;
	if (w_load_mbox(rc->sh, id, &m, rc->error_r) != 1) {
		rc->err = -1;
		return 1;
	}
	snprintf(m.m.name, sizeof(m.m.name), "%s", newname);
	w_del(rc->sh, k.ptr, k.len);
	struct key nk;
	key_mbname(&nk, rc->user, newname);
	w_put(rc->sh, nk.b, nk.len, v.ptr, 8);
	w_save_mbox(rc->sh, &m);
	rc->moved++;
	return 0;
}

static int w_move_all(struct shard *sh, uint64_t from, uint64_t to, const char **error_r);

int store_mailbox_rename(struct shard *sh, const char *user, const char *from, const char *to,
			 enum storage_status *status_r, const char **error_r)
{
	char t1[MAILBOX_NAME_MAX + 8], t2[MAILBOX_NAME_MAX + 8];
	from = canon_name(from, t1, sizeof(t1));
	to = canon_name(to, t2, sizeof(t2));
	if (!valid_mailbox_name(from) || !valid_mailbox_name(to) || strcmp(to, "INBOX") == 0)
		return fail(error_r, status_r, ST_INVALID, "invalid mailbox name");
	size_t fl = strlen(from);
	if (strncmp(to, from, fl) == 0 && (to[fl] == '/' || to[fl] == '\0'))
		return fail(error_r, status_r, ST_INVALID, "cannot rename a mailbox into itself");
	if (sh_begin(sh, status_r, error_r) < 0)
		return -1;
	int ret = -1;
	if (sh_quiesce(sh, error_r) < 0)
		goto out;
	uint64_t id;
	int r = w_mailbox_id(sh, user, from, &id, error_r);
	if (r <= 0) {
		if (r == 0)
			fail(error_r, status_r, ST_NOT_FOUND, "no such mailbox");
		goto out;
	}
	uint64_t tid;
	r = w_mailbox_id(sh, user, to, &tid, error_r);
	if (r != 0) {
		if (r == 1)
			fail(error_r, status_r, ST_EXISTS, "target mailbox exists");
		goto out;
	}
	if (strcmp(from, "INBOX") == 0) {
		/* RFC 9051 6.3.6: INBOX's messages move to the new mailbox,
		 * INBOX stays (empty); its children are not renamed. */
		struct mailbox_info nm;
		if (w_mailbox_create(sh, user, to, SPECIAL_NONE, false, &nm, status_r, error_r) < 0 ||
		    w_move_all(sh, id, nm.id, error_r) < 0)
			goto out;
		set_ok(status_r);
		int ret2 = sh_end(sh, true, status_r, error_r);
		if (ret2 == 0)
			mailbox_changed(sh, id);
		return ret2;
	} else {
		struct key k;
		key_mbname(&k, user, "");
		struct rename_ctx rc = { .sh = sh, .user = user, .from = from, .to = to,
					 .flen = fl, .error_r = error_r };
		if (scan_prefix(sh, k.b, k.len, rename_one, &rc, error_r) < 0 || rc.err < 0)
			goto out;
	}
	set_ok(status_r);
	return sh_end(sh, true, status_r, error_r);
out:
	if (status_r && *status_r == ST_OK)
		*status_r = ST_IO;
	sh_abort(sh);
	return ret;
}

static int drop_key(void *arg, struct view k, struct view v)
{
	UNUSED(v);
	w_del(arg, k.ptr, k.len);
	return 0;
}

/* Expunge log entries of a deleted mailbox are garbage (ids are never
 * reused): delete them one by one (mu held, quiesced). */
static int w_drop_expunge_log(struct shard *sh, uint64_t id, const char **error_r)
{
	uint8_t prefix[9];
	prefix[0] = KEY_EXPUNGE;
	be64(prefix + 1, id);
	return scan_prefix(sh, prefix, 9, drop_key, sh, error_r);
}

int store_mailbox_delete(struct shard *sh, const char *user, const char *name,
			 enum storage_status *status_r, const char **error_r)
{
	char tmp[MAILBOX_NAME_MAX + 8];
	name = canon_name(name, tmp, sizeof(tmp));
	if (strcmp(name, "INBOX") == 0)
		return fail(error_r, status_r, ST_INVALID, "INBOX cannot be deleted");
	if (sh_begin(sh, status_r, error_r) < 0)
		return -1;
	uint64_t id;
	struct mbox_rec m;
	struct user_info u;
	int r;
	if (sh_quiesce(sh, error_r) < 0 || (r = w_mailbox_id(sh, user, name, &id, error_r)) < 0)
		goto io;
	if (r == 0) {
		sh_abort(sh);
		return fail(error_r, status_r, ST_NOT_FOUND, "no such mailbox");
	}
	if (w_load_mbox(sh, id, &m, error_r) != 1 || w_load_user(sh, user, &u, error_r) != 1 ||
	    w_wipe_mailbox(sh, &m, &u, error_r) < 0)
		goto io;
	struct key k;
	key_mbname(&k, user, name);
	w_del(sh, k.b, k.len);
	key_mailbox(&k, id);
	w_del(sh, k.b, k.len);
	if (w_drop_expunge_log(sh, id, error_r) < 0)
		goto io;
	w_save_user(sh, &u);
	set_ok(status_r);
	int ret = sh_end(sh, true, status_r, error_r);
	if (ret == 0)
		mailbox_changed(sh, id);
	return ret;
io:
	sh_abort(sh);
	return fail_io(error_r, status_r);
}

struct user_wipe {
	struct shard *sh;
	struct user_info *u;
	const char **error_r;
	int err;
};

static int wipe_user_mailbox(void *arg, struct view k, struct view v)
{
	struct user_wipe *uw = arg;
	struct mbox_rec m;
	if (v.len != 8 || w_load_mbox(uw->sh, rd64(v.ptr), &m, uw->error_r) != 1 ||
	    w_wipe_mailbox(uw->sh, &m, uw->u, uw->error_r) < 0 ||
	    w_drop_expunge_log(uw->sh, m.m.id, uw->error_r) < 0) {
		uw->err = -1;
		return 1;
	}
	struct key mk;
	key_mailbox(&mk, m.m.id);
	w_del(uw->sh, mk.b, mk.len);
	w_del(uw->sh, k.ptr, k.len);
	return 0;
}

int store_user_delete(struct shard *sh, const char *address, enum storage_status *status_r,
		      const char **error_r)
{
	if (sh_begin(sh, status_r, error_r) < 0)
		return -1;
	struct user_info u;
	int r = sh_quiesce(sh, error_r) < 0 ? -1 : w_load_user(sh, address, &u, error_r);
	if (r != 1) {
		sh_abort(sh);
		return r < 0 ? fail_io(error_r, status_r)
			     : fail(error_r, status_r, ST_NOT_FOUND, "no such user");
	}
	struct key k;
	key_mbname(&k, address, "");
	struct user_wipe uw = { .sh = sh, .u = &u, .error_r = error_r };
	if (scan_prefix(sh, k.b, k.len, wipe_user_mailbox, &uw, error_r) < 0 || uw.err < 0) {
		sh_abort(sh);
		return fail_io(error_r, status_r);
	}
	key_user(&k, address);
	w_del(sh, k.b, k.len);
	set_ok(status_r);
	return sh_end(sh, true, status_r, error_r);
}

int store_mailbox_subscribe(struct shard *sh, const char *user, const char *name, bool on,
			    enum storage_status *status_r, const char **error_r)
{
	char tmp[MAILBOX_NAME_MAX + 8];
	name = canon_name(name, tmp, sizeof(tmp));
	if (sh_begin(sh, status_r, error_r) < 0)
		return -1;
	uint64_t id;
	struct mbox_rec m;
	int r = w_mailbox_id(sh, user, name, &id, error_r);
	if (r == 1)
		r = w_load_mbox(sh, id, &m, error_r);
	if (r != 1) {
		sh_abort(sh);
		return r < 0 ? fail_io(error_r, status_r)
			     : fail(error_r, status_r, ST_NOT_FOUND, "no such mailbox");
	}
	m.m.subscribed = on;
	w_save_mbox(sh, &m);
	set_ok(status_r);
	return sh_end(sh, true, status_r, error_r);
}

/* ---- bodies ------------------------------------------------------------- */

struct body_writer {
	struct shard *sh;
	SHA256_CTX sha;
	struct mime_parser *mime;
	uint8_t **chunks;
	size_t nchunks, chunk_cap;
	size_t chunk_size;
	size_t last_len; /* bytes in the last chunk */
	uint64_t size;
	bool too_large;
};

struct body_writer *body_writer_new(struct shard *sh)
{
	struct body_writer *bw = xcalloc(1, sizeof(*bw));
	bw->sh = sh;
	bw->chunk_size = sh->st->opts.body_chunk_bytes;
	SHA256_Init(&bw->sha);
	bw->mime = mime_parser_new(NULL);
	return bw;
}

int body_writer_add(struct body_writer *bw, const void *p, size_t len)
{
	if (bw->too_large)
		return -1;
	if (bw->size + len > bw->sh->st->opts.max_message_bytes) {
		bw->too_large = true;
		return -1;
	}
	SHA256_Update(&bw->sha, p, len);
	mime_parser_feed(bw->mime, p, len);
	const uint8_t *q = p;
	while (len > 0) {
		if (bw->nchunks == 0 || bw->last_len == bw->chunk_size) {
			if (bw->nchunks == bw->chunk_cap) {
				bw->chunk_cap = bw->chunk_cap ? bw->chunk_cap * 2 : 4;
				bw->chunks = xrealloc(bw->chunks, bw->chunk_cap * sizeof(*bw->chunks));
			}
			/* Chunks grow with the message: small mail stays small. */
			bw->chunks[bw->nchunks++] = xmalloc(bw->chunk_size);
			bw->last_len = 0;
		}
		size_t n = MIN(len, bw->chunk_size - bw->last_len);
		memcpy(bw->chunks[bw->nchunks - 1] + bw->last_len, q, n);
		bw->last_len += n;
		q += n;
		len -= n;
	}
	bw->size += (uint64_t)(q - (const uint8_t *)p);
	return 0;
}

uint64_t body_writer_size(const struct body_writer *bw) { return bw->size; }

void body_writer_free(struct body_writer **bwp)
{
	struct body_writer *bw = *bwp;
	if (!bw)
		return;
	*bwp = NULL;
	for (size_t i = 0; i < bw->nchunks; i++)
		free(bw->chunks[i]);
	free(bw->chunks);
	mime_parser_free(&bw->mime);
	free(bw);
}

/* ---- delivery ------------------------------------------------------------ */

/* The body's hash and MIME description (the writer's parser is used up). */
static void bw_finish(struct body_writer *bw, uint8_t hash[32], struct buf *mime)
{
	SHA256_CTX c = bw->sha;
	SHA256_Final(hash, &c);
	buf_init(mime, 0);
	if (bw->mime) {
		mime_parser_finish(bw->mime, mime);
		mime_parser_free(&bw->mime);
	}
}

/* Add refs references to the body, writing its chunks and record when it
 * is new to the shard (read through the pending group, so a body added
 * earlier in the same operation counts as present). */
static int w_body_add(struct shard *sh, struct body_writer *bw, const uint8_t hash[32],
		      struct view mime, uint64_t refs, const char **error_r)
{
	struct key k;
	key_body(&k, hash);
	struct buf v;
	buf_init(&v, 0);
	int r = w_get(sh, k.b, k.len, &v, error_r);
	struct body_rec br;
	int ret = 0;
	if (r == 1 && dec_body(buf_view(&v), &br)) {
		br.refcount += refs;
		struct buf nv;
		buf_init(&nv, 0);
		enc_body(&nv, &br);
		w_put(sh, k.b, k.len, nv.data, nv.len);
		buf_cleanup(&nv);
	} else if (r == 0) {
		for (size_t i = 0; i < bw->nchunks; i++) {
			struct key ck;
			key_chunk(&ck, hash, (uint32_t)i);
			size_t len = i + 1 == bw->nchunks ? bw->last_len : bw->chunk_size;
			w_put(sh, ck.b, ck.len, bw->chunks[i], len);
		}
		br = (struct body_rec){ .refcount = refs, .size = bw->size,
					.nchunks = (uint32_t)bw->nchunks,
					.chunk_size = (uint32_t)bw->chunk_size,
					.mime = mime };
		struct buf nv;
		buf_init(&nv, 0);
		enc_body(&nv, &br);
		w_put(sh, k.b, k.len, nv.data, nv.len);
		buf_cleanup(&nv);
	} else {
		ret = r < 0 ? -1 : fail(error_r, NULL, ST_IO, "corrupt body record");
	}
	buf_cleanup(&v);
	return ret;
}

struct tgt_state {
	struct user_info user;
	bool user_loaded;
	struct mbox_rec mbox;
};

static void key_delivery(struct key *k, struct view id)
{
	k->b[0] = KEY_DELIVERY;
	memcpy(k->b + 1, id.ptr, id.len);
	k->len = 1 + id.len;
}

static void enc_delivery(struct buf *b, uint64_t now, const struct deliver_target *t, size_t n)
{
	b->len = 0;
	put_u8(b, RECORD_VERSION);
	put_u64(b, now);
	put_u32(b, (uint32_t)n);
	for (size_t i = 0; i < n; i++) {
		put_u8(b, (uint8_t)t[i].status_r);
		put_u64(b, t[i].mailbox_id_r);
		put_u32(b, t[i].uidvalidity_r);
		put_u32(b, t[i].uid_r);
	}
}

/* The recorded results into t; false if corrupt or for another count. */
static bool dec_delivery(struct view v, struct deliver_target *t, size_t n, uint64_t *when_r)
{
	struct dec d = dec_make(v.ptr, v.len);
	if (get_u8(&d) != RECORD_VERSION)
		return false;
	uint64_t when = get_u64(&d);
	if (when_r)
		*when_r = when;
	if (!t)
		return !d.bad;
	if (get_u32(&d) != n || d.bad)
		return false;
	for (size_t i = 0; i < n; i++) {
		uint8_t st = get_u8(&d);
		t[i].status_r = st <= ST_DISABLED ? (enum storage_status)st : ST_IO;
		t[i].mailbox_id_r = get_u64(&d);
		t[i].uidvalidity_r = get_u32(&d);
		t[i].uid_r = get_u32(&d);
	}
	return !d.bad;
}

static int deliver_impl(struct shard *sh, struct body_writer *bw, uint64_t internal_date_ms,
			struct view id, struct deliver_target *t, size_t n, bool *duplicate_r,
			enum storage_status *status_r, const char **error_r);

int store_deliver(struct shard *sh, struct body_writer *bw, uint64_t internal_date_ms,
		  struct deliver_target *t, size_t n, enum storage_status *status_r,
		  const char **error_r)
{
	return deliver_impl(sh, bw, internal_date_ms, view_make(NULL, 0), t, n, NULL, status_r,
			    error_r);
}

int store_deliver_once(struct shard *sh, struct body_writer *bw, uint64_t internal_date_ms,
		       struct view id, struct deliver_target *t, size_t n, bool *duplicate_r,
		       enum storage_status *status_r, const char **error_r)
{
	*duplicate_r = false;
	if (id.len == 0 || id.len > DELIVERY_ID_MAX)
		return fail(error_r, status_r, ST_INVALID, "delivery id of %zu bytes", id.len);
	return deliver_impl(sh, bw, internal_date_ms, id, t, n, duplicate_r, status_r, error_r);
}

static int deliver_impl(struct shard *sh, struct body_writer *bw, uint64_t internal_date_ms,
			struct view id, struct deliver_target *t, size_t n, bool *duplicate_r,
			enum storage_status *status_r, const char **error_r)
{
	if (bw->too_large)
		return fail(error_r, status_r, ST_TOO_LARGE, "message larger than %llu bytes",
			    (unsigned long long)sh->st->opts.max_message_bytes);
	uint8_t hash[32];
	struct buf mime;
	bw_finish(bw, hash, &mime);
	uint64_t save = now_ms();
	if (!internal_date_ms)
		internal_date_ms = save;
	if (sh_begin(sh, status_r, error_r) < 0) {
		buf_cleanup(&mime);
		return -1;
	}
	if (id.len) {
		/* Seen before: the first call's results, nothing stored. */
		struct key dk;
		key_delivery(&dk, id);
		struct buf dv;
		buf_init(&dv, 0);
		int r = w_get(sh, dk.b, dk.len, &dv, error_r);
		if (r != 0) {
			bool good = r == 1 && dec_delivery(buf_view(&dv), t, n, NULL);
			buf_cleanup(&dv);
			buf_cleanup(&mime);
			sh_abort(sh);
			if (r < 0)
				return fail_io(error_r, status_r);
			if (!good)
				return fail(error_r, status_r, ST_INVALID,
					    "delivery id reused for other recipients");
			*duplicate_r = true;
			set_ok(status_r);
			return 0;
		}
		buf_cleanup(&dv);
	}
	struct tgt_state *ts = xcalloc(n ? n : 1, sizeof(*ts));
	size_t ok = 0;
	int ret = 0;
	for (size_t i = 0; i < n && ret == 0; i++) {
		t[i].status_r = ST_OK;
		t[i].uid_r = 0;
		/* The same user or mailbox twice: later targets see the
		 * earlier ones' updates through the records kept here. */
		struct user_info *u = NULL;
		for (size_t j = 0; j < i; j++)
			if (ts[j].user_loaded && strcmp(ts[j].user.address, t[i].user) == 0)
				u = &ts[j].user;
		if (!u) {
			int r = w_load_user(sh, t[i].user, &ts[i].user, error_r);
			if (r < 0) {
				ret = -1;
				break;
			}
			if (r == 0 || !ts[i].user.enabled) {
				t[i].status_r = r == 0 ? ST_NOT_FOUND : ST_DISABLED;
				continue;
			}
			ts[i].user_loaded = true;
			u = &ts[i].user;
		}
		if (u->quota_bytes && u->used_bytes + bw->size > u->quota_bytes) {
			t[i].status_r = ST_OVER_QUOTA;
			continue;
		}
		uint64_t mbid = t[i].mailbox_id;
		if (!mbid) {
			int r = w_mailbox_id(sh, t[i].user, "INBOX", &mbid, error_r);
			if (r < 0) {
				ret = -1;
				break;
			}
			if (r == 0) {
				t[i].status_r = ST_NOT_FOUND;
				continue;
			}
		}
		struct mbox_rec *m = NULL;
		for (size_t j = 0; j < i; j++)
			if (t[j].status_r == ST_OK && ts[j].mbox.user[0] && ts[j].mbox.m.id == mbid &&
			    strcmp(ts[j].mbox.user, t[i].user) == 0)
				m = &ts[j].mbox;
		if (!m) {
			int r = w_load_mbox(sh, mbid, &ts[i].mbox, error_r);
			if (r < 0) {
				ret = -1;
				break;
			}
			if (r == 0 || strcmp(ts[i].mbox.user, t[i].user) != 0) {
				t[i].status_r = ST_NOT_FOUND;
				continue;
			}
			m = &ts[i].mbox;
		}
		if (m->m.uidnext == UINT32_MAX) {
			t[i].status_r = ST_INVALID; /* UID space exhausted */
			continue;
		}
		struct msg_info msg = {
			.uid = m->m.uidnext++,
			.modseq = ++m->m.highestmodseq,
			.flags = t[i].flags,
			.keywords = (char **)t[i].keywords,
			.internal_date_ms = internal_date_ms,
			.save_date_ms = save,
			.size = bw->size,
		};
		memcpy(msg.body_hash, hash, 32);
		w_save_msg(sh, mbid, &msg);
		m->m.messages++;
		if (!(msg.flags & FLAG_SEEN))
			m->m.unseen++;
		m->m.size += bw->size;
		u->used_bytes += bw->size;
		u->used_messages++;
		t[i].uid_r = msg.uid;
		t[i].uidvalidity_r = m->m.uidvalidity;
		t[i].mailbox_id_r = mbid;
		ok++;
	}
	if (ret == 0 && ok) {
		/* Save each distinct user and mailbox once, last state wins. */
		for (size_t i = 0; i < n; i++) {
			if (ts[i].user_loaded)
				w_save_user(sh, &ts[i].user);
			if (t[i].status_r == ST_OK && ts[i].mbox.user[0])
				w_save_mbox(sh, &ts[i].mbox);
		}
		ret = w_body_add(sh, bw, hash, buf_view(&mime), ok, error_r);
		if (ret == 0 && id.len) {
			struct key dk;
			key_delivery(&dk, id);
			struct buf dv;
			buf_init(&dv, 0);
			enc_delivery(&dv, save, t, n);
			w_put(sh, dk.b, dk.len, dv.data, dv.len);
			buf_cleanup(&dv);
		}
	}
	free(ts);
	buf_cleanup(&mime);
	if (ret < 0) {
		/* Reads failed before anything was added for this call. */
		sh_abort(sh);
		return fail_io(error_r, status_r);
	}
	set_ok(status_r);
	int ret2 = sh_end(sh, ok > 0, status_r, error_r);
	if (ret2 == 0)
		for (size_t i = 0; i < n; i++)
			if (t[i].status_r == ST_OK && t[i].uid_r)
				mailbox_changed(sh, t[i].mailbox_id_r);
	return ret2;
}

struct prune_scan {
	uint64_t before;
	struct buf keys; /* u8 length + key, repeated */
	size_t n;
};

static int prune_collect(void *arg, struct view k, struct view v)
{
	struct prune_scan *ps = arg;
	uint64_t when = 0;
	if (k.len > 1 + DELIVERY_ID_MAX || (dec_delivery(v, NULL, 0, &when) && when >= ps->before))
		return 0;
	uint8_t len = (uint8_t)k.len;
	buf_append(&ps->keys, &len, 1);
	buf_append(&ps->keys, k.ptr, k.len);
	ps->n++;
	return ps->n >= 10000; /* a bounded batch per call */
}

long store_deliveries_prune(struct shard *sh, uint64_t before_ms, const char **error_r)
{
	struct prune_scan ps = { .before = before_ms };
	buf_init(&ps.keys, 0);
	uint8_t prefix = KEY_DELIVERY;
	if (scan_prefix(sh, &prefix, 1, prune_collect, &ps, error_r) < 0) {
		buf_cleanup(&ps.keys);
		return -1;
	}
	if (ps.n == 0) {
		buf_cleanup(&ps.keys);
		return 0;
	}
	if (sh_begin(sh, NULL, error_r) < 0) {
		buf_cleanup(&ps.keys);
		return -1;
	}
	for (size_t off = 0; off < ps.keys.len;) {
		uint8_t len = ps.keys.data[off];
		w_del(sh, ps.keys.data + off + 1, len);
		off += 1 + (size_t)len;
	}
	int r = sh_end(sh, true, NULL, error_r);
	buf_cleanup(&ps.keys);
	return r < 0 ? -1 : (long)ps.n;
}

int store_append(struct shard *sh, const char *user, uint64_t mailbox_id,
		 struct append_msg *msgs, size_t n, uint32_t *uidvalidity_r,
		 enum storage_status *status_r, const char **error_r)
{
	uint64_t total = 0;
	for (size_t i = 0; i < n; i++) {
		if (msgs[i].bw->too_large)
			return fail(error_r, status_r, ST_TOO_LARGE, "message larger than %llu bytes",
				    (unsigned long long)sh->st->opts.max_message_bytes);
		total += msgs[i].bw->size;
	}
	uint8_t(*hash)[32] = xcalloc(n ? n : 1, sizeof(*hash));
	struct buf *mime = xcalloc(n ? n : 1, sizeof(*mime));
	for (size_t i = 0; i < n; i++)
		bw_finish(msgs[i].bw, hash[i], &mime[i]);
	uint64_t save = now_ms();
	int ret = -1;
	if (sh_begin(sh, status_r, error_r) < 0)
		goto out;
	struct user_info u;
	struct mbox_rec m;
	enum storage_status why = ST_OK;
	int r = w_load_user(sh, user, &u, error_r);
	if (r == 0)
		why = ST_NOT_FOUND;
	else if (r == 1 && !u.enabled)
		why = ST_DISABLED;
	else if (r == 1 && u.quota_bytes && u.used_bytes + total > u.quota_bytes)
		why = ST_OVER_QUOTA;
	if (r == 1 && why == ST_OK) {
		r = w_load_mbox(sh, mailbox_id, &m, error_r);
		if (r == 0 || (r == 1 && strcmp(m.user, user) != 0))
			why = ST_NOT_FOUND;
		else if (r == 1 && (uint64_t)m.m.uidnext + n > UINT32_MAX)
			why = ST_INVALID; /* UID space exhausted */
	}
	if (r < 0 || why != ST_OK) {
		sh_abort(sh);
		if (r < 0)
			fail_io(error_r, status_r);
		else
			fail(error_r, status_r, why, "%s", why == ST_OVER_QUOTA ? "over quota"
						       : why == ST_INVALID  ? "no UIDs left"
						       : why == ST_DISABLED ? "user disabled"
									    : "no such mailbox");
		goto out;
	}
	for (size_t i = 0; i < n && r >= 0; i++) {
		struct msg_info msg = {
			.uid = m.m.uidnext++,
			.modseq = ++m.m.highestmodseq,
			.flags = msgs[i].flags,
			.keywords = (char **)msgs[i].keywords,
			.internal_date_ms = msgs[i].internal_date_ms ? msgs[i].internal_date_ms : save,
			.save_date_ms = save,
			.size = msgs[i].bw->size,
		};
		memcpy(msg.body_hash, hash[i], 32);
		w_save_msg(sh, mailbox_id, &msg);
		m.m.messages++;
		if (!(msg.flags & FLAG_SEEN))
			m.m.unseen++;
		m.m.size += msg.size;
		u.used_bytes += msg.size;
		u.used_messages++;
		msgs[i].uid_r = msg.uid;
		r = w_body_add(sh, msgs[i].bw, hash[i], buf_view(&mime[i]), 1, error_r);
	}
	if (r < 0) {
		sh_abort(sh);
		fail_io(error_r, status_r);
		goto out;
	}
	w_save_mbox(sh, &m);
	w_save_user(sh, &u);
	*uidvalidity_r = m.m.uidvalidity;
	set_ok(status_r);
	ret = sh_end(sh, true, status_r, error_r);
	if (ret == 0)
		mailbox_changed(sh, mailbox_id);
out:
	for (size_t i = 0; i < n; i++)
		buf_cleanup(&mime[i]);
	free(mime);
	free(hash);
	return ret;
}

/* ---- message reads -------------------------------------------------------- */

struct msg_collect {
	struct msg_info *list;
	size_t n, cap;
	uint32_t last;
	uint64_t min_modseq;
	bool bad;
};

static int collect_msg(void *arg, struct view k, struct view v)
{
	struct msg_collect *c = arg;
	uint32_t uid = rd32(k.ptr + 9);
	if (uid > c->last)
		return 1;
	struct msg_info m;
	if (!dec_msg(v, uid, &m)) {
		c->bad = true;
		return 1;
	}
	if (m.modseq <= c->min_modseq && c->min_modseq) {
		msg_info_cleanup(&m);
		return 0;
	}
	if (c->n == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 64;
		c->list = xrealloc(c->list, c->cap * sizeof(*c->list));
	}
	c->list[c->n++] = m;
	return 0;
}

static void free_msgs(struct msg_info *l, size_t n)
{
	for (size_t i = 0; i < n; i++)
		msg_info_cleanup(&l[i]);
	free(l);
}

int store_fetch_range(struct shard *sh, uint64_t mailbox_id, uint32_t first_uid,
		      uint32_t last_uid, struct msg_info **out, size_t *n_r, const char **error_r)
{
	struct msg_collect c = { .last = last_uid };
	struct key k;
	key_message(&k, mailbox_id, first_uid);
	/* Seek to the first UID, but bound the scan by the mailbox prefix. */
	rocksdb_iterator_t *it = rocksdb_create_iterator(sh->db, sh->ro);
	rocksdb_iter_seek(it, (const char *)k.b, k.len);
	while (rocksdb_iter_valid(it)) {
		size_t kl, vl;
		const char *kk = rocksdb_iter_key(it, &kl);
		if (kl != 13 || memcmp(kk, k.b, 9) != 0)
			break;
		const char *v = rocksdb_iter_value(it, &vl);
		if (collect_msg(&c, view_make(kk, kl), view_make(v, vl)))
			break;
		rocksdb_iter_next(it);
	}
	char *err = NULL;
	rocksdb_iter_get_error(it, &err);
	rocksdb_iter_destroy(it);
	if (err || c.bad) {
		free_msgs(c.list, c.n);
		return err ? rocks_fail(error_r, NULL, err)
			   : fail(error_r, NULL, ST_IO, "corrupt message record");
	}
	*out = c.list;
	*n_r = c.n;
	return 0;
}

struct deleted_count {
	uint32_t n;
	uint64_t bytes;
	bool bad;
};

static int count_deleted(void *arg, struct view k, struct view v)
{
	UNUSED(k);
	struct deleted_count *c = arg;
	/* Only the fixed head of the record: version, modseq, flags, dates,
	 * size (enc_msg). */
	struct dec d = dec_make(v.ptr, v.len);
	if (get_u8(&d) != RECORD_VERSION) {
		c->bad = true;
		return 1;
	}
	(void)get_u64(&d);
	uint32_t flags = get_u32(&d);
	(void)get_u64(&d);
	(void)get_u64(&d);
	uint64_t size = get_u64(&d);
	if (d.bad) {
		c->bad = true;
		return 1;
	}
	if (flags & FLAG_DELETED) {
		c->n++;
		c->bytes += size;
	}
	return 0;
}

int store_mailbox_deleted(struct shard *sh, uint64_t mailbox_id, uint32_t *count_r,
			  uint64_t *bytes_r, const char **error_r)
{
	uint8_t prefix[9];
	prefix[0] = KEY_MESSAGE;
	be64(prefix + 1, mailbox_id);
	struct deleted_count c = { 0 };
	if (scan_prefix(sh, prefix, 9, count_deleted, &c, error_r) < 0)
		return -1;
	if (c.bad)
		return fail(error_r, NULL, ST_IO, "corrupt message record");
	*count_r = c.n;
	*bytes_r = c.bytes;
	return 0;
}

struct uid_collect {
	uint32_t *uids;
	size_t n, cap;
};

static int collect_uid(void *arg, struct view k, struct view v)
{
	UNUSED(v);
	struct uid_collect *c = arg;
	if (c->n == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 256;
		c->uids = xrealloc(c->uids, c->cap * sizeof(*c->uids));
	}
	c->uids[c->n++] = rd32(k.ptr + 9);
	return 0;
}

int store_uids(struct shard *sh, uint64_t mailbox_id, uint32_t **uids_r, size_t *n_r,
	       const char **error_r)
{
	uint8_t prefix[9];
	prefix[0] = KEY_MESSAGE;
	be64(prefix + 1, mailbox_id);
	struct uid_collect c = { 0 };
	if (scan_prefix(sh, prefix, 9, collect_uid, &c, error_r) < 0) {
		free(c.uids);
		return -1;
	}
	*uids_r = c.uids;
	*n_r = c.n;
	return 0;
}

int store_body_read(struct shard *sh, const uint8_t hash[32], uint64_t offset, uint64_t len,
		    int (*fn)(void *arg, const uint8_t *p, size_t n), void *arg,
		    const char **error_r)
{
	struct key k;
	key_body(&k, hash);
	struct buf v;
	buf_init(&v, 0);
	struct body_rec br;
	int r = r_get(sh, k.b, k.len, &v, error_r);
	if (r != 1 || !dec_body(buf_view(&v), &br)) {
		buf_cleanup(&v);
		return r < 0 ? -1 : fail(error_r, NULL, ST_NOT_FOUND, "no such body");
	}
	buf_cleanup(&v);
	if (offset >= br.size)
		return 0;
	uint64_t end = len == UINT64_MAX || len > br.size - offset ? br.size : offset + len;
	/* Start at the chunk holding `offset`: the chunk size is recorded per
	 * body, so a store opened later with another body_chunk_bytes still
	 * reads old bodies. */
	uint64_t cs = br.chunk_size ? br.chunk_size : br.size;
	uint32_t first = cs ? (uint32_t)(offset / cs) : 0;
	uint64_t pos = (uint64_t)first * cs;
	int ret = 0;
	for (uint32_t i = first; i < br.nchunks && pos < end && ret == 0; i++) {
		struct key ck;
		key_chunk(&ck, hash, i);
		r = r_get(sh, ck.b, ck.len, &v, error_r);
		if (r != 1) {
			ret = r < 0 ? -1 : fail(error_r, NULL, ST_IO, "body chunk %u missing", i);
			break;
		}
		uint64_t cstart = pos, cend = pos + v.len;
		if (cend > offset) {
			uint64_t from = MAX(offset, cstart) - cstart;
			uint64_t to = MIN(end, cend) - cstart;
			if (fn(arg, v.data + from, (size_t)(to - from)))
				break;
		}
		pos = cend;
	}
	buf_cleanup(&v);
	return ret;
}

int store_body_mime(struct shard *sh, const uint8_t hash[32], struct buf *out,
		    const char **error_r)
{
	struct key k;
	key_body(&k, hash);
	struct buf v;
	buf_init(&v, 0);
	struct body_rec br;
	int r = r_get(sh, k.b, k.len, &v, error_r);
	if (r != 1 || !dec_body(buf_view(&v), &br)) {
		buf_cleanup(&v);
		return r < 0 ? -1 : fail(error_r, NULL, ST_NOT_FOUND, "no such body");
	}
	out->len = 0;
	buf_append(out, br.mime.ptr, br.mime.len);
	buf_cleanup(&v);
	return 0;
}

/* ---- flags, expunge, copy/move --------------------------------------------- */

static bool has_keyword(char **list, const char *kw)
{
	for (size_t i = 0; list && list[i]; i++)
		if (strcasecmp(list[i], kw) == 0)
			return true;
	return false;
}

/* Apply a keyword change; returns the new NULL-terminated list (owned). */
static char **keywords_apply(char **cur, enum store_flags_mode mode, const char *const *kws,
			     bool *changed)
{
	size_t n = 0;
	while (cur && cur[n])
		n++;
	size_t add = 0;
	while (kws && kws[add])
		add++;
	char **out = xcalloc(n + add + 1, sizeof(char *));
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		bool listed = false;
		for (size_t j = 0; j < add; j++)
			if (strcasecmp(cur[i], kws[j]) == 0)
				listed = true;
		bool keep = mode == FLAGS_ADD || (mode == FLAGS_REMOVE && !listed) ||
			    (mode == FLAGS_SET && listed);
		if (keep)
			out[o++] = xstrdup(cur[i]);
		else
			*changed = true;
	}
	if (mode != FLAGS_REMOVE) {
		for (size_t j = 0; j < add; j++) {
			if (has_keyword(out, kws[j]) || strlen(kws[j]) > KEYWORD_MAX)
				continue;
			out[o++] = xstrdup(kws[j]);
			*changed = true;
		}
	}
	return out;
}

int store_flags(struct shard *sh, uint64_t mailbox_id, const uint32_t *uids, size_t n_uids,
		enum store_flags_mode mode, uint32_t flags, const char *const *keywords,
		uint64_t unchangedsince, struct msg_info **changed_r, size_t *n_changed_r,
		uint32_t **failed_r, size_t *n_failed_r, enum storage_status *status_r,
		const char **error_r)
{
	*changed_r = NULL;
	*n_changed_r = 0;
	*failed_r = NULL;
	*n_failed_r = 0;
	if (sh_begin(sh, status_r, error_r) < 0)
		return -1;
	struct mbox_rec m;
	int r = w_load_mbox(sh, mailbox_id, &m, error_r);
	if (r != 1) {
		sh_abort(sh);
		return r < 0 ? fail_io(error_r, status_r)
			     : fail(error_r, status_r, ST_NOT_FOUND, "no such mailbox");
	}
	struct msg_info *changed = xcalloc(n_uids ? n_uids : 1, sizeof(*changed));
	uint32_t *failed = xcalloc(n_uids ? n_uids : 1, sizeof(*failed));
	size_t nc = 0, nf = 0;
	for (size_t i = 0; i < n_uids; i++) {
		struct msg_info msg;
		r = w_load_msg(sh, mailbox_id, uids[i], &msg, error_r);
		if (r < 0)
			break;
		if (r == 0)
			continue; /* expunged meanwhile: nothing to change */
		if (unchangedsince && msg.modseq > unchangedsince) {
			failed[nf++] = msg.uid;
			msg_info_cleanup(&msg);
			continue;
		}
		uint32_t nflags = mode == FLAGS_SET   ? flags
				  : mode == FLAGS_ADD ? (msg.flags | flags)
						      : (msg.flags & ~flags);
		bool kchanged = false;
		char **nk = keywords_apply(msg.keywords, mode, keywords, &kchanged);
		if (nflags == msg.flags && !kchanged) {
			for (char **p = nk; *p; p++)
				free(*p);
			free(nk);
			msg_info_cleanup(&msg);
			continue;
		}
		if ((msg.flags & FLAG_SEEN) && !(nflags & FLAG_SEEN))
			m.m.unseen++;
		else if (!(msg.flags & FLAG_SEEN) && (nflags & FLAG_SEEN) && m.m.unseen)
			m.m.unseen--;
		msg_info_cleanup(&msg);
		msg.keywords = nk;
		msg.flags = nflags;
		msg.modseq = ++m.m.highestmodseq;
		w_save_msg(sh, mailbox_id, &msg);
		changed[nc++] = msg;
	}
	if (r < 0) {
		free_msgs(changed, nc);
		free(failed);
		sh_abort(sh);
		return fail_io(error_r, status_r);
	}
	if (nc)
		w_save_mbox(sh, &m);
	set_ok(status_r);
	int ret = sh_end(sh, nc > 0, status_r, error_r);
	if (ret == 0 && nc)
		mailbox_changed(sh, mailbox_id);
	if (ret == 0 && nf && status_r)
		*status_r = ST_MODIFIED;
	*changed_r = changed;
	*n_changed_r = nc;
	*failed_r = failed;
	*n_failed_r = nf;
	return ret;
}

int store_expunge(struct shard *sh, uint64_t mailbox_id, const uint32_t *uids, size_t n_uids,
		  bool only_deleted, uint32_t **expunged_r, size_t *n_r,
		  enum storage_status *status_r, const char **error_r)
{
	*expunged_r = NULL;
	*n_r = 0;
	if (sh_begin(sh, status_r, error_r) < 0)
		return -1;
	struct mbox_rec m;
	struct user_info u;
	int r = w_load_mbox(sh, mailbox_id, &m, error_r);
	if (r == 1)
		r = w_load_user(sh, m.user, &u, error_r);
	if (r != 1) {
		sh_abort(sh);
		return r < 0 ? fail_io(error_r, status_r)
			     : fail(error_r, status_r, ST_NOT_FOUND, "no such mailbox");
	}
	uint32_t *gone = xcalloc(n_uids ? n_uids : 1, sizeof(*gone));
	size_t ng = 0;
	for (size_t i = 0; i < n_uids && r >= 0; i++) {
		struct msg_info msg;
		r = w_load_msg(sh, mailbox_id, uids[i], &msg, error_r);
		if (r <= 0)
			continue;
		if (only_deleted && !(msg.flags & FLAG_DELETED)) {
			msg_info_cleanup(&msg);
			continue;
		}
		struct key k;
		key_message(&k, mailbox_id, msg.uid);
		w_del(sh, k.b, k.len);
		uint64_t modseq = ++m.m.highestmodseq;
		key_expunge(&k, mailbox_id, modseq, msg.uid);
		w_put(sh, k.b, k.len, "", 0);
		if (w_body_ref(sh, msg.body_hash, -1, error_r) < 0)
			r = -1;
		m.m.messages--;
		if (!(msg.flags & FLAG_SEEN) && m.m.unseen)
			m.m.unseen--;
		m.m.size -= MIN(m.m.size, msg.size);
		u.used_bytes -= MIN(u.used_bytes, msg.size);
		if (u.used_messages)
			u.used_messages--;
		gone[ng++] = msg.uid;
		msg_info_cleanup(&msg);
	}
	if (r < 0) {
		free(gone);
		sh_abort(sh);
		return fail_io(error_r, status_r);
	}
	if (ng) {
		w_save_mbox(sh, &m);
		w_save_user(sh, &u);
	}
	set_ok(status_r);
	int ret = sh_end(sh, ng > 0, status_r, error_r);
	if (ret == 0 && ng)
		mailbox_changed(sh, mailbox_id);
	*expunged_r = gone;
	*n_r = ng;
	return ret;
}

/* Copy (and for move, remove) messages between two mailboxes of one user
 * (mu held). */
static int w_copy(struct shard *sh, struct mbox_rec *src, struct mbox_rec *dst,
		  struct user_info *u, const uint32_t *uids, size_t n, bool move, uint32_t *src_out,
		  uint32_t *dst_out, size_t *n_out, enum storage_status *status_r,
		  const char **error_r)
{
	size_t k = 0;
	uint64_t save = now_ms();
	for (size_t i = 0; i < n; i++) {
		struct msg_info msg;
		int r = w_load_msg(sh, src->m.id, uids[i], &msg, error_r);
		if (r < 0)
			return -1;
		if (r == 0)
			continue;
		if (!move && u->quota_bytes && u->used_bytes + msg.size > u->quota_bytes) {
			msg_info_cleanup(&msg);
			return fail(error_r, status_r, ST_OVER_QUOTA, "over quota");
		}
		uint32_t old_uid = msg.uid;
		msg.uid = dst->m.uidnext++;
		msg.modseq = ++dst->m.highestmodseq;
		msg.save_date_ms = save;
		w_save_msg(sh, dst->m.id, &msg);
		dst->m.messages++;
		if (!(msg.flags & FLAG_SEEN))
			dst->m.unseen++;
		dst->m.size += msg.size;
		if (move) {
			struct key kk;
			key_message(&kk, src->m.id, old_uid);
			w_del(sh, kk.b, kk.len);
			key_expunge(&kk, src->m.id, ++src->m.highestmodseq, old_uid);
			w_put(sh, kk.b, kk.len, "", 0);
			src->m.messages--;
			if (!(msg.flags & FLAG_SEEN) && src->m.unseen)
				src->m.unseen--;
			src->m.size -= MIN(src->m.size, msg.size);
		} else {
			if (w_body_ref(sh, msg.body_hash, 1, error_r) < 0) {
				msg_info_cleanup(&msg);
				return -1;
			}
			u->used_bytes += msg.size;
			u->used_messages++;
		}
		if (src_out)
			src_out[k] = old_uid;
		if (dst_out)
			dst_out[k] = msg.uid;
		k++;
		msg_info_cleanup(&msg);
	}
	*n_out = k;
	return 0;
}

int store_copy(struct shard *sh, uint64_t from_mailbox, uint64_t to_mailbox,
	       const uint32_t *uids, size_t n_uids, bool move, uint32_t **src_uids_r,
	       uint32_t **dst_uids_r, size_t *n_r, uint32_t *dst_uidvalidity_r,
	       enum storage_status *status_r, const char **error_r)
{
	*src_uids_r = *dst_uids_r = NULL;
	*n_r = 0;
	if (from_mailbox == to_mailbox && move)
		return fail(error_r, status_r, ST_INVALID, "move to the same mailbox");
	if (sh_begin(sh, status_r, error_r) < 0)
		return -1;
	struct mbox_rec src, dst;
	struct user_info u;
	int r = w_load_mbox(sh, from_mailbox, &src, error_r);
	if (r == 1)
		r = w_load_mbox(sh, to_mailbox, &dst, error_r);
	if (r == 1 && strcmp(src.user, dst.user) != 0)
		r = 0;
	if (r == 1)
		r = w_load_user(sh, src.user, &u, error_r);
	if (r != 1) {
		sh_abort(sh);
		return r < 0 ? fail_io(error_r, status_r)
			     : fail(error_r, status_r, ST_NOT_FOUND, "no such mailbox");
	}
	if (from_mailbox == to_mailbox)
		dst = src;
	uint32_t *s = xcalloc(n_uids ? n_uids : 1, sizeof(*s));
	uint32_t *d = xcalloc(n_uids ? n_uids : 1, sizeof(*d));
	size_t k = 0;
	enum storage_status st = ST_IO;
	/* A copy within one mailbox updates one record: work on dst only. */
	struct mbox_rec *srcp = from_mailbox == to_mailbox ? &dst : &src;
	if (w_copy(sh, srcp, &dst, &u, uids, n_uids, move, s, d, &k, &st, error_r) < 0) {
		free(s);
		free(d);
		/* Nothing of this call may be committed: roll the pending
		 * group back is not possible, so the puts above must not
		 * exist; w_copy fails only before writing (quota) or on I/O. */
		sh_abort(sh);
		return (st == ST_IO ? fail_io(error_r, status_r) : (status_r ? (*status_r = st, -1) : -1));
	}
	if (k) {
		if (from_mailbox != to_mailbox)
			w_save_mbox(sh, &src);
		w_save_mbox(sh, &dst);
		w_save_user(sh, &u);
	}
	set_ok(status_r);
	int ret = sh_end(sh, k > 0, status_r, error_r);
	if (ret == 0 && k) {
		mailbox_changed(sh, to_mailbox);
		if (move)
			mailbox_changed(sh, from_mailbox);
	}
	*src_uids_r = s;
	*dst_uids_r = d;
	*n_r = k;
	*dst_uidvalidity_r = dst.m.uidvalidity;
	return ret;
}

static int w_move_all(struct shard *sh, uint64_t from, uint64_t to, const char **error_r)
{
	uint32_t *uids = NULL;
	size_t n = 0;
	if (store_uids(sh, from, &uids, &n, error_r) < 0)
		return -1;
	struct mbox_rec src, dst;
	struct user_info u;
	if (w_load_mbox(sh, from, &src, error_r) != 1 || w_load_mbox(sh, to, &dst, error_r) != 1 ||
	    w_load_user(sh, src.user, &u, error_r) != 1) {
		free(uids);
		return -1;
	}
	size_t k;
	enum storage_status st;
	int r = w_copy(sh, &src, &dst, &u, uids, n, true, NULL, NULL, &k, &st, error_r);
	free(uids);
	if (r < 0)
		return -1;
	w_save_mbox(sh, &src);
	w_save_mbox(sh, &dst);
	return 0;
}

/* ---- changes since -------------------------------------------------------- */

struct vanish_collect {
	uint32_t *uids;
	size_t n, cap;
};

static int collect_vanished(void *arg, struct view k, struct view v)
{
	UNUSED(v);
	struct vanish_collect *c = arg;
	if (k.len != 21)
		return 0;
	if (c->n == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 64;
		c->uids = xrealloc(c->uids, c->cap * sizeof(*c->uids));
	}
	c->uids[c->n++] = rd32(k.ptr + 17);
	return 0;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

int store_changes_since(struct shard *sh, uint64_t mailbox_id, uint64_t modseq,
			struct msg_info **changed_r, size_t *n_changed_r, uint32_t **vanished_r,
			size_t *n_vanished_r, const char **error_r)
{
	struct msg_collect c = { .last = UINT32_MAX, .min_modseq = modseq ? modseq : 0 };
	uint8_t prefix[9];
	prefix[0] = KEY_MESSAGE;
	be64(prefix + 1, mailbox_id);
	if (scan_prefix(sh, prefix, 9, collect_msg, &c, error_r) < 0 || c.bad) {
		free_msgs(c.list, c.n);
		return c.bad ? fail(error_r, NULL, ST_IO, "corrupt message record") : -1;
	}
	/* Expunge log entries after modseq: seek to (mbid, modseq+1). */
	struct vanish_collect vc = { 0 };
	uint8_t seekk[17];
	seekk[0] = KEY_EXPUNGE;
	be64(seekk + 1, mailbox_id);
	be64(seekk + 9, modseq + 1);
	rocksdb_iterator_t *it = rocksdb_create_iterator(sh->db, sh->ro);
	rocksdb_iter_seek(it, (const char *)seekk, 17);
	while (rocksdb_iter_valid(it)) {
		size_t kl;
		const char *k = rocksdb_iter_key(it, &kl);
		if (kl != 21 || memcmp(k, seekk, 9) != 0)
			break;
		collect_vanished(&vc, view_make(k, kl), view_make(NULL, 0));
		rocksdb_iter_next(it);
	}
	rocksdb_iter_destroy(it);
	if (vc.n)
		qsort(vc.uids, vc.n, sizeof(uint32_t), cmp_u32);
	*changed_r = c.list;
	*n_changed_r = c.n;
	*vanished_r = vc.uids;
	*n_vanished_r = vc.n;
	return 0;
}

/* ---- a session's consistent view --------------------------------------------- */

static int cmp_expunged(const void *a, const void *b)
{
	const struct store_expunged *x = a, *y = b;
	return x->uid < y->uid ? -1 : x->uid > y->uid;
}

int store_mailbox_view(struct shard *sh, uint64_t mailbox_id, uint64_t since, bool want_uids,
		       struct store_view *out, enum storage_status *status_r, const char **error_r)
{
	memset(out, 0, sizeof(*out));
	const rocksdb_snapshot_t *snap = rocksdb_create_snapshot(sh->db);
	rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
	rocksdb_readoptions_set_snapshot(ro, snap);
	int ret = -1;
	char *err = NULL;
	struct key k;
	key_mailbox(&k, mailbox_id);
	size_t vl = 0;
	char *v = rocksdb_get(sh->db, ro, (const char *)k.b, k.len, &vl, &err);
	struct mbox_rec m;
	if (err) {
		ret = rocks_fail(error_r, status_r, err);
		goto out;
	}
	if (!v) {
		ret = fail(error_r, status_r, ST_NOT_FOUND, "no such mailbox");
		goto out;
	}
	bool ok = dec_mbox(view_make(v, vl), mailbox_id, &m);
	free(v);
	if (!ok) {
		ret = fail(error_r, status_r, ST_IO, "corrupt mailbox record");
		goto out;
	}
	out->mi = m.m;
	bool scan_msgs = want_uids || since < m.m.highestmodseq;
	size_t cap_u = 0, cap_c = 0, cap_v = 0;
	uint8_t prefix[17];
	prefix[0] = KEY_MESSAGE;
	be64(prefix + 1, mailbox_id);
	rocksdb_iterator_t *it = scan_msgs ? rocksdb_create_iterator(sh->db, ro) : NULL;
	if (it)
		rocksdb_iter_seek(it, (const char *)prefix, 9);
	bool bad = false;
	while (it && rocksdb_iter_valid(it) && !bad) {
		size_t kl;
		const char *kk = rocksdb_iter_key(it, &kl);
		if (kl != 13 || memcmp(kk, prefix, 9) != 0)
			break;
		uint32_t uid = rd32((const uint8_t *)kk + 9);
		const char *val = rocksdb_iter_value(it, &vl);
		if (want_uids) {
			if (out->n_uids == cap_u) {
				cap_u = cap_u ? cap_u * 2 : 256;
				out->uids = xrealloc(out->uids, cap_u * sizeof(uint32_t));
			}
			out->uids[out->n_uids++] = uid;
		}
		/* The modseq follows the version byte: decode the rest only
		 * for a changed message. */
		struct dec d = dec_make(val, vl);
		uint8_t ver = get_u8(&d);
		uint64_t ms = get_u64(&d);
		if (d.bad || ver != RECORD_VERSION) {
			bad = true;
			break;
		}
		if (ms > since) {
			if (out->n_changed == cap_c) {
				cap_c = cap_c ? cap_c * 2 : 64;
				out->changed = xrealloc(out->changed, cap_c * sizeof(*out->changed));
			}
			if (!dec_msg(view_make(val, vl), uid, &out->changed[out->n_changed])) {
				bad = true;
				break;
			}
			out->n_changed++;
		}
		rocksdb_iter_next(it);
	}
	if (it) {
		rocksdb_iter_get_error(it, &err);
		rocksdb_iter_destroy(it);
	}
	/* Expunges logged after since: the log is keyed by modseq. */
	if (!err && !bad && since < m.m.highestmodseq) {
		prefix[0] = KEY_EXPUNGE;
		be64(prefix + 9, since + 1);
		it = rocksdb_create_iterator(sh->db, ro);
		rocksdb_iter_seek(it, (const char *)prefix, 17);
		while (rocksdb_iter_valid(it)) {
			size_t kl;
			const uint8_t *kk = (const uint8_t *)rocksdb_iter_key(it, &kl);
			if (kl != 21 || memcmp(kk, prefix, 9) != 0)
				break;
			if (out->n_vanished == cap_v) {
				cap_v = cap_v ? cap_v * 2 : 64;
				out->vanished = xrealloc(out->vanished,
							 cap_v * sizeof(*out->vanished));
			}
			struct store_expunged *e = &out->vanished[out->n_vanished++];
			e->uid = rd32(kk + 17);
			e->modseq = rd64(kk + 9);
			rocksdb_iter_next(it);
		}
		rocksdb_iter_get_error(it, &err);
		rocksdb_iter_destroy(it);
		if (out->n_vanished > 1)
			qsort(out->vanished, out->n_vanished, sizeof(*out->vanished), cmp_expunged);
	}
	if (err) {
		ret = rocks_fail(error_r, status_r, err);
	} else if (bad) {
		ret = fail(error_r, status_r, ST_IO, "corrupt message record");
	} else {
		set_ok(status_r);
		ret = 0;
	}
out:
	rocksdb_readoptions_destroy(ro);
	rocksdb_release_snapshot(sh->db, snap);
	if (ret < 0)
		store_view_cleanup(out);
	return ret;
}

void store_view_cleanup(struct store_view *v)
{
	free(v->uids);
	free_msgs(v->changed, v->n_changed);
	free(v->vanished);
	memset(v, 0, sizeof(*v));
}

/* ---- replication hooks ------------------------------------------------------ */

uint64_t shard_latest_seq(struct shard *sh)
{
	return rocksdb_get_latest_sequence_number(sh->db);
}

int shard_updates_since(struct shard *sh, uint64_t after_seq,
			int (*fn)(void *arg, uint64_t seq, struct view batch), void *arg,
			const char **error_r)
{
	char *err = NULL;
	if (after_seq >= shard_latest_seq(sh))
		return 0;
	rocksdb_wal_iterator_t *it = rocksdb_get_updates_since(sh->db, after_seq + 1, NULL, &err);
	if (err)
		return rocks_fail(error_r, NULL, err);
	int r = 0;
	for (; rocksdb_wal_iter_valid(it); rocksdb_wal_iter_next(it)) {
		uint64_t seq = 0;
		rocksdb_writebatch_t *wb = rocksdb_wal_iter_get_batch(it, &seq);
		size_t len = 0;
		const char *data = rocksdb_writebatch_data(wb, &len);
		int stop = 0;
		/* The first batch may start before after_seq+1 (a batch is
		 * atomic): skip batches the replica already has. */
		uint32_t count = (uint32_t)rocksdb_writebatch_count(wb);
		if (seq + count - 1 > after_seq || count == 0)
			stop = fn(arg, seq, view_make(data, len));
		rocksdb_writebatch_destroy(wb);
		if (stop)
			break;
	}
	rocksdb_wal_iter_status(it, &err);
	rocksdb_wal_iter_destroy(it);
	if (err)
		r = rocks_fail(error_r, NULL, err);
	return r;
}

int shard_apply_batch(struct shard *sh, uint64_t seq, struct view batch, const char **error_r)
{
	if (batch.len < 12)
		return fail(error_r, NULL, ST_INVALID, "write batch too short");
	rocksdb_writebatch_t *wb = rocksdb_writebatch_create_from((const char *)batch.ptr, batch.len);
	char *err = NULL;
	pthread_mutex_lock(&sh->mu);
	sh_quiesce(sh, error_r);
	uint64_t latest = rocksdb_get_latest_sequence_number(sh->db);
	uint32_t count = (uint32_t)rocksdb_writebatch_count(wb);
	int skip = 0;
	if (count && seq + count - 1 <= latest)
		skip = 1; /* already applied (a replay after reconnect) */
	else if (seq != latest + 1)
		skip = -1;
	if (skip == 0)
		rocksdb_write(sh->db, sh->wo, wb, &err);
	sh_unlock(sh);
	if (skip < 0) {
		rocksdb_writebatch_destroy(wb);
		return fail(error_r, NULL, ST_INVALID,
			    "batch at sequence %llu does not follow %llu (gap or overlap)",
			    (unsigned long long)seq, (unsigned long long)latest);
	}
	rocksdb_writebatch_destroy(wb);
	if (err)
		return rocks_fail(error_r, NULL, err);
	return 0;
}

int shard_checkpoint(struct shard *sh, const char *dir, const char **error_r)
{
	char *err = NULL;
	rocksdb_checkpoint_t *cp = rocksdb_checkpoint_object_create(sh->db, &err);
	if (err)
		return rocks_fail(error_r, NULL, err);
	pthread_mutex_lock(&sh->mu);
	sh_quiesce(sh, error_r);
	rocksdb_checkpoint_create(cp, dir, 0, &err);
	sh_unlock(sh);
	rocksdb_checkpoint_object_destroy(cp);
	if (err)
		return rocks_fail(error_r, NULL, err);
	return 0;
}

int shard_scan_all(struct shard *sh, int (*fn)(void *arg, struct view k, struct view v),
		   void *arg, const char **error_r)
{
	return scan_prefix(sh, "", 0, fn, arg, error_r);
}

/* ---- consistency check ------------------------------------------------------ */

struct vmsg {
	uint64_t mbid;
	uint64_t size;
	bool seen;
	uint8_t hash[32];
};

struct vbody {
	uint8_t hash[32];
	uint64_t refcount;
	uint64_t size;
	uint32_t nchunks;
};

struct vmbox {
	uint64_t id;
	struct mbox_rec rec;
};

struct vuser {
	char address[256];
	struct user_info u;
};

struct verify {
	struct vmsg *msgs;
	size_t nmsgs, cmsgs;
	struct vbody *bodies;
	size_t nbodies, cbodies;
	struct vmbox *mboxes;
	size_t nmboxes, cmboxes;
	struct vuser *users;
	size_t nusers, cusers;
	uint64_t chunks;
	long bad;
	void (*report)(void *arg, const char *line);
	void *arg;
};

#define GROW(arr, n, cap)                                                  \
	do {                                                               \
		if ((n) == (cap)) {                                        \
			(cap) = (cap) ? (cap) * 2 : 64;                    \
			(arr) = xrealloc((arr), (cap) * sizeof(*(arr)));   \
		}                                                          \
	} while (0)

static void vreport(struct verify *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void vreport(struct verify *v, const char *fmt, ...)
{
	v->bad++;
	if (!v->report)
		return;
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	v->report(v->arg, line);
}

static int verify_collect(void *arg, struct view k, struct view val)
{
	struct verify *v = arg;
	if (k.len == 0)
		return 0;
	switch (k.ptr[0]) {
	case KEY_MESSAGE: {
		struct msg_info m;
		if (k.len != 13 || !dec_msg(val, rd32(k.ptr + 9), &m)) {
			vreport(v, "corrupt message record");
			return 0;
		}
		GROW(v->msgs, v->nmsgs, v->cmsgs);
		struct vmsg *x = &v->msgs[v->nmsgs++];
		x->mbid = rd64(k.ptr + 1);
		x->size = m.size;
		x->seen = (m.flags & FLAG_SEEN) != 0;
		memcpy(x->hash, m.body_hash, 32);
		msg_info_cleanup(&m);
		break;
	}
	case KEY_BODY: {
		struct body_rec br;
		if (k.len != 33 || !dec_body(val, &br)) {
			vreport(v, "corrupt body record");
			return 0;
		}
		GROW(v->bodies, v->nbodies, v->cbodies);
		struct vbody *b = &v->bodies[v->nbodies++];
		memcpy(b->hash, k.ptr + 1, 32);
		b->refcount = br.refcount;
		b->size = br.size;
		b->nchunks = br.nchunks;
		break;
	}
	case KEY_CHUNK:
		v->chunks++;
		break;
	case KEY_MAILBOX: {
		GROW(v->mboxes, v->nmboxes, v->cmboxes);
		struct vmbox *mb = &v->mboxes[v->nmboxes];
		if (k.len != 9 || !dec_mbox(val, rd64(k.ptr + 1), &mb->rec)) {
			vreport(v, "corrupt mailbox record");
			return 0;
		}
		mb->id = rd64(k.ptr + 1);
		v->nmboxes++;
		break;
	}
	case KEY_USER: {
		GROW(v->users, v->nusers, v->cusers);
		struct vuser *u = &v->users[v->nusers];
		snprintf(u->address, sizeof(u->address), "%.*s", (int)(k.len - 1),
			 (const char *)k.ptr + 1);
		if (!dec_user(val, u->address, &u->u)) {
			vreport(v, "corrupt user record %s", u->address);
			return 0;
		}
		v->nusers++;
		break;
	}
	default:
		break;
	}
	return 0;
}

static int cmp_vmsg_hash(const void *a, const void *b)
{
	return memcmp(((const struct vmsg *)a)->hash, ((const struct vmsg *)b)->hash, 32);
}

long store_verify(struct shard *sh, void (*report)(void *arg, const char *line), void *arg,
		  const char **error_r)
{
	struct verify v = { .report = report, .arg = arg };
	pthread_mutex_lock(&sh->mu);
	int r = sh_quiesce(sh, error_r);
	sh_unlock(sh);
	if (r < 0 || shard_scan_all(sh, verify_collect, &v, error_r) < 0) {
		v.bad = -1;
		goto out;
	}
	/* Mailboxes: counts from their messages (messages are in key order,
	 * so per mailbox they are contiguous). */
	for (size_t i = 0; i < v.nmboxes; i++) {
		struct vmbox *mb = &v.mboxes[i];
		uint64_t n = 0, unseen = 0, size = 0;
		for (size_t j = 0; j < v.nmsgs; j++) {
			if (v.msgs[j].mbid != mb->id)
				continue;
			n++;
			unseen += !v.msgs[j].seen;
			size += v.msgs[j].size;
		}
		if (n != mb->rec.m.messages || unseen != mb->rec.m.unseen || size != mb->rec.m.size)
			vreport(&v,
				"mailbox %s/%s: stored messages=%u unseen=%u size=%llu, counted %llu %llu %llu",
				mb->rec.user, mb->rec.m.name, mb->rec.m.messages, mb->rec.m.unseen,
				(unsigned long long)mb->rec.m.size, (unsigned long long)n,
				(unsigned long long)unseen, (unsigned long long)size);
	}
	/* Users: usage = sum over their mailboxes. */
	for (size_t i = 0; i < v.nusers; i++) {
		uint64_t n = 0, size = 0;
		for (size_t j = 0; j < v.nmboxes; j++) {
			if (strcmp(v.mboxes[j].rec.user, v.users[i].address) != 0)
				continue;
			n += v.mboxes[j].rec.m.messages;
			size += v.mboxes[j].rec.m.size;
		}
		if (n != v.users[i].u.used_messages || size != v.users[i].u.used_bytes)
			vreport(&v, "user %s: stored usage %llu bytes %llu messages, counted %llu %llu",
				v.users[i].address, (unsigned long long)v.users[i].u.used_bytes,
				(unsigned long long)v.users[i].u.used_messages,
				(unsigned long long)size, (unsigned long long)n);
	}
	/* Bodies: reference counts equal the messages pointing at them; no
	 * message points at a missing body; chunk count adds up. */
	if (v.nmsgs)
		qsort(v.msgs, v.nmsgs, sizeof(*v.msgs), cmp_vmsg_hash);
	uint64_t chunks = 0;
	for (size_t i = 0; i < v.nbodies; i++) {
		struct vbody *b = &v.bodies[i];
		chunks += b->nchunks;
		uint64_t refs = 0;
		for (size_t j = 0; j < v.nmsgs; j++)
			if (memcmp(v.msgs[j].hash, b->hash, 32) == 0)
				refs++;
		if (refs != b->refcount)
			vreport(&v, "body %02x%02x..: refcount %llu, referenced %llu times", b->hash[0],
				b->hash[1], (unsigned long long)b->refcount,
				(unsigned long long)refs);
	}
	for (size_t j = 0; j < v.nmsgs; j++) {
		if (j > 0 && memcmp(v.msgs[j].hash, v.msgs[j - 1].hash, 32) == 0)
			continue;
		bool found = false;
		for (size_t i = 0; i < v.nbodies && !found; i++)
			found = memcmp(v.bodies[i].hash, v.msgs[j].hash, 32) == 0;
		if (!found)
			vreport(&v, "a message references a missing body %02x%02x..", v.msgs[j].hash[0],
				v.msgs[j].hash[1]);
	}
	if (chunks != v.chunks)
		vreport(&v, "%llu body chunks stored, %llu referenced",
			(unsigned long long)v.chunks, (unsigned long long)chunks);
out:
	free(v.msgs);
	free(v.bodies);
	free(v.mboxes);
	free(v.users);
	return v.bad;
}
