/* common/tls: contexts, SNI, tickets, reload, mutual TLS. Handshakes run in
 * memory over BIO pairs; certificates are made at test time with the
 * `openssl` command-line tool (exit 77 if it is missing). */
#include "common/base.h"
#include "common/tls.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pool.h>
#include <openssl/x509.h>

static int failures;
static char dir[512];

#define CHECK(cond)                                                         \
	do {                                                                \
		if (!(cond)) {                                              \
			fprintf(stderr, "%s:%d: FAILED: %s\n", __FILE__,    \
				__LINE__, #cond);                           \
			failures++;                                         \
		}                                                           \
	} while (0)

#define CHECK_STR(a, b)                                                     \
	do {                                                                \
		const char *a_ = (a), *b_ = (b);                            \
		if (strcmp(a_, b_) != 0) {                                  \
			fprintf(stderr, "%s:%d: FAILED: %s == \"%s\", "     \
				"want \"%s\"\n", __FILE__, __LINE__, #a,    \
				a_, b_);                                    \
			failures++;                                         \
		}                                                           \
	} while (0)

static const char *path(const char *name)
{
	static char bufs[8][640];
	static int next;
	char *p = bufs[next++ % 8];
	snprintf(p, sizeof(bufs[0]), "%s/%s", dir, name);
	return p;
}

/* ---- certificate generation ------------------------------------------ */

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	char full[4700];
	snprintf(full, sizeof(full), "cd '%s' && { %s ; } >>gen.log 2>&1", dir,
		 cmd);
	int rc = system(full);
	if (rc != 0) {
		fprintf(stderr, "command failed (%d): %s\n  see %s/gen.log\n",
			rc, cmd, dir);
		return -1;
	}
	return 0;
}

static const char ext_cnf[] =
	"[req]\ndistinguished_name=dn\n[dn]\n"
	"[v3_ca]\nbasicConstraints=critical,CA:TRUE\n"
	"keyUsage=critical,keyCertSign,cRLSign\n"
	"subjectKeyIdentifier=hash\n"
	"[v3_int]\nbasicConstraints=critical,CA:TRUE,pathlen:0\n"
	"keyUsage=critical,keyCertSign,cRLSign\n"
	"subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n"
	"[v3_mail]\nbasicConstraints=critical,CA:FALSE\n"
	"keyUsage=critical,digitalSignature,keyEncipherment\n"
	"extendedKeyUsage=serverAuth\nsubjectAltName=DNS:mail.example.test\n"
	"[v3_other]\nbasicConstraints=critical,CA:FALSE\n"
	"keyUsage=critical,digitalSignature\n"
	"extendedKeyUsage=serverAuth\nsubjectAltName=DNS:*.other.test\n"
	"[v3_client]\nbasicConstraints=critical,CA:FALSE\n"
	"keyUsage=critical,digitalSignature\n"
	"extendedKeyUsage=clientAuth\nsubjectAltName=DNS:node1.cluster.test\n";

#define RSA_KEY "-newkey rsa:2048"
#define EC_KEY "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1"

/* name.key + name.crt signed by the intermediate, and name.pem = leaf +
 * intermediate (the chain file the server loads). */
static int leaf(const char *name, const char *keyopt, const char *subj,
		const char *ext, int serial)
{
	return sh("openssl req -new %s -nodes -keyout %s.key -out %s.csr "
		  "-subj '%s' -config ext.cnf",
		  keyopt, name, name, subj) ||
	       sh("openssl x509 -req -in %s.csr -CA int.pem -CAkey int.key "
		  "-set_serial %d -days 30 -out %s.crt -extfile ext.cnf "
		  "-extensions %s",
		  name, serial, name, ext) ||
	       sh("cat %s.crt int.pem > %s.pem", name, name);
}

static int make_certs(void)
{
	FILE *f = fopen(path("ext.cnf"), "w");
	if (!f)
		return -1;
	fputs(ext_cnf, f);
	fclose(f);
	if (sh("openssl req -x509 -new " RSA_KEY " -nodes -keyout ca.key "
	       "-out ca.pem -days 30 -subj '/CN=Test Root CA' -config ext.cnf "
	       "-extensions v3_ca") ||
	    sh("openssl req -new " EC_KEY " -nodes -keyout int.key -out int.csr "
	       "-subj '/CN=Test Intermediate CA' -config ext.cnf") ||
	    sh("openssl x509 -req -in int.csr -CA ca.pem -CAkey ca.key "
	       "-set_serial 2 -days 30 -out int.pem -extfile ext.cnf "
	       "-extensions v3_int") ||
	    leaf("mail", RSA_KEY, "/O=First/CN=mail.example.test", "v3_mail",
		 10) ||
	    leaf("mail2", RSA_KEY, "/O=Second/CN=mail.example.test",
		 "v3_mail", 11) ||
	    leaf("other", EC_KEY, "/CN=*.other.test", "v3_other", 12) ||
	    leaf("client", EC_KEY, "/CN=node1.cluster.test", "v3_client",
		 13) ||
	    sh("openssl req -x509 -new " EC_KEY " -nodes -keyout rogue.key "
	       "-out rogue.pem -days 30 -subj '/CN=node1.cluster.test' "
	       "-config ext.cnf -extensions v3_client") ||
	    sh("openssl rand 48 > ticket.key && openssl rand 48 > ticket2.key"))
		return -1;
	return 0;
}

/* ---- in-memory handshakes -------------------------------------------- */

static bool want_io(SSL *ssl, int rc)
{
	int e = SSL_get_error(ssl, rc);
	return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
}

/* Runs both sides over a BIO pair until both finished the handshake, then
 * lets each read post-handshake messages (TLS 1.3 tickets, alerts). */
static bool pump(SSL *c, SSL *s)
{
	BIO *bc, *bs;
	if (!BIO_new_bio_pair(&bc, 0, &bs, 0))
		abort();
	SSL_set_bio(c, bc, bc);
	SSL_set_bio(s, bs, bs);
	bool cdone = false, sdone = false;
	for (int i = 0; i < 50 && !(cdone && sdone); i++) {
		if (!cdone) {
			int rc = SSL_do_handshake(c);
			if (rc == 1)
				cdone = true;
			else if (!want_io(c, rc))
				return false;
		}
		if (!sdone) {
			int rc = SSL_do_handshake(s);
			if (rc == 1)
				sdone = true;
			else if (!want_io(s, rc))
				return false;
		}
	}
	if (!cdone || !sdone)
		return false;
	/* Application data both ways; this also processes tickets and any
	 * late alert (a TLS 1.3 server rejecting the client certificate). */
	uint8_t buf[16];
	if (SSL_write(c, "ping", 4) != 4)
		return false;
	if (SSL_read(s, buf, sizeof(buf)) != 4 || memcmp(buf, "ping", 4))
		return false;
	if (SSL_write(s, "pong", 4) != 4)
		return false;
	if (SSL_read(c, buf, sizeof(buf)) != 4 || memcmp(buf, "pong", 4))
		return false;
	int rc = SSL_read(c, buf, sizeof(buf));
	return rc < 0 && want_io(c, rc);
}

struct hs {
	bool ok;
	bool reused;
	char version[16];
	char cipher[64];
	char cert_name[256];	/* server: tls_cert_name */
	bool is_default;
	char leaf[256];		/* client: peer leaf subject */
	char client_leaf[256];	/* server: peer (client) leaf subject */
	size_t chain_len;
	long verify;
	SSL_SESSION *sess;	/* newest session the client got */
};

static void subject(X509 *x, char *out, size_t size)
{
	out[0] = '\0';
	if (x)
		X509_NAME_oneline(X509_get_subject_name(x), out, (int)size);
	X509_free(x);
}

static void run_hs(SSL *s, struct tls_client *cl, const char *sni,
		   SSL_SESSION *offer, uint16_t max_version, struct hs *r)
{
	memset(r, 0, sizeof(*r));
	SSL *c = tls_client_new_ssl(cl, sni);
	if (!c)
		abort();
	if (max_version)
		SSL_set_max_proto_version(c, max_version);
	if (offer)
		CHECK(tls_client_set_session(c, offer) == 0);
	r->ok = pump(c, s);
	r->reused = SSL_session_reused(c);
	snprintf(r->version, sizeof(r->version), "%s", tls_version_str(c));
	snprintf(r->cipher, sizeof(r->cipher), "%s", tls_cipher_str(c));
	snprintf(r->cert_name, sizeof(r->cert_name), "%s", tls_cert_name(s));
	r->is_default = tls_cert_is_default(s);
	subject(SSL_get_peer_certificate(c), r->leaf, sizeof(r->leaf));
	subject(SSL_get_peer_certificate(s), r->client_leaf,
		sizeof(r->client_leaf));
	const STACK_OF(CRYPTO_BUFFER) *chain = SSL_get0_peer_certificates(c);
	r->chain_len = chain ? sk_CRYPTO_BUFFER_num(chain) : 0;
	r->verify = SSL_get_verify_result(c);
	r->sess = tls_client_get1_session(c);
	SSL_free(c);
	SSL_free(s);
	ERR_clear_error();
}

static void hs_cleanup(struct hs *r)
{
	SSL_SESSION_free(r->sess);
	r->sess = NULL;
}

static void connect_to(struct tls_server *srv, struct tls_client *cl,
		       const char *sni, SSL_SESSION *offer,
		       uint16_t max_version, struct hs *r)
{
	run_hs(tls_server_new_ssl(srv), cl, sni, offer, max_version, r);
}

#define MAIL_SUBJ "/O=First/CN=mail.example.test"
#define MAIL2_SUBJ "/O=Second/CN=mail.example.test"
#define OTHER_SUBJ "/CN=*.other.test"

static struct tls_server *server_new(const char *c0, const char *k0,
				     const char *ticket_file,
				     const char *client_ca)
{
	const char *certs[] = { c0, path("other.pem") };
	const char *keys[] = { k0, path("other.key") };
	struct tls_server_config cfg = {
		.cert_files = certs,
		.key_files = keys,
		.n_certs = 2,
		.ticket_key_file = ticket_file,
		.client_ca_file = client_ca,
	};
	const char *error = NULL;
	struct tls_server *s = tls_server_new(&cfg, &error);
	if (!s) {
		fprintf(stderr, "tls_server_new: %s\n", error);
		abort();
	}
	return s;
}

static struct tls_client *client_new(const char *ca, const char *cert,
				     const char *key)
{
	const char *error = NULL;
	struct tls_client *c = tls_client_new(ca, cert, key, &error);
	if (!c) {
		fprintf(stderr, "tls_client_new: %s\n", error);
		abort();
	}
	return c;
}

/* ---- tests ----------------------------------------------------------- */

static void test_versions(void)
{
	struct tls_server *srv =
		server_new(path("mail.pem"), path("mail.key"), NULL, NULL);
	struct tls_client *cl = client_new(path("ca.pem"), NULL, NULL);
	struct hs r;

	connect_to(srv, cl, "mail.example.test", NULL, 0, &r);
	CHECK(r.ok);
	CHECK_STR(r.version, "TLSv1.3");
	CHECK(strncmp(r.cipher, "TLS_", 4) == 0);
	CHECK_STR(r.leaf, MAIL_SUBJ);
	CHECK(r.chain_len == 2);	/* leaf + intermediate */
	CHECK(r.verify == X509_V_OK);
	CHECK(!r.reused);
	hs_cleanup(&r);

	connect_to(srv, cl, "mail.example.test", NULL, TLS1_2_VERSION, &r);
	CHECK(r.ok);
	CHECK_STR(r.version, "TLSv1.2");
	CHECK(strncmp(r.cipher, "ECDHE-RSA-", 10) == 0);
	CHECK(strstr(r.cipher, "GCM") || strstr(r.cipher, "CHACHA20"));
	CHECK(r.chain_len == 2);
	CHECK(r.verify == X509_V_OK);
	hs_cleanup(&r);

	connect_to(srv, cl, "x.other.test", NULL, TLS1_2_VERSION, &r);
	CHECK(r.ok);
	CHECK(strncmp(r.cipher, "ECDHE-ECDSA-", 12) == 0);
	hs_cleanup(&r);

	/* A TLS 1.1-only client (and a TLS 1.0 one) is refused. */
	for (uint16_t v = TLS1_VERSION; v <= TLS1_1_VERSION; v++) {
		SSL_CTX *old = SSL_CTX_new(TLS_method());
		SSL_CTX_set_min_proto_version(old, v);
		SSL_CTX_set_max_proto_version(old, v);
		SSL *c = SSL_new(old);
		SSL_set_connect_state(c);
		SSL *s = tls_server_new_ssl(srv);
		CHECK(!pump(c, s));
		/* Refused by the server, not by a misconfigured client. */
		CHECK(ERR_GET_REASON(ERR_peek_error()) ==
		      SSL_R_UNSUPPORTED_PROTOCOL);
		if (v == TLS1_1_VERSION)
			printf("  TLS 1.1 client: %s\n",
			       tls_error_str("handshake"));
		SSL_free(c);
		SSL_free(s);
		SSL_CTX_free(old);
		ERR_clear_error();
	}

	/* A client that verifies rejects a name the certificate lacks. */
	connect_to(srv, cl, "imap.example.test", NULL, 0, &r);
	CHECK(!r.ok);
	hs_cleanup(&r);

	tls_client_free(&cl);
	CHECK(cl == NULL);
	tls_server_free(&srv);
	CHECK(srv == NULL);
	tls_server_free(&srv);	/* NULL-safe */
	tls_client_free(&cl);
}

static void test_sni(void)
{
	struct tls_server *srv =
		server_new(path("mail.pem"), path("mail.key"), NULL, NULL);
	struct tls_client *ver = client_new(path("ca.pem"), NULL, NULL);
	struct tls_client *any = client_new(NULL, NULL, NULL);
	struct hs r;

	connect_to(srv, ver, "mail.example.test", NULL, 0, &r);
	CHECK(r.ok);
	CHECK_STR(r.leaf, MAIL_SUBJ);
	CHECK_STR(r.cert_name, "mail.example.test");
	CHECK(!r.is_default);
	hs_cleanup(&r);

	connect_to(srv, ver, "x.other.test", NULL, 0, &r);
	CHECK(r.ok);
	CHECK_STR(r.leaf, OTHER_SUBJ);
	CHECK_STR(r.cert_name, "*.other.test");
	CHECK(r.chain_len == 2);
	CHECK(r.verify == X509_V_OK);
	hs_cleanup(&r);

	connect_to(srv, ver, "MX.Other.Test", NULL, 0, &r);
	CHECK(r.ok);
	CHECK_STR(r.leaf, OTHER_SUBJ);
	hs_cleanup(&r);

	/* Wildcards cover one label only; unknown names and no SNI get the
	 * default certificate. */
	const char *defaults[] = { "a.b.other.test", "other.test",
				   "unknown.test", NULL };
	for (size_t i = 0; i < ARRAY_LEN(defaults); i++) {
		connect_to(srv, any, defaults[i], NULL, 0, &r);
		CHECK(r.ok);
		CHECK_STR(r.leaf, MAIL_SUBJ);
		CHECK(r.is_default);
		CHECK_STR(r.cert_name, "mail.example.test");
		hs_cleanup(&r);
	}

	/* The SNI string and log helpers on the server side. */
	SSL *s = tls_server_new_ssl(srv);
	SSL *c = tls_client_new_ssl(any, "x.other.test");
	CHECK(pump(c, s));
	CHECK_STR(tls_sni_str(s), "x.other.test");
	CHECK_STR(tls_cert_name(s), "*.other.test");
	CHECK_STR(tls_version_str(s), "TLSv1.3");
	CHECK(strcmp(tls_cipher_str(s), "none") != 0);
	SSL_free(c);
	SSL_free(s);
	s = tls_server_new_ssl(srv);
	CHECK_STR(tls_sni_str(s), "");
	CHECK_STR(tls_cipher_str(s), "none");
	SSL_free(s);

	tls_client_free(&ver);
	tls_client_free(&any);
	tls_server_free(&srv);
}

static void test_tickets(void)
{
	struct tls_server *srv =
		server_new(path("mail.pem"), path("mail.key"), NULL, NULL);
	struct tls_client *cl = client_new(path("ca.pem"), NULL, NULL);
	struct hs r, r2;

	for (int v = 0; v < 2; v++) {
		uint16_t maxv = v == 0 ? 0 : TLS1_2_VERSION;
		connect_to(srv, cl, "mail.example.test", NULL, maxv, &r);
		CHECK(r.ok);
		CHECK(r.sess != NULL);
		connect_to(srv, cl, "mail.example.test", r.sess, maxv, &r2);
		CHECK(r2.ok);
		CHECK(r2.reused);
		CHECK_STR(r2.leaf, MAIL_SUBJ);	/* from the session */
		hs_cleanup(&r2);
		hs_cleanup(&r);
	}

	/* Sessions are partitioned per certificate. */
	struct tls_client *any = client_new(NULL, NULL, NULL);
	connect_to(srv, any, "mail.example.test", NULL, 0, &r);
	connect_to(srv, any, "x.other.test", r.sess, 0, &r2);
	CHECK(r2.ok);
	CHECK(!r2.reused);
	CHECK_STR(r2.leaf, OTHER_SUBJ);
	hs_cleanup(&r2);
	connect_to(srv, any, "mail.example.test", r.sess, 0, &r2);
	CHECK(r2.reused);
	hs_cleanup(&r2);
	hs_cleanup(&r);
	connect_to(srv, any, "x.other.test", NULL, 0, &r);
	connect_to(srv, any, "y.other.test", r.sess, 0, &r2);
	CHECK(r2.reused);
	hs_cleanup(&r2);
	connect_to(srv, any, "unknown.test", r.sess, 0, &r2);
	CHECK(!r2.reused);
	CHECK_STR(r2.leaf, MAIL_SUBJ);
	hs_cleanup(&r2);
	hs_cleanup(&r);
	tls_client_free(&any);
	connect_to(srv, cl, "mail.example.test", NULL, 0, &r);

	/* A tick before the period ends changes nothing. */
	tls_server_tick(srv, time_mono_ms());
	connect_to(srv, cl, "mail.example.test", r.sess, 0, &r2);
	CHECK(r2.reused);
	hs_cleanup(&r2);

	/* One rotation: the previous key still decrypts (and the client gets
	 * a renewed ticket). */
	uint64_t later = time_mono_ms() + 3600u * 1000u + 1;
	tls_server_tick(srv, later);
	connect_to(srv, cl, "mail.example.test", r.sess, 0, &r2);
	CHECK(r2.ok);
	CHECK(r2.reused);
	CHECK(r2.sess != NULL);
	/* Two rotations: gone. */
	tls_server_tick(srv, later + 3600u * 1000u);
	struct hs r3;
	connect_to(srv, cl, "mail.example.test", r.sess, 0, &r3);
	CHECK(r3.ok);
	CHECK(!r3.reused);
	hs_cleanup(&r3);
	/* The renewed ticket from after the first rotation still works. */
	connect_to(srv, cl, "mail.example.test", r2.sess, 0, &r3);
	CHECK(r3.reused);
	hs_cleanup(&r3);
	hs_cleanup(&r2);
	hs_cleanup(&r);

	/* Explicit rotation, twice. */
	connect_to(srv, cl, "mail.example.test", NULL, 0, &r);
	tls_server_rotate_ticket_keys(srv);
	connect_to(srv, cl, "mail.example.test", r.sess, 0, &r2);
	CHECK(r2.reused);
	hs_cleanup(&r2);
	tls_server_rotate_ticket_keys(srv);
	connect_to(srv, cl, "mail.example.test", r.sess, 0, &r2);
	CHECK(!r2.reused);
	hs_cleanup(&r2);
	hs_cleanup(&r);

	tls_client_free(&cl);
	tls_server_free(&srv);
}

static void test_ticket_file(void)
{
	struct tls_server *a = server_new(path("mail.pem"), path("mail.key"),
					  path("ticket.key"), NULL);
	struct tls_server *b = server_new(path("mail.pem"), path("mail.key"),
					  path("ticket.key"), NULL);
	struct tls_server *other = server_new(path("mail.pem"), path("mail.key"),
					      path("ticket2.key"), NULL);
	struct tls_client *cl = client_new(path("ca.pem"), NULL, NULL);
	struct hs r, r2;

	/* A ticket from one cluster member resumes on another. */
	connect_to(a, cl, "mail.example.test", NULL, 0, &r);
	CHECK(r.ok);
	connect_to(b, cl, "mail.example.test", r.sess, 0, &r2);
	CHECK(r2.ok);
	CHECK(r2.reused);
	hs_cleanup(&r2);
	connect_to(other, cl, "mail.example.test", r.sess, 0, &r2);
	CHECK(r2.ok);
	CHECK(!r2.reused);
	hs_cleanup(&r2);

	/* Ticks follow the wall clock (no change within the epoch). */
	tls_server_tick(b, time_mono_ms() + 100000000u);
	connect_to(b, cl, "mail.example.test", r.sess, 0, &r2);
	CHECK(r2.reused);
	hs_cleanup(&r2);
	tls_server_rotate_ticket_keys(b);
	connect_to(b, cl, "mail.example.test", r.sess, 0, &r2);
	CHECK(r2.reused);
	hs_cleanup(&r2);
	tls_server_rotate_ticket_keys(b);
	connect_to(b, cl, "mail.example.test", r.sess, 0, &r2);
	CHECK(!r2.reused);
	hs_cleanup(&r2);
	hs_cleanup(&r);

	const char *certs[] = { path("mail.pem") };
	const char *keys[] = { path("mail.key") };
	struct tls_server_config cfg = { .cert_files = certs,
					 .key_files = keys,
					 .n_certs = 1,
					 .ticket_key_file = path("ca.srl-none") };
	const char *error = NULL;
	CHECK(tls_server_new(&cfg, &error) == NULL);
	CHECK(error && strstr(error, "No such file"));
	sh("printf short > short.key");
	cfg.ticket_key_file = path("short.key");
	CHECK(tls_server_new(&cfg, &error) == NULL);
	CHECK(error && strstr(error, "32..4096"));
	printf("  ticket file error: %s\n", error);

	tls_client_free(&cl);
	tls_server_free(&a);
	tls_server_free(&b);
	tls_server_free(&other);
}

static void test_reload(void)
{
	CHECK(sh("cp mail.pem cur.pem && cp mail.key cur.key") == 0);
	struct tls_server *srv =
		server_new(path("cur.pem"), path("cur.key"), NULL, NULL);
	struct tls_client *cl = client_new(path("ca.pem"), NULL, NULL);
	struct hs r, r2;
	const char *error = NULL;

	connect_to(srv, cl, "mail.example.test", NULL, 0, &r);
	CHECK(r.ok);
	CHECK_STR(r.leaf, MAIL_SUBJ);
	CHECK(tls_server_generation(srv) == 0);

	SSL *before = tls_server_new_ssl(srv);
	SSL *before_other = tls_server_new_ssl(srv);
	CHECK(sh("cp mail2.pem cur.pem && cp mail2.key cur.key") == 0);
	CHECK(tls_server_reload(srv, &error) == 0);
	CHECK(tls_server_generation(srv) == 1);

	/* SSLs made before the reload finish with the old certificates. */
	run_hs(before, cl, "mail.example.test", NULL, 0, &r2);
	CHECK(r2.ok);
	CHECK_STR(r2.leaf, MAIL_SUBJ);
	hs_cleanup(&r2);
	run_hs(before_other, cl, "x.other.test", NULL, 0, &r2);
	CHECK(r2.ok);
	CHECK_STR(r2.leaf, OTHER_SUBJ);
	hs_cleanup(&r2);

	/* New ones see the new certificate; tickets survive the reload. */
	connect_to(srv, cl, "mail.example.test", NULL, 0, &r2);
	CHECK(r2.ok);
	CHECK_STR(r2.leaf, MAIL2_SUBJ);
	CHECK(r2.chain_len == 2);
	hs_cleanup(&r2);
	connect_to(srv, cl, "mail.example.test", r.sess, 0, &r2);
	CHECK(r2.reused);
	hs_cleanup(&r2);
	hs_cleanup(&r);

	/* A broken certificate file: error, the current generation stays. */
	CHECK(sh("printf 'not a certificate\\n' > cur.pem") == 0);
	error = NULL;
	CHECK(tls_server_reload(srv, &error) == -1);
	CHECK(error && strstr(error, "cur.pem") && strstr(error, "PEM"));
	printf("  broken cert: %s\n", error ? error : "(null)");
	CHECK(tls_server_generation(srv) == 1);
	connect_to(srv, cl, "mail.example.test", NULL, 0, &r2);
	CHECK(r2.ok);
	CHECK_STR(r2.leaf, MAIL2_SUBJ);
	hs_cleanup(&r2);

	/* Certificate and key that do not belong together. */
	CHECK(sh("cp mail.pem cur.pem && cp mail2.key cur.key") == 0);
	error = NULL;
	CHECK(tls_server_reload(srv, &error) == -1);
	CHECK(error && strstr(error, "cur.key"));
	printf("  key mismatch: %s\n", error ? error : "(null)");
	/* A missing file. */
	CHECK(sh("rm cur.key") == 0);
	error = NULL;
	CHECK(tls_server_reload(srv, &error) == -1);
	CHECK(error && strstr(error, "No such file"));
	printf("  missing key: %s\n", error ? error : "(null)");
	connect_to(srv, cl, "mail.example.test", NULL, 0, &r2);
	CHECK(r2.ok);
	CHECK_STR(r2.leaf, MAIL2_SUBJ);
	hs_cleanup(&r2);

	/* An SSL may outlive its server. */
	SSL *orphan = tls_server_new_ssl(srv);
	tls_server_free(&srv);
	run_hs(orphan, cl, "x.other.test", NULL, 0, &r2);
	CHECK(r2.ok);
	CHECK_STR(r2.leaf, OTHER_SUBJ);
	hs_cleanup(&r2);

	tls_client_free(&cl);
}

static void test_mutual(void)
{
	struct tls_server *srv = server_new(path("mail.pem"), path("mail.key"),
					    NULL, path("ca.pem"));
	struct tls_client *anon = client_new(path("ca.pem"), NULL, NULL);
	struct tls_client *member =
		client_new(path("ca.pem"), path("client.pem"), path("client.key"));
	struct tls_client *rogue =
		client_new(path("ca.pem"), path("rogue.pem"), path("rogue.key"));
	struct hs r;

	for (int v = 0; v < 2; v++) {
		uint16_t maxv = v == 0 ? 0 : TLS1_2_VERSION;
		connect_to(srv, anon, "mail.example.test", NULL, maxv, &r);
		CHECK(!r.ok);
		hs_cleanup(&r);
		connect_to(srv, rogue, "mail.example.test", NULL, maxv, &r);
		CHECK(!r.ok);
		hs_cleanup(&r);
		connect_to(srv, member, "mail.example.test", NULL, maxv, &r);
		CHECK(r.ok);
		CHECK_STR(r.client_leaf, "/CN=node1.cluster.test");
		hs_cleanup(&r);
	}
	/* Also under the SNI-selected context. */
	connect_to(srv, anon, "x.other.test", NULL, 0, &r);
	CHECK(!r.ok);
	hs_cleanup(&r);
	connect_to(srv, member, "x.other.test", NULL, 0, &r);
	CHECK(r.ok);
	hs_cleanup(&r);

	const char *error = NULL;
	CHECK(tls_client_new(path("ca.pem"), path("client.pem"), NULL,
			     &error) == NULL);
	CHECK(tls_client_new(path("ca.pem"), path("client.pem"),
			     path("mail.key"), &error) == NULL);
	printf("  client key mismatch: %s\n", error);

	tls_client_free(&anon);
	tls_client_free(&member);
	tls_client_free(&rogue);
	tls_server_free(&srv);
}

struct worker {
	pthread_t thread;
	struct tls_server *srv;
	struct tls_client *cl;
	int ok;
};

static void *worker_run(void *arg)
{
	struct worker *w = arg;
	for (int i = 0; i < 25; i++) {
		struct hs r;
		connect_to(w->srv, w->cl, i % 2 ? "mail.example.test" : "a.other.test",
			   NULL, 0, &r);
		w->ok += r.ok;
		hs_cleanup(&r);
	}
	return NULL;
}

/* Loop threads make SSLs while another thread reloads and rotates. */
static void test_concurrent(void)
{
	struct tls_server *srv =
		server_new(path("mail.pem"), path("mail.key"), NULL, NULL);
	struct tls_client *cl = client_new(path("ca.pem"), NULL, NULL);
	struct worker w[3];
	for (size_t i = 0; i < ARRAY_LEN(w); i++) {
		w[i] = (struct worker){ .srv = srv, .cl = cl };
		pthread_create(&w[i].thread, NULL, worker_run, &w[i]);
	}
	const char *error = NULL;
	int reloads = 0;
	for (int i = 0; i < 10; i++) {
		reloads += tls_server_reload(srv, &error) == 0;
		tls_server_rotate_ticket_keys(srv);
		tls_server_tick(srv, time_mono_ms());
		usleep(2000);
	}
	for (size_t i = 0; i < ARRAY_LEN(w); i++) {
		pthread_join(w[i].thread, NULL);
		CHECK(w[i].ok == 25);
	}
	CHECK(reloads == 10);
	CHECK(tls_server_generation(srv) == 10);
	tls_client_free(&cl);
	tls_server_free(&srv);
}

static void test_garbage(void)
{
	struct tls_server *srv =
		server_new(path("mail.pem"), path("mail.key"), NULL, NULL);
	static const uint8_t http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	static const uint8_t bad_hello[] = { 0x16, 0x03, 0x01, 0x00, 0x08, 0x01,
					     0x00, 0x00, 0x04, 0xff, 0xff,
					     0xff, 0xff };
	static const uint8_t huge[] = { 0x16, 0x03, 0x01, 0xff, 0xff, 0x01 };
	static const uint8_t sslv2[] = { 0x80, 0x2e, 0x01, 0x00, 0x02, 0x00,
					 0x15, 0x00, 0x00, 0x00, 0x10 };
	uint8_t noise[1024];
	for (size_t i = 0; i < sizeof(noise); i++)
		noise[i] = (uint8_t)(i * 131u + 7u);
	struct view inputs[] = {
		view_make(http, sizeof(http) - 1),
		view_make(bad_hello, sizeof(bad_hello)),
		view_make(huge, sizeof(huge)),
		view_make(sslv2, sizeof(sslv2)),
		view_make(noise, sizeof(noise)),
	};
	for (size_t i = 0; i < ARRAY_LEN(inputs); i++) {
		SSL *s = tls_server_new_ssl(srv);
		BIO *in = BIO_new_mem_buf(inputs[i].ptr, inputs[i].len);
		BIO *out = BIO_new(BIO_s_mem());
		SSL_set_bio(s, in, out);
		int rc = SSL_do_handshake(s);
		CHECK(rc <= 0);
		int err = SSL_get_error(s, rc);
		if (err != SSL_ERROR_SSL)
			fprintf(stderr, "  garbage %zu: SSL_get_error=%d\n", i,
				err);
		CHECK(err == SSL_ERROR_SSL);
		if (i == 0)
			printf("  garbage: %s\n", tls_error_str("handshake"));
		SSL_free(s);
		ERR_clear_error();
	}
	tls_server_free(&srv);
}

static void test_bad_config(void)
{
	const char *error = NULL;
	struct tls_server_config cfg = { 0 };
	CHECK(tls_server_new(&cfg, &error) == NULL);
	CHECK(error != NULL);

	const char *certs[] = { path("mail.pem") };
	const char *keys[] = { path("other.key") };
	cfg = (struct tls_server_config){ .cert_files = certs,
					  .key_files = keys,
					  .n_certs = 1 };
	error = NULL;
	CHECK(tls_server_new(&cfg, &error) == NULL);
	CHECK(error && strstr(error, "other.key"));
	printf("  new with wrong key: %s\n", error ? error : "(null)");

	keys[0] = path("mail.key");
	cfg.client_ca_file = path("nonexistent-ca.pem");
	error = NULL;
	CHECK(tls_server_new(&cfg, &error) == NULL);
	CHECK(error && strstr(error, "nonexistent-ca.pem"));

	CHECK(tls_client_new(path("nonexistent-ca.pem"), NULL, NULL, &error) ==
	      NULL);
	CHECK(error && strstr(error, "No such file"));
}

int main(void)
{
	if (system("openssl version >/dev/null 2>&1") != 0) {
		fprintf(stderr, "openssl command not found: skipped\n");
		return 77;
	}
	const char *base = getenv("MAIL_TEST_TMP");
	if (!base || !*base)
		base = "/tmp";
	mkdir(base, 0700);
	snprintf(dir, sizeof(dir), "%s/test_tls.XXXXXX", base);
	if (!mkdtemp(dir)) {
		fprintf(stderr, "mkdtemp %s: %s\n", dir, strerror(errno));
		return 1;
	}
	if (make_certs() < 0)
		return 1;

	struct {
		const char *name;
		void (*fn)(void);
	} tests[] = {
		{ "versions", test_versions },	 { "sni", test_sni },
		{ "tickets", test_tickets },	 { "ticket_file", test_ticket_file },
		{ "reload", test_reload },	 { "mutual", test_mutual },
		{ "garbage", test_garbage },	 { "bad_config", test_bad_config },
		{ "concurrent", test_concurrent },
	};
	for (size_t i = 0; i < ARRAY_LEN(tests); i++) {
		int before = failures;
		tests[i].fn();
		printf("%s %s\n", failures == before ? "ok  " : "FAIL",
		       tests[i].name);
	}
	if (failures == 0) {
		char cmd[600];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", dir);
	} else {
		fprintf(stderr, "%d failure(s); files kept in %s\n", failures,
			dir);
	}
	return failures ? 1 : 0;
}
