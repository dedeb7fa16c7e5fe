#include "storage/pwhash.h"

#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/rand.h>

static const struct pwhash_params defaults = {
	.ln = PWHASH_DEFAULT_LN,
	.r = PWHASH_DEFAULT_R,
	.p = PWHASH_DEFAULT_P,
};

static const char prefix[] = "$scrypt$";

struct parsed {
	struct pwhash_params params;
	uint8_t salt[PWHASH_SALT_MAX];
	size_t salt_len;
	uint8_t hash[PWHASH_HASH_MAX];
	size_t hash_len;
};

static bool params_ok(const struct pwhash_params *pp)
{
	if (pp->ln < 1 || pp->ln > PWHASH_LN_MAX || pp->r < 1 ||
	    pp->r > PWHASH_R_MAX || pp->p < 1 || pp->p > PWHASH_P_MAX)
		return false;
	/* BoringSSL refuses N >= 2^(16 r) (RFC 7914: N < 2^(128 r / 8));
	 * say so here instead of failing later as "scrypt failed". */
	if ((uint64_t)pp->ln >= 16u * (uint64_t)pp->r)
		return false;
	uint64_t n = UINT64_C(1) << pp->ln;
	if (128u * (uint64_t)pp->r * n > PWHASH_MEM_MAX)
		return false;
	if (n * pp->r * pp->p > PWHASH_WORK_MAX)
		return false;
	return true;
}

static int run_scrypt(const struct pwhash_params *pp, const char *password,
		      size_t password_len, const uint8_t *salt, size_t salt_len,
		      uint8_t *out, size_t out_len)
{
	uint64_t n = UINT64_C(1) << pp->ln;
	/* BoringSSL's own accounting, checked exactly (one byte less
	 * fails): V is N blocks of 128 r bytes, B is p of them, plus one
	 * for T. Its default limit (32 MiB when max_mem is 0) is 2 KiB short
	 * for N = 2^15, r = 8. Bounded by params_ok. */
	size_t max_mem = (size_t)(128u * (uint64_t)pp->r * (n + pp->p + 1));

	if (EVP_PBE_scrypt(password_len ? password : "", password_len, salt,
			   salt_len, n, pp->r, pp->p, max_mem, out,
			   out_len) != 1) {
		/* Do not leave the failure on this thread's queue for the
		 * next TLS call to trip over. */
		ERR_clear_error();
		return -1;
	}
	return 0;
}

/* Standard base64 alphabet, no padding. */
static const char b64chars[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t b64_len(size_t n)
{
	return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
}

static void b64_encode(char *dst, const uint8_t *src, size_t n)
{
	size_t i = 0;

	for (; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8 |
			     src[i + 2];
		*dst++ = b64chars[v >> 18];
		*dst++ = b64chars[(v >> 12) & 63];
		*dst++ = b64chars[(v >> 6) & 63];
		*dst++ = b64chars[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)src[i] << 16;
		*dst++ = b64chars[v >> 18];
		*dst++ = b64chars[(v >> 12) & 63];
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8;
		*dst++ = b64chars[v >> 18];
		*dst++ = b64chars[(v >> 12) & 63];
		*dst++ = b64chars[(v >> 6) & 63];
	}
}

static int b64_val(uint8_t c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Strict decoding: alphabet only, no padding, no impossible length, and
 * the unused low bits of the last character must be zero, so that every
 * byte string has exactly one accepted encoding. */
static int b64_decode(const char *src, size_t n, uint8_t *dst, size_t max,
		      size_t *len_r)
{
	size_t out = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
	uint32_t acc = 0;
	unsigned bits = 0;
	size_t o = 0;

	if (n % 4 == 1 || out > max)
		return -1;
	for (size_t i = 0; i < n; i++) {
		int v = b64_val((uint8_t)src[i]);
		if (v < 0)
			return -1;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			dst[o++] = (uint8_t)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	if (acc != 0)
		return -1;
	*len_r = o;
	return 0;
}

/* Decimal without sign or leading zeros, at most 10 digits, <= UINT32_MAX.
 * Advances *s. */
static int parse_u32(const char **s, uint32_t *v_r)
{
	const char *p = *s;
	uint64_t v = 0;
	size_t n = 0;

	while (p[n] >= '0' && p[n] <= '9') {
		if (n == 10)
			return -1;
		v = v * 10 + (uint64_t)(p[n] - '0');
		n++;
	}
	if (n == 0 || (n > 1 && p[0] == '0') || v > UINT32_MAX)
		return -1;
	*v_r = (uint32_t)v;
	*s = p + n;
	return 0;
}

static int expect(const char **s, const char *lit)
{
	size_t n = strlen(lit);
	if (strncmp(*s, lit, n) != 0)
		return -1;
	*s += n;
	return 0;
}

static int parse(const char *s, struct parsed *r)
{
	const char *end;

	if (s == NULL || expect(&s, prefix) < 0 || expect(&s, "ln=") < 0 ||
	    parse_u32(&s, &r->params.ln) < 0 || expect(&s, ",r=") < 0 ||
	    parse_u32(&s, &r->params.r) < 0 || expect(&s, ",p=") < 0 ||
	    parse_u32(&s, &r->params.p) < 0 || expect(&s, "$") < 0)
		return -1;
	end = strchr(s, '$');
	if (end == NULL ||
	    b64_decode(s, (size_t)(end - s), r->salt, sizeof(r->salt),
		       &r->salt_len) < 0)
		return -1;
	s = end + 1;
	if (b64_decode(s, strlen(s), r->hash, sizeof(r->hash),
		       &r->hash_len) < 0)
		return -1;
	if (r->salt_len < PWHASH_SALT_MIN || r->hash_len < PWHASH_HASH_MIN)
		return -1;
	return 0;
}

int pwhash_create(const char *password, size_t password_len,
		  const struct pwhash_params *params, char *out,
		  size_t out_len, const char **error_r)
{
	const struct pwhash_params *pp = params ? params : &defaults;
	uint8_t salt[PWHASH_SALT_LEN], hash[PWHASH_HASH_LEN];
	char head[64];
	int hlen;

	if (out_len > 0)
		out[0] = '\0';
	if (!params_ok(pp)) {
		*error_r = "scrypt parameters out of bounds";
		return -1;
	}
	hlen = snprintf(head, sizeof(head), "%sln=%u,r=%u,p=%u$", prefix,
			(unsigned)pp->ln, (unsigned)pp->r, (unsigned)pp->p);
	size_t need = (size_t)hlen + b64_len(sizeof(salt)) + 1 +
		      b64_len(sizeof(hash)) + 1;
	if (need > out_len) {
		*error_r = "output buffer too small for password hash";
		return -1;
	}
	RAND_bytes(salt, sizeof(salt));
	if (run_scrypt(pp, password, password_len, salt, sizeof(salt), hash,
		       sizeof(hash)) < 0) {
		OPENSSL_cleanse(hash, sizeof(hash));
		*error_r = "scrypt failed";
		return -1;
	}
	char *o = out;
	memcpy(o, head, (size_t)hlen);
	o += hlen;
	b64_encode(o, salt, sizeof(salt));
	o += b64_len(sizeof(salt));
	*o++ = '$';
	b64_encode(o, hash, sizeof(hash));
	o += b64_len(sizeof(hash));
	*o = '\0';
	OPENSSL_cleanse(hash, sizeof(hash));
	return 0;
}

int pwhash_verify(const char *encoded, const char *password,
		  size_t password_len)
{
	struct parsed st;
	uint8_t derived[PWHASH_HASH_MAX];
	int ret;

	if (encoded && strncmp(encoded, prefix, sizeof(prefix) - 1) != 0)
		return pwhash_verify_foreign(encoded, password, password_len);
	if (parse(encoded, &st) < 0 || !params_ok(&st.params))
		return -1;
	if (run_scrypt(&st.params, password, password_len, st.salt,
		       st.salt_len, derived, st.hash_len) < 0) {
		ret = -1;
	} else {
		ret = CRYPTO_memcmp(derived, st.hash, st.hash_len) == 0 ? 1
									: 0;
	}
	OPENSSL_cleanse(derived, sizeof(derived));
	OPENSSL_cleanse(&st, sizeof(st));
	return ret;
}

bool pwhash_scrypt_valid(const char *encoded)
{
	struct parsed st;
	bool ok = parse(encoded, &st) == 0 && params_ok(&st.params);
	OPENSSL_cleanse(&st, sizeof(st));
	return ok;
}

bool pwhash_needs_rehash(const char *encoded,
			 const struct pwhash_params *params)
{
	const struct pwhash_params *pp = params ? params : &defaults;
	struct parsed st;
	bool ret;

	if (parse(encoded, &st) < 0)
		return true;
	ret = st.params.ln != pp->ln || st.params.r != pp->r ||
	      st.params.p != pp->p || st.salt_len != PWHASH_SALT_LEN ||
	      st.hash_len != PWHASH_HASH_LEN;
	OPENSSL_cleanse(&st, sizeof(st));
	return ret;
}

void pwhash_dummy_verify_params(const struct pwhash_params *params,
				const char *password, size_t password_len)
{
	const struct pwhash_params *pp = params ? params : &defaults;
	/* A fixed salt and expected value: nothing here is secret, the point
	 * is only to do the same work as pwhash_verify, comparison
	 * included. Parsing a stored string costs microseconds next to the
	 * scrypt run, so it is not mimicked. */
	static const uint8_t salt[PWHASH_SALT_LEN] = { 0 };
	static const uint8_t expected[PWHASH_HASH_LEN] = { 0 };
	uint8_t derived[PWHASH_HASH_LEN];
	volatile int sink;

	if (!params_ok(pp))
		pp = &defaults;
	if (run_scrypt(pp, password, password_len, salt, sizeof(salt),
		       derived, sizeof(derived)) == 0)
		sink = CRYPTO_memcmp(derived, expected, sizeof(derived));
	else
		sink = -1;
	(void)sink;
	OPENSSL_cleanse(derived, sizeof(derived));
}

void pwhash_dummy_verify(const char *password, size_t password_len)
{
	pwhash_dummy_verify_params(NULL, password, password_len);
}
