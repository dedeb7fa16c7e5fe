#include "node/node.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/loop.h"
#include "common/redis.h"
#include "proto/registry.h"
#include "proto/rpc.h"

const struct config_def node_config_defs[] = {
	{ "node.id", CONFIG_STRING, "node1", 0, 0, "this node's unique id in the cluster" },
	{ "rpc.listen", CONFIG_ADDR, "127.0.0.1:7001", 0, 0, "RPC listen address" },
	{ "rpc.advertise", CONFIG_ADDR, NULL, 0, 0,
	  "address other members use to reach this node (default: rpc.listen)" },
	{ "rpc.tls", CONFIG_BOOL, "false", 0, 0,
	  "serve RPC over TLS with tls.cert (mutual when tls.client_ca is set)" },
	{ "rpc.max_frame", CONFIG_SIZE, "64M", 1024, 1073741824, "largest RPC frame accepted" },
	{ "redis.url", CONFIG_STRING, NULL, 0, 0,
	  "Redis for membership (redis://host:port/db); unset: standalone" },
	{ "heartbeat.interval", CONFIG_DURATION, "1s", 100, 60000, "membership refresh period" },
	{ "heartbeat.ttl", CONFIG_DURATION, "5s", 300, 600000,
	  "membership key lifetime: a node silent this long counts as down" },
	{ "data.dir", CONFIG_STRING, "./data", 0, 0, "where shards live (storage issue)" },
};
const size_t node_config_defs_len = ARRAY_LEN(node_config_defs);

struct node {
	struct loop *loop;
	char *id;
	uint64_t started_ms;
	struct rpc_server *rpc;
	struct redis_client *redis;
	struct heartbeat *hb;
};

static void handle_ping(struct rpc_call *call, const ProtobufCMessage *req, void *arg)
{
	struct node *n = arg;
	const Mail__Rpc__Ping *ping = (const Mail__Rpc__Ping *)req;
	Mail__Rpc__Pong pong = MAIL__RPC__PONG__INIT;
	pong.node_id = n->id;
	pong.sent_ms = ping->sent_ms;
	pong.uptime_ms = time_mono_ms() - n->started_ms;
	rpc_call_reply(call, &pong.base);
}

static const struct rpc_method_handler node_handlers[] = {
	{ RPC_METHOD_PING, handle_ping },
};

struct node *node_new(struct loop *l, const struct config *cfg, struct tls_server *tls,
		      bool primary, const char **error_r)
{
	struct node *n = xcalloc(1, sizeof(*n));
	n->loop = l;
	n->id = xstrdup(config_get_str(cfg, "node.id"));
	n->started_ms = time_mono_ms();
	bool rpc_tls = config_get_bool(cfg, "rpc.tls");
	if (rpc_tls && !tls) {
		*error_r = "rpc.tls = true needs tls.cert and tls.key";
		node_free(&n);
		return NULL;
	}
	struct rpc_server_config rc = {
		.addr = config_get_str(cfg, "rpc.listen"),
		.tls = rpc_tls ? tls : NULL,
		.max_frame = config_get_size(cfg, "rpc.max_frame"),
		.handlers = node_handlers,
		.n_handlers = ARRAY_LEN(node_handlers),
		.arg = n,
	};
	n->rpc = rpc_server_new(l, &rc, error_r);
	if (!n->rpc) {
		node_free(&n);
		return NULL;
	}
	const char *url = config_get_str(cfg, "redis.url");
	if (primary && url) {
		n->redis = redis_client_new(l, url, NULL, error_r);
		if (!n->redis) {
			node_free(&n);
			return NULL;
		}
		const char *adv = config_get_str(cfg, "rpc.advertise");
		char addr[128];
		if (adv) {
			snprintf(addr, sizeof(addr), "%s", adv);
		} else {
			/* rpc.listen may use port 0: advertise what was bound. */
			const char *listen = config_get_str(cfg, "rpc.listen");
			const char *colon = strrchr(listen, ':');
			int hl = colon ? (int)(colon - listen) : (int)strlen(listen);
			snprintf(addr, sizeof(addr), "%.*s:%u", hl, listen, rpc_server_port(n->rpc));
		}
		char info[256];
		snprintf(info, sizeof(info), "addr=%s pid=%d tls=%d", addr, (int)getpid(),
			 rpc_tls ? 1 : 0);
		n->hb = heartbeat_start(l, n->redis, "node", n->id, info,
					(uint32_t)config_get_duration_ms(cfg, "heartbeat.interval"),
					(uint32_t)config_get_duration_ms(cfg, "heartbeat.ttl"));
	}
	LOG_INFO("node", 0, "rpc_listening", "id=%s port=%u redis=%s", n->id,
		 rpc_server_port(n->rpc), url && primary ? "on" : "off");
	return n;
}

uint16_t node_rpc_port(const struct node *n) { return rpc_server_port(n->rpc); }

void node_drain(struct node *n)
{
	heartbeat_stop(&n->hb);
}

void node_free(struct node **np)
{
	struct node *n = *np;
	if (!n)
		return;
	*np = NULL;
	heartbeat_stop(&n->hb);
	rpc_server_free(&n->rpc);
	redis_client_free(&n->redis);
	free(n->id);
	free(n);
}
