/* Mailbox store benchmark (see store_bench.h). The raw RocksDB baseline
 * is a separate instance opened here with options like the store's
 * (8 MiB memtable, blob files from 4 KiB, LZ4) and written with
 * rocksdb_put(sync) from N threads, so RocksDB's own write grouping is
 * what the store's group commit is compared with. */
#include "bench/store_bench.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <rocksdb/c.h>

#include "common/base.h"
#include "storage/store.h"

#define MAX_THREADS 256

static uint64_t rng_step(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* Incompressible-looking mail text (base64 lines), like an attachment. */
static void fill_body(uint8_t *p, size_t len, uint64_t seed)
{
	static const char b64[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
	for (size_t i = 0; i < len; i++)
		p[i] = i % 78 == 76 ? '\r' : i % 78 == 77 ? '\n' : (uint8_t)b64[rng_step(&s) & 63];
}

/* A unique first line, so no two deliveries share a body. */
static void stamp(uint8_t *p, size_t len, unsigned t, uint64_t n)
{
	char h[80];
	int k = snprintf(h, sizeof(h), "Message-ID: <%u.%" PRIu64 "@bench>\r\n", t, n);
	memcpy(p, h, MIN((size_t)k, len));
}

static int rm_rf(const char *path)
{
	DIR *d = opendir(path);
	if (!d)
		return unlink(path) == 0 || errno == ENOENT ? 0 : -1;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		char p[4400];
		snprintf(p, sizeof(p), "%s/%s", path, e->d_name);
		rm_rf(p);
	}
	closedir(d);
	return rmdir(path);
}

/* Bytes of table and blob files under path (what the data costs once
 * flushed; WAL and its archive are left out). */
static uint64_t data_bytes(const char *path)
{
	DIR *d = opendir(path);
	if (!d)
		return 0;
	uint64_t sum = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		size_t l = strlen(e->d_name);
		if (l < 5)
			continue;
		if (strcmp(e->d_name + l - 4, ".sst") != 0 && strcmp(e->d_name + l - 5, ".blob") != 0)
			continue;
		char p[4400];
		snprintf(p, sizeof(p), "%s/%s", path, e->d_name);
		struct stat sb;
		if (stat(p, &sb) == 0)
			sum += (uint64_t)sb.st_size;
	}
	closedir(d);
	return sum;
}

/* ---- a timed run of N threads ------------------------------------------------ */

struct run;
typedef int (*op_fn)(struct run *r, unsigned t, uint64_t n);

struct run {
	op_fn op;
	unsigned threads;
	uint64_t deadline_ns;
	_Atomic uint64_t done;
	_Atomic uint64_t errors;
	/* context of the point */
	struct shard *sh;
	rocksdb_t *raw;
	rocksdb_writeoptions_t *raw_wo;
	size_t size;
	uint8_t *bufs[MAX_THREADS];
	uint64_t mbids[MAX_THREADS];
	char users[MAX_THREADS][48];
	uint8_t (*hashes)[32];
	uint32_t *uids;
	size_t n_msgs;
	uint64_t mbid;
	uint64_t rng[MAX_THREADS];
};

struct worker {
	struct run *r;
	unsigned t;
};

static void *run_thread(void *p)
{
	struct worker *w = p;
	struct run *r = w->r;
	uint64_t n = 0, err = 0;
	while (time_mono_ns() < r->deadline_ns) {
		if (r->op(r, w->t, n) < 0)
			err++;
		n++;
	}
	atomic_fetch_add(&r->done, n - err);
	atomic_fetch_add(&r->errors, err);
	return NULL;
}

/* Operations per second over `seconds`. */
static double run_point(struct run *r, unsigned seconds)
{
	pthread_t th[MAX_THREADS];
	struct worker w[MAX_THREADS];
	atomic_store(&r->done, 0);
	atomic_store(&r->errors, 0);
	uint64_t t0 = time_mono_ns();
	r->deadline_ns = t0 + (uint64_t)seconds * 1000000000ull;
	for (unsigned i = 0; i < r->threads; i++) {
		w[i] = (struct worker){ r, i };
		pthread_create(&th[i], NULL, run_thread, &w[i]);
	}
	for (unsigned i = 0; i < r->threads; i++)
		pthread_join(th[i], NULL);
	double el = (double)(time_mono_ns() - t0) / 1e9;
	return (double)atomic_load(&r->done) / el;
}

static int op_deliver(struct run *r, unsigned t, uint64_t n)
{
	uint8_t *b = r->bufs[t];
	stamp(b, r->size, t, n);
	struct body_writer *bw = body_writer_new(r->sh);
	for (size_t off = 0; off < r->size; off += 65536)
		body_writer_add(bw, b + off, MIN(r->size - off, (size_t)65536));
	struct deliver_target tg = { .user = r->users[t], .mailbox_id = r->mbids[t] };
	const char *err = NULL;
	enum storage_status st;
	int ret = store_deliver(r->sh, bw, 0, &tg, 1, &st, &err);
	body_writer_free(&bw);
	return ret < 0 || tg.status_r != ST_OK ? -1 : 0;
}

static int op_raw_put(struct run *r, unsigned t, uint64_t n)
{
	char key[48];
	int kl = snprintf(key, sizeof(key), "k%03u.%012" PRIu64, t, n);
	uint8_t *b = r->bufs[t];
	stamp(b, r->size, t, n);
	char *err = NULL;
	rocksdb_put(r->raw, r->raw_wo, key, (size_t)kl, (const char *)b, r->size, &err);
	if (err) {
		free(err);
		return -1;
	}
	return 0;
}

static int op_fetch_meta(struct run *r, unsigned t, uint64_t n)
{
	UNUSED(n);
	uint32_t uid = r->uids[rng_step(&r->rng[t]) % r->n_msgs];
	struct msg_info *m = NULL;
	size_t k = 0;
	const char *err = NULL;
	if (store_fetch_range(r->sh, r->mbid, uid, uid, &m, &k, &err) < 0)
		return -1;
	for (size_t i = 0; i < k; i++)
		msg_info_cleanup(&m[i]);
	free(m);
	return k == 1 ? 0 : -1;
}

static int count_bytes(void *arg, const uint8_t *p, size_t n)
{
	UNUSED(p);
	*(uint64_t *)arg += n;
	return 0;
}

static int op_fetch_body(struct run *r, unsigned t, uint64_t n)
{
	UNUSED(n);
	size_t i = rng_step(&r->rng[t]) % r->n_msgs;
	uint64_t got = 0;
	const char *err = NULL;
	if (store_body_read(r->sh, r->hashes[i], 0, UINT64_MAX, count_bytes, &got, &err) < 0)
		return -1;
	return got == r->size ? 0 : -1;
}

/* ---- the benchmark ------------------------------------------------------------- */

static rocksdb_t *raw_open(const char *path, rocksdb_options_t **opts_r, const char **why)
{
	rocksdb_options_t *o = rocksdb_options_create();
	rocksdb_options_set_create_if_missing(o, 1);
	rocksdb_options_set_write_buffer_size(o, 8u << 20);
	rocksdb_options_set_max_write_buffer_number(o, 2);
	rocksdb_options_set_enable_blob_files(o, 1);
	rocksdb_options_set_min_blob_size(o, 4096);
	rocksdb_options_set_compression(o, rocksdb_lz4_compression);
	char *err = NULL;
	rocksdb_t *db = rocksdb_open(o, path, &err);
	if (!db) {
		static __thread char msg[512];
		snprintf(msg, sizeof(msg), "%s", err ? err : "open failed");
		free(err);
		*why = msg;
		rocksdb_options_destroy(o);
		return NULL;
	}
	*opts_r = o;
	return db;
}

/* Users b<t>@bench with their INBOX ids, on shard sh. */
static int make_users(struct run *r, unsigned n, const char *prefix)
{
	for (unsigned t = 0; t < n; t++) {
		snprintf(r->users[t], sizeof(r->users[t]), "%s%u@bench.test", prefix, t);
		const char *err = NULL;
		enum storage_status st;
		if (store_user_create(r->sh, r->users[t], "", 0, &st, &err) < 0 && st != ST_EXISTS) {
			fprintf(stderr, "bench store: user create: %s\n", err);
			return -1;
		}
		struct mailbox_info mi;
		if (store_mailbox_get(r->sh, r->users[t], "INBOX", &mi, &st, &err) < 0) {
			fprintf(stderr, "bench store: mailbox: %s\n", err);
			return -1;
		}
		r->mbids[t] = mi.id;
	}
	return 0;
}

struct fill_result {
	size_t size;
	uint64_t n;
	double per_msg_overhead;
	uint64_t data_bytes;
	double meta_1, meta_n, body_1, body_n;
};

int bench_store(const struct bench_store_config *cfg, FILE *out)
{
	static const unsigned def_threads[] = { 1, 8, 32 };
	static const size_t def_sizes[] = { 4096, 102400 };
	const unsigned *threads = cfg->threads ? cfg->threads : def_threads;
	size_t n_threads = cfg->threads ? cfg->n_threads : ARRAY_LEN(def_threads);
	const size_t *sizes = cfg->sizes ? cfg->sizes : def_sizes;
	size_t n_sizes = cfg->sizes ? cfg->n_sizes : ARRAY_LEN(def_sizes);
	unsigned secs = cfg->seconds ? cfg->seconds : 3;
	unsigned fthreads = cfg->fetch_threads ? cfg->fetch_threads : 8;
	if (!cfg->dir || n_threads == 0 || n_sizes == 0 || n_sizes > 16 || n_threads > 16) {
		fprintf(stderr, "bench store: bad configuration\n");
		return -1;
	}
	for (size_t i = 0; i < n_threads; i++)
		if (threads[i] == 0 || threads[i] > MAX_THREADS || fthreads > MAX_THREADS) {
			fprintf(stderr, "bench store: 1..%d threads\n", MAX_THREADS);
			return -1;
		}
	if (mkdir(cfg->dir, 0750) < 0 && errno != EEXIST) {
		fprintf(stderr, "bench store: mkdir %s: %s\n", cfg->dir, strerror(errno));
		return -1;
	}
	char path[4096];
	const char *why = NULL;
	int ret = -1;
	struct run *r = xcalloc(1, sizeof(*r));
	unsigned maxt = fthreads;
	for (size_t i = 0; i < n_threads; i++)
		maxt = MAX(maxt, threads[i]);
	size_t maxsize = 0;
	for (size_t i = 0; i < n_sizes; i++)
		maxsize = MAX(maxsize, sizes[i]);
	for (unsigned t = 0; t < maxt; t++) {
		r->bufs[t] = xmalloc(maxsize);
		fill_body(r->bufs[t], maxsize, t + 1);
		r->rng[t] = 0x9e3779b97f4a7c15ull * (t + 1);
	}
	double deliv[16][16], raw[16][16];
	struct fill_result fr[16];
	memset(fr, 0, sizeof(fr));

	/* 1. synced deliveries, one fresh shard per point */
	snprintf(path, sizeof(path), "%s/sync", cfg->dir);
	struct storage_options so = { .dir = path, .block_cache_bytes = 64u << 20 };
	struct storage *st = storage_open(&so, &why);
	if (!st) {
		fprintf(stderr, "bench store: %s\n", why);
		goto out;
	}
	uint32_t shard_no = 0;
	for (size_t si = 0; si < n_sizes; si++) {
		for (size_t ti = 0; ti < n_threads; ti++) {
			r->sh = storage_shard_open(st, shard_no++, true, &why);
			if (!r->sh) {
				fprintf(stderr, "bench store: %s\n", why);
				storage_close(&st);
				goto out;
			}
			r->size = sizes[si];
			r->threads = threads[ti];
			if (make_users(r, r->threads, "d") < 0) {
				storage_close(&st);
				goto out;
			}
			r->op = op_deliver;
			deliv[si][ti] = run_point(r, secs);
			if (atomic_load(&r->errors))
				fprintf(stderr, "bench store: %" PRIu64 " failed deliveries\n",
					atomic_load(&r->errors));
			storage_shard_drop(st, shard_no - 1, &why);
		}
	}
	storage_close(&st);

	/* 2. plain RocksDB synced puts, same sizes and threads */
	for (size_t si = 0; si < n_sizes; si++) {
		for (size_t ti = 0; ti < n_threads; ti++) {
			snprintf(path, sizeof(path), "%s/raw-%zu-%zu", cfg->dir, si, ti);
			rocksdb_options_t *ro = NULL;
			r->raw = raw_open(path, &ro, &why);
			if (!r->raw) {
				fprintf(stderr, "bench store: raw rocksdb: %s\n", why);
				goto out;
			}
			r->raw_wo = rocksdb_writeoptions_create();
			rocksdb_writeoptions_set_sync(r->raw_wo, 1);
			r->size = sizes[si];
			r->threads = threads[ti];
			r->op = op_raw_put;
			raw[si][ti] = run_point(r, secs);
			rocksdb_writeoptions_destroy(r->raw_wo);
			rocksdb_close(r->raw);
			rocksdb_options_destroy(ro);
			r->raw = NULL;
			rm_rf(path);
		}
	}

	/* 3. storage per message and fetches: a filled shard per size (not
	 * synced, to fill fast), flushed by a close and reopen */
	char fill_dir[4096];
	snprintf(fill_dir, sizeof(fill_dir), "%s/fill", cfg->dir);
	struct storage_options fo = { .dir = fill_dir, .block_cache_bytes = 64u << 20, .no_sync = true };
	for (size_t si = 0; si < n_sizes; si++) {
		st = storage_open(&fo, &why);
		r->sh = st ? storage_shard_open(st, (uint32_t)si, true, &why) : NULL;
		if (!r->sh) {
			fprintf(stderr, "bench store: %s\n", why);
			storage_close(&st);
			goto out;
		}
		r->size = sizes[si];
		/* ~40 MB or 5000 messages per size */
		uint64_t n = MIN((uint64_t)5000, (40u << 20) / sizes[si] + 1);
		if (make_users(r, 1, "f") < 0) {
			storage_close(&st);
			goto out;
		}
		r->threads = 1;
		for (uint64_t i = 0; i < n; i++)
			if (op_deliver(r, 0, i) < 0) {
				fprintf(stderr, "bench store: fill failed\n");
				storage_close(&st);
				goto out;
			}
		storage_close(&st);
		st = storage_open(&fo, &why);
		r->sh = st ? storage_shard_open(st, (uint32_t)si, false, &why) : NULL;
		if (!r->sh) {
			fprintf(stderr, "bench store: reopen: %s\n", why);
			storage_close(&st);
			goto out;
		}
		snprintf(path, sizeof(path), "%s/fill/shards/%04zu", cfg->dir, si);
		fr[si].size = sizes[si];
		fr[si].n = n;
		fr[si].data_bytes = data_bytes(path);
		fr[si].per_msg_overhead = (double)fr[si].data_bytes / (double)n - (double)sizes[si];
		/* fetch points */
		struct msg_info *ms = NULL;
		size_t k = 0;
		r->mbid = r->mbids[0];
		if (store_fetch_range(r->sh, r->mbid, 1, UINT32_MAX, &ms, &k, &why) < 0 || k == 0) {
			fprintf(stderr, "bench store: fetch_range failed\n");
			storage_close(&st);
			goto out;
		}
		r->n_msgs = k;
		r->uids = xmalloc(k * sizeof(*r->uids));
		r->hashes = xmalloc(k * 32);
		for (size_t i = 0; i < k; i++) {
			r->uids[i] = ms[i].uid;
			memcpy(r->hashes[i], ms[i].body_hash, 32);
			msg_info_cleanup(&ms[i]);
		}
		free(ms);
		r->op = op_fetch_meta;
		r->threads = 1;
		fr[si].meta_1 = run_point(r, secs);
		r->threads = fthreads;
		fr[si].meta_n = run_point(r, secs);
		r->op = op_fetch_body;
		r->threads = 1;
		fr[si].body_1 = run_point(r, secs);
		r->threads = fthreads;
		fr[si].body_n = run_point(r, secs);
		free(r->uids);
		free(r->hashes);
		r->uids = NULL;
		r->hashes = NULL;
		storage_close(&st);
	}

	/* report */
	fprintf(out, "store: synced deliveries/s (1 target, unique bodies) vs plain RocksDB "
		     "synced puts, %u s per point\n", secs);
	fprintf(out, "%10s %8s %14s %14s %8s %12s\n", "size", "threads", "deliveries/s", "raw puts/s",
		"ratio", "MB/s stored");
	for (size_t si = 0; si < n_sizes; si++)
		for (size_t ti = 0; ti < n_threads; ti++)
			fprintf(out, "%10zu %8u %14.0f %14.0f %8.2f %12.1f\n", sizes[si], threads[ti],
				deliv[si][ti], raw[si][ti],
				raw[si][ti] > 0 ? deliv[si][ti] / raw[si][ti] : 0,
				deliv[si][ti] * (double)sizes[si] / 1e6);
	fprintf(out, "store: fetches/s (metadata = fetch_range of 1 message; body = whole body "
		     "read) and storage per message\n");
	fprintf(out, "%10s %9s %12s %12s %12s %12s %14s\n", "size", "messages", "meta/s 1t",
		"meta/s", "body/s 1t", "body/s", "overhead B/msg");
	for (size_t si = 0; si < n_sizes; si++)
		fprintf(out, "%10zu %9" PRIu64 " %12.0f %12.0f %12.0f %12.0f %14.0f\n", fr[si].size,
			fr[si].n, fr[si].meta_1, fr[si].meta_n, fr[si].body_1, fr[si].body_n,
			fr[si].per_msg_overhead);
	fprintf(out, "(meta/s and body/s with %u reader threads)\n", fthreads);
	for (size_t si = 0; si < n_sizes; si++)
		for (size_t ti = 0; ti < n_threads; ti++)
			fprintf(out,
				"{\"bench\":\"store\",\"op\":\"deliver_sync\",\"size\":%zu,\"threads\":%u,"
				"\"per_s\":%.1f,\"raw_put_sync_per_s\":%.1f,\"seconds\":%u}\n",
				sizes[si], threads[ti], deliv[si][ti], raw[si][ti], secs);
	for (size_t si = 0; si < n_sizes; si++) {
		fprintf(out,
			"{\"bench\":\"store\",\"op\":\"fetch_meta\",\"size\":%zu,\"threads\":1,"
			"\"per_s\":%.1f}\n{\"bench\":\"store\",\"op\":\"fetch_meta\",\"size\":%zu,"
			"\"threads\":%u,\"per_s\":%.1f}\n",
			fr[si].size, fr[si].meta_1, fr[si].size, fthreads, fr[si].meta_n);
		fprintf(out,
			"{\"bench\":\"store\",\"op\":\"body_read\",\"size\":%zu,\"threads\":1,"
			"\"per_s\":%.1f}\n{\"bench\":\"store\",\"op\":\"body_read\",\"size\":%zu,"
			"\"threads\":%u,\"per_s\":%.1f}\n",
			fr[si].size, fr[si].body_1, fr[si].size, fthreads, fr[si].body_n);
		fprintf(out,
			"{\"bench\":\"store\",\"op\":\"storage\",\"size\":%zu,\"messages\":%" PRIu64
			",\"sst_blob_bytes\":%" PRIu64 ",\"overhead_bytes_per_msg\":%.1f}\n",
			fr[si].size, fr[si].n, fr[si].data_bytes, fr[si].per_msg_overhead);
	}
	fflush(out);
	ret = 0;
out:
	for (unsigned t = 0; t < maxt; t++)
		free(r->bufs[t]);
	free(r);
	if (!cfg->keep)
		rm_rf(cfg->dir);
	return ret;
}
