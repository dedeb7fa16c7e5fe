#include "node/node.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/mem.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/loop.h"
#include "common/redis.h"
#include "proto/registry.h"
#include "proto/rpc.h"
#include "common/address.h"
#include "storage/directory.h"
#include "storage/pwhash.h"
#include "storage/store.h"
#include "node/imap_session.h"
#include "node/pop3_session.h"

const struct config_def node_config_defs[] = {
	{ "node.id", CONFIG_STRING, "node1", 0, 0, "this node's unique id in the cluster" },
	{ "rpc.listen", CONFIG_ADDR, "127.0.0.1:7001", 0, 0, "RPC listen address" },
	{ "rpc.advertise", CONFIG_ADDR, NULL, 0, 0,
	  "address other members use to reach this node (default: rpc.listen)" },
	{ "rpc.tls", CONFIG_BOOL, "false", 0, 0,
	  "serve RPC over TLS with tls.cert (mutual when tls.client_ca is set)" },
	{ "rpc.max_frame", CONFIG_SIZE, "128M", 1024, 1073741824,
	  "largest RPC frame accepted (a message plus its envelope)" },
	{ "redis.url", CONFIG_STRING, NULL, 0, 0,
	  "Redis for membership (redis://host:port/db); unset: standalone" },
	{ "heartbeat.interval", CONFIG_DURATION, "1s", 100, 60000, "membership refresh period" },
	{ "heartbeat.ttl", CONFIG_DURATION, "5s", 300, 600000,
	  "membership key lifetime: a node silent this long counts as down" },
	{ "data.dir", CONFIG_STRING, "./data", 0, 0, "where shards live (DATA/shards/NNNN)" },
	{ "shards.count", CONFIG_INT, "256", 1, 65536,
	  "virtual shards of the cluster (fixed at cluster init; every member must agree)" },
	{ "shards.local", CONFIG_STRING, "all", 0, 0,
	  "shards this node owns when there is no shard map: 'all', 'none' or ranges "
	  "'0-84,200' (hosts of a cluster: 'none', then mailctl cluster init)" },
	{ "shardmap.refresh", CONFIG_DURATION, "5s", 100, 600000,
	  "re-read the shard map this often (changes are also published)" },
	{ "storage.cache", CONFIG_SIZE, "256M", 1048576, 1099511627776,
	  "block cache shared by all shards" },
	{ "storage.max_message", CONFIG_SIZE, "100M", 1024, 1073741824,
	  "largest message stored (IMAP APPENDLIMIT; keep >= the proxy's smtp.max_size)" },
	{ "delivery.dedupe_ttl", CONFIG_DURATION, "7d", 60000, 31536000000LL,
	  "how long a delivery id is remembered (a retry within it is not stored twice)" },
	{ "imap.listen", CONFIG_ADDR, NULL, 0, 0,
	  "IMAP listener (plaintext, for loopback and tests; clients come through the proxy)" },
	{ "pop3.listen", CONFIG_ADDR, NULL, 0, 0,
	  "POP3 listener (plaintext, for loopback and tests; clients come through the proxy)" },
	{ "storage.write_buffers", CONFIG_SIZE, "512M", 4194304, 1099511627776,
	  "memtable budget shared by all shards of this node" },
};
const size_t node_config_defs_len = ARRAY_LEN(node_config_defs);

/* ---- the node's storage (shared by all loop threads) ------------------ */

struct node_store {
	struct storage *st;
	struct shard *dir; /* domains and aliases */
	uint32_t nshards;
	/* Which shards this node is primary of, and their epochs: written by
	 * node_store_apply (one at a time, on a worker), read by every loop
	 * thread with atomic loads. A shard is opened before it is marked
	 * owned, and stays open when it stops being owned (sessions may still
	 * hold it); it is only refused from then on. */
	uint8_t *owned;     /* nshards bytes */
	uint64_t *epoch;    /* nshards; 0 without a shard map */
	char id[REGISTRY_ID_MAX];
	char local_spec[256]; /* shards.local: the fallback without a map */
	char shards_spec[256]; /* served now (logs) */
	bool from_map;
	struct metrics_counter *m_handoff_imap, *m_handoff_pop3, *m_not_primary;
	uint64_t max_message; /* storage.max_message */
};

/* "all", "none" or "a-b,c,...". */
static int parse_shards(const char *spec, uint32_t n, uint8_t *owned, const char **error_r)
{
	if (strcmp(spec, "all") == 0) {
		memset(owned, 1, n);
		return 0;
	}
	if (strcmp(spec, "none") == 0) {
		memset(owned, 0, n);
		return 0;
	}
	memset(owned, 0, n);
	const char *p = spec;
	while (*p) {
		char *end;
		unsigned long a = strtoul(p, &end, 10), b = a;
		if (end == p)
			goto bad;
		if (*end == '-') {
			p = end + 1;
			b = strtoul(p, &end, 10);
			if (end == p)
				goto bad;
		}
		if (a > b || b >= n)
			goto bad;
		for (unsigned long i = a; i <= b; i++)
			owned[i] = 1;
		p = end;
		if (*p == ',')
			p++;
		else if (*p)
			goto bad;
	}
	return 0;
bad:
	*error_r = "shards.local: want 'all', 'none' or ranges like '0-84,200' below shards.count";
	return -1;
}

/* The wanted ownership (map or fallback) into want/epochs and the spec to
 * advertise. */
static int wanted(const struct node_store *ns, const struct shardmap *m, uint8_t *want,
		  uint64_t *epochs, char *spec, size_t spec_len, const char **error_r)
{
	if (!m) {
		memset(epochs, 0, ns->nshards * sizeof(*epochs));
		snprintf(spec, spec_len, "%s", ns->local_spec);
		return parse_shards(ns->local_spec, ns->nshards, want, error_r);
	}
	if (m->count != ns->nshards) {
		*error_r = "the shard map's count differs from the shards this node serves "
			   "(restart the node to follow the map)";
		return -1;
	}
	int me = shardmap_id_index(m, ns->id);
	for (uint32_t i = 0; i < ns->nshards; i++) {
		want[i] = me >= 0 && m->primary[i] == me;
		epochs[i] = want[i] ? m->epoch[i] : 0;
	}
	if (shardmap_spec_of(m, ns->id, spec, spec_len) < 0)
		snprintf(spec, spec_len, "map");
	return 0;
}

int node_store_apply(struct node_store *ns, const struct shardmap *m, int *changed_r,
		     const char **error_r)
{
	uint8_t *want = xcalloc(ns->nshards, 1);
	uint64_t *epochs = xcalloc(ns->nshards, sizeof(*epochs));
	char spec[256];
	int rc = wanted(ns, m, want, epochs, spec, sizeof(spec), error_r);
	int changed = 0;
	for (uint32_t i = 0; rc == 0 && i < ns->nshards; i++) {
		uint8_t had = __atomic_load_n(&ns->owned[i], __ATOMIC_ACQUIRE);
		if (want[i] && !had && !storage_shard_open(ns->st, i, true, error_r)) {
			rc = -1;
			break;
		}
		__atomic_store_n(&ns->epoch[i], epochs[i], __ATOMIC_RELEASE);
		if (want[i] != had) {
			__atomic_store_n(&ns->owned[i], want[i], __ATOMIC_RELEASE);
			changed++;
		}
	}
	if (rc == 0) {
		snprintf(ns->shards_spec, sizeof(ns->shards_spec), "%s", spec);
		__atomic_store_n(&ns->from_map, m != NULL, __ATOMIC_RELAXED);
	}
	free(want);
	free(epochs);
	if (changed_r)
		*changed_r = changed;
	return rc;
}

const char *node_store_spec(const struct node_store *ns) { return ns->shards_spec; }
uint32_t node_store_nshards(const struct node_store *ns) { return ns->nshards; }

struct node_store *node_store_open(const struct config *cfg, const char **error_r)
{
	struct node_store *ns = xcalloc(1, sizeof(*ns));
	ns->nshards = (uint32_t)config_get_int(cfg, "shards.count");
	snprintf(ns->id, sizeof(ns->id), "%s", config_get_str(cfg, "node.id"));
	snprintf(ns->local_spec, sizeof(ns->local_spec), "%s", config_get_str(cfg, "shards.local"));
	if (!registry_id_valid(ns->id)) {
		*error_r = "node.id: 1-63 characters of A-Z a-z 0-9 . _ -";
		goto fail;
	}
	/* The shard map, when the cluster has one, says which shards are
	 * ours (and how many there are); shards.local is the fallback. */
	struct shardmap *map = NULL;
	const char *url = config_get_str(cfg, "redis.url");
	if (url) {
		const char *why = NULL;
		int r = node_shardmap_read(url, 2000, &map, &why);
		if (r < 0)
			LOG_WARN("node", 0, "shardmap_unreadable",
				 "reason=\"%s\" fallback=shards.local:%s", why, ns->local_spec);
		else if (r == 1 && map->count != ns->nshards) {
			LOG_WARN("node", 0, "shardmap_count", "map=%u shards.count=%u using=map",
				 map->count, ns->nshards);
			ns->nshards = map->count;
		}
	}
	ns->owned = xcalloc(ns->nshards, 1);
	ns->epoch = xcalloc(ns->nshards, sizeof(*ns->epoch));
	uint8_t *want = xcalloc(ns->nshards, 1);
	int wr = wanted(ns, map, want, ns->epoch, ns->shards_spec, sizeof(ns->shards_spec), error_r);
	ns->from_map = map != NULL;
	if (map) {
		int me = shardmap_id_index(map, ns->id);
		LOG_INFO("node", 0, "shardmap", "count=%u epoch=%llu mine=%s", map->count,
			 (unsigned long long)map->max_epoch, me >= 0 ? ns->shards_spec : "none");
	}
	shardmap_free(&map);
	if (wr < 0) {
		free(want);
		goto fail;
	}
	unsigned owned = 1; /* the directory shard */
	for (uint32_t i = 0; i < ns->nshards; i++)
		owned += want[i];
	struct storage_options so = {
		.dir = config_get_str(cfg, "data.dir"),
		.block_cache_bytes = config_get_size(cfg, "storage.cache"),
		.max_message_bytes = config_get_size(cfg, "storage.max_message"),
		.write_buffer_budget = config_get_size(cfg, "storage.write_buffers"),
		.expected_shards = owned,
	};
	ns->max_message = so.max_message_bytes;
	ns->st = storage_open(&so, error_r);
	if (!ns->st) {
		free(want);
		goto fail;
	}
	/* Opening a shard reads its files: done once at start, before any
	 * loop runs. */
	for (uint32_t i = 0; i < ns->nshards; i++) {
		if (want[i] && !storage_shard_open(ns->st, i, true, error_r)) {
			free(want);
			goto fail;
		}
		ns->owned[i] = want[i];
	}
	free(want);
	ns->dir = storage_shard_open(ns->st, DIRECTORY_SHARD, true, error_r);
	if (!ns->dir)
		goto fail;
	ns->m_handoff_imap = metrics_counter_new("node_sessions_handed_over_total",
						 "Sessions handed over by a proxy",
						 "protocol=\"imap\"");
	ns->m_handoff_pop3 = metrics_counter_new("node_sessions_handed_over_total",
						 "Sessions handed over by a proxy",
						 "protocol=\"pop3\"");
	ns->m_not_primary = metrics_counter_new("node_not_primary_total",
						"Requests refused for a shard this node is not primary of",
						NULL);
	return ns;
fail:
	node_store_close(&ns);
	return NULL;
}

void node_store_close(struct node_store **nsp)
{
	struct node_store *ns = *nsp;
	if (!ns)
		return;
	*nsp = NULL;
	storage_close(&ns->st);
	free(ns->owned);
	free(ns->epoch);
	free(ns);
}

/* ---- the per-thread service -------------------------------------------- */

struct node {
	struct loop *loop;
	struct node_store *ns;
	char *id;
	uint64_t started_ms;
	struct rpc_server *rpc;
	struct listener *pop3;
	struct listener *imap;
	struct redis_client *redis;
	struct heartbeat *hb;
	/* primary thread: forget old delivery ids every hour */
	struct timer prune_timer;
	struct work prune_work;
	bool prune_running;
	uint64_t dedupe_ttl_ms;
	struct node_shardmap *follow;
	char advertise[128];
	bool rpc_tls;
};

/* Canonical address of a mailbox owner, with any +tag removed. Returns the
 * shard, or -1 with a reason. */
static int owner_tag_of(struct node *n, const char *addr, char *out, size_t out_len,
			char *tag_out, size_t tag_len, const char **why);

static int owner_of(struct node *n, const char *addr, char *out, size_t out_len,
		    const char **why)
{
	return owner_tag_of(n, addr, out, out_len, NULL, 0, why);
}

/* owner_of, and the +tag (without the '+') in tag_out ("" if none or
 * longer than tag_len - 1). */
static int owner_tag_of(struct node *n, const char *addr, char *out, size_t out_len,
			char *tag_out, size_t tag_len, const char **why)
{
	if (address_owner(view_cstr(addr), out, out_len, tag_out, tag_len, why) < 0) {
		out[0] = '\0';
		return -1;
	}
	return (int)address_shard(view_cstr(out), n->ns->nshards);
}

static struct shard *local_shard(struct node *n, int shard)
{
	if (shard < 0 || (uint32_t)shard >= n->ns->nshards ||
	    !__atomic_load_n(&n->ns->owned[shard], __ATOMIC_ACQUIRE))
		return NULL;
	return storage_shard_get(n->ns->st, (uint32_t)shard);
}

static uint64_t shard_epoch(struct node *n, int shard)
{
	if (shard < 0 || (uint32_t)shard >= n->ns->nshards)
		return 0;
	return __atomic_load_n(&n->ns->epoch[shard], __ATOMIC_ACQUIRE);
}

/* A request for a shard this node is not primary of: logged (the sender
 * routes with another map than ours) and refused. */
static void refuse_not_primary(struct node *n, struct rpc_call *call, int shard,
			       const char *what, const char *msg)
{
	metrics_inc(n->ns->m_not_primary);
	LOG_WARN("node", call ? rpc_call_conn_id(call) : 0, "not_primary",
		 "what=%s shard=%d source=%s", what, shard,
		 __atomic_load_n(&n->ns->from_map, __ATOMIC_RELAXED) ? "shardmap" : "shards.local");
	if (call)
		rpc_call_error(call, MAIL__RPC__ERROR_CODE__ERROR_NOT_PRIMARY, msg);
}

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

/* ---- Deliver ---------------------------------------------------------------- */

struct deliver_job {
	struct work w;
	struct rpc_call *call;
	struct node *n;
	struct shard *sh;
	const Mail__Rpc__DeliverRequest *req;
	size_t nrcpt;
	char (*owner)[256];        /* canonical owner per recipient */
	char (*tag)[128];          /* +tag per recipient: its folder if that exists */
	int *target_of;            /* recipient -> target index, -1 = rejected early */
	size_t *first_of;          /* recipient -> first recipient of its target */
	uint32_t *code;
	const char **text;
	struct deliver_target *targets;
	size_t ntargets;
	enum storage_status status;
	const char *error;
	bool duplicate; /* a retry of a delivery id already stored */
};

static void deliver_run(struct work *w)
{
	struct deliver_job *j = container_of(w, struct deliver_job, w);
	struct body_writer *bw = body_writer_new(j->sh);
	const uint8_t *body = j->req->body.data;
	size_t len = j->req->body.len;
	for (size_t off = 0; off < len; off += 65536)
		if (body_writer_add(bw, body + off, MIN((size_t)65536, len - off)) < 0)
			break;
	j->status = ST_OK;
	/* user+tag goes into the folder "tag" when the user has one (the
	 * first recipient of a collapsed group decides), else INBOX. */
	for (size_t i = 0; i < j->nrcpt; i++) {
		int t = j->target_of[i];
		if (t < 0 || !j->tag[i][0] || j->targets[t].mailbox_id)
			continue;
		if (j->first_of[i] != (size_t)i)
			continue;
		struct mailbox_info mb;
		enum storage_status st;
		const char *err;
		if (store_mailbox_get(j->sh, j->owner[i], j->tag[i], &mb, &st, &err) == 0)
			j->targets[t].mailbox_id = mb.id;
	}
	int r = 0;
	if (j->ntargets && j->req->delivery_id.len)
		r = store_deliver_once(j->sh, bw, j->req->received_ms,
				       view_make(j->req->delivery_id.data, j->req->delivery_id.len),
				       j->targets, j->ntargets, &j->duplicate, &j->status, &j->error);
	else if (j->ntargets)
		r = store_deliver(j->sh, bw, j->req->received_ms, j->targets, j->ntargets,
				  &j->status, &j->error);
	if (r < 0 && j->status == ST_OK)
		j->status = ST_IO;
	body_writer_free(&bw);
}

static void status_text(enum storage_status st, uint32_t *code, const char **text)
{
	switch (st) {
	case ST_OK: *code = 250; *text = "2.0.0 stored"; break;
	case ST_NOT_FOUND: *code = 550; *text = "5.1.1 no such mailbox"; break;
	case ST_DISABLED: *code = 550; *text = "5.2.1 mailbox disabled"; break;
	case ST_OVER_QUOTA: *code = 452; *text = "4.2.2 mailbox full"; break;
	case ST_TOO_LARGE: *code = 552; *text = "5.3.4 message too big"; break;
	case ST_INVALID: *code = 550; *text = "5.2.0 mailbox cannot take more messages"; break;
	default: *code = 451; *text = "4.3.0 temporary storage failure"; break;
	}
}

static void deliver_done(struct work *w)
{
	struct deliver_job *j = container_of(w, struct deliver_job, w);
	Mail__Rpc__RecipientStatus *st = xcalloc(j->nrcpt, sizeof(*st));
	Mail__Rpc__RecipientStatus **stp = xcalloc(j->nrcpt, sizeof(*stp));
	for (size_t i = 0; i < j->nrcpt; i++) {
		mail__rpc__recipient_status__init(&st[i]);
		st[i].recipient = j->req->recipients[i];
		int t = j->target_of[i];
		if (t >= 0) {
			enum storage_status s = j->status == ST_OK ? j->targets[t].status_r : j->status;
			status_text(s, &j->code[i], &j->text[i]);
		}
		st[i].code = j->code[i];
		st[i].text = (char *)j->text[i];
		stp[i] = &st[i];
	}
	if (j->duplicate)
		LOG_INFO("node", rpc_call_conn_id(j->call), "deliver_duplicate",
			 "shard=%u recipients=%zu", shard_id(j->sh), j->nrcpt);
	if (j->status != ST_OK)
		LOG_WARN("node", rpc_call_conn_id(j->call), "deliver_failed",
			 "shard=%u status=%s reason=\"%s\"", shard_id(j->sh),
			 storage_status_str(j->status), j->error ? j->error : "");
	Mail__Rpc__DeliverReply rep = MAIL__RPC__DELIVER_REPLY__INIT;
	rep.n_statuses = j->nrcpt;
	rep.statuses = stp;
	rpc_call_reply(j->call, &rep.base);
	free(st);
	free(stp);
	free(j->owner);
	free(j->tag);
	free(j->first_of);
	free(j->target_of);
	free(j->code);
	free(j->text);
	free(j->targets);
	free(j);
}

static void handle_deliver(struct rpc_call *call, const ProtobufCMessage *msg, void *arg)
{
	struct node *n = arg;
	const Mail__Rpc__DeliverRequest *req = (const Mail__Rpc__DeliverRequest *)msg;
	struct shard *sh = local_shard(n, (int)req->shard);
	if (!sh) {
		refuse_not_primary(n, call, (int)req->shard, "deliver",
				   "shard not served by this node");
		return;
	}
	if (req->n_recipients == 0 || req->n_recipients > 1000) {
		rpc_call_error(call, MAIL__RPC__ERROR_CODE__ERROR_BAD_REQUEST, "1..1000 recipients");
		return;
	}
	if (req->delivery_id.len > DELIVERY_ID_MAX) {
		rpc_call_error(call, MAIL__RPC__ERROR_CODE__ERROR_BAD_REQUEST,
			       "delivery_id longer than 64 bytes");
		return;
	}
	struct deliver_job *j = xcalloc(1, sizeof(*j));
	j->call = call;
	j->n = n;
	j->sh = sh;
	j->req = req;
	j->nrcpt = req->n_recipients;
	j->owner = xcalloc(j->nrcpt, sizeof(*j->owner));
	j->tag = xcalloc(j->nrcpt, sizeof(*j->tag));
	j->first_of = xcalloc(j->nrcpt, sizeof(size_t));
	j->target_of = xcalloc(j->nrcpt, sizeof(int));
	j->code = xcalloc(j->nrcpt, sizeof(uint32_t));
	j->text = xcalloc(j->nrcpt, sizeof(char *));
	j->targets = xcalloc(j->nrcpt, sizeof(*j->targets));
	for (size_t i = 0; i < j->nrcpt; i++) {
		const char *why = NULL;
		int shard = owner_tag_of(n, req->recipients[i], j->owner[i], sizeof(j->owner[i]),
					 j->tag[i], sizeof(j->tag[i]), &why);
		j->target_of[i] = -1;
		if (shard < 0) {
			j->code[i] = 501;
			j->text[i] = "5.1.3 bad recipient address";
			continue;
		}
		if ((uint32_t)shard != req->shard) {
			j->code[i] = 451;
			j->text[i] = "4.3.0 recipient belongs to another shard";
			continue;
		}
		/* Duplicate recipients (after +tag removal) get one copy. */
		j->first_of[i] = i;
		for (size_t k = 0; k < i; k++) {
			if (j->target_of[k] >= 0 && strcmp(j->owner[k], j->owner[i]) == 0) {
				j->target_of[i] = j->target_of[k];
				j->first_of[i] = j->first_of[k];
				break;
			}
		}
		if (j->target_of[i] >= 0)
			continue;
		j->targets[j->ntargets].user = j->owner[i];
		j->target_of[i] = (int)j->ntargets++;
	}
	loop_post_work(n->loop, &j->w, deliver_run, deliver_done);
}

/* ---- Auth --------------------------------------------------------------------- */

struct auth_job {
	struct work w;
	struct rpc_call *call;
	struct shard *sh;
	char user[256];
	int shard;
	uint64_t epoch;
	char *password;
	size_t password_len;
	const char *rehashed; /* the scheme replaced by scrypt, if any */
	bool ok;
	bool failed; /* storage error: not the same as a wrong password */
};

static void auth_run(struct work *w)
{
	struct auth_job *j = container_of(w, struct auth_job, w);
	struct user_info u;
	enum storage_status st = ST_OK;
	const char *err = NULL;
	bool known = j->sh && store_user_get(j->sh, j->user, &u, &st, &err) == 0 && u.enabled &&
		     u.pwhash[0];
	if (!known && st != ST_OK && st != ST_NOT_FOUND)
		j->failed = true;
	/* Unknown users cost the same time as known ones. */
	if (known)
		j->ok = pwhash_verify(u.pwhash, j->password, j->password_len) == 1;
	else
		pwhash_dummy_verify(j->password, j->password_len);
	/* An imported (or old-parameter) hash becomes scrypt now that the
	 * password is known: one more scrypt, once per user. A failure
	 * leaves the old hash, which still works. */
	if (j->ok && pwhash_needs_rehash(u.pwhash, NULL)) {
		char fresh[PWHASH_ENCODED_MAX];
		const char *why = NULL;
		enum storage_status st2;
		if (pwhash_create(j->password, j->password_len, NULL, fresh, sizeof(fresh), &why) ==
			    0 &&
		    store_user_update(j->sh, j->user, fresh, UINT64_MAX, -1, &st2, &why) == 0)
			j->rehashed = pwhash_scheme(u.pwhash);
		OPENSSL_cleanse(fresh, sizeof(fresh));
	}
	if (known)
		OPENSSL_cleanse(u.pwhash, sizeof(u.pwhash));
}

static void auth_done(struct work *w)
{
	struct auth_job *j = container_of(w, struct auth_job, w);
	OPENSSL_cleanse(j->password, j->password_len);
	free(j->password);
	if (j->rehashed)
		LOG_INFO("node", rpc_call_conn_id(j->call), "password_rehashed",
			 "user=%s from=%s to=scrypt", j->user, j->rehashed);
	if (j->failed) {
		rpc_call_error(j->call, MAIL__RPC__ERROR_CODE__ERROR_UNAVAILABLE, "storage error");
	} else {
		Mail__Rpc__AuthReply rep = MAIL__RPC__AUTH_REPLY__INIT;
		rep.ok = j->ok;
		rep.user = j->ok ? j->user : "";
		rep.shard = j->ok ? (uint32_t)j->shard : 0;
		rep.epoch = j->ok ? j->epoch : 0;
		rpc_call_reply(j->call, &rep.base);
	}
	free(j);
}

static void handle_auth(struct rpc_call *call, const ProtobufCMessage *msg, void *arg)
{
	struct node *n = arg;
	const Mail__Rpc__AuthRequest *req = (const Mail__Rpc__AuthRequest *)msg;
	struct auth_job *j = xcalloc(1, sizeof(*j));
	j->call = call;
	const char *why = NULL;
	j->shard = owner_of(n, req->user, j->user, sizeof(j->user), &why);
	j->sh = j->shard >= 0 ? local_shard(n, j->shard) : NULL;
	j->epoch = shard_epoch(n, j->shard);
	if (j->shard >= 0 && !j->sh) {
		refuse_not_primary(n, call, j->shard, "auth", "user's shard not served by this node");
		free(j);
		return;
	}
	j->password_len = strlen(req->password);
	j->password = xmalloc(j->password_len + 1);
	memcpy(j->password, req->password, j->password_len + 1);
	loop_post_work(n->loop, &j->w, auth_run, auth_done);
}

/* ---- admin: users and mailboxes ------------------------------------------ */

struct admin_job {
	struct work w;
	struct rpc_call *call;
	struct shard *sh;
	uint16_t method;
	char user[256];
	int shard;
	char *password;
	char *password_hash; /* USER_ADD of an imported hash */
	bool add_disabled;
	uint64_t quota;
	bool set_password, set_quota;
	int enabled; /* -1 unchanged, 0/1 */
	struct user_info info;
	struct mailbox_info *boxes;
	size_t nboxes;
	enum storage_status st;
	const char *error;
	char error_copy[200];
	int rc;
};

static void admin_run(struct work *w)
{
	struct admin_job *j = container_of(w, struct admin_job, w);
	j->st = ST_OK;
	j->rc = 0;
	if (j->method == RPC_METHOD_USER_ADD) {
		char hash[PWHASH_STORED_MAX] = "";
		if (j->password_hash && j->password_hash[0]) {
			/* Imported: kept as it is, checked for form and cost. */
			if (pwhash_import(j->password_hash, hash, sizeof(hash), &j->error) < 0) {
				j->rc = -1;
				j->st = ST_INVALID;
			}
		} else if (j->password && j->password[0] &&
			   pwhash_create(j->password, strlen(j->password), NULL, hash, sizeof(hash),
					 &j->error) < 0) {
			j->rc = -1;
			j->st = ST_INVALID;
		}
		if (j->rc == 0)
			j->rc = store_user_create(j->sh, j->user, hash, j->quota, &j->st, &j->error);
		if (j->rc == 0 && j->add_disabled)
			j->rc = store_user_update(j->sh, j->user, NULL, UINT64_MAX, 0, &j->st,
						  &j->error);
		OPENSSL_cleanse(hash, sizeof(hash));
	}
	if (j->method == RPC_METHOD_USER_UPDATE) {
		char hash[PWHASH_ENCODED_MAX] = "";
		/* An empty password disables password login. */
		if (j->set_password && j->password[0] &&
		    pwhash_create(j->password, strlen(j->password), NULL, hash, sizeof(hash),
				  &j->error) < 0) {
			j->rc = -1;
			j->st = ST_INVALID;
		}
		if (j->rc == 0)
			j->rc = store_user_update(j->sh, j->user, j->set_password ? hash : NULL,
						  j->set_quota ? j->quota : UINT64_MAX, j->enabled,
						  &j->st, &j->error);
		OPENSSL_cleanse(hash, sizeof(hash));
	}
	if (j->method == RPC_METHOD_USER_DELETE)
		j->rc = store_user_delete(j->sh, j->user, &j->st, &j->error);
	if (j->rc == 0 && (j->method == RPC_METHOD_USER_ADD || j->method == RPC_METHOD_USER_GET ||
			   j->method == RPC_METHOD_USER_UPDATE))
		j->rc = store_user_get(j->sh, j->user, &j->info, &j->st, &j->error);
	if (j->rc == 0 && j->method == RPC_METHOD_MAILBOX_LIST) {
		enum storage_status st2;
		j->rc = store_user_get(j->sh, j->user, &j->info, &st2, &j->error);
		if (j->rc < 0)
			j->st = st2;
		else
			j->rc = store_mailbox_list(j->sh, j->user, &j->boxes, &j->nboxes, &j->error);
	}
	if (j->rc < 0 && j->error)
		snprintf(j->error_copy, sizeof(j->error_copy), "%s", j->error);
}

static uint32_t error_code_of(enum storage_status st)
{
	switch (st) {
	case ST_NOT_FOUND:
	case ST_EXISTS:
	case ST_INVALID:
		return MAIL__RPC__ERROR_CODE__ERROR_BAD_REQUEST;
	default:
		return MAIL__RPC__ERROR_CODE__ERROR_INTERNAL;
	}
}

static void admin_done(struct work *w)
{
	struct admin_job *j = container_of(w, struct admin_job, w);
	if (j->password) {
		OPENSSL_cleanse(j->password, strlen(j->password));
		free(j->password);
	}
	if (j->password_hash) {
		OPENSSL_cleanse(j->password_hash, strlen(j->password_hash));
		free(j->password_hash);
	}
	if (j->rc < 0) {
		char msg[260];
		snprintf(msg, sizeof(msg), "%s: %s", storage_status_str(j->st), j->error_copy);
		rpc_call_error(j->call, error_code_of(j->st), msg);
	} else if (j->method == RPC_METHOD_USER_DELETE) {
		LOG_INFO("node", 0, "user_deleted", "user=%s", j->user);
		rpc_call_reply(j->call, NULL);
	} else if (j->method == RPC_METHOD_MAILBOX_LIST) {
		Mail__Rpc__MailboxEntry *e = xcalloc(j->nboxes ? j->nboxes : 1, sizeof(*e));
		Mail__Rpc__MailboxEntry **ep = xcalloc(j->nboxes ? j->nboxes : 1, sizeof(*ep));
		for (size_t i = 0; i < j->nboxes; i++) {
			struct mailbox_info *b = &j->boxes[i];
			mail__rpc__mailbox_entry__init(&e[i]);
			e[i].name = b->name;
			e[i].uidvalidity = b->uidvalidity;
			e[i].uidnext = b->uidnext;
			e[i].highestmodseq = b->highestmodseq;
			e[i].messages = b->messages;
			e[i].unseen = b->unseen;
			e[i].size = b->size;
			e[i].special_use = b->special_use;
			e[i].subscribed = b->subscribed;
			ep[i] = &e[i];
		}
		Mail__Rpc__MailboxList rep = MAIL__RPC__MAILBOX_LIST__INIT;
		rep.n_mailboxes = j->nboxes;
		rep.mailboxes = ep;
		rpc_call_reply(j->call, &rep.base);
		free(e);
		free(ep);
	} else {
		Mail__Rpc__UserInfo rep = MAIL__RPC__USER_INFO__INIT;
		rep.user = j->info.address;
		rep.shard = (uint32_t)j->shard;
		rep.quota_bytes = j->info.quota_bytes;
		rep.used_bytes = j->info.used_bytes;
		rep.used_messages = j->info.used_messages;
		rep.enabled = j->info.enabled;
		rep.created_ms = j->info.created_ms;
		rpc_call_reply(j->call, &rep.base);
	}
	free(j->boxes);
	free(j);
}

static void handle_admin(struct rpc_call *call, const ProtobufCMessage *msg, uint16_t method,
			 const char *user, void *arg)
{
	struct node *n = arg;
	struct admin_job *j = xcalloc(1, sizeof(*j));
	j->call = call;
	j->method = method;
	const char *why = NULL;
	j->shard = owner_of(n, user, j->user, sizeof(j->user), &why);
	if (j->shard < 0) {
		free(j);
		rpc_call_error(call, MAIL__RPC__ERROR_CODE__ERROR_BAD_REQUEST, why ? why : "bad address");
		return;
	}
	j->sh = local_shard(n, j->shard);
	if (!j->sh) {
		refuse_not_primary(n, call, j->shard, "admin", "user's shard not served by this node");
		free(j);
		return;
	}
	if (method == RPC_METHOD_USER_ADD) {
		const Mail__Rpc__UserAddRequest *r = (const Mail__Rpc__UserAddRequest *)msg;
		if (r->password[0] && r->password_hash[0]) {
			free(j);
			rpc_call_error(call, MAIL__RPC__ERROR_CODE__ERROR_BAD_REQUEST,
				       "give a password or a password hash, not both");
			return;
		}
		j->password = xstrdup(r->password);
		j->password_hash = xstrdup(r->password_hash);
		j->add_disabled = r->disabled;
		j->quota = r->quota_bytes;
	}
	if (method == RPC_METHOD_USER_UPDATE) {
		const Mail__Rpc__UserUpdateRequest *r = (const Mail__Rpc__UserUpdateRequest *)msg;
		if (r->enabled > 2) {
			free(j);
			rpc_call_error(call, MAIL__RPC__ERROR_CODE__ERROR_BAD_REQUEST,
				       "enabled must be 0, 1 or 2");
			return;
		}
		j->set_password = r->set_password;
		j->password = xstrdup(r->password);
		j->set_quota = r->set_quota;
		j->quota = r->quota_bytes;
		j->enabled = r->enabled == 0 ? -1 : r->enabled == 1 ? 1 : 0;
	}
	loop_post_work(n->loop, &j->w, admin_run, admin_done);
}

static void handle_user_add(struct rpc_call *call, const ProtobufCMessage *msg, void *arg)
{
	handle_admin(call, msg, RPC_METHOD_USER_ADD,
		     ((const Mail__Rpc__UserAddRequest *)msg)->user, arg);
}

static void handle_user_get(struct rpc_call *call, const ProtobufCMessage *msg, void *arg)
{
	handle_admin(call, msg, RPC_METHOD_USER_GET, ((const Mail__Rpc__UserRequest *)msg)->user,
		     arg);
}

static void handle_user_update(struct rpc_call *call, const ProtobufCMessage *msg, void *arg)
{
	handle_admin(call, msg, RPC_METHOD_USER_UPDATE,
		     ((const Mail__Rpc__UserUpdateRequest *)msg)->user, arg);
}

static void handle_user_delete(struct rpc_call *call, const ProtobufCMessage *msg, void *arg)
{
	handle_admin(call, msg, RPC_METHOD_USER_DELETE,
		     ((const Mail__Rpc__UserRequest *)msg)->user, arg);
}

static void handle_mailbox_list(struct rpc_call *call, const ProtobufCMessage *msg, void *arg)
{
	handle_admin(call, msg, RPC_METHOD_MAILBOX_LIST,
		     ((const Mail__Rpc__UserRequest *)msg)->user, arg);
}

/* ---- directory: domains and aliases ----------------------------------- */

struct dir_job {
	struct work w;
	struct rpc_call *call;
	struct shard *dir;
	uint16_t method;
	char name[300];
	char **targets; /* ALIAS_SET input (copied), RESOLVE output */
	size_t ntargets;
	struct domain_info *domains;
	size_t ndomains;
	int rc;
	enum storage_status st;
	char error[200];
};

static void dir_run(struct work *w)
{
	struct dir_job *j = container_of(w, struct dir_job, w);
	const char *err = NULL;
	j->st = ST_OK;
	switch (j->method) {
	case RPC_METHOD_DOMAIN_ADD:
		j->rc = directory_domain_add(j->dir, j->name, &j->st, &err);
		if (j->rc < 0 && j->st == ST_EXISTS)
			j->rc = 0; /* idempotent: adding twice is fine */
		/* reply with the whole list */
		if (j->rc == 0)
			j->rc = directory_domain_list(j->dir, &j->domains, &j->ndomains, &err);
		break;
	case RPC_METHOD_DOMAIN_LIST:
		j->rc = directory_domain_list(j->dir, &j->domains, &j->ndomains, &err);
		break;
	case RPC_METHOD_ALIAS_SET:
		j->rc = directory_alias_set(j->dir, j->name, (const char *const *)j->targets,
					    j->ntargets, &j->st, &err);
		if (j->rc == 0) {
			directory_free_list(&j->targets);
			j->rc = directory_alias_get(j->dir, j->name, &j->targets, &err) < 0 ? -1 : 0;
		}
		break;
	case RPC_METHOD_DOMAIN_DELETE:
		j->rc = directory_domain_delete(j->dir, j->name, &j->st, &err);
		if (j->rc == 0)
			j->rc = directory_domain_list(j->dir, &j->domains, &j->ndomains, &err);
		break;
	case RPC_METHOD_ALIAS_DELETE:
		j->rc = directory_alias_delete(j->dir, j->name, &j->st, &err);
		break;
	case RPC_METHOD_RESOLVE: {
		char **old = j->targets;
		j->targets = NULL;
		directory_free_list(&old);
		int n = directory_resolve(j->dir, j->name, &j->targets, &err);
		j->rc = n < 0 ? -1 : 0;
		break;
	}
	default:
		j->rc = -1;
		err = "unknown method";
	}
	if (j->rc < 0)
		snprintf(j->error, sizeof(j->error), "%s", err ? err : "storage error");
}

static void dir_done(struct work *w)
{
	struct dir_job *j = container_of(w, struct dir_job, w);
	if (j->rc < 0) {
		rpc_call_error(j->call, error_code_of(j->st), j->error);
	} else if (j->method == RPC_METHOD_ALIAS_DELETE) {
		rpc_call_reply(j->call, NULL);
	} else if (j->method == RPC_METHOD_DOMAIN_ADD || j->method == RPC_METHOD_DOMAIN_LIST ||
		   j->method == RPC_METHOD_DOMAIN_DELETE) {
		char **names = xcalloc(j->ndomains ? j->ndomains : 1, sizeof(char *));
		for (size_t i = 0; i < j->ndomains; i++)
			names[i] = j->domains[i].name;
		Mail__Rpc__DomainList rep = MAIL__RPC__DOMAIN_LIST__INIT;
		rep.n_names = j->ndomains;
		rep.names = names;
		rpc_call_reply(j->call, &rep.base);
		free(names);
	} else {
		size_t n = 0;
		while (j->targets && j->targets[n])
			n++;
		Mail__Rpc__AliasRequest rep = MAIL__RPC__ALIAS_REQUEST__INIT;
		rep.alias = j->name;
		rep.n_targets = n;
		rep.targets = j->targets;
		rpc_call_reply(j->call, &rep.base);
	}
	directory_free_list(&j->targets);
	free(j->domains);
	free(j);
}

static void post_dir(struct node *n, struct rpc_call *call, uint16_t method, const char *name,
		     char *const *targets, size_t ntargets)
{
	if (ntargets > DIRECTORY_MAX_TARGETS || strlen(name) >= 300) {
		rpc_call_error(call, MAIL__RPC__ERROR_CODE__ERROR_BAD_REQUEST, "too many targets");
		return;
	}
	struct dir_job *j = xcalloc(1, sizeof(*j));
	j->call = call;
	j->dir = n->ns->dir;
	j->method = method;
	snprintf(j->name, sizeof(j->name), "%s", name);
	if (ntargets) {
		j->targets = xcalloc(ntargets + 1, sizeof(char *));
		for (size_t i = 0; i < ntargets; i++)
			j->targets[i] = xstrdup(targets[i]);
		j->ntargets = ntargets;
	}
	loop_post_work(n->loop, &j->w, dir_run, dir_done);
}

static void handle_domain_add(struct rpc_call *call, const ProtobufCMessage *msg, void *arg)
{
	post_dir(arg, call, RPC_METHOD_DOMAIN_ADD, ((const Mail__Rpc__DomainRequest *)msg)->name,
		 NULL, 0);
}

static void handle_domain_list(struct rpc_call *call, const ProtobufCMessage *msg, void *arg)
{
	UNUSED(msg);
	post_dir(arg, call, RPC_METHOD_DOMAIN_LIST, "", NULL, 0);
}

static void handle_domain_delete(struct rpc_call *call, const ProtobufCMessage *msg, void *arg)
{
	post_dir(arg, call, RPC_METHOD_DOMAIN_DELETE,
		 ((const Mail__Rpc__DomainRequest *)msg)->name, NULL, 0);
}

static void handle_alias_delete(struct rpc_call *call, const ProtobufCMessage *msg, void *arg)
{
	post_dir(arg, call, RPC_METHOD_ALIAS_DELETE, ((const Mail__Rpc__AliasRequest *)msg)->alias,
		 NULL, 0);
}

static void handle_alias_set(struct rpc_call *call, const ProtobufCMessage *msg, void *arg)
{
	const Mail__Rpc__AliasRequest *r = (const Mail__Rpc__AliasRequest *)msg;
	post_dir(arg, call, RPC_METHOD_ALIAS_SET, r->alias, r->targets, r->n_targets);
}

static void handle_resolve(struct rpc_call *call, const ProtobufCMessage *msg, void *arg)
{
	struct node *n = arg;
	char owner[256];
	const char *why = NULL;
	if (owner_of(n, ((const Mail__Rpc__UserRequest *)msg)->user, owner, sizeof(owner), &why) < 0) {
		rpc_call_error(call, MAIL__RPC__ERROR_CODE__ERROR_BAD_REQUEST, why ? why : "bad address");
		return;
	}
	/* Resolve the address as given (canonical, +tag kept): an alias of
	 * user+tag or of user both apply. */
	struct buf c;
	buf_init(&c, 256);
	address_canonical(view_cstr(((const Mail__Rpc__UserRequest *)msg)->user), &c, &why);
	char addr[256];
	snprintf(addr, sizeof(addr), "%.*s", (int)c.len, (const char *)c.data);
	buf_cleanup(&c);
	post_dir(n, call, RPC_METHOD_RESOLVE, addr, NULL, 0);
}

/* ---- delivery id records ------------------------------------------------------ */

#define NODE_PRUNE_EVERY_MS (3600 * 1000)

static void prune_run(struct work *w)
{
	struct node *n = container_of(w, struct node, prune_work);
	uint64_t before = time_real_ms() - n->dedupe_ttl_ms;
	long total = 0;
	for (uint32_t i = 0; i < n->ns->nshards; i++) {
		struct shard *sh = local_shard(n, (int)i);
		if (!sh)
			continue;
		const char *err = NULL;
		long k;
		/* bounded batches until a shard has nothing old left */
		while ((k = store_deliveries_prune(sh, before, &err)) > 0)
			total += k;
		if (k < 0)
			LOG_WARN("node", 0, "prune_failed", "shard=%u error=\"%s\"", i, err ? err : "");
	}
	if (total)
		LOG_INFO("node", 0, "deliveries_pruned", "records=%ld", total);
}

static void prune_done(struct work *w)
{
	struct node *n = container_of(w, struct node, prune_work);
	n->prune_running = false;
	loop_release(n->loop);
}

static void prune_tick(struct timer *t)
{
	struct node *n = t->arg;
	timer_start(n->loop, &n->prune_timer, NODE_PRUNE_EVERY_MS);
	if (n->prune_running)
		return;
	n->prune_running = true;
	loop_hold(n->loop); /* a draining loop waits for the job */
	loop_post_work(n->loop, &n->prune_work, prune_run, prune_done);
}

/* ---- listings and DKIM keys --------------------------------------------------- */

#define USER_LIST_MAX 1000u

struct list_job {
	struct work w;
	struct rpc_call *call;
	struct node *n;
	uint16_t method;
	/* USER_LIST */
	char domain[256];
	uint32_t after_shard;
	char after_user[256];
	uint32_t limit;
	struct user_info *users;
	uint32_t *user_shard;
	size_t nusers;
	bool more;
	/* ALIAS_LIST */
	struct directory_alias *aliases;
	size_t naliases;
	/* DKIM_* */
	struct dkim_key key;
	bool include_private;
	struct dkim_key *keys;
	size_t nkeys;
	int rc;
	enum storage_status st;
	char error[200];
};

static void list_run(struct work *w)
{
	struct list_job *j = container_of(w, struct list_job, w);
	const char *err = NULL;
	struct node_store *ns = j->n->ns;
	j->st = ST_OK;
	switch (j->method) {
	case RPC_METHOD_USER_LIST:
		j->users = xcalloc(j->limit, sizeof(*j->users));
		j->user_shard = xcalloc(j->limit, sizeof(*j->user_shard));
		for (uint32_t s = j->after_shard; s < ns->nshards && j->rc == 0; s++) {
			struct shard *sh = local_shard(j->n, (int)s);
			if (!sh)
				continue;
			struct user_info *page = NULL;
			size_t got = 0;
			bool more = false;
			j->rc = store_user_list(sh, s == j->after_shard ? j->after_user : "",
						j->domain, j->limit - j->nusers, &page, &got, &more, &err);
			for (size_t i = 0; i < got; i++) {
				j->users[j->nusers] = page[i];
				j->user_shard[j->nusers++] = s;
			}
			free(page);
			if (j->rc == 0 && (more || j->nusers == j->limit)) {
				/* Full: the next page resumes after the last user. */
				j->more = true;
				break;
			}
		}
		break;
	case RPC_METHOD_ALIAS_LIST:
		j->rc = directory_alias_list(ns->dir, j->domain, &j->aliases, &j->naliases, &err);
		break;
	case RPC_METHOD_DKIM_SET:
		j->rc = directory_dkim_set(ns->dir, &j->key, &j->st, &err);
		break;
	case RPC_METHOD_DKIM_GET:
		j->rc = directory_dkim_get(ns->dir, j->key.domain, j->key.selector, j->include_private,
					   &j->keys, &j->nkeys, &err);
		break;
	case RPC_METHOD_DKIM_DELETE:
		j->rc = directory_dkim_delete(ns->dir, j->key.domain, j->key.selector, &j->st, &err);
		break;
	default:
		j->rc = -1;
		err = "unknown method";
	}
	if (j->rc < 0)
		snprintf(j->error, sizeof(j->error), "%s", err ? err : "storage error");
}

static void fill_dkim(Mail__Rpc__DkimKey *m, const struct dkim_key *k)
{
	mail__rpc__dkim_key__init(m);
	m->domain = (char *)k->domain;
	m->selector = (char *)k->selector;
	m->algorithm = (char *)k->algorithm;
	m->public_b64 = k->public_b64 ? k->public_b64 : "";
	m->private_pem = k->private_pem ? k->private_pem : "";
	m->created_ms = k->created_ms;
}

static void list_done(struct work *w)
{
	struct list_job *j = container_of(w, struct list_job, w);
	if (j->rc < 0) {
		rpc_call_error(j->call, error_code_of(j->st), j->error);
	} else if (j->method == RPC_METHOD_USER_LIST) {
		Mail__Rpc__UserInfo *u = xcalloc(j->nusers ? j->nusers : 1, sizeof(*u));
		Mail__Rpc__UserInfo **up = xcalloc(j->nusers ? j->nusers : 1, sizeof(*up));
		for (size_t i = 0; i < j->nusers; i++) {
			mail__rpc__user_info__init(&u[i]);
			u[i].user = j->users[i].address;
			u[i].shard = j->user_shard[i];
			u[i].quota_bytes = j->users[i].quota_bytes;
			u[i].used_bytes = j->users[i].used_bytes;
			u[i].used_messages = j->users[i].used_messages;
			u[i].enabled = j->users[i].enabled;
			u[i].created_ms = j->users[i].created_ms;
			up[i] = &u[i];
		}
		Mail__Rpc__UserList rep = MAIL__RPC__USER_LIST__INIT;
		rep.n_users = j->nusers;
		rep.users = up;
		rep.more = j->more;
		if (j->more && j->nusers) {
			rep.next_shard = j->user_shard[j->nusers - 1];
			rep.next_user = j->users[j->nusers - 1].address;
		}
		rpc_call_reply(j->call, &rep.base);
		free(u);
		free(up);
	} else if (j->method == RPC_METHOD_ALIAS_LIST) {
		Mail__Rpc__AliasRequest *a = xcalloc(j->naliases ? j->naliases : 1, sizeof(*a));
		Mail__Rpc__AliasRequest **ap = xcalloc(j->naliases ? j->naliases : 1, sizeof(*ap));
		for (size_t i = 0; i < j->naliases; i++) {
			mail__rpc__alias_request__init(&a[i]);
			a[i].alias = j->aliases[i].alias;
			size_t n = 0;
			while (j->aliases[i].targets[n])
				n++;
			a[i].n_targets = n;
			a[i].targets = j->aliases[i].targets;
			ap[i] = &a[i];
		}
		Mail__Rpc__AliasList rep = MAIL__RPC__ALIAS_LIST__INIT;
		rep.n_aliases = j->naliases;
		rep.aliases = ap;
		rpc_call_reply(j->call, &rep.base);
		free(a);
		free(ap);
	} else if (j->method == RPC_METHOD_DKIM_SET) {
		Mail__Rpc__DkimKey rep;
		char *priv = j->key.private_pem;
		j->key.private_pem = NULL; /* not echoed */
		fill_dkim(&rep, &j->key);
		rpc_call_reply(j->call, &rep.base);
		j->key.private_pem = priv;
	} else if (j->method == RPC_METHOD_DKIM_GET) {
		Mail__Rpc__DkimKey *k = xcalloc(j->nkeys ? j->nkeys : 1, sizeof(*k));
		Mail__Rpc__DkimKey **kp = xcalloc(j->nkeys ? j->nkeys : 1, sizeof(*kp));
		for (size_t i = 0; i < j->nkeys; i++) {
			fill_dkim(&k[i], &j->keys[i]);
			kp[i] = &k[i];
		}
		Mail__Rpc__DkimKeys rep = MAIL__RPC__DKIM_KEYS__INIT;
		rep.n_keys = j->nkeys;
		rep.keys = kp;
		rpc_call_reply(j->call, &rep.base);
		free(k);
		free(kp);
	} else {
		rpc_call_reply(j->call, NULL);
	}
	free(j->users);
	free(j->user_shard);
	directory_alias_list_free(&j->aliases, j->naliases);
	directory_dkim_free(&j->keys, j->nkeys);
	free(j->key.public_b64);
	if (j->key.private_pem) {
		OPENSSL_cleanse(j->key.private_pem, strlen(j->key.private_pem));
		free(j->key.private_pem);
	}
	free(j);
}

static struct list_job *list_job_new(struct rpc_call *call, struct node *n, uint16_t method)
{
	struct list_job *j = xcalloc(1, sizeof(*j));
	j->call = call;
	j->n = n;
	j->method = method;
	return j;
}

static void handle_user_list(struct rpc_call *call, const ProtobufCMessage *msg, void *arg)
{
	const Mail__Rpc__UserListRequest *r = (const Mail__Rpc__UserListRequest *)msg;
	if (strlen(r->domain) >= 256 || strlen(r->after_user) >= 256) {
		rpc_call_error(call, MAIL__RPC__ERROR_CODE__ERROR_BAD_REQUEST, "name too long");
		return;
	}
	struct list_job *j = list_job_new(call, arg, RPC_METHOD_USER_LIST);
	snprintf(j->domain, sizeof(j->domain), "%s", r->domain);
	snprintf(j->after_user, sizeof(j->after_user), "%s", r->after_user);
	j->after_shard = r->after_shard;
	j->limit = r->limit == 0 || r->limit > USER_LIST_MAX ? USER_LIST_MAX : r->limit;
	loop_post_work(j->n->loop, &j->w, list_run, list_done);
}

static void handle_alias_list(struct rpc_call *call, const ProtobufCMessage *msg, void *arg)
{
	const Mail__Rpc__DomainRequest *r = (const Mail__Rpc__DomainRequest *)msg;
	if (strlen(r->name) >= 256) {
		rpc_call_error(call, MAIL__RPC__ERROR_CODE__ERROR_BAD_REQUEST, "name too long");
		return;
	}
	struct list_job *j = list_job_new(call, arg, RPC_METHOD_ALIAS_LIST);
	snprintf(j->domain, sizeof(j->domain), "%s", r->name);
	loop_post_work(j->n->loop, &j->w, list_run, list_done);
}

static void handle_dkim_set(struct rpc_call *call, const ProtobufCMessage *msg, void *arg)
{
	const Mail__Rpc__DkimKey *r = (const Mail__Rpc__DkimKey *)msg;
	if (strlen(r->domain) >= 256 || strlen(r->selector) >= 64 || strlen(r->algorithm) >= 16) {
		rpc_call_error(call, MAIL__RPC__ERROR_CODE__ERROR_BAD_REQUEST, "name too long");
		return;
	}
	struct list_job *j = list_job_new(call, arg, RPC_METHOD_DKIM_SET);
	snprintf(j->key.domain, sizeof(j->key.domain), "%s", r->domain);
	snprintf(j->key.selector, sizeof(j->key.selector), "%s", r->selector);
	snprintf(j->key.algorithm, sizeof(j->key.algorithm), "%s", r->algorithm);
	j->key.public_b64 = xstrdup(r->public_b64);
	j->key.private_pem = xstrdup(r->private_pem);
	j->key.created_ms = r->created_ms ? r->created_ms : time_real_ms();
	loop_post_work(j->n->loop, &j->w, list_run, list_done);
}

static void dkim_req(struct rpc_call *call, const ProtobufCMessage *msg, void *arg,
		     uint16_t method)
{
	const Mail__Rpc__DkimRequest *r = (const Mail__Rpc__DkimRequest *)msg;
	if (strlen(r->domain) >= 256 || strlen(r->selector) >= 64) {
		rpc_call_error(call, MAIL__RPC__ERROR_CODE__ERROR_BAD_REQUEST, "name too long");
		return;
	}
	struct list_job *j = list_job_new(call, arg, method);
	snprintf(j->key.domain, sizeof(j->key.domain), "%s", r->domain);
	snprintf(j->key.selector, sizeof(j->key.selector), "%s", r->selector);
	j->include_private = r->include_private;
	loop_post_work(j->n->loop, &j->w, list_run, list_done);
}

static void handle_dkim_get(struct rpc_call *call, const ProtobufCMessage *msg, void *arg)
{
	dkim_req(call, msg, arg, RPC_METHOD_DKIM_GET);
}

static void handle_dkim_delete(struct rpc_call *call, const ProtobufCMessage *msg, void *arg)
{
	dkim_req(call, msg, arg, RPC_METHOD_DKIM_DELETE);
}

/* ---- session handoff (OPEN_SESSION) ------------------------------------- */

static uint32_t session_check(const Mail__Rpc__OpenSession *req, void *arg, const char **msg_r)
{
	struct node *n = arg;
	if (req->protocol != MAIL__RPC__PROTOCOL__PROTOCOL_IMAP &&
	    req->protocol != MAIL__RPC__PROTOCOL__PROTOCOL_POP3) {
		*msg_r = "protocol not served";
		return MAIL__RPC__ERROR_CODE__ERROR_BAD_REQUEST;
	}
	if (req->protocol == MAIL__RPC__PROTOCOL__PROTOCOL_IMAP && req->imap_tag[0] &&
	    !imap_tag_valid(req->imap_tag)) {
		*msg_r = "invalid IMAP tag";
		return MAIL__RPC__ERROR_CODE__ERROR_BAD_REQUEST;
	}
	char owner[256];
	const char *why = NULL;
	int shard = owner_of(n, req->user, owner, sizeof(owner), &why);
	if (shard < 0 || strcmp(owner, req->user) != 0) {
		*msg_r = "user is not a canonical mailbox owner";
		return MAIL__RPC__ERROR_CODE__ERROR_BAD_REQUEST;
	}
	if ((uint32_t)shard != req->shard || !local_shard(n, shard)) {
		refuse_not_primary(n, NULL, shard, "session", NULL);
		*msg_r = "user's shard not served by this node";
		return MAIL__RPC__ERROR_CODE__ERROR_NOT_PRIMARY;
	}
	if (loop_stopping(n->loop)) {
		*msg_r = "node is shutting down";
		return MAIL__RPC__ERROR_CODE__ERROR_UNAVAILABLE;
	}
	return 0;
}

static void session_start(struct conn *c, const Mail__Rpc__OpenSession *req, void *arg)
{
	struct node *n = arg;
	/* The session's limits, not the RPC connection's. */
	struct conn_limits lim = {
		.in_max = 64 * 1024,
		.out_high = 256 * 1024,
		.out_max = 4u << 20,
		.write_ms = 60000,
		.handshake_ms = 10000,
	};
	conn_set_limits(c, &lim);
	struct shard *sh = local_shard(n, (int)req->shard);
	if (req->protocol == MAIL__RPC__PROTOCOL__PROTOCOL_IMAP) {
		metrics_inc(n->ns->m_handoff_imap);
		imap_session_open(c, n, req->user, sh, req->imap_tag, req->client_address);
	} else {
		metrics_inc(n->ns->m_handoff_pop3);
		pop3_session_open(c, n, req->user, sh, req->utf8, req->client_address);
	}
}

static const struct rpc_method_handler node_handlers[] = {
	{ RPC_METHOD_PING, handle_ping },
	{ RPC_METHOD_DELIVER, handle_deliver },
	{ RPC_METHOD_AUTH, handle_auth },
	{ RPC_METHOD_USER_ADD, handle_user_add },
	{ RPC_METHOD_USER_GET, handle_user_get },
	{ RPC_METHOD_MAILBOX_LIST, handle_mailbox_list },
	{ RPC_METHOD_DOMAIN_ADD, handle_domain_add },
	{ RPC_METHOD_DOMAIN_LIST, handle_domain_list },
	{ RPC_METHOD_ALIAS_SET, handle_alias_set },
	{ RPC_METHOD_RESOLVE, handle_resolve },
	{ RPC_METHOD_USER_UPDATE, handle_user_update },
	{ RPC_METHOD_USER_DELETE, handle_user_delete },
	{ RPC_METHOD_DOMAIN_DELETE, handle_domain_delete },
	{ RPC_METHOD_ALIAS_DELETE, handle_alias_delete },
	{ RPC_METHOD_USER_LIST, handle_user_list },
	{ RPC_METHOD_ALIAS_LIST, handle_alias_list },
	{ RPC_METHOD_DKIM_SET, handle_dkim_set },
	{ RPC_METHOD_DKIM_GET, handle_dkim_get },
	{ RPC_METHOD_DKIM_DELETE, handle_dkim_delete },
};

static void member_info(const struct node *n, const char *spec, char *out, size_t out_len)
{
	snprintf(out, out_len, "addr=%s pid=%d tls=%d nshards=%u shards=%s", n->advertise,
		 (int)getpid(), n->rpc_tls ? 1 : 0, n->ns->nshards, spec);
}

struct node *node_new(struct loop *l, const struct config *cfg, struct tls_server *tls,
		      struct node_store *ns, bool primary, const char **error_r)
{
	struct node *n = xcalloc(1, sizeof(*n));
	n->loop = l;
	n->ns = ns;
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
		.session_check = session_check,
		.session_start = session_start,
	};
	n->rpc = rpc_server_new(l, &rc, error_r);
	if (!n->rpc) {
		node_free(&n);
		return NULL;
	}
	const char *pop3 = config_get_str(cfg, "pop3.listen");
	if (pop3) {
		struct listener_config lc = { .addr = pop3, .on_accept = pop3_session_accept,
					      .arg = n };
		n->pop3 = listener_open(l, &lc, error_r);
		if (!n->pop3) {
			node_free(&n);
			return NULL;
		}
	}
	const char *imap = config_get_str(cfg, "imap.listen");
	if (imap) {
		struct listener_config lc = { .addr = imap, .on_accept = imap_session_accept,
					      .arg = n };
		n->imap = listener_open(l, &lc, error_r);
		if (!n->imap) {
			node_free(&n);
			return NULL;
		}
	}
	const char *url = config_get_str(cfg, "redis.url");
	if (primary && url) {
		n->redis = redis_client_new(l, url, NULL, error_r);
		if (!n->redis) {
			node_free(&n);
			return NULL;
		}
		const char *adv = config_get_str(cfg, "rpc.advertise");
		if (adv) {
			snprintf(n->advertise, sizeof(n->advertise), "%s", adv);
		} else {
			/* rpc.listen may use port 0: advertise what was bound. */
			const char *listen = config_get_str(cfg, "rpc.listen");
			const char *colon = strrchr(listen, ':');
			int hl = colon ? (int)(colon - listen) : (int)strlen(listen);
			snprintf(n->advertise, sizeof(n->advertise), "%.*s:%u", hl, listen,
				 rpc_server_port(n->rpc));
		}
		n->rpc_tls = rpc_tls;
		char info[512];
		/* "shards=" is what we serve without a map (shards.local): the
		 * membership fallback must not go stale when a map disappears. */
		member_info(n, ns->local_spec, info, sizeof(info));
		n->hb = heartbeat_start(l, n->redis, "node", n->id, info,
					(uint32_t)config_get_duration_ms(cfg, "heartbeat.interval"),
					(uint32_t)config_get_duration_ms(cfg, "heartbeat.ttl"));
		n->follow = node_shardmap_start(l, n->redis, ns,
						(uint32_t)config_get_duration_ms(cfg, "shardmap.refresh"));
	}
	n->dedupe_ttl_ms = config_get_duration_ms(cfg, "delivery.dedupe_ttl");
	timer_init(&n->prune_timer, prune_tick, n);
	if (primary)
		timer_start(l, &n->prune_timer, 60000); /* first pass a minute after start */
	if (primary)
		LOG_INFO("node", 0, "rpc_listening", "id=%s port=%u shards=%s/%u redis=%s", n->id,
			 rpc_server_port(n->rpc), node_store_spec(ns), ns->nshards, url ? "on" : "off");
	return n;
}

uint16_t node_rpc_port(const struct node *n) { return rpc_server_port(n->rpc); }
struct loop *node_loop(const struct node *n) { return n->loop; }
uint64_t node_max_message(const struct node *n) { return n->ns->max_message; }

struct shard *node_user_shard(struct node *n, const char *login, char *out, size_t out_len)
{
	const char *why = NULL;
	out[0] = '\0';
	int shard = owner_of(n, login, out, out_len, &why);
	if (shard < 0) {
		out[0] = '\0';
		return NULL;
	}
	return local_shard(n, shard);
}

void node_drain(struct node *n)
{
	node_shardmap_stop(&n->follow);
	heartbeat_stop(&n->hb);
	if (timer_armed(&n->prune_timer))
		timer_stop(n->loop, &n->prune_timer);
}

void node_free(struct node **np)
{
	struct node *n = *np;
	if (!n)
		return;
	*np = NULL;
	node_shardmap_stop(&n->follow);
	heartbeat_stop(&n->hb);
	if (timer_armed(&n->prune_timer))
		timer_stop(n->loop, &n->prune_timer);
	listener_close(&n->pop3);
	listener_close(&n->imap);
	rpc_server_free(&n->rpc);
	redis_client_free(&n->redis);
	free(n->id);
	free(n);
}
