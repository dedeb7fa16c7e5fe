/* Socket helpers (only common/ touches sockets). */
#ifndef COMMON_NET_H
#define COMMON_NET_H

#include <stdint.h>
#include <sys/socket.h>

/* Parse "1.2.3.4:25", "[::1]:993", "*:25" (any IPv6+IPv4), "localhost:25".
 * Numeric addresses only, plus "localhost" and "*". Returns 0 or -1. */
int net_parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len_r,
		   const char **error_r);
/* Socket bound with SO_REUSEADDR + SO_REUSEPORT, listening, with the
 * options of net_tune_accepted set (accepted sockets inherit them).
 * -1 on error. */
int net_listen(const struct sockaddr *sa, socklen_t len, int backlog,
	       const char **error_r);
uint16_t net_local_port(int fd);
/* TCP_NODELAY and keepalive on an accepted or connected socket. */
void net_tune_accepted(int fd);
/* "1.2.3.4:5678" or "[::1]:25"; out_len >= 64. */
const char *net_addr_str(const struct sockaddr *sa, char *out, size_t out_len);

#endif
