/* Private to proxy/: the per-thread proxy service and what its protocol
 * sessions share (routing to nodes, node RPC clients, listeners). */
#ifndef PROXY_PROXY_INTERNAL_H
#define PROXY_PROXY_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "common/config.h"
#include "common/loop.h"

struct tls_server;
struct redis_client;
struct heartbeat;
struct route;
struct rpc_client;
struct limits;

#define PROXY_LISTENERS_MAX 16
#define PROXY_NODE_ADDR_MAX 128

/* What a listener serves. */
enum proxy_service {
	SVC_SMTP,         /* 25: MX, STARTTLS, no AUTH unless configured */
	SVC_SUBMISSION,   /* 587: STARTTLS, AUTH after TLS */
	SVC_SUBMISSIONS,  /* 465: implicit TLS, AUTH */
	SVC_IMAP,         /* 143: STARTTLS, LOGINDISABLED before TLS */
	SVC_IMAPS,        /* 993: implicit TLS */
	SVC_POP3,         /* 110: STLS */
	SVC_POP3S,        /* 995: implicit TLS */
	SVC_COUNT_
};
const char *proxy_service_str(enum proxy_service s);
/* Implicit TLS service (465, 993, 995). */
bool proxy_service_implicit_tls(enum proxy_service s);

/* One per loop thread. */
struct proxy {
	struct loop *loop;
	const struct config *cfg;
	struct tls_server *tls; /* NULL: no certificate configured */
	char *id;
	char hostname[256];     /* proxy.hostname: greetings, Received */
	bool primary;           /* thread 0: membership */
	bool auth_plaintext;    /* auth.plaintext: AUTH/LOGIN without TLS */
	struct redis_client *redis; /* NULL without redis.url */
	struct heartbeat *hb;
	struct route *route;
	struct node_pool *pool;
	struct limits *limits;
	struct listener *ls[PROXY_LISTENERS_MAX];
	enum proxy_service ls_svc[PROXY_LISTENERS_MAX];
	size_t n_ls;
	uint64_t next_session_id;
	uint64_t smtp_buffered; /* message bytes SMTP sessions hold (smtp.buffer_budget) */
};

/* ---- routing (proxy/route.c) ---------------------------------------------- */

/* Where a mailbox lives: the canonical owner address (lower case, +tag
 * removed), its shard, the shard map epoch and the address of the node
 * that serves it. */
struct route_target {
	char owner[256];
	char tag[128];   /* the +tag without '+', "" if none */
	uint32_t shard;
	uint64_t epoch;
	char addr[PROXY_NODE_ADDR_MAX];
};

enum route_result {
	ROUTE_OK = 0,
	ROUTE_BAD_ADDRESS,  /* not a mailbox address */
	ROUTE_UNAVAILABLE,  /* no live node serves the shard (temporary) */
};

/* Sources, in order: the shard map in Redis (hash mail:shardmap, see
 * proto/registry.h), else the shards each live node advertises in its
 * membership key, else the static route.node of the config (one box,
 * no Redis). Read at start, refreshed every route.refresh and at once
 * when mail:shardmap is published. Never blocks. */
struct route *route_new(struct proxy *p, const char **error_r);
void route_free(struct route **r);
enum route_result route_lookup(struct route *r, const char *address, struct route_target *out);
/* Address of some live node (directory questions any node answers), NULL
 * if none is known. Rotates between nodes. */
const char *route_any_node(struct route *r);
/* Shards known to be served / total (for logs, metrics and tests). */
uint32_t route_served(const struct route *r, uint32_t *nshards_r);
/* Map refreshes so far (tests wait on it). */
uint64_t route_generation(const struct route *r);

/* ---- node RPC clients (proxy/proxy.c) --------------------------------------- */

/* The RPC client for a node address, made on first use and kept (one
 * connection per node per thread; calls are multiplexed). Never NULL for a
 * well-formed address. */
struct rpc_client *proxy_node_client(struct proxy *p, const char *addr);

/* A new id for a client session (logs join proxy and node lines). */
uint64_t proxy_session_id(struct proxy *p);

/* ---- protocol sessions ------------------------------------------------------ */

/* Accept callbacks (arg is the struct proxy *). */
void imap_proxy_accept(struct conn *c, struct proxy *p, enum proxy_service svc);
void pop3_proxy_accept(struct conn *c, struct proxy *p, enum proxy_service svc);
void smtp_session_accept(struct conn *c, struct proxy *p, enum proxy_service svc);

/* ---- relay to a node (proxy/relay.c) ----------------------------------------- */

/* Facts about the client connection passed in OpenSession. */
struct relay_client_info {
	const char *client_addr; /* text IP */
	uint16_t client_port;
	bool tls;
	const char *tls_version, *tls_cipher, *tls_sni; /* "" without TLS */
	uint64_t session_id;
};

/* Fill info from the client connection (addr_buf holds the address
 * text, >= 64 bytes). */
void proxy_client_info(struct conn *c, uint64_t session_id, struct relay_client_info *info,
		       char *addr_buf, size_t addr_len);

enum relay_proto { RELAY_IMAP, RELAY_POP3 };

struct relay;
/* Hand the authenticated client connection `client` to the node at
 * t->addr: connect, send OPEN_SESSION (imap_tag = the tag of the login
 * command, answered by the node; utf8 = POP3 UTF8 given before login),
 * then splice bytes both ways until either side closes. The caller pauses
 * the client's input first and keeps its handler until `done` runs, once,
 * on the loop (never inside relay_start):
 *   done(arg, true, NULL)  the relay owns the client connection now (its
 *                          handler is replaced); the caller forgets it.
 *                          Input the client sent after the login command
 *                          is forwarded (pipelining).
 *   done(arg, false, why)  the node could not take the session; the
 *                          client connection is untouched (still paused).
 * If the client connection closes before done, call relay_cancel (done is
 * then not called). */
struct relay *relay_start(struct proxy *p, struct conn *client, const struct route_target *t,
			  enum relay_proto proto, const char *imap_tag, bool utf8,
			  const struct relay_client_info *info,
			  void (*done)(void *arg, bool ok, const char *why), void *arg);
void relay_cancel(struct relay *r);
/* cb(arg) runs once when the relayed client connection has closed (set it
 * from done(arg, true, ...); the session's registrations end with it). */
void relay_set_close_cb(struct relay *r, void (*cb)(void *arg), void *arg);

#endif
