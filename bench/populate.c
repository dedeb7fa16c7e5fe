/* mailbench imap|pop3 --populate N --rpc ADDR: the setup step over a
 * mailnode's RPC API, as mailctl does it (user add, mailbox list, deliver)
 * but with many calls in flight: each user in the range is created (or
 * found), then its INBOX is filled to N messages by deliveries of generated
 * messages, a few users at a time and several deliveries in flight each. */
#include "bench/mailload.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/loop.h"
#include "proto/rpc.h"

#define POP_USERS_AT_ONCE 8
#define POP_DELIVERIES_PER_USER 16
#define POP_DEADLINE_MS 60000

struct prun;

struct puser {
	struct prun *r;
	unsigned idx;
	char name[256];
	char canonical[256];
	uint32_t shard;
	uint32_t to_send, sent, done;
	unsigned inflight;
	bool active;
};

struct prun {
	const struct load_config *cfg;
	struct loop *loop;
	struct rpc_client *rc;
	struct puser slots[POP_USERS_AT_ONCE];
	uint64_t next_user;
	unsigned active;
	uint64_t created, existed, delivered, errors, users_done;
	char first_error[200];
	struct buf body;
	uint64_t last_report_ns;
};

static void pu_next_user(struct prun *r, struct puser *u);

static void pu_error(struct prun *r, const char *what, enum rpc_status st,
		     const Mail__Rpc__ErrorReply *err, const char *user)
{
	r->errors++;
	if (!r->first_error[0])
		snprintf(r->first_error, sizeof(r->first_error), "%s %.80s: %s%s%.80s", what, user,
			 rpc_status_str(st), err ? ": " : "", err ? err->message : "");
}

static void pu_finish(struct puser *u)
{
	struct prun *r = u->r;
	u->active = false;
	r->active--;
	r->users_done++;
	pu_next_user(r, u);
}

static void pu_send_more(struct puser *u);

static void on_delivered(void *arg, enum rpc_status st, const ProtobufCMessage *reply,
			 const Mail__Rpc__ErrorReply *err)
{
	struct puser *u = arg;
	struct prun *r = u->r;
	u->inflight--;
	u->done++;
	const Mail__Rpc__DeliverReply *rep = (const Mail__Rpc__DeliverReply *)reply;
	if (st != RPC_OK) {
		pu_error(r, "deliver", st, err, u->canonical);
	} else if (!rep || rep->n_statuses != 1 || rep->statuses[0]->code / 100 != 2) {
		r->errors++;
		if (!r->first_error[0])
			snprintf(r->first_error, sizeof(r->first_error), "deliver %.80s: %u %.80s",
				 u->canonical, rep && rep->n_statuses ? rep->statuses[0]->code : 0,
				 rep && rep->n_statuses ? rep->statuses[0]->text : "no status");
	} else {
		r->delivered++;
	}
	uint64_t now = time_mono_ns();
	if (r->cfg->progress && now - r->last_report_ns > 1000000000ull) {
		r->last_report_ns = now;
		fprintf(stderr, "populate: %" PRIu64 " users done, %" PRIu64 " messages delivered\n",
			r->users_done, r->delivered);
	}
	pu_send_more(u);
}

static void pu_send_more(struct puser *u)
{
	struct prun *r = u->r;
	while (u->sent < u->to_send && u->inflight < POP_DELIVERIES_PER_USER) {
		buf_reset(&r->body);
		load_message(&r->body, u->canonical, r->cfg->msg_size, u->idx, ++u->sent);
		Mail__Rpc__DeliverRequest req = MAIL__RPC__DELIVER_REQUEST__INIT;
		char *rcpt = u->canonical;
		req.shard = u->shard;
		req.sender = "bench@mailbench.test";
		req.n_recipients = 1;
		req.recipients = &rcpt;
		req.body.data = r->body.data;
		req.body.len = r->body.len;
		req.received_ms = time_real_ms();
		u->inflight++;
		rpc_client_call(r->rc, RPC_METHOD_DELIVER, &req.base, POP_DEADLINE_MS, on_delivered, u);
	}
	if (u->done >= u->to_send && u->inflight == 0 && u->active)
		pu_finish(u);
}

static void on_mailboxes(void *arg, enum rpc_status st, const ProtobufCMessage *reply,
			 const Mail__Rpc__ErrorReply *err)
{
	struct puser *u = arg;
	struct prun *r = u->r;
	if (st != RPC_OK || !reply) {
		pu_error(r, "mailbox list", st, err, u->canonical);
		pu_finish(u);
		return;
	}
	const Mail__Rpc__MailboxList *l = (const Mail__Rpc__MailboxList *)reply;
	uint32_t have = 0;
	for (size_t i = 0; i < l->n_mailboxes; i++)
		if (strcmp(l->mailboxes[i]->name, "INBOX") == 0)
			have = l->mailboxes[i]->messages;
	u->to_send = r->cfg->populate > have ? r->cfg->populate - have : 0;
	pu_send_more(u);
}

static void pu_list(struct puser *u, const Mail__Rpc__UserInfo *info)
{
	struct prun *r = u->r;
	snprintf(u->canonical, sizeof(u->canonical), "%s", info->user);
	u->shard = info->shard;
	Mail__Rpc__UserRequest req = MAIL__RPC__USER_REQUEST__INIT;
	req.user = u->canonical;
	rpc_client_call(r->rc, RPC_METHOD_MAILBOX_LIST, &req.base, POP_DEADLINE_MS, on_mailboxes, u);
}

static void on_user_get(void *arg, enum rpc_status st, const ProtobufCMessage *reply,
			const Mail__Rpc__ErrorReply *err)
{
	struct puser *u = arg;
	if (st != RPC_OK || !reply) {
		pu_error(u->r, "user get", st, err, u->name);
		pu_finish(u);
		return;
	}
	pu_list(u, (const Mail__Rpc__UserInfo *)reply);
}

static void on_user_add(void *arg, enum rpc_status st, const ProtobufCMessage *reply,
			const Mail__Rpc__ErrorReply *err)
{
	struct puser *u = arg;
	struct prun *r = u->r;
	if (st == RPC_REMOTE_ERROR && err && strncmp(err->message, "exists", 6) == 0) {
		r->existed++;
		Mail__Rpc__UserRequest req = MAIL__RPC__USER_REQUEST__INIT;
		req.user = u->name;
		rpc_client_call(r->rc, RPC_METHOD_USER_GET, &req.base, POP_DEADLINE_MS, on_user_get, u);
		return;
	}
	if (st != RPC_OK || !reply) {
		pu_error(r, "user add", st, err, u->name);
		pu_finish(u);
		return;
	}
	r->created++;
	pu_list(u, (const Mail__Rpc__UserInfo *)reply);
}

static void pu_next_user(struct prun *r, struct puser *u)
{
	if (r->next_user > r->cfg->user_hi)
		return;
	u->idx = (unsigned)r->next_user++;
	load_user_name(r->cfg, u->idx, u->name, sizeof(u->name));
	u->canonical[0] = '\0';
	u->to_send = u->sent = u->done = 0;
	u->inflight = 0;
	u->active = true;
	r->active++;
	Mail__Rpc__UserAddRequest req = MAIL__RPC__USER_ADD_REQUEST__INIT;
	req.user = u->name;
	req.password = (char *)r->cfg->password;
	rpc_client_call(r->rc, RPC_METHOD_USER_ADD, &req.base, POP_DEADLINE_MS, on_user_add, u);
}

struct ping_wait {
	bool done, ok;
};

static void on_pong(void *arg, enum rpc_status st, const ProtobufCMessage *reply,
		    const Mail__Rpc__ErrorReply *err)
{
	struct ping_wait *w = arg;
	UNUSED(reply);
	UNUSED(err);
	w->done = true;
	w->ok = st == RPC_OK;
}

static bool ping_done(void *arg)
{
	return ((struct ping_wait *)arg)->done;
}

static bool never(void *arg)
{
	UNUSED(arg);
	return false;
}

/* The node may still be starting: ping until it answers (10 s). */
static bool wait_node(struct prun *r)
{
	for (int i = 0; i < 50; i++) {
		struct ping_wait w = { 0 };
		Mail__Rpc__Ping ping = MAIL__RPC__PING__INIT;
		ping.from = "mailbench";
		rpc_client_call(r->rc, RPC_METHOD_PING, &ping.base, 2000, on_pong, &w);
		loop_run_until(r->loop, ping_done, &w, 3000);
		if (w.ok)
			return true;
		loop_run_until(r->loop, never, NULL, 200);
	}
	return false;
}

static bool pop_done(void *arg)
{
	struct prun *r = arg;
	return r->active == 0 && r->next_user > r->cfg->user_hi;
}

int bench_populate_rpc(const struct load_config *cfg)
{
	const char *err = NULL;
	struct loop_config lc = { .buf_count = 256 };
	struct loop *l = loop_new(&lc, &err);
	if (!l) {
		fprintf(stderr, "mailbench: %s\n", err);
		return 1;
	}
	struct prun r = { .cfg = cfg, .loop = l, .next_user = cfg->user_lo };
	struct rpc_client_config cc = { .addr = cfg->rpc, .max_frame = 96u << 20 };
	r.rc = rpc_client_new(l, &cc, &err);
	if (!r.rc) {
		fprintf(stderr, "mailbench: --rpc: %s\n", err);
		loop_free(&l);
		return 2;
	}
	buf_init(&r.body, 0);
	if (!wait_node(&r)) {
		fprintf(stderr, "mailbench: --rpc %s: no answer to a ping\n", cfg->rpc);
		rpc_client_free(&r.rc);
		buf_cleanup(&r.body);
		loop_free(&l);
		return 1;
	}
	uint64_t t0 = time_mono_ns();
	r.last_report_ns = t0;
	for (unsigned i = 0; i < POP_USERS_AT_ONCE; i++) {
		r.slots[i].r = &r;
		pu_next_user(&r, &r.slots[i]);
	}
	uint64_t nusers = (uint64_t)cfg->user_hi - cfg->user_lo + 1;
	/* Bounded: a generous budget per user (scrypt) and per message. */
	uint64_t budget = 60000 + nusers * 2000 + nusers * cfg->populate * 20;
	if (loop_run_until(l, pop_done, &r, (uint32_t)MIN(budget, (uint64_t)UINT32_MAX)) < 0) {
		r.errors++;
		snprintf(r.first_error, sizeof(r.first_error), "timed out");
	}
	double secs = (double)(time_mono_ns() - t0) / 1e9;
	if (cfg->json)
		printf("{\"bench\":\"populate\",\"via\":\"rpc\",\"users\":%" PRIu64
		       ",\"created\":%" PRIu64 ",\"existed\":%" PRIu64 ",\"messages_per_inbox\":%u,"
		       "\"delivered\":%" PRIu64 ",\"seconds\":%.3f,\"errors\":%" PRIu64 "}\n",
		       nusers, r.created, r.existed, cfg->populate, r.delivered, secs, r.errors);
	else
		printf("populate: users %u-%u (%" PRIu64 " created, %" PRIu64 " existed), INBOX "
		       "filled to %u messages: %" PRIu64 " delivered by RPC in %.1f s (%.0f/s), %" PRIu64
		       " errors\n",
		       cfg->user_lo, cfg->user_hi, r.created, r.existed, cfg->populate, r.delivered,
		       secs, secs > 0 ? (double)r.delivered / secs : 0, r.errors);
	if (r.errors)
		fprintf(stderr, "mailbench: populate: %s\n", r.first_error);
	rpc_client_free(&r.rc);
	buf_cleanup(&r.body);
	loop_free(&l);
	return r.errors ? 1 : 0;
}
