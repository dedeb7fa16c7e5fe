/* The in-process limiter: the same limits as the Redis scripts of
 * proxy/limits.c, kept in one process-wide table (a mutex around it: with
 * SO_REUSEPORT one client's connections land on every loop thread, so a
 * per-thread table would allow threads x the limit). Used when no Redis is
 * configured or while it is unreachable, and kept up to date as a mirror
 * of what this process allowed while Redis answers, so a switch to it
 * starts from the connections and sessions that are really open here.
 *
 * Pure apart from the mutex: time comes in as `now_ms` (monotonic), so it
 * is unit-tested without a clock. Entries expire on their own (a window or
 * a ban) or are removed when their count drops to zero; the table never
 * holds more than max_entries (a new key beyond that is not tracked, the
 * check answers OK: failing open beats refusing everyone). */
#ifndef PROXY_LIMITS_LOCAL_H
#define PROXY_LIMITS_LOCAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Which counters a connection goes to (services sharing a protocol share
 * their limits: 143 and 993 are both "imap"). */
enum limits_class {
	LIMITS_SMTP,
	LIMITS_SUBMISSION,
	LIMITS_IMAP,
	LIMITS_POP3,
	LIMITS_CLASS_COUNT_
};
const char *limits_class_str(enum limits_class c);

enum limits_verdict {
	LIMITS_OK = 0,
	LIMITS_CONN_MANY,    /* too many open connections from the address */
	LIMITS_CONN_RATE,    /* too many new connections in the last minute */
	LIMITS_BANNED_IP,    /* too many failed logins from the address */
	LIMITS_BANNED_USER,  /* too many failed logins for the user */
	LIMITS_SESSIONS,     /* too many open sessions of the user */
	LIMITS_MESSAGES,     /* the user's messages per day are used up */
};
const char *limits_verdict_str(enum limits_verdict v);

/* Every number 0 means "no limit" (a duration 0: nothing remembered). */
struct limits_policy {
	uint32_t conn_per_ip;       /* open connections per address and class */
	uint32_t conn_rate;         /* new connections per address, class, minute */
	uint32_t auth_fail_ip;      /* failures per address before its ban */
	uint32_t auth_fail_user;    /* failures per user before its ban */
	uint64_t auth_window_ms;    /* failures are counted over this window */
	uint64_t auth_ban_ms;       /* how long a ban lasts */
	uint64_t auth_delay_ms;     /* delay of the 2nd failure answer, doubling */
	uint64_t auth_delay_max_ms; /* ... up to this */
	uint32_t messages_per_day;  /* per authenticated SMTP sender */
	uint32_t sessions[LIMITS_CLASS_COUNT_]; /* open sessions per user */
};

#define LIMITS_RATE_WINDOW_MS 60000
#define LIMITS_DAY_MS 86400000

/* The delay before the answer to a failed login, given the failures
 * counted so far including this one: 0 for the first, then auth_delay_ms,
 * doubling, capped at auth_delay_max_ms. */
uint64_t limits_delay_ms(const struct limits_policy *pol, uint32_t fails);

struct limits_local;
struct limits_local *limits_local_new(size_t max_entries);
void limits_local_free(struct limits_local **ll);

/* A new connection from `ip` (an address text; IPv6 callers pass the /64).
 * Counts it when the verdict is OK, or always with `force` (the decision
 * was Redis'): then limits_local_conn_close must follow. The rate counts
 * every call. */
enum limits_verdict limits_local_conn_open(struct limits_local *ll, const struct limits_policy *pol,
					   enum limits_class cls, const char *ip, uint64_t now_ms,
					   bool force);
void limits_local_conn_close(struct limits_local *ll, const struct limits_policy *pol,
			     enum limits_class cls, const char *ip);

/* Before checking a password: a ban on the address or the user.
 * *fails_r gets the failures counted so far (the larger of both). */
enum limits_verdict limits_local_auth_check(struct limits_local *ll, const struct limits_policy *pol,
					    const char *ip, const char *user, uint64_t now_ms,
					    uint32_t *fails_r);
/* A failed login: counted for both; at the threshold a ban starts.
 * Returns BANNED_IP / BANNED_USER when this failure started one, else OK;
 * *fails_r as above, including this one. */
enum limits_verdict limits_local_auth_fail(struct limits_local *ll, const struct limits_policy *pol,
					   const char *ip, const char *user, uint64_t now_ms,
					   uint32_t *fails_r);
/* A successful login forgets the user's failures (not the address'). */
void limits_local_auth_ok(struct limits_local *ll, const char *user);

/* A new session of `user` (counted like conn_open, `force` likewise). */
enum limits_verdict limits_local_session_open(struct limits_local *ll, const struct limits_policy *pol,
					      enum limits_class cls, const char *user,
					      uint64_t now_ms, bool force);
void limits_local_session_close(struct limits_local *ll, const struct limits_policy *pol,
				enum limits_class cls, const char *user);

/* One message from an authenticated sender: counted unless over the limit
 * (always with `force`). *count_r gets the count after this one. */
enum limits_verdict limits_local_message(struct limits_local *ll, const struct limits_policy *pol,
					 const char *user, uint64_t now_ms, bool force,
					 uint32_t *count_r);

/* Drop expired entries (all of them; the table also sweeps a little on
 * every insert). Returns the entries left. */
size_t limits_local_sweep(struct limits_local *ll, uint64_t now_ms);
size_t limits_local_entries(struct limits_local *ll);

#endif
