/* IMAP server responses, client side (mailbench): pure code, no I/O.
 *
 * The reader splits the byte stream into responses. A response is one line
 * plus the literals it announces ("{n}" at a line end, then n bytes, then
 * the line goes on). Literal bytes are counted and skipped, never stored
 * (a FETCH of a body can be megabytes); the response's text keeps every
 * other byte, with each literal left as its "{n}" announcement followed by
 * CRLF. So a response of any size costs at most max_line bytes.
 *
 * imap_reply_parse() classifies a complete response (tagged completion,
 * untagged data, continuation request) leniently: enough to drive a
 * client. imap_reply_check() is the strict grammar of RFC 9051 section 9
 * for the responses a client sees (status responses and their codes,
 * EXISTS/EXPUNGE/FETCH with every message attribute, CAPABILITY, FLAGS,
 * LIST/LSUB, SEARCH, STATUS, ENABLED; other untagged data must at least be
 * well-formed values: atoms, quoted strings, literals, NIL, balanced
 * lists). imap_reply_fetch() extracts the attributes mailbench tracks. */
#ifndef BENCH_IMAP_REPLY_H
#define BENCH_IMAP_REPLY_H

#include "common/base.h"

enum imap_reply_result {
	IMAP_REPLY_MORE,     /* all bytes consumed, response not complete */
	IMAP_REPLY_DONE,     /* one response complete: imap_reply_reader_line() */
	IMAP_REPLY_TOO_LONG, /* its non-literal bytes exceed max_line */
};

struct imap_reply_reader {
	struct buf line;
	uint64_t lit_left;  /* literal bytes still to skip */
	uint64_t lit_bytes; /* literal bytes of the current response */
	unsigned lits;      /* literals in the current response */
	bool done;          /* the last feed completed a response */
};

void imap_reply_reader_init(struct imap_reply_reader *r, size_t max_line);
void imap_reply_reader_cleanup(struct imap_reply_reader *r);
/* Feed bytes; *consumed_r says how many were used (all, for MORE; through
 * the response's final LF, for DONE). After DONE the next feed starts a new
 * response. After TOO_LONG the reader is unusable (close the connection). */
enum imap_reply_result imap_reply_feed(struct imap_reply_reader *r, const uint8_t *data,
				       size_t len, size_t *consumed_r);
/* The last complete response without its final CRLF. */
struct view imap_reply_reader_line(const struct imap_reply_reader *r);

enum imap_reply_kind {
	IMAP_REPLY_TAGGED,
	IMAP_REPLY_UNTAGGED,
	IMAP_REPLY_CONTINUE,
};

enum imap_reply_status {
	IMAP_STATUS_NONE = 0, /* untagged data (number or keyword) */
	IMAP_STATUS_OK,
	IMAP_STATUS_NO,
	IMAP_STATUS_BAD,
	IMAP_STATUS_PREAUTH,
	IMAP_STATUS_BYE,
};

struct imap_reply {
	enum imap_reply_kind kind;
	struct view tag;                /* TAGGED */
	enum imap_reply_status status;  /* OK/NO/BAD (tagged), any (untagged) */
	struct view code;               /* response code name inside [...] */
	struct view code_args;          /* after the name, up to ']' */
	struct view text;               /* human-readable text */
	bool has_number;                /* "* 12 EXISTS" */
	uint32_t number;
	struct view word;               /* untagged keyword: EXISTS, FETCH, SEARCH... */
	struct view rest;               /* after the keyword and one space */
};

/* Classify a response (as from imap_reply_reader_line). Returns 0, or -1
 * with a reason when even the outline is wrong (empty line, no tag, a
 * tagged response that is not OK/NO/BAD). */
int imap_reply_parse(struct view line, struct imap_reply *out, const char **error_r);

/* Strict syntax check of a whole response; 0 or -1 with a reason. */
int imap_reply_check(struct view line, const char **error_r);

/* Attributes of a FETCH response ("* n FETCH (...)": pass its `rest`). */
struct imap_fetch_atts {
	bool has_uid, has_flags, has_size;
	uint32_t uid;
	uint64_t size;           /* RFC822.SIZE */
	struct view flags;       /* inside the parentheses */
	unsigned literals;       /* body sections etc. */
};
int imap_reply_fetch(struct view rest, struct imap_fetch_atts *out, const char **error_r);

/* Is flag (e.g. "\\Seen", "$MB3") in a space-separated flag list? System
 * flags compare case-insensitively, keywords too (RFC 9051 2.3.2). */
bool imap_flags_has(struct view flags, const char *flag);

/* "[APPENDUID 7 42]": code_args "7 42" into uidvalidity and uid. */
int imap_reply_appenduid(struct view code_args, uint32_t *uidvalidity_r, uint32_t *uid_r);

#endif
