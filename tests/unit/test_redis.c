/* Redis client against a real redis-server started by the test on a free
 * loopback port: round trips, a 1000-command pipeline, a Lua rate limiter
 * through EVALSHA/EVAL, pub/sub, server killed and restarted (fail fast,
 * transparent reconnect, subscription restored), command timeout against a
 * SIGSTOPped server, and freeing with commands in flight.
 *
 * The whole test runs inside one loop_run() as a list of steps; each step
 * issues commands and names a condition the next one waits for. Skips (77)
 * only when redis-server is not installed. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/loop.h"
#include "common/redis.h"

static int failures;
#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, \
				__LINE__, #cond);                              \
			failures++;                                            \
		}                                                              \
	} while (0)

/* ---- the redis-server child ------------------------------------------- */

static volatile pid_t server_pid = -1;
static int server_port;
static char server_dir[512];

static void server_kill_now(void)
{
	pid_t pid = server_pid;
	if (pid > 0) {
		kill(pid, SIGKILL);
		kill(pid, SIGCONT);
		waitpid(pid, NULL, 0);
		server_pid = -1;
	}
}

static void on_fatal_signal(int sig)
{
	pid_t pid = server_pid;
	if (pid > 0)
		kill(pid, SIGKILL);
	if (sig == SIGALRM) {
		static const char msg[] = "test_redis: time limit exceeded\n";
		ssize_t r = write(2, msg, sizeof(msg) - 1);
		(void)r;
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

static bool have_redis_server(void)
{
	const char *path = getenv("PATH");
	if (!path)
		path = "/usr/local/bin:/usr/bin:/bin";
	char buf[1024];
	while (*path) {
		const char *e = strchr(path, ':');
		size_t n = e ? (size_t)(e - path) : strlen(path);
		snprintf(buf, sizeof(buf), "%.*s/redis-server", (int)n, path);
		if (access(buf, X_OK) == 0)
			return true;
		path += n;
		if (*path == ':')
			path++;
	}
	return false;
}

static int pick_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET };
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t len = sizeof(sa);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
		perror("pick_port");
		exit(1);
	}
	close(fd);
	return ntohs(sa.sin_port);
}

static void server_start(void)
{
	char port[16], logf[600];
	snprintf(port, sizeof(port), "%d", server_port);
	snprintf(logf, sizeof(logf), "%s/redis.log", server_dir);
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		perror("fork");
		exit(1);
	}
	if (pid == 0) {
		/* Dies with the test even if the test dies without cleanup. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		int fd = open(logf, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		execlp("redis-server", "redis-server", "--port", port, "--bind",
		       "127.0.0.1", "--save", "", "--appendonly", "no", "--dir",
		       server_dir, "--daemonize", "no", (char *)NULL);
		_exit(127);
	}
	server_pid = pid;
}

/* Blocking PING until +PONG (the test is single-threaded; a few ms). */
static bool server_wait_ready(int timeout_ms)
{
	uint64_t end = time_mono_ms() + (uint64_t)timeout_ms;
	while (time_mono_ms() < end) {
		if (server_pid > 0 && waitpid(server_pid, NULL, WNOHANG) == server_pid) {
			server_pid = -1;
			fprintf(stderr, "redis-server exited; see %s/redis.log\n", server_dir);
			return false;
		}
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in sa = { .sin_family = AF_INET,
					  .sin_port = htons((uint16_t)server_port) };
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		struct timeval tv = { .tv_sec = 0, .tv_usec = 300 * 1000 };
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		char buf[16] = { 0 };
		bool ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
			  write(fd, "PING\r\n", 6) == 6 && read(fd, buf, 5) == 5 &&
			  memcmp(buf, "+PONG", 5) == 0;
		close(fd);
		if (ok)
			return true;
		usleep(20 * 1000);
	}
	return false;
}

/* ---- results ---------------------------------------------------------- */

struct result {
	int calls;
	bool null;
	int type;
	long long integer;
	char str[64];
	long long elem[2];
	size_t elements;
	uint64_t issued_ms, done_ms;
};

static void result_cb(struct redis_client *c, redisReply *r, void *arg)
{
	struct result *res = arg;
	UNUSED(c);
	res->calls++;
	res->done_ms = time_mono_ms();
	res->null = r == NULL;
	if (!r)
		return;
	res->type = r->type;
	res->integer = r->integer;
	if (r->str) {
		size_t n = MIN(r->len, sizeof(res->str) - 1);
		memcpy(res->str, r->str, n);
		res->str[n] = '\0';
	}
	res->elements = r->elements;
	for (size_t i = 0; i < r->elements && i < 2; i++)
		res->elem[i] = r->element[i]->integer;
}

static void result_issue(struct result *res)
{
	memset(res, 0, sizeof(*res));
	res->issued_ms = time_mono_ms();
}

static bool res_status(const struct result *r, const char *s)
{
	return r->calls == 1 && !r->null && r->type == REDIS_REPLY_STATUS &&
	       strcmp(r->str, s) == 0;
}

static bool res_string(const struct result *r, const char *s)
{
	return r->calls == 1 && !r->null && r->type == REDIS_REPLY_STRING &&
	       strcmp(r->str, s) == 0;
}

static bool res_int(const struct result *r, long long v)
{
	return r->calls == 1 && !r->null && r->type == REDIS_REPLY_INTEGER &&
	       r->integer == v;
}

/* ---- test state ------------------------------------------------------- */

static struct loop *L;
static struct redis_client *C;  /* main client, db 2 */
static struct redis_client *C2; /* publisher / db 0 */
static struct redis_client *C3; /* short command timeout */
static struct redis_sub *SUB_A, *SUB_B;
static int connects[2], disconnects[2]; /* C, per link */
static int c3_connects, c3_disconnects;

static struct result R[16];
#define PIPE_N 1000
static int pipe_next, pipe_bad, pipe_calls;
static int msgs_a, msgs_b;
static char last_msg[64];

static void c_on_connect(struct redis_client *c, enum redis_link link, void *arg)
{
	UNUSED(c);
	UNUSED(arg);
	connects[link]++;
}

static void c_on_disconnect(struct redis_client *c, enum redis_link link,
			    const char *reason, void *arg)
{
	UNUSED(c);
	UNUSED(arg);
	CHECK(reason && reason[0]);
	disconnects[link]++;
}

static void c3_on_connect(struct redis_client *c, enum redis_link link, void *arg)
{
	UNUSED(c);
	UNUSED(arg);
	CHECK(link == REDIS_LINK_CMD);
	c3_connects++;
}

static void c3_on_disconnect(struct redis_client *c, enum redis_link link,
			     const char *reason, void *arg)
{
	UNUSED(c);
	UNUSED(link);
	UNUSED(reason);
	UNUSED(arg);
	c3_disconnects++;
}

static void pipe_cb(struct redis_client *c, redisReply *r, void *arg)
{
	UNUSED(c);
	int idx = (int)(intptr_t)arg;
	pipe_calls++;
	if (idx != pipe_next || !r || r->type != REDIS_REPLY_INTEGER ||
	    r->integer != idx + 1)
		pipe_bad++;
	pipe_next = idx + 1;
}

static void msg_cb(struct redis_client *c, struct view ch, struct view msg, void *arg)
{
	UNUSED(c);
	int *count = arg;
	(*count)++;
	CHECK(view_eq_cstr(ch, "news"));
	snprintf(last_msg, sizeof(last_msg), "%.*s", (int)msg.len, (const char *)msg.ptr);
}

static const char *const RATE_LUA =
	"local n = redis.call('INCR', KEYS[1])\n"
	"redis.call('PEXPIRE', KEYS[1], ARGV[1])\n"
	"if n > tonumber(ARGV[2]) then return {0, n} end\n"
	"return {1, n}\n";
static struct redis_script rate_script;

static void rate_eval(struct result *res)
{
	const char *args[3] = { "rl:user@example.org", "10000", "3" };
	result_issue(res);
	CHECK(redis_script_eval(C, &rate_script, result_cb, res, 1, 3, args, NULL) == 0);
}

/* Frees the client from inside its own callback (deferred teardown). */
static void free_in_cb(struct redis_client *c, redisReply *r, void *arg)
{
	result_cb(c, r, arg);
	CHECK(c == C2);
	redis_client_free(&C2);
	CHECK(C2 == NULL);
}

/* ---- steps ------------------------------------------------------------ */

struct step {
	const char *name;
	void (*start)(void);
	bool (*done)(void);
	uint32_t timeout_ms;
};

static char url[128], url0[128];

static void s_connect(void)
{
	const char *err = NULL;
	struct redis_options o = {
		.on_connect = c_on_connect, .on_disconnect = c_on_disconnect,
	};
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d/2", server_port);
	snprintf(url0, sizeof(url0), "127.0.0.1:%d", server_port);
	C = redis_client_new(L, url, &o, &err);
	CHECK(C != NULL);
	C2 = redis_client_new(L, url0, NULL, &err);
	CHECK(C2 != NULL);
	CHECK(!redis_client_connected(C));
	/* Issued while connecting: held until SELECT 2 is done. */
	result_issue(&R[0]);
	CHECK(redis_command(C, result_cb, &R[0], "SET %s %s", "where", "db2") == 0);
	CHECK(R[0].calls == 0);
}
static bool d_connect(void)
{
	return redis_client_connected(C) && redis_client_connected(C2) &&
	       R[0].calls == 1;
}

static void s_basic(void)
{
	CHECK(res_status(&R[0], "OK"));
	CHECK(connects[REDIS_LINK_CMD] == 1);
	for (int i = 1; i <= 6; i++)
		result_issue(&R[i]);
	redis_command(C, result_cb, &R[1], "SET %s %b", "k1", "v\0x", (size_t)3);
	redis_command(C, result_cb, &R[2], "GET k1");
	redis_command(C, result_cb, &R[3], "INCR ctr");
	const char *argv[2] = { "INCR", "ctr" };
	redis_command_argv(C, result_cb, &R[4], 2, argv, NULL);
	redis_command(C, result_cb, &R[5], "GET where");
	redis_command(C2, result_cb, &R[6], "GET where"); /* db 0: nil */
	/* Refused on the command link; still exactly one NULL callback. */
	result_issue(&R[7]);
	CHECK(redis_command(C, result_cb, &R[7], "SUBSCRIBE x") == -1);
	CHECK(R[7].calls == 0);
}
static bool d_basic(void)
{
	for (int i = 1; i <= 7; i++)
		if (!R[i].calls)
			return false;
	return true;
}

static void s_pipeline(void)
{
	CHECK(res_status(&R[1], "OK"));
	CHECK(R[2].calls == 1 && R[2].type == REDIS_REPLY_STRING &&
	      memcmp(R[2].str, "v\0x", 3) == 0);
	CHECK(res_int(&R[3], 1));
	CHECK(res_int(&R[4], 2));
	CHECK(res_string(&R[5], "db2"));
	CHECK(R[6].calls == 1 && R[6].type == REDIS_REPLY_NIL);
	CHECK(R[7].calls == 1 && R[7].null);
	for (int i = 0; i < PIPE_N; i++)
		CHECK(redis_command(C, pipe_cb, (void *)(intptr_t)i, "INCR pipe") == 0);
	CHECK(pipe_calls == 0);
}
static bool d_pipeline(void) { return pipe_calls == PIPE_N; }

static void s_script(void)
{
	CHECK(pipe_bad == 0);
	CHECK(pipe_next == PIPE_N);
	redis_script_init(&rate_script, RATE_LUA);
	CHECK(strlen(rate_script.sha1_hex) == 40);
	for (int i = 0; i < 5; i++)
		rate_eval(&R[i]);
}
static bool d_script(void)
{
	for (int i = 0; i < 5; i++)
		if (!R[i].calls)
			return false;
	return true;
}

static void s_script2(void)
{
	for (int i = 0; i < 5; i++) {
		CHECK(R[i].calls == 1 && R[i].type == REDIS_REPLY_ARRAY &&
		      R[i].elements == 2);
		CHECK(R[i].elem[0] == (i < 3 ? 1 : 0));
		CHECK(R[i].elem[1] == i + 1);
	}
	result_issue(&R[5]);
	redis_command(C, result_cb, &R[5], "PTTL %s", "rl:user@example.org");
	rate_eval(&R[6]); /* EVALSHA hits the cache now */
	result_issue(&R[7]);
	redis_command(C, result_cb, &R[7], "SCRIPT FLUSH");
	rate_eval(&R[8]); /* NOSCRIPT -> EVAL fallback */
}
static bool d_script2(void) { return R[8].calls == 1; }

static void s_subscribe(void)
{
	CHECK(R[5].calls == 1 && R[5].type == REDIS_REPLY_INTEGER &&
	      R[5].integer > 0 && R[5].integer <= 10000);
	CHECK(R[6].calls == 1 && R[6].elements == 2 && R[6].elem[0] == 0 &&
	      R[6].elem[1] == 6);
	CHECK(res_status(&R[7], "OK"));
	CHECK(R[8].calls == 1 && R[8].elements == 2 && R[8].elem[1] == 7);
	SUB_A = redis_subscribe(C, "news", msg_cb, &msgs_a);
	SUB_B = redis_subscribe(C, "news", msg_cb, &msgs_b);
	CHECK(SUB_A && SUB_B);
}
static bool d_subscribe(void) { return redis_client_subscribed(C); }

static void s_publish(void)
{
	CHECK(connects[REDIS_LINK_SUB] == 1);
	redis_unsubscribe(C, &SUB_B);
	CHECK(SUB_B == NULL);
	result_issue(&R[0]);
	redis_command(C2, result_cb, &R[0], "PUBLISH news %s", "hello");
}
static bool d_publish(void) { return R[0].calls == 1 && msgs_a == 1; }

static void s_kill(void)
{
	CHECK(res_int(&R[0], 1));
	CHECK(msgs_b == 0);
	CHECK(strcmp(last_msg, "hello") == 0);
	server_kill_now();
	result_issue(&R[1]);
	redis_command(C, result_cb, &R[1], "GET k1");
}
static bool d_kill(void)
{
	return R[1].calls == 1 && disconnects[REDIS_LINK_CMD] == 1 &&
	       disconnects[REDIS_LINK_SUB] == 1 && !redis_client_connected(C);
}

static void s_failfast(void)
{
	CHECK(R[1].null);
	CHECK(R[1].done_ms - R[1].issued_ms < 2000);
	result_issue(&R[2]);
	CHECK(redis_command(C, result_cb, &R[2], "GET k1") == -1);
	CHECK(R[2].calls == 0); /* never from inside the call */
}
static bool d_failfast(void) { return R[2].calls == 1; }

static void s_restart(void)
{
	CHECK(R[2].null);
	CHECK(R[2].done_ms - R[2].issued_ms < 500);
	server_start();
	CHECK(server_wait_ready(5000));
}
static bool d_restart(void)
{
	return redis_client_connected(C) && redis_client_subscribed(C) &&
	       redis_client_connected(C2);
}

static void s_after(void)
{
	CHECK(connects[REDIS_LINK_CMD] == 2);
	CHECK(connects[REDIS_LINK_SUB] == 2);
	for (int i = 0; i < 4; i++)
		result_issue(&R[i]);
	redis_command(C, result_cb, &R[0], "SET k2 v2");
	redis_command(C, result_cb, &R[1], "GET k2");
	redis_command(C, result_cb, &R[2], "GET where"); /* fresh server: nil */
	redis_command(C2, result_cb, &R[3], "PUBLISH news %s", "again");
}
static bool d_after(void)
{
	return R[0].calls && R[1].calls && R[2].calls && R[3].calls && msgs_a == 2;
}

static void s_c3(void)
{
	CHECK(res_status(&R[0], "OK"));
	CHECK(res_string(&R[1], "v2"));
	CHECK(R[2].calls == 1 && R[2].type == REDIS_REPLY_NIL);
	CHECK(res_int(&R[3], 1));
	CHECK(strcmp(last_msg, "again") == 0);
	CHECK(msgs_b == 0);
	const char *err = NULL;
	struct redis_options o = {
		.command_timeout_ms = 600,
		.on_connect = c3_on_connect,
		.on_disconnect = c3_on_disconnect,
	};
	C3 = redis_client_new(L, url0, &o, &err);
	CHECK(C3 != NULL);
}
static bool d_c3(void) { return redis_client_connected(C3); }

/* SELECT fails: queued commands fail with NULL and never run on db 0. */
static struct redis_client *C4;
static void s_bad_db(void)
{
	const char *err = NULL;
	char u[128];
	snprintf(u, sizeof(u), "redis://127.0.0.1:%d/99", server_port);
	C4 = redis_client_new(L, u, NULL, &err);
	CHECK(C4 != NULL);
	result_issue(&R[11]);
	CHECK(redis_command(C4, result_cb, &R[11], "SET baddb 1") == 0);
}
static bool d_bad_db(void) { return R[11].calls == 1; }

static void s_bad_db2(void)
{
	CHECK(R[11].null);
	CHECK(!redis_client_connected(C4));
	redis_client_free(&C4);
	result_issue(&R[12]);
	redis_command(C3, result_cb, &R[12], "EXISTS baddb");
}
static bool d_bad_db2(void) { return R[12].calls == 1; }

static void s_stop(void)
{
	CHECK(res_int(&R[12], 0));
	kill(server_pid, SIGSTOP);
	result_issue(&R[4]);
	result_issue(&R[5]);
	redis_command(C3, result_cb, &R[4], "GET k2");
	redis_command(C3, result_cb, &R[5], "GET k2");
}
static bool d_stop(void) { return R[4].calls == 1 && R[5].calls == 1; }

static void s_cont(void)
{
	uint64_t took = R[4].done_ms - R[4].issued_ms;
	CHECK(R[4].null && R[5].null);
	CHECK(took >= 550 && took < 3000);
	CHECK(c3_disconnects == 1);
	kill(server_pid, SIGCONT);
	result_issue(&R[6]);
}
static bool resume_issued;
static bool d_cont(void)
{
	/* The reconnect may have happened while the server was stopped (the
	 * kernel completes the TCP handshake); retry GET until it answers. */
	if (res_status(&R[6], "PONG"))
		return true;
	if (resume_issued && R[6].calls == 0)
		return false; /* in flight; the 600 ms timeout bounds it */
	if (redis_client_connected(C3)) {
		result_issue(&R[6]);
		resume_issued = true;
		redis_command(C3, result_cb, &R[6], "PING");
	}
	return false;
}

static void s_free(void)
{
	CHECK(c3_connects >= 2);
	/* Pending commands get NULL before redis_client_free returns. */
	result_issue(&R[7]);
	result_issue(&R[8]);
	redis_command(C3, result_cb, &R[7], "GET k2");
	redis_command(C3, result_cb, &R[8], "BLPOP nothing 0");
	redis_client_free(&C3);
	CHECK(C3 == NULL);
	CHECK(R[7].calls == 1 && R[7].null);
	CHECK(R[8].calls == 1 && R[8].null);
	redis_client_free(&C3); /* NULL-safe */
	/* Free from inside a callback: the command behind it gets NULL once. */
	result_issue(&R[9]);
	result_issue(&R[10]);
	redis_command(C2, free_in_cb, &R[9], "PING");
	redis_command(C2, result_cb, &R[10], "BLPOP nothing 0");
}
static bool d_free(void) { return R[9].calls == 1 && R[10].calls == 1; }

static void s_end(void)
{
	CHECK(res_status(&R[9], "PONG"));
	CHECK(R[10].null);
	CHECK(C2 == NULL);
	redis_unsubscribe(C, &SUB_A);
	redis_client_free(&C);
}
static bool d_end(void) { return true; }

static const struct step steps[] = {
	{ "connect", s_connect, d_connect, 5000 },
	{ "basic", s_basic, d_basic, 3000 },
	{ "pipeline", s_pipeline, d_pipeline, 5000 },
	{ "script", s_script, d_script, 3000 },
	{ "script2", s_script2, d_script2, 3000 },
	{ "subscribe", s_subscribe, d_subscribe, 3000 },
	{ "publish", s_publish, d_publish, 3000 },
	{ "kill", s_kill, d_kill, 3000 },
	{ "failfast", s_failfast, d_failfast, 1000 },
	{ "restart", s_restart, d_restart, 8000 },
	{ "after_restart", s_after, d_after, 3000 },
	{ "c3_connect", s_c3, d_c3, 3000 },
	{ "bad_db", s_bad_db, d_bad_db, 3000 },
	{ "bad_db_check", s_bad_db2, d_bad_db2, 3000 },
	{ "timeout", s_stop, d_stop, 4000 },
	{ "resume", s_cont, d_cont, 10000 },
	{ "free", s_free, d_free, 3000 },
	{ "end", s_end, d_end, 1000 },
};

static size_t cur_step;
static uint64_t step_deadline;
static struct timer tick;
static bool aborted;

static void step_begin(void)
{
	const struct step *s = &steps[cur_step];
	fprintf(stderr, "test_redis: step %s\n", s->name);
	step_deadline = time_mono_ms() + s->timeout_ms;
	s->start();
}

static void tick_cb(struct timer *t)
{
	UNUSED(t);
	if (steps[cur_step].done()) {
		if (++cur_step == ARRAY_LEN(steps)) {
			loop_request_stop(L);
			return;
		}
		step_begin();
	} else if (time_mono_ms() > step_deadline) {
		fprintf(stderr, "test_redis: step %s timed out\n", steps[cur_step].name);
		failures++;
		aborted = true;
		redis_client_free(&C3);
		redis_client_free(&C2);
		redis_client_free(&C);
		loop_request_stop(L);
		return;
	}
	timer_start(L, &tick, 5);
}

static void test_url_errors(void)
{
	static const char *const bad[] = {
		"http://127.0.0.1:6379", "redis://", "redis://:6379",
		"redis://127.0.0.1:0", "redis://127.0.0.1:70000",
		"redis://127.0.0.1:12ab", "redis://127.0.0.1/x",
		"redis://[::1:6379", "redis://user@127.0.0.1",
	};
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		const char *err = NULL;
		struct redis_client *c = redis_client_new(L, bad[i], NULL, &err);
		if (c) {
			fprintf(stderr, "accepted bad url %s\n", bad[i]);
			redis_client_free(&c);
		}
		CHECK(c == NULL && err != NULL);
	}
}

static void mkdir_p(const char *path)
{
	char tmp[512];
	snprintf(tmp, sizeof(tmp), "%s", path);
	for (char *p = tmp + 1; *p; p++) {
		if (*p == '/') {
			*p = '\0';
			mkdir(tmp, 0755);
			*p = '/';
		}
	}
	mkdir(tmp, 0755);
}

int main(void)
{
	if (!have_redis_server()) {
		fprintf(stderr, "test_redis: redis-server not installed, skipping\n");
		return 77;
	}
	log_init("test_redis", LOG_LEVEL_INFO);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGALRM, on_fatal_signal);
	signal(SIGINT, on_fatal_signal);
	signal(SIGTERM, on_fatal_signal);
	signal(SIGABRT, on_fatal_signal);
	signal(SIGSEGV, on_fatal_signal);
	atexit(server_kill_now);
	alarm(55);

	const char *tmp = getenv("MAIL_TEST_TMP");
	snprintf(server_dir, sizeof(server_dir), "%s/redis-%d",
		 tmp && *tmp ? tmp : "/tmp", (int)getpid());
	mkdir_p(server_dir);
	server_port = pick_port();
	server_start();
	if (!server_wait_ready(10000)) {
		fprintf(stderr, "test_redis: redis-server did not start\n");
		return 1;
	}

	const char *err = NULL;
	L = loop_new(NULL, &err);
	if (!L) {
		fprintf(stderr, "loop_new: %s\n", err);
		return 1;
	}
	test_url_errors();
	timer_init(&tick, tick_cb, NULL);
	step_begin();
	timer_start(L, &tick, 5);
	loop_run(L);
	timer_stop(L, &tick);
	redis_client_free(&C3);
	redis_client_free(&C2);
	redis_client_free(&C);
	loop_free(&L);
	server_kill_now();
	char logf[600];
	snprintf(logf, sizeof(logf), "%s/redis.log", server_dir);
	if (!failures) {
		unlink(logf);
		rmdir(server_dir);
	}
	fprintf(stderr, "test_redis: %s (%d failures%s)\n", failures ? "FAIL" : "ok",
		failures, aborted ? ", aborted" : "");
	return failures ? 1 : 0;
}
