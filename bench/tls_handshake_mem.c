#include "bench/tls_handshake_mem.h"

#include "common/base.h"
#include "common/tls.h"

#include <stdio.h>

#include <openssl/bio.h>
#include <openssl/err.h>

/* Time spent in server-side calls only: the server's cost per handshake,
 * comparable with a server thread's CPU time in the loop benchmark. */
static uint64_t server_ns;

static bool want_io(SSL *ssl, int rc)
{
	int e = SSL_get_error(ssl, rc);
	return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
}

/* One connection: handshake, one byte each way so the client reads the
 * TLS 1.3 tickets. *reused_r tells whether the offered session resumed. */
static int one_handshake(struct tls_server *srv, struct tls_client *cl,
			 SSL_SESSION *offer, SSL_SESSION **session_r,
			 bool *reused_r)
{
	uint64_t t0 = time_mono_ns();
	SSL *s = tls_server_new_ssl(srv);
	server_ns += time_mono_ns() - t0;
	SSL *c = tls_client_new_ssl(cl, "bench.invalid");
	BIO *bc, *bs;
	int ret = -1;
	if (!c || !BIO_new_bio_pair(&bc, 0, &bs, 0))
		goto out;
	SSL_set_bio(c, bc, bc);
	SSL_set_bio(s, bs, bs);
	SSL_set_max_proto_version(c, TLS1_3_VERSION);
	SSL_set_min_proto_version(c, TLS1_3_VERSION);
	if (offer && tls_client_set_session(c, offer) < 0)
		goto out;

	bool cdone = false, sdone = false;
	for (int i = 0; i < 20 && !(cdone && sdone); i++) {
		if (!cdone) {
			int rc = SSL_do_handshake(c);
			if (rc != 1 && !want_io(c, rc))
				goto out;
			cdone = rc == 1;
		}
		if (!sdone) {
			t0 = time_mono_ns();
			int rc = SSL_do_handshake(s);
			server_ns += time_mono_ns() - t0;
			if (rc != 1 && !want_io(s, rc))
				goto out;
			sdone = rc == 1;
		}
	}
	uint8_t b = 'x';
	t0 = time_mono_ns();
	int wrote = cdone && sdone ? SSL_write(s, &b, 1) : 0;
	server_ns += time_mono_ns() - t0;
	if (wrote != 1 || SSL_read(c, &b, 1) != 1)
		goto out;
	*reused_r = SSL_session_reused(c);
	if (session_r)
		*session_r = tls_client_get1_session(c);
	ret = 0;
out:
	SSL_free(c);
	t0 = time_mono_ns();
	SSL_free(s);
	server_ns += time_mono_ns() - t0;
	return ret;
}

static int run_phase(struct tls_server *srv, struct tls_client *cl,
		     SSL_SESSION *offer, int seconds, double *per_s_r,
		     double *server_per_s_r)
{
	server_ns = 0;
	uint64_t start = time_mono_ns();
	uint64_t end = start + (uint64_t)seconds * 1000000000ull;
	uint64_t n = 0, now;
	do {
		/* Check the clock every few handshakes only. */
		for (int i = 0; i < 8; i++, n++) {
			bool reused = false;
			if (one_handshake(srv, cl, offer, NULL, &reused) < 0) {
				fprintf(stderr, "bench_tls_mem: %s\n",
					tls_error_str("handshake"));
				return -1;
			}
			if (reused != (offer != NULL)) {
				fprintf(stderr, "bench_tls_mem: resumption "
						"%s\n", reused ? "unexpected"
							       : "failed");
				return -1;
			}
		}
		now = time_mono_ns();
	} while (now < end);
	*per_s_r = (double)n * 1e9 / (double)(now - start);
	*server_per_s_r = server_ns ? (double)n * 1e9 / (double)server_ns : 0;
	return 0;
}

int bench_tls_mem(const char *cert, const char *key, int seconds,
		  struct bench_tls_mem_result *res)
{
	const char *certs[] = { cert }, *keys[] = { key };
	struct tls_server_config cfg = {
		.cert_files = certs,
		.key_files = keys,
		.n_certs = 1,
	};
	const char *error = NULL;
	struct tls_server *srv = tls_server_new(&cfg, &error);
	if (!srv) {
		fprintf(stderr, "bench_tls_mem: %s\n", error);
		return -1;
	}
	struct tls_client *cl = tls_client_new(NULL, NULL, NULL, &error);
	if (!cl) {
		fprintf(stderr, "bench_tls_mem: %s\n", error);
		tls_server_free(&srv);
		return -1;
	}
	if (seconds < 1)
		seconds = 1;

	int ret = -1;
	SSL_SESSION *session = NULL;
	bool reused;
	if (run_phase(srv, cl, NULL, seconds, &res->full_per_s, &res->server_full_per_s) < 0 ||
	    one_handshake(srv, cl, NULL, &session, &reused) < 0 || !session) {
		if (!session)
			fprintf(stderr, "bench_tls_mem: no session ticket\n");
		goto out;
	}
	/* TLS 1.3 tickets are meant for one use, but the server accepts a
	 * ticket any number of times: reusing one keeps the loop honest
	 * about the server's cost (decrypt + PSK-DHE handshake). */
	if (run_phase(srv, cl, session, seconds, &res->resumed_per_s,
		      &res->server_resumed_per_s) < 0)
		goto out;
	ret = 0;
out:
	SSL_SESSION_free(session);
	tls_client_free(&cl);
	tls_server_free(&srv);
	ERR_clear_error();
	return ret;
}
