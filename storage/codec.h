/* Key and record encoding of the mailbox store (internal to storage/).
 *
 * Keys (one RocksDB instance per shard, default column family), integers
 * big-endian so that byte order is numeric order:
 *
 *   'u' address                       user record
 *   'm' address 0x00 name             mailbox id (u64)
 *   'b' mailbox_id(8)                 mailbox record
 *   'i' mailbox_id(8) uid(4)          message record  (one mailbox = one range)
 *   'x' mailbox_id(8) modseq(8) uid(4) expunge log (QRESYNC VANISHED)
 *   'h' body_hash(32)                 body record: refcount, size, chunks, MIME
 *   'c' body_hash(32) chunk(4)        body bytes, body_chunk_bytes each
 *   'n' name                          shard counters ("mailbox_id", "uidvalidity")
 *
 * Records start with a version byte; readers reject versions they do not
 * know rather than misread them. */
#ifndef STORAGE_CODEC_H
#define STORAGE_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/base.h"

#define KEY_USER 'u'
#define KEY_MBNAME 'm'
#define KEY_MAILBOX 'b'
#define KEY_MESSAGE 'i'
#define KEY_EXPUNGE 'x'
#define KEY_BODY 'h'
#define KEY_CHUNK 'c'
#define KEY_COUNTER 'n'
/* 'd' + delivery id (1..DELIVERY_ID_MAX bytes) -> version, u64 time (ms),
 * u32 n, n x (u8 status, u64 mailbox id, u32 uidvalidity, u32 uid): the
 * results of a delivery, so a retry with the same id stores nothing. */
#define KEY_DELIVERY 'd'

#define RECORD_VERSION 1

/* A small writer/reader over bytes; readers set `bad` instead of reading
 * past the end, so a corrupt record is detected, never overrun. */
struct enc {
	struct buf b;
};
struct dec {
	const uint8_t *p;
	size_t len;
	bool bad;
};

static inline void put_u8(struct buf *b, uint8_t v) { buf_append(b, &v, 1); }
static inline void put_u16(struct buf *b, uint16_t v)
{
	uint8_t x[2] = { (uint8_t)(v >> 8), (uint8_t)v };
	buf_append(b, x, 2);
}
static inline void put_u32(struct buf *b, uint32_t v)
{
	uint8_t x[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };
	buf_append(b, x, 4);
}
static inline void put_u64(struct buf *b, uint64_t v)
{
	put_u32(b, (uint32_t)(v >> 32));
	put_u32(b, (uint32_t)v);
}
static inline void put_bytes16(struct buf *b, const void *p, size_t n)
{
	put_u16(b, (uint16_t)n);
	buf_append(b, p, n);
}
static inline void put_str16(struct buf *b, const char *s)
{
	put_bytes16(b, s, strlen(s));
}

static inline struct dec dec_make(const void *p, size_t len)
{
	return (struct dec){ (const uint8_t *)p, len, false };
}
static inline bool dec_need(struct dec *d, size_t n)
{
	if (d->bad || d->len < n) {
		d->bad = true;
		return false;
	}
	return true;
}
static inline uint8_t get_u8(struct dec *d)
{
	if (!dec_need(d, 1))
		return 0;
	uint8_t v = d->p[0];
	d->p++;
	d->len--;
	return v;
}
static inline uint16_t get_u16(struct dec *d)
{
	if (!dec_need(d, 2))
		return 0;
	uint16_t v = (uint16_t)(d->p[0] << 8 | d->p[1]);
	d->p += 2;
	d->len -= 2;
	return v;
}
static inline uint32_t get_u32(struct dec *d)
{
	if (!dec_need(d, 4))
		return 0;
	uint32_t v = (uint32_t)d->p[0] << 24 | (uint32_t)d->p[1] << 16 | (uint32_t)d->p[2] << 8 |
		     d->p[3];
	d->p += 4;
	d->len -= 4;
	return v;
}
static inline uint64_t get_u64(struct dec *d)
{
	uint64_t hi = get_u32(d);
	return hi << 32 | get_u32(d);
}
/* Copies a u16-length string into out (NUL-terminated); bad if too long. */
static inline void get_str16(struct dec *d, char *out, size_t out_len)
{
	uint16_t n = get_u16(d);
	if (!dec_need(d, n) || n >= out_len) {
		d->bad = true;
		if (out_len)
			out[0] = '\0';
		return;
	}
	memcpy(out, d->p, n);
	out[n] = '\0';
	d->p += n;
	d->len -= n;
}
static inline struct view get_view16(struct dec *d)
{
	uint16_t n = get_u16(d);
	if (!dec_need(d, n))
		return view_make(NULL, 0);
	struct view v = view_make(d->p, n);
	d->p += n;
	d->len -= n;
	return v;
}
static inline void get_raw(struct dec *d, void *out, size_t n)
{
	if (!dec_need(d, n)) {
		memset(out, 0, n);
		return;
	}
	memcpy(out, d->p, n);
	d->p += n;
	d->len -= n;
}

static inline void be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}
static inline void be64(uint8_t *p, uint64_t v)
{
	be32(p, (uint32_t)(v >> 32));
	be32(p + 4, (uint32_t)v);
}
static inline uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t rd64(const uint8_t *p)
{
	return (uint64_t)rd32(p) << 32 | rd32(p + 4);
}

#endif
