#include "bench/loadstat.h"

#include <inttypes.h>
#include <string.h>
#include <unistd.h>

#include "common/base.h"

void load_stats_init(struct load_stats *s, const char *bench, bool progress)
{
	memset(s, 0, sizeof(*s));
	s->bench = bench;
	s->progress = progress;
	s->tty = isatty(STDERR_FILENO) == 1;
	for (unsigned i = 0; i < LOAD_MAX_OPS; i++)
		hist_init(&s->ops[i].lat_us);
	s->start_ns = s->last_ns = time_mono_ns();
}

void load_op_name(struct load_stats *s, unsigned i, const char *name, bool counted)
{
	if (i >= LOAD_MAX_OPS)
		return;
	s->ops[i].name = name;
	s->ops[i].counted = counted;
}

void load_op_ok(struct load_stats *s, unsigned i, uint64_t latency_ns)
{
	if (i >= LOAD_MAX_OPS)
		return;
	s->ops[i].ok++;
	hist_record(&s->ops[i].lat_us, latency_ns / 1000);
}

void load_op_failed(struct load_stats *s, unsigned i)
{
	if (i < LOAD_MAX_OPS)
		s->ops[i].failed++;
}

void load_window_start(struct load_stats *s, uint32_t keep_mask)
{
	for (unsigned i = 0; i < LOAD_MAX_OPS; i++) {
		if (keep_mask & (1u << i))
			continue;
		s->ops[i].ok = s->ops[i].failed = 0;
		hist_init(&s->ops[i].lat_us);
	}
	s->start_ns = s->last_ns = time_mono_ns();
	s->last_ok = load_commands_ok(s);
}

void load_error(struct load_stats *s, const char *kind, const char *example)
{
	s->errors++;
	size_t i;
	for (i = 0; i < s->nerrs; i++)
		if (strcmp(s->errs[i].kind, kind) == 0)
			break;
	if (i == s->nerrs) {
		if (s->nerrs == LOAD_MAX_ERR_KINDS)
			i = s->nerrs - 1; /* the last slot collects the rest */
		else
			snprintf(s->errs[s->nerrs++].kind, sizeof(s->errs[0].kind), "%s", kind);
	}
	if (s->errs[i].n++ == 0 && example) {
		/* Printable ASCII only: it comes from the peer and goes into
		 * JSON strings. */
		size_t o = 0;
		for (const char *p = example; *p && o + 1 < sizeof(s->errs[i].example); p++) {
			unsigned char ch = (unsigned char)*p;
			s->errs[i].example[o++] = ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\'
							  ? (char)ch : '.';
		}
		s->errs[i].example[o] = '\0';
	}
}

void load_figure(struct load_stats *s, const char *key, double value, bool integer)
{
	for (size_t i = 0; i < s->nfigs; i++) {
		if (strcmp(s->figs[i].key, key) == 0) {
			s->figs[i].value = value;
			s->figs[i].integer = integer;
			return;
		}
	}
	if (s->nfigs < LOAD_MAX_FIGURES)
		s->figs[s->nfigs++] = (struct load_figure){ key, value, integer };
}

uint64_t load_commands(const struct load_stats *s)
{
	uint64_t n = 0;
	for (unsigned i = 0; i < LOAD_MAX_OPS; i++)
		if (s->ops[i].name && s->ops[i].counted)
			n += s->ops[i].ok + s->ops[i].failed;
	return n;
}

uint64_t load_commands_ok(const struct load_stats *s)
{
	uint64_t n = 0;
	for (unsigned i = 0; i < LOAD_MAX_OPS; i++)
		if (s->ops[i].name && s->ops[i].counted)
			n += s->ops[i].ok;
	return n;
}

void load_progress(struct load_stats *s, const char *extra)
{
	if (!s->progress)
		return;
	uint64_t now = time_mono_ns();
	uint64_t ok = load_commands_ok(s);
	double dt = (double)(now - s->last_ns) / 1e9;
	double rate = dt > 0 ? (double)(ok - s->last_ok) / dt : 0;
	fprintf(stderr, "%s[%6.1fs] %s: %" PRIu64 " commands (%.0f/s) errors=%" PRIu64 "%s%s%s",
		s->tty ? "\r" : "", (double)(now - s->start_ns) / 1e9, s->bench, ok, rate,
		s->errors, extra ? " " : "", extra ? extra : "", s->tty ? "   " : "\n");
	fflush(stderr);
	s->last_ok = ok;
	s->last_ns = now;
}

void load_progress_end(struct load_stats *s)
{
	if (s->progress && s->tty)
		fprintf(stderr, "\n");
}

static double seconds(const struct load_stats *s)
{
	uint64_t end = s->end_ns ? s->end_ns : time_mono_ns();
	return (double)(end - s->start_ns) / 1e9;
}

static void ms(FILE *out, uint64_t us)
{
	fprintf(out, " %8.*f", us < 10000 ? 2 : 1, (double)us / 1000.0);
}

static void report_human(const struct load_stats *s, FILE *out)
{
	double secs = seconds(s);
	fprintf(out, "%s\n", s->desc[0] ? s->desc : s->bench);
	fprintf(out, "%-14s %10s %10s %8s %8s %8s %8s %8s %8s\n", "command", "ok", "per sec",
		"p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "failed");
	for (unsigned i = 0; i < LOAD_MAX_OPS; i++) {
		const struct load_op *op = &s->ops[i];
		if (!op->name || (op->ok == 0 && op->failed == 0))
			continue;
		const struct hist *h = &op->lat_us;
		fprintf(out, "%-14s %10" PRIu64 " %10.1f", op->name, op->ok,
			secs > 0 ? (double)op->ok / secs : 0.0);
		ms(out, hist_quantile(h, 0.5));
		ms(out, hist_quantile(h, 0.9));
		ms(out, hist_quantile(h, 0.99));
		ms(out, hist_quantile(h, 0.999));
		ms(out, h->count ? h->max : 0);
		fprintf(out, " %8" PRIu64 "\n", op->failed);
	}
	uint64_t ok = load_commands_ok(s);
	fprintf(out, "%-14s %10" PRIu64 " %10.1f   (all commands, %.2f s)\n", "total", ok,
		secs > 0 ? (double)ok / secs : 0.0, secs);
	for (size_t i = 0; i < s->nfigs; i++)
		fprintf(out, "%-26s %.*f\n", s->figs[i].key, s->figs[i].integer ? 0 : 1,
			s->figs[i].value);
	fprintf(out, "errors: %" PRIu64 "\n", s->errors);
	for (size_t i = 0; i < s->nerrs; i++)
		fprintf(out, "  %-28s %8" PRIu64 "%s%s\n", s->errs[i].kind, s->errs[i].n,
			s->errs[i].example[0] ? "  e.g. " : "", s->errs[i].example);
}

static void report_json(const struct load_stats *s, FILE *out)
{
	double secs = seconds(s);
	uint64_t ok = load_commands_ok(s);
	fprintf(out,
		"{\"bench\":\"%s\",\"seconds\":%.3f,\"commands\":%" PRIu64
		",\"commands_per_second\":%.1f,\"errors\":%" PRIu64,
		s->bench, secs, ok, secs > 0 ? (double)ok / secs : 0.0, s->errors);
	for (size_t i = 0; i < s->nfigs; i++)
		fprintf(out, ",\"%s\":%.*f", s->figs[i].key, s->figs[i].integer ? 0 : 3,
			s->figs[i].value);
	fprintf(out, ",\"error_kinds\":{");
	for (size_t i = 0; i < s->nerrs; i++)
		fprintf(out, "%s\"%s\":%" PRIu64, i ? "," : "", s->errs[i].kind, s->errs[i].n);
	fprintf(out, "},\"error_examples\":{");
	for (size_t i = 0; i < s->nerrs; i++)
		fprintf(out, "%s\"%s\":\"%s\"", i ? "," : "", s->errs[i].kind, s->errs[i].example);
	fprintf(out, "},\"ops\":{");
	bool first = true;
	for (unsigned i = 0; i < LOAD_MAX_OPS; i++) {
		const struct load_op *op = &s->ops[i];
		if (!op->name || (op->ok == 0 && op->failed == 0))
			continue;
		const struct hist *h = &op->lat_us;
		fprintf(out,
			"%s\"%s\":{\"ok\":%" PRIu64 ",\"failed\":%" PRIu64 ",\"per_second\":%.1f,"
			"\"latency_us\":{\"p50\":%" PRIu64 ",\"p90\":%" PRIu64 ",\"p99\":%" PRIu64
			",\"p999\":%" PRIu64 ",\"max\":%" PRIu64 ",\"mean\":%.1f}}",
			first ? "" : ",", op->name, op->ok, op->failed,
			secs > 0 ? (double)op->ok / secs : 0.0, hist_quantile(h, 0.5),
			hist_quantile(h, 0.9), hist_quantile(h, 0.99), hist_quantile(h, 0.999),
			h->count ? h->max : 0, hist_mean(h));
		first = false;
	}
	fprintf(out, "}}\n");
}

void load_report(const struct load_stats *s, FILE *out, bool json)
{
	if (json)
		report_json(s, out);
	else
		report_human(s, out);
	fflush(out);
}
