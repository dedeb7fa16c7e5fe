/* mailproxy: the stateless front proxy. */
#include <stdlib.h>

#include "common/daemon.h"
#include "proxy/proxy.h"

static struct proxy **proxies;

static int thread_init(struct daemon *d, struct loop *l, unsigned idx, const char **error_r)
{
	proxies[idx] = proxy_new(l, d->cfg, d->tls, idx == 0, error_r);
	return proxies[idx] ? 0 : -1;
}

static void thread_drain(struct daemon *d, struct loop *l, unsigned idx)
{
	(void)d;
	(void)l;
	if (proxies[idx])
		proxy_drain(proxies[idx]);
}

static void thread_done(struct daemon *d, struct loop *l, unsigned idx)
{
	(void)d;
	(void)l;
	proxy_free(&proxies[idx]);
}

int main(int argc, char **argv)
{
	struct daemon_spec spec = {
		.name = "mailproxy",
		.summary = "front proxy of the mail cluster: TLS, SMTP receiver, IMAP/POP3 routing",
		.defs = proxy_config_defs,
		.n_defs = proxy_config_defs_len,
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
	proxies = calloc(d.threads, sizeof(*proxies));
	int status = daemon_run(&d);
	free(proxies);
	daemon_cleanup(&d);
	return status;
}
