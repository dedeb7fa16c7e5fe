/* conn_connect_from: outgoing connections from chosen 127.0.0.x source
 * addresses (mailbench idle spreads its sessions over them) arrive with
 * that source at the listener; a source that cannot be bound gives NULL
 * and leaks nothing. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/log.h"
#include "common/loop.h"
#include "tests/unit/check.h"

static struct loop *L;
static uint32_t seen_src[8];
static int accepted, connected, closed;

static ssize_t sink(struct conn *c, const uint8_t *d, size_t n)
{
	UNUSED(c);
	UNUSED(d);
	return (ssize_t)n;
}

static void on_close_count(struct conn *c, enum conn_close_reason why)
{
	UNUSED(c);
	UNUSED(why);
	closed++;
}

static const struct conn_handler server_h = { .name = "srv", .on_data = sink,
					       .on_close = on_close_count };

static void on_accept(struct conn *c, void *arg)
{
	UNUSED(arg);
	const struct sockaddr_in *peer = (const struct sockaddr_in *)conn_peer(c);
	if (accepted < 8)
		seen_src[accepted] = ntohl(peer->sin_addr.s_addr);
	accepted++;
	conn_set_handler(c, &server_h, NULL);
}

static void on_connect(struct conn *c, int status)
{
	UNUSED(c);
	if (status == 0)
		connected++;
}

static const struct conn_handler client_h = { .name = "cli", .on_data = sink,
					      .on_connect = on_connect,
					      .on_close = on_close_count };

static bool all_in(void *a)
{
	UNUSED(a);
	return accepted == 3 && connected == 3;
}

static bool all_closed(void *a)
{
	UNUSED(a);
	return closed == 6;
}

int main(void)
{
	log_init("test", LOG_LEVEL_WARN);
	const char *err = NULL;
	L = loop_new(NULL, &err);
	CHECK(L != NULL);
	struct listener_config lc = { .addr = "127.0.0.1:0", .on_accept = on_accept };
	struct listener *ls = listener_open(L, &lc, &err);
	CHECK(ls != NULL);
	struct sockaddr_in dst = { .sin_family = AF_INET, .sin_port = htons(listener_port(ls)) };
	dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	struct conn *cs[3];
	for (unsigned i = 0; i < 3; i++) {
		struct sockaddr_in src = { .sin_family = AF_INET };
		src.sin_addr.s_addr = htonl(0x7f000002u + i); /* 127.0.0.2 .. 4 */
		cs[i] = conn_connect_from(L, (struct sockaddr *)&dst, sizeof(dst),
					  (struct sockaddr *)&src, sizeof(src), &client_h, NULL);
		CHECK(cs[i] != NULL);
	}
	/* Not an address of this host: no socket, no connection. */
	struct sockaddr_in bad = { .sin_family = AF_INET };
	bad.sin_addr.s_addr = htonl(0xc0000201u); /* 192.0.2.1 */
	CHECK(conn_connect_from(L, (struct sockaddr *)&dst, sizeof(dst), (struct sockaddr *)&bad,
				sizeof(bad), &client_h, NULL) == NULL);
	CHECK(loop_run_until(L, all_in, NULL, 3000) == 0);
	bool found[3] = { false, false, false };
	for (int i = 0; i < accepted && i < 8; i++)
		if (seen_src[i] >= 0x7f000002u && seen_src[i] <= 0x7f000004u)
			found[seen_src[i] - 0x7f000002u] = true;
	CHECK(found[0] && found[1] && found[2]);
	for (unsigned i = 0; i < 3; i++)
		conn_close(cs[i]);
	CHECK(loop_run_until(L, all_closed, NULL, 3000) == 0);
	listener_close(&ls);
	loop_free(&L);
	return check_finish("loop_connect_from");
}
