/* TLS contexts (BoringSSL): server certificates chosen by SNI, session
 * ticket keys with rotation, hot reload, and client contexts for mutual TLS
 * between cluster members.
 *
 * This module only manages contexts. The event loop creates an SSL with
 * tls_server_new_ssl() / tls_client_new_ssl(), attaches its own BIO and
 * drives SSL_do_handshake / SSL_read / SSL_write itself.
 *
 * Policy (Mozilla "intermediate"):
 *  - TLS 1.2 and 1.3 only.
 *  - TLS 1.2 suites: ECDHE-{ECDSA,RSA} with AES-128/256-GCM and
 *    CHACHA20-POLY1305; TLS 1.3 suites are BoringSSL's fixed set. The
 *    client's preference order wins (no server preference).
 *  - Resumption is stateless only: session tickets on, server-side session
 *    cache off (nothing to share between loop threads or proxies). Ticket
 *    keys are AES-128-CBC + HMAC-SHA256, a current and a previous key; a
 *    ticket stays valid for at least ticket_rotate_s and at most twice that.
 *    Tickets decrypted with the previous key are renewed. Sessions are
 *    partitioned per certificate (session id context), so a ticket issued
 *    under one SNI certificate does not resume under another.
 *
 * Errors: functions taking `const char **error_r` set it on failure to a
 * string in a thread-local buffer, valid until the next failing tls_* call
 * on the same thread. Copy it if it must live longer.
 *
 * Threads: tls_server_new_ssl() and the handshakes it feeds may run on any
 * number of loop threads at once; tls_server_reload() and tls_server_tick()
 * may run concurrently with them. tls_server_new() / tls_server_free() must
 * not race with anything else on the same server. SSL objects may outlive
 * a reload and even tls_server_free(): each SSL holds a reference on the
 * generation of contexts it was created from. */
#ifndef COMMON_TLS_H
#define COMMON_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#define TLS_TICKET_ROTATE_DEFAULT_S 3600u

struct tls_server_config {
	/* n_certs pairs of PEM files. cert_files[i] holds the leaf followed by
	 * its intermediates (served whole); key_files[i] its private key. The
	 * first pair is the default certificate (no SNI, or no name matches). */
	const char *const *cert_files;
	const char *const *key_files;
	size_t n_certs;
	/* Optional. A file of 32..4096 secret bytes (e.g. `openssl rand 48`)
	 * shared by every proxy of the cluster: ticket keys are then derived
	 * from it and the wall-clock epoch (realtime / ticket_rotate_s), so all
	 * members issue and accept the same tickets without talking to each
	 * other (clocks must agree to well within ticket_rotate_s). NULL: keys
	 * are random, private to this process, rotated by tls_server_tick(). */
	const char *ticket_key_file;
	/* Ticket key rotation period in seconds; 0 = TLS_TICKET_ROTATE_DEFAULT_S. */
	uint32_t ticket_rotate_s;
	/* Optional. When set, clients must present a certificate that chains
	 * to a CA in this PEM file (mutual TLS between cluster members). */
	const char *client_ca_file;
};

struct tls_server;
struct tls_client;

/* Loads every certificate/key pair (checks each key matches its leaf) and
 * the optional files. The config is copied; it need not outlive the call.
 * Returns NULL and sets *error_r on failure. */
struct tls_server *tls_server_new(const struct tls_server_config *cfg,
				  const char **error_r);
/* NULL-safe, clears *sp. SSLs still alive keep working. */
void tls_server_free(struct tls_server **sp);

/* A new server-side SSL in accept state, from the current generation of
 * contexts. No BIO is attached. Never NULL (allocation failure aborts). */
SSL *tls_server_new_ssl(struct tls_server *s);

/* Re-reads every certificate, key, client CA and ticket key file named in
 * the config into a new generation. On success new SSLs use it; on any
 * error the previous generation stays in service, -1 is returned and
 * *error_r says why. SSLs created earlier are not affected. */
int tls_server_reload(struct tls_server *s, const char **error_r);

/* Rotates the ticket keys when due; call it from a timer (about once a
 * minute is plenty). now_ms is monotonic (time_mono_ms()); the first
 * rotation is due ticket_rotate_s after tls_server_new(). With a ticket key
 * file the epoch comes from the wall clock instead (never moving backwards)
 * and now_ms is not used. */
void tls_server_tick(struct tls_server *s, uint64_t now_ms);
/* Rotates immediately: current key becomes previous, a new current key is
 * made (random keys), or the next epoch's keys are derived (key file).
 * For tests and for `mailctl`. */
void tls_server_rotate_ticket_keys(struct tls_server *s);

/* Number of reloads that succeeded (the generation number; starts at 0). */
uint64_t tls_server_generation(const struct tls_server *s);

/* Client contexts. ca_file NULL = the peer is not verified at all (only for
 * tests and benchmarks). cert_file/key_file, both or neither, present a
 * client certificate (mutual TLS). TLS 1.2 and 1.3 only. */
struct tls_client *tls_client_new(const char *ca_file, const char *cert_file,
				  const char *key_file, const char **error_r);
void tls_client_free(struct tls_client **cp);

/* A new client-side SSL in connect state. sni_hostname (may be NULL) is
 * sent as SNI and, when the client has a CA, the peer certificate must
 * match it (an IP literal is not sent; it is checked against IP SANs).
 * With a CA but no name, only the chain is verified. Returns NULL only if
 * sni_hostname is unusable (e.g. longer than 255). */
SSL *tls_client_new_ssl(struct tls_client *c, const char *sni_hostname);

/* The newest resumable session received on a client SSL (TLS 1.3 tickets
 * arrive after the handshake, with application data: keep reading), or
 * NULL. The caller owns the reference (SSL_SESSION_free). */
SSL_SESSION *tls_client_get1_session(const SSL *ssl);
/* Offers a session (from tls_client_get1_session) on a fresh client SSL,
 * before the handshake. Returns 0 or -1. The caller keeps its reference. */
int tls_client_set_session(SSL *ssl, SSL_SESSION *session);

/* Small facts for logs and for the session handoff. Never NULL. */
const char *tls_version_str(const SSL *ssl);	/* "TLSv1.3", "unknown" */
const char *tls_cipher_str(const SSL *ssl);	/* IETF name or "none" */
/* Server SSL: the server name the client sent, or "" if none. */
const char *tls_sni_str(const SSL *ssl);
/* Server SSL: the certificate name that was selected: the SAN/CN pattern
 * that matched the SNI (e.g. "*.other.test"), or the default certificate's
 * first name (or "" if it has none) when nothing matched or before the
 * ClientHello was processed. Valid as long as the SSL. */
const char *tls_cert_name(const SSL *ssl);
/* Server SSL: true unless the client's SNI matched a certificate name
 * (so also true before the ClientHello). */
bool tls_cert_is_default(const SSL *ssl);

/* Drains the thread's BoringSSL error queue into a readable string,
 * prefixed by `what` (e.g. "cert.pem: cannot load chain"). Returns the
 * thread-local buffer described above. */
const char *tls_error_str(const char *what);

#endif
