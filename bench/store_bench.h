/* Mailbox store benchmark: synced deliveries per second at several
 * writer-thread counts and message sizes, next to plain RocksDB synced
 * puts of the same sizes and thread counts in the same run (the ceiling
 * the store's group commit is measured against); metadata and body
 * fetches per second; bytes of storage per message beyond the body. */
#ifndef BENCH_STORE_BENCH_H
#define BENCH_STORE_BENCH_H

#include <stddef.h>
#include <stdio.h>

struct bench_store_config {
	const char *dir;          /* scratch directory: created, removed afterwards */
	unsigned seconds;         /* per measured point (0 = 3) */
	const unsigned *threads;  /* writer thread counts (NULL = 1, 8, 32) */
	size_t n_threads;
	const size_t *sizes;      /* message sizes in bytes (NULL = 4096, 102400) */
	size_t n_sizes;
	unsigned fetch_threads;   /* reader threads for the fetch points besides 1 (0 = 8) */
	int keep;                 /* non-zero: leave the scratch directory */
};

/* Runs every point, printing a table and then one JSON object per line
 * ({"bench":"store",...}) to out. Returns 0, or -1 (reason on stderr). */
int bench_store(const struct bench_store_config *cfg, FILE *out);

#endif
