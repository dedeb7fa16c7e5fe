/* Password hashing for user credentials: scrypt (RFC 7914) through
 * BoringSSL's EVP_PBE_scrypt, stored as a PHC-style string:
 *
 *   $scrypt$ln=<log2 N>,r=<r>,p=<p>$<salt>$<hash>
 *
 * salt and hash in standard base64 (A-Z a-z 0-9 + /) without '=' padding.
 * New hashes use a 16-byte salt from RAND_bytes and a 32-byte output, e.g.
 *
 *   $scrypt$ln=15,r=8,p=1$<22 chars>$<43 chars>
 *
 * Defaults: N = 2^15, r = 8, p = 1: 32 MiB and roughly 50-100 ms per hash
 * on current x86 cores. scrypt needs 128 * r * (N + p + 1) bytes, which
 * for the defaults is just above BoringSSL's implicit 32 MiB limit, so the
 * exact requirement is always passed as max_mem.
 *
 * Stored strings are trusted no further than their bounds: verification
 * refuses (returns -1, without running scrypt) any string whose
 * parameters exceed PWHASH_LN_MAX, PWHASH_R_MAX, PWHASH_P_MAX,
 * PWHASH_MEM_MAX bytes of memory or PWHASH_WORK_MAX (N * r * p), or
 * with N >= 2^(16 r) (invalid per RFC 7914, refused by BoringSSL), so a
 * corrupt or hostile row cannot make a login take unbounded memory or
 * time. pwhash_create refuses the same parameters, so it never writes a
 * string that verify would refuse.
 *
 * Passwords are arbitrary octet strings (NUL allowed, length explicit).
 * As with every scrypt/PBKDF2, the password is an HMAC key, so trailing
 * NUL bytes do not change the hash ("pw" and "pw\0" verify alike); the
 * protocol layers must keep refusing NUL in passwords (SASL PLAIN cannot
 * carry one). Nothing here logs; callers must never log passwords or these strings'
 * hash parts either. Derived keys are wiped before returning.
 *
 * Timing and unknown users: a login for a user that does not exist must
 * cost what a login for one that does costs, or response time reveals
 * which accounts exist. The caller does:
 *
 *     const char *stored = user_lookup(name);   // NULL if no such user
 *     int ok;
 *     if (stored != NULL) {
 *             ok = pwhash_verify(stored, pw, pw_len) == 1;
 *     } else {
 *             pwhash_dummy_verify(pw, pw_len);
 *             ok = 0;
 *     }
 *
 * and answers both failures identically. pwhash_dummy_verify runs scrypt
 * with the default parameters, the ones every hash created by the
 * current configuration carries; a deployment that uses other parameters
 * calls pwhash_dummy_verify_params with them. Hashes with old parameters
 * should be upgraded at the next successful login (pwhash_needs_rehash).
 *
 * Imported hashes. Users moved from mailcow or Mailu keep their
 * passwords: pwhash_import takes the hash as Dovecot writes it and
 * stores it in the form pwhash_verify dispatches on:
 *
 *   {BLF-CRYPT}$2y$05$...            -> $2y$05$...   bcrypt (libxcrypt)
 *   {SHA512-CRYPT}$6$[rounds=N$]...  -> $6$...       SHA-512 crypt (libxcrypt)
 *   {SHA256-CRYPT}$5$...             -> $5$...       SHA-256 crypt (libxcrypt)
 *   {ARGON2ID}$argon2id$v=19$m=..    -> $argon2id$.. (libargon2; {ARGON2I} too)
 *   {SSHA256}<base64(sha256(pw . salt) . salt)>  kept as is (BoringSSL);
 *   {SSHA512} likewise; {CRYPT} followed by any of the crypt strings;
 *   a bare crypt string or one of our own $scrypt$ strings as they are.
 *
 * Costs are bounded like scrypt's: bcrypt cost <= PWHASH_BCRYPT_COST_MAX,
 * SHA-crypt rounds <= PWHASH_SHACRYPT_ROUNDS_MAX, Argon2 memory, passes
 * and lanes below the PWHASH_ARGON2_* limits; a string outside them is
 * refused at import and by verify (-1). A foreign hash counts as needing
 * a rehash, so the node replaces it with scrypt at the first successful
 * login (one extra scrypt, once). Passwords with a NUL byte never match
 * a crypt(3) or Argon2 string (those APIs take C strings).
 */
#ifndef STORAGE_PWHASH_H
#define STORAGE_PWHASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pwhash_params {
	uint32_t ln; /* N = 2^ln */
	uint32_t r;
	uint32_t p;
};

#define PWHASH_DEFAULT_LN 15u
#define PWHASH_DEFAULT_R 8u
#define PWHASH_DEFAULT_P 1u

/* Bounds applied to every string verified and every hash created. */
#define PWHASH_LN_MAX 20u
#define PWHASH_R_MAX 32u
#define PWHASH_P_MAX 16u
/* 128 * r * N <= 256 MiB, i.e. 8x the defaults. */
#define PWHASH_MEM_MAX (256u * 1024u * 1024u)
/* N * r * p <= 2^22, i.e. 16x the defaults' scrypt work. */
#define PWHASH_WORK_MAX (UINT64_C(1) << 22)

#define PWHASH_SALT_LEN 16u
#define PWHASH_HASH_LEN 32u
/* Salt and hash lengths accepted when verifying (older or foreign
 * strings); new hashes always use the two lengths above. */
#define PWHASH_SALT_MIN 8u
#define PWHASH_SALT_MAX 64u
#define PWHASH_HASH_MIN 16u
#define PWHASH_HASH_MAX 64u

/* Enough for any string pwhash_create writes, with its NUL. */
#define PWHASH_ENCODED_MAX 128u
/* Longest stored string (imported ones included), with its NUL: the
 * size of struct user_info's pwhash. */
#define PWHASH_STORED_MAX 160u

#define PWHASH_BCRYPT_COST_MAX 14u
#define PWHASH_SHACRYPT_ROUNDS_MAX 500000u
#define PWHASH_ARGON2_MEM_KIB_MAX (256u * 1024u)
#define PWHASH_ARGON2_T_MAX 16u
#define PWHASH_ARGON2_WORK_MAX (UINT64_C(1) << 21) /* m (KiB) * t */

/* Hash `password` with a fresh random salt under `params` (NULL means the
 * defaults) and write the NUL-terminated encoded string to out[out_len].
 * Returns 0, or -1 with a static reason in *error_r (parameters out of
 * bounds, buffer too small, scrypt failure); `out` is then "" if
 * out_len > 0. */
int pwhash_create(const char *password, size_t password_len,
		  const struct pwhash_params *params, char *out,
		  size_t out_len, const char **error_r);

/* Check `password` against the NUL-terminated `encoded` string (scrypt, or
 * an imported scheme, see above). Returns 1
 * on match, 0 on mismatch, -1 if `encoded` is malformed, unsupported or
 * out of bounds (nothing is computed then) or scrypt fails. The hash
 * comparison is constant-time. Treat -1 as a failed login and report the
 * broken row to the operator (the stored string, not the password). */
int pwhash_verify(const char *encoded, const char *password,
		  size_t password_len);

/* True if `encoded` should be replaced by a fresh pwhash_create under
 * `params` (NULL = defaults): other parameters, other salt or hash
 * length, or unparsable. */
bool pwhash_needs_rehash(const char *encoded,
			 const struct pwhash_params *params);

/* Spend what a pwhash_verify of a default-parameter hash spends, and
 * discard the result. For logins naming an unknown user; see above. */
void pwhash_dummy_verify(const char *password, size_t password_len);
/* The same under `params` (NULL = defaults; out-of-bounds params fall
 * back to the defaults). */
void pwhash_dummy_verify_params(const struct pwhash_params *params,
				const char *password, size_t password_len);

/* Normalise an imported hash (`in`, Dovecot style, see above) into out
 * for storage. 0, or -1 with a static reason (unknown scheme, malformed,
 * cost out of bounds, too long). */
int pwhash_import(const char *in, char *out, size_t out_len, const char **error_r);
/* "scrypt", "bcrypt", "sha512-crypt", "sha256-crypt", "argon2id",
 * "argon2i", "ssha256", "ssha512", or NULL for anything else. */
const char *pwhash_scheme(const char *encoded);
/* An encoded $scrypt$ string that verify would accept. */
bool pwhash_scrypt_valid(const char *encoded);
/* pwhash_verify for the imported schemes (pwhash_foreign.c). */
int pwhash_verify_foreign(const char *encoded, const char *password, size_t password_len);

#endif
