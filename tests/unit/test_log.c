/* Unit tests for common/log.c: quoting, line format, truncation, levels,
 * and that real writes are one intact line each, also from several threads. */
#include "common/base.h"
#include "common/log.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures;

#define CHECK(cond)                                                           \
	do {                                                                  \
		if (!(cond)) {                                                \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, \
				__LINE__, #cond);                             \
			failures++;                                           \
		}                                                             \
	} while (0)

#define CHECK_STR(got, want)                                                    \
	do {                                                                    \
		const char *g_ = (got), *w_ = (want);                           \
		if (!g_ || strcmp(g_, w_) != 0) {                               \
			fprintf(stderr, "%s:%d: got '%s', want '%s'\n", __FILE__, \
				__LINE__, g_ ? g_ : "(null)", w_);              \
			failures++;                                             \
		}                                                               \
	} while (0)

static const char *tmp_dir(void)
{
	const char *d = getenv("MAIL_TEST_TMP");
	if (!d || !*d)
		return "/tmp";
	mkdir(d, 0700);
	return d;
}

/* Well-formed log text: no control bytes, quotes balanced, every escape
 * inside quotes complete and known. */
static bool text_well_formed(const char *s, size_t len)
{
	bool in_quote = false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c == 0x7f)
			return false;
		if (!in_quote) {
			if (c == '"')
				in_quote = true;
			continue;
		}
		if (c == '"') {
			in_quote = false;
		} else if (c == '\\') {
			if (i + 1 >= len)
				return false;
			char e = s[++i];
			if (e == 'x') {
				if (i + 2 >= len || !isxdigit((unsigned char)s[i + 1]) ||
				    !isxdigit((unsigned char)s[i + 2]))
					return false;
				i += 2;
			} else if (!strchr("\"\\nrt", e)) {
				return false;
			}
		}
	}
	return !in_quote;
}

static void test_quote(void)
{
	char b[128];
	CHECK_STR(log_quote_cstr(b, sizeof(b), "alice@example.org"), "alice@example.org");
	CHECK_STR(log_quote_cstr(b, sizeof(b), ""), "\"\"");
	CHECK_STR(log_quote_cstr(b, sizeof(b), NULL), "\"\"");
	CHECK_STR(log_quote_cstr(b, sizeof(b), "a b"), "\"a b\"");
	CHECK_STR(log_quote_cstr(b, sizeof(b), "k=v"), "\"k=v\"");
	CHECK_STR(log_quote_cstr(b, sizeof(b), "say \"hi\"\\"), "\"say \\\"hi\\\"\\\\\"");
	CHECK_STR(log_quote_cstr(b, sizeof(b), "EHLO x\r\nevent=forged"),
		  "\"EHLO x\\r\\nevent=forged\"");
	CHECK_STR(log_quote_cstr(b, sizeof(b), "\t\x01\x7f\xc3\xa9"),
		  "\"\\t\\x01\\x7f\\xc3\\xa9\"");
	CHECK_STR(log_quote(b, sizeof(b), "a\0b", 3), "\"a\\x00b\"");

	/* Truncation keeps the value well formed at every buffer size. */
	const char nasty[] = "hello \"world\"\r\n\\ \x01\x02 tail-tail-tail";
	const char bare[] = "abcdefghijklmnopqrstuvwxyz";
	char full[128];
	size_t full_len = strlen(log_quote(full, sizeof(full), nasty, sizeof(nasty) - 1));
	CHECK(full_len == 47);
	for (size_t size = 0; size <= 80; size++) {
		char out[96];
		memset(out, 'Z', sizeof(out));
		log_quote(out, size, nasty, sizeof(nasty) - 1);
		if (size == 0) {
			CHECK(out[0] == 'Z');
			continue;
		}
		size_t n = strnlen(out, size);
		CHECK(n < size);
		CHECK(text_well_formed(out, n));
		if (size >= 6)
			CHECK(n >= 2 && out[0] == '"' && out[n - 1] == '"');
		if (size >= 6 && size <= full_len)
			CHECK(n >= 5 && memcmp(out + n - 4, "...\"", 4) == 0);

		log_quote(out, size, bare, sizeof(bare) - 1);
		n = strnlen(out, size);
		CHECK(n < size);
		if (size > strlen(bare))
			CHECK_STR(out, bare);
		else if (size >= 4)
			CHECK(n == size - 1 && memcmp(out + n - 3, "...", 3) == 0 &&
			      memcmp(out, bare, n - 3) == 0);
	}
}

static size_t fmt_line(char *dst, size_t size, uint64_t ms, enum log_level lvl,
		       const char *comp, uint64_t conn, const char *event,
		       const char *fmt, ...) __attribute__((format(printf, 8, 9)));
static size_t fmt_line(char *dst, size_t size, uint64_t ms, enum log_level lvl,
		       const char *comp, uint64_t conn, const char *event,
		       const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	size_t n = log_vformat(dst, size, ms, lvl, comp, conn, event, fmt, ap);
	va_end(ap);
	return n;
}

static void test_format(void)
{
	char line[LOG_LINE_MAX];
	char q[64];
	size_t n = fmt_line(line, sizeof(line), 1700000000123ull, LOG_LEVEL_INFO,
			    "smtp", 42, "accept", "peer=%s user=%s", "192.0.2.1:5123",
			    log_quote_cstr(q, sizeof(q), "bob smith"));
	CHECK_STR(line, "ts=2023-11-14T22:13:20.123Z level=info comp=smtp conn=42 "
			"event=accept peer=192.0.2.1:5123 user=\"bob smith\"\n");
	CHECK(n == strlen(line));

	fmt_line(line, sizeof(line), 5, LOG_LEVEL_ERROR, "rpc", 0, "start", NULL);
	CHECK_STR(line, "ts=1970-01-01T00:00:00.005Z level=error comp=rpc event=start\n");
	fmt_line(line, sizeof(line), 0, LOG_LEVEL_WARN, "rpc", 0, "x", "%s", "");
	CHECK_STR(line, "ts=1970-01-01T00:00:00.000Z level=warn comp=rpc event=x\n");
	fmt_line(line, sizeof(line), 0, LOG_LEVEL_DEBUG, "a b", 7, "ev\nil", "k=v");
	CHECK_STR(line, "ts=1970-01-01T00:00:00.000Z level=debug comp=a_b conn=7 "
			"event=ev_il k=v\n");

	/* A caller that forgot log_quote still cannot split the line. */
	fmt_line(line, sizeof(line), 0, LOG_LEVEL_INFO, "imap", 1, "cmd",
		 "line=%s", "a\r\nts=fake level=error\x1b[0m");
	CHECK_STR(line, "ts=1970-01-01T00:00:00.000Z level=info comp=imap conn=1 "
			"event=cmd line=a\\x0d\\x0ats=fake level=error\\x1b[0m\n");

	/* Truncation at every offset through quoted values full of escapes. */
	char big[3000];
	for (size_t pad = 0; pad < 24; pad++) {
		char val[2600];
		size_t vl = 0;
		for (size_t i = 0; i < 2500 - pad; i++)
			val[vl++] = "\n\"x\x01"[i % 4];
		char *qv = xmalloc(4 * vl + 8);
		log_quote(qv, 4 * vl + 8, val, vl);
		n = fmt_line(big, sizeof(big) < LOG_LINE_MAX ? sizeof(big) : LOG_LINE_MAX,
			     0, LOG_LEVEL_INFO, "t", 1, "long", "%.*s v=%s", (int)pad,
			     "xxxxxxxxxxxxxxxxxxxxxxxx", qv);
		free(qv);
		CHECK(n <= LOG_LINE_MAX - 1);
		CHECK(big[n - 1] == '\n' && memchr(big, '\n', n) == big + n - 1);
		CHECK(text_well_formed(big, n - 1));
		CHECK(n >= 6 && memcmp(big + n - 5, "...\"\n", 5) == 0);
	}
	/* Cut in bare text. */
	memset(big, 'a', 2500);
	big[2500] = '\0';
	n = fmt_line(line, sizeof(line), 0, LOG_LEVEL_INFO, "t", 0, "long", "v=%s", big);
	CHECK(n == LOG_LINE_MAX - 2 || n == LOG_LINE_MAX - 3);
	CHECK(memcmp(line + n - 4, "...\n", 4) == 0);
}

static void test_levels(void)
{
	enum log_level l = LOG_LEVEL_ERROR;
	CHECK(log_level_from_str("debug", &l) == 0 && l == LOG_LEVEL_DEBUG);
	CHECK(log_level_from_str("INFO", &l) == 0 && l == LOG_LEVEL_INFO);
	CHECK(log_level_from_str("warning", &l) == 0 && l == LOG_LEVEL_WARN);
	CHECK(log_level_from_str("error", &l) == 0 && l == LOG_LEVEL_ERROR);
	CHECK(log_level_from_str("verbose", &l) < 0);
	CHECK(log_level_from_str(NULL, &l) < 0);
	CHECK_STR(log_level_str(LOG_LEVEL_WARN), "warn");
}

static int side_effects;
static int side_effect(void)
{
	return ++side_effects;
}

#define THREADS 4
#define LINES_PER_THREAD 300

static void *thread_main(void *arg)
{
	uintptr_t id = (uintptr_t)arg;
	char filler[700];
	memset(filler, 'a' + (int)id, sizeof(filler) - 1);
	filler[sizeof(filler) - 1] = '\0';
	for (int i = 0; i < LINES_PER_THREAD; i++)
		LOG_INFO("thr", id + 1, "tick", "i=%d fill=%s", i, filler);
	return NULL;
}

/* Redirects stderr to a file, logs, and checks what was written. */
static void test_write(void)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/test_log.%d.txt", tmp_dir(), (int)getpid());
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0);
	if (fd < 0)
		return;
	fflush(stderr);
	int saved = dup(STDERR_FILENO);
	dup2(fd, STDERR_FILENO);

	log_init("testprog", LOG_LEVEL_INFO);
	LOG_DEBUG("x", 1, "hidden", "n=%d", side_effect());
	errno = ENOENT;
	LOG_INFO(NULL, 0, "started", NULL);
	int errno_after = errno;
	LOG_WARN("smtp", 9, "bad_command", "count=%d", 3);
	log_set_level(LOG_LEVEL_DEBUG);
	LOG_DEBUG("x", 1, "shown", NULL);
	log_set_level(LOG_LEVEL_ERROR);
	LOG_WARN("x", 1, "hidden", NULL);
	log_set_level(LOG_LEVEL_INFO);

	pthread_t th[THREADS];
	for (uintptr_t i = 0; i < THREADS; i++)
		pthread_create(&th[i], NULL, thread_main, (void *)i);
	for (int i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);

	dup2(saved, STDERR_FILENO);
	close(saved);

	CHECK(side_effects == 0);
	CHECK(errno_after == ENOENT);

	struct stat st;
	fstat(fd, &st);
	char *data = xmalloc((size_t)st.st_size + 1);
	CHECK(pread(fd, data, (size_t)st.st_size, 0) == st.st_size);
	data[st.st_size] = '\0';
	close(fd);
	unlink(path);

	int lines = 0, thread_lines = 0;
	int per_thread[THREADS] = { 0 };
	char *save = NULL;
	for (char *l = strtok_r(data, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		lines++;
		CHECK(strncmp(l, "ts=", 3) == 0);
		if (lines == 1)
			CHECK(strstr(l, " level=info comp=testprog event=started") != NULL &&
			      l[strlen(l) - 1] == 'd');
		if (lines == 2)
			CHECK(strstr(l, " level=warn comp=smtp conn=9 event=bad_command count=3"));
		if (lines == 3)
			CHECK(strstr(l, " level=debug comp=x conn=1 event=shown"));
		const char *c = strstr(l, " comp=thr conn=");
		if (c) {
			thread_lines++;
			int id = atoi(c + strlen(" comp=thr conn=")) - 1;
			CHECK(id >= 0 && id < THREADS);
			if (id < 0 || id >= THREADS)
				continue;
			per_thread[id]++;
			/* The whole filler of one thread, nothing of another. */
			const char *f = strstr(l, " fill=");
			CHECK(f && strlen(f + 6) == 699);
			for (const char *p = f ? f + 6 : ""; *p; p++)
				if (*p != 'a' + id) {
					CHECK(!"interleaved line");
					break;
				}
		}
	}
	CHECK(lines == 3 + THREADS * LINES_PER_THREAD);
	CHECK(thread_lines == THREADS * LINES_PER_THREAD);
	for (int i = 0; i < THREADS; i++)
		CHECK(per_thread[i] == LINES_PER_THREAD);
	free(data);
}

int main(void)
{
	test_quote();
	test_format();
	test_levels();
	test_write();
	if (failures) {
		fprintf(stderr, "test_log: %d check(s) failed\n", failures);
		return 1;
	}
	printf("test_log: ok\n");
	return 0;
}
