#include "common/dkim_key.h"

#include <string.h>

#include <openssl/base64.h>
#include <openssl/bio.h>
#include <openssl/bytestring.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

int dkim_algo_parse(const char *name)
{
	if (strcmp(name, "rsa2048") == 0 || strcmp(name, "rsa") == 0)
		return DKIM_RSA2048;
	if (strcmp(name, "ed25519") == 0)
		return DKIM_ED25519;
	return -1;
}

const char *dkim_algo_str(enum dkim_algo a)
{
	return a == DKIM_ED25519 ? "ed25519" : "rsa2048";
}

const char *dkim_algo_k(enum dkim_algo a)
{
	return a == DKIM_ED25519 ? "ed25519" : "rsa";
}

static int b64_append(struct buf *out, const uint8_t *der, size_t n)
{
	size_t len;
	if (!EVP_EncodedLength(&len, n))
		return -1;
	uint8_t *p = buf_reserve(out, len);
	if (!p)
		return -1;
	size_t w = EVP_EncodeBlock(p, der, n);
	buf_commit(out, w + 1); /* with its NUL */
	return 0;
}

int dkim_keygen(enum dkim_algo a, struct buf *private_pem, struct buf *public_b64,
		const char **error_r)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(a == DKIM_ED25519 ? EVP_PKEY_ED25519 : EVP_PKEY_RSA,
						NULL);
	EVP_PKEY *pkey = NULL;
	BIO *bio = NULL;
	int ret = -1;
	*error_r = "key generation failed";
	if (!ctx || EVP_PKEY_keygen_init(ctx) != 1)
		goto out;
	if (a == DKIM_RSA2048 && EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, 2048) != 1)
		goto out;
	if (EVP_PKEY_keygen(ctx, &pkey) != 1)
		goto out;
	bio = BIO_new(BIO_s_mem());
	if (!bio || PEM_write_bio_PKCS8PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL) != 1)
		goto out;
	const uint8_t *pem;
	size_t pem_len;
	if (!BIO_mem_contents(bio, &pem, &pem_len) || buf_append(private_pem, pem, pem_len) < 0 ||
	    buf_append(private_pem, "", 1) < 0)
		goto out;
	if (a == DKIM_ED25519) {
		uint8_t raw[32];
		size_t raw_len = sizeof(raw);
		if (EVP_PKEY_get_raw_public_key(pkey, raw, &raw_len) != 1 || raw_len != 32 ||
		    b64_append(public_b64, raw, raw_len) < 0)
			goto out;
	} else {
		CBB cbb;
		uint8_t *der = NULL;
		size_t der_len;
		if (!CBB_init(&cbb, 300) || !EVP_marshal_public_key(&cbb, pkey) ||
		    !CBB_finish(&cbb, &der, &der_len)) {
			CBB_cleanup(&cbb);
			goto out;
		}
		int r = b64_append(public_b64, der, der_len);
		OPENSSL_free(der);
		if (r < 0)
			goto out;
	}
	ret = 0;
	*error_r = NULL;
out:
	if (ret < 0)
		ERR_clear_error();
	BIO_free(bio);
	EVP_PKEY_free(pkey);
	EVP_PKEY_CTX_free(ctx);
	return ret;
}
