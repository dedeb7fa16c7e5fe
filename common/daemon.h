/* What every daemon's main() shares: command line (--config, --set,
 * --print-config), the common config keys, logging, one loop per thread,
 * the TLS server context (reloaded on SIGHUP), the Prometheus admin port,
 * and graceful drain on SIGTERM/SIGINT.
 *
 * Common keys (each daemon adds its own):
 *   log.level            debug|info|warn|error (info)
 *   threads              loop threads (1)
 *   metrics.listen       admin HTTP address for /metrics and /health (unset: off)
 *   drain.timeout        SIGTERM drain limit (30s)
 *   tls.cert, tls.key    repeatable: PEM chain (leaf first) and key; the first
 *                        pair is the default certificate, others by SNI
 *   tls.client_ca        require client certificates signed by this CA
 *   tls.ticket_key_file  shared ticket secret for all proxies (optional)
 *   tls.ticket_rotate    ticket key rotation period (1h)
 */
#ifndef COMMON_DAEMON_H
#define COMMON_DAEMON_H

#include "common/config.h"
#include "common/loop.h"

struct tls_server;
struct daemon;

/* Called on each loop thread after its loop exists (thread 0 first, on the
 * main thread). Open listeners etc. here; return 0 or -1 with error_r. */
typedef int (*daemon_thread_fn)(struct daemon *d, struct loop *l, unsigned idx,
				const char **error_r);
/* Called on each loop thread after its loop stopped, before loop_free. */
typedef void (*daemon_thread_done_fn)(struct daemon *d, struct loop *l, unsigned idx);

struct daemon_spec {
	const char *name;                /* "mailnode" */
	const char *summary;             /* one line for --help */
	const struct config_def *defs;   /* daemon-specific keys */
	size_t n_defs;
	daemon_thread_fn thread_init;
	daemon_thread_done_fn thread_done; /* optional */
	/* Optional: this thread's loop began draining (SIGTERM); the loop
	 * still runs, so goodbyes to Redis or peers can be sent here. */
	daemon_thread_done_fn thread_drain;
	void *arg;
};

struct daemon {
	const struct daemon_spec *spec;
	struct config *cfg;
	struct config_def *defs; /* common + daemon keys, owned */
	struct tls_server *tls;  /* NULL when no tls.cert is configured */
	unsigned threads;
	void *arg;
	uint64_t started_ms;     /* monotonic */
};

/* Block the daemon's signals (call it first in main, before anything
 * starts a thread), parse argv and the config, set up logging and TLS.
 * Returns 0 to go on,
 * 1 when the process should exit 0 (--help, --print-config), -1 on error
 * (already reported on stderr). */
int daemon_init(struct daemon *d, const struct daemon_spec *spec, int argc, char **argv);
/* Run the loops until drained; returns the exit status. */
int daemon_run(struct daemon *d);
void daemon_cleanup(struct daemon *d);

#endif
