/* mailbench: the bundled load generator. IMAP, POP3 and idle-session
 * loads against any server (bench/mailload.h), and runtime measurements
 * (echo, TLS handshakes, the mailbox store). */
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/echo.h"
#include "bench/mailload.h"
#include "bench/store_bench.h"
#include "bench/tls_handshake_mem.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/tls.h"

static void usage(FILE *out)
{
	fprintf(out,
		"usage: mailbench COMMAND [options]\n"
		"\n"
		"commands:\n"
		"  imap         IMAP load: a weighted command mix (or logins) from many clients\n"
		"               and users, --check, --populate N to create users and fill INBOXes\n"
		"  pop3         POP3 load: STAT/LIST/UIDL/RETR/TOP/DELE mix (or logins)\n"
		"  idle         N IMAP sessions LOGIN, SELECT, IDLE and stay; server RSS per\n"
		"               session with --pid\n"
		"               (mailbench imap|pop3|idle --help for their options)\n"
		"  echo-server  run an echo service (plain, implicit TLS, STARTTLS line protocol)\n"
		"      --listen ADDR --tls-listen ADDR --starttls-listen ADDR\n"
		"      --cert FILE --key FILE (repeat for SNI) --port-file FILE\n"
		"  echo         request/response load: --target ADDR | --self,\n"
		"      --conns N (100) --size BYTES (64) --seconds S (10) --requests N\n"
		"      --tls [--servername NAME] --json --progress\n"
		"  store        the mailbox store on this disk: synced deliveries/s at 1, 8, 32\n"
		"      writers for 4 KiB and 100 KiB next to raw RocksDB synced puts, fetches/s,\n"
		"      bytes per message: --dir DIR (scratch, removed) --seconds S (3)\n"
		"  tls          TLS handshakes per second through the loop: --target ADDR | --self,\n"
		"      --conns N (16) --seconds S (10) [--resume]; with --self and --cert/--key\n"
		"      also measures the same handshakes in memory for comparison\n"
		"\n"
		"--self starts the server on a second thread of this process (127.0.0.1,\n"
		"its own io_uring) and reports its io_uring_enter calls per request.\n");
}

struct opts {
	const char *listen, *tls_listen, *starttls_listen, *port_file, *target, *servername, *dir;
	const char *certs[8], *keys[8];
	size_t ncert, nkey;
	unsigned conns, size, seconds;
	uint64_t requests;
	bool tls, self, json, progress, resume;
};

static int parse(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{ "listen", required_argument, 0, 'l' },
		{ "tls-listen", required_argument, 0, 'L' },
		{ "starttls-listen", required_argument, 0, 'S' },
		{ "cert", required_argument, 0, 'c' },
		{ "key", required_argument, 0, 'k' },
		{ "port-file", required_argument, 0, 'p' },
		{ "target", required_argument, 0, 't' },
		{ "servername", required_argument, 0, 'n' },
		{ "conns", required_argument, 0, 'C' },
		{ "size", required_argument, 0, 'z' },
		{ "seconds", required_argument, 0, 's' },
		{ "requests", required_argument, 0, 'r' },
		{ "tls", no_argument, 0, 'T' },
		{ "self", no_argument, 0, 'x' },
		{ "json", no_argument, 0, 'j' },
		{ "progress", no_argument, 0, 'P' },
		{ "resume", no_argument, 0, 'R' },
		{ "dir", required_argument, 0, 'd' },
		{ "help", no_argument, 0, 'h' },
		{ 0, 0, 0, 0 },
	};
	int ch;
	optind = 2;
	while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (ch) {
		case 'l': o->listen = optarg; break;
		case 'L': o->tls_listen = optarg; break;
		case 'S': o->starttls_listen = optarg; break;
		case 'c':
			if (o->ncert < ARRAY_LEN(o->certs))
				o->certs[o->ncert++] = optarg;
			break;
		case 'k':
			if (o->nkey < ARRAY_LEN(o->keys))
				o->keys[o->nkey++] = optarg;
			break;
		case 'p': o->port_file = optarg; break;
		case 't': o->target = optarg; break;
		case 'n': o->servername = optarg; break;
		case 'C': o->conns = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'z': o->size = (unsigned)strtoul(optarg, NULL, 10); break;
		case 's': o->seconds = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'r': o->requests = strtoull(optarg, NULL, 10); break;
		case 'T': o->tls = true; break;
		case 'x': o->self = true; break;
		case 'j': o->json = true; break;
		case 'P': o->progress = true; break;
		case 'R': o->resume = true; break;
		case 'd': o->dir = optarg; break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); return -1;
		}
	}
	if (o->ncert != o->nkey) {
		fprintf(stderr, "mailbench: give one --key per --cert\n");
		return -1;
	}
	return 0;
}

static struct tls_server *make_tls(const struct opts *o)
{
	if (!o->ncert)
		return NULL;
	const char *err = NULL;
	struct tls_server_config tc = { .cert_files = o->certs, .key_files = o->keys,
					.n_certs = o->ncert };
	struct tls_server *ts = tls_server_new(&tc, &err);
	if (!ts) {
		fprintf(stderr, "mailbench: TLS: %s\n", err);
		exit(1);
	}
	return ts;
}

/* ---- echo-server ---------------------------------------------------- */

static struct tls_server *hup_tls;

static void on_hup(void *arg)
{
	UNUSED(arg);
	const char *err = NULL;
	if (hup_tls && tls_server_reload(hup_tls, &err) < 0)
		LOG_ERROR("echo", 0, "tls_reload_failed", "reason=\"%s\"", err);
	else
		LOG_INFO("echo", 0, "tls_reloaded", NULL);
}

static int cmd_echo_server(struct opts *o)
{
	loop_block_signals();
	const char *err = NULL;
	struct loop_config lc = { .handle_signals = true, .drain_ms = 5000 };
	struct loop *l = loop_new(&lc, &err);
	if (!l) {
		fprintf(stderr, "mailbench: %s\n", err);
		return 1;
	}
	struct tls_server *ts = make_tls(o);
	hup_tls = ts;
	loop_set_hup_cb(l, on_hup, NULL);
	struct echo_server_config ec = { .plain_addr = o->listen, .tls_addr = o->tls_listen,
					 .starttls_addr = o->starttls_listen, .tls = ts };
	struct echo_server *es = echo_server_new(l, &ec, &err);
	if (!es) {
		fprintf(stderr, "mailbench: %s\n", err);
		return 1;
	}
	uint16_t p, t, s;
	echo_server_ports(es, &p, &t, &s);
	if (o->port_file) {
		char tmp[4096];
		snprintf(tmp, sizeof(tmp), "%s.tmp", o->port_file);
		FILE *f = fopen(tmp, "w");
		if (!f || fprintf(f, "plain=%u\ntls=%u\nstarttls=%u\n", p, t, s) < 0 ||
		    fclose(f) != 0 || rename(tmp, o->port_file) != 0) {
			fprintf(stderr, "mailbench: cannot write %s\n", o->port_file);
			return 1;
		}
	}
	LOG_INFO("echo", 0, "listening", "plain=%u tls=%u starttls=%u", p, t, s);
	loop_run(l);
	echo_server_free(&es);
	loop_free(&l);
	tls_server_free(&ts);
	return 0;
}

/* ---- in-process server for --self ------------------------------------ */

struct self_server {
	pthread_t tid;
	struct loop *loop;
	struct echo_server *es;
	struct tls_server *ts;
	uint16_t plain, tls;
	struct loop_stats stats;
	double cpu_s; /* the server thread's CPU time while it ran */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool ready;
};

static void *self_main(void *arg)
{
	struct self_server *ss = arg;
	const char *err = NULL;
	struct loop_config lc = { .drain_ms = 2000, .buf_count = 1024 };
	ss->loop = loop_new(&lc, &err);
	if (!ss->loop) {
		fprintf(stderr, "mailbench: %s\n", err);
		exit(1);
	}
	struct echo_server_config ec = { .plain_addr = "127.0.0.1:0",
					 .tls_addr = ss->ts ? "127.0.0.1:0" : NULL,
					 .tls = ss->ts };
	ss->es = echo_server_new(ss->loop, &ec, &err);
	if (!ss->es) {
		fprintf(stderr, "mailbench: %s\n", err);
		exit(1);
	}
	uint16_t st;
	echo_server_ports(ss->es, &ss->plain, &ss->tls, &st);
	pthread_mutex_lock(&ss->mu);
	ss->ready = true;
	pthread_cond_signal(&ss->cv);
	pthread_mutex_unlock(&ss->mu);
	struct timespec c0, c1;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
	loop_run(ss->loop);
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
	ss->cpu_s = (double)(c1.tv_sec - c0.tv_sec) + (double)(c1.tv_nsec - c0.tv_nsec) / 1e9;
	ss->stats = *loop_get_stats(ss->loop);
	echo_server_free(&ss->es);
	loop_free(&ss->loop);
	return NULL;
}

static void self_start(struct self_server *ss, struct tls_server *ts)
{
	memset(ss, 0, sizeof(*ss));
	ss->ts = ts;
	pthread_mutex_init(&ss->mu, NULL);
	pthread_cond_init(&ss->cv, NULL);
	pthread_create(&ss->tid, NULL, self_main, ss);
	pthread_mutex_lock(&ss->mu);
	while (!ss->ready)
		pthread_cond_wait(&ss->cv, &ss->mu);
	pthread_mutex_unlock(&ss->mu);
}

static void self_stop(struct self_server *ss)
{
	loop_request_stop(ss->loop);
	pthread_join(ss->tid, NULL);
}

/* ---- reports --------------------------------------------------------- */

static void report(const char *what, const struct opts *o, const struct echo_result *r,
		   const struct self_server *ss, const struct bench_tls_mem_result *mem)
{
	/* Server work per CPU-second: through the loop vs. in memory. */
	double srv_rate = ss && ss->cpu_s > 0 ? (double)r->requests / ss->cpu_s : 0;
	double mem_srv = mem ? (o->resume ? mem->server_resumed_per_s : mem->server_full_per_s)
			     : 0;
	double rate = r->elapsed_s > 0 ? (double)r->requests / r->elapsed_s : 0;
	double client_spr = r->requests ? (double)r->submits / (double)r->requests : 0;
	double server_spr = (ss && r->requests) ? (double)ss->stats.submits / (double)r->requests
						: -1;
	const struct hist *h = &r->latency_us;
	if (o->json) {
		printf("{\"bench\":\"%s\",\"conns\":%u,\"size\":%u,\"tls\":%s,\"resume\":%s,"
		       "\"requests\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"resumed\":%" PRIu64
		       ",\"seconds\":%.3f,\"per_second\":%.1f,"
		       "\"latency_us\":{\"p50\":%" PRIu64 ",\"p90\":%" PRIu64 ",\"p99\":%" PRIu64
		       ",\"p999\":%" PRIu64 ",\"max\":%" PRIu64 ",\"mean\":%.1f},"
		       "\"client_enter_per_request\":%.3f,\"server_enter_per_request\":%.3f,"
		       "\"server_cpu_s\":%.3f,\"server_per_cpu_second\":%.1f",
		       what, o->conns, o->size, o->tls ? "true" : "false",
		       o->resume ? "true" : "false", r->requests, r->errors, r->resumed,
		       r->elapsed_s, rate, hist_quantile(h, 0.5), hist_quantile(h, 0.9),
		       hist_quantile(h, 0.99), hist_quantile(h, 0.999), h->count ? h->max : 0,
		       hist_mean(h), client_spr, server_spr, ss ? ss->cpu_s : 0, srv_rate);
		if (mem)
			printf(",\"memory_full_per_second\":%.1f,\"memory_resumed_per_second\":%.1f,"
			       "\"memory_server_full_per_cpu_second\":%.1f,"
			       "\"memory_server_resumed_per_cpu_second\":%.1f",
			       mem->full_per_s, mem->resumed_per_s, mem->server_full_per_s,
			       mem->server_resumed_per_s);
		printf("}\n");
		return;
	}
	printf("%-10s conns=%u size=%u tls=%s%s\n", what, o->conns, o->size,
	       o->tls ? "yes" : "no", o->resume ? " resume" : "");
	printf("  requests   %" PRIu64 " in %.2f s = %.0f/s, errors %" PRIu64 "\n", r->requests,
	       r->elapsed_s, rate, r->errors);
	if (o->resume)
		printf("  resumed    %" PRIu64 "\n", r->resumed);
	printf("  latency us p50 %" PRIu64 "  p90 %" PRIu64 "  p99 %" PRIu64 "  p99.9 %" PRIu64
	       "  max %" PRIu64 "\n",
	       hist_quantile(h, 0.5), hist_quantile(h, 0.9), hist_quantile(h, 0.99),
	       hist_quantile(h, 0.999), h->count ? h->max : 0);
	printf("  io_uring_enter per request: client %.3f", client_spr);
	if (server_spr >= 0)
		printf(", server %.3f", server_spr);
	printf("\n");
	if (ss)
		printf("  server     %.2f CPU-s, %.0f requests per server CPU-second\n", ss->cpu_s,
		       srv_rate);
	if (mem) {
		printf("  in memory (same BoringSSL, no sockets, both sides one thread): "
		       "%.0f full/s, %.0f resumed/s\n",
		       mem->full_per_s, mem->resumed_per_s);
		printf("  server side only, in memory: %.0f full, %.0f resumed per CPU-second\n",
		       mem->server_full_per_s, mem->server_resumed_per_s);
		if (srv_rate > 0 && mem_srv > 0)
			printf("  loop overhead vs in-memory server: %.1f %%\n",
			       100.0 * (1.0 - srv_rate / mem_srv));
	}
}

static int cmd_load(struct opts *o, enum echo_mode mode)
{
	if (!o->target && !o->self) {
		fprintf(stderr, "mailbench: --target ADDR or --self is required\n");
		return 2;
	}
	if (mode == ECHO_MODE_HANDSHAKES)
		o->tls = true;
	if (!o->conns)
		o->conns = mode == ECHO_MODE_HANDSHAKES ? 16 : 100;
	if (!o->size)
		o->size = 64;
	if (!o->seconds)
		o->seconds = 10;
	signal(SIGPIPE, SIG_IGN);
	struct self_server ss;
	struct tls_server *ts = NULL;
	char target[64];
	if (o->self) {
		if (o->tls) {
			ts = make_tls(o);
			if (!ts) {
				fprintf(stderr, "mailbench: --self with TLS needs --cert and --key\n");
				return 2;
			}
		}
		self_start(&ss, ts);
		snprintf(target, sizeof(target), "127.0.0.1:%u", o->tls ? ss.tls : ss.plain);
		o->target = target;
	}
	const char *err = NULL;
	struct loop_config lc = { .buf_count = 1024 };
	struct loop *l = loop_new(&lc, &err);
	if (!l) {
		fprintf(stderr, "mailbench: %s\n", err);
		return 1;
	}
	struct echo_client_config cc = {
		.addr = o->target, .mode = mode, .conns = o->conns, .msg_size = o->size,
		.seconds = o->seconds, .max_requests = o->requests, .tls = o->tls,
		.resume = o->resume, .tls_name = o->servername, .progress = o->progress,
	};
	struct echo_result *res = xcalloc(1, sizeof(*res));
	int rc = echo_client_run(l, &cc, res, &err);
	if (rc < 0)
		fprintf(stderr, "mailbench: %s\n", err);
	loop_free(&l);
	struct bench_tls_mem_result mem;
	bool have_mem = false;
	if (o->self)
		self_stop(&ss);
	if (rc == 0 && mode == ECHO_MODE_HANDSHAKES && o->ncert)
		have_mem = bench_tls_mem(o->certs[0], o->keys[0], (int)MIN(o->seconds, 5u),
					 &mem) == 0;
	if (rc == 0)
		report(mode == ECHO_MODE_HANDSHAKES ? "tls" : "echo", o, res,
		       o->self ? &ss : NULL, have_mem ? &mem : NULL);
	if (rc == 0 && res->errors)
		rc = -1;
	free(res);
	tls_server_free(&ts);
	return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	log_init("mailbench", LOG_LEVEL_WARN);
	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (strcmp(argv[1], "imap") == 0 || strcmp(argv[1], "pop3") == 0 ||
	    strcmp(argv[1], "idle") == 0)
		return load_cli_main(argc, argv);
	struct opts o = { 0 };
	if (parse(argc, argv, &o) < 0)
		return 2;
	if (strcmp(argv[1], "echo-server") == 0) {
		log_init("mailbench", LOG_LEVEL_INFO);
		return cmd_echo_server(&o);
	}
	if (strcmp(argv[1], "echo") == 0)
		return cmd_load(&o, ECHO_MODE_REQUESTS);
	if (strcmp(argv[1], "tls") == 0)
		return cmd_load(&o, ECHO_MODE_HANDSHAKES);
	if (strcmp(argv[1], "store") == 0) {
		if (!o.dir) {
			fprintf(stderr, "mailbench: store needs --dir DIR (a scratch directory)\n");
			return 2;
		}
		struct bench_store_config sc = { .dir = o.dir, .seconds = o.seconds };
		return bench_store(&sc, stdout) == 0 ? 0 : 1;
	}
	fprintf(stderr, "mailbench: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
