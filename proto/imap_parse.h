/* IMAP command parser: pure code, no I/O, no syscalls.
 *
 * Shared by the proxy (pre-auth), the storage node (IMAP4rev2 server) and
 * the load generator. Grammar: RFC 9051 section 9 and RFC 3501, plus
 * LITERAL+/LITERAL- (RFC 7888), UTF8=ACCEPT (RFC 6855), BINARY literal8
 * (RFC 3516), CONDSTORE/QRESYNC (RFC 7162), LIST-EXTENDED (RFC 5258),
 * LIST-STATUS (RFC 5819), SPECIAL-USE (RFC 6154), MULTIAPPEND (RFC 3502),
 * ESEARCH/SEARCHRES (RFC 4731, 5182), SORT/THREAD (RFC 5256), ID (RFC 2971),
 * QUOTA (RFC 9208), COMPRESS (RFC 4978), WITHIN (RFC 5032), SAVEDATE
 * (RFC 8514), OBJECTID (RFC 8474).
 *
 * Two layers.
 *
 * Layer 1 turns bytes into one command: a tag, a command name and a tree of
 * arguments (atoms, quoted strings, literals, NIL, parenthesised lists). It
 * is incremental and resumable: bytes may be fed in any split, down to one
 * at a time, and the result does not depend on the split. All bytes of a
 * command are copied into the parser (bounded by struct imap_limits), so the
 * caller may drop its input as soon as feed() has consumed it.
 *
 * Layer 2 decodes the tree into a typed struct imap_command for every
 * command listed in enum imap_cmd. A command whose arguments do not match
 * its syntax is IMAP_BAD with a reason; an unknown command name is not an
 * error here (IMAP_OK with IMAP_CMD_UNKNOWN: the session answers BAD).
 *
 * Results of imap_parser_feed():
 *
 *   IMAP_OK           a complete command: imap_parser_command().
 *   IMAP_MORE         all bytes consumed, the command is not complete yet.
 *   IMAP_LITERAL_WAIT a synchronizing literal {n} / ~{n} ended the line.
 *                     imap_parser_literal() says its size and whether it
 *                     fits the limits. Accepted: send "+ OK" and feed on.
 *                     Refused: the client sends nothing more for this
 *                     command, so the parser is already back at the start
 *                     of the next one; reply "tag NO [TOOBIG] ..." for an
 *                     APPEND message (literal.append) or "tag BAD ...".
 *   IMAP_BAD          the command is invalid. Reply "tag BAD reason" with
 *                     imap_parser_tag() ("*" when no valid tag was read) and
 *                     imap_parser_error(). The parser has consumed the rest
 *                     of the line, including the data of any {n+} literal
 *                     announced on it, and is ready for the next command.
 *   IMAP_FATAL        reply "* BYE reason" and close. Sticky: every later
 *                     feed returns IMAP_FATAL and consumes nothing.
 *
 * FATAL is reserved for what cannot be resynchronised cheaply:
 *   - the command's non-literal bytes exceed max_line (we would have to
 *     scan an unbounded line whose literals we can no longer trust);
 *   - a {n+} literal that must be discarded (over a limit, or announced
 *     on a line already in error) is larger than max_skip: the client is
 *     sending it anyway and we refuse to read that much garbage;
 *   - a literal size that does not fit in 64 bits, on a {n+} literal.
 * A refused synchronizing literal is never fatal: the client waits for our
 * answer, so nothing has to be skipped.
 *
 * Lines end with CRLF; a bare LF is accepted as well (counted in
 * imap_parser_bare_lf()). Empty lines between commands are ignored.
 * Arguments are separated by one or more spaces (extra spaces tolerated).
 *
 * The FETCH attributes BODY[...], BODY.PEEK[...], BINARY[...],
 * BINARY.PEEK[...] and BINARY.SIZE[...] are single atoms for layer 1: once
 * such an atom reaches '[', spaces, parentheses and quoted strings are part
 * of it up to the matching ']' (literals are refused there). Layer 2 parses
 * the section text.
 *
 * Streaming APPEND. By default every literal is held in memory (max_literal
 * each). A caller that stores messages opts in with
 * imap_parser_set_sink(): from then on the message literal(s) of APPEND
 * (any literal at the top level after the mailbox, and the literal8 inside
 * RFC 6855 "UTF8 (~{n})") are not stored but passed to the sink as they
 * arrive, bounded by max_stream_literal instead of max_literal:
 * begin(size, literal8) once, data() for each piece (any split), end()
 * when the last byte arrived. A hook returning -1 makes the parser discard
 * the rest of that literal silently and flag the command
 * (append.sink_failed): the command still parses to the end so the
 * session can answer NO. The messages are only valid if the command ends
 * in IMAP_OK: on IMAP_BAD, IMAP_FATAL, imap_parser_reset() or
 * imap_parser_free() in the middle, the caller drops what it received.
 *
 * Memory: a command owns at most about max_line + max_command bytes of
 * token data, max_args argument nodes and a decoding arena bounded by
 * 32 * max_line + 4 * max_command + 64 KiB ("Command too complex" beyond).
 * Everything is released (and the token bytes wiped, since they may hold a
 * password) at the next feed, imap_parser_release() or reset; large
 * buffers are not kept between commands. */
#ifndef PROTO_IMAP_PARSE_H
#define PROTO_IMAP_PARSE_H

#include "common/base.h"

enum imap_result {
	IMAP_OK,
	IMAP_MORE,
	IMAP_LITERAL_WAIT,
	IMAP_BAD,
	IMAP_FATAL,
};

struct imap_limits {
	/* Non-literal bytes of one command (all its lines, CRLFs included). */
	size_t max_line;
	/* One literal held in memory. */
	size_t max_literal;
	/* A {n+} literal: 4096 for LITERAL-, else as max_literal. */
	size_t max_nonsync_literal;
	/* Line bytes plus in-memory literal bytes of one command. */
	size_t max_command;
	/* One APPEND message streamed to the sink (APPENDLIMIT). */
	uint64_t max_stream_literal;
	/* Literal bytes the parser discards to recover from an error in one
	 * command; more is IMAP_FATAL. */
	uint64_t max_skip;
	/* Parenthesis nesting depth. */
	unsigned max_depth;
	/* Argument nodes in one command (lists count as one each, plus their
	 * elements). */
	unsigned max_args;
};

/* Authenticated session: 64 KiB lines, 1 MiB literals, 64 MiB APPEND. */
struct imap_limits imap_limits_default(void);
/* Before authentication: 8 KiB lines, 8 KiB literals, no LITERAL+ beyond
 * 4 KiB, nothing streamed, depth 4, 64 args. */
struct imap_limits imap_limits_preauth(void);

/* ---- Layer 1: argument tree ---- */

enum imap_arg_type {
	IMAP_ARG_ATOM,
	IMAP_ARG_STRING,  /* quoted string, unescaped */
	IMAP_ARG_LITERAL, /* {n}, {n+} or ~{n} */
	IMAP_ARG_NIL,     /* the atom NIL, any case (str holds it as sent) */
	IMAP_ARG_LIST,
};

struct imap_arg {
	enum imap_arg_type type;
	bool literal8; /* ~{n} */
	bool has_nul;  /* a literal containing NUL bytes */
	bool streamed; /* APPEND message passed to the sink: no str */
	/* ATOM/STRING/LITERAL/NIL: the bytes, followed by a NUL that is not
	 * counted (a literal8 may hold NULs itself). */
	struct view str;
	uint64_t literal_size; /* LITERAL: n (also when streamed) */
	const struct imap_arg *list; /* LIST: elements */
	size_t list_count;
};

/* ---- Layer 2: typed commands ---- */

enum imap_cmd {
	IMAP_CMD_UNKNOWN = 0,
	IMAP_CMD_CAPABILITY,
	IMAP_CMD_NOOP,
	IMAP_CMD_LOGOUT,
	IMAP_CMD_STARTTLS,
	IMAP_CMD_AUTHENTICATE,
	IMAP_CMD_LOGIN,
	IMAP_CMD_ENABLE,
	IMAP_CMD_SELECT,
	IMAP_CMD_EXAMINE,
	IMAP_CMD_CREATE,
	IMAP_CMD_DELETE,
	IMAP_CMD_RENAME,
	IMAP_CMD_SUBSCRIBE,
	IMAP_CMD_UNSUBSCRIBE,
	IMAP_CMD_LIST,
	IMAP_CMD_LSUB,
	IMAP_CMD_NAMESPACE,
	IMAP_CMD_STATUS,
	IMAP_CMD_APPEND,
	IMAP_CMD_IDLE,
	IMAP_CMD_CHECK,
	IMAP_CMD_CLOSE,
	IMAP_CMD_UNSELECT,
	IMAP_CMD_EXPUNGE,
	IMAP_CMD_SEARCH,
	IMAP_CMD_FETCH,
	IMAP_CMD_STORE,
	IMAP_CMD_COPY,
	IMAP_CMD_MOVE,
	IMAP_CMD_ID,
	IMAP_CMD_GETQUOTA,
	IMAP_CMD_GETQUOTAROOT,
	IMAP_CMD_SETQUOTA,
	IMAP_CMD_SORT,
	IMAP_CMD_THREAD,
	IMAP_CMD_COMPRESS,
	IMAP_CMD_COUNT_
};

/* Sequence sets. '*' is kept as IMAP_SEQ_STAR; numbers are 1..2^32-1.
 * A parsed set is normalised: each range has lo <= hi (with '*' the
 * largest value), ranges are sorted and overlapping or adjacent ones are
 * merged. '$' (SEARCHRES, RFC 5182) sets `saved`: the caller unions the
 * saved result in (we also accept '$' combined with ranges). */
#define IMAP_SEQ_STAR UINT64_MAX
struct imap_seq_range {
	uint64_t lo, hi;
};
struct imap_seqset {
	const struct imap_seq_range *ranges;
	size_t count;
	bool saved;
};

/* Resolve '*' to max (the message count, or the highest UID in use) into
 * out[] (room for s->count entries): sorted, merged, every value in 1..max.
 * Returns the number of ranges (0 when max is 0). For message sequence
 * numbers the caller checks imap_seqset_max_number(s) <= max first (a
 * larger number is BAD there); for UIDs numbers above max simply match
 * nothing. */
size_t imap_seqset_resolve(const struct imap_seqset *s, uint32_t max,
			   struct imap_seq_range *out);
/* The largest explicit number in s ('*' ignored); 0 if none. */
uint64_t imap_seqset_max_number(const struct imap_seqset *s);
/* Is v in s with '*' = max? ('$' is not considered.) */
bool imap_seqset_contains(const struct imap_seqset *s, uint32_t v,
			  uint32_t max);
/* Keep the UIDs of uids[0..n) (ascending) that are in s, '*' being the
 * last UID; writes them to out (room for n) and returns how many. */
size_t imap_seqset_filter_uids(const struct imap_seqset *s,
			       const uint32_t *uids, size_t n, uint32_t *out);

struct imap_date {
	uint16_t year;
	uint8_t month; /* 1..12 */
	uint8_t day;   /* 1..31 */
};

struct imap_datetime {
	uint16_t year;
	uint8_t month, day, hour, min, sec;
	int16_t zone_min; /* offset east of UTC in minutes */
};
/* Seconds since the epoch (UTC). */
int64_t imap_datetime_to_unix(const struct imap_datetime *dt);

enum imap_search_type {
	IMAP_SEARCH_AND, /* sub: count >= 1 (parenthesised or top level) */
	IMAP_SEARCH_OR,  /* sub: count == 2 */
	IMAP_SEARCH_NOT, /* sub: count == 1 */
	IMAP_SEARCH_SEQSET, /* set */
	IMAP_SEARCH_UID,    /* set */
	IMAP_SEARCH_ALL,
	IMAP_SEARCH_ANSWERED,
	IMAP_SEARCH_DELETED,
	IMAP_SEARCH_DRAFT,
	IMAP_SEARCH_FLAGGED,
	IMAP_SEARCH_SEEN,
	IMAP_SEARCH_RECENT, /* rev1 */
	IMAP_SEARCH_NEW,    /* rev1 */
	IMAP_SEARCH_OLD,    /* rev1 */
	IMAP_SEARCH_UNANSWERED,
	IMAP_SEARCH_UNDELETED,
	IMAP_SEARCH_UNDRAFT,
	IMAP_SEARCH_UNFLAGGED,
	IMAP_SEARCH_UNSEEN,
	IMAP_SEARCH_KEYWORD,   /* str */
	IMAP_SEARCH_UNKEYWORD, /* str */
	IMAP_SEARCH_BCC,       /* str ... */
	IMAP_SEARCH_BODY,
	IMAP_SEARCH_CC,
	IMAP_SEARCH_FROM,
	IMAP_SEARCH_SUBJECT,
	IMAP_SEARCH_TEXT,
	IMAP_SEARCH_TO,        /* ... str */
	IMAP_SEARCH_HEADER,    /* header */
	IMAP_SEARCH_BEFORE,    /* date ... */
	IMAP_SEARCH_ON,
	IMAP_SEARCH_SINCE,
	IMAP_SEARCH_SENTBEFORE,
	IMAP_SEARCH_SENTON,
	IMAP_SEARCH_SENTSINCE,
	IMAP_SEARCH_SAVEDBEFORE,
	IMAP_SEARCH_SAVEDON,
	IMAP_SEARCH_SAVEDSINCE, /* ... date */
	IMAP_SEARCH_SAVEDATESUPPORTED,
	IMAP_SEARCH_LARGER,  /* number */
	IMAP_SEARCH_SMALLER, /* number */
	IMAP_SEARCH_OLDER,   /* number (seconds, WITHIN) */
	IMAP_SEARCH_YOUNGER, /* number */
	IMAP_SEARCH_MODSEQ,  /* modseq */
	IMAP_SEARCH_EMAILID, /* str */
	IMAP_SEARCH_THREADID, /* str */
};

enum imap_modseq_entry {
	IMAP_MODSEQ_ENTRY_NONE,
	IMAP_MODSEQ_ENTRY_PRIV,
	IMAP_MODSEQ_ENTRY_SHARED,
	IMAP_MODSEQ_ENTRY_ALL,
};

struct imap_search_key {
	enum imap_search_type type;
	union {
		struct {
			const struct imap_search_key *keys;
			size_t count;
		} sub;
		struct imap_seqset set;
		struct view str;
		struct {
			struct view field, value;
		} header;
		struct imap_date date;
		uint64_t number;
		struct {
			uint64_t value;
			/* entry name, e.g. "/flags/\\Seen"; type NONE if
			 * not given */
			struct view entry;
			enum imap_modseq_entry entry_type;
		} modseq;
	} u;
};

enum imap_fetch_type {
	IMAP_FETCH_ENVELOPE,
	IMAP_FETCH_FLAGS,
	IMAP_FETCH_INTERNALDATE,
	IMAP_FETCH_RFC822_SIZE,
	IMAP_FETCH_RFC822,
	IMAP_FETCH_RFC822_HEADER,
	IMAP_FETCH_RFC822_TEXT,
	IMAP_FETCH_BODY,          /* BODY without section: structure */
	IMAP_FETCH_BODYSTRUCTURE,
	IMAP_FETCH_UID,
	IMAP_FETCH_MODSEQ,
	IMAP_FETCH_SAVEDATE,
	IMAP_FETCH_EMAILID,
	IMAP_FETCH_THREADID,
	IMAP_FETCH_BODY_SECTION,  /* BODY[...] / BODY.PEEK[...] */
	IMAP_FETCH_BINARY,        /* BINARY[...] / BINARY.PEEK[...] */
	IMAP_FETCH_BINARY_SIZE,   /* BINARY.SIZE[...] */
};

enum imap_section_text {
	IMAP_SECTION_NONE, /* BODY[] or BODY[1.2]: the whole part */
	IMAP_SECTION_HEADER,
	IMAP_SECTION_HEADER_FIELDS,
	IMAP_SECTION_HEADER_FIELDS_NOT,
	IMAP_SECTION_TEXT,
	IMAP_SECTION_MIME,
};

struct imap_section {
	const uint32_t *parts; /* "1.2.3": {1,2,3} */
	size_t part_count;
	enum imap_section_text text;
	const struct view *fields; /* HEADER.FIELDS[.NOT] */
	size_t field_count;
};

struct imap_fetch_item {
	enum imap_fetch_type type;
	bool peek;
	struct imap_section section; /* BODY_SECTION, BINARY, BINARY_SIZE */
	bool partial;                /* <offset.length> */
	uint64_t partial_offset, partial_length;
};

enum imap_fetch_macro {
	IMAP_FETCH_MACRO_NONE,
	IMAP_FETCH_MACRO_ALL,  /* FLAGS INTERNALDATE RFC822.SIZE ENVELOPE */
	IMAP_FETCH_MACRO_FAST, /* FLAGS INTERNALDATE RFC822.SIZE */
	IMAP_FETCH_MACRO_FULL, /* ALL + BODY */
};

enum imap_store_op {
	IMAP_STORE_REPLACE, /* FLAGS */
	IMAP_STORE_ADD,     /* +FLAGS */
	IMAP_STORE_REMOVE,  /* -FLAGS */
};

/* STATUS items and LIST RETURN (STATUS (...)) items. */
#define IMAP_STATUS_MESSAGES (1u << 0)
#define IMAP_STATUS_UIDNEXT (1u << 1)
#define IMAP_STATUS_UIDVALIDITY (1u << 2)
#define IMAP_STATUS_UNSEEN (1u << 3)
#define IMAP_STATUS_DELETED (1u << 4)
#define IMAP_STATUS_SIZE (1u << 5)
#define IMAP_STATUS_RECENT (1u << 6)
#define IMAP_STATUS_HIGHESTMODSEQ (1u << 7)
#define IMAP_STATUS_APPENDLIMIT (1u << 8)
#define IMAP_STATUS_MAILBOXID (1u << 9)
#define IMAP_STATUS_DELETED_STORAGE (1u << 10) /* RFC 9208 */

/* LIST selection options. */
#define IMAP_LIST_SEL_SUBSCRIBED (1u << 0)
#define IMAP_LIST_SEL_REMOTE (1u << 1)
#define IMAP_LIST_SEL_RECURSIVEMATCH (1u << 2)
#define IMAP_LIST_SEL_SPECIAL_USE (1u << 3)
/* LIST return options. */
#define IMAP_LIST_RET_SUBSCRIBED (1u << 0)
#define IMAP_LIST_RET_CHILDREN (1u << 1)
#define IMAP_LIST_RET_SPECIAL_USE (1u << 2)
#define IMAP_LIST_RET_STATUS (1u << 3)

/* SEARCH / SORT RETURN options (ESEARCH, SEARCHRES). RETURN () means ALL
 * and is reported as IMAP_SEARCH_RET_ALL. */
#define IMAP_SEARCH_RET_MIN (1u << 0)
#define IMAP_SEARCH_RET_MAX (1u << 1)
#define IMAP_SEARCH_RET_ALL (1u << 2)
#define IMAP_SEARCH_RET_COUNT (1u << 3)
#define IMAP_SEARCH_RET_SAVE (1u << 4)

enum imap_sort_key {
	IMAP_SORT_ARRIVAL,
	IMAP_SORT_CC,
	IMAP_SORT_DATE,
	IMAP_SORT_FROM,
	IMAP_SORT_SIZE,
	IMAP_SORT_SUBJECT,
	IMAP_SORT_TO,
	IMAP_SORT_DISPLAYFROM,
	IMAP_SORT_DISPLAYTO,
};

struct imap_sort_criterion {
	enum imap_sort_key key;
	bool reverse;
};

struct imap_append_msg {
	const struct view *flags; /* as sent, e.g. "\\Seen", "$Junk" */
	size_t flag_count;
	bool has_date;
	struct imap_datetime date;
	bool literal8;
	bool utf8;     /* RFC 6855 "UTF8 (~{n})" form */
	bool streamed; /* passed to the sink; data is empty */
	uint64_t size;
	struct view data; /* !streamed: the message */
};

struct imap_id_param {
	struct view key;
	struct view value;
	bool value_nil;
};

struct imap_quota_resource {
	struct view name;
	uint64_t limit;
};

/* Strings are views into parser memory, valid until the next feed,
 * imap_parser_release() or reset. Mailbox names (and LIST references and
 * patterns) are UTF-8: decoded from modified UTF-7 unless UTF8=ACCEPT is
 * on, validated (no control characters, valid UTF-8), and "INBOX" in any
 * case is returned as "INBOX". */
struct imap_command {
	enum imap_cmd cmd;
	bool uid; /* UID FETCH/STORE/COPY/MOVE/SEARCH/EXPUNGE/SORT/THREAD */
	struct view tag;
	struct view name; /* command name as sent (the subcommand after UID) */
	/* Layer-1 arguments after the command name (after the UID
	 * subcommand). */
	const struct imap_arg *args;
	size_t args_count;

	union {
		struct {
			struct view mechanism;
			bool has_ir;   /* SASL-IR initial response given */
			struct view ir; /* base64 as sent; empty for "=" */
		} authenticate;
		struct {
			struct view user, pass;
		} login;
		struct {
			const struct view *caps;
			size_t count;
		} enable;
		struct { /* SELECT, EXAMINE */
			struct view mailbox;
			bool condstore;
			bool qresync;
			uint32_t uidvalidity;
			uint64_t modseq;
			struct imap_seqset known_uids; /* count 0: absent */
			bool has_seq_match;
			struct imap_seqset known_seqs, known_seq_uids;
		} select;
		struct {
			struct view mailbox;
			const struct view *use; /* (USE (\Sent ...)) */
			size_t use_count;
		} create;
		/* DELETE, SUBSCRIBE, UNSUBSCRIBE, GETQUOTAROOT */
		struct view mailbox;
		struct {
			struct view from, to;
		} rename;
		struct { /* LIST, LSUB */
			bool extended; /* selection or return options given,
					  or a pattern list */
			unsigned select_opts;  /* IMAP_LIST_SEL_* */
			unsigned return_opts;  /* IMAP_LIST_RET_* */
			unsigned status_items; /* IMAP_STATUS_* */
			struct view reference;
			const struct view *patterns;
			size_t pattern_count;
		} list;
		struct {
			struct view mailbox;
			unsigned items; /* IMAP_STATUS_* */
		} status;
		struct {
			struct view mailbox;
			const struct imap_append_msg *msgs;
			size_t count; /* > 1: MULTIAPPEND */
			bool sink_failed;
		} append;
		struct { /* UID EXPUNGE */
			struct imap_seqset set;
		} expunge;
		struct {
			bool esearch;         /* RETURN (...) given */
			unsigned return_opts; /* IMAP_SEARCH_RET_* */
			bool has_charset;
			struct view charset;
			const struct imap_search_key *root;
		} search;
		struct {
			struct imap_seqset set;
			enum imap_fetch_macro macro; /* items expanded too */
			const struct imap_fetch_item *items;
			size_t count;
			bool has_changedsince;
			uint64_t changedsince;
			bool vanished;
		} fetch;
		struct {
			struct imap_seqset set;
			bool has_unchangedsince;
			uint64_t unchangedsince;
			enum imap_store_op op;
			bool silent;
			const struct view *flags;
			size_t flag_count;
		} store;
		struct { /* COPY, MOVE */
			struct imap_seqset set;
			struct view mailbox;
		} copy;
		struct {
			bool nil;
			const struct imap_id_param *params;
			size_t count;
		} id;
		struct {
			struct view root;
		} getquota;
		struct {
			struct view root;
			const struct imap_quota_resource *resources;
			size_t count;
		} setquota;
		struct {
			bool esort;
			unsigned return_opts;
			const struct imap_sort_criterion *criteria;
			size_t criteria_count;
			struct view charset;
			const struct imap_search_key *root;
		} sort;
		struct {
			struct view algorithm; /* REFERENCES, ORDEREDSUBJECT... */
			struct view charset;
			const struct imap_search_key *root;
		} thread;
		struct {
			struct view mechanism;
		} compress;
	} u;
};

/* ---- Parser ---- */

struct imap_parser;

struct imap_literal_sink {
	int (*begin)(void *ctx, uint64_t size, bool literal8);
	int (*data)(void *ctx, const uint8_t *data, size_t len);
	int (*end)(void *ctx);
	void *ctx;
};

/* limits NULL: imap_limits_default(). */
struct imap_parser *imap_parser_new(const struct imap_limits *limits);
/* NULL-safe; clears *p. */
void imap_parser_free(struct imap_parser **p);
/* Forget any partial command and a FATAL state. */
void imap_parser_reset(struct imap_parser *p);
/* Takes effect from the next command (e.g. after authentication). */
void imap_parser_set_limits(struct imap_parser *p,
			    const struct imap_limits *limits);
/* After "ENABLE UTF8=ACCEPT" (or "ENABLE IMAP4rev2", where mailbox names
 * are UTF-8 too): mailbox names are UTF-8, '&' is literal. Off, names must
 * be 7-bit modified UTF-7 and are decoded. */
void imap_parser_set_utf8(struct imap_parser *p, bool utf8_accept);
/* Stream APPEND messages (see top). NULL: keep them in memory. The struct
 * is copied. Takes effect from the next command. */
void imap_parser_set_sink(struct imap_parser *p,
			  const struct imap_literal_sink *sink);

/* Feed bytes. *consumed_r is how many were used: all of them for
 * IMAP_MORE; up to the end of the command's line (or the literal
 * announcement) for IMAP_OK, IMAP_BAD and IMAP_LITERAL_WAIT; call again
 * with the rest. data may be NULL when len is 0. */
enum imap_result imap_parser_feed(struct imap_parser *p, const uint8_t *data,
				  size_t len, size_t *consumed_r);

/* After IMAP_OK, until the next feed / release / reset; else NULL. */
const struct imap_command *imap_parser_command(const struct imap_parser *p);
/* Tag of the last OK/BAD/LITERAL_WAIT command, "*" if none was valid. */
struct view imap_parser_tag(const struct imap_parser *p);
/* Reason for the last BAD, FATAL or refused literal; "" otherwise. Short,
 * printable ASCII, any client token in it sanitised and bounded. */
const char *imap_parser_error(const struct imap_parser *p);

struct imap_literal_info {
	uint64_t size;
	bool accepted;
	bool append;   /* an APPEND message (limit max_stream_literal if a
			  sink is set) */
	bool literal8;
};
/* After IMAP_LITERAL_WAIT. */
struct imap_literal_info imap_parser_literal(const struct imap_parser *p);

/* Release the current command's memory now (also done by the next feed).
 * Returns true when the parser is between commands (nothing of a next one
 * fed yet): it then holds only its own struct, and a caller may free it and
 * start the next command on a new parser with the same settings. */
bool imap_parser_release(struct imap_parser *p);
/* Bytes currently allocated by the parser. */
size_t imap_parser_mem(const struct imap_parser *p);
/* Bare LFs accepted as line ends so far. */
unsigned imap_parser_bare_lf(const struct imap_parser *p);

/* While IDLE: is data a "DONE" line (any case, CRLF or LF)? IMAP_OK:
 * DONE, *consumed_r is its length. IMAP_MORE: no line end yet (nothing
 * consumed). IMAP_BAD: another line, consumed. IMAP_FATAL: no line end in
 * the first 1024 bytes. */
enum imap_result imap_idle_done(const uint8_t *data, size_t len,
				size_t *consumed_r);

/* Modified UTF-7 (RFC 3501 5.1.3). Append the conversion to out (whose
 * max bounds it). 0, or -1 with a reason (input invalid, or out full). */
int imap_mutf7_to_utf8(struct view in, struct buf *out, const char **error_r);
int imap_utf8_to_mutf7(struct view in, struct buf *out, const char **error_r);

const char *imap_result_str(enum imap_result r);
const char *imap_cmd_str(enum imap_cmd cmd);

#endif
