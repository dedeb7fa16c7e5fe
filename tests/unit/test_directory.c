/* Domains and aliases in the directory shard: local domains, aliases with
 * several targets, nested aliases and loops, sub-address aliases,
 * catch-all, canonicalisation, persistence across reopen. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "storage/directory.h"
#include "tests/unit/check.h"

static bool list_is(char **l, const char *const *want, size_t n)
{
	size_t i = 0;
	for (; l && l[i]; i++)
		if (i >= n || strcmp(l[i], want[i]) != 0)
			return false;
	return i == n;
}

int main(void)
{
	const char *tmp = getenv("MAIL_TEST_TMP");
	char dir[1024];
	snprintf(dir, sizeof(dir), "%s/directory.%d", tmp ? tmp : "/tmp", (int)getpid());
	const char *err = NULL;
	struct storage_options so = { .dir = dir };
	struct storage *st = storage_open(&so, &err);
	struct shard *d = st ? storage_shard_open(st, DIRECTORY_SHARD, true, &err) : NULL;
	if (!d) {
		fprintf(stderr, "open: %s\n", err);
		return 1;
	}
	enum storage_status status;
	CHECK(directory_domain_add(d, "Example.TEST", &status, &err) == 0);
	CHECK(directory_domain_add(d, "example.test", &status, &err) == -1 && status == ST_EXISTS);
	CHECK(directory_domain_add(d, "bad domain", &status, &err) == -1 && status == ST_INVALID);
	CHECK(directory_domain_add(d, "other.test", &status, &err) == 0);
	CHECK(directory_domain_is_local(d, "example.test", &err) == 1);
	CHECK(directory_domain_is_local(d, "elsewhere.test", &err) == 0);
	struct domain_info *doms = NULL;
	size_t nd = 0;
	CHECK(directory_domain_list(d, &doms, &nd, &err) == 0 && nd == 2);
	CHECK(nd == 2 && strcmp(doms[0].name, "example.test") == 0 && doms[0].enabled);
	free(doms);

	/* An alias with several targets; targets canonicalised. */
	const char *team[] = { "Alice@Example.test", "bob@example.test", "carol@other.test" };
	CHECK(directory_alias_set(d, "Team@example.test", team, 3, &status, &err) == 0);
	const char *not_local[] = { "x@example.test" };
	CHECK(directory_alias_set(d, "a@elsewhere.test", not_local, 1, &status, &err) == -1 &&
	      status == ST_INVALID);
	CHECK(directory_alias_set(d, "empty@example.test", team, 0, &status, &err) == -1);
	char **l = NULL;
	CHECK(directory_resolve(d, "team@example.test", &l, &err) == 3);
	const char *want1[] = { "alice@example.test", "bob@example.test", "carol@other.test" };
	CHECK(list_is(l, want1, 3));
	directory_free_list(&l);

	/* A plain user resolves to itself; a foreign domain to nothing. */
	CHECK(directory_resolve(d, "dave@example.test", &l, &err) == 1);
	CHECK(l && strcmp(l[0], "dave@example.test") == 0);
	directory_free_list(&l);
	CHECK(directory_resolve(d, "someone@elsewhere.test", &l, &err) == 0 && !l);

	/* Nested aliases with duplicates, and a loop cut at the depth limit. */
	const char *all[] = { "team@example.test", "alice@example.test", "dave@example.test" };
	CHECK(directory_alias_set(d, "all@example.test", all, 3, &status, &err) == 0);
	CHECK(directory_resolve(d, "all@example.test", &l, &err) == 4);
	const char *want2[] = { "alice@example.test", "bob@example.test", "carol@other.test",
				"dave@example.test" };
	CHECK(list_is(l, want2, 4));
	directory_free_list(&l);
	const char *to_b[] = { "loop-b@example.test" }, *to_a[] = { "loop-a@example.test" };
	CHECK(directory_alias_set(d, "loop-a@example.test", to_b, 1, &status, &err) == 0);
	CHECK(directory_alias_set(d, "loop-b@example.test", to_a, 1, &status, &err) == 0);
	int n = directory_resolve(d, "loop-a@example.test", &l, &err);
	CHECK(n == 1); /* cut after DIRECTORY_MAX_DEPTH, no endless expansion */
	directory_free_list(&l);

	/* user+tag: the alias of user applies. */
	CHECK(directory_resolve(d, "team+news@example.test", &l, &err) == 3);
	directory_free_list(&l);

	/* Catch-all. */
	const char *ca[] = { "postmaster@example.test" };
	CHECK(directory_alias_set(d, "@Example.test", ca, 1, &status, &err) == 0);
	CHECK(directory_resolve_catchall(d, "nobody@example.test", &l, &err) == 1);
	CHECK(l && strcmp(l[0], "postmaster@example.test") == 0);
	directory_free_list(&l);
	CHECK(directory_resolve_catchall(d, "nobody@other.test", &l, &err) == 0);

	/* Delete. */
	CHECK(directory_alias_delete(d, "all@example.test", &status, &err) == 0);
	CHECK(directory_alias_delete(d, "all@example.test", &status, &err) == -1 &&
	      status == ST_NOT_FOUND);
	CHECK(directory_resolve(d, "all@example.test", &l, &err) == 1);
	directory_free_list(&l);

	/* Persistence. */
	storage_close(&st);
	st = storage_open(&so, &err);
	d = st ? storage_shard_open(st, DIRECTORY_SHARD, false, &err) : NULL;
	CHECK(d != NULL);
	if (d) {
		CHECK(directory_resolve(d, "team@example.test", &l, &err) == 3);
		directory_free_list(&l);
		CHECK(directory_domain_delete(d, "other.test", &status, &err) == 0);
		CHECK(directory_domain_is_local(d, "other.test", &err) == 0);
	}
	storage_close(&st);
	char cmd[1200];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (!failures && system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	return check_finish("test_directory");
}
