/* Redis client: hiredis 0.14 async contexts driven by loop polls.
 *
 * Lifetimes (hiredis 0.14): a redisAsyncContext frees itself when the
 * connection fails or drops, after running every pending reply callback
 * with NULL; the ev.cleanup hook is the one signal that it is going away,
 * so link_gone() hangs off it. We free a context ourselves (redisAsyncFree)
 * only from a loop timer or from redis_client_free outside any hiredis
 * call, never from inside one of its callbacks: decisions taken there
 * (handshake error) arm a zero-ms timer instead.
 *
 * `busy` counts frames of this file that are on the stack and will touch
 * the client after calling out (into hiredis or a user callback); a
 * redis_client_free() seen while busy completes from a zero-ms timer. */
#include "common/redis.h"

#include <ctype.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <hiredis/async.h>
#include <openssl/sha.h>

#include "common/log.h"
#include "common/loop.h"

enum link_state {
	LINK_IDLE = 0,   /* never opened (subscriber link before first use) */
	LINK_DOWN,       /* waiting out the backoff */
	LINK_CONNECTING, /* TCP connect + handshake in progress */
	LINK_READY,
	LINK_FAILING,    /* handshake failed or timing out; context to be freed */
};

enum cmd_state {
	CMD_NEW = 0,
	CMD_QUEUED,    /* held until the handshake completes; owns buf */
	CMD_SENT,      /* handed to hiredis, which holds it as privdata */
	CMD_ABANDONED, /* caller already answered; hiredis still holds it */
};

struct rlink;

struct redis_cmd {
	struct redis_cmd *prev, *next; /* link FIFO or the client's fail list */
	struct rlink *link;
	redis_reply_cb cb;
	void *arg;
	uint64_t deadline_ms;
	char *buf; /* formatted command while NEW/QUEUED */
	size_t len;
	char *fallback; /* EVAL for an EVALSHA, sent on NOSCRIPT */
	size_t fallback_len;
	enum cmd_state state;
	bool internal; /* AUTH/SELECT of the handshake */
};

struct rlink {
	struct redis_client *client;
	enum redis_link kind;
	enum link_state state;
	redisAsyncContext *ac;
	uint32_t gen; /* bumped whenever ac changes */
	struct loop_poll poll;
	uint32_t want; /* POLLIN/POLLOUT hiredis asked for */
	bool in_poll_cb;
	bool tcp_up;
	bool subs_sent;
	bool drop_was_ready;
	uint32_t handshake_left;
	uint32_t confirms_left;
	/* Every command of this link in issue order. Deadlines are issue time
	 * plus one fixed timeout, so the head has the earliest one and a
	 * single timer suffices. */
	struct redis_cmd *head, *tail;
	uint32_t nqueued;
	struct timer conn_timer, head_timer, retry_timer, kill_timer;
	uint32_t backoff_ms;
	char reason[160];
};

struct redis_sub {
	struct redis_sub *next;
	char *channel;
	size_t channel_len;
	redis_message_cb cb;
	void *arg;
	bool dead;
};

struct redis_client {
	struct loop *loop;
	struct redis_options opts;
	char *host;
	int port;
	int db;
	char *user;
	char *password;
	struct rlink cmd, sub;
	struct redis_cmd *fail_head, *fail_tail;
	struct timer fail_timer, free_timer;
	struct redis_sub *subs;
	uint32_t busy;
	uint32_t dispatching;
	bool subs_dirty;
	bool closing;
	uint64_t rng;
};

static void link_connect(struct rlink *lk);
static void link_ready(struct rlink *lk);
static void cmd_reply_cb(redisAsyncContext *ac, void *r, void *priv);
static void sub_reply_cb(redisAsyncContext *ac, void *r, void *priv);
static void free_timer_cb(struct timer *t);

const char *redis_link_str(enum redis_link link)
{
	return link == REDIS_LINK_SUB ? "sub" : "cmd";
}

static uint64_t client_rand(struct redis_client *c)
{
	/* xorshift64: jitter only, nothing secret */
	uint64_t x = c->rng;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	c->rng = x;
	return x;
}

/* ---- command lists ----------------------------------------------------- */

static void fifo_append(struct rlink *lk, struct redis_cmd *cmd)
{
	cmd->link = lk;
	cmd->next = NULL;
	cmd->prev = lk->tail;
	if (lk->tail)
		lk->tail->next = cmd;
	else
		lk->head = cmd;
	lk->tail = cmd;
	if (cmd->state == CMD_QUEUED)
		lk->nqueued++;
}

static void fifo_unlink(struct rlink *lk, struct redis_cmd *cmd)
{
	if (cmd->prev)
		cmd->prev->next = cmd->next;
	else
		lk->head = cmd->next;
	if (cmd->next)
		cmd->next->prev = cmd->prev;
	else
		lk->tail = cmd->prev;
	cmd->prev = cmd->next = NULL;
	if (cmd->state == CMD_QUEUED)
		lk->nqueued--;
}

static void cmd_free(struct redis_cmd *cmd)
{
	free(cmd->buf);
	free(cmd->fallback);
	free(cmd);
}

/* Frees cmd, then answers its caller. */
static void cmd_finish(struct redis_client *c, struct redis_cmd *cmd,
		       redisReply *reply)
{
	redis_reply_cb cb = cmd->cb;
	void *arg = cmd->arg;
	cmd_free(cmd);
	if (cb)
		cb(c, reply, arg);
}

/* Answer with NULL on the next loop iteration (never from inside the call
 * that issued the command). */
static void fail_push(struct redis_client *c, struct redis_cmd *cmd)
{
	cmd->state = CMD_NEW;
	cmd->prev = c->fail_tail;
	cmd->next = NULL;
	if (c->fail_tail)
		c->fail_tail->next = cmd;
	else
		c->fail_head = cmd;
	c->fail_tail = cmd;
	if (!timer_armed(&c->fail_timer))
		timer_start(c->loop, &c->fail_timer, 0);
}

static void fail_timer_cb(struct timer *t)
{
	struct redis_client *c = t->arg;
	struct redis_cmd *list = c->fail_head;
	c->fail_head = c->fail_tail = NULL;
	c->busy++;
	while (list) {
		struct redis_cmd *next = list->next;
		cmd_finish(c, list, NULL);
		list = next;
	}
	c->busy--;
}

static void head_timer_ensure(struct rlink *lk)
{
	struct redis_client *c = lk->client;
	if (!lk->head || timer_armed(&lk->head_timer) || c->closing)
		return;
	uint64_t now = loop_now_ms(c->loop);
	uint64_t d = lk->head->deadline_ms;
	timer_start(c->loop, &lk->head_timer, d > now ? d - now : 0);
}

/* ---- hiredis event adapter --------------------------------------------- */

static void link_arm(struct rlink *lk)
{
	if (lk->in_poll_cb || !lk->ac)
		return;
	/* No-op when a poll for the same events is already armed. */
	loop_poll_set(lk->client->loop, &lk->poll, lk->want);
}

static void ev_add_read(void *priv)
{
	struct rlink *lk = priv;
	lk->want |= POLLIN;
	link_arm(lk);
}

static void ev_del_read(void *priv)
{
	struct rlink *lk = priv;
	lk->want &= ~(uint32_t)POLLIN;
	link_arm(lk);
}

static void ev_add_write(void *priv)
{
	struct rlink *lk = priv;
	lk->want |= POLLOUT;
	link_arm(lk);
}

static void ev_del_write(void *priv)
{
	struct rlink *lk = priv;
	lk->want &= ~(uint32_t)POLLOUT;
	link_arm(lk);
}

static void link_schedule_retry(struct rlink *lk)
{
	struct redis_client *c = lk->client;
	lk->state = LINK_DOWN;
	if (c->closing)
		return;
	uint32_t b = lk->backoff_ms ? lk->backoff_ms : c->opts.backoff_min_ms;
	uint32_t delay = b / 2 + (uint32_t)(client_rand(c) % (b - b / 2 + 1));
	lk->backoff_ms = b >= c->opts.backoff_max_ms / 2 ? c->opts.backoff_max_ms : b * 2;
	timer_start(c->loop, &lk->retry_timer, delay);
	char q[200];
	LOG_DEBUG("redis", 0, "reconnect_scheduled", "link=%s delay_ms=%u reason=%s",
		  redis_link_str(lk->kind), delay,
		  log_quote_cstr(q, sizeof(q), lk->reason));
}

/* ev.cleanup: the context is about to be freed by hiredis (or by us). Any
 * commands hiredis holds are answered with NULL right after this returns. */
static void ev_cleanup(void *priv)
{
	struct rlink *lk = priv;
	struct redis_client *c = lk->client;
	redisAsyncContext *ac = lk->ac;
	if (!ac)
		return;
	if (!lk->reason[0])
		snprintf(lk->reason, sizeof(lk->reason), "%s",
			 ac->err && ac->errstr ? ac->errstr : "connection closed");
	loop_poll_stop(c->loop, &lk->poll);
	lk->want = 0;
	lk->in_poll_cb = false;
	lk->ac = NULL;
	lk->gen++;
	bool was_ready = lk->state == LINK_READY ||
			 (lk->state == LINK_FAILING && lk->drop_was_ready);
	lk->drop_was_ready = false;
	timer_stop(c->loop, &lk->conn_timer);
	timer_stop(c->loop, &lk->kill_timer);
	/* Queued commands never reached hiredis: they fail after the sent
	 * ones, keeping issue order. */
	for (struct redis_cmd *cmd = lk->head, *next; cmd; cmd = next) {
		next = cmd->next;
		if (cmd->state == CMD_QUEUED) {
			fifo_unlink(lk, cmd);
			fail_push(c, cmd);
		}
	}
	if (c->closing) {
		lk->state = LINK_DOWN;
		return;
	}
	if (was_ready) {
		char q[200];
		LOG_WARN("redis", 0, "disconnected", "link=%s addr=%s:%d reason=%s",
			 redis_link_str(lk->kind), c->host, c->port,
			 log_quote_cstr(q, sizeof(q), lk->reason));
	}
	link_schedule_retry(lk);
	if (was_ready && c->opts.on_disconnect)
		c->opts.on_disconnect(c, lk->kind, lk->reason, c->opts.hook_arg);
}

static void link_poll_cb(struct loop_poll *p, uint32_t revents)
{
	struct rlink *lk = p->arg;
	struct redis_client *c = lk->client;
	redisAsyncContext *ac = lk->ac;
	if (!ac)
		return;
	uint32_t gen = lk->gen;
	lk->in_poll_cb = true;
	c->busy++;
	/* Write first: it is how hiredis learns that connect(2) finished. */
	if ((revents & (POLLOUT | POLLERR | POLLHUP)) && (lk->want & POLLOUT))
		redisAsyncHandleWrite(ac);
	if (lk->gen == gen && (revents & (POLLIN | POLLERR | POLLHUP)) &&
	    (lk->want & POLLIN))
		redisAsyncHandleRead(ac);
	if (lk->gen == gen) {
		lk->in_poll_cb = false;
		link_arm(lk);
	}
	c->busy--;
}

/* Free our own context; only from a timer or an un-nested free. */
static void link_drop(struct rlink *lk, const char *reason)
{
	struct redis_client *c = lk->client;
	if (!lk->ac)
		return;
	if (reason)
		snprintf(lk->reason, sizeof(lk->reason), "%s", reason);
	/* Commands issued by the NULL callbacks that run first must not reach
	 * the dying context; ev_cleanup still needs to know it was up. */
	lk->drop_was_ready = lk->state == LINK_READY;
	lk->state = LINK_FAILING;
	c->busy++;
	redisAsyncFree(lk->ac);
	c->busy--;
}

/* ---- connection setup ------------------------------------------------- */

static void link_on_tcp_connect(const redisAsyncContext *cac, int status)
{
	struct rlink *lk = cac->data;
	if (status != REDIS_OK) {
		snprintf(lk->reason, sizeof(lk->reason), "connect: %s",
			 cac->errstr ? cac->errstr : "failed");
		return; /* hiredis frees the context next; ev_cleanup follows */
	}
	lk->tcp_up = true;
	redisEnableKeepAlive(&lk->ac->c);
	if (lk->handshake_left == 0)
		link_ready(lk);
}

static int format_argv(char **buf_r, size_t *len_r, int argc,
		       const char *const *argv, const size_t *argv_len)
{
	char *buf = NULL;
	int n = redisFormatCommandArgv(&buf, argc, (const char **)argv, argv_len);
	if (n < 0)
		return -1;
	*buf_r = buf;
	*len_r = (size_t)n;
	return 0;
}

static void link_send_internal(struct rlink *lk, int argc, const char *const *argv)
{
	struct redis_client *c = lk->client;
	struct redis_cmd *cmd = xcalloc(1, sizeof(*cmd));
	char *buf;
	size_t len;
	if (format_argv(&buf, &len, argc, argv, NULL) < 0)
		abort(); /* only fails on allocation */
	cmd->internal = true;
	cmd->deadline_ms = loop_now_ms(c->loop) + c->opts.command_timeout_ms;
	cmd->state = CMD_SENT;
	fifo_append(lk, cmd);
	if (redisAsyncFormattedCommand(lk->ac, cmd_reply_cb, cmd, buf, len) != REDIS_OK)
		abort(); /* a fresh context always accepts */
	free(buf);
	lk->handshake_left++;
	head_timer_ensure(lk);
}

static void link_connect(struct rlink *lk)
{
	struct redis_client *c = lk->client;
	/* Nothing can be left from the previous context; be safe anyway. */
	while (lk->head) {
		struct redis_cmd *cmd = lk->head;
		fifo_unlink(lk, cmd);
		if (cmd->internal)
			cmd_free(cmd);
		else
			fail_push(c, cmd);
	}
	lk->reason[0] = '\0';
	lk->drop_was_ready = false;
	lk->tcp_up = false;
	lk->subs_sent = false;
	lk->handshake_left = 0;
	lk->confirms_left = 0;
	redisAsyncContext *ac = redisAsyncConnect(c->host, c->port);
	if (!ac)
		abort(); /* allocation */
	if (ac->err) {
		snprintf(lk->reason, sizeof(lk->reason), "connect: %s", ac->errstr);
		redisAsyncFree(ac); /* no hooks attached: nothing runs */
		link_schedule_retry(lk);
		return;
	}
	lk->ac = ac;
	lk->gen++;
	lk->want = 0;
	lk->in_poll_cb = false;
	lk->state = LINK_CONNECTING;
	ac->data = lk;
	loop_poll_init(&lk->poll, ac->c.fd, link_poll_cb, lk);
	ac->ev.data = lk;
	ac->ev.addRead = ev_add_read;
	ac->ev.delRead = ev_del_read;
	ac->ev.addWrite = ev_add_write;
	ac->ev.delWrite = ev_del_write;
	ac->ev.cleanup = ev_cleanup;
	timer_start(c->loop, &lk->conn_timer, c->opts.connect_timeout_ms);
	/* Arms the first write poll: writability means connect(2) is done. */
	redisAsyncSetConnectCallback(ac, link_on_tcp_connect);
	/* The handshake is pipelined ahead of everything else. */
	if (c->password) {
		const char *argv[3] = { "AUTH" };
		int argc = 1;
		if (c->user)
			argv[argc++] = c->user;
		argv[argc++] = c->password;
		link_send_internal(lk, argc, argv);
	}
	if (lk->kind == REDIS_LINK_CMD && c->db > 0) {
		char db[16];
		snprintf(db, sizeof(db), "%d", c->db);
		const char *argv[2] = { "SELECT", db };
		link_send_internal(lk, 2, argv);
	}
}

static bool sub_channel_earlier(struct redis_client *c, const struct redis_sub *s)
{
	for (struct redis_sub *o = c->subs; o && o != s; o = o->next)
		if (!o->dead && o->channel_len == s->channel_len &&
		    memcmp(o->channel, s->channel, s->channel_len) == 0)
			return true;
	return false;
}

static bool sub_channel_live(struct redis_client *c, const char *ch, size_t len)
{
	for (struct redis_sub *o = c->subs; o; o = o->next)
		if (!o->dead && o->channel_len == len && memcmp(o->channel, ch, len) == 0)
			return true;
	return false;
}

/* SUBSCRIBE every live channel in one command; returns their count. */
static uint32_t link_send_subscribe_all(struct rlink *lk)
{
	struct redis_client *c = lk->client;
	size_t n = 0;
	for (struct redis_sub *s = c->subs; s; s = s->next)
		n++;
	if (n == 0)
		return 0;
	const char **argv = xcalloc(n + 1, sizeof(*argv));
	size_t *lens = xcalloc(n + 1, sizeof(*lens));
	int argc = 0;
	argv[argc] = "SUBSCRIBE";
	lens[argc++] = 9;
	for (struct redis_sub *s = c->subs; s; s = s->next) {
		if (s->dead || sub_channel_earlier(c, s))
			continue;
		argv[argc] = s->channel;
		lens[argc++] = s->channel_len;
	}
	uint32_t count = (uint32_t)(argc - 1);
	if (count && redisAsyncCommandArgv(lk->ac, sub_reply_cb, lk, argc, argv,
					   lens) != REDIS_OK)
		count = 0;
	free(argv);
	free(lens);
	return count;
}

static void link_send_sub(struct rlink *lk, const char *verb, const char *ch,
			  size_t len)
{
	const char *argv[2] = { verb, ch };
	size_t lens[2] = { strlen(verb), len };
	/* UNSUBSCRIBE is refused by hiredis when nothing is subscribed yet;
	 * then there is nothing to undo either. */
	(void)redisAsyncCommandArgv(lk->ac, sub_reply_cb, lk, 2, argv, lens);
}

static int cmd_send(struct rlink *lk, struct redis_cmd *cmd)
{
	if (!lk->ac || redisAsyncFormattedCommand(lk->ac, cmd_reply_cb, cmd, cmd->buf,
						  cmd->len) != REDIS_OK)
		return -1;
	if (cmd->state == CMD_QUEUED)
		lk->nqueued--;
	cmd->state = CMD_SENT;
	free(cmd->buf);
	cmd->buf = NULL;
	cmd->len = 0;
	return 0;
}

static void link_ready(struct rlink *lk)
{
	struct redis_client *c = lk->client;
	if (lk->kind == REDIS_LINK_SUB && !lk->subs_sent) {
		lk->subs_sent = true;
		lk->confirms_left = link_send_subscribe_all(lk);
		if (lk->confirms_left)
			return; /* ready when the last confirmation arrives */
	}
	lk->state = LINK_READY;
	lk->backoff_ms = 0;
	timer_stop(c->loop, &lk->conn_timer);
	LOG_INFO("redis", 0, "connected", "link=%s addr=%s:%d db=%d",
		 redis_link_str(lk->kind), c->host, c->port,
		 lk->kind == REDIS_LINK_CMD ? c->db : 0);
	for (struct redis_cmd *cmd = lk->head, *next; cmd; cmd = next) {
		next = cmd->next;
		if (cmd->state != CMD_QUEUED)
			continue;
		if (cmd_send(lk, cmd) < 0) {
			fifo_unlink(lk, cmd);
			fail_push(c, cmd);
		}
	}
	if (c->opts.on_connect)
		c->opts.on_connect(c, lk->kind, c->opts.hook_arg);
}

static void handshake_reply(struct rlink *lk, redisReply *reply)
{
	struct redis_client *c = lk->client;
	if (!reply || lk->state != LINK_CONNECTING)
		return;
	if (reply->type == REDIS_REPLY_ERROR) {
		char q[200];
		snprintf(lk->reason, sizeof(lk->reason), "handshake: %s",
			 reply->str ? reply->str : "error");
		LOG_WARN("redis", 0, "handshake_failed", "link=%s addr=%s:%d reason=%s",
			 redis_link_str(lk->kind), c->host, c->port,
			 log_quote_cstr(q, sizeof(q), lk->reason));
		lk->state = LINK_FAILING;
		/* Inside a hiredis callback: free the context from the loop. */
		timer_start(c->loop, &lk->kill_timer, 0);
		return;
	}
	if (lk->handshake_left > 0 && --lk->handshake_left == 0 && lk->tcp_up)
		link_ready(lk);
}

static bool reply_is_noscript(const redisReply *r)
{
	return r && r->type == REDIS_REPLY_ERROR && r->str &&
	       strncmp(r->str, "NOSCRIPT", 8) == 0;
}

static void cmd_reply_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct redis_cmd *cmd = priv;
	redisReply *reply = r;
	UNUSED(ac);
	if (cmd->state == CMD_ABANDONED) {
		cmd_free(cmd);
		return;
	}
	struct rlink *lk = cmd->link;
	struct redis_client *c = lk->client;
	fifo_unlink(lk, cmd);
	if (cmd->internal) {
		cmd_free(cmd);
		handshake_reply(lk, reply);
		return;
	}
	if (cmd->fallback && reply_is_noscript(reply) && lk->state == LINK_READY) {
		/* Script cache empty (restart, SCRIPT FLUSH): send the source. */
		cmd->buf = cmd->fallback;
		cmd->len = cmd->fallback_len;
		cmd->fallback = NULL;
		cmd->state = CMD_NEW;
		cmd->deadline_ms = loop_now_ms(c->loop) + c->opts.command_timeout_ms;
		if (cmd_send(lk, cmd) == 0) {
			fifo_append(lk, cmd);
			head_timer_ensure(lk);
			return;
		}
		reply = NULL;
	}
	cmd_finish(c, cmd, reply);
}

/* ---- timers ----------------------------------------------------------- */

static void head_timer_cb(struct timer *t)
{
	struct rlink *lk = t->arg;
	struct redis_client *c = lk->client;
	uint64_t now = loop_now_ms(c->loop);
	c->busy++;
	while (lk->head && lk->head->deadline_ms <= now && !c->closing) {
		struct redis_cmd *cmd = lk->head;
		if (cmd->state == CMD_SENT && lk->ac) {
			/* Replies are ordered: everything behind it is stuck too. */
			LOG_WARN("redis", 0, "command_timeout", "link=%s addr=%s:%d timeout_ms=%u",
				 redis_link_str(lk->kind), c->host, c->port,
				 c->opts.command_timeout_ms);
			link_drop(lk, "command timeout");
			continue;
		}
		fifo_unlink(lk, cmd);
		cmd_finish(c, cmd, NULL);
	}
	head_timer_ensure(lk);
	c->busy--;
}

static void conn_timer_cb(struct timer *t)
{
	struct rlink *lk = t->arg;
	struct redis_client *c = lk->client;
	if (lk->state != LINK_CONNECTING)
		return;
	c->busy++;
	link_drop(lk, "connect timeout");
	c->busy--;
}

static void kill_timer_cb(struct timer *t)
{
	struct rlink *lk = t->arg;
	struct redis_client *c = lk->client;
	c->busy++;
	link_drop(lk, NULL);
	c->busy--;
}

static void retry_timer_cb(struct timer *t)
{
	struct rlink *lk = t->arg;
	if (!lk->client->closing && !lk->ac)
		link_connect(lk);
}

/* ---- client ----------------------------------------------------------- */

static void link_init(struct redis_client *c, struct rlink *lk, enum redis_link kind)
{
	lk->client = c;
	lk->kind = kind;
	lk->state = LINK_IDLE;
	timer_init(&lk->conn_timer, conn_timer_cb, lk);
	timer_init(&lk->head_timer, head_timer_cb, lk);
	timer_init(&lk->retry_timer, retry_timer_cb, lk);
	timer_init(&lk->kill_timer, kill_timer_cb, lk);
}

static void link_stop_timers(struct rlink *lk)
{
	struct loop *l = lk->client->loop;
	timer_stop(l, &lk->conn_timer);
	timer_stop(l, &lk->head_timer);
	timer_stop(l, &lk->retry_timer);
	timer_stop(l, &lk->kill_timer);
}

static int parse_uint(const char *p, const char *end, unsigned long max,
		      unsigned long *v_r)
{
	unsigned long v = 0;
	if (p == end)
		return -1;
	for (; p < end; p++) {
		if (!isdigit((unsigned char)*p))
			return -1;
		v = v * 10 + (unsigned long)(*p - '0');
		if (v > max)
			return -1;
	}
	*v_r = v;
	return 0;
}

static int parse_url(struct redis_client *c, const char *url, const char **error_r)
{
	const char *p = url;
	if (strncasecmp(p, "redis://", 8) == 0) {
		p += 8;
	} else if (strstr(p, "://")) {
		*error_r = "redis URL: only redis:// is supported";
		return -1;
	}
	const char *slash = strchr(p, '/');
	const char *end = slash ? slash : p + strlen(p);
	const char *at = memrchr(p, '@', (size_t)(end - p));
	if (at) {
		const char *colon = memchr(p, ':', (size_t)(at - p));
		if (!colon) {
			*error_r = "redis URL: credentials must be [user]:password@";
			return -1;
		}
		if (colon > p)
			c->user = strndup(p, (size_t)(colon - p));
		c->password = strndup(colon + 1, (size_t)(at - colon - 1));
		if ((colon > p && !c->user) || !c->password)
			abort();
		p = at + 1;
	}
	const char *hend, *q;
	if (*p == '[') {
		const char *close = memchr(p, ']', (size_t)(end - p));
		if (!close) {
			*error_r = "redis URL: unterminated [IPv6] host";
			return -1;
		}
		c->host = strndup(p + 1, (size_t)(close - p - 1));
		hend = close;
		q = close + 1;
	} else {
		const char *colon = memchr(p, ':', (size_t)(end - p));
		hend = colon ? colon : end;
		c->host = strndup(p, (size_t)(hend - p));
		q = hend;
	}
	if (!c->host)
		abort();
	if (!c->host[0]) {
		*error_r = "redis URL: empty host";
		return -1;
	}
	unsigned long v;
	c->port = 6379;
	if (q < end) {
		if (*q != ':' || parse_uint(q + 1, end, 65535, &v) < 0 || v == 0) {
			*error_r = "redis URL: bad port";
			return -1;
		}
		c->port = (int)v;
	}
	c->db = 0;
	if (slash && slash[1]) {
		if (parse_uint(slash + 1, slash + strlen(slash), 1000000, &v) < 0) {
			*error_r = "redis URL: bad database number";
			return -1;
		}
		c->db = (int)v;
	}
	return 0;
}

static void client_release(struct redis_client *c)
{
	free(c->host);
	free(c->user);
	if (c->password) {
		explicit_bzero(c->password, strlen(c->password));
		free(c->password);
	}
	while (c->subs) {
		struct redis_sub *s = c->subs;
		c->subs = s->next;
		free(s->channel);
		free(s);
	}
	free(c);
}

struct redis_client *redis_client_new(struct loop *l, const char *url,
				      const struct redis_options *opts,
				      const char **error_r)
{
	struct redis_client *c = xcalloc(1, sizeof(*c));
	c->loop = l;
	if (opts)
		c->opts = *opts;
	if (!c->opts.command_timeout_ms)
		c->opts.command_timeout_ms = 5000;
	if (!c->opts.connect_timeout_ms)
		c->opts.connect_timeout_ms = 2000;
	if (!c->opts.backoff_min_ms)
		c->opts.backoff_min_ms = 100;
	if (!c->opts.backoff_max_ms)
		c->opts.backoff_max_ms = 5000;
	if (c->opts.backoff_max_ms < c->opts.backoff_min_ms)
		c->opts.backoff_max_ms = c->opts.backoff_min_ms;
	if (!c->opts.queue_max)
		c->opts.queue_max = 4096;
	if (parse_url(c, url, error_r) < 0) {
		client_release(c);
		return NULL;
	}
	c->rng = time_mono_ns() ^ ((uint64_t)(uintptr_t)c << 16) ^ (uint64_t)getpid();
	if (!c->rng)
		c->rng = 0x9e3779b97f4a7c15ULL;
	link_init(c, &c->cmd, REDIS_LINK_CMD);
	link_init(c, &c->sub, REDIS_LINK_SUB);
	timer_init(&c->fail_timer, fail_timer_cb, c);
	timer_init(&c->free_timer, free_timer_cb, c);
	link_connect(&c->cmd);
	return c;
}

static void client_teardown(struct redis_client *c)
{
	struct rlink *links[2] = { &c->cmd, &c->sub };
	for (size_t i = 0; i < 2; i++) {
		struct rlink *lk = links[i];
		if (lk->ac) {
			c->busy++;
			redisAsyncFree(lk->ac); /* abandoned commands are freed */
			c->busy--;
		}
		link_stop_timers(lk);
		while (lk->head) { /* cannot happen: all were abandoned */
			struct redis_cmd *cmd = lk->head;
			fifo_unlink(lk, cmd);
			cmd_free(cmd);
		}
	}
	timer_stop(c->loop, &c->fail_timer);
	timer_stop(c->loop, &c->free_timer);
	while (c->fail_head) { /* cannot happen either; keep exactly-once */
		struct redis_cmd *cmd = c->fail_head;
		c->fail_head = cmd->next;
		cmd_finish(c, cmd, NULL);
	}
	client_release(c);
}

static void free_timer_cb(struct timer *t)
{
	client_teardown(t->arg);
}

void redis_client_free(struct redis_client **cp)
{
	struct redis_client *c = *cp;
	if (!c)
		return;
	*cp = NULL;
	if (c->closing)
		return;
	c->closing = true;
	struct rlink *links[2] = { &c->cmd, &c->sub };
	c->busy++;
	for (size_t i = 0; i < 2; i++) {
		struct rlink *lk = links[i];
		link_stop_timers(lk);
		while (lk->head) {
			struct redis_cmd *cmd = lk->head;
			bool held = cmd->state == CMD_SENT;
			redis_reply_cb cb = cmd->cb;
			void *arg = cmd->arg;
			fifo_unlink(lk, cmd);
			if (held) {
				cmd->state = CMD_ABANDONED; /* hiredis frees it */
			} else {
				cmd_free(cmd);
			}
			if (cb) /* internal commands have none */
				cb(c, NULL, arg);
		}
	}
	timer_stop(c->loop, &c->fail_timer);
	while (c->fail_head) {
		struct redis_cmd *cmd = c->fail_head;
		c->fail_head = cmd->next;
		if (!c->fail_head)
			c->fail_tail = NULL;
		cmd_finish(c, cmd, NULL);
	}
	c->busy--;
	if (c->busy) {
		timer_start(c->loop, &c->free_timer, 0);
		return;
	}
	client_teardown(c);
}

bool redis_client_connected(const struct redis_client *c)
{
	return c && c->cmd.state == LINK_READY;
}

bool redis_client_subscribed(const struct redis_client *c)
{
	return c && c->sub.state == LINK_READY;
}

/* Commands that would put the command link into a mode hiredis 0.14
 * handles only on a dedicated context, or change its database behind the
 * reconnect logic. */
static bool cmd_forbidden(const char *buf, size_t len)
{
	static const char *const names[] = {
		"subscribe", "psubscribe", "ssubscribe", "unsubscribe",
		"punsubscribe", "sunsubscribe", "monitor", "select",
	};
	/* "*<argc>\r\n$<len>\r\n<name>\r\n" */
	const char *p = memchr(buf, '$', len);
	if (!p)
		return false;
	const char *e = buf + len;
	size_t n = 0;
	for (p++; p < e && isdigit((unsigned char)*p); p++)
		n = n * 10 + (size_t)(*p - '0');
	if (e - p < 2 || (size_t)(e - p - 2) < n || n > 16)
		return false;
	p += 2;
	for (size_t i = 0; i < ARRAY_LEN(names); i++)
		if (strlen(names[i]) == n && strncasecmp(p, names[i], n) == 0)
			return true;
	return false;
}

static int submit(struct redis_client *c, redis_reply_cb cb, void *arg, char *buf,
		  size_t len, char *fallback, size_t fallback_len, bool ok)
{
	if (c->closing) {
		free(buf);
		free(fallback);
		if (cb)
			cb(c, NULL, arg);
		return -1;
	}
	struct rlink *lk = &c->cmd;
	struct redis_cmd *cmd = xcalloc(1, sizeof(*cmd));
	cmd->link = lk;
	cmd->cb = cb;
	cmd->arg = arg;
	cmd->buf = buf;
	cmd->len = len;
	cmd->fallback = fallback;
	cmd->fallback_len = fallback_len;
	cmd->deadline_ms = loop_now_ms(c->loop) + c->opts.command_timeout_ms;
	if (ok && buf && !cmd_forbidden(buf, len)) {
		if (lk->state == LINK_READY) {
			if (cmd_send(lk, cmd) == 0) {
				fifo_append(lk, cmd);
				head_timer_ensure(lk);
				return 0;
			}
		} else if (lk->state == LINK_CONNECTING && lk->nqueued < c->opts.queue_max) {
			cmd->state = CMD_QUEUED;
			fifo_append(lk, cmd);
			head_timer_ensure(lk);
			return 0;
		}
	}
	fail_push(c, cmd);
	return -1;
}

int redis_vcommand(struct redis_client *c, redis_reply_cb cb, void *arg,
		   const char *fmt, va_list ap)
{
	char *buf = NULL;
	int n = redisvFormatCommand(&buf, fmt, ap);
	return submit(c, cb, arg, n < 0 ? NULL : buf, n < 0 ? 0 : (size_t)n,
		      NULL, 0, n >= 0);
}

int redis_command(struct redis_client *c, redis_reply_cb cb, void *arg,
		  const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = redis_vcommand(c, cb, arg, fmt, ap);
	va_end(ap);
	return r;
}

int redis_command_argv(struct redis_client *c, redis_reply_cb cb, void *arg,
		       int argc, const char *const *argv, const size_t *argv_len)
{
	char *buf = NULL;
	size_t len = 0;
	bool ok = argc > 0 && format_argv(&buf, &len, argc, argv, argv_len) == 0;
	return submit(c, cb, arg, buf, len, NULL, 0, ok);
}

void redis_script_init(struct redis_script *s, const char *source)
{
	uint8_t md[SHA_DIGEST_LENGTH];
	static const char hex[] = "0123456789abcdef";
	s->source = source;
	SHA1((const uint8_t *)source, strlen(source), md);
	for (size_t i = 0; i < SHA_DIGEST_LENGTH; i++) {
		s->sha1_hex[2 * i] = hex[md[i] >> 4];
		s->sha1_hex[2 * i + 1] = hex[md[i] & 15];
	}
	s->sha1_hex[40] = '\0';
}

int redis_script_eval(struct redis_client *c, const struct redis_script *s,
		      redis_reply_cb cb, void *arg, size_t nkeys, size_t nargs,
		      const char *const *args, const size_t *args_len)
{
	if (nkeys > nargs || nargs > 1000000)
		return submit(c, cb, arg, NULL, 0, NULL, 0, false);
	size_t argc = nargs + 3;
	const char **argv = xcalloc(argc, sizeof(*argv));
	size_t *lens = xcalloc(argc, sizeof(*lens));
	char nk[24];
	snprintf(nk, sizeof(nk), "%zu", nkeys);
	argv[0] = "EVALSHA";
	lens[0] = 7;
	argv[1] = s->sha1_hex;
	lens[1] = 40;
	argv[2] = nk;
	lens[2] = strlen(nk);
	for (size_t i = 0; i < nargs; i++) {
		argv[3 + i] = args[i];
		lens[3 + i] = args_len ? args_len[i] : strlen(args[i]);
	}
	char *buf = NULL, *fb = NULL;
	size_t len = 0, fb_len = 0;
	bool ok = format_argv(&buf, &len, (int)argc, argv, lens) == 0;
	argv[0] = "EVAL";
	lens[0] = 4;
	argv[1] = s->source;
	lens[1] = strlen(s->source);
	ok = ok && format_argv(&fb, &fb_len, (int)argc, argv, lens) == 0;
	free(argv);
	free(lens);
	return submit(c, cb, arg, buf, len, fb, fb_len, ok);
}

/* ---- pub/sub ---------------------------------------------------------- */

static void subs_sweep(struct redis_client *c)
{
	struct redis_sub **pp = &c->subs;
	while (*pp) {
		struct redis_sub *s = *pp;
		if (s->dead) {
			*pp = s->next;
			free(s->channel);
			free(s);
		} else {
			pp = &s->next;
		}
	}
	c->subs_dirty = false;
}

static void sub_reply_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct rlink *lk = priv;
	struct redis_client *c = lk->client;
	redisReply *reply = r;
	UNUSED(ac);
	if (!reply || c->closing || reply->type != REDIS_REPLY_ARRAY ||
	    reply->elements < 3)
		return;
	const redisReply *kind = reply->element[0], *ch = reply->element[1],
			 *msg = reply->element[2];
	if (kind->type != REDIS_REPLY_STRING || ch->type != REDIS_REPLY_STRING)
		return;
	if (strcasecmp(kind->str, "subscribe") == 0) {
		if (lk->state == LINK_CONNECTING && lk->subs_sent &&
		    lk->confirms_left > 0 && --lk->confirms_left == 0)
			link_ready(lk);
		return;
	}
	if (strcasecmp(kind->str, "message") != 0 || msg->type != REDIS_REPLY_STRING)
		return;
	struct view vch = view_make(ch->str, ch->len);
	struct view vmsg = view_make(msg->str, msg->len);
	c->dispatching++;
	for (struct redis_sub *s = c->subs; s && !c->closing; s = s->next) {
		if (!s->dead && s->channel_len == ch->len &&
		    memcmp(s->channel, ch->str, ch->len) == 0)
			s->cb(c, vch, vmsg, s->arg);
	}
	c->dispatching--;
	if (!c->dispatching && c->subs_dirty && !c->closing)
		subs_sweep(c);
}

struct redis_sub *redis_subscribe(struct redis_client *c, const char *channel,
				  redis_message_cb cb, void *arg)
{
	if (c->closing)
		return NULL;
	struct redis_sub *s = xcalloc(1, sizeof(*s));
	s->channel = xstrdup(channel);
	s->channel_len = strlen(channel);
	s->cb = cb;
	s->arg = arg;
	struct redis_sub **pp = &c->subs;
	while (*pp)
		pp = &(*pp)->next;
	*pp = s;
	struct rlink *lk = &c->sub;
	if (lk->state == LINK_IDLE) {
		link_connect(lk);
	} else if (!sub_channel_earlier(c, s) && lk->ac && lk->subs_sent &&
		   lk->state != LINK_FAILING) {
		link_send_sub(lk, "SUBSCRIBE", s->channel, s->channel_len);
	}
	return s;
}

void redis_unsubscribe(struct redis_client *c, struct redis_sub **subp)
{
	struct redis_sub *s = *subp;
	if (!s)
		return;
	*subp = NULL;
	s->dead = true;
	struct rlink *lk = &c->sub;
	if (!c->closing && !sub_channel_live(c, s->channel, s->channel_len) &&
	    lk->ac && lk->subs_sent && lk->state != LINK_FAILING)
		link_send_sub(lk, "UNSUBSCRIBE", s->channel, s->channel_len);
	if (c->dispatching)
		c->subs_dirty = true;
	else
		subs_sweep(c);
}
