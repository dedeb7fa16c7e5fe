#include "common/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base.h"

int net_parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len_r,
		   const char **error_r)
{
	static __thread char err[160];
	char host[128];
	const char *port_s;
	memset(ss, 0, sizeof(*ss));
	if (s[0] == '[') {
		const char *end = strchr(s, ']');
		if (!end || end[1] != ':' || (size_t)(end - s - 1) >= sizeof(host))
			goto bad;
		memcpy(host, s + 1, (size_t)(end - s - 1));
		host[end - s - 1] = '\0';
		port_s = end + 2;
	} else {
		const char *colon = strrchr(s, ':');
		if (!colon || (size_t)(colon - s) >= sizeof(host))
			goto bad;
		memcpy(host, s, (size_t)(colon - s));
		host[colon - s] = '\0';
		port_s = colon + 1;
	}
	char *endp;
	errno = 0;
	long port = strtol(port_s, &endp, 10);
	if (*port_s == '\0' || *endp != '\0' || errno || port < 0 || port > 65535)
		goto bad;
	struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
	if (strcmp(host, "*") == 0 || strcmp(host, "") == 0) {
		in6->sin6_family = AF_INET6;
		in6->sin6_addr = in6addr_any;
		in6->sin6_port = htons((uint16_t)port);
		*len_r = sizeof(*in6);
		return 0;
	}
	if (strcmp(host, "localhost") == 0)
		strcpy(host, "127.0.0.1");
	if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)port);
		*len_r = sizeof(*in4);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		*len_r = sizeof(*in6);
		return 0;
	}
bad:
	snprintf(err, sizeof(err), "bad address '%.80s' (want host:port, [v6]:port or *:port)", s);
	*error_r = err;
	return -1;
}

/* Addresses this process has bound with SO_REUSEPORT. Another thread may
 * share them; another process must not (two daemons silently splitting one
 * port's connections would be an operator's nightmare). */
static pthread_mutex_t bound_mu = PTHREAD_MUTEX_INITIALIZER;
static struct sockaddr_storage *bound;
static size_t n_bound;

static bool bound_here(const struct sockaddr *sa, socklen_t len)
{
	for (size_t i = 0; i < n_bound; i++)
		if (memcmp(&bound[i], sa, len) == 0)
			return true;
	return false;
}

static uint16_t sa_port(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)sa)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
}

int net_listen(const struct sockaddr *sa, socklen_t len, int backlog, const char **error_r)
{
	static __thread char err[160];
	int fd = -1;
	pthread_mutex_lock(&bound_mu);
	if (sa_port(sa) != 0 && !bound_here(sa, len)) {
		/* Probe without SO_REUSEPORT: fails if anyone else holds it. */
		int probe = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe < 0) {
			pthread_mutex_unlock(&bound_mu);
			goto fail;
		}
		int one = 1, zero = 0;
		setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (sa->sa_family == AF_INET6)
			setsockopt(probe, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
		int r = bind(probe, sa, len);
		int e = errno;
		close(probe);
		if (r < 0) {
			pthread_mutex_unlock(&bound_mu);
			errno = e;
			goto fail;
		}
	}
	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		pthread_mutex_unlock(&bound_mu);
		goto fail;
	}
	int one = 1, zero = 0;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (sa->sa_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	/* Accepted sockets inherit these: no setsockopt per connection. */
	net_tune_accepted(fd);
	if (bind(fd, sa, len) < 0 || listen(fd, backlog) < 0) {
		pthread_mutex_unlock(&bound_mu);
		goto fail;
	}
	if (sa_port(sa) != 0 && !bound_here(sa, len)) {
		bound = xrealloc(bound, (n_bound + 1) * sizeof(*bound));
		memset(&bound[n_bound], 0, sizeof(*bound));
		memcpy(&bound[n_bound++], sa, len);
	}
	pthread_mutex_unlock(&bound_mu);
	return fd;
fail:;
	int e = errno;
	char a[80];
	snprintf(err, sizeof(err), "listen on %s: %s", net_addr_str(sa, a, sizeof(a)), strerror(e));
	*error_r = err;
	if (fd >= 0)
		close(fd);
	return -1;
}

uint16_t net_local_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
		return 0;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return 0;
}

void net_tune_accepted(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
}

const char *net_addr_str(const struct sockaddr *sa, char *out, size_t out_len)
{
	char h[INET6_ADDRSTRLEN];
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in4 = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &in4->sin_addr, h, sizeof(h));
		snprintf(out, out_len, "%s:%u", h, ntohs(in4->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, h, sizeof(h));
		snprintf(out, out_len, "[%s]:%u", h, ntohs(in6->sin6_port));
	} else {
		snprintf(out, out_len, "unknown");
	}
	return out;
}
