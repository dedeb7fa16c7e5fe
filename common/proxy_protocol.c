#include "common/proxy_protocol.h"

#include <netinet/in.h>
#include <string.h>

static const uint8_t sig[PROXY_PROTOCOL_SIG_LEN] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
						     0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a };

static enum pp_result bad(const char **error_r, const char *why)
{
	*error_r = why;
	return PP_BAD;
}

enum pp_result proxy_protocol_parse(const uint8_t *p, size_t len, struct pp_info *out,
				    size_t *consumed_r, const char **error_r)
{
	memset(out, 0, sizeof(*out));
	*consumed_r = 0;
	*error_r = NULL;
	size_t n = len < PROXY_PROTOCOL_SIG_LEN ? len : PROXY_PROTOCOL_SIG_LEN;
	if (memcmp(p, sig, n) != 0)
		return bad(error_r, "no PROXY v2 signature");
	if (len < 16)
		return PP_MORE;
	uint8_t ver = p[12] >> 4, cmd = p[12] & 0x0f;
	uint8_t fam = p[13] >> 4, proto = p[13] & 0x0f;
	size_t body = ((size_t)p[14] << 8) | p[15];
	if (ver != 2)
		return bad(error_r, "PROXY version is not 2");
	if (cmd > 1)
		return bad(error_r, "unknown PROXY command");
	if (fam > 3 || proto > 2)
		return bad(error_r, "unknown PROXY address family or transport");
	if (16 + body > PROXY_PROTOCOL_MAX)
		return bad(error_r, "PROXY header too long");
	size_t need = fam == 1 ? 12 : fam == 2 ? 36 : fam == 3 ? 216 : 0;
	if (cmd == 1 && body < need)
		return bad(error_r, "PROXY address block too short");
	if (len < 16 + body)
		return PP_MORE;
	*consumed_r = 16 + body;
	/* LOCAL, UNSPEC, UNIX and UDP: the real peer stays. */
	if (cmd == 0 || proto != 1 || (fam != 1 && fam != 2))
		return PP_OK;
	const uint8_t *a = p + 16;
	out->has_addr = true;
	if (fam == 1) {
		struct sockaddr_in *s = (struct sockaddr_in *)&out->src;
		struct sockaddr_in *d = (struct sockaddr_in *)&out->dst;
		s->sin_family = d->sin_family = AF_INET;
		memcpy(&s->sin_addr, a, 4);
		memcpy(&d->sin_addr, a + 4, 4);
		memcpy(&s->sin_port, a + 8, 2);
		memcpy(&d->sin_port, a + 10, 2);
		out->addr_len = sizeof(struct sockaddr_in);
	} else {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)&out->src;
		struct sockaddr_in6 *d = (struct sockaddr_in6 *)&out->dst;
		s->sin6_family = d->sin6_family = AF_INET6;
		memcpy(&s->sin6_addr, a, 16);
		memcpy(&d->sin6_addr, a + 16, 16);
		memcpy(&s->sin6_port, a + 32, 2);
		memcpy(&d->sin6_port, a + 34, 2);
		out->addr_len = sizeof(struct sockaddr_in6);
	}
	return PP_OK;
}
