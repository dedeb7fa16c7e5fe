/* Results of a protocol load (mailbench imap, pop3, idle): per-command
 * counts and latency histograms, errors by kind, a few named figures, the
 * progress line while it runs and the final report (a human table or one
 * JSON object). */
#ifndef BENCH_LOADSTAT_H
#define BENCH_LOADSTAT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "bench/hist.h"

#define LOAD_MAX_OPS 24
#define LOAD_MAX_ERR_KINDS 64
#define LOAD_MAX_FIGURES 24

struct load_op {
	const char *name;  /* "FETCH_FLAGS"; NULL = unused slot */
	bool counted;      /* part of the "commands" total */
	uint64_t ok;       /* completed successfully (latency recorded) */
	uint64_t failed;   /* completed with NO/BAD/-ERR or not at all */
	struct hist lat_us;
};

struct load_err_kind {
	char kind[48];
	uint64_t n;
	char example[160]; /* the first occurrence, for the human report */
};

struct load_figure {
	const char *key;   /* JSON key, also shown in the table */
	double value;
	bool integer;
};

struct load_stats {
	const char *bench;       /* "imap", "pop3", "idle" */
	struct load_op ops[LOAD_MAX_OPS];
	struct load_err_kind errs[LOAD_MAX_ERR_KINDS];
	size_t nerrs;
	uint64_t errors;         /* all of them, every kind */
	struct load_figure figs[LOAD_MAX_FIGURES];
	size_t nfigs;
	uint64_t start_ns, end_ns;
	/* progress */
	bool progress;
	bool tty;
	uint64_t last_ok;
	uint64_t last_ns;
	char desc[256];          /* one line describing the run */
};

void load_stats_init(struct load_stats *s, const char *bench, bool progress);
/* Name op slot i (the caller's enum value). counted: in the commands/s
 * total (a connect is not a command). */
void load_op_name(struct load_stats *s, unsigned i, const char *name, bool counted);
void load_op_ok(struct load_stats *s, unsigned i, uint64_t latency_ns);
void load_op_failed(struct load_stats *s, unsigned i);
/* Count one error of `kind` (letters, digits, '_'); example: what was
 * seen (may be NULL), kept for the first of each kind. */
void load_error(struct load_stats *s, const char *kind, const char *example);
void load_figure(struct load_stats *s, const char *key, double value, bool integer);
/* The measurement window starts now: counts and histograms of every op
 * not in keep_mask (bit i = op i) start again from zero, and rates are
 * computed from now on. For loads whose set-up (logins) is not part of
 * what is measured. */
void load_window_start(struct load_stats *s, uint32_t keep_mask);
/* Commands completed so far (ok + failed of the counted ops). */
uint64_t load_commands(const struct load_stats *s);
uint64_t load_commands_ok(const struct load_stats *s);

/* One progress line on stderr ("\r" on a terminal, a line otherwise). */
void load_progress(struct load_stats *s, const char *extra);
void load_progress_end(struct load_stats *s);

void load_report(const struct load_stats *s, FILE *out, bool json);

#endif
