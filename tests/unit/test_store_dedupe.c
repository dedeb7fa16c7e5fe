/* Idempotent delivery (store_deliver_once) against a real RocksDB: a
 * retry with the same delivery id stores nothing and returns the first
 * call's per-target results (UIDs included), also after a reopen; a
 * different id stores again; the same id with another target count is
 * refused; failed targets are recorded as failed; ids of 0 or more than
 * DELIVERY_ID_MAX bytes are refused; prune removes old records only, and
 * after a prune the id is new again. store_verify checks the counters
 * (usage, refcounts) after each step. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "storage/store.h"
#include "tests/unit/check.h"

static const char *err;
static enum storage_status status;

static void report(void *arg, const char *line)
{
	UNUSED(arg);
	fprintf(stderr, "verify: %s\n", line);
}

#define VERIFY(sh) CHECK(store_verify(sh, report, NULL, &err) == 0)

static int deliver(struct shard *sh, const char *id, const char *body, struct deliver_target *t,
		   size_t n, bool *dup)
{
	struct body_writer *bw = body_writer_new(sh);
	CHECK(body_writer_add(bw, body, strlen(body)) == 0);
	int r = store_deliver_once(sh, bw, 1700000000000ull, view_cstr(id), t, n, dup, &status,
				   &err);
	body_writer_free(&bw);
	return r;
}

static long messages_of(struct shard *sh, const char *user)
{
	struct user_info u;
	if (store_user_get(sh, user, &u, &status, &err) < 0)
		return -1;
	return (long)u.used_messages;
}

int main(void)
{
	const char *tmp = getenv("MAIL_TEST_TMP");
	char root[900], data[1000], cmd[2100];
	snprintf(root, sizeof(root), "%s/dedupe.%d", tmp ? tmp : "/tmp", (int)getpid());
	snprintf(data, sizeof(data), "%s/DATA", root);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s' && mkdir -p '%s'", root, root);
	if (system(cmd) != 0)
		return 1;
	struct storage_options o = { .dir = data };
	struct storage *st = storage_open(&o, &err);
	struct shard *sh = st ? storage_shard_open(st, 0, true, &err) : NULL;
	if (!sh) {
		fprintf(stderr, "open: %s\n", err);
		return 1;
	}
	CHECK(store_user_create(sh, "a@x.test", "", 0, &status, &err) == 0);
	CHECK(store_user_create(sh, "b@x.test", "", 1000, &status, &err) == 0);

	/* first delivery: a stored, b over quota, c unknown */
	char big[1200];
	memset(big, 'y', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	memcpy(big, "Subject: s\r\n\r\n", 14);
	struct deliver_target t1[3] = { { .user = "a@x.test" }, { .user = "b@x.test" },
					{ .user = "c@x.test" } };
	bool dup = true;
	CHECK(deliver(sh, "id-1", big, t1, 3, &dup) == 0 && !dup);
	CHECK(t1[0].status_r == ST_OK && t1[0].uid_r == 1 && t1[1].status_r == ST_OVER_QUOTA &&
	      t1[2].status_r == ST_NOT_FOUND);
	CHECK(messages_of(sh, "a@x.test") == 1);
	VERIFY(sh);

	/* the retry: same results, nothing stored */
	struct deliver_target t2[3] = { { .user = "a@x.test" }, { .user = "b@x.test" },
					{ .user = "c@x.test" } };
	CHECK(deliver(sh, "id-1", big, t2, 3, &dup) == 0 && dup);
	CHECK(t2[0].status_r == ST_OK && t2[0].uid_r == 1 &&
	      t2[0].uidvalidity_r == t1[0].uidvalidity_r &&
	      t2[0].mailbox_id_r == t1[0].mailbox_id_r && t2[1].status_r == ST_OVER_QUOTA &&
	      t2[2].status_r == ST_NOT_FOUND);
	CHECK(messages_of(sh, "a@x.test") == 1);
	VERIFY(sh);

	/* another id stores again */
	struct deliver_target t3[1] = { { .user = "a@x.test" } };
	CHECK(deliver(sh, "id-2", big, t3, 1, &dup) == 0 && !dup && t3[0].uid_r == 2);
	CHECK(messages_of(sh, "a@x.test") == 2);
	/* the same id with another target count: refused, nothing stored */
	struct deliver_target t4[1] = { { .user = "a@x.test" } };
	CHECK(deliver(sh, "id-1", big, t4, 1, &dup) == -1 && status == ST_INVALID);
	CHECK(messages_of(sh, "a@x.test") == 2);
	/* bad ids */
	CHECK(deliver(sh, "", big, t4, 1, &dup) == -1 && status == ST_INVALID);
	char longid[DELIVERY_ID_MAX + 2];
	memset(longid, 'k', sizeof(longid) - 1);
	longid[sizeof(longid) - 1] = '\0';
	CHECK(deliver(sh, longid, big, t4, 1, &dup) == -1 && status == ST_INVALID);
	VERIFY(sh);

	/* records survive a reopen */
	storage_close(&st);
	st = storage_open(&o, &err);
	sh = st ? storage_shard_open(st, 0, false, &err) : NULL;
	CHECK(sh != NULL);
	if (!sh)
		return check_finish("store_dedupe");
	struct deliver_target t5[1] = { { .user = "a@x.test" } };
	CHECK(deliver(sh, "id-2", big, t5, 1, &dup) == 0 && dup && t5[0].uid_r == 2);
	CHECK(messages_of(sh, "a@x.test") == 2);

	/* prune: nothing is older than an hour ago; everything is older than
	 * an hour from now */
	uint64_t now = (uint64_t)time(NULL) * 1000;
	CHECK(store_deliveries_prune(sh, now - 3600000, &err) == 0);
	CHECK(deliver(sh, "id-2", big, t5, 1, &dup) == 0 && dup);
	CHECK(store_deliveries_prune(sh, now + 3600000, &err) == 2);
	CHECK(deliver(sh, "id-2", big, t5, 1, &dup) == 0 && !dup && t5[0].uid_r == 3);
	CHECK(messages_of(sh, "a@x.test") == 3);
	VERIFY(sh);

	storage_close(&st);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	if (system(cmd) != 0)
		fprintf(stderr, "cleanup failed\n");
	return check_finish("store_dedupe");
}
