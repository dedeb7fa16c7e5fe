#include "common/tls.h"

#include "common/base.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hkdf.h>
#include <openssl/hmac.h>
#include <openssl/mem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* Mozilla "intermediate" TLS 1.2 suites that BoringSSL implements (it has
 * no DHE). TLS 1.3 suites are not configurable in BoringSSL. */
#define TLS12_CIPHERS                                                        \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"         \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"         \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

#define TICKET_FILE_MIN 32
#define TICKET_FILE_MAX 4096
#define SNI_MAX 255

/* ---- errors ---------------------------------------------------------- */

static _Thread_local char tls_errbuf[1024];

static const char *set_error(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));
static const char *set_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(tls_errbuf, sizeof(tls_errbuf), fmt, ap);
	va_end(ap);
	ERR_clear_error();
	return tls_errbuf;
}

const char *tls_error_str(const char *what)
{
	size_t off = 0;
	int n = snprintf(tls_errbuf, sizeof(tls_errbuf), "%s", what);
	off = n < 0 ? 0 : MIN((size_t)n, sizeof(tls_errbuf) - 1);
	const char *sep = ": ";
	const char *file, *data;
	int line, flags;
	uint32_t e;
	/* The queue holds the innermost failure first; print them all. */
	while ((e = ERR_get_error_line_data(&file, &line, &data, &flags)) != 0) {
		/* "SSL routines: PEM routines" only says "see above". */
		if (ERR_GET_REASON(e) < ERR_NUM_LIBS && strcmp(sep, "; ") == 0)
			continue;
		const char *lib = ERR_lib_error_string(e);
		const char *reason = ERR_reason_error_string(e);
		bool has_data = (flags & ERR_FLAG_STRING) && data && *data;
		n = snprintf(tls_errbuf + off, sizeof(tls_errbuf) - off,
			     "%s%s: %s%s%s%s", sep, lib ? lib : "unknown",
			     reason ? reason : "unknown error",
			     has_data ? " (" : "", has_data ? data : "",
			     has_data ? ")" : "");
		if (n > 0)
			off = MIN(off + (size_t)n, sizeof(tls_errbuf) - 1);
		sep = "; ";
	}
	if (strcmp(sep, ": ") == 0 && off + 20 < sizeof(tls_errbuf))
		snprintf(tls_errbuf + off, sizeof(tls_errbuf) - off,
			 ": unknown error");
	return tls_errbuf;
}

/* A missing or unreadable file gives a clearer message from errno than
 * from the PEM reader. */
static int check_readable(const char *what, const char *path,
			  const char **error_r)
{
	if (access(path, R_OK) < 0) {
		*error_r = set_error("%s %s: %s", what, path, strerror(errno));
		return -1;
	}
	return 0;
}

/* ---- ex_data indices ------------------------------------------------- */

struct tls_gen;
static void gen_unref(struct tls_gen *g);

static int ssl_gen_idx = -1;	 /* server SSL -> struct tls_gen (owns a ref) */
static int ssl_name_idx = -1;	 /* server SSL -> matched name (borrowed) */
static int ssl_session_idx = -1; /* client SSL -> newest SSL_SESSION (owned) */
static pthread_once_t ex_once = PTHREAD_ONCE_INIT;

static void ex_free_gen(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int index,
			long argl, void *argp)
{
	UNUSED(parent), UNUSED(ad), UNUSED(index), UNUSED(argl), UNUSED(argp);
	if (ptr)
		gen_unref(ptr);
}

static void ex_free_session(void *parent, void *ptr, CRYPTO_EX_DATA *ad,
			    int index, long argl, void *argp)
{
	UNUSED(parent), UNUSED(ad), UNUSED(index), UNUSED(argl), UNUSED(argp);
	SSL_SESSION_free(ptr);
}

static void ex_init(void)
{
	ssl_gen_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, ex_free_gen);
	ssl_name_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	ssl_session_idx =
		SSL_get_ex_new_index(0, NULL, NULL, NULL, ex_free_session);
	if (ssl_gen_idx < 0 || ssl_name_idx < 0 || ssl_session_idx < 0) {
		fprintf(stderr, "fatal: tls: cannot allocate ex_data index\n");
		abort();
	}
}

static void ex_ensure(void)
{
	pthread_once(&ex_once, ex_init);
}

/* ---- ticket keys ----------------------------------------------------- */

struct ticket_key {
	uint8_t name[SSL_TICKET_KEY_NAME_LEN];
	uint8_t aes[16];
	uint8_t hmac[32];
};

/* Shared by every generation of a server (a reload must not invalidate
 * outstanding tickets). keys[0] encrypts; every key decrypts. */
struct ticket_keys {
	atomic_uint refs;
	pthread_mutex_t lock;
	struct ticket_key keys[3];
	size_t n_keys;
	uint32_t rotate_s;
	uint64_t next_rotate_ms; /* random mode */
	bool from_file;
	uint8_t prk[32];	 /* key-file mode: HKDF-Extract(file) */
	uint64_t epoch;		 /* key-file mode: epoch of keys[0] */
};

static void ticket_derive(const uint8_t prk[32], uint64_t epoch,
			  struct ticket_key *k)
{
	uint8_t info[26] = "mail tls ticket v1"; /* 18 chars + epoch */
	for (int i = 0; i < 8; i++)
		info[18 + i] = (uint8_t)(epoch >> (56 - 8 * i));
	uint8_t out[sizeof(*k)];
	if (!HKDF_expand(out, sizeof(out), EVP_sha256(), prk, 32, info,
			 sizeof(info))) {
		fprintf(stderr, "fatal: tls: HKDF_expand failed\n");
		abort();
	}
	memcpy(k->name, out, sizeof(k->name));
	memcpy(k->aes, out + sizeof(k->name), sizeof(k->aes));
	memcpy(k->hmac, out + sizeof(k->name) + sizeof(k->aes), sizeof(k->hmac));
	explicit_bzero(out, sizeof(out));
}

static void ticket_random(struct ticket_key *k)
{
	RAND_bytes((uint8_t *)k, sizeof(*k));
}

/* Key-file mode: current = epoch, previous = epoch-1, and next = epoch+1
 * accepted too so a member whose clock runs slightly ahead is not a
 * full handshake for everyone else. Called with t->lock held. */
static void ticket_set_epoch_locked(struct ticket_keys *t, uint64_t epoch)
{
	t->epoch = epoch;
	ticket_derive(t->prk, epoch, &t->keys[0]);
	ticket_derive(t->prk, epoch - 1, &t->keys[1]);
	ticket_derive(t->prk, epoch + 1, &t->keys[2]);
	t->n_keys = 3;
}

static uint64_t wall_epoch(uint32_t rotate_s)
{
	return time_real_ms() / 1000u / rotate_s;
}

/* Reads the shared ticket secret and extracts a PRK from it. */
static int ticket_file_read(const char *path, uint8_t prk[32],
			    const char **error_r)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		*error_r = set_error("ticket key file %s: %s", path,
				     strerror(errno));
		return -1;
	}
	uint8_t data[TICKET_FILE_MAX + 1];
	size_t len = 0;
	int ret = -1;
	for (;;) {
		ssize_t n = read(fd, data + len, sizeof(data) - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			*error_r = set_error("ticket key file %s: %s", path,
					     strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len == sizeof(data))
			break;
	}
	if (len < TICKET_FILE_MIN || len > TICKET_FILE_MAX) {
		*error_r = set_error("ticket key file %s: must hold %d..%d "
				     "bytes of secret, has %s%zu",
				     path, TICKET_FILE_MIN, TICKET_FILE_MAX,
				     len > TICKET_FILE_MAX ? "more than " : "",
				     MIN(len, (size_t)TICKET_FILE_MAX));
		goto out;
	}
	static const uint8_t salt[] = "mail tls ticket key file";
	size_t prk_len = 0;
	if (!HKDF_extract(prk, &prk_len, EVP_sha256(), data, len, salt,
			  sizeof(salt) - 1) ||
	    prk_len != 32) {
		*error_r = tls_error_str("ticket key file: HKDF");
		goto out;
	}
	ret = 0;
out:
	explicit_bzero(data, sizeof(data));
	close(fd);
	return ret;
}

static struct ticket_keys *ticket_keys_new(uint32_t rotate_s,
					   const uint8_t *prk)
{
	struct ticket_keys *t = xcalloc(1, sizeof(*t));
	atomic_init(&t->refs, 1);
	pthread_mutex_init(&t->lock, NULL);
	t->rotate_s = rotate_s;
	if (prk) {
		t->from_file = true;
		memcpy(t->prk, prk, sizeof(t->prk));
		ticket_set_epoch_locked(t, wall_epoch(rotate_s));
	} else {
		ticket_random(&t->keys[0]);
		t->n_keys = 1;
		t->next_rotate_ms = time_mono_ms() + (uint64_t)rotate_s * 1000u;
	}
	return t;
}

static void ticket_keys_unref(struct ticket_keys *t)
{
	if (!t || atomic_fetch_sub(&t->refs, 1) != 1)
		return;
	pthread_mutex_destroy(&t->lock);
	explicit_bzero(t, sizeof(*t));
	free(t);
}

static void ticket_rotate_locked(struct ticket_keys *t)
{
	if (t->from_file) {
		ticket_set_epoch_locked(t, t->epoch + 1);
		return;
	}
	t->keys[1] = t->keys[0];
	ticket_random(&t->keys[0]);
	t->n_keys = 2;
}

/* ---- certificate generations ---------------------------------------- */

struct tls_cert {
	SSL_CTX *ctx;
	char **names; /* lowercase; "*.x.y" for wildcards */
	size_t n_names;
};

/* One generation of contexts. Every SSL made from it holds a reference so
 * the SNI callback can reach the sibling contexts after a reload. */
struct tls_gen {
	struct ticket_keys *tickets;
	atomic_uint refs;
	uint64_t number;
	struct tls_cert *certs;
	size_t n_certs;
};

/* Session ticket callback (contract in openssl/ssl.h): encrypt with the
 * current key; decrypt with any known key and ask for renewal unless the
 * key was the current one. Keys are copied out under the lock so the
 * crypto runs unlocked. */
static int ticket_key_cb(SSL *ssl, uint8_t *key_name, uint8_t *iv,
			 EVP_CIPHER_CTX *cctx, HMAC_CTX *hctx, int encrypt)
{
	struct tls_gen *g = SSL_get_ex_data(ssl, ssl_gen_idx);
	if (!g)
		return encrypt ? -1 : 0;
	struct ticket_keys *t = g->tickets;
	struct ticket_key k;
	int ret;

	pthread_mutex_lock(&t->lock);
	if (encrypt) {
		k = t->keys[0];
		ret = 1;
	} else {
		ret = 0;
		for (size_t i = 0; i < t->n_keys; i++) {
			if (CRYPTO_memcmp(key_name, t->keys[i].name,
					  SSL_TICKET_KEY_NAME_LEN) == 0) {
				k = t->keys[i];
				ret = i == 0 ? 1 : 2;
				break;
			}
		}
	}
	pthread_mutex_unlock(&t->lock);
	if (ret == 0)
		return 0;

	const EVP_CIPHER *cipher = EVP_aes_128_cbc();
	if (encrypt) {
		memcpy(key_name, k.name, SSL_TICKET_KEY_NAME_LEN);
		if (!RAND_bytes(iv, EVP_CIPHER_iv_length(cipher)) ||
		    !EVP_EncryptInit_ex(cctx, cipher, NULL, k.aes, iv))
			ret = -1;
	} else if (!EVP_DecryptInit_ex(cctx, cipher, NULL, k.aes, iv)) {
		ret = -1;
	}
	if (ret > 0 &&
	    !HMAC_Init_ex(hctx, k.hmac, sizeof(k.hmac), EVP_sha256(), NULL))
		ret = -1;
	explicit_bzero(&k, sizeof(k));
	return ret;
}

static void gen_unref(struct tls_gen *g)
{
	if (!g || atomic_fetch_sub(&g->refs, 1) != 1)
		return;
	for (size_t i = 0; i < g->n_certs; i++) {
		SSL_CTX_free(g->certs[i].ctx);
		for (size_t j = 0; j < g->certs[i].n_names; j++)
			free(g->certs[i].names[j]);
		free(g->certs[i].names);
	}
	free(g->certs);
	ticket_keys_unref(g->tickets);
	free(g);
}

struct tls_server {
	pthread_mutex_t lock;	     /* guards gen */
	pthread_mutex_t reload_lock; /* one reload at a time */
	struct tls_gen *gen;
	struct ticket_keys *tickets;
	char **cert_files;
	char **key_files;
	size_t n_certs;
	char *ticket_key_file;
	char *client_ca_file;
	uint32_t rotate_s;
	atomic_uint_fast64_t generation;
};

static void add_name(struct tls_cert *c, const uint8_t *p, size_t len)
{
	if (len == 0 || len > SNI_MAX || memchr(p, 0, len))
		return;
	char *s = xmalloc(len + 1);
	for (size_t i = 0; i < len; i++)
		s[i] = (p[i] >= 'A' && p[i] <= 'Z') ? (char)(p[i] + 32)
						    : (char)p[i];
	s[len] = '\0';
	c->names = xrealloc(c->names, (c->n_names + 1) * sizeof(*c->names));
	c->names[c->n_names++] = s;
}

/* SAN dNSNames; the subject CN only when there are none (RFC 6125). */
static void extract_names(struct tls_cert *c, X509 *x)
{
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL,
					       NULL);
	for (size_t i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(gens, i);
		if (gn->type != GEN_DNS)
			continue;
		int len = ASN1_STRING_length(gn->d.dNSName);
		if (len > 0)
			add_name(c, ASN1_STRING_get0_data(gn->d.dNSName),
				 (size_t)len);
	}
	GENERAL_NAMES_free(gens);
	if (c->n_names > 0)
		return;
	X509_NAME *subj = X509_get_subject_name(x);
	int idx = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
	if (idx < 0)
		return;
	ASN1_STRING *cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, idx));
	unsigned char *utf8 = NULL;
	int len = ASN1_STRING_to_UTF8(&utf8, cn);
	if (len > 0)
		add_name(c, utf8, (size_t)len);
	OPENSSL_free(utf8);
	ERR_clear_error();
}

/* "*.example.test" matches exactly one extra leftmost label. */
static bool wildcard_match(const char *pattern, const char *name)
{
	if (pattern[0] != '*' || pattern[1] != '.')
		return false;
	const char *dot = strchr(name, '.');
	if (!dot || dot == name)
		return false;
	return strcmp(dot + 1, pattern + 2) == 0;
}

/* Exact names win over wildcards, earlier certificates over later ones. */
static bool gen_find(const struct tls_gen *g, const char *name,
		     size_t *cert_r, const char **name_r)
{
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < g->n_certs; i++) {
			const struct tls_cert *c = &g->certs[i];
			for (size_t j = 0; j < c->n_names; j++) {
				bool ok = pass == 0
					? strcmp(c->names[j], name) == 0
					: wildcard_match(c->names[j], name);
				if (ok) {
					*cert_r = i;
					*name_r = c->names[j];
					return true;
				}
			}
		}
	}
	return false;
}

static int servername_cb(SSL *ssl, int *out_alert, void *arg)
{
	UNUSED(out_alert), UNUSED(arg);
	struct tls_gen *g = SSL_get_ex_data(ssl, ssl_gen_idx);
	const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	if (!g || !sni)
		return SSL_TLSEXT_ERR_OK;
	char name[SNI_MAX + 1];
	size_t len = strlen(sni);
	if (len > 0 && sni[len - 1] == '.')
		len--;
	if (len == 0 || len > SNI_MAX)
		return SSL_TLSEXT_ERR_OK; /* default certificate */
	for (size_t i = 0; i < len; i++)
		name[i] = (sni[i] >= 'A' && sni[i] <= 'Z') ? (char)(sni[i] + 32)
							   : sni[i];
	name[len] = '\0';

	size_t idx;
	const char *matched;
	if (!gen_find(g, name, &idx, &matched))
		return SSL_TLSEXT_ERR_OK; /* default certificate */
	if (idx != 0 && SSL_set_SSL_CTX(ssl, g->certs[idx].ctx) == NULL) {
		*out_alert = SSL_AD_INTERNAL_ERROR;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	SSL_set_ex_data(ssl, ssl_name_idx, (void *)matched);
	return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *server_ctx_new(const struct tls_server *s, size_t i,
			       struct tls_cert *cert, const char **error_r)
{
	const char *cf = s->cert_files[i], *kf = s->key_files[i];
	if (check_readable("certificate", cf, error_r) < 0 ||
	    check_readable("key", kf, error_r) < 0)
		return NULL;
	if (s->client_ca_file &&
	    check_readable("client CA", s->client_ca_file, error_r) < 0)
		return NULL;

	ERR_clear_error();
	SSL_CTX *ctx = SSL_CTX_new(TLS_method());
	if (!ctx) {
		*error_r = tls_error_str("SSL_CTX_new");
		return NULL;
	}
	/* Sessions resume only under the certificate that issued them. */
	uint8_t sid_ctx[16] = "mailtls-cert";
	for (int b = 0; b < 4; b++)
		sid_ctx[12 + b] = (uint8_t)(i >> (8 * b));
	char what[600];

	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
	    !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_strict_cipher_list(ctx, TLS12_CIPHERS) ||
	    !SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx)) ||
	    !SSL_CTX_set_tlsext_ticket_key_cb(ctx, ticket_key_cb) ||
	    !SSL_CTX_set_tlsext_servername_callback(ctx, servername_cb)) {
		*error_r = tls_error_str("configuring SSL_CTX");
		goto fail;
	}
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_timeout(ctx, s->rotate_s);
	SSL_CTX_set_session_psk_dhe_timeout(ctx, s->rotate_s);

	if (!SSL_CTX_use_certificate_chain_file(ctx, cf)) {
		snprintf(what, sizeof(what), "certificate %s", cf);
		*error_r = tls_error_str(what);
		goto fail;
	}
	if (!SSL_CTX_use_PrivateKey_file(ctx, kf, SSL_FILETYPE_PEM)) {
		snprintf(what, sizeof(what), "key %s", kf);
		*error_r = tls_error_str(what);
		goto fail;
	}
	if (!SSL_CTX_check_private_key(ctx)) {
		snprintf(what, sizeof(what), "key %s does not match %s", kf, cf);
		*error_r = tls_error_str(what);
		goto fail;
	}
	if (s->client_ca_file) {
		const char *ca = s->client_ca_file;
		STACK_OF(X509_NAME) *cas = SSL_load_client_CA_file(ca);
		if (!cas || !SSL_CTX_load_verify_locations(ctx, ca, NULL)) {
			sk_X509_NAME_pop_free(cas, X509_NAME_free);
			snprintf(what, sizeof(what), "client CA %s", ca);
			*error_r = tls_error_str(what);
			goto fail;
		}
		SSL_CTX_set_client_CA_list(ctx, cas);
		SSL_CTX_set_verify(ctx,
				   SSL_VERIFY_PEER |
					   SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
				   NULL);
	}
	extract_names(cert, SSL_CTX_get0_certificate(ctx));
	ERR_clear_error();
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

static struct tls_gen *gen_build(struct tls_server *s, const char **error_r)
{
	struct tls_gen *g = xcalloc(1, sizeof(*g));
	atomic_init(&g->refs, 1);
	g->certs = xcalloc(s->n_certs, sizeof(*g->certs));
	g->n_certs = s->n_certs;
	for (size_t i = 0; i < s->n_certs; i++) {
		g->certs[i].ctx = server_ctx_new(s, i, &g->certs[i], error_r);
		if (!g->certs[i].ctx) {
			gen_unref(g);
			return NULL;
		}
	}
	/* Attached last so a failed build does not drop the caller's ref. */
	atomic_fetch_add(&s->tickets->refs, 1);
	g->tickets = s->tickets;
	return g;
}

static char **strv_dup(const char *const *v, size_t n)
{
	char **r = xcalloc(n, sizeof(*r));
	for (size_t i = 0; i < n; i++)
		r[i] = xstrdup(v[i]);
	return r;
}

static void strv_free(char **v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

struct tls_server *tls_server_new(const struct tls_server_config *cfg,
				  const char **error_r)
{
	ex_ensure();
	if (cfg->n_certs == 0 || !cfg->cert_files || !cfg->key_files) {
		*error_r = set_error("no certificate configured");
		return NULL;
	}
	for (size_t i = 0; i < cfg->n_certs; i++) {
		if (!cfg->cert_files[i] || !cfg->key_files[i]) {
			*error_r = set_error("certificate %zu: missing cert "
					     "or key file", i);
			return NULL;
		}
	}
	uint32_t rotate_s = cfg->ticket_rotate_s ? cfg->ticket_rotate_s
						 : TLS_TICKET_ROTATE_DEFAULT_S;
	uint8_t prk[32];
	if (cfg->ticket_key_file &&
	    ticket_file_read(cfg->ticket_key_file, prk, error_r) < 0)
		return NULL;

	struct tls_server *s = xcalloc(1, sizeof(*s));
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->reload_lock, NULL);
	s->n_certs = cfg->n_certs;
	s->cert_files = strv_dup(cfg->cert_files, cfg->n_certs);
	s->key_files = strv_dup(cfg->key_files, cfg->n_certs);
	s->ticket_key_file = cfg->ticket_key_file ? xstrdup(cfg->ticket_key_file)
						  : NULL;
	s->client_ca_file = cfg->client_ca_file ? xstrdup(cfg->client_ca_file)
						: NULL;
	s->rotate_s = rotate_s;
	atomic_init(&s->generation, 0);
	s->tickets = ticket_keys_new(rotate_s, cfg->ticket_key_file ? prk : NULL);
	explicit_bzero(prk, sizeof(prk));

	s->gen = gen_build(s, error_r);
	if (!s->gen) {
		tls_server_free(&s);
		return NULL;
	}
	return s;
}

void tls_server_free(struct tls_server **sp)
{
	struct tls_server *s = *sp;
	if (!s)
		return;
	*sp = NULL;
	gen_unref(s->gen);
	ticket_keys_unref(s->tickets);
	strv_free(s->cert_files, s->n_certs);
	strv_free(s->key_files, s->n_certs);
	free(s->ticket_key_file);
	free(s->client_ca_file);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->reload_lock);
	free(s);
}

SSL *tls_server_new_ssl(struct tls_server *s)
{
	pthread_mutex_lock(&s->lock);
	struct tls_gen *g = s->gen;
	atomic_fetch_add(&g->refs, 1);
	pthread_mutex_unlock(&s->lock);

	SSL *ssl = SSL_new(g->certs[0].ctx);
	if (!ssl || !SSL_set_ex_data(ssl, ssl_gen_idx, g)) {
		fprintf(stderr, "fatal: tls: SSL_new failed\n");
		abort();
	}
	SSL_set_accept_state(ssl);
	return ssl;
}

int tls_server_reload(struct tls_server *s, const char **error_r)
{
	pthread_mutex_lock(&s->reload_lock);
	int ret = -1;
	uint8_t prk[32];
	if (s->ticket_key_file &&
	    ticket_file_read(s->ticket_key_file, prk, error_r) < 0)
		goto out;
	struct tls_gen *g = gen_build(s, error_r);
	if (!g)
		goto out;

	/* Everything loaded: only now touch shared state. A changed ticket
	 * secret re-derives the keys; tickets under the old secret then get
	 * a full handshake. */
	if (s->ticket_key_file) {
		struct ticket_keys *t = s->tickets;
		pthread_mutex_lock(&t->lock);
		if (CRYPTO_memcmp(t->prk, prk, sizeof(prk)) != 0) {
			memcpy(t->prk, prk, sizeof(prk));
			ticket_set_epoch_locked(t, t->epoch);
		}
		pthread_mutex_unlock(&t->lock);
	}
	g->number = atomic_fetch_add(&s->generation, 1) + 1;

	pthread_mutex_lock(&s->lock);
	struct tls_gen *old = s->gen;
	s->gen = g;
	pthread_mutex_unlock(&s->lock);
	gen_unref(old);
	ret = 0;
out:
	explicit_bzero(prk, sizeof(prk));
	pthread_mutex_unlock(&s->reload_lock);
	return ret;
}

uint64_t tls_server_generation(const struct tls_server *s)
{
	return atomic_load(&s->generation);
}

void tls_server_tick(struct tls_server *s, uint64_t now_ms)
{
	struct ticket_keys *t = s->tickets;
	pthread_mutex_lock(&t->lock);
	if (t->from_file) {
		/* Never go backwards: a clock step back or a forced rotation
		 * must not resurrect retired keys. */
		uint64_t e = wall_epoch(t->rotate_s);
		if (e > t->epoch)
			ticket_set_epoch_locked(t, e);
	} else if (now_ms >= t->next_rotate_ms) {
		ticket_rotate_locked(t);
		t->next_rotate_ms = now_ms + (uint64_t)t->rotate_s * 1000u;
	}
	pthread_mutex_unlock(&t->lock);
}

void tls_server_rotate_ticket_keys(struct tls_server *s)
{
	struct ticket_keys *t = s->tickets;
	pthread_mutex_lock(&t->lock);
	ticket_rotate_locked(t);
	t->next_rotate_ms = time_mono_ms() + (uint64_t)t->rotate_s * 1000u;
	pthread_mutex_unlock(&t->lock);
}

/* ---- client ---------------------------------------------------------- */

struct tls_client {
	SSL_CTX *ctx;
	bool verify;
};

static int client_new_session_cb(SSL *ssl, SSL_SESSION *session)
{
	SSL_SESSION *old = SSL_get_ex_data(ssl, ssl_session_idx);
	if (!SSL_set_ex_data(ssl, ssl_session_idx, session))
		return 0;
	SSL_SESSION_free(old);
	return 1; /* we keep the reference */
}

struct tls_client *tls_client_new(const char *ca_file, const char *cert_file,
				  const char *key_file, const char **error_r)
{
	ex_ensure();
	if ((cert_file == NULL) != (key_file == NULL)) {
		*error_r = set_error("client certificate and key must be "
				     "given together");
		return NULL;
	}
	if ((ca_file && check_readable("CA", ca_file, error_r) < 0) ||
	    (cert_file &&
	     check_readable("certificate", cert_file, error_r) < 0) ||
	    (key_file && check_readable("key", key_file, error_r) < 0))
		return NULL;

	ERR_clear_error();
	SSL_CTX *ctx = SSL_CTX_new(TLS_method());
	char what[600];
	if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
	    !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_strict_cipher_list(ctx, TLS12_CIPHERS)) {
		*error_r = tls_error_str("configuring client SSL_CTX");
		goto fail;
	}
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
						    SSL_SESS_CACHE_NO_INTERNAL);
	SSL_CTX_sess_set_new_cb(ctx, client_new_session_cb);
	if (ca_file) {
		if (!SSL_CTX_load_verify_locations(ctx, ca_file, NULL)) {
			snprintf(what, sizeof(what), "CA %s", ca_file);
			*error_r = tls_error_str(what);
			goto fail;
		}
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	}
	if (cert_file) {
		if (!SSL_CTX_use_certificate_chain_file(ctx, cert_file)) {
			snprintf(what, sizeof(what), "certificate %s", cert_file);
			*error_r = tls_error_str(what);
			goto fail;
		}
		if (!SSL_CTX_use_PrivateKey_file(ctx, key_file,
						 SSL_FILETYPE_PEM)) {
			snprintf(what, sizeof(what), "key %s", key_file);
			*error_r = tls_error_str(what);
			goto fail;
		}
		if (!SSL_CTX_check_private_key(ctx)) {
			snprintf(what, sizeof(what), "key %s does not match %s",
				 key_file, cert_file);
			*error_r = tls_error_str(what);
			goto fail;
		}
	}
	struct tls_client *c = xcalloc(1, sizeof(*c));
	c->ctx = ctx;
	c->verify = ca_file != NULL;
	return c;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

void tls_client_free(struct tls_client **cp)
{
	struct tls_client *c = *cp;
	if (!c)
		return;
	*cp = NULL;
	SSL_CTX_free(c->ctx);
	free(c);
}

SSL *tls_client_new_ssl(struct tls_client *c, const char *sni_hostname)
{
	SSL *ssl = SSL_new(c->ctx);
	if (!ssl) {
		fprintf(stderr, "fatal: tls: SSL_new failed\n");
		abort();
	}
	SSL_set_connect_state(ssl);
	if (!sni_hostname || !*sni_hostname)
		return ssl;

	/* IP literals are not sent as SNI (RFC 6066); they are verified
	 * against the certificate's IP SANs instead. */
	uint8_t addr[16];
	bool is_ip = inet_pton(AF_INET, sni_hostname, addr) == 1 ||
		     inet_pton(AF_INET6, sni_hostname, addr) == 1;
	bool ok;
	if (is_ip) {
		ok = !c->verify || X509_VERIFY_PARAM_set1_ip_asc(
					   SSL_get0_param(ssl), sni_hostname);
	} else {
		ok = SSL_set_tlsext_host_name(ssl, sni_hostname) &&
		     (!c->verify || SSL_set1_host(ssl, sni_hostname));
	}
	if (!ok) {
		ERR_clear_error();
		SSL_free(ssl);
		return NULL;
	}
	return ssl;
}

SSL_SESSION *tls_client_get1_session(const SSL *ssl)
{
	SSL_SESSION *sess = SSL_get_ex_data(ssl, ssl_session_idx);
	if (sess)
		SSL_SESSION_up_ref(sess);
	return sess;
}

int tls_client_set_session(SSL *ssl, SSL_SESSION *session)
{
	return SSL_set_session(ssl, session) ? 0 : -1;
}

/* ---- facts for logs -------------------------------------------------- */

const char *tls_version_str(const SSL *ssl)
{
	const char *v = SSL_get_version(ssl);
	return v ? v : "unknown";
}

const char *tls_cipher_str(const SSL *ssl)
{
	const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
	const char *name = c ? SSL_CIPHER_get_name(c) : NULL;
	return name ? name : "none";
}

const char *tls_sni_str(const SSL *ssl)
{
	const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	return sni ? sni : "";
}

const char *tls_cert_name(const SSL *ssl)
{
	const char *matched = SSL_get_ex_data(ssl, ssl_name_idx);
	if (matched)
		return matched;
	const struct tls_gen *g = SSL_get_ex_data(ssl, ssl_gen_idx);
	if (!g || g->certs[0].n_names == 0)
		return "";
	return g->certs[0].names[0];
}

bool tls_cert_is_default(const SSL *ssl)
{
	return SSL_get_ex_data(ssl, ssl_name_idx) == NULL;
}
