/* Every message of the MIME corpus (tests/data/mime, the .eml files: 8-bit, binary
 * parts, long lines, bare LF, nested multipart, RFC 2047, S/MIME and
 * PGP/MIME) delivered through the store comes back byte-exact, in pieces
 * that cross chunk boundaries, and the MIME description recorded at
 * delivery gives the golden ENVELOPE and BODYSTRUCTURE. The S/MIME
 * signature is also verified after the round trip when openssl is there. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage/mime.h"
#include "storage/store.h"
#include "tests/unit/check.h"


static int read_file(const char *path, struct buf *out)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return -1;
	out->len = 0;
	uint8_t tmp[65536];
	size_t n;
	while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
		buf_append(out, tmp, n);
	fclose(f);
	return 0;
}

static int collect(void *arg, const uint8_t *p, size_t n)
{
	buf_append(arg, p, n);
	return 0;
}

/* Golden files end with a newline the output does not have. */
static bool same_as_golden(const char *path, struct buf *got)
{
	struct buf want;
	buf_init(&want, 0);
	if (read_file(path, &want) < 0) {
		fprintf(stderr, "missing golden file %s\n", path);
		return false;
	}
	while (want.len && (want.data[want.len - 1] == '\n' || want.data[want.len - 1] == '\r'))
		want.len--;
	bool ok = want.len == got->len && memcmp(want.data, got->data, got->len) == 0;
	if (!ok)
		fprintf(stderr, "%s differs:\n  got  %.*s\n  want %.*s\n", path, (int)MIN(got->len, 300u),
			(const char *)got->data, (int)MIN(want.len, 300u), (const char *)want.data);
	buf_cleanup(&want);
	return ok;
}

int main(void)
{
	const char *src = getenv("MAIL_SOURCE_DIR");
	const char *tmp = getenv("MAIL_TEST_TMP");
	char corpus[1024], dir[1024];
	snprintf(corpus, sizeof(corpus), "%s/tests/data/mime", src ? src : ".");
	snprintf(dir, sizeof(dir), "%s/store_corpus.%d", tmp ? tmp : "/tmp", (int)getpid());
	DIR *d = opendir(corpus);
	if (!d) {
		fprintf(stderr, "no corpus at %s\n", corpus);
		return 1;
	}
	const char *err = NULL;
	/* Small chunks so every message spans several of them. */
	struct storage_options so = { .dir = dir, .body_chunk_bytes = 700 };
	struct storage *st = storage_open(&so, &err);
	CHECK(st != NULL);
	struct shard *sh = st ? storage_shard_open(st, 1, true, &err) : NULL;
	if (!sh) {
		fprintf(stderr, "open: %s\n", err);
		return 1;
	}
	enum storage_status status;
	CHECK(store_user_create(sh, "corpus@example.test", "", 0, &status, &err) == 0);
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		size_t l = strlen(e->d_name);
		if (l < 5 || strcmp(e->d_name + l - 4, ".eml") != 0)
			continue;
		char path[2048], base[2048];
		snprintf(path, sizeof(path), "%s/%s", corpus, e->d_name);
		snprintf(base, sizeof(base), "%s", path);
		base[strlen(base) - 4] = '\0'; /* drop ".eml" */
		struct buf msg;
		buf_init(&msg, 0);
		CHECK(read_file(path, &msg) == 0);
		/* Feed it in uneven pieces, as the network would. */
		struct body_writer *bw = body_writer_new(sh);
		for (size_t off = 0; off < msg.len;) {
			size_t step = MIN(msg.len - off, (size_t)(1 + (off * 7919) % 997));
			CHECK(body_writer_add(bw, msg.data + off, step) == 0);
			off += step;
		}
		struct deliver_target t = { .user = "corpus@example.test" };
		CHECK(store_deliver(sh, bw, 0, &t, 1, &status, &err) == 0);
		CHECK(t.status_r == ST_OK);
		body_writer_free(&bw);

		struct mailbox_info inbox;
		CHECK(store_mailbox_get(sh, "corpus@example.test", "INBOX", &inbox, &status, &err) == 0);
		struct msg_info *m = NULL;
		size_t nm = 0;
		CHECK(store_fetch_range(sh, inbox.id, t.uid_r, t.uid_r, &m, &nm, &err) == 0);
		CHECK(nm == 1);
		if (nm == 1) {
			CHECK(m[0].size == msg.len);
			struct buf back;
			buf_init(&back, 0);
			CHECK(store_body_read(sh, m[0].body_hash, 0, UINT64_MAX, collect, &back, &err) == 0);
			CHECK(back.len == msg.len && memcmp(back.data, msg.data, msg.len) == 0);
			/* A range that crosses chunk boundaries. */
			if (msg.len > 1600) {
				back.len = 0;
				CHECK(store_body_read(sh, m[0].body_hash, 650, 900, collect, &back, &err) == 0);
				CHECK(back.len == 900 && memcmp(back.data, msg.data + 650, 900) == 0);
			}
			struct buf blob, out;
			buf_init(&blob, 0);
			buf_init(&out, 0);
			CHECK(store_body_mime(sh, m[0].body_hash, &blob, &err) == 0);
			char golden[2100];
			snprintf(golden, sizeof(golden), "%s.envelope", base);
			CHECK(mime_blob_envelope(buf_view(&blob), &out) == 0);
			CHECK(same_as_golden(golden, &out));
			out.len = 0;
			snprintf(golden, sizeof(golden), "%s.bodystructure", base);
			CHECK(mime_blob_bodystructure(buf_view(&blob), true, &out) == 0);
			CHECK(same_as_golden(golden, &out));
			/* S/MIME: the signature still verifies after the round trip. */
			if (strstr(e->d_name, "smime") && system("openssl version >/dev/null 2>&1") == 0) {
				char out_path[1400], cmd[4096];
				snprintf(out_path, sizeof(out_path), "%s/%s.out", dir, e->d_name);
				FILE *f = fopen(out_path, "wb");
				CHECK(f && fwrite(back.data, 1, back.len, f) == back.len);
				if (f)
					fclose(f);
				snprintf(cmd, sizeof(cmd),
					 "openssl smime -verify -noverify -in %s -out /dev/null 2>/dev/null",
					 out_path);
				int rc = system(cmd);
				if (rc != 0)
					fprintf(stderr, "note: %s has no verifiable signature (rc %d)\n",
						e->d_name, rc);
			}
			buf_cleanup(&blob);
			buf_cleanup(&out);
			buf_cleanup(&back);
			msg_info_cleanup(&m[0]);
		}
		free(m);
		buf_cleanup(&msg);
		n++;
	}
	closedir(d);
	CHECK(n >= 10);

	/* A real S/MIME signature (made here with openssl) verifies after the
	 * round trip: any changed byte would break it. */
	if (system("openssl version >/dev/null 2>&1") == 0) {
		char cmd[8192];
		snprintf(cmd, sizeof(cmd),
			 "set -e; cd %s; "
			 "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
			 "-keyout s.key -out s.pem -days 2 -subj /CN=signer@example.test "
			 "-addext subjectAltName=email:signer@example.test 2>/dev/null; "
			 "printf 'Content-Type: text/plain; charset=utf-8\r\n"
			 "Content-Transfer-Encoding: 8bit\r\n\r\nGr\303\274\303\237e, "
			 "signed.\r\n.\r\n..dots\r\n' > body.txt; "
			 "openssl smime -sign -binary -in body.txt -signer s.pem -inkey s.key "
			 "-out signed.eml 2>/dev/null",
			 dir);
		if (system(cmd) != 0) {
			fprintf(stderr, "could not make an S/MIME message\n");
			failures++;
		} else {
			char path[1200];
			snprintf(path, sizeof(path), "%s/signed.eml", dir);
			struct buf msg, back;
			buf_init(&msg, 0);
			buf_init(&back, 0);
			CHECK(read_file(path, &msg) == 0);
			struct body_writer *bw = body_writer_new(sh);
			CHECK(body_writer_add(bw, msg.data, msg.len) == 0);
			struct deliver_target t = { .user = "corpus@example.test" };
			CHECK(store_deliver(sh, bw, 0, &t, 1, &status, &err) == 0);
			body_writer_free(&bw);
			struct mailbox_info inbox;
			struct msg_info *m = NULL;
			size_t nm = 0;
			CHECK(store_mailbox_get(sh, "corpus@example.test", "INBOX", &inbox, &status,
						&err) == 0);
			CHECK(store_fetch_range(sh, inbox.id, t.uid_r, t.uid_r, &m, &nm, &err) == 0);
			if (nm == 1) {
				CHECK(store_body_read(sh, m[0].body_hash, 0, UINT64_MAX, collect, &back,
						      &err) == 0);
				msg_info_cleanup(&m[0]);
			}
			free(m);
			snprintf(path, sizeof(path), "%s/roundtrip.eml", dir);
			FILE *f = fopen(path, "wb");
			CHECK(f && fwrite(back.data, 1, back.len, f) == back.len);
			if (f)
				fclose(f);
			snprintf(cmd, sizeof(cmd),
				 "cd %s && openssl smime -verify -binary -CAfile s.pem -in roundtrip.eml "
				 "-out /dev/null 2>/dev/null",
				 dir);
			CHECK(back.len == msg.len && system(cmd) == 0);
			/* And the check can fail: one flipped byte of the signed
			 * text breaks it. */
			uint8_t *hit = memmem(back.data, back.len, "signed.", 7);
			CHECK(hit != NULL);
			if (hit) {
				hit[0] ^= 1;
				f = fopen(path, "wb");
				if (f) {
					CHECK(fwrite(back.data, 1, back.len, f) == back.len);
					fclose(f);
				}
				CHECK(system(cmd) != 0);
			}
			buf_cleanup(&msg);
			buf_cleanup(&back);
		}
	}
	CHECK(store_verify(sh, NULL, NULL, &err) == 0);
	storage_close(&st);
	char cmd[2048];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (!failures && system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	if (failures) {
		fprintf(stderr, "%d check(s) failed\n", failures);
		return 1;
	}
	fprintf(stderr, "corpus: %d messages round-tripped byte-exact\n", n);
	return 0;
}
