/* The in-process limiter (proxy/limits_local.c) with a made-up clock:
 * open connections and their rate, failed logins with growing delays and
 * bans that end, sessions per user, messages per day, the forced counts
 * of the Redis mirror, expiry and the entry cap, and two threads counting
 * at once. */
#include <pthread.h>
#include <stdio.h>

#include "proxy/limits_local.h"
#include "tests/unit/check.h"

static struct limits_policy policy(void)
{
	struct limits_policy p = {
		.conn_per_ip = 3,
		.conn_rate = 5,
		.auth_fail_ip = 4,
		.auth_fail_user = 6,
		.auth_window_ms = 10000,
		.auth_ban_ms = 5000,
		.auth_delay_ms = 1000,
		.auth_delay_max_ms = 8000,
		.messages_per_day = 3,
	};
	p.sessions[LIMITS_IMAP] = 2;
	p.sessions[LIMITS_POP3] = 1;
	return p;
}

static void test_delay(void)
{
	struct limits_policy p = policy();
	CHECK(limits_delay_ms(&p, 0) == 0);
	CHECK(limits_delay_ms(&p, 1) == 0);
	CHECK(limits_delay_ms(&p, 2) == 1000);
	CHECK(limits_delay_ms(&p, 3) == 2000);
	CHECK(limits_delay_ms(&p, 4) == 4000);
	CHECK(limits_delay_ms(&p, 5) == 8000);
	CHECK(limits_delay_ms(&p, 6) == 8000);
	CHECK(limits_delay_ms(&p, 4000000000u) == 8000);
	p.auth_delay_ms = 0;
	CHECK(limits_delay_ms(&p, 9) == 0);
	p.auth_delay_ms = 300;
	p.auth_delay_max_ms = 1000;
	CHECK(limits_delay_ms(&p, 3) == 600);
	CHECK(limits_delay_ms(&p, 4) == 1000);
}

static void test_connections(void)
{
	struct limits_policy p = policy();
	struct limits_local *ll = limits_local_new(1000);
	uint64_t t = 1000;
	const char *a = "192.0.2.1", *b = "192.0.2.2";
	CHECK(limits_local_conn_open(ll, &p, LIMITS_IMAP, a, t, false) == LIMITS_OK);
	CHECK(limits_local_conn_open(ll, &p, LIMITS_IMAP, a, t, false) == LIMITS_OK);
	CHECK(limits_local_conn_open(ll, &p, LIMITS_IMAP, a, t, false) == LIMITS_OK);
	CHECK(limits_local_conn_open(ll, &p, LIMITS_IMAP, a, t, false) == LIMITS_CONN_MANY);
	/* other address, other class: their own counts */
	CHECK(limits_local_conn_open(ll, &p, LIMITS_IMAP, b, t, false) == LIMITS_OK);
	CHECK(limits_local_conn_open(ll, &p, LIMITS_POP3, a, t, false) == LIMITS_OK);
	/* one closes: room for one more, but the rate (5 a minute) is near */
	limits_local_conn_close(ll, &p, LIMITS_IMAP, a);
	CHECK(limits_local_conn_open(ll, &p, LIMITS_IMAP, a, t + 10, false) == LIMITS_OK);
	limits_local_conn_close(ll, &p, LIMITS_IMAP, a);
	CHECK(limits_local_conn_open(ll, &p, LIMITS_IMAP, a, t + 20, false) == LIMITS_CONN_RATE);
	/* a new minute: the rate starts again; 2 are open */
	CHECK(limits_local_conn_open(ll, &p, LIMITS_IMAP, a, t + LIMITS_RATE_WINDOW_MS, false) ==
	      LIMITS_OK);
	CHECK(limits_local_conn_open(ll, &p, LIMITS_IMAP, a, t + LIMITS_RATE_WINDOW_MS, false) ==
	      LIMITS_CONN_MANY);
	for (int i = 0; i < 3; i++)
		limits_local_conn_close(ll, &p, LIMITS_IMAP, a);
	/* closing more than was opened does not go below zero */
	limits_local_conn_close(ll, &p, LIMITS_IMAP, a);
	struct limits_policy nr = p;
	nr.conn_rate = 0;
	for (int i = 0; i < 3; i++)
		CHECK(limits_local_conn_open(ll, &nr, LIMITS_IMAP, a, t, false) == LIMITS_OK);
	CHECK(limits_local_conn_open(ll, &nr, LIMITS_IMAP, a, t, false) == LIMITS_CONN_MANY);
	/* force (Redis said yes): counted although over the limit */
	CHECK(limits_local_conn_open(ll, &nr, LIMITS_IMAP, a, t, true) == LIMITS_CONN_MANY);
	limits_local_conn_close(ll, &nr, LIMITS_IMAP, a);
	CHECK(limits_local_conn_open(ll, &nr, LIMITS_IMAP, a, t, false) == LIMITS_CONN_MANY);
	limits_local_conn_close(ll, &nr, LIMITS_IMAP, a);
	CHECK(limits_local_conn_open(ll, &nr, LIMITS_IMAP, a, t, false) == LIMITS_OK);
	for (int i = 0; i < 3; i++)
		limits_local_conn_close(ll, &nr, LIMITS_IMAP, a);
	/* the rate limit alone, without counting open connections */
	struct limits_policy ro = p;
	ro.conn_per_ip = 0;
	for (int i = 0; i < 5; i++)
		CHECK(limits_local_conn_open(ll, &ro, LIMITS_SMTP, b, t, false) == LIMITS_OK);
	CHECK(limits_local_conn_open(ll, &ro, LIMITS_SMTP, b, t, false) == LIMITS_CONN_RATE);
	/* limits off: always OK, nothing kept */
	struct limits_policy off = { 0 };
	struct limits_local *l2 = limits_local_new(10);
	for (int i = 0; i < 100; i++)
		CHECK(limits_local_conn_open(l2, &off, LIMITS_SMTP, a, t, false) == LIMITS_OK);
	CHECK(limits_local_entries(l2) == 0);
	limits_local_free(&l2);
	limits_local_free(&ll);
	CHECK(ll == NULL);
	limits_local_free(&ll); /* NULL-safe */
}

static void test_auth(void)
{
	struct limits_policy p = policy();
	struct limits_local *ll = limits_local_new(1000);
	uint64_t t = 5000;
	uint32_t fails = 99;
	const char *ip = "2001:db8:1:2::/64", *u = "pat@example.test", *v = "sam@example.test";
	CHECK(limits_local_auth_check(ll, &p, ip, u, t, &fails) == LIMITS_OK && fails == 0);
	/* failures 1..3 from the address: no ban yet, growing counts */
	for (uint32_t i = 1; i <= 3; i++) {
		CHECK(limits_local_auth_fail(ll, &p, ip, i == 2 ? v : u, t, &fails) == LIMITS_OK);
		CHECK(fails == i);
	}
	CHECK(limits_local_auth_check(ll, &p, ip, u, t, &fails) == LIMITS_OK && fails == 3);
	/* the 4th from the address starts its ban */
	CHECK(limits_local_auth_fail(ll, &p, ip, u, t, &fails) == LIMITS_BANNED_IP && fails == 4);
	CHECK(limits_local_auth_check(ll, &p, ip, u, t + 1, &fails) == LIMITS_BANNED_IP);
	CHECK(limits_local_auth_check(ll, &p, ip, "x@example.test", t + 1, &fails) ==
	      LIMITS_BANNED_IP);
	/* another address, same user: not banned (user has 3 failures) */
	CHECK(limits_local_auth_check(ll, &p, "192.0.2.9", u, t + 1, &fails) == LIMITS_OK &&
	      fails == 3);
	/* a further failure does not restart the ban */
	CHECK(limits_local_auth_fail(ll, &p, ip, u, t + 2, &fails) == LIMITS_OK && fails == 5);
	/* the ban ends after auth_ban_ms */
	CHECK(limits_local_auth_check(ll, &p, ip, u, t + 4999, &fails) == LIMITS_BANNED_IP);
	CHECK(limits_local_auth_check(ll, &p, ip, u, t + 5000, &fails) == LIMITS_OK);
	/* the failures are still counted (window 10 s): the next one bans again */
	CHECK(limits_local_auth_fail(ll, &p, ip, u, t + 5001, &fails) == LIMITS_BANNED_IP &&
	      fails == 6);
	/* the user reached 5 failures; from elsewhere the 6th bans the user */
	CHECK(limits_local_auth_fail(ll, &p, "192.0.2.9", u, t + 5002, &fails) ==
	      LIMITS_BANNED_USER);
	CHECK(limits_local_auth_check(ll, &p, "192.0.2.10", u, t + 5003, &fails) ==
	      LIMITS_BANNED_USER);
	CHECK(limits_local_auth_check(ll, &p, "192.0.2.10", v, t + 5003, &fails) == LIMITS_OK);
	/* a success forgets the user's failures, not the address' */
	limits_local_auth_ok(ll, v);
	CHECK(limits_local_auth_check(ll, &p, "192.0.2.11", v, t + 5003, &fails) == LIMITS_OK &&
	      fails == 0);
	/* after the window and the bans everything is forgotten */
	uint64_t later = t + 5002 + 10000;
	CHECK(limits_local_auth_check(ll, &p, ip, u, later, &fails) == LIMITS_OK && fails == 0);
	CHECK(limits_local_sweep(ll, later) == 0);
	limits_local_free(&ll);
}

static void test_sessions_messages(void)
{
	struct limits_policy p = policy();
	struct limits_local *ll = limits_local_new(1000);
	const char *u = "pat@example.test";
	uint32_t n = 0;
	CHECK(limits_local_session_open(ll, &p, LIMITS_IMAP, u, 1, false) == LIMITS_OK);
	CHECK(limits_local_session_open(ll, &p, LIMITS_IMAP, u, 1, false) == LIMITS_OK);
	CHECK(limits_local_session_open(ll, &p, LIMITS_IMAP, u, 1, false) == LIMITS_SESSIONS);
	CHECK(limits_local_session_open(ll, &p, LIMITS_POP3, u, 1, false) == LIMITS_OK);
	CHECK(limits_local_session_open(ll, &p, LIMITS_POP3, u, 1, false) == LIMITS_SESSIONS);
	limits_local_session_close(ll, &p, LIMITS_IMAP, u);
	CHECK(limits_local_session_open(ll, &p, LIMITS_IMAP, u, 1, false) == LIMITS_OK);
	/* SMTP has no session limit */
	CHECK(limits_local_session_open(ll, &p, LIMITS_SMTP, u, 1, false) == LIMITS_OK);
	limits_local_session_close(ll, &p, LIMITS_IMAP, u);
	limits_local_session_close(ll, &p, LIMITS_IMAP, u);
	limits_local_session_close(ll, &p, LIMITS_POP3, u);
	CHECK(limits_local_entries(ll) == 0);

	for (uint32_t i = 1; i <= 3; i++) {
		CHECK(limits_local_message(ll, &p, u, 100, false, &n) == LIMITS_OK);
		CHECK(n == i);
	}
	CHECK(limits_local_message(ll, &p, u, 200, false, &n) == LIMITS_MESSAGES && n == 3);
	CHECK(limits_local_message(ll, &p, "sam@example.test", 200, false, &n) == LIMITS_OK);
	CHECK(limits_local_message(ll, &p, u, 200, true, &n) == LIMITS_OK && n == 4);
	/* a day after the first message the count starts again */
	CHECK(limits_local_message(ll, &p, u, 100 + LIMITS_DAY_MS, false, &n) == LIMITS_OK && n == 1);
	limits_local_free(&ll);
}

static void test_cap(void)
{
	struct limits_policy p = policy();
	p.conn_rate = 0;
	struct limits_local *ll = limits_local_new(100);
	char ip[32];
	for (int i = 0; i < 200; i++) {
		snprintf(ip, sizeof(ip), "10.0.%d.%d", i / 256, i % 256);
		CHECK(limits_local_conn_open(ll, &p, LIMITS_SMTP, ip, 1, false) == LIMITS_OK);
	}
	CHECK(limits_local_entries(ll) == 100);
	/* a key that could not be stored is not limited (fails open) */
	for (int i = 0; i < 5; i++)
		CHECK(limits_local_conn_open(ll, &p, LIMITS_SMTP, "10.9.9.9", 1, false) == LIMITS_OK);
	/* expiring entries make room: windows of 10 s */
	struct limits_local *l2 = limits_local_new(50);
	uint32_t f;
	for (int i = 0; i < 25; i++) {
		snprintf(ip, sizeof(ip), "10.1.0.%d", i);
		limits_local_auth_fail(l2, &p, ip, ip, 1000, &f);
	}
	CHECK(limits_local_entries(l2) == 50);
	CHECK(limits_local_auth_fail(l2, &p, "10.2.0.1", "new@example.test", 12000, &f) ==
	      LIMITS_OK && f == 1);
	CHECK(limits_local_entries(l2) <= 50);
	CHECK(limits_local_sweep(l2, 12000) == 2);
	limits_local_free(&l2);
	/* many keys: the table grows and finds them all again */
	struct limits_local *l3 = limits_local_new(100000);
	for (int i = 0; i < 20000; i++) {
		snprintf(ip, sizeof(ip), "10.%d.%d.1", i / 256, i % 256);
		limits_local_conn_open(l3, &p, LIMITS_IMAP, ip, 1, false);
	}
	CHECK(limits_local_entries(l3) == 20000);
	for (int i = 0; i < 20000; i++) {
		snprintf(ip, sizeof(ip), "10.%d.%d.1", i / 256, i % 256);
		limits_local_conn_close(l3, &p, LIMITS_IMAP, ip);
	}
	CHECK(limits_local_entries(l3) == 0);
	limits_local_free(&l3);
	limits_local_free(&ll);
}

/* Two threads open and close on the same addresses: the counts end at 0. */
struct hammer {
	struct limits_local *ll;
	struct limits_policy p;
	int refused;
};

static void *hammer_run(void *arg)
{
	struct hammer *h = arg;
	for (int i = 0; i < 20000; i++) {
		const char *ip = i % 2 ? "192.0.2.1" : "192.0.2.2";
		if (limits_local_conn_open(h->ll, &h->p, LIMITS_IMAP, ip, 1, false) == LIMITS_OK)
			limits_local_conn_close(h->ll, &h->p, LIMITS_IMAP, ip);
		else
			h->refused++;
	}
	return NULL;
}

static void test_threads(void)
{
	struct limits_local *ll = limits_local_new(1000);
	struct hammer h[2];
	pthread_t th[2];
	for (int i = 0; i < 2; i++) {
		h[i] = (struct hammer){ .ll = ll, .p = policy() };
		h[i].p.conn_rate = 0;
		pthread_create(&th[i], NULL, hammer_run, &h[i]);
	}
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	/* at most 2 open at a time per address, limit 3: never refused */
	CHECK(h[0].refused == 0 && h[1].refused == 0);
	CHECK(limits_local_entries(ll) == 0);
	limits_local_free(&ll);
}

int main(void)
{
	CHECK(limits_verdict_str(LIMITS_CONN_MANY)[0] != '?');
	CHECK(limits_class_str(LIMITS_SUBMISSION)[0] == 's');
	test_delay();
	test_connections();
	test_auth();
	test_sessions_messages();
	test_cap();
	test_threads();
	return check_finish("test_limits");
}
