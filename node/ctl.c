#include "node/ctl.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/loop.h"
#include "common/redis.h"
#include "proto/registry.h"
#include "proto/rpc.h"

struct ctl {
	struct loop *loop;
	const char *redis_url;
	uint32_t timeout_ms;
	bool json;
};

static void usage(FILE *out)
{
	fprintf(out,
		"usage: mailctl [--redis URL] [--timeout MS] [--json] COMMAND\n"
		"\n"
		"  status            members registered in Redis, alive or not, and an RPC\n"
		"                    ping of every live node\n"
		"  ping ADDR [N]     RPC ping a node N times (default 3), print round trips\n"
		"\n"
		"The cluster is found with --redis or the REDIS_URL environment variable.\n"
		"Cluster, node, domain and user management arrive with the deploy issue.\n");
}

/* ---- small synchronous helpers over the loop ------------------------- */

struct wait_reply {
	bool done;
	redisReply *copy_type_only;
	int type;
	long long integer;
	char **elems;
	size_t n;
	char *str;
};

static void free_wait(struct wait_reply *w)
{
	for (size_t i = 0; i < w->n; i++)
		free(w->elems[i]);
	free(w->elems);
	free(w->str);
	memset(w, 0, sizeof(*w));
}

static void on_redis(struct redis_client *c, redisReply *r, void *arg)
{
	struct wait_reply *w = arg;
	UNUSED(c);
	w->done = true;
	if (!r) {
		w->type = -1;
		return;
	}
	w->type = r->type;
	w->integer = r->integer;
	if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS ||
	    r->type == REDIS_REPLY_ERROR)
		w->str = strndup(r->str, r->len);
	if (r->type == REDIS_REPLY_ARRAY) {
		w->n = r->elements;
		w->elems = xcalloc(r->elements ? r->elements : 1, sizeof(char *));
		for (size_t i = 0; i < r->elements; i++) {
			redisReply *e = r->element[i];
			w->elems[i] = e->type == REDIS_REPLY_STRING ? strndup(e->str, e->len)
								   : NULL;
		}
	}
}

static bool wait_done(void *arg)
{
	return ((struct wait_reply *)arg)->done;
}

static int redis_sync(struct ctl *c, struct redis_client *rc, struct wait_reply *w,
		      const char *fmt, const char *a1)
{
	memset(w, 0, sizeof(*w));
	redis_command(rc, on_redis, w, fmt, a1);
	if (loop_run_until(c->loop, wait_done, w, c->timeout_ms + 1000) < 0 || w->type < 0)
		return -1;
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	const char *x = *(const char *const *)a, *y = *(const char *const *)b;
	return strcmp(x ? x : "", y ? y : "");
}

struct ping_wait {
	bool done;
	enum rpc_status st;
	char node_id[64];
	uint64_t uptime_ms;
	uint64_t rtt_us;
	uint64_t sent_ns;
	char err[128];
};

static void on_pong(void *arg, enum rpc_status st, const ProtobufCMessage *reply,
		    const Mail__Rpc__ErrorReply *err)
{
	struct ping_wait *p = arg;
	p->done = true;
	p->st = st;
	p->rtt_us = (time_mono_ns() - p->sent_ns) / 1000;
	if (st == RPC_OK && reply) {
		const Mail__Rpc__Pong *pong = (const Mail__Rpc__Pong *)reply;
		snprintf(p->node_id, sizeof(p->node_id), "%s", pong->node_id);
		p->uptime_ms = pong->uptime_ms;
	}
	if (err)
		snprintf(p->err, sizeof(p->err), "%s", err->message);
}

static bool ping_done(void *arg)
{
	return ((struct ping_wait *)arg)->done;
}

static int ping_once(struct ctl *c, struct rpc_client *cl, struct ping_wait *p)
{
	memset(p, 0, sizeof(*p));
	Mail__Rpc__Ping ping = MAIL__RPC__PING__INIT;
	ping.from = "mailctl";
	ping.sent_ms = time_mono_ms();
	p->sent_ns = time_mono_ns();
	rpc_client_call(cl, RPC_METHOD_PING, &ping.base, c->timeout_ms, on_pong, p);
	loop_run_until(c->loop, ping_done, p, c->timeout_ms + 1000);
	return p->done && p->st == RPC_OK ? 0 : -1;
}

/* ---- commands -------------------------------------------------------- */

static int cmd_ping(struct ctl *c, int argc, char **argv)
{
	if (argc < 1) {
		usage(stderr);
		return 2;
	}
	int count = argc > 1 ? atoi(argv[1]) : 3;
	if (count < 1 || count > 1000000)
		count = 3;
	const char *err = NULL;
	struct rpc_client_config cc = { .addr = argv[0], .max_frame = 1 << 20 };
	struct rpc_client *cl = rpc_client_new(c->loop, &cc, &err);
	if (!cl) {
		fprintf(stderr, "mailctl: %s\n", err);
		return 2;
	}
	int failures = 0;
	for (int i = 0; i < count; i++) {
		struct ping_wait p;
		if (ping_once(c, cl, &p) == 0) {
			printf("pong from %s (%s): rtt=%" PRIu64 "us uptime=%" PRIu64 "ms\n", argv[0],
			       p.node_id, p.rtt_us, p.uptime_ms);
		} else {
			printf("no pong from %s: %s%s%s\n", argv[0],
			       p.done ? rpc_status_str(p.st) : "timeout", p.err[0] ? ": " : "",
			       p.err);
			failures++;
		}
	}
	fflush(stdout);
	rpc_client_free(&cl);
	return failures ? 1 : 0;
}

static int cmd_status(struct ctl *c)
{
	if (!c->redis_url) {
		fprintf(stderr, "mailctl: no cluster given: use --redis URL or set REDIS_URL\n");
		return 2;
	}
	const char *err = NULL;
	struct redis_options ro = { .command_timeout_ms = c->timeout_ms,
				    .connect_timeout_ms = c->timeout_ms };
	struct redis_client *rc = redis_client_new(c->loop, c->redis_url, &ro, &err);
	if (!rc) {
		fprintf(stderr, "mailctl: %s\n", err);
		return 2;
	}
	int status = 0;
	static const char *const kinds[] = { "node", "proxy" };
	static const char *const plural[] = { "nodes", "proxies" };
	static const char *const sets[] = { REGISTRY_NODES_SET, REGISTRY_PROXIES_SET };
	if (c->json)
		printf("{");
	for (size_t k = 0; k < 2; k++) {
		struct wait_reply members;
		if (redis_sync(c, rc, &members, "SMEMBERS %s", sets[k]) < 0 ||
		    members.type != REDIS_REPLY_ARRAY) {
			fprintf(stderr, "mailctl: cannot read %s from Redis at %s\n", sets[k],
				c->redis_url);
			free_wait(&members);
			status = 1;
			break;
		}
		qsort(members.elems, members.n, sizeof(char *), cmp_str);
		if (c->json)
			printf("%s\"%s\":[", k ? "," : "", plural[k]);
		else
			printf("%s: %zu\n", plural[k], members.n);
		for (size_t i = 0; i < members.n; i++) {
			const char *id = members.elems[i] ? members.elems[i] : "?";
			char key[160];
			registry_member_key(kinds[k], id, key, sizeof(key));
			struct wait_reply info;
			bool alive = redis_sync(c, rc, &info, "GET %s", key) == 0 &&
				     info.type == REDIS_REPLY_STRING;
			char addr[128] = "";
			if (alive)
				registry_info_get(info.str, "addr", addr, sizeof(addr));
			struct ping_wait p = { 0 };
			bool pinged = false;
			if (alive && k == 0 && addr[0]) {
				struct rpc_client_config cc = { .addr = addr, .max_frame = 1 << 20 };
				struct rpc_client *cl = rpc_client_new(c->loop, &cc, &err);
				if (cl) {
					pinged = ping_once(c, cl, &p) == 0;
					rpc_client_free(&cl);
				}
			}
			const char *state = !alive ? "down" : (k == 0 && !pinged) ? "unreachable"
										 : "up";
			if (k == 0 && strcmp(state, "up") != 0)
				status = 1;
			if (c->json) {
				printf("%s{\"id\":\"%s\",\"state\":\"%s\",\"addr\":\"%s\"", i ? "," : "",
				       id, state, addr);
				if (pinged)
					printf(",\"rtt_us\":%" PRIu64 ",\"uptime_ms\":%" PRIu64, p.rtt_us,
					       p.uptime_ms);
				printf("}");
			} else {
				printf("  %-16s %-12s %-22s", id, state, addr);
				if (pinged)
					printf(" rtt=%" PRIu64 "us uptime=%" PRIu64 "s", p.rtt_us,
					       p.uptime_ms / 1000);
				printf("\n");
			}
			free_wait(&info);
		}
		if (c->json)
			printf("]");
		free_wait(&members);
	}
	if (c->json)
		printf("}\n");
	fflush(stdout);
	redis_client_free(&rc);
	return status;
}

int ctl_main(int argc, char **argv)
{
	log_init("mailctl", LOG_LEVEL_ERROR);
	struct ctl c = { .redis_url = getenv("REDIS_URL"), .timeout_ms = 3000 };
	static const struct option lo[] = {
		{ "redis", required_argument, 0, 'r' },
		{ "timeout", required_argument, 0, 't' },
		{ "json", no_argument, 0, 'j' },
		{ "help", no_argument, 0, 'h' },
		{ 0, 0, 0, 0 },
	};
	int ch;
	while ((ch = getopt_long(argc, argv, "+h", lo, NULL)) != -1) {
		switch (ch) {
		case 'r': c.redis_url = optarg; break;
		case 't': c.timeout_ms = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'j': c.json = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return 2;
	}
	if (c.timeout_ms < 10)
		c.timeout_ms = 10;
	const char *err = NULL;
	c.loop = loop_new(NULL, &err);
	if (!c.loop) {
		fprintf(stderr, "mailctl: %s\n", err);
		return 1;
	}
	const char *cmd = argv[optind];
	int rc;
	if (strcmp(cmd, "status") == 0) {
		rc = cmd_status(&c);
	} else if (strcmp(cmd, "ping") == 0) {
		rc = cmd_ping(&c, argc - optind - 1, argv + optind + 1);
	} else {
		fprintf(stderr, "mailctl: unknown command '%s'\n", cmd);
		usage(stderr);
		rc = 2;
	}
	loop_free(&c.loop);
	return rc;
}
