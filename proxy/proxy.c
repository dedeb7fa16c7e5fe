#include "proxy/proxy.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/log.h"
#include "common/loop.h"
#include "common/redis.h"
#include "proto/registry.h"

const struct config_def proxy_config_defs[] = {
	{ "proxy.id", CONFIG_STRING, "proxy1", 0, 0, "this proxy's unique id in the cluster" },
	{ "redis.url", CONFIG_STRING, NULL, 0, 0,
	  "Redis for membership, shard map, sessions (redis://host:port/db); unset: standalone" },
	{ "heartbeat.interval", CONFIG_DURATION, "1s", 100, 60000, "membership refresh period" },
	{ "heartbeat.ttl", CONFIG_DURATION, "5s", 300, 600000,
	  "membership key lifetime: a proxy silent this long counts as down" },
};
const size_t proxy_config_defs_len = ARRAY_LEN(proxy_config_defs);

struct proxy {
	struct loop *loop;
	struct redis_client *redis;
	struct heartbeat *hb;
};

struct proxy *proxy_new(struct loop *l, const struct config *cfg, struct tls_server *tls,
			bool primary, const char **error_r)
{
	struct proxy *p = xcalloc(1, sizeof(*p));
	p->loop = l;
	const char *url = config_get_str(cfg, "redis.url");
	if (primary && url) {
		p->redis = redis_client_new(l, url, NULL, error_r);
		if (!p->redis) {
			free(p);
			return NULL;
		}
		char info[128];
		snprintf(info, sizeof(info), "pid=%d tls=%d", (int)getpid(), tls ? 1 : 0);
		p->hb = heartbeat_start(l, p->redis, "proxy", config_get_str(cfg, "proxy.id"), info,
					(uint32_t)config_get_duration_ms(cfg, "heartbeat.interval"),
					(uint32_t)config_get_duration_ms(cfg, "heartbeat.ttl"));
	}
	if (primary)
		LOG_INFO("proxy", 0, "ready", "id=%s redis=%s tls=%s",
			 config_get_str(cfg, "proxy.id"), url ? "on" : "off", tls ? "on" : "off");
	return p;
}

void proxy_drain(struct proxy *p)
{
	heartbeat_stop(&p->hb);
}

void proxy_free(struct proxy **pp)
{
	struct proxy *p = *pp;
	if (!p)
		return;
	*pp = NULL;
	heartbeat_stop(&p->hb);
	redis_client_free(&p->redis);
	free(p);
}
