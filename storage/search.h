/* SEARCH over one mailbox (RFC 9051 6.4.4, RFC 3501 6.4.4, RFC 7162 MODSEQ,
 * RFC 8514 SAVEDATE).
 *
 * The IMAP parser builds a struct search_key tree and store_search()
 * evaluates it. The tree is plain data: the evaluator never changes it, so
 * one program can be run on several mailboxes (and from several threads).
 *
 * Semantics chosen here (where the RFCs leave room):
 *   - The "server's time zone" is UTC: BEFORE/ON/SINCE compare the UTC
 *     calendar date of the internal date, SAVED* that of the save date.
 *   - SENTBEFORE/SENTON/SENTSINCE use the calendar date written in the
 *     Date: header, "disregarding time and timezone" as RFC 9051 says: a
 *     message sent "2 Jan 2024 01:30 +0900" was sent on 2-Jan-2024 even
 *     though that is 1 Jan in UTC. A message whose Date: is missing or
 *     cannot be parsed uses its internal date instead.
 *   - MODSEQ n matches messages whose mod-sequence is >= n. The optional
 *     entry name and type are kept but ignored: this store keeps one
 *     modseq per message, not per flag, which RFC 7162 3.1.5 allows.
 *   - SAVEDATESUPPORTED matches every message (every mailbox has save
 *     dates).
 *   - String keys are UTF-8 (the IMAP layer converts other CHARSETs) and
 *     match as substrings, case-insensitively: ASCII, Latin-1, Latin
 *     Extended-A, basic Greek and Cyrillic letters fold to lower case.
 *   - BCC/CC/FROM/SUBJECT/TO match the RFC 2047-decoded, unfolded value of
 *     the message's first such field (the text recorded at delivery, at
 *     most mime_limits.max_search_len bytes of it). HEADER field string
 *     matches any occurrence of the field in the top-level header, decoded
 *     the same way (a field is examined up to SEARCH_FIELD_MAX bytes).
 *     An empty string matches every message that has the field, for
 *     HEADER and the named-field keys alike.
 *   - BODY matches the decoded text of the text/... leaf parts (also those
 *     inside attached messages): the transfer encoding is undone, the
 *     charset converted to UTF-8 (utf-8, us-ascii, iso-8859-1,
 *     iso-8859-15 and windows-1252; unknown or missing charsets keep valid
 *     UTF-8 and read other bytes as windows-1252). A match never spans two
 *     parts. Non-text parts are not searched. BODY "" matches everything.
 *   - TEXT matches if BODY does, or if a field of the top-level header,
 *     written "Name: decoded value", contains the string.
 *
 * Cost: flags, dates, sizes, UIDs and modseqs are tested first; the MIME
 * description is read only for messages that the metadata did not decide,
 * the header block only after that, and the body last, in pieces, with a
 * streaming matcher. AND, OR and NOT use three-valued logic so that a
 * message is decided as soon as it can be. Memory is bounded by the
 * program, a window of message records and a few small buffers: no message
 * is ever held whole. */
#ifndef STORAGE_SEARCH_H
#define STORAGE_SEARCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/base.h"

struct shard;

/* Bytes of one header field examined by HEADER / TEXT; the rest of a longer
 * field is ignored. */
#define SEARCH_FIELD_MAX (64 * 1024)
/* Deepest program store_search accepts (the parser should refuse deeper
 * nesting earlier, charged to the session). */
#define SEARCH_MAX_DEPTH 1000

enum search_key_type {
	/* inner nodes */
	SEARCH_AND,	  /* children[0..n_children): all (none = ALL) */
	SEARCH_OR,	  /* children[0], children[1] */
	SEARCH_NOT,	  /* children[0] */
	/* no argument */
	SEARCH_ALL,
	SEARCH_ANSWERED,
	SEARCH_UNANSWERED,
	SEARCH_DELETED,
	SEARCH_UNDELETED,
	SEARCH_DRAFT,
	SEARCH_UNDRAFT,
	SEARCH_FLAGGED,
	SEARCH_UNFLAGGED,
	SEARCH_SEEN,
	SEARCH_UNSEEN,
	SEARCH_SAVEDATESUPPORTED,
	/* str = keyword */
	SEARCH_KEYWORD,
	SEARCH_UNKEYWORD,
	/* date (day number, see below) */
	SEARCH_BEFORE,
	SEARCH_ON,
	SEARCH_SINCE,
	SEARCH_SENTBEFORE,
	SEARCH_SENTON,
	SEARCH_SENTSINCE,
	SEARCH_SAVEDBEFORE,
	SEARCH_SAVEDON,
	SEARCH_SAVEDSINCE,
	/* num */
	SEARCH_LARGER,
	SEARCH_SMALLER,
	SEARCH_MODSEQ,
	/* uids / n_uids */
	SEARCH_UID,
	/* str = the string to look for */
	SEARCH_BCC,
	SEARCH_CC,
	SEARCH_FROM,
	SEARCH_SUBJECT,
	SEARCH_TO,
	SEARCH_HEADER, /* and field = the field name */
	SEARCH_BODY,
	SEARCH_TEXT,
};
const char *search_key_type_str(enum search_key_type t);

struct search_uid_range {
	uint32_t first, last; /* first <= last */
};

enum search_modseq_entry_type {
	SEARCH_MODSEQ_ANY, /* no entry given, or "all" */
	SEARCH_MODSEQ_PRIV,
	SEARCH_MODSEQ_SHARED,
};

struct search_key {
	enum search_key_type type;
	struct search_key **children; /* AND, OR, NOT (owned) */
	size_t n_children;
	char *str;      /* owned, NUL-terminated; str_len excludes the NUL */
	size_t str_len;
	char *field;    /* HEADER field name; MODSEQ entry name (or NULL) */
	uint64_t num;   /* LARGER, SMALLER, MODSEQ */
	enum search_modseq_entry_type modseq_type;
	int year, month, day; /* date keys, as given */
	int64_t day_num;      /* date keys: days since 1970-01-01 */
	struct search_uid_range *uids; /* sorted, merged, non-overlapping */
	size_t n_uids;
};

/* Constructors. Every string is copied; allocation failure aborts. */
/* A key without argument (ALL, SEEN, ...). NULL if type needs one. */
struct search_key *search_key_new_leaf(enum search_key_type type);
/* KEYWORD, UNKEYWORD, BCC, CC, FROM, SUBJECT, TO, BODY, TEXT. */
struct search_key *search_key_new_str(enum search_key_type type, struct view s);
struct search_key *search_key_new_header(struct view field, struct view s);
/* LARGER, SMALLER, MODSEQ. */
struct search_key *search_key_new_num(enum search_key_type type, uint64_t n);
/* MODSEQ with the optional entry name and type (RFC 7162). */
struct search_key *search_key_new_modseq(uint64_t n, struct view entry,
					 enum search_modseq_entry_type type);
/* Date keys. NULL if the date is not a valid calendar date. */
struct search_key *search_key_new_date(enum search_key_type type, int y, int m, int d);
/* UID set; ranges may be unsorted, overlapping or have first > last (they
 * are normalised). n may be 0 (matches nothing). */
struct search_key *search_key_new_uidset(const struct search_uid_range *r, size_t n);
/* AND of nothing yet (matches all until children are added). */
struct search_key *search_key_new_and(void);
/* Takes ownership of child. */
void search_key_and_add(struct search_key *and_key, struct search_key *child);
/* Take ownership of their arguments. */
struct search_key *search_key_new_or(struct search_key *a, struct search_key *b);
struct search_key *search_key_new_not(struct search_key *a);
/* Frees the tree; NULL-safe, clears *k. Recursive: the parser bounds the
 * nesting it builds (SEARCH_MAX_DEPTH). */
void search_key_free(struct search_key **k);

/* IMAP date "d-MMM-yyyy" (day of 1 or 2 digits, month name any case,
 * optionally in double quotes). Returns 0, or -1 if malformed or not a
 * real date. */
int search_parse_date(struct view s, int *y, int *m, int *d);

/* An RFC 5322 date-time, as written (zone_min is the zone's offset east of
 * UTC in minutes). */
struct search_datetime {
	int year, month, day, hour, min, sec, zone_min;
};
/* Parses a Date: header value: RFC 5322 3.3 including the obsolete forms
 * (two- and three-digit years, alphabetic zones, missing seconds, comments
 * anywhere). Returns 0, or -1 if unparsable. */
int search_parse_rfc5322_date(struct view s, struct search_datetime *out);
/* Seconds since the epoch (UTC) of a parsed date-time. */
int64_t search_datetime_to_unix(const struct search_datetime *dt);
/* Days since 1970-01-01 of a proleptic Gregorian date (no validation). */
int64_t search_days_from_civil(int y, int m, int d);

/* Runs q over the mailbox: *uids_r (malloc'ed, may be NULL when *n_r is 0)
 * gets the matching UIDs in ascending order. Returns 0, or -1 with
 * *error_r on a storage error or a program deeper than SEARCH_MAX_DEPTH.
 * Blocking: run it on a worker thread like every store call. */
int store_search(struct shard *sh, uint64_t mailbox_id, const struct search_key *q,
		 uint32_t **uids_r, size_t *n_r, const char **error_r);
/* store_search that also returns each match's modseq (*modseqs_r, malloc'ed,
 * parallel to *uids_r) for the (MODSEQ n) of a CONDSTORE search. */
int store_search_modseq(struct shard *sh, uint64_t mailbox_id, const struct search_key *q,
			uint32_t **uids_r, uint64_t **modseqs_r, size_t *n_r,
			const char **error_r);

#endif
