/* The corpus replayer every fuzz target gets when built with
 * -DFUZZ_STANDALONE_MAIN (ctest runs it over tests/fuzz/corpus/<name>):
 * runs LLVMFuzzerTestOneInput over every file given, or every file of a
 * directory given. Include it at the end of a fuzz target. */
#ifndef TESTS_FUZZ_MAIN_H
#define TESTS_FUZZ_MAIN_H
#ifdef FUZZ_STANDALONE_MAIN
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dirent.h>
#include <errno.h>
#include <sys/stat.h>

static int fuzz_run_file(const char *path)
{
	FILE *fp = fopen(path, "rb");
	if (!fp) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	struct buf b;
	buf_init(&b, 0);
	for (;;) {
		uint8_t *dst = buf_reserve(&b, 65536);
		size_t n = fread(dst, 1, 65536, fp);
		buf_commit(&b, n);
		if (n == 0)
			break;
	}
	int err = ferror(fp);
	fclose(fp);
	if (err) {
		fprintf(stderr, "%s: read error\n", path);
		buf_cleanup(&b);
		return -1;
	}
	/* An exact-size copy, so ASan sees any read past the input. */
	uint8_t *copy = xmalloc(b.len);
	if (b.len)
		memcpy(copy, b.data, b.len);
	LLVMFuzzerTestOneInput(copy, b.len);
	free(copy);
	buf_cleanup(&b);
	return 0;
}

static int fuzz_run_path(const char *path, int *count)
{
	struct stat st;
	if (stat(path, &st) != 0) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		(*count)++;
		return fuzz_run_file(path);
	}
	DIR *d = opendir(path);
	if (!d) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	int rc = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		struct buf p;
		buf_init(&p, 0);
		if (buf_printf(&p, "%s/%s", path, de->d_name) != 0 ||
		    buf_append(&p, "", 1) != 0)
			abort();
		struct stat fst;
		if (stat((const char *)p.data, &fst) == 0 && S_ISREG(fst.st_mode)) {
			(*count)++;
			if (fuzz_run_file((const char *)p.data) != 0)
				rc = -1;
		}
		buf_cleanup(&p);
	}
	closedir(d);
	return rc;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
		return 2;
	}
	int rc = 0, count = 0;
	for (int i = 1; i < argc; i++)
		if (fuzz_run_path(argv[i], &count) != 0)
			rc = 1;
	printf("%s: %d input(s) run\n", argv[0], count);
	return rc;
}
#endif
#endif
