#include "common/daemon.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/tls.h"

#define MAIL_VERSION "0.1.0"

static const struct config_def common_defs[] = {
	{ "log.level", CONFIG_STRING, "info", 0, 0, "debug, info, warn or error" },
	{ "threads", CONFIG_INT, "1", 1, 64, "event loop threads (one io_uring each)" },
	{ "metrics.listen", CONFIG_ADDR, NULL, 0, 0,
	  "admin HTTP address serving /metrics (Prometheus) and /health" },
	{ "drain.timeout", CONFIG_DURATION, "30s", 100, 3600000,
	  "on SIGTERM: how long in-flight work may take before connections are cut" },
	{ "tls.cert", CONFIG_LIST, NULL, 0, 0,
	  "PEM certificate chain (leaf first); repeat for SNI; the first is the default" },
	{ "tls.key", CONFIG_LIST, NULL, 0, 0, "PEM private key for each tls.cert, same order" },
	{ "tls.client_ca", CONFIG_STRING, NULL, 0, 0,
	  "require TLS client certificates signed by this CA (mutual TLS)" },
	{ "tls.ticket_key_file", CONFIG_STRING, NULL, 0, 0,
	  "shared secret for session tickets across processes (32+ bytes)" },
	{ "tls.ticket_rotate", CONFIG_DURATION, "1h", 60000, 86400000,
	  "session ticket key rotation period" },
};

static void usage(const struct daemon_spec *spec, FILE *out)
{
	fprintf(out,
		"usage: %s [--config FILE] [--set KEY=VALUE]... [--print-config] [--help]\n"
		"%s\n\n"
		"  --config FILE     load settings from FILE (key = value lines)\n"
		"  --set KEY=VALUE   override one setting (repeatable, applied after FILE)\n"
		"  --print-config    print the effective settings and exit\n"
		"  --version         print the version and exit\n",
		spec->name, spec->summary);
}

int daemon_init(struct daemon *d, const struct daemon_spec *spec, int argc, char **argv)
{
	/* Before any thread exists (RocksDB, workers): every thread inherits
	 * the mask, so SIGTERM/SIGHUP reach only the signalfd of loop 0. */
	loop_block_signals();
	memset(d, 0, sizeof(*d));
	d->spec = spec;
	d->arg = spec->arg;
	d->started_ms = time_mono_ms();
	size_t n = ARRAY_LEN(common_defs) + spec->n_defs;
	struct config_def *defs = xcalloc(n, sizeof(*defs));
	memcpy(defs, common_defs, sizeof(common_defs));
	memcpy(defs + ARRAY_LEN(common_defs), spec->defs, spec->n_defs * sizeof(*defs));
	/* config keeps pointing at the table: it lives as long as d. */
	d->defs = defs;
	d->cfg = config_new(defs, n);

	const char *config_file = NULL;
	bool print = false;
	const char *err = NULL;
	/* Files first, then --set overrides, whatever their order on the line. */
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
			config_file = argv[++i];
		} else if ((strcmp(argv[i], "--set") == 0 || strcmp(argv[i], "-s") == 0) &&
			   i + 1 < argc) {
			i++;
		} else if (strcmp(argv[i], "--print-config") == 0) {
			print = true;
		} else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(spec, stdout);
			return 1;
		} else if (strcmp(argv[i], "--version") == 0) {
			printf("%s %s\n", spec->name, MAIL_VERSION);
			return 1;
		} else {
			fprintf(stderr, "%s: unknown argument '%s'\n", spec->name, argv[i]);
			usage(spec, stderr);
			return -1;
		}
	}
	if (config_file && config_load_file(d->cfg, config_file, &err) < 0) {
		fprintf(stderr, "%s: %s\n", spec->name, err);
		return -1;
	}
	for (int i = 1; i < argc; i++) {
		if ((strcmp(argv[i], "--set") == 0 || strcmp(argv[i], "-s") == 0) && i + 1 < argc) {
			if (config_set_arg(d->cfg, argv[++i], &err) < 0) {
				fprintf(stderr, "%s: --set %s: %s\n", spec->name, argv[i], err);
				return -1;
			}
		}
	}
	if (print) {
		config_print(d->cfg, stdout);
		return 1;
	}
	enum log_level lvl;
	if (log_level_from_str(config_get_str(d->cfg, "log.level"), &lvl) < 0) {
		fprintf(stderr, "%s: log.level: unknown level '%s'\n", spec->name,
			config_get_str(d->cfg, "log.level"));
		return -1;
	}
	log_init(spec->name, lvl);
	d->threads = (unsigned)config_get_int(d->cfg, "threads");

	size_t ncert = 0, nkey = 0;
	const char *const *certs = config_get_list(d->cfg, "tls.cert", &ncert);
	const char *const *keys = config_get_list(d->cfg, "tls.key", &nkey);
	if (ncert != nkey) {
		fprintf(stderr, "%s: %zu tls.cert but %zu tls.key: give one key per certificate\n",
			spec->name, ncert, nkey);
		return -1;
	}
	if (ncert) {
		struct tls_server_config tc = {
			.cert_files = certs,
			.key_files = keys,
			.n_certs = ncert,
			.ticket_key_file = config_get_str(d->cfg, "tls.ticket_key_file"),
			.ticket_rotate_s =
				(uint32_t)(config_get_duration_ms(d->cfg, "tls.ticket_rotate") / 1000),
			.client_ca_file = config_get_str(d->cfg, "tls.client_ca"),
		};
		d->tls = tls_server_new(&tc, &err);
		if (!d->tls) {
			fprintf(stderr, "%s: TLS: %s\n", spec->name, err);
			return -1;
		}
	}
	return 0;
}

/* ---- admin HTTP (/metrics, /health) ---------------------------------- */

static ssize_t admin_on_data(struct conn *c, const uint8_t *d, size_t n)
{
	struct buf resp;
	buf_init(&resp, 0);
	size_t used = 0;
	int r = metrics_http_handle(d, n, &resp, &used);
	if (r == 0) {
		buf_cleanup(&resp);
		return 0;
	}
	conn_write(c, resp.data, resp.len);
	buf_cleanup(&resp);
	conn_close(c);
	return (ssize_t)n;
}

static const struct conn_handler admin_handler = {
	.name = "admin",
	.on_data = admin_on_data,
};

static void admin_accept(struct conn *c, void *arg)
{
	UNUSED(arg);
	static const struct conn_limits lim = {
		.in_max = METRICS_HTTP_HEAD_MAX + 1,
		.out_high = 1u << 20,
		.out_max = 16u << 20,
		.idle_ms = 10000,
		.write_ms = 10000,
		.handshake_ms = 10000,
	};
	conn_set_limits(c, &lim);
	conn_set_handler(c, &admin_handler, NULL);
}

/* ---- loop statistics into metrics ------------------------------------ */

struct loop_metrics {
	struct metrics_counter *iterations, *submits, *accepted, *bytes_in, *bytes_out,
		*handshakes, *tls_failures, *errors, *timeouts;
	struct metrics_gauge *open;
	struct metrics_counter *z_started, *z_errors, *z_in_wire, *z_in_plain, *z_out_plain,
		*z_out_wire;
	struct metrics_gauge *z_active;
};

static struct loop_metrics lm;
static pthread_once_t lm_once = PTHREAD_ONCE_INIT;

static void lm_init(void)
{
	lm.iterations = metrics_counter_new("mail_loop_iterations_total",
					    "Event loop iterations.", NULL);
	lm.submits = metrics_counter_new("mail_loop_submits_total",
					 "io_uring_enter calls (submit and wait).", NULL);
	lm.accepted = metrics_counter_new("mail_connections_accepted_total",
					  "Connections accepted.", NULL);
	lm.open = metrics_gauge_new("mail_connections_open", "Connections open now.", NULL);
	lm.bytes_in = metrics_counter_new("mail_bytes_received_total",
					  "Bytes received on all connections.", NULL);
	lm.bytes_out = metrics_counter_new("mail_bytes_sent_total",
					   "Bytes sent on all connections.", NULL);
	lm.handshakes = metrics_counter_new("mail_tls_handshakes_total",
					    "TLS handshakes completed.", NULL);
	lm.tls_failures = metrics_counter_new("mail_tls_handshake_failures_total",
					      "TLS handshakes that failed.", NULL);
	lm.errors = metrics_counter_new("mail_loop_errors_total",
					"Socket and accept errors, buffer exhaustion.", NULL);
	lm.timeouts = metrics_counter_new("mail_connection_timeouts_total",
					  "Connections closed by an idle/handshake/write timeout.",
					  NULL);
	lm.z_started = metrics_counter_new("mail_compress_started_total",
					   "Connections that turned on COMPRESS=DEFLATE.", NULL);
	lm.z_active = metrics_gauge_new("mail_compress_active",
					"Connections compressing now.", NULL);
	lm.z_errors = metrics_counter_new("mail_compress_errors_total",
					  "Connections closed for corrupt compressed input.", NULL);
	lm.z_in_wire = metrics_counter_new("mail_compress_bytes_total",
					   "Bytes through COMPRESS=DEFLATE, on the wire and as plaintext.",
					   "direction=\"in\",form=\"compressed\"");
	lm.z_in_plain = metrics_counter_new("mail_compress_bytes_total", NULL,
					    "direction=\"in\",form=\"plain\"");
	lm.z_out_plain = metrics_counter_new("mail_compress_bytes_total", NULL,
					     "direction=\"out\",form=\"plain\"");
	lm.z_out_wire = metrics_counter_new("mail_compress_bytes_total", NULL,
					    "direction=\"out\",form=\"compressed\"");
}

struct thread_ctx {
	struct daemon *d;
	unsigned idx;
	struct loop *loop;
	pthread_t tid;
	struct timer stats_timer;
	struct loop_stats last;
	struct listener *admin;
	int status;
};

static void stats_flush(struct thread_ctx *t)
{
	const struct loop_stats *s = loop_get_stats(t->loop);
	metrics_add(lm.iterations, s->iterations - t->last.iterations);
	metrics_add(lm.submits, s->submits - t->last.submits);
	metrics_add(lm.accepted, s->accepted - t->last.accepted);
	metrics_gauge_add(lm.open, (int64_t)s->conns_open - (int64_t)t->last.conns_open);
	metrics_add(lm.bytes_in, s->bytes_in - t->last.bytes_in);
	metrics_add(lm.bytes_out, s->bytes_out - t->last.bytes_out);
	metrics_add(lm.handshakes, s->tls_handshakes - t->last.tls_handshakes);
	metrics_add(lm.tls_failures, s->tls_failures - t->last.tls_failures);
	metrics_add(lm.errors, s->errors - t->last.errors);
	metrics_add(lm.timeouts, s->timeouts - t->last.timeouts);
	metrics_add(lm.z_started, s->compress_started - t->last.compress_started);
	metrics_gauge_add(lm.z_active,
			  (int64_t)s->compress_active - (int64_t)t->last.compress_active);
	metrics_add(lm.z_errors, s->compress_errors - t->last.compress_errors);
	metrics_add(lm.z_in_wire, s->compress_in_wire - t->last.compress_in_wire);
	metrics_add(lm.z_in_plain, s->compress_in_plain - t->last.compress_in_plain);
	metrics_add(lm.z_out_plain, s->compress_out_plain - t->last.compress_out_plain);
	metrics_add(lm.z_out_wire, s->compress_out_wire - t->last.compress_out_wire);
	t->last = *s;
}

static void stats_timer_cb(struct timer *tm)
{
	struct thread_ctx *t = tm->arg;
	stats_flush(t);
	if (t->d->tls && t->idx == 0)
		tls_server_tick(t->d->tls, time_mono_ms());
	timer_start(t->loop, tm, 1000);
}

static struct thread_ctx *threads;
/* Guards the publication of each thread's loop against a concurrent stop. */
static pthread_mutex_t threads_mu = PTHREAD_MUTEX_INITIALIZER;
static bool stopping;

static void on_hup(void *arg)
{
	struct daemon *d = arg;
	if (!d->tls) {
		LOG_INFO("daemon", 0, "reload", "tls=off");
		return;
	}
	const char *err = NULL;
	if (tls_server_reload(d->tls, &err) < 0)
		LOG_ERROR("daemon", 0, "tls_reload_failed", "reason=\"%s\"", err);
	else
		LOG_INFO("daemon", 0, "tls_reloaded", "generation=%" PRIu64,
			 tls_server_generation(d->tls));
}

static void stop_others(struct daemon *d)
{
	pthread_mutex_lock(&threads_mu);
	stopping = true;
	for (unsigned i = 1; i < d->threads; i++)
		if (threads[i].loop)
			loop_request_stop(threads[i].loop);
	pthread_mutex_unlock(&threads_mu);
}

/* Runs on each thread's own loop when its drain begins. */
static void on_stop(void *arg)
{
	struct thread_ctx *t = arg;
	if (t->d->spec->thread_drain)
		t->d->spec->thread_drain(t->d, t->loop, t->idx);
	if (t->idx == 0)
		stop_others(t->d);
}

static int thread_setup(struct thread_ctx *t, const char **error_r)
{
	struct daemon *d = t->d;
	struct loop_config lc = {
		.drain_ms = (uint32_t)config_get_duration_ms(d->cfg, "drain.timeout"),
		.handle_signals = t->idx == 0,
	};
	struct loop *l = loop_new(&lc, error_r);
	if (!l)
		return -1;
	pthread_mutex_lock(&threads_mu);
	t->loop = l;
	if (stopping)
		loop_request_stop(l);
	pthread_mutex_unlock(&threads_mu);
	if (t->idx == 0) {
		loop_set_hup_cb(t->loop, on_hup, d);
		const char *maddr = config_get_str(d->cfg, "metrics.listen");
		if (maddr) {
			struct listener_config c = { .addr = maddr, .on_accept = admin_accept };
			t->admin = listener_open(t->loop, &c, error_r);
			if (!t->admin)
				return -1;
		}
	}
	loop_set_stop_cb(t->loop, on_stop, t);
	timer_init(&t->stats_timer, stats_timer_cb, t);
	timer_start(t->loop, &t->stats_timer, 1000);
	if (d->spec->thread_init(d, t->loop, t->idx, error_r) < 0)
		return -1;
	return 0;
}

static void thread_teardown(struct thread_ctx *t)
{
	if (!t->loop)
		return;
	timer_stop(t->loop, &t->stats_timer);
	stats_flush(t);
	if (t->d->spec->thread_done)
		t->d->spec->thread_done(t->d, t->loop, t->idx);
	listener_close(&t->admin);
	pthread_mutex_lock(&threads_mu);
	struct loop *l = t->loop;
	t->loop = NULL;
	pthread_mutex_unlock(&threads_mu);
	loop_free(&l);
}

static void *thread_main(void *arg)
{
	struct thread_ctx *t = arg;
	const char *err = NULL;
	if (thread_setup(t, &err) < 0) {
		LOG_ERROR("daemon", 0, "thread_init_failed", "thread=%u reason=\"%s\"", t->idx,
			  err ? err : "?");
		t->status = 1;
		loop_request_stop(threads[0].loop);
		thread_teardown(t);
		return NULL;
	}
	loop_run(t->loop);
	thread_teardown(t);
	return NULL;
}

int daemon_run(struct daemon *d)
{
	pthread_once(&lm_once, lm_init);
	loop_block_signals();
	threads = xcalloc(d->threads, sizeof(*threads));
	for (unsigned i = 0; i < d->threads; i++) {
		threads[i].d = d;
		threads[i].idx = i;
	}
	const char *err = NULL;
	if (thread_setup(&threads[0], &err) < 0) {
		LOG_ERROR("daemon", 0, "start_failed", "reason=\"%s\"", err ? err : "?");
		fprintf(stderr, "%s: %s\n", d->spec->name, err ? err : "start failed");
		thread_teardown(&threads[0]);
		free(threads);
		threads = NULL;
		return 1;
	}
	for (unsigned i = 1; i < d->threads; i++)
		if (pthread_create(&threads[i].tid, NULL, thread_main, &threads[i]) != 0)
			abort();
	LOG_INFO("daemon", 0, "started", "name=%s threads=%u tls=%s", d->spec->name, d->threads,
		 d->tls ? "on" : "off");
	loop_run(threads[0].loop);
	/* Thread 0 drained; make sure the others drain too. */
	stop_others(d);
	int status = 0;
	for (unsigned i = 1; i < d->threads; i++) {
		pthread_join(threads[i].tid, NULL);
		status |= threads[i].status;
	}
	thread_teardown(&threads[0]);
	free(threads);
	threads = NULL;
	workers_stop();
	LOG_INFO("daemon", 0, "exit", "status=%d", status);
	return status;
}

void daemon_cleanup(struct daemon *d)
{
	tls_server_free(&d->tls);
	config_free(&d->cfg);
	free(d->defs);
	d->defs = NULL;
	metrics_cleanup();
}
