/* Unit tests for common/config.c: defaults, every type and suffix, errors
 * naming FILE:LINE, overrides, lists, print/load round trip, addresses. */
#include "common/base.h"
#include "common/config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
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

static const struct config_def defs[] = {
	{ "smtp.listen", CONFIG_ADDR, "0.0.0.0:25", 0, 0, "SMTP listener" },
	{ "rpc.port", CONFIG_INT, "7000", 1, 65535, "RPC port" },
	{ "smtp.max_size", CONFIG_SIZE, "10M", 1024, 1ll << 30, "Largest message" },
	{ "smtp.timeout", CONFIG_DURATION, "5m", 1000, 3600000, "Idle timeout" },
	{ "tls.required", CONFIG_BOOL, "no", 0, 0, "Require TLS" },
	{ "smtp.banner", CONFIG_STRING, "mail ESMTP", 0, 0, "Greeting text" },
	{ "tls.cert", CONFIG_STRING, NULL, 0, 0, "Certificate file" },
	{ "imap.listen", CONFIG_LIST, "0.0.0.0:143", 0, 0, "IMAP listeners" },
	{ "node.peers", CONFIG_LIST, NULL, 0, 0, "Peers\nsecond help line" },
	{ "debug.shift", CONFIG_INT, "-3", 0, 0, NULL },
	{ "redis.addr", CONFIG_ADDR, "[::1]:6379", 0, 0, "Redis" },
	{ "rpc.deadline", CONFIG_DURATION, "0", 0, 0, "RPC deadline" },
	{ "store.cache", CONFIG_SIZE, NULL, 0, 0, "Cache size" },
};

static char tmp_path[512];

static const char *write_file(const char *name, const char *text)
{
	const char *d = getenv("MAIL_TEST_TMP");
	if (!d || !*d)
		d = "/tmp";
	else
		mkdir(d, 0700);
	snprintf(tmp_path, sizeof(tmp_path), "%s/test_config.%d.%s", d, (int)getpid(),
		 name);
	FILE *f = fopen(tmp_path, "w");
	if (!f) {
		perror(tmp_path);
		exit(1);
	}
	fputs(text, f);
	fclose(f);
	return tmp_path;
}

static struct config *new_cfg(void)
{
	return config_new(defs, ARRAY_LEN(defs));
}

/* Loads text as a file; returns the error or NULL. The path in the error
 * is replaced by "F" so expectations are stable. */
static const char *load_text(struct config *cfg, const char *text)
{
	static char msg[1200];
	const char *path = write_file("load.conf", text);
	const char *err = NULL;
	int ret = config_load_file(cfg, path, &err);
	unlink(path);
	if (ret == 0)
		return NULL;
	size_t plen = strlen(path);
	if (err && strncmp(err, path, plen) == 0)
		snprintf(msg, sizeof(msg), "F%s", err + plen);
	else
		snprintf(msg, sizeof(msg), "%s", err ? err : "(no error)");
	return msg;
}

static void check_load_error(const char *text, const char *want)
{
	struct config *cfg = new_cfg();
	const char *err = load_text(cfg, text);
	if (!err) {
		fprintf(stderr, "expected error '%s' for:\n%s\n", want, text);
		failures++;
	} else {
		CHECK_STR(err, want);
	}
	config_free(&cfg);
}

static void test_defaults(void)
{
	struct config *cfg = new_cfg();
	CHECK_STR(config_get_str(cfg, "smtp.listen"), "0.0.0.0:25");
	CHECK(config_get_int(cfg, "rpc.port") == 7000);
	CHECK(config_get_size(cfg, "smtp.max_size") == 10u << 20);
	CHECK(config_get_duration_ms(cfg, "smtp.timeout") == 300000);
	CHECK(config_get_bool(cfg, "tls.required") == false);
	CHECK_STR(config_get_str(cfg, "smtp.banner"), "mail ESMTP");
	CHECK(config_get_str(cfg, "tls.cert") == NULL);
	CHECK(!config_is_set(cfg, "tls.cert"));
	CHECK(config_is_set(cfg, "smtp.banner"));
	CHECK(config_get_int(cfg, "debug.shift") == -3);
	CHECK(config_get_duration_ms(cfg, "rpc.deadline") == 0);
	CHECK(config_get_size(cfg, "store.cache") == 0 && !config_is_set(cfg, "store.cache"));
	size_t n = 99;
	const char *const *l = config_get_list(cfg, "imap.listen", &n);
	CHECK(n == 1 && strcmp(l[0], "0.0.0.0:143") == 0);
	config_get_list(cfg, "node.peers", &n);
	CHECK(n == 0);
	config_free(&cfg);
	CHECK(cfg == NULL);
	config_free(&cfg); /* NULL-safe */
}

static void test_load(void)
{
	struct config *cfg = new_cfg();
	const char *err = load_text(cfg,
		"\xef\xbb\xbf# a comment\n"
		"\n"
		"   # indented comment\r\n"
		"smtp.listen = [::]:2525\r\n"
		"rpc.port=8000\n"
		"  smtp.max_size   =   25M  \n"
		"smtp.timeout = 90s\n"
		"tls.required = YES\n"
		"smtp.banner = \"  spaced # not a comment \\\"q\\\" \\\\ \"\n"
		"tls.cert = /etc/ssl/a#b.pem\n"
		"imap.listen = 127.0.0.1:143, [::1]:143\n"
		"imap.listen = 10.0.0.1:143\n"
		"node.peers =\n"
		"debug.shift = +12\n");
	CHECK(err == NULL);
	if (err)
		fprintf(stderr, "load error: %s\n", err);
	CHECK_STR(config_get_str(cfg, "smtp.listen"), "[::]:2525");
	CHECK(config_get_int(cfg, "rpc.port") == 8000);
	CHECK(config_get_size(cfg, "smtp.max_size") == 25u << 20);
	CHECK(config_get_duration_ms(cfg, "smtp.timeout") == 90000);
	CHECK(config_get_bool(cfg, "tls.required"));
	CHECK_STR(config_get_str(cfg, "smtp.banner"), "  spaced # not a comment \"q\" \\ ");
	CHECK_STR(config_get_str(cfg, "tls.cert"), "/etc/ssl/a#b.pem");
	CHECK(config_get_int(cfg, "debug.shift") == 12);
	size_t n;
	const char *const *l = config_get_list(cfg, "imap.listen", &n);
	CHECK(n == 3);
	if (n == 3) {
		CHECK_STR(l[0], "127.0.0.1:143");
		CHECK_STR(l[1], "[::1]:143");
		CHECK_STR(l[2], "10.0.0.1:143");
	}
	config_get_list(cfg, "node.peers", &n);
	CHECK(n == 0 && config_is_set(cfg, "node.peers"));

	/* A second file overrides; its first list line replaces. */
	err = load_text(cfg, "rpc.port = 9000\nimap.listen = 1.1.1.1:1\n");
	CHECK(err == NULL);
	CHECK(config_get_int(cfg, "rpc.port") == 9000);
	l = config_get_list(cfg, "imap.listen", &n);
	CHECK(n == 1 && strcmp(l[0], "1.1.1.1:1") == 0);
	config_free(&cfg);
}

static void test_errors(void)
{
	check_load_error("rpc.port = 1\n\n# c\nsmtp.lisen = 1.2.3.4:25\n",
			 "F:4: unknown key 'smtp.lisen' (did you mean 'smtp.listen'?)");
	check_load_error("totally.unrelated = 1\n", "F:1: unknown key 'totally.unrelated'");
	check_load_error("# x\n\n\n\n\n\nrpc.port = 70000\n",
			 "F:7: value 70000 for 'rpc.port' out of range [1, 65535]");
	check_load_error("rpc.port = 0\n", "F:1: value 0 for 'rpc.port' out of range [1, 65535]");
	check_load_error("rpc.port = 80x\n",
			 "F:1: invalid value '80x' for 'rpc.port': expected an integer");
	check_load_error("rpc.port = 99999999999999999999\n",
			 "F:1: invalid value '99999999999999999999' for 'rpc.port': number too large");
	check_load_error("rpc.port\n", "F:1: expected 'key = value'");
	check_load_error("= 5\n", "F:1: missing key before '='");
	check_load_error("rpc.port = 1\nrpc.port = 2\n",
			 "F:2: duplicate key 'rpc.port' (already set on line 1)");
	check_load_error("tls.required = maybe\n",
			 "F:1: invalid value 'maybe' for 'tls.required': expected yes/no, "
			 "true/false, on/off or 1/0");
	check_load_error("smtp.max_size = 2G\n",
			 "F:1: value 2G for 'smtp.max_size' out of range [1k, 1G]");
	check_load_error("smtp.max_size = 512\n",
			 "F:1: value 512 for 'smtp.max_size' out of range [1k, 1G]");
	check_load_error("smtp.timeout = 30\n",
			 "F:1: invalid value '30' for 'smtp.timeout': missing unit (ms, s, m, h or d)");
	check_load_error("smtp.timeout = 2h\n",
			 "F:1: value 2h for 'smtp.timeout' out of range [1s, 1h]");
	check_load_error("smtp.banner = \"open\n",
			 "F:1: value for 'smtp.banner': unterminated quote");
	check_load_error("smtp.banner = \"a\" b\n",
			 "F:1: value for 'smtp.banner': text after closing quote");
	check_load_error("smtp.listen = ::1:25\n",
			 "F:1: invalid address for 'smtp.listen': IPv6 address in '::1:25' must be "
			 "in brackets, e.g. [::1]:25");
	check_load_error("imap.listen = a,,b\n",
			 "F:1: invalid value 'a,,b' for 'imap.listen': empty item in list");
	check_load_error("smtp.banner = a\x01z\n",
			 "F:1: control character or NUL in line");

	char longline[6000];
	memset(longline, 'x', sizeof(longline));
	memcpy(longline, "smtp.banner = ", 14);
	memcpy(longline + sizeof(longline) - 2, "\n", 2);
	check_load_error(longline, "F:1: line too long (max 4096)");

	struct config *cfg = new_cfg();
	const char *err = NULL;
	CHECK(config_load_file(cfg, "/nonexistent/x.conf", &err) < 0);
	CHECK_STR(err, "/nonexistent/x.conf: No such file or directory");
	config_free(&cfg);
}

static int64_t size_of(const char *s, const char **err_r)
{
	static const struct config_def d[] = { { "s", CONFIG_SIZE, NULL, 0, 0, NULL } };
	struct config *cfg = config_new(d, 1);
	int64_t v = -1;
	*err_r = NULL;
	const char *err;
	if (config_set(cfg, "s", s, &err) == 0)
		v = (int64_t)config_get_size(cfg, "s");
	else
		*err_r = "error";
	config_free(&cfg);
	return v;
}

static int64_t duration_of(const char *s)
{
	static const struct config_def d[] = { { "d", CONFIG_DURATION, NULL, 0, 0, NULL } };
	struct config *cfg = config_new(d, 1);
	int64_t v = -1;
	const char *err;
	if (config_set(cfg, "d", s, &err) == 0)
		v = (int64_t)config_get_duration_ms(cfg, "d");
	config_free(&cfg);
	return v;
}

static void test_suffixes(void)
{
	static const struct {
		const char *in;
		int64_t want; /* -1 = must be rejected */
	} sizes[] = {
		{ "0", 0 },	       { "512", 512 },
		{ "1k", 1024 },	       { "1K", 1024 },
		{ "2kb", 2048 },       { "3KiB", 3072 },
		{ "10M", 10 << 20 },   { "1G", 1 << 30 },
		{ "1T", 1ll << 40 },   { "7b", 7 },
		{ "", -1 },	       { "-1k", -1 },
		{ "10Q", -1 },	       { "1.5M", -1 },
		{ "k", -1 },	       { "1 k", -1 },
		{ "1kk", -1 },	       { "8388608T", -1 },
		{ "8388607T", 8388607ll << 40 },
		{ "99999999999999999999", -1 },
	};
	for (size_t i = 0; i < ARRAY_LEN(sizes); i++) {
		const char *err;
		int64_t v = size_of(sizes[i].in, &err);
		if (v != sizes[i].want) {
			fprintf(stderr, "size '%s': got %lld want %lld\n", sizes[i].in,
				(long long)v, (long long)sizes[i].want);
			failures++;
		}
	}
	static const struct {
		const char *in;
		int64_t want;
	} durations[] = {
		{ "0", 0 },	     { "500ms", 500 },	     { "30s", 30000 },
		{ "5m", 300000 },    { "1h", 3600000 },	     { "2d", 172800000 },
		{ "30", -1 },	     { "5x", -1 },	     { "1.5s", -1 },
		{ "-1s", -1 },	     { "s", -1 },	     { "5S", -1 },
		{ "0ms", 0 },	     { "106751991168d", -1 },
		{ "106751991167d", 106751991167ll * 86400000 },
	};
	for (size_t i = 0; i < ARRAY_LEN(durations); i++) {
		int64_t v = duration_of(durations[i].in);
		if (v != durations[i].want) {
			fprintf(stderr, "duration '%s': got %lld want %lld\n",
				durations[i].in, (long long)v, (long long)durations[i].want);
			failures++;
		}
	}
}

static void test_set(void)
{
	struct config *cfg = new_cfg();
	const char *err = NULL;
	CHECK(config_set(cfg, "rpc.port", "8080", &err) == 0);
	CHECK(config_get_int(cfg, "rpc.port") == 8080);
	CHECK(config_set(cfg, "rpc.port", "8081", &err) == 0); /* overrides */
	CHECK(config_get_int(cfg, "rpc.port") == 8081);
	CHECK(config_set(cfg, "rpc.port", "70000", &err) < 0);
	CHECK_STR(err, "value 70000 for 'rpc.port' out of range [1, 65535]");
	CHECK(config_get_int(cfg, "rpc.port") == 8081); /* unchanged */
	CHECK(config_set(cfg, "rpc.prot", "1", &err) < 0);
	CHECK_STR(err, "unknown key 'rpc.prot' (did you mean 'rpc.port'?)");
	CHECK(config_set_arg(cfg, "smtp.banner= x y ", &err) == 0);
	CHECK_STR(config_get_str(cfg, "smtp.banner"), " x y "); /* literal */
	CHECK(config_set(cfg, "smtp.banner", config_get_str(cfg, "smtp.banner"), &err) == 0);
	CHECK_STR(config_get_str(cfg, "smtp.banner"), " x y ");
	CHECK(config_set_arg(cfg, "novalue", &err) < 0);
	CHECK_STR(err, "expected key=value, got 'novalue'");
	CHECK(config_set(cfg, "smtp.banner", "a\nb", &err) < 0);
	CHECK_STR(err, "control character in value for 'smtp.banner'");

	/* Lists: the first set replaces, later ones append. */
	CHECK(config_set(cfg, "imap.listen", "1.1.1.1:1", &err) == 0);
	CHECK(config_set_arg(cfg, "imap.listen=2.2.2.2:2,3.3.3.3:3", &err) == 0);
	size_t n;
	const char *const *l = config_get_list(cfg, "imap.listen", &n);
	CHECK(n == 3 && strcmp(l[0], "1.1.1.1:1") == 0 && strcmp(l[2], "3.3.3.3:3") == 0);
	config_free(&cfg);
}

static void print_to(const struct config *cfg, char **text_r, size_t *len_r)
{
	FILE *f = open_memstream(text_r, len_r);
	config_print(cfg, f);
	fclose(f);
}

static void test_print_round_trip(void)
{
	struct config *cfg = new_cfg();
	const char *err;
	CHECK(load_text(cfg, "smtp.listen = 127.0.0.1:0\n"
			     "smtp.max_size = 1536k\n"
			     "smtp.timeout = 1500ms\n"
			     "tls.required = on\n"
			     "smtp.banner = \" lead and trail \"\n"
			     "imap.listen = a, b\n"
			     "imap.listen = c\n"
			     "store.cache = 3000\n") == NULL);
	CHECK(config_set(cfg, "tls.cert", "\"starts with quote \\ x", &err) == 0);
	CHECK(config_set(cfg, "node.peers", "\"p1", &err) == 0);
	CHECK(config_set(cfg, "node.peers", "p2", &err) == 0);

	char *text = NULL;
	size_t len = 0;
	print_to(cfg, &text, &len);
	CHECK(strstr(text, "# SMTP listener\nsmtp.listen = 127.0.0.1:0\n") != NULL);
	CHECK(strstr(text, "\nsmtp.max_size = 1536k\n") != NULL);
	CHECK(strstr(text, "\nsmtp.timeout = 1500ms\n") != NULL);
	CHECK(strstr(text, "\nrpc.port = 7000\n") != NULL);
	CHECK(strstr(text, "\nrpc.deadline = 0\n") != NULL);
	CHECK(strstr(text, "\ntls.required = yes\n") != NULL);
	CHECK(strstr(text, "\nsmtp.banner = \" lead and trail \"\n") != NULL);
	CHECK(strstr(text, "\nimap.listen = a, b, c\n") != NULL);
	CHECK(strstr(text, "\n# Peers\n# second help line\n") != NULL);
	CHECK(strstr(text, "\ndebug.shift = -3\n") != NULL);
	CHECK(strstr(text, "\nstore.cache = 3000\n") != NULL);

	struct config *back = new_cfg();
	const char *path = write_file("print.conf", text);
	err = NULL;
	CHECK(config_load_file(back, path, &err) == 0);
	if (err)
		fprintf(stderr, "reload error: %s\n--\n%s--\n", err, text);
	unlink(path);

	for (size_t i = 0; i < ARRAY_LEN(defs); i++) {
		const char *k = defs[i].name;
		CHECK(config_is_set(cfg, k) == config_is_set(back, k));
		switch (defs[i].type) {
		case CONFIG_BOOL:
			CHECK(config_get_bool(cfg, k) == config_get_bool(back, k));
			break;
		case CONFIG_INT:
			CHECK(config_get_int(cfg, k) == config_get_int(back, k));
			break;
		case CONFIG_SIZE:
			CHECK(config_get_size(cfg, k) == config_get_size(back, k));
			break;
		case CONFIG_DURATION:
			CHECK(config_get_duration_ms(cfg, k) == config_get_duration_ms(back, k));
			break;
		case CONFIG_STRING:
		case CONFIG_ADDR: {
			const char *a = config_get_str(cfg, k), *b = config_get_str(back, k);
			CHECK((a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0));
			break;
		}
		case CONFIG_LIST: {
			size_t na, nb;
			const char *const *la = config_get_list(cfg, k, &na);
			const char *const *lb = config_get_list(back, k, &nb);
			CHECK(na == nb);
			for (size_t j = 0; j < na && j < nb; j++)
				CHECK_STR(la[j], lb[j]);
			break;
		}
		}
	}
	CHECK_STR(config_get_str(back, "tls.cert"), "\"starts with quote \\ x");

	/* Printing the reloaded config gives the same text. */
	char *text2 = NULL;
	size_t len2 = 0;
	print_to(back, &text2, &len2);
	CHECK(len == len2 && memcmp(text, text2, len) == 0);
	free(text);
	free(text2);
	config_free(&back);
	config_free(&cfg);
}

static void test_addr(void)
{
	struct sockaddr_storage ss;
	socklen_t sl = 0;
	const char *err = NULL;

	CHECK(config_parse_addr("127.0.0.1:25", &ss, &sl, &err) == 0);
	const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
	CHECK(ss.ss_family == AF_INET && sl == sizeof(*sin) && ntohs(sin->sin_port) == 25 &&
	      sin->sin_addr.s_addr == htonl(INADDR_LOOPBACK));
	CHECK(config_parse_addr("localhost:8080", &ss, &sl, &err) == 0);
	CHECK(ss.ss_family == AF_INET && ntohs(sin->sin_port) == 8080 &&
	      sin->sin_addr.s_addr == htonl(INADDR_LOOPBACK));
	CHECK(config_parse_addr("[::1]:993", &ss, &sl, &err) == 0);
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;
	CHECK(ss.ss_family == AF_INET6 && sl == sizeof(*sin6) && ntohs(sin6->sin6_port) == 993 &&
	      memcmp(&sin6->sin6_addr, &in6addr_loopback, sizeof(in6addr_loopback)) == 0);
	CHECK(config_parse_addr("[::]:0", &ss, &sl, &err) == 0);

	static const struct {
		const char *in, *err;
	} bad[] = {
		{ "::1:25", "IPv6 address in '::1:25' must be in brackets, e.g. [::1]:25" },
		{ "1.2.3.4", "missing ':port' in '1.2.3.4'" },
		{ "1.2.3.4:", "invalid port '' in '1.2.3.4:' (0-65535)" },
		{ "1.2.3.4:65536", "invalid port '65536' in '1.2.3.4:65536' (0-65535)" },
		{ "1.2.3.4:2x", "invalid port '2x' in '1.2.3.4:2x' (0-65535)" },
		{ "1.2.3.4:-1", "invalid port '-1' in '1.2.3.4:-1' (0-65535)" },
		{ "mx.example.org:25",
		  "'mx.example.org' is not a numeric IP address (host names are not resolved)" },
		{ "[::1:25", "missing ']' in '[::1:25'" },
		{ "[::1]25", "expected ':port' after ']' in '[::1]25'" },
		{ "[zz]:25", "invalid IPv6 address 'zz' in '[zz]:25'" },
		{ "[]:25", "invalid IPv6 address in '[]:25'" },
		{ ":25", "missing host in ':25' (0.0.0.0 or [::] for any)" },
		{ "a b:25", "invalid host name in 'a b:25'" },
		{ "1.2.3.256:25",
		  "'1.2.3.256' is not a numeric IP address (host names are not resolved)" },
	};
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		err = NULL;
		CHECK(config_parse_addr(bad[i].in, &ss, &sl, &err) < 0);
		CHECK_STR(err, bad[i].err);
	}

	char host[16];
	uint16_t port;
	CHECK(config_split_addr("redis.local:6379", host, sizeof(host), &port, &err) == 0);
	CHECK_STR(host, "redis.local");
	CHECK(port == 6379);
	CHECK(config_split_addr("a-very-long-host-name:1", host, sizeof(host), &port, &err) < 0);

	struct config *cfg = new_cfg();
	CHECK(config_get_addr(cfg, "redis.addr", &ss, &sl, &err) == 0 && ss.ss_family == AF_INET6);
	CHECK(config_set(cfg, "redis.addr", "redis:6379", &err) == 0);
	CHECK(config_get_addr(cfg, "redis.addr", &ss, &sl, &err) < 0);
	CHECK_STR(err, "'redis.addr': 'redis' is not a numeric IP address (host names are "
		       "not resolved)");
	config_free(&cfg);
}

/* A bad table or a bad getter call aborts: run it in a child. */
static bool aborts(void (*fn)(void))
{
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		freopen("/dev/null", "w", stderr);
		fn();
		_exit(0);
	}
	int status = 0;
	waitpid(pid, &status, 0);
	return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

static void bad_default(void)
{
	static const struct config_def d[] = { { "p", CONFIG_INT, "0", 1, 10, NULL } };
	struct config *cfg = config_new(d, 1);
	config_free(&cfg);
}

static void bad_default_size(void)
{
	static const struct config_def d[] = { { "s", CONFIG_SIZE, "10X", 0, 0, NULL } };
	struct config *cfg = config_new(d, 1);
	config_free(&cfg);
}

static void duplicate_def(void)
{
	static const struct config_def d[] = {
		{ "a", CONFIG_INT, "1", 0, 0, NULL },
		{ "a", CONFIG_INT, "1", 0, 0, NULL },
	};
	struct config *cfg = config_new(d, 2);
	config_free(&cfg);
}

static void unknown_getter(void)
{
	struct config *cfg = new_cfg();
	config_get_int(cfg, "no.such.key");
	config_free(&cfg);
}

static void wrong_type_getter(void)
{
	struct config *cfg = new_cfg();
	config_get_int(cfg, "smtp.max_size");
	config_free(&cfg);
}

static void good_table(void)
{
	struct config *cfg = new_cfg();
	config_free(&cfg);
}

static void test_programming_errors(void)
{
	CHECK(aborts(bad_default));
	CHECK(aborts(bad_default_size));
	CHECK(aborts(duplicate_def));
	CHECK(aborts(unknown_getter));
	CHECK(aborts(wrong_type_getter));
	CHECK(!aborts(good_table));
}

int main(void)
{
	test_defaults();
	test_load();
	test_errors();
	test_suffixes();
	test_set();
	test_print_round_trip();
	test_addr();
	test_programming_errors();
	if (failures) {
		fprintf(stderr, "test_config: %d check(s) failed\n", failures);
		return 1;
	}
	printf("test_config: ok\n");
	return 0;
}
