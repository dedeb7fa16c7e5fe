/* Echo server and load clients on the event loop, for measuring the
 * runtime itself (echo requests/s, syscalls per request, TLS handshakes
 * per second through the loop) and as a TLS peer for tests. */
#ifndef BENCH_ECHO_H
#define BENCH_ECHO_H

#include <stdbool.h>
#include <stdint.h>

#include "bench/hist.h"

struct loop;
struct tls_server;

/* Echo service: `plain` echoes bytes; `tls` is implicit TLS then echo;
 * `starttls` speaks a line protocol ("STARTTLS" -> "OK begin TLS", any
 * other line -> "ECHO <line>") and echoes raw bytes once upgraded. Any
 * address may be NULL. */
struct echo_server_config {
	const char *plain_addr;
	const char *tls_addr;
	const char *starttls_addr;
	struct tls_server *tls;
};

struct echo_server;
struct echo_server *echo_server_new(struct loop *l, const struct echo_server_config *cfg,
				    const char **error_r);
/* Ports bound (0 for a listener not configured). */
void echo_server_ports(const struct echo_server *s, uint16_t *plain, uint16_t *tls,
		       uint16_t *starttls);
uint64_t echo_server_bytes(const struct echo_server *s);
void echo_server_free(struct echo_server **s);

enum echo_mode {
	ECHO_MODE_REQUESTS,   /* request/response on long-lived connections */
	ECHO_MODE_HANDSHAKES, /* connect, TLS handshake, 1 round trip, close */
};

struct echo_client_config {
	const char *addr;
	enum echo_mode mode;
	unsigned conns;
	unsigned msg_size;
	unsigned seconds;
	uint64_t max_requests; /* 0 = bounded by time only */
	bool tls;
	bool resume;           /* handshakes: resume with the last ticket */
	const char *tls_name;
	bool progress;         /* a progress line on stderr each second */
};

struct echo_result {
	uint64_t requests;
	uint64_t errors;
	uint64_t resumed;
	double elapsed_s;
	uint64_t submits; /* io_uring_enter calls of the client loop */
	struct hist latency_us;
};

/* Run the load on loop `l` until the time or count bound; 0 or -1. */
int echo_client_run(struct loop *l, const struct echo_client_config *cfg,
		    struct echo_result *res, const char **error_r);

#endif
