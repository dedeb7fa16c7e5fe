/* Redis client on a `struct loop`: hiredis' async API over loop polls.
 *
 * One `struct redis_client` talks to one Redis server through up to two
 * connections ("links"):
 *   - the command link, opened by redis_client_new(), carries every
 *     redis_command*() and redis_script_eval(); commands are pipelined
 *     (everything issued before the loop's next submit goes out in one
 *     write) and answered strictly in issue order;
 *   - the subscriber link, opened by the first redis_subscribe(), carries
 *     only SUBSCRIBE/UNSUBSCRIBE and the messages (a connection in
 *     subscribed mode cannot run ordinary commands).
 *
 * Callbacks. Every callback passed to redis_command*() / redis_script_eval()
 * is called exactly once, never from inside the call that issued it (except
 * while the client is being freed, see redis_client_free). It gets the
 * reply, or NULL when the command could not be sent or answered: link down,
 * connection dropped, command timeout, client freed. A Redis error reply
 * (REDIS_REPLY_ERROR) is a reply, not NULL. The reply and everything in it
 * belong to hiredis and are valid only during the callback.
 *
 * While disconnected: commands issued while a connection attempt is in
 * progress (TCP connect + AUTH + SELECT, bounded by connect_timeout_ms) are
 * held in a bounded queue (queue_max) and sent in order once the handshake
 * succeeds; they fail with NULL if the attempt fails. Commands issued while
 * the client waits out its reconnect backoff fail fast: the callback gets
 * NULL on the next loop iteration. Callers that can degrade (rate limits
 * with an in-process fallback, shard-map caches) see failures within one
 * iteration instead of piling work up behind an outage.
 *
 * Timeouts. A command not answered within command_timeout_ms gets NULL.
 * Replies are ordered, so an unanswered command stalls everything behind
 * it: a timeout therefore closes the command link (every outstanding
 * command gets NULL) and reconnects. This also detects half-open TCP.
 *
 * Reconnect. When a link drops or an attempt fails, the client retries after
 * a backoff starting at backoff_min_ms and doubling up to backoff_max_ms,
 * each delay drawn uniformly from [d/2, d] (jitter); a successful handshake
 * resets it. Subscriptions are restored on the new subscriber link before
 * on_connect(REDIS_LINK_SUB) is called; messages published while the link
 * was down are lost, so a cache fed by pub/sub should re-read its source
 * from on_connect (the subscription is already active then, so nothing
 * published after the re-read is missed).
 *
 * Hostnames are resolved by hiredis with a blocking getaddrinfo() on every
 * attempt: use numeric addresses or names from /etc/hosts. Both links use
 * TCP keepalive (hiredis' 15 s), which is what detects a dead peer on an
 * idle subscriber link.
 *
 * SELECT and the pub/sub and MONITOR commands are refused on the command
 * link (the database comes from the URL and must survive reconnects;
 * subscriptions have their own link).
 *
 * Threading: a client belongs to its loop's thread; free it before the
 * loop. */
#ifndef COMMON_REDIS_H
#define COMMON_REDIS_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "common/base.h"

struct loop;
struct redis_client;
struct redis_sub;

enum redis_link {
	REDIS_LINK_CMD = 0, /* commands */
	REDIS_LINK_SUB,     /* subscriptions */
};
const char *redis_link_str(enum redis_link link);

/* reply: NULL on failure (see above); valid only during the call. */
typedef void (*redis_reply_cb)(struct redis_client *c, redisReply *reply,
			       void *arg);
/* One pub/sub message; the views are valid only during the call. */
typedef void (*redis_message_cb)(struct redis_client *c, struct view channel,
				 struct view message, void *arg);

struct redis_options {
	uint32_t command_timeout_ms; /* default 5000 */
	uint32_t connect_timeout_ms; /* TCP connect + handshake, default 2000 */
	uint32_t backoff_min_ms;     /* default 100 */
	uint32_t backoff_max_ms;     /* default 5000 */
	uint32_t queue_max;          /* held while connecting, default 4096 */
	/* Optional notifications. on_connect: the link is usable (handshake
	 * done; for REDIS_LINK_SUB every subscription is confirmed).
	 * on_disconnect: a usable link went down (reason is for logs, valid
	 * during the call). Failed attempts do not call either. Both may
	 * issue commands and may free the client (the teardown then completes
	 * on the next loop iteration). */
	void (*on_connect)(struct redis_client *c, enum redis_link link,
			   void *arg);
	void (*on_disconnect)(struct redis_client *c, enum redis_link link,
			      const char *reason, void *arg);
	void *hook_arg;
};

/* url: "redis://[[user]:password@]host[:port][/db]", or "host[:port]";
 * IPv6 hosts in brackets. Port defaults to 6379, db to 0 (no SELECT).
 * opts may be NULL (defaults). The first connection attempt starts at
 * once; the function never waits for it. Returns NULL with error_r only
 * for a malformed URL. */
struct redis_client *redis_client_new(struct loop *l, const char *url,
				      const struct redis_options *opts,
				      const char **error_r);
/* NULL-safe, clears *cp. Every pending command callback is called with
 * NULL before this returns; commands issued from those callbacks (or later
 * from a hook) get cb(NULL) at once and -1. Subscriptions end without a
 * call. When called from inside one of this client's callbacks, the
 * connections are torn down on the next loop iteration. */
void redis_client_free(struct redis_client **cp);

/* The command link has completed its handshake and is up. */
bool redis_client_connected(const struct redis_client *c);
/* The subscriber link is up and all subscriptions are confirmed. */
bool redis_client_subscribed(const struct redis_client *c);

/* Issue a command (hiredis format: %s C string, %b binary ptr+len, ...).
 * Returns 0 if it was sent or queued, -1 if it failed fast (link down,
 * queue full, bad format, a pub/sub or MONITOR command, client being
 * freed). Either way cb is called exactly once; cb may be NULL. */
int redis_command(struct redis_client *c, redis_reply_cb cb, void *arg,
		  const char *fmt, ...);
int redis_vcommand(struct redis_client *c, redis_reply_cb cb, void *arg,
		   const char *fmt, va_list ap);
/* argv_len NULL: every argv[i] is a C string. */
int redis_command_argv(struct redis_client *c, redis_reply_cb cb, void *arg,
		       int argc, const char *const *argv,
		       const size_t *argv_len);

/* A Lua script run by EVALSHA, falling back to EVAL (transparently, one
 * extra round trip) when the server answers NOSCRIPT, e.g. after a restart
 * or SCRIPT FLUSH. `source` is borrowed and must outlive every eval.
 * Ordering caveat: a call that falls back runs after commands pipelined
 * behind it; when that matters, wait for the first reply before issuing
 * dependent commands (the script then stays cached until the server
 * restarts). */
struct redis_script {
	const char *source;
	char sha1_hex[41];
};
void redis_script_init(struct redis_script *s, const char *source);
/* KEYS are args[0..nkeys), ARGV the remaining nargs - nkeys. args_len
 * NULL: C strings. Same return and callback contract as redis_command. */
int redis_script_eval(struct redis_client *c, const struct redis_script *s,
		      redis_reply_cb cb, void *arg, size_t nkeys, size_t nargs,
		      const char *const *args, const size_t *args_len);

/* Subscribe to a channel (exact name, not a pattern) on the subscriber
 * link, which is opened on first use; kept across reconnects until
 * redis_unsubscribe. Several subscriptions to one channel are allowed and
 * each gets every message. Returns a handle, or NULL while the client is
 * being freed. cb may call redis_unsubscribe (for any handle). */
struct redis_sub *redis_subscribe(struct redis_client *c, const char *channel,
				  redis_message_cb cb, void *arg);
/* NULL-safe, clears *subp; no more calls for it after this returns. */
void redis_unsubscribe(struct redis_client *c, struct redis_sub **subp);

#endif
