/* mailnode: the storage node daemon. */
#include <stdio.h>
#include <stdlib.h>

#include "common/daemon.h"
#include "node/node.h"

static struct node **nodes;
static struct node_store *store;

static int thread_init(struct daemon *d, struct loop *l, unsigned idx, const char **error_r)
{
	nodes[idx] = node_new(l, d->cfg, d->tls, store, idx == 0, error_r);
	return nodes[idx] ? 0 : -1;
}

static void thread_drain(struct daemon *d, struct loop *l, unsigned idx)
{
	(void)d;
	(void)l;
	if (nodes[idx])
		node_drain(nodes[idx]);
}

static void thread_done(struct daemon *d, struct loop *l, unsigned idx)
{
	(void)d;
	(void)l;
	node_free(&nodes[idx]);
}

int main(int argc, char **argv)
{
	struct daemon_spec spec = {
		.name = "mailnode",
		.summary = "storage node of the mail cluster: RPC API, IMAP/POP3 backends",
		.defs = node_config_defs,
		.n_defs = node_config_defs_len,
		.thread_init = thread_init,
		.thread_done = thread_done,
		.thread_drain = thread_drain,
	};
	struct daemon d;
	int r = daemon_init(&d, &spec, argc, argv);
	if (r != 0) {
		daemon_cleanup(&d);
		return r > 0 ? 0 : 2;
	}
	const char *err = NULL;
	store = node_store_open(d.cfg, &err);
	if (!store) {
		fprintf(stderr, "mailnode: %s\n", err);
		daemon_cleanup(&d);
		return 1;
	}
	nodes = calloc(d.threads, sizeof(*nodes));
	int status = daemon_run(&d);
	free(nodes);
	node_store_close(&store);
	daemon_cleanup(&d);
	return status;
}
