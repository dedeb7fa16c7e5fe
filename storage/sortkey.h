/* Sort keys of a message for IMAP SORT (RFC 5256, RFC 5957 SORT=DISPLAY)
 * and THREAD: pure code over the MIME blob recorded at delivery
 * (storage/mime.h), no store access.
 *
 * Comparison. String keys are built already folded, so that two keys
 * compare with memcmp (UTF-8 byte order is code point order):
 * "i;unicode-casemap-ish" -- every letter is mapped to its upper
 * (title) case for ASCII, Latin-1, Latin Extended-A, basic Greek and
 * Cyrillic (as RFC 5051 titlecases), with no Unicode decomposition (so
 * "e" and "é" differ). Invalid UTF-8 bytes are kept as they are. Keys are
 * cut at SORTKEY_MAX bytes (at a character boundary): messages whose keys
 * agree that far compare equal on that key.
 *
 * Semantics chosen here (where the RFCs leave room):
 *   - Base subject (RFC 5256 2.1): the Subject is RFC 2047-decoded, folded,
 *     tabs/CR/LF made spaces and runs of spaces collapsed, then steps 2-6
 *     run on the folded text. A subj-blob may hold non-ASCII characters
 *     (list tags such as "[Список]" are blobs too).
 *   - FROM/TO/CC: the addr-mailbox of the first address structure of the
 *     field, as the IMAP ENVELOPE has it (a group's first structure is the
 *     group marker, whose mailbox is the group name). Absent: "".
 *   - DISPLAYFROM/DISPLAYTO (RFC 5957): the RFC 2047-decoded display name
 *     of the first address if it is not empty, else "mailbox@host" (a
 *     group marker: the group name).
 *   - DATE: the Date: header in UTC (milliseconds); a missing or
 *     unparsable Date: uses the internal date (RFC 5256 2.2).
 *   - Ties on every criterion go by sequence number (the order in which
 *     the records are given). */
#ifndef STORAGE_SORTKEY_H
#define STORAGE_SORTKEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/base.h"

/* Bytes kept of one folded string key. */
#define SORTKEY_MAX 512

/* Appends the folded form of UTF-8 text to out, stopping before
 * out->len would exceed limit (at a character boundary). out must have no
 * maximum below limit. */
void sortkey_casemap(struct view s, struct buf *out, size_t limit);

/* RFC 5256 base subject of decoded, folded text (sortkey_casemap output or
 * plain upper-case ASCII): appended to out. *refwd_r (may be NULL) is set
 * when the extraction removed a subj-refwd, a "(fwd)" trailer or a
 * "[fwd: ...]" wrapper: the message is a reply or forward (RFC 5256
 * REFERENCES step 5). */
void sortkey_base_subject_folded(struct view folded, struct buf *out, bool *refwd_r);
/* The whole chain from a raw Subject: value: RFC 2047 decoding, folding,
 * base subject (at most SORTKEY_MAX bytes). */
void sortkey_subject(struct view raw, struct buf *out, bool *refwd_r);

/* The envelope fields of the top-level message in a MIME blob: views into
 * the blob (empty when the field is absent). Address fields are the blob's
 * address-list encoding (4 nullable strings per address). Returns 0, or
 * -1 if the blob is not readable (out is then all empty). */
struct sortkey_env {
	struct view date, subject, message_id, in_reply_to;
	struct view from, to, cc;
	uint64_t hdr_len; /* bytes of the top-level header block */
};
int sortkey_blob_env(struct view blob, struct sortkey_env *out);

/* First address of an address-list encoding: the four fields (empty views
 * for NIL). Returns false if the list is empty or malformed. */
struct sortkey_addr {
	struct view name, adl, mailbox, host;
	bool has_host;
};
bool sortkey_first_addr(struct view list, struct sortkey_addr *out);
/* Folded key of the first address's mailbox (FROM/TO/CC). */
void sortkey_addr_mailbox(struct view list, struct buf *out);
/* Folded key of the first address's display form (DISPLAYFROM/TO). */
void sortkey_addr_display(struct view list, struct buf *out);

/* Sent date in ms since the epoch, UTC: the Date: value when it parses,
 * else internal_ms. */
int64_t sortkey_sent_ms(struct view date, uint64_t internal_ms);

/* ---- sorting ----------------------------------------------------------- */

enum sortkey_field {
	SORTKEY_ARRIVAL,
	SORTKEY_CC,
	SORTKEY_DATE,
	SORTKEY_FROM,
	SORTKEY_SIZE,
	SORTKEY_SUBJECT,
	SORTKEY_TO,
	SORTKEY_DISPLAYFROM,
	SORTKEY_DISPLAYTO,
	SORTKEY_FIELD_COUNT_
};
/* String fields have a slot in struct sortkey_rec (CC .. DISPLAYTO minus
 * DATE and SIZE). */
#define SORTKEY_SLOTS 6
/* Slot of a string field, or -1 for ARRIVAL, DATE and SIZE. */
int sortkey_slot(enum sortkey_field f);
/* Does the field need the MIME blob? */
bool sortkey_needs_blob(enum sortkey_field f);

struct sortkey_crit {
	enum sortkey_field field;
	bool reverse;
};

/* One message: number to report, its metadata and its string keys as
 * (offset, length) into one arena shared by all records. */
struct sortkey_rec {
	uint32_t num;   /* sequence number or UID, as reported */
	uint32_t order; /* tie-break: position in sequence order */
	uint64_t arrival_ms, size;
	int64_t sent_ms;
	uint32_t off[SORTKEY_SLOTS], len[SORTKEY_SLOTS];
};

/* Sorts recs by the criteria, ties by order. arena holds the key bytes. */
void sortkey_sort(struct sortkey_rec *recs, size_t n, const struct sortkey_crit *crit,
		  size_t n_crit, const uint8_t *arena);

#endif
