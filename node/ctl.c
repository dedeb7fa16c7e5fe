#include "node/ctl.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/loop.h"
#include "common/redis.h"
#include "proto/registry.h"
#include "proto/rpc.h"
#include "common/address.h"
#include "node/ctl_internal.h"

static void usage(FILE *out)
{
	fprintf(out,
		"usage: mailctl [--redis URL] [--node ADDR] [--timeout MS] [--json] COMMAND\n"
		"\n"
		"cluster\n"
		"  cluster init [--shards S]\n"
		"                    write the shard map (default 256 shards): contiguous ranges\n"
		"                    for the live nodes, epoch 1; refused when one exists\n"
		"  cluster status    nodes, shards per node, epochs, health (exit 1 when a shard\n"
		"                    has no live primary or there is no map)\n"
		"  node list         registered nodes, state, address, shards\n"
		"  node add ID | node drain ID | node remove ID\n"
		"                    moving shards needs replication, which does not exist yet:\n"
		"                    add/drain of a node that would move shards, and remove of a\n"
		"                    primary, exit 3 and say so; remove deletes a stopped node\n"
		"                    that owns no shard from the membership\n"
		"  status            members registered in Redis, alive or not, RPC ping of each\n"
		"  ping ADDR [N]     RPC ping a node N times (default 3), print round trips\n"
		"\n"
		"users (passwords: --password-stdin reads one line; MAILCTL_PASSWORD; a prompt\n"
		"without echo when run on a terminal; else one is generated and printed.\n"
		"--password PW still works but shows in ps and shell history)\n"
		"  user add ADDRESS [--password-stdin] [--quota BYTES|nK|nM|nG|nT]\n"
		"                    create a user (INBOX, Sent, Drafts, Trash, Junk, Archive)\n"
		"  user show ADDRESS quota, usage, shard\n"
		"  user list [DOMAIN] [--page N]\n"
		"                    every user of every live node (N per request, max 1000)\n"
		"  user passwd ADDRESS [--password-stdin]\n"
		"                    set a new password (\"\" disables password login)\n"
		"  user quota ADDRESS BYTES\n"
		"                    set the quota (0 = unlimited; K, M, G, T suffixes)\n"
		"  user enable ADDRESS | user disable ADDRESS\n"
		"                    a disabled user can neither log in nor receive mail\n"
		"                    (550 5.2.1); nothing is deleted\n"
		"  user remove ADDRESS (or delete)\n"
		"                    delete the user with every mailbox and message\n"
		"  auth ADDRESS      check a password (stdin or MAILCTL_PASSWORD) as a login would\n"
		"  mailbox list ADDRESS\n"
		"                    mailboxes with UIDVALIDITY, UIDNEXT, counts\n"
		"  import FILE|- [--dry-run] [--no-domains]\n"
		"                    users from a mailcow or Mailu export, password hashes kept\n"
		"                    ({BLF-CRYPT}, {SHA512-CRYPT}, {SHA256-CRYPT}, {ARGON2ID},\n"
		"                    {SSHA256}, {SSHA512}): CSV/TSV with a header naming email\n"
		"                    (or username), password, quota (bytes), active; or JSON\n"
		"                    lines {\"email\",\"password_hash\",\"quota_bytes\",\"enabled\"}\n"
		"\n"
		"domains\n"
		"  domain add NAME | domain remove NAME | domain list\n"
		"                    local domains (written to every live node)\n"
		"  alias add ALIAS TARGET... | alias remove ALIAS | alias list [DOMAIN]\n"
		"                    ALIAS is list@domain or the catch-all @domain\n"
		"  resolve ADDRESS   final recipients of an address (aliases expanded)\n"
		"  dkim keygen DOMAIN [--selector S] [--algo rsa2048|ed25519]\n"
		"                    a DKIM key (selector \"dkim\" by default) kept in the\n"
		"                    directory of every node; prints the TXT record\n"
		"  dkim show DOMAIN [--selector S] [--private] | dkim remove DOMAIN SELECTOR\n"
		"  dns DOMAIN [--zone] [--host MX-HOST] [--ipv4 A] [--ipv6 A] [--ttl S]\n"
		"                    the records to publish: MX, SPF, DKIM, DMARC, MTA-STS\n"
		"                    (and its policy file), TLS-RPT, SRV, autoconfig, PTR\n"
		"\n"
		"mail\n"
		"  deliver ADDRESS... < MESSAGE\n"
		"                    store a message (read from stdin) for the recipients,\n"
		"                    as the proxy's SMTP receiver does; prints each status\n"
		"  sessions [ADDRESS]\n"
		"                    open IMAP/POP3 sessions (of one user): user, service,\n"
		"                    client, node, proxy, since\n"
		"\n"
		"The cluster is found with --redis or the REDIS_URL environment variable;\n"
		"a user's node is the primary of the user's shard in the shard map, or\n"
		"without a map the live node advertising that shard (--node ADDR names one).\n"
		"Exit status: 0 ok, 1 failed, 2 usage error, 3 needs replication (not yet).\n");
}

/* ---- small synchronous helpers over the loop ------------------------- */

struct wait_reply {
	bool done;
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

/* ---- users, mailboxes, delivery ------------------------------------ */

struct node_ref {
	char addr[128];
	uint32_t nshards;
	int shard;
	char canonical[256];
};

/* Canonical owner address (no +tag) of addr. */
static int canonical_owner(const char *addr, char *out, size_t out_len)
{
	const char *err = NULL;
	if (address_owner(view_cstr(addr), out, out_len, NULL, 0, &err) < 0) {
		fprintf(stderr, "mailctl: %s: %s\n", addr, err);
		return -1;
	}
	return 0;
}

/* Calls fn(arg, id, info) for every live node in the membership (info is
 * its "addr=... shards=..." string) until fn returns non-zero. Returns 0,
 * or 2 when there is no cluster to ask, 1 when Redis cannot be read. */
static int foreach_live_node(struct ctl *c, int (*fn)(void *arg, const char *id, const char *info),
			     void *arg)
{
	if (!c->redis_url) {
		fprintf(stderr, "mailctl: no cluster given: use --redis URL, REDIS_URL or --node\n");
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
	struct wait_reply members;
	int status = 0;
	if (redis_sync(c, rc, &members, "SMEMBERS %s", REGISTRY_NODES_SET) < 0 ||
	    members.type != REDIS_REPLY_ARRAY) {
		fprintf(stderr, "mailctl: cannot read the members from Redis at %s\n", c->redis_url);
		status = 1;
	}
	for (size_t i = 0; status == 0 && i < members.n; i++) {
		if (!members.elems[i])
			continue;
		char key[160];
		registry_member_key("node", members.elems[i], key, sizeof(key));
		struct wait_reply info;
		int stop = 0;
		if (redis_sync(c, rc, &info, "GET %s", key) == 0 && info.type == REDIS_REPLY_STRING)
			stop = fn(arg, members.elems[i], info.str);
		free_wait(&info);
		if (stop)
			break;
	}
	free_wait(&members);
	redis_client_free(&rc);
	return status;
}

static int node_serving(void *arg, const char *id, const char *info)
{
	struct node_ref *ref = arg;
	char spec[256], ns[16];
	UNUSED(id);
	if (registry_info_get(info, "addr", ref->addr, sizeof(ref->addr)) < 0 ||
	    registry_info_get(info, "nshards", ns, sizeof(ns)) < 0 ||
	    registry_info_get(info, "shards", spec, sizeof(spec)) < 0)
		return 0;
	ref->nshards = (uint32_t)strtoul(ns, NULL, 10);
	if (ref->nshards) {
		ref->shard = (int)address_shard(view_cstr(ref->canonical), ref->nshards);
		if (registry_spec_has(spec, (uint32_t)ref->shard))
			return 1;
	}
	ref->addr[0] = '\0'; /* not this one */
	return 0;
}

/* Find the live node serving addr's shard (from the membership in Redis,
 * until the shard map exists), or use --node. */
static int find_node(struct ctl *c, const char *addr, struct node_ref *ref)
{
	memset(ref, 0, sizeof(*ref));
	if (canonical_owner(addr, ref->canonical, sizeof(ref->canonical)) < 0)
		return 2;
	if (c->node) {
		snprintf(ref->addr, sizeof(ref->addr), "%s", c->node);
		return 0;
	}
	if (c->redis_url) {
		/* The shard map, when there is one, says who serves the user. */
		int m = ctl_map_route(c, ref->canonical, ref->addr, sizeof(ref->addr), &ref->shard,
				      &ref->nshards);
		if (m != 0)
			return m == 1 ? 0 : 1;
	}
	int r = foreach_live_node(c, node_serving, ref);
	if (r)
		return r;
	if (!ref->addr[0]) {
		fprintf(stderr, "mailctl: no live node serves the shard of %s\n", ref->canonical);
		return 1;
	}
	return 0;
}

/* One RPC call to addr (ctl_call), waited for. Returns 0 with w->reply
 * set, or 1 after printing why. */
struct call_wait {
	ProtobufCMessage *reply;
};

static int call_node(struct ctl *c, const char *addr, uint16_t method, const ProtobufCMessage *req,
		     uint32_t deadline_ms, struct call_wait *w)
{
	return ctl_call(c, addr, method, req, deadline_ms, &w->reply, NULL, NULL, 0);
}

static void print_user(const struct ctl *c, const Mail__Rpc__UserInfo *u)
{
	if (c->json) {
		printf("{\"user\":\"%s\",\"shard\":%u,\"quota_bytes\":%llu,\"used_bytes\":%llu,"
		       "\"used_messages\":%llu,\"enabled\":%s}\n",
		       u->user, u->shard, (unsigned long long)u->quota_bytes,
		       (unsigned long long)u->used_bytes, (unsigned long long)u->used_messages,
		       u->enabled ? "true" : "false");
		return;
	}
	printf("user %s\n  shard    %u\n  quota    %s%llu\n  used     %llu bytes in %llu messages\n"
	       "  enabled  %s\n",
	       u->user, u->shard, u->quota_bytes ? "" : "unlimited ",
	       (unsigned long long)u->quota_bytes, (unsigned long long)u->used_bytes,
	       (unsigned long long)u->used_messages, u->enabled ? "yes" : "no");
}

static void random_password(char *out, size_t len)
{
	static const char alphabet[] = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
	uint8_t rnd[64];
	FILE *f = fopen("/dev/urandom", "rb");
	if (!f || fread(rnd, 1, sizeof(rnd), f) != sizeof(rnd))
		abort();
	fclose(f);
	for (size_t i = 0; i + 1 < len && i < sizeof(rnd); i++)
		out[i] = alphabet[rnd[i] % (sizeof(alphabet) - 1)];
	out[MIN(len - 1, sizeof(rnd))] = '\0';
}

/* BYTES, or a number with K, M, G or T (powers of 1024). */
static int parse_quota(const char *s, uint64_t *out)
{
	char *end = NULL;
	if (!s[0] || s[0] < '0' || s[0] > '9')
		return -1;
	unsigned long long v = strtoull(s, &end, 10);
	unsigned shift = 0;
	switch (*end) {
	case '\0': break;
	case 'K': case 'k': shift = 10; end++; break;
	case 'M': case 'm': shift = 20; end++; break;
	case 'G': case 'g': shift = 30; end++; break;
	case 'T': case 't': shift = 40; end++; break;
	default: return -1;
	}
	if (*end || v > (UINT64_MAX >> shift))
		return -1;
	*out = (uint64_t)v << shift;
	return 0;
}

/* The password of user add / passwd: 1 given, 0 none (generate one),
 * -1 failed (printed). Prompts only when used interactively. */
static int user_password(enum ctl_pw_source src, const char *arg, char *out, size_t out_len)
{
	if (src == CTL_PW_NONE && !getenv("MAILCTL_PASSWORD") && !(isatty(0) && isatty(1)))
		return 0;
	return ctl_password(src, arg, true, out, out_len);
}

static int live_nodes(struct ctl *c, char addrs[][128], int max);

/* user list [DOMAIN] [--page N]: every live primary, a page at a time. */
static int user_list(struct ctl *c, const char *domain, uint32_t page)
{
	char addrs[64][128];
	int n = live_nodes(c, addrs, 64);
	if (n <= 0)
		return n < 0 ? 2 : 1;
	int status = 0;
	size_t total = 0;
	for (int i = 0; i < n; i++) {
		Mail__Rpc__UserListRequest req = MAIL__RPC__USER_LIST_REQUEST__INIT;
		char next[256] = "";
		req.domain = (char *)(domain ? domain : "");
		req.after_user = next;
		req.limit = page;
		for (;;) {
			ProtobufCMessage *rep;
			if (ctl_call(c, addrs[i], RPC_METHOD_USER_LIST, &req.base, 30000, &rep, NULL,
				     NULL, 0)) {
				status = 1;
				break;
			}
			const Mail__Rpc__UserList *l = (const Mail__Rpc__UserList *)rep;
			for (size_t k = 0; k < l->n_users; k++) {
				const Mail__Rpc__UserInfo *u = l->users[k];
				if (c->json)
					printf("{\"user\":\"%s\",\"shard\":%u,\"quota_bytes\":%llu,"
					       "\"used_bytes\":%llu,\"used_messages\":%llu,\"enabled\":%s,"
					       "\"node\":\"%s\"}\n",
					       u->user, u->shard, (unsigned long long)u->quota_bytes,
					       (unsigned long long)u->used_bytes,
					       (unsigned long long)u->used_messages,
					       u->enabled ? "true" : "false", addrs[i]);
				else
					printf("%-40s shard %5u  %10llu / %-10s %6llu msgs%s\n", u->user,
					       u->shard, (unsigned long long)u->used_bytes,
					       u->quota_bytes ? "" : "unlimited",
					       (unsigned long long)u->used_messages,
					       u->enabled ? "" : "  disabled");
				total++;
			}
			bool more = l->more;
			if (more) {
				req.after_shard = l->next_shard;
				snprintf(next, sizeof(next), "%s", l->next_user);
			}
			ctl_free_reply(&rep);
			if (!more)
				break;
		}
	}
	if (!c->json)
		fprintf(stderr, "%zu users\n", total);
	return status;
}

/* A mailbox in a domain the directory does not know gets no mail. */
static void warn_domain(struct ctl *c, const char *addr, const char *canonical)
{
	Mail__Rpc__UserRequest req = MAIL__RPC__USER_REQUEST__INIT;
	req.user = (char *)canonical;
	ProtobufCMessage *rep;
	if (ctl_call(c, addr, RPC_METHOD_RESOLVE, &req.base, c->timeout_ms, &rep, NULL, NULL, 0))
		return;
	if (((const Mail__Rpc__AliasRequest *)rep)->n_targets == 0)
		fprintf(stderr, "mailctl: warning: %s is not a local domain yet; add it with "
				"`mailctl domain add %s` so that mail for it is taken\n",
			strrchr(canonical, '@') + 1, strrchr(canonical, '@') + 1);
	ctl_free_reply(&rep);
}

static int cmd_user(struct ctl *c, int argc, char **argv)
{
	if (argc >= 1 && strcmp(argv[0], "list") == 0) {
		const char *domain = NULL;
		unsigned long page = 0;
		for (int i = 1; i < argc; i++) {
			char *end = NULL;
			if (strcmp(argv[i], "--page") == 0 && i + 1 < argc) {
				page = strtoul(argv[++i], &end, 10);
				if (*end || page < 1 || page > 1000) {
					fprintf(stderr, "mailctl: --page wants 1..1000\n");
					return 2;
				}
			} else if (!domain && argv[i][0] != '-') {
				domain = argv[i];
			} else {
				fprintf(stderr, "mailctl: user list [DOMAIN] [--page N]\n");
				return 2;
			}
		}
		return user_list(c, domain, (uint32_t)page);
	}
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	const char *sub = argv[0], *addr = argv[1];
	if (strcmp(sub, "remove") == 0)
		sub = "delete";
	struct node_ref ref;
	int r = find_node(c, addr, &ref);
	if (r)
		return r;
	struct call_wait w;
	if (strcmp(sub, "add") == 0) {
		enum ctl_pw_source src = CTL_PW_NONE;
		const char *arg = NULL;
		uint64_t quota = 0;
		for (int i = 2; i < argc; i++) {
			if (strcmp(argv[i], "--password") == 0 && i + 1 < argc) {
				src = CTL_PW_ARG;
				arg = argv[++i];
			} else if (strcmp(argv[i], "--password-stdin") == 0) {
				src = CTL_PW_STDIN;
			} else if (strcmp(argv[i], "--quota") == 0 && i + 1 < argc) {
				if (parse_quota(argv[++i], &quota) < 0) {
					fprintf(stderr, "mailctl: bad quota '%s': bytes, or a number "
							"with K, M, G or T\n", argv[i]);
					return 2;
				}
			} else {
				fprintf(stderr, "mailctl: user add: unknown option %s\n", argv[i]);
				return 2;
			}
		}
		char password[1024], generated[24] = "";
		int got = user_password(src, arg, password, sizeof(password));
		if (got < 0)
			return 2;
		if (got == 0) {
			random_password(generated, sizeof(generated));
			snprintf(password, sizeof(password), "%s", generated);
		}
		Mail__Rpc__UserAddRequest req = MAIL__RPC__USER_ADD_REQUEST__INIT;
		req.user = ref.canonical;
		req.password = password;
		req.quota_bytes = quota;
		/* scrypt runs on the node: give it time. */
		r = call_node(c, ref.addr, RPC_METHOD_USER_ADD, &req.base, 10000, &w);
		explicit_bzero(password, sizeof(password));
		if (r)
			return 1;
		print_user(c, (const Mail__Rpc__UserInfo *)w.reply);
		if (generated[0] && !c->json)
			printf("  password %s\n", generated);
		protobuf_c_message_free_unpacked(w.reply, NULL);
		warn_domain(c, ref.addr, ref.canonical);
		return 0;
	}
	if (strcmp(sub, "show") == 0) {
		Mail__Rpc__UserRequest req = MAIL__RPC__USER_REQUEST__INIT;
		req.user = ref.canonical;
		if (call_node(c, ref.addr, RPC_METHOD_USER_GET, &req.base, c->timeout_ms, &w))
			return 1;
		print_user(c, (const Mail__Rpc__UserInfo *)w.reply);
		protobuf_c_message_free_unpacked(w.reply, NULL);
		return 0;
	}
	if (strcmp(sub, "passwd") == 0 || strcmp(sub, "quota") == 0 ||
	    strcmp(sub, "enable") == 0 || strcmp(sub, "disable") == 0) {
		Mail__Rpc__UserUpdateRequest req = MAIL__RPC__USER_UPDATE_REQUEST__INIT;
		req.user = ref.canonical;
		char generated[24] = "";
		char password[1024] = "";
		if (strcmp(sub, "passwd") == 0) {
			enum ctl_pw_source src = CTL_PW_NONE;
			const char *arg = NULL;
			if (argc == 4 && strcmp(argv[2], "--password") == 0) {
				src = CTL_PW_ARG;
				arg = argv[3];
			} else if (argc == 3 && strcmp(argv[2], "--password-stdin") == 0) {
				src = CTL_PW_STDIN;
			} else if (argc != 2) {
				fprintf(stderr, "mailctl: user passwd ADDRESS [--password-stdin]\n");
				return 2;
			}
			int got = user_password(src, arg, password, sizeof(password));
			if (got < 0)
				return 2;
			if (got == 0) {
				random_password(generated, sizeof(generated));
				snprintf(password, sizeof(password), "%s", generated);
			}
			req.set_password = true;
			req.password = password;
		} else if (strcmp(sub, "quota") == 0) {
			if (argc != 3 || parse_quota(argv[2], &req.quota_bytes) < 0) {
				fprintf(stderr, "mailctl: user quota ADDRESS BYTES (or a number with K, "
						"M, G or T)\n");
				return 2;
			}
			req.set_quota = true;
		} else {
			req.enabled = strcmp(sub, "enable") == 0 ? 1 : 2;
		}
		r = call_node(c, ref.addr, RPC_METHOD_USER_UPDATE, &req.base, 10000, &w);
		explicit_bzero(password, sizeof(password));
		if (r)
			return 1;
		print_user(c, (const Mail__Rpc__UserInfo *)w.reply);
		if (generated[0] && !c->json)
			printf("  password %s\n", generated);
		protobuf_c_message_free_unpacked(w.reply, NULL);
		return 0;
	}
	if (strcmp(sub, "delete") == 0) {
		Mail__Rpc__UserRequest req = MAIL__RPC__USER_REQUEST__INIT;
		req.user = ref.canonical;
		if (call_node(c, ref.addr, RPC_METHOD_USER_DELETE, &req.base, 60000, &w))
			return 1;
		if (!c->json)
			printf("deleted %s\n", ref.canonical);
		else
			printf("{\"deleted\":\"%s\"}\n", ref.canonical);
		return 0;
	}
	fprintf(stderr, "mailctl: unknown user command '%s'\n", sub);
	return 2;
}

/* Check a password the way the proxy will (AUTH RPC to the user's node). */
static int cmd_auth(struct ctl *c, int argc, char **argv)
{
	if (argc < 1) {
		usage(stderr);
		return 2;
	}
	struct node_ref ref;
	int r = find_node(c, argv[0], &ref);
	if (r)
		return r;
	char line[1024];
	const char *password = getenv("MAILCTL_PASSWORD");
	if (!password) {
		if (!fgets(line, sizeof(line), stdin)) {
			fprintf(stderr, "mailctl: auth: give the password on stdin or in MAILCTL_PASSWORD\n");
			return 2;
		}
		line[strcspn(line, "\r\n")] = '\0';
		password = line;
	}
	Mail__Rpc__AuthRequest req = MAIL__RPC__AUTH_REQUEST__INIT;
	req.user = argv[0];
	req.password = (char *)password;
	req.protocol = MAIL__RPC__PROTOCOL__PROTOCOL_IMAP;
	req.client_address = "mailctl";
	struct call_wait w;
	uint64_t t0 = time_mono_ns();
	r = call_node(c, ref.addr, RPC_METHOD_AUTH, &req.base, 10000, &w);
	explicit_bzero(line, sizeof(line));
	if (r)
		return 1;
	const Mail__Rpc__AuthReply *rep = (const Mail__Rpc__AuthReply *)w.reply;
	printf("%s %s (%.0f ms)\n", rep->ok ? "ok" : "denied", rep->ok ? rep->user : argv[0],
	       (double)(time_mono_ns() - t0) / 1e6);
	int status = rep->ok ? 0 : 1;
	protobuf_c_message_free_unpacked(w.reply, NULL);
	return status;
}

struct addr_list {
	char (*addrs)[128];
	int n, max;
};

static int collect_addr(void *arg, const char *id, const char *info)
{
	struct addr_list *l = arg;
	UNUSED(id);
	if (l->n < l->max && registry_info_get(info, "addr", l->addrs[l->n], 128) == 0)
		l->n++;
	return l->n >= l->max;
}

/* Addresses of every live node (or just --node). Returns the count, -1
 * when there is no cluster to ask. */
static int live_nodes(struct ctl *c, char addrs[][128], int max)
{
	if (c->node) {
		snprintf(addrs[0], 128, "%s", c->node);
		return 1;
	}
	struct addr_list l = { .addrs = addrs, .max = max };
	if (foreach_live_node(c, collect_addr, &l) == 2)
		return -1;
	if (l.n == 0)
		fprintf(stderr, "mailctl: no live node found\n");
	return l.n;
}

/* Directory writes go to every live node (each keeps a copy until the
 * directory is replicated); reads come from the first. */
/* alias list [DOMAIN] from one node (every node has the directory). */
static int alias_list(struct ctl *c, const char *addr, const char *domain)
{
	Mail__Rpc__DomainRequest req = MAIL__RPC__DOMAIN_REQUEST__INIT;
	req.name = (char *)(domain ? domain : "");
	ProtobufCMessage *rep;
	if (ctl_call(c, addr, RPC_METHOD_ALIAS_LIST, &req.base, c->timeout_ms, &rep, NULL, NULL, 0))
		return 1;
	const Mail__Rpc__AliasList *l = (const Mail__Rpc__AliasList *)rep;
	for (size_t i = 0; i < l->n_aliases; i++) {
		const Mail__Rpc__AliasRequest *a = l->aliases[i];
		if (c->json) {
			printf("{\"alias\":\"");
			ctl_json_str(stdout, a->alias);
			printf("\",\"targets\":[");
			for (size_t k = 0; k < a->n_targets; k++) {
				printf("%s\"", k ? "," : "");
				ctl_json_str(stdout, a->targets[k]);
				printf("\"");
			}
			printf("]}\n");
		} else {
			printf("%s ->", a->alias);
			for (size_t k = 0; k < a->n_targets; k++)
				printf(" %s", a->targets[k]);
			printf("\n");
		}
	}
	ctl_free_reply(&rep);
	return 0;
}

static int cmd_directory(struct ctl *c, const char *what, int argc, char **argv)
{
	char addrs[64][128];
	/* The names for the same commands. */
	if (argc >= 1 && strcmp(argv[0], "remove") == 0)
		argv[0] = "delete";
	if (argc >= 1 && strcmp(what, "alias") == 0 && strcmp(argv[0], "add") == 0)
		argv[0] = "set";
	int n = live_nodes(c, addrs, 64);
	if (n <= 0)
		return n < 0 ? 2 : 1;
	struct call_wait w;
	int status = 0;
	if (strcmp(what, "alias") == 0 && argc >= 1 && argc <= 2 && strcmp(argv[0], "list") == 0)
		return alias_list(c, addrs[0], argc == 2 ? argv[1] : NULL);
	if (strcmp(what, "domain") == 0 && argc >= 1 &&
	    (strcmp(argv[0], "list") == 0 || (strcmp(argv[0], "add") == 0 && argc >= 2))) {
		bool add = strcmp(argv[0], "add") == 0;
		Mail__Rpc__DomainRequest req = MAIL__RPC__DOMAIN_REQUEST__INIT;
		req.name = add ? argv[1] : "";
		for (int i = 0; i < (add ? n : 1); i++) {
			if (call_node(c, addrs[i], add ? RPC_METHOD_DOMAIN_ADD : RPC_METHOD_DOMAIN_LIST,
				      &req.base, c->timeout_ms, &w)) {
				status = 1;
				continue;
			}
			const Mail__Rpc__DomainList *l = (const Mail__Rpc__DomainList *)w.reply;
			if (i == 0)
				for (size_t k = 0; k < l->n_names; k++)
					printf("%s\n", l->names[k]);
			protobuf_c_message_free_unpacked(w.reply, NULL);
		}
		return status;
	}
	if ((strcmp(what, "domain") == 0 || strcmp(what, "alias") == 0) && argc == 2 &&
	    strcmp(argv[0], "delete") == 0) {
		bool domain = strcmp(what, "domain") == 0;
		Mail__Rpc__DomainRequest dreq = MAIL__RPC__DOMAIN_REQUEST__INIT;
		Mail__Rpc__AliasRequest areq = MAIL__RPC__ALIAS_REQUEST__INIT;
		dreq.name = argv[1];
		areq.alias = argv[1];
		for (int i = 0; i < n; i++) {
			if (call_node(c, addrs[i],
				      domain ? RPC_METHOD_DOMAIN_DELETE : RPC_METHOD_ALIAS_DELETE,
				      domain ? &dreq.base : &areq.base, c->timeout_ms, &w)) {
				status = 1;
				continue;
			}
			if (w.reply)
				protobuf_c_message_free_unpacked(w.reply, NULL);
		}
		if (status == 0)
			printf("deleted %s\n", argv[1]);
		return status;
	}
	if (strcmp(what, "alias") == 0 && argc >= 3 && strcmp(argv[0], "set") == 0) {
		Mail__Rpc__AliasRequest req = MAIL__RPC__ALIAS_REQUEST__INIT;
		req.alias = argv[1];
		req.n_targets = (size_t)(argc - 2);
		req.targets = argv + 2;
		for (int i = 0; i < n; i++) {
			if (call_node(c, addrs[i], RPC_METHOD_ALIAS_SET, &req.base, c->timeout_ms, &w)) {
				status = 1;
				continue;
			}
			const Mail__Rpc__AliasRequest *a = (const Mail__Rpc__AliasRequest *)w.reply;
			if (i == 0) {
				printf("%s ->", a->alias);
				for (size_t k = 0; k < a->n_targets; k++)
					printf(" %s", a->targets[k]);
				printf("\n");
			}
			protobuf_c_message_free_unpacked(w.reply, NULL);
		}
		return status;
	}
	if (strcmp(what, "resolve") == 0 && argc >= 1) {
		Mail__Rpc__UserRequest req = MAIL__RPC__USER_REQUEST__INIT;
		req.user = argv[0];
		if (call_node(c, addrs[0], RPC_METHOD_RESOLVE, &req.base, c->timeout_ms, &w))
			return 1;
		const Mail__Rpc__AliasRequest *a = (const Mail__Rpc__AliasRequest *)w.reply;
		for (size_t k = 0; k < a->n_targets; k++)
			printf("%s\n", a->targets[k]);
		if (a->n_targets == 0) {
			fprintf(stderr, "mailctl: %s: domain not local\n", argv[0]);
			status = 1;
		}
		protobuf_c_message_free_unpacked(w.reply, NULL);
		return status;
	}
	usage(stderr);
	return 2;
}

static int cmd_mailbox(struct ctl *c, int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[0], "list") != 0) {
		usage(stderr);
		return 2;
	}
	struct node_ref ref;
	int r = find_node(c, argv[1], &ref);
	if (r)
		return r;
	Mail__Rpc__UserRequest req = MAIL__RPC__USER_REQUEST__INIT;
	req.user = ref.canonical;
	struct call_wait w;
	if (call_node(c, ref.addr, RPC_METHOD_MAILBOX_LIST, &req.base, c->timeout_ms, &w))
		return 1;
	const Mail__Rpc__MailboxList *l = (const Mail__Rpc__MailboxList *)w.reply;
	if (!c->json)
		printf("%-24s %10s %8s %8s %8s %10s\n", "mailbox", "uidvalidity", "uidnext",
		       "messages", "unseen", "bytes");
	for (size_t i = 0; i < l->n_mailboxes; i++) {
		const Mail__Rpc__MailboxEntry *e = l->mailboxes[i];
		if (c->json)
			printf("{\"name\":\"%s\",\"uidvalidity\":%u,\"uidnext\":%u,\"messages\":%u,"
			       "\"unseen\":%u,\"size\":%llu,\"highestmodseq\":%llu}\n",
			       e->name, e->uidvalidity, e->uidnext, e->messages, e->unseen,
			       (unsigned long long)e->size, (unsigned long long)e->highestmodseq);
		else
			printf("%-24s %10u %8u %8u %8u %10llu\n", e->name, e->uidvalidity, e->uidnext,
			       e->messages, e->unseen, (unsigned long long)e->size);
	}
	protobuf_c_message_free_unpacked(w.reply, NULL);
	return 0;
}

/* Where rcpt is stored: its node and shard (ref). Returns 0, or prints
 * the recipient's failure and returns 1 (2: usage). */
static int rcpt_ref(struct ctl *c, const char *asked, const char *rcpt, struct node_ref *ref)
{
	int r = find_node(c, rcpt, ref);
	if (r)
		return r;
	if (c->node && !ref->nshards) {
		/* Named node, no membership to read the shard count from: the
		 * node says which shard the user is on. */
		Mail__Rpc__UserRequest uq = MAIL__RPC__USER_REQUEST__INIT;
		uq.user = ref->canonical;
		struct call_wait uw;
		if (call_node(c, ref->addr, RPC_METHOD_USER_GET, &uq.base, c->timeout_ms, &uw) == 0) {
			ref->shard = (int)((const Mail__Rpc__UserInfo *)uw.reply)->shard;
			protobuf_c_message_free_unpacked(uw.reply, NULL);
		} else {
			printf("%s: 550 5.1.1 no such mailbox\n", asked);
			return 1;
		}
	}
	return 0;
}

struct final_rcpt {
	const char *asked; /* as given on the command line */
	char *rcpt;        /* after alias expansion */
	struct node_ref ref;
	bool sent;
};

/* One Deliver for every final recipient on the same node and shard (as
 * the SMTP receiver does): the node collapses duplicates. */
static int deliver_group(struct ctl *c, struct final_rcpt *f, size_t n, size_t first,
			 const struct buf *body)
{
	char **rcpts = xcalloc(n, sizeof(char *));
	size_t *idx = xcalloc(n, sizeof(size_t));
	size_t k = 0;
	for (size_t i = first; i < n; i++) {
		if (f[i].sent || f[i].ref.shard != f[first].ref.shard ||
		    strcmp(f[i].ref.addr, f[first].ref.addr) != 0)
			continue;
		f[i].sent = true;
		idx[k] = i;
		rcpts[k++] = f[i].rcpt;
	}
	Mail__Rpc__DeliverRequest req = MAIL__RPC__DELIVER_REQUEST__INIT;
	req.shard = (uint32_t)f[first].ref.shard;
	req.sender = "";
	req.n_recipients = k;
	req.recipients = rcpts;
	req.body.data = body->data;
	req.body.len = body->len;
	req.received_ms = time_real_ms();
	struct call_wait w;
	int status = 0;
	if (call_node(c, f[first].ref.addr, RPC_METHOD_DELIVER, &req.base, 30000, &w)) {
		status = 1;
		goto out;
	}
	const Mail__Rpc__DeliverReply *rep = (const Mail__Rpc__DeliverReply *)w.reply;
	for (size_t j = 0; j < rep->n_statuses && j < k; j++) {
		const struct final_rcpt *fr = &f[idx[j]];
		if (strcmp(fr->asked, rep->statuses[j]->recipient) == 0)
			printf("%s: %u %s\n", fr->asked, rep->statuses[j]->code, rep->statuses[j]->text);
		else
			printf("%s (%s): %u %s\n", fr->asked, rep->statuses[j]->recipient,
			       rep->statuses[j]->code, rep->statuses[j]->text);
		if (rep->statuses[j]->code / 100 != 2)
			status = 1;
	}
	protobuf_c_message_free_unpacked(w.reply, NULL);
out:
	free(rcpts);
	free(idx);
	return status;
}

static int cmd_deliver(struct ctl *c, int argc, char **argv)
{
	if (argc < 1) {
		usage(stderr);
		return 2;
	}
	struct buf body;
	buf_init(&body, 64u << 20);
	uint8_t tmp[65536];
	size_t n;
	while ((n = fread(tmp, 1, sizeof(tmp), stdin)) > 0) {
		if (buf_append(&body, tmp, n) < 0) {
			fprintf(stderr, "mailctl: message larger than 64 MiB\n");
			buf_cleanup(&body);
			return 2;
		}
	}
	/* Each recipient is resolved (aliases) by a node; each final
	 * recipient is then stored by its own node, on its own shard. */
	char addrs[1][128];
	int nlive = live_nodes(c, addrs, 1);
	int status = 0;
	struct final_rcpt *fin = NULL;
	size_t nfin = 0, capfin = 0;
	for (int i = 0; i < argc; i++) {
		char **finals = NULL;
		size_t nfinal = 0;
		if (nlive > 0) {
			Mail__Rpc__UserRequest rq = MAIL__RPC__USER_REQUEST__INIT;
			rq.user = argv[i];
			struct call_wait rw;
			if (call_node(c, addrs[0], RPC_METHOD_RESOLVE, &rq.base, c->timeout_ms, &rw) == 0) {
				const Mail__Rpc__AliasRequest *a = (const Mail__Rpc__AliasRequest *)rw.reply;
				nfinal = a->n_targets;
				finals = xcalloc(nfinal + 1, sizeof(char *));
				for (size_t k = 0; k < nfinal; k++)
					finals[k] = xstrdup(a->targets[k]);
				protobuf_c_message_free_unpacked(rw.reply, NULL);
			}
		}
		if (nfinal == 0) {
			/* Domain not in the directory (or no answer): as given. */
			free(finals);
			finals = xcalloc(2, sizeof(char *));
			finals[0] = xstrdup(argv[i]);
			nfinal = 1;
		}
		for (size_t f = 0; f < nfinal; f++) {
			struct node_ref ref;
			int r = rcpt_ref(c, argv[i], finals[f], &ref);
			if (r) {
				status = status ? status : r;
				free(finals[f]);
				continue;
			}
			if (nfin == capfin) {
				capfin = capfin ? 2 * capfin : 8;
				fin = xrealloc(fin, capfin * sizeof(*fin));
			}
			fin[nfin++] = (struct final_rcpt){ .asked = argv[i], .rcpt = finals[f],
							   .ref = ref };
		}
		free(finals);
	}
	for (size_t i = 0; i < nfin; i++)
		if (!fin[i].sent && deliver_group(c, fin, nfin, i, &body))
			status = 1;
	for (size_t i = 0; i < nfin; i++)
		free(fin[i].rcpt);
	free(fin);
	buf_cleanup(&body);
	return status;
}

/* ---- sessions (registered by the proxies, see proxy/limits.h) ------- */

struct scan_wait {
	bool done, ok;
	char cursor[32];
	char **keys;
	size_t n, cap;
};

static void on_scan(struct redis_client *rc, redisReply *r, void *arg)
{
	struct scan_wait *w = arg;
	UNUSED(rc);
	w->done = true;
	if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY)
		return;
	snprintf(w->cursor, sizeof(w->cursor), "%.*s", (int)r->element[0]->len, r->element[0]->str);
	redisReply *ks = r->element[1];
	for (size_t i = 0; i < ks->elements; i++) {
		if (ks->element[i]->type != REDIS_REPLY_STRING)
			continue;
		if (w->n == w->cap) {
			w->cap = w->cap ? 2 * w->cap : 64;
			w->keys = xrealloc(w->keys, w->cap * sizeof(*w->keys));
		}
		w->keys[w->n++] = strndup(ks->element[i]->str, ks->element[i]->len);
	}
	w->ok = true;
}

static bool scan_done(void *arg)
{
	return ((struct scan_wait *)arg)->done;
}

struct session_row {
	char *f[8]; /* in session_fields order */
};
static const char *const session_fields[] = { "user", "service", "client", "port",
					      "node", "proxy", "since", "sid" };

static int cmp_session(const void *a, const void *b)
{
	const struct session_row *x = a, *y = b;
	int r = strcmp(x->f[0], y->f[0]);
	return r ? r : strcmp(x->f[6], y->f[6]);
}

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", *s);
		else
			putchar(*s);
	}
	putchar('"');
}

static int cmd_sessions(struct ctl *c, int argc, char **argv)
{
	char want[256] = "";
	if (argc > 1) {
		usage(stderr);
		return 2;
	}
	if (argc == 1 && canonical_owner(argv[0], want, sizeof(want)) < 0)
		return 2;
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
	struct scan_wait w = { .cursor = "0" };
	int status = 0;
	for (int round = 0; round < 100000; round++) {
		w.done = w.ok = false;
		redis_command(rc, on_scan, &w, "SCAN %s MATCH mail:session:* COUNT 1000", w.cursor);
		if (loop_run_until(c->loop, scan_done, &w, c->timeout_ms + 1000) < 0 || !w.ok) {
			fprintf(stderr, "mailctl: cannot read the sessions from Redis at %s\n",
				c->redis_url);
			status = 1;
			break;
		}
		if (strcmp(w.cursor, "0") == 0)
			break;
	}
	struct session_row *rows = xcalloc(w.n ? w.n : 1, sizeof(*rows));
	size_t nrows = 0;
	for (size_t i = 0; status == 0 && i < w.n; i++) {
		struct wait_reply h;
		if (redis_sync(c, rc, &h, "HGETALL %s", w.keys[i]) < 0 || h.type != REDIS_REPLY_ARRAY) {
			free_wait(&h);
			continue; /* gone meanwhile */
		}
		struct session_row row = { { 0 } };
		for (size_t j = 0; j + 1 < h.n; j += 2)
			for (size_t k = 0; k < ARRAY_LEN(session_fields); k++)
				if (h.elems[j] && h.elems[j + 1] && !row.f[k] &&
				    strcmp(h.elems[j], session_fields[k]) == 0)
					row.f[k] = xstrdup(h.elems[j + 1]);
		for (size_t k = 0; k < ARRAY_LEN(session_fields); k++)
			if (!row.f[k])
				row.f[k] = xstrdup("");
		free_wait(&h);
		if (!row.f[0][0] || (want[0] && strcmp(row.f[0], want) != 0)) {
			for (size_t k = 0; k < ARRAY_LEN(session_fields); k++)
				free(row.f[k]);
			continue;
		}
		rows[nrows++] = row;
	}
	qsort(rows, nrows, sizeof(*rows), cmp_session);
	uint64_t now = time_real_ms() / 1000;
	if (c->json)
		printf("{\"sessions\":[");
	else if (status == 0)
		printf("sessions: %zu\n", nrows);
	for (size_t i = 0; status == 0 && i < nrows; i++) {
		struct session_row *r = &rows[i];
		uint64_t since = strtoull(r->f[6], NULL, 10);
		if (c->json) {
			printf("%s{", i ? "," : "");
			for (size_t k = 0; k < ARRAY_LEN(session_fields); k++) {
				printf("%s\"%s\":", k ? "," : "", session_fields[k]);
				json_str(r->f[k]);
			}
			printf("}");
		} else {
			bool v6 = strchr(r->f[2], ':') != NULL;
			printf("  %-28s %-6s %s%s%s:%s node=%s proxy=%s age=%" PRIu64 "s\n",
			       r->f[0], r->f[1], v6 ? "[" : "", r->f[2], v6 ? "]" : "", r->f[3],
			       r->f[4], r->f[5], now > since ? now - since : 0);
		}
	}
	if (c->json)
		printf("]}\n");
	fflush(stdout);
	for (size_t i = 0; i < nrows; i++)
		for (size_t k = 0; k < ARRAY_LEN(session_fields); k++)
			free(rows[i].f[k]);
	free(rows);
	for (size_t i = 0; i < w.n; i++)
		free(w.keys[i]);
	free(w.keys);
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
		{ "node", required_argument, 0, 'n' },
		{ "help", no_argument, 0, 'h' },
		{ 0, 0, 0, 0 },
	};
	int ch;
	while ((ch = getopt_long(argc, argv, "+h", lo, NULL)) != -1) {
		switch (ch) {
		case 'r': c.redis_url = optarg; break;
		case 't': c.timeout_ms = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'j': c.json = true; break;
		case 'n': c.node = optarg; break;
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
	} else if (strcmp(cmd, "user") == 0) {
		rc = cmd_user(&c, argc - optind - 1, argv + optind + 1);
	} else if (strcmp(cmd, "domain") == 0 || strcmp(cmd, "alias") == 0 ||
		   strcmp(cmd, "resolve") == 0) {
		rc = cmd_directory(&c, cmd, argc - optind - 1, argv + optind + 1);
	} else if (strcmp(cmd, "auth") == 0) {
		rc = cmd_auth(&c, argc - optind - 1, argv + optind + 1);
	} else if (strcmp(cmd, "mailbox") == 0) {
		rc = cmd_mailbox(&c, argc - optind - 1, argv + optind + 1);
	} else if (strcmp(cmd, "deliver") == 0) {
		rc = cmd_deliver(&c, argc - optind - 1, argv + optind + 1);
	} else if (strcmp(cmd, "sessions") == 0) {
		rc = cmd_sessions(&c, argc - optind - 1, argv + optind + 1);
	} else if (strcmp(cmd, "cluster") == 0) {
		rc = ctl_cmd_cluster(&c, argc - optind - 1, argv + optind + 1);
	} else if (strcmp(cmd, "node") == 0) {
		rc = ctl_cmd_node(&c, argc - optind - 1, argv + optind + 1);
	} else if (strcmp(cmd, "dkim") == 0) {
		rc = ctl_cmd_dkim(&c, argc - optind - 1, argv + optind + 1);
	} else if (strcmp(cmd, "dns") == 0) {
		rc = ctl_cmd_dns(&c, argc - optind - 1, argv + optind + 1);
	} else if (strcmp(cmd, "import") == 0) {
		rc = ctl_cmd_import(&c, argc - optind - 1, argv + optind + 1);
	} else {
		fprintf(stderr, "mailctl: unknown command '%s'\n", cmd);
		usage(stderr);
		rc = 2;
	}
	loop_free(&c.loop);
	return rc;
}
