/* Unit tests for imported password hashes (storage/pwhash_foreign.c):
 * Dovecot's BLF-CRYPT, SHA512-CRYPT, SHA256-CRYPT, ARGON2ID/ARGON2I,
 * SSHA256/SSHA512 strings as mailcow and Mailu store them.
 *
 * The vectors were made with tools independent of this code, for the
 * password "correct horse battery staple":
 *   bcrypt        python3 crypt.crypt(pw, "$2b$05$abcdefghijklmnopqrstuu")
 *                 ($2y$ is the same algorithm under PHP's name, as Dovecot writes it)
 *   sha512-crypt  openssl passwd -6 -salt Qw8x.Zp1 pw; python3 crypt with rounds=10000
 *   sha256-crypt  openssl passwd -5 -salt Qw8x.Zp1 pw
 *   argon2id/i    echo -n pw | argon2 saltsaltsalt16b -id -t 3 -m 12 -p 1 -e
 *                 (and -i -t 2 -m 10 -p 2)
 *   ssha256/512   base64(hashlib.sha256(pw + salt).digest() + salt),
 *                 salt = a1b2c3d4e5f60718 */
#include <stdio.h>
#include <string.h>

#include "storage/pwhash.h"
#include "tests/unit/check.h"

static const char PW[] = "correct horse battery staple";

struct vec {
	const char *dovecot;   /* as exported */
	const char *stored;    /* what pwhash_import keeps */
	const char *scheme;
};

static const struct vec vecs[] = {
	{ "{BLF-CRYPT}$2y$05$abcdefghijklmnopqrstuuFiPhXf1sVd3pCCRO.uVh34H/qI/ZsuS",
	  "$2y$05$abcdefghijklmnopqrstuuFiPhXf1sVd3pCCRO.uVh34H/qI/ZsuS", "bcrypt" },
	{ "{BLF-CRYPT}$2b$05$abcdefghijklmnopqrstuuFiPhXf1sVd3pCCRO.uVh34H/qI/ZsuS",
	  "$2b$05$abcdefghijklmnopqrstuuFiPhXf1sVd3pCCRO.uVh34H/qI/ZsuS", "bcrypt" },
	{ "{SHA512-CRYPT}$6$Qw8x.Zp1$9O4P.SMJB7R47GvcuXGLluVKqyfn3A/niIasF.ezSyq67zVogQKJqMI/4/"
	  "qVBJsByehpPGTRTEIRpOsyXJ5T8/",
	  "$6$Qw8x.Zp1$9O4P.SMJB7R47GvcuXGLluVKqyfn3A/niIasF.ezSyq67zVogQKJqMI/4/"
	  "qVBJsByehpPGTRTEIRpOsyXJ5T8/",
	  "sha512-crypt" },
	{ "{SHA512-CRYPT}$6$rounds=10000$Qw8xZp1Lk$rFVUBAfd.KK87/Nywn6kqzZlUU6LENF.oC9iM.cb."
	  "IVlOm9WogoCO9pQw0Aqhcu9uTR6MjK9F/sbn8zMv3tJk1",
	  "$6$rounds=10000$Qw8xZp1Lk$rFVUBAfd.KK87/Nywn6kqzZlUU6LENF.oC9iM.cb."
	  "IVlOm9WogoCO9pQw0Aqhcu9uTR6MjK9F/sbn8zMv3tJk1",
	  "sha512-crypt" },
	{ "{SHA256-CRYPT}$5$Qw8x.Zp1$xqHqoPoTfsE9FZYn6KYaKi/HJwCV9fPSVg5v2CEYin9",
	  "$5$Qw8x.Zp1$xqHqoPoTfsE9FZYn6KYaKi/HJwCV9fPSVg5v2CEYin9", "sha256-crypt" },
	{ "{ARGON2ID}$argon2id$v=19$m=4096,t=3,p=1$c2FsdHNhbHRzYWx0MTZi$"
	  "JNY8BvpJ+u4hWuoecaC/DVxomYKqV4jc9x6DnmiM8HM",
	  "$argon2id$v=19$m=4096,t=3,p=1$c2FsdHNhbHRzYWx0MTZi$"
	  "JNY8BvpJ+u4hWuoecaC/DVxomYKqV4jc9x6DnmiM8HM",
	  "argon2id" },
	{ "{ARGON2I}$argon2i$v=19$m=1024,t=2,p=2$c2FsdHNhbHRzYWx0MTZi$"
	  "hZ7HDJRW6d24i6OncS/o0GE+dD7VAk8f7iiuhFpPsuo",
	  "$argon2i$v=19$m=1024,t=2,p=2$c2FsdHNhbHRzYWx0MTZi$"
	  "hZ7HDJRW6d24i6OncS/o0GE+dD7VAk8f7iiuhFpPsuo",
	  "argon2i" },
	{ "{SSHA256}PdDwo/zjNW4fChnEKQMy2pZSShtJAyJXonyy92vIpUShssPU5fYHGA==",
	  "{SSHA256}PdDwo/zjNW4fChnEKQMy2pZSShtJAyJXonyy92vIpUShssPU5fYHGA==", "ssha256" },
	{ "{SSHA512}xUMESH157N1hIur/mcief3P7Og9CuOcrw27Pmu7pMYqQncIZywgF3Pz737pxcotVnelp2njAhgKs"
	  "sZB2ar4LOqGyw9Tl9gcY",
	  "{SSHA512}xUMESH157N1hIur/mcief3P7Og9CuOcrw27Pmu7pMYqQncIZywgF3Pz737pxcotVnelp2njAhgKs"
	  "sZB2ar4LOqGyw9Tl9gcY",
	  "ssha512" },
	/* {CRYPT} and a bare crypt string are taken as they are. */
	{ "{CRYPT}$5$Qw8x.Zp1$xqHqoPoTfsE9FZYn6KYaKi/HJwCV9fPSVg5v2CEYin9",
	  "$5$Qw8x.Zp1$xqHqoPoTfsE9FZYn6KYaKi/HJwCV9fPSVg5v2CEYin9", "sha256-crypt" },
	{ "$6$Qw8x.Zp1$9O4P.SMJB7R47GvcuXGLluVKqyfn3A/niIasF.ezSyq67zVogQKJqMI/4/"
	  "qVBJsByehpPGTRTEIRpOsyXJ5T8/",
	  "$6$Qw8x.Zp1$9O4P.SMJB7R47GvcuXGLluVKqyfn3A/niIasF.ezSyq67zVogQKJqMI/4/"
	  "qVBJsByehpPGTRTEIRpOsyXJ5T8/",
	  "sha512-crypt" },
};

static void test_vectors(void)
{
	for (size_t i = 0; i < sizeof(vecs) / sizeof(vecs[0]); i++) {
		char out[PWHASH_STORED_MAX];
		const char *err = NULL;
		int r = pwhash_import(vecs[i].dovecot, out, sizeof(out), &err);
		if (r != 0)
			fprintf(stderr, "vector %zu: %s\n", i, err);
		CHECK(r == 0);
		CHECK(strcmp(out, vecs[i].stored) == 0);
		CHECK(pwhash_scheme(out) && strcmp(pwhash_scheme(out), vecs[i].scheme) == 0);
		CHECK(pwhash_verify(out, PW, strlen(PW)) == 1);
		CHECK(pwhash_verify(out, "correct horse battery stapl", strlen(PW) - 1) == 0);
		CHECK(pwhash_verify(out, "Correct horse battery staple", strlen(PW)) == 0);
		CHECK(pwhash_verify(out, "", 0) == 0);
		/* Always upgraded to scrypt at the next login. */
		CHECK(pwhash_needs_rehash(out, NULL));
	}
	/* A NUL inside the password never matches a C-string scheme. */
	char nul[64];
	memcpy(nul, PW, sizeof(PW));
	nul[5] = '\0';
	CHECK(pwhash_verify(vecs[0].stored, nul, strlen(PW)) == 0);
}

static void test_refused(void)
{
	static const char *const bad[] = {
		"{MD5-CRYPT}$1$abc$def",                 /* unsupported scheme */
		"{PLAIN}secret",
		"{BLF-CRYPT}$6$Qw8x.Zp1$9O4P",            /* prefix does not match */
		"{BLF-CRYPT}$2y$05$short",                /* malformed */
		"{BLF-CRYPT}$2y$31$abcdefghijklmnopqrstuuFiPhXf1sVd3pCCRO.uVh34H/qI/ZsuS", /* cost */
		"{SHA512-CRYPT}$6$rounds=99999999$Qw8xZp1Lk$rFVUBAfd.KK87/Nywn6kqzZlUU6LENF.oC9iM"
		".cb.IVlOm9WogoCO9pQw0Aqhcu9uTR6MjK9F/sbn8zMv3tJk1",                /* rounds */
		"{ARGON2ID}$argon2id$v=19$m=4194304,t=3,p=1$c2FsdHNhbHRzYWx0MTZi$"
		"JNY8BvpJ+u4hWuoecaC/DVxomYKqV4jc9x6DnmiM8HM",                       /* 4 GiB */
		"{ARGON2ID}$argon2id$v=19$m=65536,t=100,p=1$c2FsdHNhbHRzYWx0MTZi$"
		"JNY8BvpJ+u4hWuoecaC/DVxomYKqV4jc9x6DnmiM8HM",                       /* passes */
		"{SSHA256}PdDwo/zjNW4fChnEKQMy2pZSShtJAyJXonyy92vIpUQ=",             /* no salt */
		"{SSHA256}not base64!",
		"$scrypt$ln=30,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"",
		"plaintext",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char out[PWHASH_STORED_MAX];
		const char *err = NULL;
		int r = pwhash_import(bad[i], out, sizeof(out), &err);
		if (r == 0)
			fprintf(stderr, "accepted: %s\n", bad[i]);
		CHECK(r == -1 && err && out[0] == '\0');
	}
	/* verify refuses the same strings stored by other means. */
	CHECK(pwhash_verify("$2y$31$abcdefghijklmnopqrstuuFiPhXf1sVd3pCCRO.uVh34H/qI/ZsuS", PW,
			    strlen(PW)) == -1);
	CHECK(pwhash_verify("$argon2id$v=19$m=4194304,t=3,p=1$c2FsdHNhbHRzYWx0MTZi$"
			    "JNY8BvpJ+u4hWuoecaC/DVxomYKqV4jc9x6DnmiM8HM",
			    PW, strlen(PW)) == -1);
	CHECK(pwhash_verify("{SSHA256}", PW, strlen(PW)) == -1);
	CHECK(pwhash_verify("$1$abc$def", PW, strlen(PW)) == -1);
}

/* Our own scrypt strings import as they are (a re-import of an export). */
static void test_scrypt_roundtrip(void)
{
	static const struct pwhash_params small = { .ln = 10, .r = 8, .p = 1 };
	char h[PWHASH_ENCODED_MAX], out[PWHASH_STORED_MAX];
	const char *err = NULL;
	CHECK(pwhash_create(PW, strlen(PW), &small, h, sizeof(h), &err) == 0);
	CHECK(pwhash_import(h, out, sizeof(out), &err) == 0 && strcmp(h, out) == 0);
	CHECK(pwhash_verify(out, PW, strlen(PW)) == 1);
	CHECK(strcmp(pwhash_scheme(out), "scrypt") == 0);
}

int main(void)
{
	test_vectors();
	test_refused();
	test_scrypt_roundtrip();
	return check_finish("pwhash_import");
}
