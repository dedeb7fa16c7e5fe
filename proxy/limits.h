/* Connection, login and sending limits of the proxy, and the register of
 * open sessions, shared by every proxy through Redis.
 *
 * What is limited (limits.* keys; 0 turns a limit off):
 *   - open connections per client address and service class
 *     (limits.conn_per_ip) and new ones per minute (limits.conn_rate);
 *     IPv6 clients count per /64;
 *   - failed logins per address and per user within limits.auth_window:
 *     each failure answer waits 0, then limits.auth_delay, doubling up to
 *     limits.auth_delay_max; at limits.auth_fail_ip / auth_fail_user a ban
 *     of limits.auth_ban starts, during which logins are answered like a
 *     wrong password without asking the node;
 *   - open IMAP / POP3 sessions per user (limits.imap_sessions,
 *     limits.pop3_sessions);
 *   - messages per day of an authenticated SMTP sender
 *     (limits.messages_per_day).
 *
 * Each check is one round trip: one Lua script (EVALSHA) that reads and
 * updates keys which expire by themselves. Open connections and sessions
 * are sorted sets of members scored by their expiry, refreshed every
 * limits.refresh and dropped on close, so a proxy that dies leaves nothing
 * behind for more than 3 refresh periods. A session is also a hash
 * mail:session:<proxy id>:<session id> (user, service, client, port, node,
 * proxy, since, sid) for `mailctl sessions`.
 *
 * Without Redis (no redis.url), or while it does not answer, the same
 * limits are kept in process (limits_local.h); the switch is logged once
 * per transition (comp=limits event=redis_unreachable / redis_back) and
 * shown by the gauge mail_proxy_limits_in_process. When Redis answers
 * again, every open connection and session of this process is written
 * back to it at once and the shared limits apply again.
 *
 * Calls. A connection gets a handle from limits_conn_open and gives it
 * back with limits_conn_close, whatever happened meanwhile. The other
 * calls take the handle; at most one call with a callback is pending per
 * handle. The callback runs once, on the loop, never inside the call that
 * started it; limits_conn_close cancels a pending one (it is then never
 * called), so a session may go away at any time. */
#ifndef PROXY_LIMITS_H
#define PROXY_LIMITS_H

#include <stdint.h>

#include "proxy/limits_local.h"
#include "proxy/proxy_internal.h"

struct limits;
struct limits_conn;

/* One per proxy thread; reads the limits.* keys, uses p->redis (may be
 * NULL). Free it after p->redis. */
struct limits *limits_new(struct proxy *p);
void limits_free(struct limits **l);

/* Protocol errors and failed logins on one connection before the proxy
 * closes it (limits.bad_commands, limits.auth_fail_conn). */
unsigned limits_bad_commands(const struct limits *l);
unsigned limits_auth_fail_conn(const struct limits *l);

typedef void (*limits_cb)(void *arg, enum limits_verdict v);

/* A new client connection (c's peer address, svc's class). cb gets OK, or
 * CONN_MANY / CONN_RATE: refuse and close. sid names the connection in
 * log lines. */
struct limits_conn *limits_conn_open(struct limits *l, struct conn *c, enum proxy_service svc,
				     uint64_t sid, limits_cb cb, void *arg);
/* NULL-safe, clears *h: uncounts the connection and its session, cancels
 * a pending callback. */
void limits_conn_close(struct limits_conn **h);
/* limits_conn_close for a close hook that passes the handle as void *. */
void limits_conn_close_hook(void *h);

/* Before checking a password: OK, or BANNED_IP / BANNED_USER, delivered
 * after the failure delay; answer it like a wrong password. */
void limits_auth_check(struct limits_conn *h, const char *user, limits_cb cb, void *arg);
/* A failed login: counted; cb runs after the delay the failure earns
 * (OK, or BANNED_* when this failure started a ban). */
void limits_auth_failed(struct limits_conn *h, const char *user, limits_cb cb, void *arg);
/* A successful login: the user's failures are forgotten. No callback. */
void limits_auth_ok(struct limits_conn *h, const char *user);

/* After a successful login, before the handoff: OK (the session is
 * registered: user, node) or SESSIONS (the user has too many). */
void limits_session_open(struct limits_conn *h, const char *user, const char *node, limits_cb cb,
			 void *arg);
/* The handoff failed: unregister the session (the connection stays). */
void limits_session_close(struct limits_conn *h);

/* SMTP: one more message from the authenticated `user` (before taking
 * it): OK, or MESSAGES (today's allowance is used up). */
void limits_message(struct limits_conn *h, const char *user, limits_cb cb, void *arg);

#endif
