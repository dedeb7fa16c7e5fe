/* In-memory TLS handshake throughput (no sockets, one thread). */
#ifndef BENCH_TLS_HANDSHAKE_MEM_H
#define BENCH_TLS_HANDSHAKE_MEM_H

/* Measures TLS 1.3 handshakes between a client and a server built by
 * common/tls (the server uses cert/key, the client does not verify),
 * pumping bytes through a BIO pair on the calling thread. Runs `seconds`
 * (at least 1) of full handshakes, then `seconds` of ticket resumptions,
 * and stores the rates in *res. Each handshake
 * includes creating and freeing both SSL objects and one round of
 * application data (which delivers the ticket). Returns 0, or -1 with a
 * message on stderr if the setup or any handshake fails, or a resumption
 * is not actually resumed. */
struct bench_tls_mem_result {
	double full_per_s, resumed_per_s; /* both sides on one thread */
	/* Handshakes per second of time spent in server-side calls only. */
	double server_full_per_s, server_resumed_per_s;
};
int bench_tls_mem(const char *cert, const char *key, int seconds,
		  struct bench_tls_mem_result *res);

#endif
