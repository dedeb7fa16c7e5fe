/* Password hashes written by other mail systems (see storage/pwhash.h,
 * "Imported hashes"): bcrypt and SHA-crypt through libxcrypt's crypt_r,
 * Argon2 through libargon2, salted SHA-2 through BoringSSL. Every
 * parameter that sets the cost is bounded before anything runs. */
#include <crypt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <argon2.h>
#include <openssl/base64.h>
#include <openssl/mem.h>
#include <openssl/sha.h>

#include "storage/pwhash.h"

enum scheme {
	SCHEME_NONE,
	SCHEME_SCRYPT,
	SCHEME_BCRYPT,
	SCHEME_SHA256_CRYPT,
	SCHEME_SHA512_CRYPT,
	SCHEME_ARGON2ID,
	SCHEME_ARGON2I,
	SCHEME_SSHA256,
	SCHEME_SSHA512,
};

static bool starts(const char *s, const char *p)
{
	return strncmp(s, p, strlen(p)) == 0;
}

static enum scheme scheme_of(const char *s)
{
	if (starts(s, "$scrypt$"))
		return SCHEME_SCRYPT;
	if (starts(s, "$2a$") || starts(s, "$2b$") || starts(s, "$2y$"))
		return SCHEME_BCRYPT;
	if (starts(s, "$5$"))
		return SCHEME_SHA256_CRYPT;
	if (starts(s, "$6$"))
		return SCHEME_SHA512_CRYPT;
	if (starts(s, "$argon2id$"))
		return SCHEME_ARGON2ID;
	if (starts(s, "$argon2i$"))
		return SCHEME_ARGON2I;
	if (starts(s, "{SSHA256}"))
		return SCHEME_SSHA256;
	if (starts(s, "{SSHA512}"))
		return SCHEME_SSHA512;
	return SCHEME_NONE;
}

const char *pwhash_scheme(const char *encoded)
{
	switch (scheme_of(encoded ? encoded : "")) {
	case SCHEME_SCRYPT: return "scrypt";
	case SCHEME_BCRYPT: return "bcrypt";
	case SCHEME_SHA256_CRYPT: return "sha256-crypt";
	case SCHEME_SHA512_CRYPT: return "sha512-crypt";
	case SCHEME_ARGON2ID: return "argon2id";
	case SCHEME_ARGON2I: return "argon2i";
	case SCHEME_SSHA256: return "ssha256";
	case SCHEME_SSHA512: return "ssha512";
	default: return NULL;
	}
}

/* crypt(3)'s alphabet. */
static bool crypt_chars(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '/'))
			return false;
	}
	return true;
}

static bool b64_chars(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '+' || c == '/' || c == '='))
			return false;
	}
	return true;
}

/* "$2y$NN$" + 22 salt + 31 hash characters, cost within bounds. */
static bool bcrypt_ok(const char *s)
{
	if (strlen(s) != 60 || s[6] != '$' || s[4] < '0' || s[4] > '9' || s[5] < '0' ||
	    s[5] > '9')
		return false;
	int cost = (s[4] - '0') * 10 + (s[5] - '0');
	return cost >= 4 && cost <= (int)PWHASH_BCRYPT_COST_MAX && crypt_chars(s + 7, 53);
}

/* "$5$" or "$6$", optional "rounds=N$", salt (<= 16), "$", hash. */
static bool shacrypt_ok(const char *s, size_t hash_len)
{
	const char *p = s + 3;
	if (starts(p, "rounds=")) {
		char *end;
		unsigned long r = strtoul(p + 7, &end, 10);
		if (end == p + 7 || *end != '$' || r < 1000 || r > PWHASH_SHACRYPT_ROUNDS_MAX)
			return false;
		p = end + 1;
	}
	const char *d = strchr(p, '$');
	if (!d || d == p || d - p > 16 || !crypt_chars(p, (size_t)(d - p)))
		return false;
	return strlen(d + 1) == hash_len && crypt_chars(d + 1, hash_len);
}

/* "$argon2id$v=19$m=M,t=T,p=P$salt$hash" with bounded m, t, p. */
static bool argon2_ok(const char *s, enum scheme sc)
{
	const char *p = s + (sc == SCHEME_ARGON2ID ? 10 : 9);
	unsigned v, m, t, lanes;
	int used = 0;
	if (sscanf(p, "v=%u$m=%u,t=%u,p=%u$%n", &v, &m, &t, &lanes, &used) != 4 || used == 0)
		return false;
	if (v != 19 && v != 16)
		return false;
	if (m < 8 || m > PWHASH_ARGON2_MEM_KIB_MAX || t < 1 || t > PWHASH_ARGON2_T_MAX ||
	    lanes < 1 || lanes > PWHASH_P_MAX || (uint64_t)m * t > PWHASH_ARGON2_WORK_MAX)
		return false;
	p += used;
	const char *d = strchr(p, '$');
	if (!d || d - p < 8 || d - p > 88 || !b64_chars(p, (size_t)(d - p)))
		return false;
	size_t hl = strlen(d + 1);
	return hl >= 16 && hl <= 88 && b64_chars(d + 1, hl);
}

/* {SSHAxxx}: base64 of digest || salt. */
static int ssha_decode(const char *s, size_t dlen, uint8_t *out, size_t *out_len)
{
	const char *b = strchr(s, '}') + 1;
	size_t n = strlen(b);
	if (n == 0 || n > 4 * ((dlen + PWHASH_SALT_MAX + 2) / 3) || !b64_chars(b, n))
		return -1;
	if (!EVP_DecodeBase64(out, out_len, dlen + PWHASH_SALT_MAX, (const uint8_t *)b, n))
		return -1;
	if (*out_len <= dlen)
		return -1; /* no salt */
	return 0;
}

static bool valid(const char *s)
{
	switch (scheme_of(s)) {
	case SCHEME_BCRYPT: return bcrypt_ok(s);
	case SCHEME_SHA256_CRYPT: return shacrypt_ok(s, 43);
	case SCHEME_SHA512_CRYPT: return shacrypt_ok(s, 86);
	case SCHEME_ARGON2ID:
	case SCHEME_ARGON2I: return argon2_ok(s, scheme_of(s));
	case SCHEME_SSHA256:
	case SCHEME_SSHA512: {
		uint8_t tmp[SHA512_DIGEST_LENGTH + PWHASH_SALT_MAX];
		size_t n;
		size_t dlen = scheme_of(s) == SCHEME_SSHA256 ? SHA256_DIGEST_LENGTH
							      : SHA512_DIGEST_LENGTH;
		return ssha_decode(s, dlen, tmp, &n) == 0;
	}
	default: return false;
	}
}

/* Dovecot's scheme names and what their strings must look like. */
static const struct {
	const char *prefix;
	enum scheme want;
	bool keep_prefix; /* the string after it is not self-describing */
} dovecot[] = {
	{ "{BLF-CRYPT}", SCHEME_BCRYPT, false },
	{ "{SHA512-CRYPT}", SCHEME_SHA512_CRYPT, false },
	{ "{SHA256-CRYPT}", SCHEME_SHA256_CRYPT, false },
	{ "{ARGON2ID}", SCHEME_ARGON2ID, false },
	{ "{ARGON2I}", SCHEME_ARGON2I, false },
	{ "{SSHA256}", SCHEME_SSHA256, true },
	{ "{SSHA256.b64}", SCHEME_SSHA256, true },
	{ "{SSHA512}", SCHEME_SSHA512, true },
	{ "{SSHA512.b64}", SCHEME_SSHA512, true },
	{ "{CRYPT}", SCHEME_NONE, false }, /* any crypt string below */
};

int pwhash_import(const char *in, char *out, size_t out_len, const char **error_r)
{
	const char *body = in;
	enum scheme want = SCHEME_NONE;
	bool prefixed = false;
	if (out_len)
		out[0] = '\0';
	if (in[0] == '{') {
		size_t i;
		for (i = 0; i < sizeof(dovecot) / sizeof(dovecot[0]); i++) {
			size_t pl = strlen(dovecot[i].prefix);
			if (strncasecmp(in, dovecot[i].prefix, pl) == 0) {
				want = dovecot[i].want;
				body = in + pl;
				prefixed = true;
				break;
			}
		}
		if (i == sizeof(dovecot) / sizeof(dovecot[0])) {
			*error_r = "unsupported password scheme (want BLF-CRYPT, SHA512-CRYPT, "
				   "SHA256-CRYPT, ARGON2ID, ARGON2I, SSHA256, SSHA512 or scrypt)";
			return -1;
		}
	}
	char tmp[PWHASH_STORED_MAX];
	if (prefixed && (want == SCHEME_SSHA256 || want == SCHEME_SSHA512)) {
		/* Stored with the plain prefix: the body alone is ambiguous. */
		int w = snprintf(tmp, sizeof(tmp), "%s%s",
				 want == SCHEME_SSHA256 ? "{SSHA256}" : "{SSHA512}", body);
		if (w < 0 || (size_t)w >= sizeof(tmp)) {
			*error_r = "password hash too long";
			return -1;
		}
	} else {
		if (strlen(body) >= sizeof(tmp)) {
			*error_r = "password hash too long";
			return -1;
		}
		snprintf(tmp, sizeof(tmp), "%s", body);
	}
	enum scheme got = scheme_of(tmp);
	if (got == SCHEME_NONE || (want != SCHEME_NONE && got != want)) {
		*error_r = got == SCHEME_NONE ? "not a password hash this server knows"
					      : "the hash does not match its {SCHEME} prefix";
		return -1;
	}
	if (got == SCHEME_SCRYPT ? !pwhash_scrypt_valid(tmp) : !valid(tmp)) {
		*error_r = "malformed password hash, or its cost is out of bounds";
		return -1;
	}
	if (strlen(tmp) >= out_len) {
		*error_r = "output buffer too small for password hash";
		return -1;
	}
	snprintf(out, out_len, "%s", tmp);
	return 0;
}

static int verify_crypt(const char *encoded, const char *pw)
{
	struct crypt_data *cd = calloc(1, sizeof(*cd));
	if (!cd)
		abort();
	const char *res = crypt_r(pw, encoded, cd);
	int ret;
	size_t n = strlen(encoded);
	if (!res || res[0] == '*')
		ret = -1;
	else
		ret = strlen(res) == n && CRYPTO_memcmp(res, encoded, n) == 0 ? 1 : 0;
	OPENSSL_cleanse(cd, sizeof(*cd));
	free(cd);
	return ret;
}

static int verify_ssha(const char *encoded, const char *pw, size_t pw_len, bool sha512)
{
	size_t dlen = sha512 ? SHA512_DIGEST_LENGTH : SHA256_DIGEST_LENGTH;
	uint8_t raw[SHA512_DIGEST_LENGTH + PWHASH_SALT_MAX], digest[SHA512_DIGEST_LENGTH];
	size_t n;
	if (ssha_decode(encoded, dlen, raw, &n) < 0)
		return -1;
	if (sha512) {
		SHA512_CTX ctx;
		SHA512_Init(&ctx);
		SHA512_Update(&ctx, pw, pw_len);
		SHA512_Update(&ctx, raw + dlen, n - dlen);
		SHA512_Final(digest, &ctx);
	} else {
		SHA256_CTX ctx;
		SHA256_Init(&ctx);
		SHA256_Update(&ctx, pw, pw_len);
		SHA256_Update(&ctx, raw + dlen, n - dlen);
		SHA256_Final(digest, &ctx);
	}
	int ret = CRYPTO_memcmp(digest, raw, dlen) == 0 ? 1 : 0;
	OPENSSL_cleanse(digest, sizeof(digest));
	OPENSSL_cleanse(raw, sizeof(raw));
	return ret;
}

int pwhash_verify_foreign(const char *encoded, const char *password, size_t password_len)
{
	enum scheme sc = scheme_of(encoded);
	if (sc == SCHEME_NONE || sc == SCHEME_SCRYPT || !valid(encoded))
		return -1;
	if (sc == SCHEME_SSHA256 || sc == SCHEME_SSHA512)
		return verify_ssha(encoded, password, password_len, sc == SCHEME_SSHA512);
	/* crypt(3) and libargon2's encoded API take C strings. */
	if (memchr(password, '\0', password_len))
		return 0;
	char *pw = malloc(password_len + 1);
	if (!pw)
		abort();
	memcpy(pw, password, password_len);
	pw[password_len] = '\0';
	int ret;
	if (sc == SCHEME_ARGON2ID || sc == SCHEME_ARGON2I) {
		int r = sc == SCHEME_ARGON2ID ? argon2id_verify(encoded, pw, password_len)
					      : argon2i_verify(encoded, pw, password_len);
		ret = r == ARGON2_OK ? 1 : r == ARGON2_VERIFY_MISMATCH ? 0 : -1;
	} else {
		ret = verify_crypt(encoded, pw);
	}
	OPENSSL_cleanse(pw, password_len);
	free(pw);
	return ret;
}
