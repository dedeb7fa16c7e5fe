/* DKIM signing keys (RFC 6376, RFC 8463): generation in the forms the
 * directory stores and DNS publishes. BoringSSL stays inside common/. */
#ifndef COMMON_DKIM_KEY_H
#define COMMON_DKIM_KEY_H

#include "common/base.h"

enum dkim_algo {
	DKIM_RSA2048,  /* k=rsa, p= base64 DER SubjectPublicKeyInfo */
	DKIM_ED25519,  /* k=ed25519, p= base64 of the raw 32-byte key */
};

/* "rsa2048" / "ed25519" <-> enum; -1 for an unknown name. */
int dkim_algo_parse(const char *name);
const char *dkim_algo_str(enum dkim_algo a);
/* The k= tag of the DNS record: "rsa" or "ed25519". */
const char *dkim_algo_k(enum dkim_algo a);

/* A fresh key pair: the private key as PKCS#8 PEM and the public key as
 * the record's p= value, appended to the (empty) buffers as C strings.
 * 0, or -1 with a static reason. */
int dkim_keygen(enum dkim_algo a, struct buf *private_pem, struct buf *public_b64,
		const char **error_r);

#endif
