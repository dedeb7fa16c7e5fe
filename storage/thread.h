/* IMAP THREAD (RFC 5256): ORDEREDSUBJECT and REFERENCES over keys the
 * caller extracted (storage/sortkey.h), plus the Message-ID parsing the
 * REFERENCES algorithm needs. Pure code: no store access, no recursion
 * (a 100,000-deep References chain is threaded with a flat stack).
 *
 * Semantics chosen here (where the RFC leaves room):
 *   - Message IDs are normalised (RFC 5256 REFERENCES): the text between
 *     "<" and ">", quotes and backslash escapes removed, whitespace and
 *     comments outside quotes dropped. An empty id, or one longer than
 *     THREAD_ID_MAX bytes, is not a valid id. Comparison is exact
 *     (case-sensitive).
 *   - A message's references are the ids of its first References: field;
 *     only the last THREAD_REFS_MAX are kept (a longer field loses its
 *     oldest ancestors, never the parent). Without a valid id there, the
 *     first valid id of In-Reply-To is the only reference.
 *   - Sent dates are compared as given; equal dates go by sequence order
 *     (the order of thread_set_add calls), for siblings, threads and
 *     ORDEREDSUBJECT alike. A dummy sorts as its first child.
 *   - ORDEREDSUBJECT groups messages with an empty base subject together,
 *     like any other subject; REFERENCES step 5 never merges on an empty
 *     subject (as the RFC says). */
#ifndef STORAGE_THREAD_H
#define STORAGE_THREAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/base.h"

#define THREAD_ID_MAX 256
#define THREAD_REFS_MAX 64

/* ---- Message IDs ------------------------------------------------------- */

/* The first valid id in a Message-ID or In-Reply-To value, normalised,
 * into out (room for THREAD_ID_MAX bytes); its length, 0 if none. */
size_t thread_msgid_first(struct view v, char *out);

/* Incremental msg-id tokenizer (private state). */
struct thread_idtok {
	uint8_t state;
	bool escape, overflow;
	unsigned depth;
	size_t len;
	char cur[THREAD_ID_MAX];
};

/* Collects the references of one message from its raw header block, fed
 * in pieces of any size (the block may end anywhere). About 17 KiB: keep
 * one per job, not one per message. */
struct thread_refs {
	/* ring of the last THREAD_REFS_MAX ids */
	char ids[THREAD_REFS_MAX][THREAD_ID_MAX];
	uint16_t lens[THREAD_REFS_MAX];
	unsigned head, count;
	/* header scanner */
	uint8_t hstate;
	uint8_t name_len;
	bool in_field;
	struct thread_idtok tok;
};
void thread_refs_init(struct thread_refs *r);
/* Returns true once the References field is complete (or the header
 * ended): the caller may stop reading. */
bool thread_refs_feed(struct thread_refs *r, const uint8_t *p, size_t n);
/* After the header (or the first bytes of it that were read): when no
 * valid id was found, the first valid id of the In-Reply-To value is the
 * only reference. */
void thread_refs_finish(struct thread_refs *r, struct view in_reply_to);
size_t thread_refs_count(const struct thread_refs *r);
/* i-th reference, oldest first. */
struct view thread_refs_get(const struct thread_refs *r, size_t i);

/* ---- threading ------------------------------------------------------------ */

struct thread_set;
struct thread_set *thread_set_new(void);
void thread_set_free(struct thread_set **ts);
/* Adds the next message in sequence-number order. num is what the result
 * shows (sequence number or UID); subject is the base subject key
 * (sortkey_subject); refwd says the subject marked a reply or forward.
 * msgid (normalised, empty if none) and refs (oldest first) are used by
 * REFERENCES only: pass none for ORDEREDSUBJECT. Link-building (step 1)
 * happens here, one message at a time. */
void thread_set_add(struct thread_set *ts, uint32_t num, int64_t sent_ms, struct view subject,
		    bool refwd, struct view msgid, const struct view *refs, size_t n_refs);
/* Appends the threads in RFC 5256 syntax, e.g. "(1 2)(3 (4)(5))" (nothing
 * for no messages). Each may be called once, after the last add. */
void thread_orderedsubject(struct thread_set *ts, struct buf *out);
void thread_references(struct thread_set *ts, struct buf *out);
/* Bytes the set holds (for the memory measurements). */
size_t thread_set_mem(const struct thread_set *ts);

#endif
