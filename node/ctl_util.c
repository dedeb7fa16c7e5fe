/* mailctl plumbing shared by the command files: see node/ctl_internal.h. */
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "common/address.h"
#include "common/loop.h"
#include "common/redis.h"
#include "node/ctl_internal.h"
#include "proto/rpc.h"

void ctl_reply_free(struct ctl_reply *r)
{
	for (size_t i = 0; i < r->n; i++)
		free(r->elems[i]);
	free(r->elems);
	free(r->str);
	memset(r, 0, sizeof(*r));
}

struct reply_wait {
	bool done;
	struct ctl_reply *r;
};

static void on_reply(struct redis_client *c, redisReply *rep, void *arg)
{
	struct reply_wait *w = arg;
	struct ctl_reply *r = w->r;
	UNUSED(c);
	w->done = true;
	if (!rep) {
		r->type = -1;
		return;
	}
	r->type = rep->type;
	r->integer = rep->integer;
	if (rep->type == REDIS_REPLY_STRING || rep->type == REDIS_REPLY_STATUS ||
	    rep->type == REDIS_REPLY_ERROR)
		r->str = strndup(rep->str, rep->len);
	if (rep->type == REDIS_REPLY_ARRAY) {
		r->n = rep->elements;
		r->elems = xcalloc(rep->elements ? rep->elements : 1, sizeof(char *));
		for (size_t i = 0; i < rep->elements; i++) {
			const redisReply *e = rep->element[i];
			r->elems[i] = e->type == REDIS_REPLY_STRING ? strndup(e->str, e->len) : NULL;
		}
	}
}

static bool reply_done(void *arg)
{
	return ((struct reply_wait *)arg)->done;
}

struct redis_client *ctl_redis_open(struct ctl *c)
{
	if (!c->redis_url) {
		fprintf(stderr, "mailctl: no cluster given: use --redis URL or set REDIS_URL\n");
		return NULL;
	}
	const char *err = NULL;
	struct redis_options ro = { .command_timeout_ms = c->timeout_ms,
				    .connect_timeout_ms = c->timeout_ms };
	struct redis_client *rc = redis_client_new(c->loop, c->redis_url, &ro, &err);
	if (!rc)
		fprintf(stderr, "mailctl: %s\n", err);
	return rc;
}

static int wait_reply(struct ctl *c, struct reply_wait *w)
{
	if (loop_run_until(c->loop, reply_done, w, c->timeout_ms + 1000) < 0 || w->r->type < 0) {
		fprintf(stderr, "mailctl: no answer from Redis at %s\n", c->redis_url);
		return -1;
	}
	return 0;
}

int ctl_redis_argv(struct ctl *c, struct redis_client *rc, struct ctl_reply *r, int argc,
		   const char *const *argv)
{
	memset(r, 0, sizeof(*r));
	struct reply_wait w = { .r = r };
	redis_command_argv(rc, on_reply, &w, argc, argv, NULL);
	return wait_reply(c, &w);
}

int ctl_redis_cmd(struct ctl *c, struct redis_client *rc, struct ctl_reply *r, const char *fmt,
		  ...)
{
	memset(r, 0, sizeof(*r));
	struct reply_wait w = { .r = r };
	va_list ap;
	va_start(ap, fmt);
	redis_vcommand(rc, on_reply, &w, fmt, ap);
	va_end(ap);
	return wait_reply(c, &w);
}

/* ---- members and the shard map ------------------------------------------ */

static int member_cmp(const void *a, const void *b)
{
	return strverscmp(((const struct ctl_member *)a)->id, ((const struct ctl_member *)b)->id);
}

int ctl_members(struct ctl *c, struct redis_client *rc, struct ctl_member **out)
{
	struct ctl_reply ids;
	*out = NULL;
	if (ctl_redis_cmd(c, rc, &ids, "SMEMBERS %s", REGISTRY_NODES_SET) < 0)
		return -1;
	if (ids.type != REDIS_REPLY_ARRAY) {
		fprintf(stderr, "mailctl: cannot read %s: %s\n", REGISTRY_NODES_SET,
			ids.str ? ids.str : "unexpected reply");
		ctl_reply_free(&ids);
		return -1;
	}
	struct ctl_member *m = xcalloc(ids.n ? ids.n : 1, sizeof(*m));
	size_t n = 0;
	for (size_t i = 0; i < ids.n; i++)
		if (ids.elems[i] && strlen(ids.elems[i]) < sizeof(m->id))
			snprintf(m[n++].id, sizeof(m->id), "%s", ids.elems[i]);
	ctl_reply_free(&ids);
	if (n) {
		/* One MGET for every member's key. */
		const char **argv = xcalloc(n + 1, sizeof(char *));
		char (*keys)[160] = xcalloc(n, sizeof(*keys));
		argv[0] = "MGET";
		for (size_t i = 0; i < n; i++) {
			registry_member_key("node", m[i].id, keys[i], sizeof(keys[i]));
			argv[i + 1] = keys[i];
		}
		struct ctl_reply v;
		int r = ctl_redis_argv(c, rc, &v, (int)n + 1, argv);
		free(argv);
		free(keys);
		if (r < 0) {
			free(m);
			return -1;
		}
		for (size_t i = 0; i < n && i < v.n; i++) {
			if (!v.elems[i])
				continue;
			m[i].alive = true;
			snprintf(m[i].info, sizeof(m[i].info), "%s", v.elems[i]);
			registry_info_get(v.elems[i], "addr", m[i].addr, sizeof(m[i].addr));
		}
		ctl_reply_free(&v);
	}
	qsort(m, n, sizeof(*m), member_cmp);
	*out = m;
	return (int)n;
}

int ctl_shardmap(struct ctl *c, struct redis_client *rc, struct shardmap **map_r)
{
	struct ctl_reply r;
	*map_r = NULL;
	if (ctl_redis_cmd(c, rc, &r, "HGETALL %s", REGISTRY_SHARDMAP_KEY) < 0)
		return -1;
	if (r.type != REDIS_REPLY_ARRAY) {
		fprintf(stderr, "mailctl: cannot read %s: %s\n", REGISTRY_SHARDMAP_KEY,
			r.str ? r.str : "unexpected reply");
		ctl_reply_free(&r);
		return -1;
	}
	const char *why = NULL;
	*map_r = shardmap_parse((const char *const *)r.elems, r.n, &why);
	ctl_reply_free(&r);
	if (*map_r)
		return 1;
	if (why[0]) {
		fprintf(stderr, "mailctl: %s: %s\n", REGISTRY_SHARDMAP_KEY, why);
		return -1;
	}
	return 0;
}

int ctl_map_route(struct ctl *c, const char *canonical, char *addr, size_t addr_len,
		  int *shard_r, uint32_t *nshards_r)
{
	struct redis_client *rc = ctl_redis_open(c);
	if (!rc)
		return -1;
	struct ctl_reply cnt, ent, info;
	memset(&ent, 0, sizeof(ent));
	memset(&info, 0, sizeof(info));
	int ret = -1;
	if (ctl_redis_cmd(c, rc, &cnt, "HGET %s count", REGISTRY_SHARDMAP_KEY) < 0)
		goto out;
	if (cnt.type == REDIS_REPLY_NIL) {
		ret = 0;
		goto out;
	}
	uint32_t nshards = cnt.str ? (uint32_t)strtoul(cnt.str, NULL, 10) : 0;
	if (!nshards || nshards > REGISTRY_MAX_SHARDS) {
		fprintf(stderr, "mailctl: %s has no valid count\n", REGISTRY_SHARDMAP_KEY);
		goto out;
	}
	uint32_t shard = address_shard(view_cstr(canonical), nshards);
	*shard_r = (int)shard;
	*nshards_r = nshards;
	char field[16];
	snprintf(field, sizeof(field), "%u", shard);
	if (ctl_redis_cmd(c, rc, &ent, "HGET %s %s", REGISTRY_SHARDMAP_KEY, field) < 0)
		goto out;
	char primary[REGISTRY_ID_MAX];
	unsigned long long epoch;
	if (ent.type != REDIS_REPLY_STRING ||
	    sscanf(ent.str, "%llu %63s", &epoch, primary) != 2) {
		fprintf(stderr, "mailctl: shard %u of %s has no primary in the shard map\n", shard,
			canonical);
		goto out;
	}
	char key[160];
	registry_member_key("node", primary, key, sizeof(key));
	if (ctl_redis_cmd(c, rc, &info, "GET %s", key) < 0)
		goto out;
	if (info.type != REDIS_REPLY_STRING ||
	    registry_info_get(info.str, "addr", addr, addr_len) < 0) {
		fprintf(stderr, "mailctl: %s is on shard %u, whose primary %s is down\n", canonical,
			shard, primary);
		goto out;
	}
	ret = 1;
out:
	ctl_reply_free(&cnt);
	ctl_reply_free(&ent);
	ctl_reply_free(&info);
	redis_client_free(&rc);
	return ret;
}

/* ---- RPC -------------------------------------------------------------------- */

struct call_wait {
	bool done;
	enum rpc_status st;
	ProtobufCMessage *reply;
	uint32_t code;
	char err[256];
};

static void on_call(void *arg, enum rpc_status st, const ProtobufCMessage *reply,
		    const Mail__Rpc__ErrorReply *err)
{
	struct call_wait *w = arg;
	w->done = true;
	w->st = st;
	if (reply) {
		/* Keep a copy: the reply is only borrowed. */
		size_t n = protobuf_c_message_get_packed_size(reply);
		uint8_t *tmp = xmalloc(n ? n : 1);
		protobuf_c_message_pack(reply, tmp);
		w->reply = protobuf_c_message_unpack(reply->descriptor, NULL, n, tmp);
		free(tmp);
	}
	if (err) {
		w->code = err->code;
		snprintf(w->err, sizeof(w->err), "%s", err->message);
	}
}

static bool call_done(void *arg)
{
	return ((struct call_wait *)arg)->done;
}

int ctl_call(struct ctl *c, const char *addr, uint16_t method, const ProtobufCMessage *req,
	     uint32_t deadline_ms, ProtobufCMessage **reply_r, uint32_t *code_r, char *err,
	     size_t err_len)
{
	struct call_wait w = { 0 };
	const char *why = NULL;
	*reply_r = NULL;
	if (code_r)
		*code_r = 0;
	struct rpc_client_config cc = { .addr = addr, .max_frame = 96u << 20,
					.connect_timeout_ms = c->timeout_ms };
	struct rpc_client *cl = rpc_client_new(c->loop, &cc, &why);
	if (!cl) {
		if (err)
			snprintf(err, err_len, "%s", why);
		else
			fprintf(stderr, "mailctl: %s\n", why);
		return 1;
	}
	rpc_client_call(cl, method, req, deadline_ms, on_call, &w);
	loop_run_until(c->loop, call_done, &w, deadline_ms + 2000);
	rpc_client_free(&cl);
	if (!w.done || w.st != RPC_OK) {
		char msg[400];
		snprintf(msg, sizeof(msg), "%s: %s%s%s", addr,
			 w.done ? rpc_status_str(w.st) : "timeout", w.err[0] ? ": " : "", w.err);
		if (err)
			snprintf(err, err_len, "%s", msg);
		else
			fprintf(stderr, "mailctl: %s\n", msg);
		if (code_r)
			*code_r = w.code;
		if (w.reply)
			protobuf_c_message_free_unpacked(w.reply, NULL);
		return 1;
	}
	*reply_r = w.reply;
	return 0;
}

void ctl_free_reply(ProtobufCMessage **reply)
{
	if (*reply)
		protobuf_c_message_free_unpacked(*reply, NULL);
	*reply = NULL;
}

/* ---- passwords ------------------------------------------------------------ */

static int read_line(int fd, char *out, size_t out_len)
{
	size_t n = 0;
	for (;;) {
		char ch;
		ssize_t r = read(fd, &ch, 1);
		if (r <= 0)
			return n ? 0 : -1;
		if (ch == '\n')
			break;
		if (n + 1 >= out_len)
			return -2;
		out[n++] = ch;
	}
	if (n && out[n - 1] == '\r')
		n--;
	out[n] = '\0';
	return 0;
}

static int prompt(int tty, const char *text, char *out, size_t out_len)
{
	struct termios old, quiet;
	/* Echo off before the prompt shows: nothing typed after it is echoed
	 * or flushed away. */
	bool restore = tcgetattr(tty, &old) == 0;
	if (restore) {
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		quiet.c_lflag |= ECHONL;
		tcsetattr(tty, TCSAFLUSH, &quiet);
	}
	int r = write(tty, text, strlen(text)) < 0 ? -1 : read_line(tty, out, out_len);
	if (restore)
		tcsetattr(tty, TCSAFLUSH, &old);
	return r;
}

int ctl_password(enum ctl_pw_source src, const char *arg, bool confirm, char *out,
		 size_t out_len)
{
	out[0] = '\0';
	if (src == CTL_PW_ARG) {
		if (strlen(arg) >= out_len) {
			fprintf(stderr, "mailctl: password too long\n");
			return -1;
		}
		snprintf(out, out_len, "%s", arg);
		return 1;
	}
	if (src == CTL_PW_STDIN) {
		int r = read_line(0, out, out_len);
		if (r < 0) {
			fprintf(stderr, "mailctl: %s\n", r == -2 ? "password too long"
								 : "no password on stdin");
			explicit_bzero(out, out_len);
			return -1;
		}
		return 1;
	}
	const char *env = getenv("MAILCTL_PASSWORD");
	if (env) {
		if (strlen(env) >= out_len) {
			fprintf(stderr, "mailctl: MAILCTL_PASSWORD too long\n");
			return -1;
		}
		snprintf(out, out_len, "%s", env);
		return 1;
	}
	int tty = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (tty < 0)
		return 0;
	char again[1024];
	int ret = 1;
	if (prompt(tty, "Password: ", out, out_len) < 0) {
		fprintf(stderr, "mailctl: no password read\n");
		ret = -1;
	} else if (confirm && (prompt(tty, "Again: ", again, sizeof(again)) < 0 ||
			       strcmp(again, out) != 0)) {
		fprintf(stderr, "mailctl: the passwords differ\n");
		ret = -1;
	}
	explicit_bzero(again, sizeof(again));
	if (ret < 0)
		explicit_bzero(out, out_len);
	close(tty);
	return ret;
}

void ctl_json_str(FILE *f, const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p < 0x20)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
}
