#include "common/address.h"

#include <stdio.h>
#include <string.h>

static bool is_ws(uint8_t c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static bool is_alnum(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9');
}

static uint8_t ascii_lower(uint8_t c)
{
	return (c >= 'A' && c <= 'Z') ? (uint8_t)(c + ('a' - 'A')) : c;
}

/* RFC 5322 atext, ASCII part. */
static bool is_atext(uint8_t c)
{
	static const char specials[] = "!#$%&'*+-/=?^_`{|}~";
	return is_alnum(c) || memchr(specials, c, sizeof(specials) - 1);
}


/* Whole-string checks that apply to both halves: control characters,
 * spaces and UTF-8 well-formedness. Counts the '@' signs. */
static int check_chars(struct view v, size_t *nat_r, size_t *at_r,
		       const char **error_r)
{
	size_t nat = 0, at = 0;

	for (size_t i = 0; i < v.len;) {
		uint8_t c = v.ptr[i];
		uint32_t cp;
		size_t n;

		if (c == ' ') {
			*error_r = "space in address";
			return -1;
		}
		if (c < 0x20 || c == 0x7f) {
			*error_r = "control character in address";
			return -1;
		}
		n = utf8_decode(v.ptr + i, v.len - i, &cp);
		if (n == 0) {
			*error_r = "invalid UTF-8 in address";
			return -1;
		}
		if (cp >= 0x80 && cp <= 0x9f) {
			*error_r = "control character in address";
			return -1;
		}
		if (c == '@') {
			if (nat == 0)
				at = i;
			nat++;
		}
		i += n;
	}
	*nat_r = nat;
	*at_r = at;
	return 0;
}

static int check_local(struct view l, const char **error_r)
{
	if (l.len == 0) {
		*error_r = "empty local part";
		return -1;
	}
	if (l.len > ADDRESS_LOCAL_MAX) {
		*error_r = "local part longer than 64 octets";
		return -1;
	}
	if (l.ptr[0] == '.') {
		*error_r = "local part starts with a dot";
		return -1;
	}
	if (l.ptr[l.len - 1] == '.') {
		*error_r = "local part ends with a dot";
		return -1;
	}
	for (size_t i = 0; i < l.len; i++) {
		uint8_t c = l.ptr[i];
		if (c >= 0x80)
			continue; /* validated UTF-8 */
		if (c == '.') {
			if (l.ptr[i + 1] == '.') { /* safe: last is not '.' */
				*error_r = "consecutive dots in local part";
				return -1;
			}
			continue;
		}
		if (c == '"' || c == '\\') {
			*error_r = "quoted local parts are not supported";
			return -1;
		}
		if (!is_atext(c)) {
			*error_r = "character not allowed in local part";
			return -1;
		}
	}
	return 0;
}

static int check_domain(struct view d, const char **error_r)
{
	if (d.len == 0) {
		*error_r = "empty domain";
		return -1;
	}
	if (d.len > ADDRESS_DOMAIN_MAX) {
		*error_r = "domain longer than 253 octets";
		return -1;
	}
	if (d.ptr[0] == '[') {
		*error_r = "address literals are not supported";
		return -1;
	}
	size_t start = 0;
	for (size_t i = 0; i <= d.len; i++) {
		if (i < d.len && d.ptr[i] != '.') {
			uint8_t c = d.ptr[i];
			if (c < 0x80 && !is_alnum(c) && c != '-') {
				*error_r = "character not allowed in domain";
				return -1;
			}
			continue;
		}
		size_t llen = i - start;
		if (llen == 0) {
			*error_r = "empty domain label";
			return -1;
		}
		if (llen > ADDRESS_LABEL_MAX) {
			*error_r = "domain label longer than 63 octets";
			return -1;
		}
		if (d.ptr[start] == '-' || d.ptr[i - 1] == '-') {
			*error_r = "domain label starts or ends with '-'";
			return -1;
		}
		start = i + 1;
	}
	return 0;
}

int address_canonical(struct view in, struct buf *out, const char **error_r)
{
	const uint8_t *p = in.ptr;
	size_t len = in.len;
	size_t nat, at;

	buf_reset(out);
	while (len > 0 && is_ws(p[0]))
		p++, len--;
	while (len > 0 && is_ws(p[len - 1]))
		len--;
	if (len > 0 && (p[0] == '<' || p[len - 1] == '>')) {
		if (len < 2 || p[0] != '<' || p[len - 1] != '>') {
			*error_r = "unbalanced angle brackets";
			return -1;
		}
		p++, len -= 2;
	}
	if (len == 0) {
		*error_r = "empty address";
		return -1;
	}
	if (p[0] == '"') {
		*error_r = "quoted local parts are not supported";
		return -1;
	}
	struct view v = view_make(p, len);
	if (check_chars(v, &nat, &at, error_r) < 0)
		return -1;
	if (nat == 0) {
		*error_r = "missing '@'";
		return -1;
	}
	if (nat > 1) {
		*error_r = "more than one '@'";
		return -1;
	}
	if (check_local(view_make(p, at), error_r) < 0 ||
	    check_domain(view_make(p + at + 1, len - at - 1), error_r) < 0)
		return -1;
	/* Both halves within bounds can still sum to 64 + 1 + 253 > 254. */
	if (len > ADDRESS_MAX) {
		*error_r = "address longer than 254 octets";
		return -1;
	}

	uint8_t *dst = buf_reserve(out, len);
	if (dst == NULL) {
		*error_r = "address does not fit the output buffer";
		return -1;
	}
	for (size_t i = 0; i < len; i++)
		dst[i] = ascii_lower(p[i]);
	buf_commit(out, len);
	return 0;
}

int address_split(struct view canonical, struct view *local_r,
		  struct view *domain_r)
{
	const uint8_t *at;

	if (canonical.len == 0)
		return -1;
	at = memrchr(canonical.ptr, '@', canonical.len);
	if (at == NULL)
		return -1;
	size_t llen = (size_t)(at - canonical.ptr);
	if (llen == 0 || llen + 1 == canonical.len)
		return -1;
	*local_r = view_make(canonical.ptr, llen);
	*domain_r = view_make(at + 1, canonical.len - llen - 1);
	return 0;
}

bool address_subaddress(struct view canonical, char delim,
			struct view *base_local_r, struct view *tag_r)
{
	struct view local, domain;
	const uint8_t *d;

	if (delim == '\0' || delim == '@')
		return false;
	if (address_split(canonical, &local, &domain) < 0)
		return false;
	d = memchr(local.ptr, (unsigned char)delim, local.len);
	if (d == NULL || d == local.ptr)
		return false;
	size_t blen = (size_t)(d - local.ptr);
	*base_local_r = view_make(local.ptr, blen);
	*tag_r = view_make(d + 1, local.len - blen - 1);
	return true;
}

/* SipHash-2-4 (Aumasson & Bernstein, 2012), reference key 00..0f. */
#define ROTL64(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                             \
	do {                                                                 \
		v0 += v1; v1 = ROTL64(v1, 13); v1 ^= v0; v0 = ROTL64(v0, 32); \
		v2 += v3; v3 = ROTL64(v3, 16); v3 ^= v2;                     \
		v0 += v3; v3 = ROTL64(v3, 21); v3 ^= v0;                     \
		v2 += v1; v1 = ROTL64(v1, 17); v1 ^= v2; v2 = ROTL64(v2, 32); \
	} while (0)

static uint64_t load_le64(const uint8_t *p)
{
	uint64_t x = 0;
	for (int i = 7; i >= 0; i--)
		x = (x << 8) | p[i];
	return x;
}

static uint64_t siphash24(uint64_t k0, uint64_t k1, const uint8_t *m,
			  size_t len)
{
	uint64_t v0 = k0 ^ UINT64_C(0x736f6d6570736575);
	uint64_t v1 = k1 ^ UINT64_C(0x646f72616e646f6d);
	uint64_t v2 = k0 ^ UINT64_C(0x6c7967656e657261);
	uint64_t v3 = k1 ^ UINT64_C(0x7465646279746573);
	size_t full = len & ~(size_t)7;
	uint64_t b = (uint64_t)len << 56;

	for (size_t i = 0; i < full; i += 8) {
		uint64_t w = load_le64(m + i);
		v3 ^= w;
		SIPROUND;
		SIPROUND;
		v0 ^= w;
	}
	for (size_t i = 0; i < (len & 7); i++)
		b |= (uint64_t)m[full + i] << (8 * i);
	v3 ^= b;
	SIPROUND;
	SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

uint64_t address_hash64(struct view canonical)
{
	/* Little-endian loads of the key bytes 00..07 and 08..0f. */
	const uint64_t k0 = UINT64_C(0x0706050403020100);
	const uint64_t k1 = UINT64_C(0x0f0e0d0c0b0a0908);
	return siphash24(k0, k1, canonical.ptr, canonical.len);
}

uint32_t address_shard(struct view canonical, uint32_t nshards)
{
	if (nshards == 0)
		return 0;
	return (uint32_t)(address_hash64(canonical) % nshards);
}

int address_catchall_key(struct view domain, struct buf *out)
{
	buf_reset(out);
	if (buf_append(out, "@", 1) < 0 ||
	    buf_append(out, domain.ptr, domain.len) < 0) {
		buf_reset(out);
		return -1;
	}
	return 0;
}

int address_owner(struct view in, char *owner, size_t owner_len, char *tag, size_t tag_len,
		  const char **error_r)
{
	struct buf c;
	buf_init(&c, 256);
	if (tag_len)
		tag[0] = '\0';
	if (address_canonical(in, &c, error_r) < 0) {
		buf_cleanup(&c);
		return -1;
	}
	struct view base, t, local, domain;
	address_split(buf_view(&c), &local, &domain);
	int n;
	if (address_subaddress(buf_view(&c), '+', &base, &t)) {
		n = snprintf(owner, owner_len, "%.*s@%.*s", (int)base.len, (const char *)base.ptr,
			     (int)domain.len, (const char *)domain.ptr);
		if (tag_len && t.len < tag_len) {
			memcpy(tag, t.ptr, t.len);
			tag[t.len] = '\0';
		}
	} else {
		n = snprintf(owner, owner_len, "%.*s", (int)c.len, (const char *)c.data);
	}
	buf_cleanup(&c);
	if (n < 0 || (size_t)n >= owner_len) {
		*error_r = "address too long";
		return -1;
	}
	return 0;
}
