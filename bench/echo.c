#include "bench/echo.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ssl.h>

#include "common/log.h"
#include "common/loop.h"
#include "common/net.h"
#include "common/tls.h"

/* ---- server ---------------------------------------------------------- */

struct echo_server {
	struct listener *plain, *tls, *starttls;
	struct tls_server *ts;
	uint64_t bytes;
};

struct echo_conn {
	struct echo_server *s;
	bool line_mode;
};

/* Takes at most 64 KiB per call: the loop calls again while the output
 * stays below its high-water mark, so a fast sender is slowed, not cut. */
static ssize_t echo_raw(struct conn *c, const uint8_t *d, size_t n)
{
	struct echo_conn *ec = conn_user(c);
	n = MIN(n, (size_t)65536);
	ec->s->bytes += n;
	if (conn_write(c, d, n) < 0)
		return -1;
	return (ssize_t)n;
}

static ssize_t echo_on_data(struct conn *c, const uint8_t *d, size_t n)
{
	struct echo_conn *ec = conn_user(c);
	if (!ec->line_mode)
		return echo_raw(c, d, n);
	const uint8_t *nl = memchr(d, '\n', n);
	if (!nl) {
		if (n > 1024) {
			conn_printf(c, "ERR line too long\r\n");
			conn_close(c);
			return (ssize_t)n;
		}
		return 0;
	}
	size_t line_len = (size_t)(nl - d) + 1;
	size_t text = line_len - 1;
	if (text && d[text - 1] == '\r')
		text--;
	struct view cmd = view_make(d, text);
	if (view_eq_nocase(cmd, "STARTTLS")) {
		if (!ec->s->ts) {
			conn_printf(c, "ERR no TLS\r\n");
			return (ssize_t)line_len;
		}
		conn_printf(c, "OK begin TLS\r\n");
		if (conn_starttls_server(c, ec->s->ts) < 0) {
			conn_close(c);
			return (ssize_t)line_len;
		}
		ec->line_mode = false;
		return (ssize_t)line_len;
	}
	if (view_eq_nocase(cmd, "QUIT")) {
		conn_printf(c, "BYE\r\n");
		conn_close(c);
		return (ssize_t)line_len;
	}
	conn_printf(c, "ECHO %.*s\r\n", (int)text, (const char *)d);
	return (ssize_t)line_len;
}

static void echo_on_close(struct conn *c, enum conn_close_reason why)
{
	UNUSED(why);
	free(conn_user(c));
}

static const struct conn_handler echo_handler = {
	.name = "echo",
	.on_data = echo_on_data,
	.on_close = echo_on_close,
};

static void echo_accept_common(struct conn *c, struct echo_server *s, bool line_mode)
{
	struct echo_conn *ec = xcalloc(1, sizeof(*ec));
	ec->s = s;
	ec->line_mode = line_mode;
	conn_set_handler(c, &echo_handler, ec);
	if (line_mode)
		conn_printf(c, "OK echo ready\r\n");
}

static void accept_raw(struct conn *c, void *arg)
{
	echo_accept_common(c, arg, false);
}

static void accept_line(struct conn *c, void *arg)
{
	echo_accept_common(c, arg, true);
}

struct echo_server *echo_server_new(struct loop *l, const struct echo_server_config *cfg,
				    const char **error_r)
{
	struct echo_server *s = xcalloc(1, sizeof(*s));
	s->ts = cfg->tls;
	struct listener_config lc = { .arg = s };
	if (cfg->plain_addr) {
		lc.addr = cfg->plain_addr;
		lc.on_accept = accept_raw;
		lc.tls = NULL;
		if (!(s->plain = listener_open(l, &lc, error_r)))
			goto fail;
	}
	if (cfg->tls_addr) {
		if (!cfg->tls) {
			*error_r = "TLS listener needs a certificate";
			goto fail;
		}
		lc.addr = cfg->tls_addr;
		lc.on_accept = accept_raw;
		lc.tls = cfg->tls;
		if (!(s->tls = listener_open(l, &lc, error_r)))
			goto fail;
	}
	if (cfg->starttls_addr) {
		lc.addr = cfg->starttls_addr;
		lc.on_accept = accept_line;
		lc.tls = NULL;
		if (!(s->starttls = listener_open(l, &lc, error_r)))
			goto fail;
	}
	return s;
fail:
	echo_server_free(&s);
	return NULL;
}

void echo_server_ports(const struct echo_server *s, uint16_t *plain, uint16_t *tls,
		       uint16_t *starttls)
{
	*plain = s->plain ? listener_port(s->plain) : 0;
	*tls = s->tls ? listener_port(s->tls) : 0;
	*starttls = s->starttls ? listener_port(s->starttls) : 0;
}

uint64_t echo_server_bytes(const struct echo_server *s) { return s->bytes; }

void echo_server_free(struct echo_server **sp)
{
	struct echo_server *s = *sp;
	if (!s)
		return;
	*sp = NULL;
	listener_close(&s->plain);
	listener_close(&s->tls);
	listener_close(&s->starttls);
	free(s);
}

/* ---- clients --------------------------------------------------------- */

struct echo_run;

struct eclient {
	struct echo_run *run;
	struct conn *c;
	size_t got;
	uint64_t sent_ns;
	bool waiting;
};

struct echo_run {
	struct loop *loop;
	const struct echo_client_config *cfg;
	struct echo_result *res;
	struct sockaddr_storage sa;
	socklen_t sa_len;
	struct tls_client *tc;
	SSL_SESSION *session;
	uint8_t *msg;
	struct eclient *clients;
	uint64_t start_ns, end_ns;
	bool stopping;
	unsigned live;
	struct timer tick;
	uint64_t last_requests;
};

static void eclient_start(struct eclient *ec);

static bool run_over(struct echo_run *r)
{
	if (r->stopping)
		return true;
	if (time_mono_ns() >= r->end_ns ||
	    (r->cfg->max_requests && r->res->requests >= r->cfg->max_requests))
		r->stopping = true;
	return r->stopping;
}

static void eclient_send(struct eclient *ec)
{
	ec->got = 0;
	ec->waiting = true;
	ec->sent_ns = time_mono_ns();
	conn_write(ec->c, ec->run->msg, ec->run->cfg->msg_size);
}

static ssize_t eclient_on_data(struct conn *c, const uint8_t *d, size_t n)
{
	struct eclient *ec = conn_user(c);
	struct echo_run *r = ec->run;
	UNUSED(d);
	if (!ec->waiting)
		return (ssize_t)n;
	ec->got += n;
	if (ec->got < r->cfg->msg_size)
		return (ssize_t)n;
	ec->waiting = false;
	r->res->requests++;
	hist_record(&r->res->latency_us, (time_mono_ns() - ec->sent_ns) / 1000);
	if (r->cfg->mode == ECHO_MODE_HANDSHAKES) {
		SSL *ssl = conn_ssl(c);
		if (ssl && SSL_session_reused(ssl))
			r->res->resumed++;
		if (r->cfg->resume && ssl) {
			SSL_SESSION *s = tls_client_get1_session(ssl);
			if (s) {
				SSL_SESSION_free(r->session);
				r->session = s;
			}
		}
		conn_close(c);
		return (ssize_t)n;
	}
	if (run_over(r)) {
		conn_close(c);
		return (ssize_t)n;
	}
	eclient_send(ec);
	return (ssize_t)n;
}

static void eclient_on_connect(struct conn *c, int status)
{
	struct eclient *ec = conn_user(c);
	if (status < 0)
		return;
	if (!conn_ssl(c))
		eclient_send(ec);
}

static void eclient_on_tls_ready(struct conn *c)
{
	eclient_send(conn_user(c));
}

static void eclient_on_close(struct conn *c, enum conn_close_reason why)
{
	struct eclient *ec = conn_user(c);
	struct echo_run *r = ec->run;
	ec->c = NULL;
	if (why != CONN_CLOSE_LOCAL || ec->waiting)
		r->res->errors++;
	r->live--;
	if (!run_over(r) && (r->cfg->mode == ECHO_MODE_HANDSHAKES || why != CONN_CLOSE_LOCAL))
		eclient_start(ec);
}

static const struct conn_handler eclient_handler = {
	.name = "echoc",
	.on_data = eclient_on_data,
	.on_connect = eclient_on_connect,
	.on_tls_ready = eclient_on_tls_ready,
	.on_close = eclient_on_close,
};

static void eclient_start(struct eclient *ec)
{
	struct echo_run *r = ec->run;
	ec->waiting = false;
	ec->c = conn_connect(r->loop, (struct sockaddr *)&r->sa, r->sa_len, &eclient_handler, ec);
	if (!ec->c) {
		r->res->errors++;
		return;
	}
	r->live++;
	if (r->cfg->tls) {
		SSL *ssl = tls_client_new_ssl(r->tc, r->cfg->tls_name);
		if (r->cfg->resume && r->session)
			tls_client_set_session(ssl, r->session);
		conn_starttls_client(ec->c, ssl);
	}
}

static void tick_cb(struct timer *t)
{
	struct echo_run *r = t->arg;
	if (r->cfg->progress) {
		double el = (double)(time_mono_ns() - r->start_ns) / 1e9;
		fprintf(stderr, "\r[%5.1fs] requests=%llu (%llu/s) errors=%llu live=%u   ", el,
			(unsigned long long)r->res->requests,
			(unsigned long long)(r->res->requests - r->last_requests),
			(unsigned long long)r->res->errors, r->live);
		r->last_requests = r->res->requests;
	}
	run_over(r);
	timer_start(r->loop, t, 1000);
}

static bool run_finished(void *arg)
{
	struct echo_run *r = arg;
	run_over(r);
	return r->stopping && r->live == 0;
}

int echo_client_run(struct loop *l, const struct echo_client_config *cfg,
		    struct echo_result *res, const char **error_r)
{
	struct echo_run r = { .loop = l, .cfg = cfg, .res = res };
	memset(res, 0, sizeof(*res));
	hist_init(&res->latency_us);
	if (net_parse_addr(cfg->addr, &r.sa, &r.sa_len, error_r) < 0)
		return -1;
	if (cfg->tls) {
		r.tc = tls_client_new(NULL, NULL, NULL, error_r);
		if (!r.tc)
			return -1;
	}
	r.msg = xmalloc(cfg->msg_size ? cfg->msg_size : 1);
	for (unsigned i = 0; i < cfg->msg_size; i++)
		r.msg[i] = (uint8_t)('a' + i % 26);
	r.clients = xcalloc(cfg->conns, sizeof(*r.clients));
	uint64_t submits0 = loop_get_stats(l)->submits;
	r.start_ns = time_mono_ns();
	r.end_ns = r.start_ns + (uint64_t)cfg->seconds * 1000000000ull;
	for (unsigned i = 0; i < cfg->conns; i++) {
		r.clients[i].run = &r;
		eclient_start(&r.clients[i]);
	}
	timer_init(&r.tick, tick_cb, &r);
	timer_start(l, &r.tick, 1000);
	/* Bound: the configured time plus a grace period for closing. */
	loop_run_until(l, run_finished, &r, cfg->seconds * 1000 + 10000);
	timer_stop(l, &r.tick);
	res->elapsed_s = (double)(time_mono_ns() - r.start_ns) / 1e9;
	res->submits = loop_get_stats(l)->submits - submits0;
	if (cfg->progress)
		fprintf(stderr, "\n");
	for (unsigned i = 0; i < cfg->conns; i++)
		if (r.clients[i].c)
			conn_abort(r.clients[i].c, CONN_CLOSE_LOCAL);
	SSL_SESSION_free(r.session);
	tls_client_free(&r.tc);
	free(r.clients);
	free(r.msg);
	return 0;
}
