/* PROXY protocol v2 header parsing: IPv4 and IPv6 with TLVs, LOCAL,
 * UNSPEC/UNIX/UDP (address kept), every byte-split of a valid header
 * (PP_MORE until complete, then the same result), and refusals: wrong
 * signature (incl. v1 text), version, command, family, short address
 * block, over-long header. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "common/proxy_protocol.h"
#include "tests/unit/check.h"

static const uint8_t SIG[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
				 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a };

static size_t header(uint8_t *out, uint8_t vc, uint8_t fam, const uint8_t *body, size_t n)
{
	memcpy(out, SIG, 12);
	out[12] = vc;
	out[13] = fam;
	out[14] = (uint8_t)(n >> 8);
	out[15] = (uint8_t)n;
	if (n)
		memcpy(out + 16, body, n);
	return 16 + n;
}

int main(void)
{
	uint8_t h[2048];
	struct pp_info pi;
	size_t used;
	const char *err;

	/* TCP over IPv4: 192.0.2.7:40000 -> 198.51.100.1:993, plus a TLV and
	 * the first bytes of a TLS ClientHello after it. */
	uint8_t b4[12 + 7] = { 192, 0, 2, 7, 198, 51, 100, 1, 0x9c, 0x40, 0x03, 0xe1,
			       0x04, 0x00, 0x04, 'a', 'b', 'c', 'd' };
	size_t n = header(h, 0x21, 0x11, b4, sizeof(b4));
	memcpy(h + n, "\x16\x03\x01", 3);
	CHECK(proxy_protocol_parse(h, n + 3, &pi, &used, &err) == PP_OK && used == n);
	struct sockaddr_in *s4 = (struct sockaddr_in *)&pi.src;
	struct sockaddr_in *d4 = (struct sockaddr_in *)&pi.dst;
	CHECK(pi.has_addr && s4->sin_family == AF_INET && ntohs(s4->sin_port) == 40000 &&
	      ntohl(s4->sin_addr.s_addr) == 0xc0000207 && ntohs(d4->sin_port) == 993 &&
	      pi.addr_len == sizeof(struct sockaddr_in));
	/* every split: MORE until the last byte, never BAD */
	for (size_t k = 0; k < n; k++) {
		enum pp_result r = proxy_protocol_parse(h, k, &pi, &used, &err);
		CHECK(r == PP_MORE && used == 0);
	}

	/* TCP over IPv6 */
	uint8_t b6[36] = { 0 };
	b6[15] = 1;              /* ::1 */
	b6[16] = 0x20;           /* 2001:db8::2 */
	b6[17] = 0x01;
	b6[18] = 0x0d;
	b6[19] = 0xb8;
	b6[31] = 2;
	b6[32] = 0x30;           /* port 12345 */
	b6[33] = 0x39;
	b6[34] = 0x00;
	b6[35] = 0x8f;           /* 143 */
	n = header(h, 0x21, 0x21, b6, sizeof(b6));
	CHECK(proxy_protocol_parse(h, n, &pi, &used, &err) == PP_OK && used == n && pi.has_addr);
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&pi.src;
	CHECK(s6->sin6_family == AF_INET6 && ntohs(s6->sin6_port) == 12345 &&
	      IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr) && pi.addr_len == sizeof(*s6));

	/* LOCAL (health check): no address, body skipped */
	n = header(h, 0x20, 0x00, (const uint8_t *)"xyz", 3);
	CHECK(proxy_protocol_parse(h, n, &pi, &used, &err) == PP_OK && used == n && !pi.has_addr);
	/* UNSPEC with PROXY, UDP, UNIX: accepted, address kept */
	n = header(h, 0x21, 0x00, NULL, 0);
	CHECK(proxy_protocol_parse(h, n, &pi, &used, &err) == PP_OK && !pi.has_addr);
	n = header(h, 0x21, 0x12, b4, 12);
	CHECK(proxy_protocol_parse(h, n, &pi, &used, &err) == PP_OK && !pi.has_addr);
	uint8_t bu[216] = { 0 };
	n = header(h, 0x21, 0x31, bu, sizeof(bu));
	CHECK(proxy_protocol_parse(h, n, &pi, &used, &err) == PP_OK && !pi.has_addr);

	/* refusals */
	const char *v1 = "PROXY TCP4 192.0.2.7 198.51.100.1 40000 993\r\n";
	CHECK(proxy_protocol_parse((const uint8_t *)v1, strlen(v1), &pi, &used, &err) == PP_BAD &&
	      err && used == 0);
	CHECK(proxy_protocol_parse((const uint8_t *)"a1 LOGIN", 8, &pi, &used, &err) == PP_BAD);
	CHECK(proxy_protocol_parse((const uint8_t *)"\r\n\r\n", 4, &pi, &used, &err) == PP_MORE);
	n = header(h, 0x11, 0x11, b4, 12);
	CHECK(proxy_protocol_parse(h, n, &pi, &used, &err) == PP_BAD); /* version 1 */
	n = header(h, 0x22, 0x11, b4, 12);
	CHECK(proxy_protocol_parse(h, n, &pi, &used, &err) == PP_BAD); /* command 2 */
	n = header(h, 0x21, 0x41, b4, 12);
	CHECK(proxy_protocol_parse(h, n, &pi, &used, &err) == PP_BAD); /* family 4 */
	n = header(h, 0x21, 0x13, b4, 12);
	CHECK(proxy_protocol_parse(h, n, &pi, &used, &err) == PP_BAD); /* transport 3 */
	n = header(h, 0x21, 0x11, b4, 11);
	CHECK(proxy_protocol_parse(h, n, &pi, &used, &err) == PP_BAD); /* short IPv4 */
	n = header(h, 0x21, 0x21, b6, 20);
	CHECK(proxy_protocol_parse(h, n, &pi, &used, &err) == PP_BAD); /* short IPv6 */
	/* too long: refused as soon as the length is known */
	memcpy(h, SIG, 12);
	h[12] = 0x21;
	h[13] = 0x11;
	h[14] = 0xff;
	h[15] = 0xff;
	CHECK(proxy_protocol_parse(h, 16, &pi, &used, &err) == PP_BAD);
	return check_finish("proxy_protocol");
}
