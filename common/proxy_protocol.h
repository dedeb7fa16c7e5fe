/* PROXY protocol version 2 (the binary header HAProxy and TCP load
 * balancers put in front of a connection to pass the client's address).
 * Pure code: no I/O, no allocation.
 *
 * Header: the 12-byte signature, a version/command byte (0x2 in the high
 * nibble; LOCAL 0x0 or PROXY 0x1), a family/transport byte, a 16-bit
 * big-endian length of what follows, then the addresses (TCP over IPv4:
 * 12 bytes, over IPv6: 36 bytes, UNIX: 216 bytes) and optional TLVs, which
 * are skipped.
 *
 * Only accept it from configured trusted peers: anybody else could claim
 * any address. A LOCAL command (health checks from the balancer itself)
 * and UNSPEC/UNIX/UDP families keep the connection's real peer address. */
#ifndef COMMON_PROXY_PROTOCOL_H
#define COMMON_PROXY_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define PROXY_PROTOCOL_SIG_LEN 12
/* Largest header accepted (16 + addresses + TLVs). Longer: PP_BAD. */
#define PROXY_PROTOCOL_MAX 1024

enum pp_result {
	PP_OK,   /* a whole header; *consumed_r bytes are it */
	PP_MORE, /* a valid prefix: wait for more bytes */
	PP_BAD,  /* not a (valid, acceptable) PROXY v2 header: close */
};

struct pp_info {
	bool has_addr; /* false: LOCAL or an address family we keep no address for */
	struct sockaddr_storage src, dst;
	socklen_t addr_len;
};

enum pp_result proxy_protocol_parse(const uint8_t *p, size_t len, struct pp_info *out,
				    size_t *consumed_r, const char **error_r);

#endif
