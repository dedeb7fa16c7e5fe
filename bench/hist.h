/* HDR-style latency histogram: log-linear buckets (64 per power of two,
 * so about 1.6 % relative precision) over 1 .. 2^40 units. Fixed size,
 * no allocation while recording; histograms from several clients merge. */
#ifndef BENCH_HIST_H
#define BENCH_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 6
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS ((40u - HIST_SUB_BITS + 1u) * HIST_SUB)

struct hist {
	uint64_t count;
	uint64_t min, max;
	double sum;
	uint64_t b[HIST_BUCKETS];
};

void hist_init(struct hist *h);
void hist_record(struct hist *h, uint64_t v);
void hist_merge(struct hist *dst, const struct hist *src);
/* Value at quantile q in [0,1] (upper edge of its bucket, capped at max). */
uint64_t hist_quantile(const struct hist *h, double q);
double hist_mean(const struct hist *h);

#endif
