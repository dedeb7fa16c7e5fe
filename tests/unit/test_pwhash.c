/* Unit tests for storage/pwhash.c: scrypt password hashes in PHC form. */
#include <stdio.h>
#include <stdlib.h>

#include <openssl/err.h>
#include <openssl/evp.h>

#include "common/base.h"
#include "storage/pwhash.h"

static int failures;

#define CHECK(cond)                                                          \
	do {                                                                 \
		if (!(cond)) {                                               \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, \
				__LINE__, #cond);                            \
			failures++;                                          \
		}                                                            \
	} while (0)

static const struct pwhash_params small = { .ln = 10, .r = 8, .p = 1 };

static int verify_cstr(const char *encoded, const char *pw)
{
	return pwhash_verify(encoded, pw, strlen(pw));
}

/* The library itself: RFC 7914 section 12, third vector. Also shows why
 * pwhash passes max_mem: BoringSSL's implicit 32 MiB limit is just below
 * what N = 2^15, r = 8 needs. */
static void test_library(void)
{
	static const uint8_t want[64] = {
		0xfd, 0xba, 0xbe, 0x1c, 0x9d, 0x34, 0x72, 0x00, 0x78, 0x56,
		0xe7, 0x19, 0x0d, 0x01, 0xe9, 0xfe, 0x7c, 0x6a, 0xd7, 0xcb,
		0xc8, 0x23, 0x78, 0x30, 0xe7, 0x73, 0x76, 0x63, 0x4b, 0x37,
		0x31, 0x62, 0x2e, 0xaf, 0x30, 0xd9, 0x2e, 0x22, 0xa3, 0x88,
		0x6f, 0xf1, 0x09, 0x27, 0x9d, 0x98, 0x30, 0xda, 0xc7, 0x27,
		0xaf, 0xb9, 0x4a, 0x83, 0xee, 0x6d, 0x83, 0x60, 0xcb, 0xdf,
		0xa2, 0xcc, 0x06, 0x40,
	};
	uint8_t out[64];

	CHECK(EVP_PBE_scrypt("password", 8, (const uint8_t *)"NaCl", 4, 1024,
			     8, 16, 0, out, sizeof(out)) == 1);
	CHECK(memcmp(out, want, sizeof(want)) == 0);

	CHECK(EVP_PBE_scrypt("x", 1, (const uint8_t *)"salt", 4, 1u << 15, 8,
			     1, 0, out, 32) == 0);
	ERR_clear_error();
}

/* Expected strings computed with Python's hashlib.scrypt (OpenSSL's
 * implementation), independent of BoringSSL:
 *   hashlib.scrypt(pw, salt=salt, n=1<<ln, r=r, p=p, dklen=...)
 * encoded as standard base64 with the '=' padding stripped. */
struct vec {
	const char *encoded;
	const char *pw;
	size_t pw_len;
};

static const struct vec vecs[] = {
	{ "$scrypt$ln=10,r=8,p=1$bWFpbGNsdXN0ZXItc2FsdA$"
	  "ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
	  "correct horse battery staple", 28 },
	/* UTF-8 with an embedded NUL; salt 00..0f; r = 4, p = 2 */
	{ "$scrypt$ln=10,r=4,p=2$AAECAwQFBgcICQoLDA0ODw$"
	  "1Dgwp9YF503L5S8WChyPMiquzVO6976FytrGBEKQ32Q",
	  "p\xc3\xa4ssw\xc3\xb6rd\0x", 12 },
	/* 8-byte salt */
	{ "$scrypt$ln=10,r=8,p=1$c2FsdHNhbHQ$"
	  "OpMTPOAgmcKMK4dOqnc72Ayf9hrRM/1Ef9FbwP+n9ko",
	  "short salt", 10 },
	/* 64-byte hash */
	{ "$scrypt$ln=10,r=8,p=1$MDEyMzQ1Njc4OWFiY2RlZg$"
	  "ZDG+cZob+gBO1W5XHgD1R625V3/9hRMUjXXV1odpux/t0sdzdrBAcMfbnbLQ6fA12u8"
	  "qTTT/LalwD7Ka2Lwo8w",
	  "long hash", 9 },
	/* empty password */
	{ "$scrypt$ln=10,r=8,p=1$MDEyMzQ1Njc4OWFiY2RlZg$"
	  "a+DZqzJtLcpaYBlmYYFYTY0rT7em/lQafyTt9V/rHuU",
	  "", 0 },
};

static void test_vectors(void)
{
	for (size_t i = 0; i < ARRAY_LEN(vecs); i++) {
		const struct vec *v = &vecs[i];
		if (pwhash_verify(v->encoded, v->pw, v->pw_len) != 1) {
			fprintf(stderr, "vector %zu does not verify\n", i);
			failures++;
		}
		/* A different byte appended (the literal's NUL is skipped:
		 * see test_hmac_nul_padding). */
		char longer[64];
		memcpy(longer, v->pw, v->pw_len);
		longer[v->pw_len] = '!';
		CHECK(pwhash_verify(v->encoded, longer, v->pw_len + 1) == 0);
		CHECK(pwhash_verify(v->encoded, "wrong", 5) == 0);
		if (v->pw_len > 0)
			CHECK(pwhash_verify(v->encoded, v->pw, v->pw_len - 1) ==
			      0);
	}
	/* The embedded NUL counts: the prefix before it is another password. */
	CHECK(pwhash_verify(vecs[1].encoded, "p\xc3\xa4ssw\xc3\xb6rd", 10) == 0);
	/* Only the exact byte string matches: no case folding. */
	CHECK(verify_cstr(vecs[0].encoded, "Correct horse battery staple") == 0);
}

static void test_round_trip(void)
{
	char a[PWHASH_ENCODED_MAX], b[PWHASH_ENCODED_MAX];
	const char *error = NULL;
	const char *pw = "s3cret passw\xc3\xb6rd";

	CHECK(pwhash_create(pw, strlen(pw), &small, a, sizeof(a), &error) == 0);
	CHECK(strncmp(a, "$scrypt$ln=10,r=8,p=1$", 22) == 0);
	CHECK(strlen(a) == 22 + 22 + 1 + 43);
	size_t neq = 0;
	for (const char *c = a; *c; c++)
		neq += *c == '=';
	CHECK(neq == 3); /* ln= r= p=, no base64 padding */
	CHECK(verify_cstr(a, pw) == 1);
	CHECK(verify_cstr(a, "s3cret passw\xc3\xb6rD") == 0);
	CHECK(verify_cstr(a, "") == 0);

	/* Same password, fresh salt: different strings, both verify. */
	CHECK(pwhash_create(pw, strlen(pw), &small, b, sizeof(b), &error) == 0);
	CHECK(strcmp(a, b) != 0);
	CHECK(memcmp(a, b, 22) == 0);
	CHECK(memcmp(a + 22, b + 22, 22) != 0); /* salts differ */
	CHECK(verify_cstr(b, pw) == 1);

	/* Empty password and one with NULs. */
	CHECK(pwhash_create("", 0, &small, a, sizeof(a), &error) == 0);
	CHECK(pwhash_verify(a, "", 0) == 1);
	CHECK(pwhash_verify(a, " ", 1) == 0);
	CHECK(pwhash_create("\0a\0", 3, &small, a, sizeof(a), &error) == 0);
	CHECK(pwhash_verify(a, "\0a\0", 3) == 1);
	CHECK(pwhash_verify(a, "\0b\0", 3) == 0);
	CHECK(pwhash_verify(a, "a", 1) == 0);

	/* Other parameters within bounds. */
	struct pwhash_params other = { .ln = 8, .r = 4, .p = 3 };
	CHECK(pwhash_create(pw, strlen(pw), &other, a, sizeof(a), &error) == 0);
	CHECK(strncmp(a, "$scrypt$ln=8,r=4,p=3$", 21) == 0);
	CHECK(verify_cstr(a, pw) == 1);

	/* Output buffer: exact size works, one less fails cleanly. */
	size_t need = 22 + 22 + 1 + 43 + 1;
	CHECK(pwhash_create(pw, strlen(pw), &small, a, need, &error) == 0);
	memset(b, 'x', sizeof(b));
	error = NULL;
	CHECK(pwhash_create(pw, strlen(pw), &small, b, need - 1, &error) == -1);
	CHECK(error != NULL && strstr(error, "buffer") != NULL);
	CHECK(b[0] == '\0');
	CHECK(pwhash_create(pw, strlen(pw), &small, NULL, 0, &error) == -1);
}

static void test_default_round_trip(void)
{
	char a[PWHASH_ENCODED_MAX];
	const char *error = NULL;

	CHECK(pwhash_create("hunter2", 7, NULL, a, sizeof(a), &error) == 0);
	CHECK(strncmp(a, "$scrypt$ln=15,r=8,p=1$", 22) == 0);
	CHECK(verify_cstr(a, "hunter2") == 1);
	CHECK(verify_cstr(a, "hunter3") == 0);
	CHECK(!pwhash_needs_rehash(a, NULL));
	/* And a default-parameter string made by Python. */
	CHECK(verify_cstr("$scrypt$ln=15,r=8,p=1$MDEyMzQ1Njc4OWFiY2RlZg$"
			  "uxxKkZDwYvoCL7X5zwMK7kebvOfA6i8KE6hU5g/THIM",
			  "hunter2") == 1);
}

static void test_tampered(void)
{
	/* Valid base: vecs[0]. Every variant must be refused as malformed. */
	static const char *const bad[] = {
		"",
		"$",
		"$scrypt$",
		"scrypt$ln=10,r=8,p=1$bWFpbGNsdXN0ZXItc2FsdA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
		"$scrypt2$ln=10,r=8,p=1$bWFpbGNsdXN0ZXItc2FsdA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
		/* argon2id is an imported scheme now (test_pwhash_import); argon2d is not */
		"$argon2d$v=19$m=65536,t=3,p=4$bWFpbGNsdXN0ZXItc2FsdA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
		"$SCRYPT$ln=10,r=8,p=1$bWFpbGNsdXN0ZXItc2FsdA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
		"$scrypt$r=8,ln=10,p=1$bWFpbGNsdXN0ZXItc2FsdA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
		"$scrypt$ln=10,r=8$bWFpbGNsdXN0ZXItc2FsdA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
		"$scrypt$ln=10,r=8,p=1,x=2$bWFpbGNsdXN0ZXItc2FsdA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
		"$scrypt$ln=010,r=8,p=1$bWFpbGNsdXN0ZXItc2FsdA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
		"$scrypt$ln=+10,r=8,p=1$bWFpbGNsdXN0ZXItc2FsdA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
		"$scrypt$ln=-10,r=8,p=1$bWFpbGNsdXN0ZXItc2FsdA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
		"$scrypt$ln= 10,r=8,p=1$bWFpbGNsdXN0ZXItc2FsdA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
		"$scrypt$ln=,r=8,p=1$bWFpbGNsdXN0ZXItc2FsdA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
		"$scrypt$ln=0,r=8,p=1$bWFpbGNsdXN0ZXItc2FsdA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
		"$scrypt$ln=10,r=0,p=1$bWFpbGNsdXN0ZXItc2FsdA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
		"$scrypt$ln=10,r=8,p=0$bWFpbGNsdXN0ZXItc2FsdA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
		"$scrypt$ln=4294967306,r=8,p=1$bWFpbGNsdXN0ZXItc2FsdA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
		"$scrypt$ln=99999999999999999999,r=8,p=1$bWFpbGNsdXN0ZXItc2FsdA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
		/* no salt / no hash / missing separator */
		"$scrypt$ln=10,r=8,p=1$$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
		"$scrypt$ln=10,r=8,p=1$bWFpbGNsdXN0ZXItc2FsdA$",
		"$scrypt$ln=10,r=8,p=1$bWFpbGNsdXN0ZXItc2FsdA",
		"$scrypt$ln=10,r=8,p=1$bWFpbGNsdXN0ZXItc2FsdAZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
		/* padding, foreign alphabets, whitespace, trailing data */
		"$scrypt$ln=10,r=8,p=1$bWFpbGNsdXN0ZXItc2FsdA==$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA=",
		"$scrypt$ln=10,r=8,p=1$bWFpbGNsdXN0ZXItc2FsdA$ZWr-TbNvMUoDlbNAxyVr6d60_msxops-DvniX5Lg4vA",
		"$scrypt$ln=10,r=8,p=1$bWFpbGNsdXN0ZXItc2FsdA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA\n",
		"$scrypt$ln=10,r=8,p=1$bWFpbGNsdXN0ZXItc2FsdA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA$",
		"$scrypt$ln=10,r=8,p=1$bWFpbGNsdXN0ZXItc2FsdA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA$x",
		"$scrypt$ln=10,r=8,p=1$bWFpbGNs dXN0ZXItc2FsdA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
		/* impossible base64 length (4k+1) */
		"$scrypt$ln=10,r=8,p=1$bWFpbGNsdXN0ZXItc2FsdA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vAAA",
		/* non-zero unused bits in the last character */
		"$scrypt$ln=10,r=8,p=1$bWFpbGNsdXN0ZXItc2FsdA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vB",
		"$scrypt$ln=10,r=8,p=1$bWFpbGNsdXN0ZXItc2FsdB$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
		/* salt shorter than 8 bytes ("NaCl"), hash shorter than 16 */
		"$scrypt$ln=10,r=8,p=1$TmFDbA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
		"$scrypt$ln=10,r=8,p=1$bWFpbGNsdXN0ZXItc2FsdA$ZWr+TbNvMUoDlbNA",
		/* salt longer than 64 bytes (66 bytes = 88 chars) */
		"$scrypt$ln=10,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
		/* hash longer than 64 bytes (66) */
		"$scrypt$ln=10,r=8,p=1$bWFpbGNsdXN0ZXItc2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
	};

	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		int ret = verify_cstr(bad[i], "correct horse battery staple");
		if (ret != -1) {
			fprintf(stderr, "tampered %zu returned %d: %s\n", i, ret,
				bad[i]);
			failures++;
		}
		CHECK(pwhash_needs_rehash(bad[i], &small));
	}
	CHECK(pwhash_verify(NULL, "x", 1) == -1);
	CHECK(pwhash_needs_rehash(NULL, NULL));

	/* Well-formed but altered values are a mismatch, not malformed:
	 * last hash character 'A' -> 'E' keeps the unused bits zero. */
	CHECK(verify_cstr("$scrypt$ln=10,r=8,p=1$bWFpbGNsdXN0ZXItc2FsdA$"
			  "ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vE",
			  "correct horse battery staple") == 0);
	CHECK(verify_cstr("$scrypt$ln=10,r=8,p=1$bWFpbGNsdXN0ZXItc2FsdQ$"
			  "ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
			  "correct horse battery staple") == 0);
	CHECK(verify_cstr("$scrypt$ln=11,r=8,p=1$bWFpbGNsdXN0ZXItc2FsdA$"
			  "ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
			  "correct horse battery staple") == 0);
	CHECK(verify_cstr("$scrypt$ln=10,r=8,p=2$bWFpbGNsdXN0ZXItc2FsdA$"
			  "ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
			  "correct horse battery staple") == 0);
}

static void test_bounds(void)
{
	/* Parameters a hostile row could carry. Each must be refused before
	 * scrypt runs: ln=21 r=8 would want 2 GiB, ln=30 128 GiB. */
	static const char *const hostile[] = {
		"$scrypt$ln=21,r=8,p=1$bWFpbGNsdXN0ZXItc2FsdA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
		"$scrypt$ln=30,r=8,p=1$bWFpbGNsdXN0ZXItc2FsdA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
		"$scrypt$ln=63,r=1,p=1$bWFpbGNsdXN0ZXItc2FsdA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
		"$scrypt$ln=64,r=1,p=1$bWFpbGNsdXN0ZXItc2FsdA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
		/* within ln bound but 1 GiB of memory */
		"$scrypt$ln=20,r=8,p=1$bWFpbGNsdXN0ZXItc2FsdA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
		"$scrypt$ln=10,r=33,p=1$bWFpbGNsdXN0ZXItc2FsdA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
		"$scrypt$ln=10,r=8,p=17$bWFpbGNsdXN0ZXItc2FsdA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
		"$scrypt$ln=10,r=4294967295,p=4294967295$bWFpbGNsdXN0ZXItc2FsdA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
		/* work N*r*p = 2^23 > 2^22 */
		"$scrypt$ln=15,r=16,p=16$bWFpbGNsdXN0ZXItc2FsdA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
		/* N >= 2^(16 r), which BoringSSL would refuse anyway */
		"$scrypt$ln=16,r=1,p=1$bWFpbGNsdXN0ZXItc2FsdA$ZWr+TbNvMUoDlbNAxyVr6d60/msxops+DvniX5Lg4vA",
	};
	for (size_t i = 0; i < ARRAY_LEN(hostile); i++) {
		uint64_t t0 = time_mono_ns();
		int ret = verify_cstr(hostile[i], "x");
		uint64_t dt = time_mono_ns() - t0;
		if (ret != -1) {
			fprintf(stderr, "hostile %zu returned %d\n", i, ret);
			failures++;
		}
		/* Refusing costs parsing only; ln=10 scrypt alone takes
		 * about a millisecond, so 20 ms here means it ran. */
		if (dt > 20 * 1000 * 1000)
			printf("warning: hostile string %zu took %.1f ms to refuse\n",
			       i, (double)dt / 1e6);
	}

	/* create refuses what verify would refuse. */
	static const struct pwhash_params bad_params[] = {
		{ 0, 8, 1 },  { 21, 8, 1 }, { 20, 8, 1 },  { 10, 0, 1 },
		{ 10, 8, 0 }, { 10, 33, 1 }, { 10, 8, 17 }, { 15, 16, 16 },
		{ 16, 1, 1 }, { 17, 1, 1 },
	};
	for (size_t i = 0; i < ARRAY_LEN(bad_params); i++) {
		char out[PWHASH_ENCODED_MAX];
		const char *error = NULL;
		CHECK(pwhash_create("x", 1, &bad_params[i], out, sizeof(out),
				    &error) == -1);
		CHECK(error != NULL && strstr(error, "bounds") != NULL);
		CHECK(out[0] == '\0');
	}
	/* The edge that is allowed: ln=15 with r=1 (4 MiB). */
	struct pwhash_params edge = { .ln = 15, .r = 1, .p = 1 };
	char out[PWHASH_ENCODED_MAX];
	const char *error = NULL;
	CHECK(pwhash_create("x", 1, &edge, out, sizeof(out), &error) == 0);
	CHECK(verify_cstr(out, "x") == 1);
}

/* scrypt keys PBKDF2-HMAC-SHA256 with the password, and HMAC pads short
 * keys with zeros, so trailing NUL bytes do not change the hash (true of
 * every scrypt and PBKDF2; Python's hashlib agrees). Documented in
 * pwhash.h; the protocol layers never pass NULs in passwords (SASL PLAIN
 * uses NUL as its separator, IMAP/POP3 strings cannot carry one). */
static void test_hmac_nul_padding(void)
{
	char a[PWHASH_ENCODED_MAX];
	const char *error;

	CHECK(pwhash_create("pw", 2, &small, a, sizeof(a), &error) == 0);
	CHECK(pwhash_verify(a, "pw", 2) == 1);
	CHECK(pwhash_verify(a, "pw\0", 3) == 1);
	CHECK(pwhash_verify(a, "\0pw", 3) == 0);
}

static void test_needs_rehash(void)
{
	char a[PWHASH_ENCODED_MAX];
	const char *error;
	struct pwhash_params p;

	CHECK(pwhash_create("pw", 2, &small, a, sizeof(a), &error) == 0);
	CHECK(!pwhash_needs_rehash(a, &small));
	CHECK(pwhash_needs_rehash(a, NULL)); /* defaults are ln=15 */
	p = small, p.ln = 11;
	CHECK(pwhash_needs_rehash(a, &p));
	p = small, p.r = 4;
	CHECK(pwhash_needs_rehash(a, &p));
	p = small, p.p = 2;
	CHECK(pwhash_needs_rehash(a, &p));
	/* Same parameters but an 8-byte salt or a 64-byte hash. */
	CHECK(pwhash_needs_rehash(vecs[2].encoded, &small));
	CHECK(pwhash_needs_rehash(vecs[3].encoded, &small));
	CHECK(!pwhash_needs_rehash(vecs[0].encoded, &small));
}

static double time_ms(void (*fn)(void *), void *arg)
{
	uint64_t t0 = time_mono_ns();
	fn(arg);
	return (double)(time_mono_ns() - t0) / 1e6;
}

static void run_verify(void *arg)
{
	CHECK(pwhash_verify(arg, "wrong password", 14) == 0);
}

static void run_dummy(void *arg)
{
	UNUSED(arg);
	pwhash_dummy_verify("wrong password", 14);
}

static void test_dummy_timing(void)
{
	char a[PWHASH_ENCODED_MAX];
	const char *error;
	double tv = 1e30, td = 1e30;

	CHECK(pwhash_create("right password", 14, NULL, a, sizeof(a),
			    &error) == 0);
	/* Best of three each, interleaved, on a shared machine. */
	for (int i = 0; i < 3; i++) {
		tv = MIN(tv, time_ms(run_verify, a));
		td = MIN(td, time_ms(run_dummy, NULL));
	}
	printf("timing: verify %.1f ms, dummy_verify %.1f ms (ratio %.2f)\n",
	       tv, td, td / tv);
	if (td > 3 * tv || tv > 3 * td)
		printf("warning: dummy_verify and verify differ by more than 3x\n");

	/* Out-of-bounds params fall back to the defaults rather than running
	 * something unbounded. */
	struct pwhash_params huge = { .ln = 30, .r = 8, .p = 1 };
	pwhash_dummy_verify_params(&huge, "x", 1);
	pwhash_dummy_verify_params(&small, "x", 1);
}

int main(void)
{
	test_library();
	test_vectors();
	test_round_trip();
	test_default_round_trip();
	test_tampered();
	test_bounds();
	test_hmac_nul_padding();
	test_needs_rehash();
	test_dummy_timing();
	if (failures) {
		fprintf(stderr, "%d failure(s)\n", failures);
		return 1;
	}
	printf("test_pwhash: all passed\n");
	return 0;
}
