/* Email addresses as mailbox keys: canonical form, sub-addressing, and the
 * placement of a mailbox owner on a virtual shard.
 *
 * Pure functions: no I/O, no allocation beyond the caller's buffers.
 *
 * Canonical form
 * --------------
 * One byte string per mailbox, used as the key everywhere (user table,
 * alias directory, shard hash). address_canonical() produces it from what a
 * client or an operator typed:
 *
 *  - surrounding whitespace (SP, HTAB, CR, LF) and then one pair of angle
 *    brackets are removed: "  <Bob@Example.ORG> " -> "bob@example.org";
 *  - the domain is lower-cased (ASCII letters only). IDNA A-labels
 *    ("xn--...") pass through as ASCII. U-labels (UTF-8) are accepted as
 *    RFC 6531 allows but are NOT converted to A-labels here, so
 *    "u@bücher.example" and "u@xn--bcher-kva.example" are different keys:
 *    whoever creates domains (mailctl) must pick one form per domain;
 *  - the local part is lower-cased too (ASCII letters only). RFC 5321 lets
 *    the receiving server decide whether local parts are case-sensitive;
 *    this server treats them case-insensitively because that is what users
 *    expect ("Bob@" and "bob@" are the same person) and what every large
 *    provider does. Non-ASCII letters are kept byte-exact (no Unicode case
 *    folding or normalisation);
 *  - local part: a dot-atom (RFC 5322 atext: letters, digits and
 *    !#$%&'*+-/=?^_`{|}~, separated by single dots, no dot at either end)
 *    plus UTF-8 non-ASCII characters (RFC 6531/6532);
 *  - quoted local parts ("john doe"@example.org) are refused: they are
 *    legal but practically unused for mailboxes, and accepting them would
 *    mean two spellings of one key ("a"@x == a@x). Address literals
 *    (user@[192.0.2.1]) are refused for the same reason;
 *  - domain: one or more dot-separated labels of 1..63 octets each, made of
 *    ASCII letters, digits and '-' (not at either end of a label) or UTF-8
 *    non-ASCII characters; no trailing dot;
 *  - lengths per RFC 5321 4.5.3.1, in octets of the UTF-8 form: local part
 *    <= 64, domain <= 253, whole address <= 254;
 *  - control characters (C0, DEL, C1) and invalid UTF-8 (overlong forms,
 *    surrogates, > U+10FFFF, truncated sequences) are refused anywhere.
 */
#ifndef COMMON_ADDRESS_H
#define COMMON_ADDRESS_H

#include "common/base.h"

#define ADDRESS_LOCAL_MAX 64u
#define ADDRESS_DOMAIN_MAX 253u
#define ADDRESS_LABEL_MAX 63u
/* Longest canonical address; a struct buf with this max always suffices. */
#define ADDRESS_MAX 254u

/* Validate `in` and put its canonical form in `out`, replacing what `out`
 * held. Returns 0, or -1 with a static reason in *error_r (and `out`
 * emptied); -1 also when `out`'s maximum is below the canonical length. */
int address_canonical(struct view in, struct buf *out, const char **error_r);

/* Split a canonical address at its '@' (the last one). Views borrow from
 * `canonical`. Returns 0, or -1 if there is no '@' or either side is
 * empty. */
int address_split(struct view canonical, struct view *local_r,
		  struct view *domain_r);

/* Sub-addressing: "user+tag@domain" with delim '+' gives base "user" and
 * tag "tag". Only the first delimiter splits ("a+b+c" -> "a", "b+c"); a
 * local part that starts with the delimiter is not split ("+a" stays
 * whole); "user+@d" splits into "user" and an empty tag. Returns true when
 * it split (views borrow from `canonical`), false otherwise (outputs then
 * untouched). The base is not re-validated: "a.+b" gives base "a.", which
 * simply matches no mailbox. */
bool address_subaddress(struct view canonical, char delim,
			struct view *base_local_r, struct view *tag_r);

/* ------------------------------------------------------------------------
 * Shard placement — WIRE CONTRACT.
 *
 * Every proxy, node and tool, in every version, must compute the same
 * shard for the same address, forever (changing it means moving every
 * mailbox). The definition is:
 *
 *   h     = SipHash-2-4(key, canonical address bytes)   (64-bit output)
 *   key   = the 16 bytes 00 01 02 .. 0f (the SipHash reference key, so
 *           any implementation can be checked against the published
 *           SipHash test vectors)
 *   shard = h mod nshards                                (unsigned 64-bit)
 *
 * The message is exactly the canonical address as produced by
 * address_canonical(): lower-case, no brackets, no NUL terminator. Hash the
 * mailbox OWNER: resolve aliases and strip any sub-address tag first.
 * The key is public; this is for spreading, not secrecy (addresses are
 * chosen by operators, not attackers, so flooding one shard is not a
 * threat worth a secret key that every process would have to share).
 * Modulo bias is below nshards / 2^64, i.e. nothing.
 *
 * Test vectors (nshards = 256), checked in tests/unit/test_address.c and
 * against an independent Python implementation:
 *   "alice@example.com"       h = 0x7eedb794fef0a3d7  shard 215
 *   "bob@example.com"         h = 0x692fcc959f5c5a25  shard 37
 *   "postmaster@example.org"  h = 0x75f5fd3c9bb5f62d  shard 45
 *   "b\xc3\xbccher@b\xc3\xbccher.example" (UTF-8 "bücher@bücher.example")
 *                             h = 0xb7f5ac69624890cc  shard 204
 *   ""                        h = 0x726fdb47dd0e0e31  (SipHash paper, len 0)
 *   bytes 00 01 .. 0e         h = 0xa129ca6149be45e5  (SipHash paper, len 15)
 * ------------------------------------------------------------------------ */
uint64_t address_hash64(struct view canonical);
/* Shard of `canonical` in 0..nshards-1; 0 when nshards is 0. */
uint32_t address_shard(struct view canonical, uint32_t nshards);

/* The mailbox owner of an address as typed: canonical form with any
 * "+tag" removed from the local part, NUL-terminated in owner (at least
 * 256 bytes hold any address). The tag (without '+') goes to tag when
 * tag_len > 0 ("" if none or if it does not fit). Returns 0, or -1 with a
 * reason in *error_r. */
int address_owner(struct view in, char *owner, size_t owner_len, char *tag, size_t tag_len,
		  const char **error_r);

/* Catch-all alias key for a domain: "@" + domain, replacing what `out`
 * held. `domain` must already be canonical (e.g. from address_split).
 * Returns 0, or -1 if it does not fit `out`'s maximum. */
int address_catchall_key(struct view domain, struct buf *out);

#endif
