#include "proxy/proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "common/log.h"
#include "common/loop.h"
#include "common/redis.h"
#include "proto/registry.h"
#include "proto/rpc.h"
#include "proxy/limits.h"
#include "proxy/proxy_internal.h"
#include "proxy/smtp_session.h"

const struct config_def proxy_config_defs[] = {
	{ "proxy.id", CONFIG_STRING, "proxy1", 0, 0, "this proxy's unique id in the cluster" },
	{ "proxy.hostname", CONFIG_STRING, NULL, 0, 0,
	  "name in greetings and Received headers (default: the host name)" },
	{ "redis.url", CONFIG_STRING, NULL, 0, 0,
	  "Redis for membership, shard map, sessions (redis://host:port/db); unset: standalone" },
	{ "heartbeat.interval", CONFIG_DURATION, "1s", 100, 60000, "membership refresh period" },
	{ "heartbeat.ttl", CONFIG_DURATION, "5s", 300, 600000,
	  "membership key lifetime: a proxy silent this long counts as down" },
	/* listeners: unset = not served; deploy/mailproxy.conf has the usual ports */
	{ "smtp.listen", CONFIG_LIST, NULL, 0, 0, "SMTP (MX) addresses, e.g. *:25" },
	{ "submission.listen", CONFIG_LIST, NULL, 0, 0, "submission (STARTTLS) addresses, e.g. *:587" },
	{ "submissions.listen", CONFIG_LIST, NULL, 0, 0,
	  "submissions (implicit TLS) addresses, e.g. *:465" },
	{ "imap.listen", CONFIG_LIST, NULL, 0, 0, "IMAP (STARTTLS) addresses, e.g. *:143" },
	{ "imaps.listen", CONFIG_LIST, NULL, 0, 0, "IMAPS (implicit TLS) addresses, e.g. *:993" },
	{ "pop3.listen", CONFIG_LIST, NULL, 0, 0, "POP3 (STLS) addresses, e.g. *:110" },
	{ "pop3s.listen", CONFIG_LIST, NULL, 0, 0, "POP3S (implicit TLS) addresses, e.g. *:995" },
	{ "auth.plaintext", CONFIG_BOOL, "false", 0, 0,
	  "allow LOGIN/AUTH before TLS (only for tests or a trusted network)" },
	{ "route.node", CONFIG_STRING, NULL, 0, 0,
	  "without Redis: the one node (RPC address) that serves every shard" },
	{ "route.shards", CONFIG_INT, "256", 1, 65535, "without Redis: the shard count of route.node" },
	{ "route.refresh", CONFIG_DURATION, "1s", 50, 600000,
	  "shard map polling period (changes published in Redis apply at once)" },
	{ "rpc.max_frame", CONFIG_SIZE, "128M", 65536, 1073741824,
	  "largest RPC frame to or from a node (a message plus its envelope)" },
	{ "rpc.timeout", CONFIG_DURATION, "30s", 100, 600000, "deadline of a call to a node" },
	{ "session.connect_timeout", CONFIG_DURATION, "5s", 100, 60000,
	  "connecting to a node to hand a session over" },
	/* the SMTP receiver (proxy/smtp_session.c) */
	{ "smtp.max_size", CONFIG_SIZE, "100M", 1024, 1073741824,
	  "largest message (SIZE); capped at rpc.max_frame less 1M" },
	{ "smtp.max_recipients", CONFIG_INT, "100", 1, 1000, "RCPT commands per message" },
	{ "smtp.buffer_budget", CONFIG_SIZE, "1G", 1048576, 1099511627776,
	  "message bytes all SMTP sessions of a thread may hold at once; beyond it 452 4.3.1" },
	{ "smtp.max_errors", CONFIG_INT, "10", 1, 1000, "bad commands before a session is closed" },
	{ "smtp.idle_timeout", CONFIG_DURATION, "5m", 1000, 3600000,
	  "a client silent this long gets 421 and is disconnected (RFC 5321: 5m)" },
	{ "smtp.greeting_delay", CONFIG_DURATION, "0", 0, 60000,
	  "wait before the greeting; a client that talks first is refused (554)" },
	{ "smtp.bare_lf", CONFIG_STRING, "reject", 0, 0,
	  "bare LF or CR in DATA: reject (550 after the data), normalize (to CRLF) or accept" },
	/* limits (proxy/limits.h): shared through Redis, in process without it; 0 = no limit */
	{ "limits.conn_per_ip", CONFIG_INT, "50", 0, 1000000,
	  "open connections per client address (IPv6: per /64) and service "
	  "(smtp, submission, imap, pop3)" },
	{ "limits.conn_rate", CONFIG_INT, "120", 0, 1000000,
	  "new connections per client address and service per minute" },
	{ "limits.auth_fail_ip", CONFIG_INT, "10", 0, 1000000,
	  "failed logins from one address within limits.auth_window before it is banned" },
	{ "limits.auth_fail_user", CONFIG_INT, "50", 0, 1000000,
	  "failed logins for one user within limits.auth_window before the user is banned" },
	{ "limits.auth_window", CONFIG_DURATION, "1h", 0, 2592000000,
	  "how long failed logins are counted" },
	{ "limits.auth_ban", CONFIG_DURATION, "1h", 0, 2592000000,
	  "ban length; a banned login is answered like a wrong password, the node is not asked" },
	{ "limits.auth_delay", CONFIG_DURATION, "1s", 0, 60000,
	  "wait before answering the 2nd failed login (the 1st: none), doubled for each further one" },
	{ "limits.auth_delay_max", CONFIG_DURATION, "8s", 0, 60000,
	  "longest wait before a failure answer" },
	{ "limits.auth_fail_conn", CONFIG_INT, "3", 1, 1000,
	  "failed logins before a connection is closed" },
	{ "limits.bad_commands", CONFIG_INT, "10", 1, 1000,
	  "protocol errors before a connection is closed (before login)" },
	{ "limits.imap_sessions", CONFIG_INT, "16", 0, 100000, "open IMAP sessions per user" },
	{ "limits.pop3_sessions", CONFIG_INT, "4", 0, 100000, "open POP3 sessions per user" },
	{ "limits.messages_per_day", CONFIG_INT, "200", 0, 100000000,
	  "messages an authenticated SMTP sender may send per day (24 h from the first)" },
	{ "limits.refresh", CONFIG_DURATION, "30s", 200, 3600000,
	  "open connections and sessions are refreshed in Redis this often; "
	  "they expire after 3 missed refreshes" },
};
const size_t proxy_config_defs_len = ARRAY_LEN(proxy_config_defs);

const char *proxy_service_str(enum proxy_service s)
{
	switch (s) {
	case SVC_SMTP: return "smtp";
	case SVC_SUBMISSION: return "submission";
	case SVC_SUBMISSIONS: return "submissions";
	case SVC_IMAP: return "imap";
	case SVC_IMAPS: return "imaps";
	case SVC_POP3: return "pop3";
	case SVC_POP3S: return "pop3s";
	case SVC_COUNT_: break;
	}
	return "?";
}

bool proxy_service_implicit_tls(enum proxy_service s)
{
	return s == SVC_SUBMISSIONS || s == SVC_IMAPS || s == SVC_POP3S;
}

/* ---- node RPC clients ------------------------------------------------------- */

struct node_pool {
	struct node_client {
		char addr[PROXY_NODE_ADDR_MAX];
		struct rpc_client *rpc;
	} *v;
	size_t n, cap;
};

struct rpc_client *proxy_node_client(struct proxy *p, const char *addr)
{
	struct node_pool *np = p->pool;
	for (size_t i = 0; i < np->n; i++)
		if (strcmp(np->v[i].addr, addr) == 0)
			return np->v[i].rpc;
	struct rpc_client_config cc = {
		.addr = addr,
		.max_frame = config_get_size(p->cfg, "rpc.max_frame"),
		/* SMTP transactions finish during a drain: keep the links. */
		.keep_on_drain = true,
	};
	const char *err = NULL;
	struct rpc_client *rc = rpc_client_new(p->loop, &cc, &err);
	if (!rc) {
		LOG_WARN("proxy", 0, "node_client", "addr=%s error=%s", addr, err);
		return NULL;
	}
	if (np->n == np->cap) {
		np->cap = np->cap ? 2 * np->cap : 8;
		np->v = xrealloc(np->v, np->cap * sizeof(*np->v));
	}
	snprintf(np->v[np->n].addr, sizeof(np->v[np->n].addr), "%s", addr);
	np->v[np->n++].rpc = rc;
	return rc;
}

static void pool_free(struct node_pool **npp)
{
	struct node_pool *np = *npp;
	if (!np)
		return;
	*npp = NULL;
	for (size_t i = 0; i < np->n; i++)
		rpc_client_free(&np->v[i].rpc);
	free(np->v);
	free(np);
}

uint64_t proxy_session_id(struct proxy *p)
{
	return ++p->next_session_id;
}

void proxy_client_info(struct conn *c, uint64_t session_id, struct relay_client_info *info,
		       char *addr_buf, size_t addr_len)
{
	memset(info, 0, sizeof(*info));
	info->session_id = session_id;
	const struct sockaddr *sa = conn_peer(c);
	addr_buf[0] = '\0';
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &in->sin_addr, addr_buf, (socklen_t)addr_len);
		info->client_port = ntohs(in->sin_port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, addr_buf, (socklen_t)addr_len);
		info->client_port = ntohs(in6->sin6_port);
	}
	info->client_addr = addr_buf;
	SSL *ssl = conn_ssl(c);
	info->tls = ssl != NULL;
	info->tls_version = ssl ? SSL_get_version(ssl) : "";
	const SSL_CIPHER *ci = ssl ? SSL_get_current_cipher(ssl) : NULL;
	info->tls_cipher = ci ? SSL_CIPHER_standard_name(ci) : "";
	const char *sni = ssl ? SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) : NULL;
	info->tls_sni = sni ? sni : "";
}

/* ---- listeners ---------------------------------------------------------------- */

static const struct {
	const char *key;
	enum proxy_service svc;
} listen_keys[] = {
	{ "smtp.listen", SVC_SMTP },
	{ "submission.listen", SVC_SUBMISSION },
	{ "submissions.listen", SVC_SUBMISSIONS },
	{ "imap.listen", SVC_IMAP },
	{ "imaps.listen", SVC_IMAPS },
	{ "pop3.listen", SVC_POP3 },
	{ "pop3s.listen", SVC_POP3S },
};

/* One accept thunk per service: the listener passes only one pointer. */
#define ACCEPT_THUNK(fn, svc)                                   \
	static void accept_##svc(struct conn *c, void *arg)     \
	{                                                       \
		fn(c, arg, svc);                                \
	}
ACCEPT_THUNK(imap_proxy_accept, SVC_IMAP)
ACCEPT_THUNK(imap_proxy_accept, SVC_IMAPS)
ACCEPT_THUNK(pop3_proxy_accept, SVC_POP3)
ACCEPT_THUNK(pop3_proxy_accept, SVC_POP3S)
ACCEPT_THUNK(smtp_session_accept, SVC_SMTP)
ACCEPT_THUNK(smtp_session_accept, SVC_SUBMISSION)
ACCEPT_THUNK(smtp_session_accept, SVC_SUBMISSIONS)

static listener_accept_cb accept_cb(enum proxy_service svc)
{
	switch (svc) {
	case SVC_SMTP: return accept_SVC_SMTP;
	case SVC_SUBMISSION: return accept_SVC_SUBMISSION;
	case SVC_SUBMISSIONS: return accept_SVC_SUBMISSIONS;
	case SVC_IMAP: return accept_SVC_IMAP;
	case SVC_IMAPS: return accept_SVC_IMAPS;
	case SVC_POP3: return accept_SVC_POP3;
	case SVC_POP3S: return accept_SVC_POP3S;
	case SVC_COUNT_: break;
	}
	return NULL;
}

static int open_listeners(struct proxy *p, const char **error_r)
{
	static char why[256];
	/* Client-facing limits: small read-ahead (a client cannot make us
	 * buffer much), the protocol sets its own idle timeouts. */
	static const struct conn_limits lim = {
		.in_max = 64 * 1024,
		.out_high = 256 * 1024,
		.out_max = 4u << 20,
		.idle_ms = 600000,
		.write_ms = 60000,
		.handshake_ms = 15000,
	};
	for (size_t k = 0; k < ARRAY_LEN(listen_keys); k++) {
		size_t n = 0;
		const char *const *addrs = config_get_list(p->cfg, listen_keys[k].key, &n);
		enum proxy_service svc = listen_keys[k].svc;
		for (size_t i = 0; i < n; i++) {
			if (proxy_service_implicit_tls(svc) && !p->tls) {
				snprintf(why, sizeof(why), "%s needs tls.cert and tls.key",
					 listen_keys[k].key);
				*error_r = why;
				return -1;
			}
			if (!accept_cb(svc)) {
				snprintf(why, sizeof(why), "%s: not available in this build",
					 listen_keys[k].key);
				*error_r = why;
				return -1;
			}
			if (p->n_ls == PROXY_LISTENERS_MAX) {
				*error_r = "too many listen addresses";
				return -1;
			}
			struct listener_config lc = {
				.addr = addrs[i],
				.tls = proxy_service_implicit_tls(svc) ? p->tls : NULL,
				.on_accept = accept_cb(svc),
				.arg = p,
				.limits = &lim,
			};
			const char *err = NULL;
			struct listener *ls = listener_open(p->loop, &lc, &err);
			if (!ls) {
				snprintf(why, sizeof(why), "%s %s: %s", listen_keys[k].key, addrs[i],
					 err);
				*error_r = why;
				return -1;
			}
			p->ls[p->n_ls] = ls;
			p->ls_svc[p->n_ls++] = svc;
			if (p->primary)
				LOG_INFO("proxy", 0, "listening", "service=%s addr=%s port=%u",
					 proxy_service_str(svc), addrs[i], listener_port(ls));
		}
	}
	if (p->primary && p->n_ls == 0)
		LOG_WARN("proxy", 0, "no_listeners",
			 "hint=set smtp.listen imap.listen ... (see deploy/mailproxy.conf)");
	return 0;
}

/* ---- the service -------------------------------------------------------------- */

struct proxy *proxy_new(struct loop *l, const struct config *cfg, struct tls_server *tls,
			bool primary, const char **error_r)
{
	struct proxy *p = xcalloc(1, sizeof(*p));
	p->loop = l;
	p->cfg = cfg;
	p->tls = tls;
	p->primary = primary;
	p->id = xstrdup(config_get_str(cfg, "proxy.id"));
	p->auth_plaintext = config_get_bool(cfg, "auth.plaintext");
	p->pool = xcalloc(1, sizeof(*p->pool));
	const char *hn = config_get_str(cfg, "proxy.hostname");
	if (hn)
		snprintf(p->hostname, sizeof(p->hostname), "%s", hn);
	else if (gethostname(p->hostname, sizeof(p->hostname) - 1) < 0)
		snprintf(p->hostname, sizeof(p->hostname), "localhost");
	const char *url = config_get_str(cfg, "redis.url");
	if (url) {
		/* Every thread routes by its own cached map; thread 0 also keeps
		 * the membership key. */
		p->redis = redis_client_new(l, url, NULL, error_r);
		if (!p->redis)
			goto fail;
	}
	struct smtp_config sc;
	if (smtp_config_load(cfg, &sc, error_r) < 0)
		goto fail;
	p->limits = limits_new(p);
	p->route = route_new(p, error_r);
	if (!p->route)
		goto fail;
	if (open_listeners(p, error_r) < 0)
		goto fail;
	if (primary && p->redis) {
		char info[128];
		snprintf(info, sizeof(info), "pid=%d tls=%d", (int)getpid(), tls ? 1 : 0);
		p->hb = heartbeat_start(l, p->redis, "proxy", p->id, info,
					(uint32_t)config_get_duration_ms(cfg, "heartbeat.interval"),
					(uint32_t)config_get_duration_ms(cfg, "heartbeat.ttl"));
	}
	if (primary)
		LOG_INFO("proxy", 0, "ready", "id=%s redis=%s tls=%s listeners=%zu", p->id,
			 url ? "on" : "off", tls ? "on" : "off", p->n_ls);
	return p;
fail:
	proxy_free(&p);
	return NULL;
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
	for (size_t i = 0; i < p->n_ls; i++)
		listener_close(&p->ls[i]);
	route_free(&p->route);
	pool_free(&p->pool);
	redis_client_free(&p->redis);
	limits_free(&p->limits); /* after the client: its last replies come first */
	free(p->id);
	free(p);
}
