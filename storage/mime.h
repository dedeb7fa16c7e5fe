/* MIME structure of a message, parsed once at delivery ("parse once").
 *
 * At delivery the message is streamed through a mime_parser in chunks of any
 * size. The parser never holds the message: it keeps the first bytes of the
 * current line, the current header field and the description built so far,
 * all bounded by struct mime_limits. mime_parser_finish() produces a "mime
 * blob", stored next to the message; IMAP FETCH (ENVELOPE, BODY,
 * BODYSTRUCTURE, BODY[section], BINARY[section]) and SEARCH are then served
 * from the blob plus range reads of the stored body, never by re-parsing.
 *
 * Malformed MIME never fails: the blob describes the message as well as the
 * bytes allow. Offsets are always exact byte positions in the message as
 * received, whatever was truncated in the description.
 *
 * Part model. Every node has a header block and a body:
 *   - the top level node is the message itself (it carries the envelope);
 *   - a multipart node has one child per body part (preamble and epilogue
 *     belong to its body but to no child);
 *   - a message/rfc822 (or message/global) node has exactly one child: the
 *     encapsulated message, whose header block starts at the part's body and
 *     which carries its own envelope;
 *   - anything else is a leaf.
 * The CRLF (or LF) before a boundary line belongs to the boundary. A node's
 * header block includes the empty line ending it. Body line counts are the
 * LFs in the body plus one for a non-empty last line without LF.
 *
 * Blob format, version 1 (all integers little-endian):
 *   header (24 bytes): "MIMB" | u8 version=1 | u8 flags (MIME_BLOB_F_*) |
 *     u16 header_len=24 | u32 node_count | u32 reserved=0 | u64 message_size
 *   then the nodes in pre-order (a node's record, then its children's
 *   subtrees), each record:
 *     u32 rec_len (fixed part + TLVs) | u32 subtree_len (record + all
 *     descendants) | u32 n_children | u8 kind (0 leaf, 1 multipart,
 *     2 message) | u8 flags (MIME_NODE_F_*) | u16 depth |
 *     u64 hdr_start | u64 hdr_len | u64 body_start | u64 body_len |
 *     u64 body_lines | TLVs
 *   TLV: u8 tag | LEB128 length | value. Unknown tags are skipped by readers.
 *   Strings are raw bytes (unfolded header values, trimmed). Tags:
 *     1 type, 2 subtype (lower-case, after defaults: always present)
 *     3 param, 9 disposition param: LEB128-prefixed name (lower-case), then
 *       LEB128-prefixed value; RFC 2231 continuations joined (an extended
 *       value keeps its charset'lang'%XX form under the name "name*")
 *     4 Content-ID, 5 Content-Description, 6 Content-Transfer-Encoding
 *       (lower-case token), 7 Content-MD5, 8 disposition type (lower-case),
 *     10 one Content-Language tag (repeated), 11 Content-Location
 *     20 Date, 21 Subject, 28 In-Reply-To, 29 Message-ID (raw values)
 *     22 From, 23 Sender, 24 Reply-To, 25 To, 26 Cc, 27 Bcc: address list,
 *       a sequence of 4 nullable strings (name, adl, mailbox, host) per
 *       address, each LEB128(len + 1) then bytes, 0 meaning NIL; groups as in
 *       the IMAP ENVELOPE (NIL NIL "name" NIL) ... (NIL NIL NIL NIL)
 *     40..44 decoded UTF-8 text of Subject, From, To, Cc, Bcc for SEARCH
 *   Envelope tags appear only on nodes with MIME_NODE_F_ENVELOPE. The blob
 *   is at most max_blob_len plus the fixed records (56 bytes per node):
 *   TLVs that do not fit are dropped and MIME_BLOB_F_DROPPED is set.
 */
#ifndef STORAGE_MIME_H
#define STORAGE_MIME_H

#include "common/base.h"

/* Limits of one parse. A zero member takes its default. */
struct mime_limits {
	unsigned max_depth;	    /* deeper nodes are opaque leaves (64) */
	unsigned max_parts;	    /* nodes described per message (5000) */
	size_t max_field_len;	    /* bytes kept of one header field (16 KiB) */
	unsigned max_header_fields; /* fields examined per header (2000) */
	size_t max_line_len;	    /* bytes of a line seen for boundaries (1000) */
	size_t max_search_len;	    /* decoded SEARCH text per field (2 KiB) */
	size_t max_blob_len;	    /* TLV bytes kept in the blob (4 MiB) */
};

void mime_limits_default(struct mime_limits *lim);

/* Blob header flags. */
#define MIME_BLOB_F_DROPPED 0x01 /* some TLVs did not fit max_blob_len */
#define MIME_BLOB_F_LIMITED 0x02 /* depth or part limit reached */

/* Node flags. */
#define MIME_NODE_F_ENVELOPE 0x01	/* a message header: envelope tags */
#define MIME_NODE_F_OPAQUE 0x02		/* multipart/message made a leaf by limits */
#define MIME_NODE_F_NO_BLANK 0x04	/* header ended by boundary/EOF, no empty line */
#define MIME_NODE_F_BAD_TYPE 0x08	/* Content-Type unusable, default applied */
#define MIME_NODE_F_SKIPPED 0x10	/* some children not described (max_parts) */

struct mime_parser;

/* lim may be NULL for the defaults. Never fails (allocation aborts). */
struct mime_parser *mime_parser_new(const struct mime_limits *lim);
/* Feed the next bytes of the message, any chunk size. Returns 0, or -1 if
 * called after mime_parser_finish(). */
int mime_parser_feed(struct mime_parser *p, const uint8_t *data, size_t len);
/* End of message: appends the blob to blob_out. Returns 0, or -1 if
 * blob_out's maximum was exceeded (blob_out then unchanged) or finish was
 * already called. Only mime_parser_free() may follow. */
int mime_parser_finish(struct mime_parser *p, struct buf *blob_out);
void mime_parser_free(struct mime_parser **p);
/* Highest memory the parser held at once (its own allocations, bytes). */
size_t mime_parser_mem_high_water(const struct mime_parser *p);

/* Content-Transfer-Encoding. */
enum mime_cte {
	MIME_CTE_7BIT,
	MIME_CTE_8BIT,
	MIME_CTE_BINARY,
	MIME_CTE_BASE64,
	MIME_CTE_QP,
	MIME_CTE_UNKNOWN,
};

/* Maps a CTE token (case-insensitive, surrounding blanks ignored); an empty
 * view is 7bit. */
enum mime_cte mime_cte_parse(struct view name);

/* What the node needs to serve BODY[section], BINARY[section]. */
struct mime_part_info {
	uint64_t hdr_start, hdr_len;   /* the part's MIME header: BODY[x.MIME] */
	uint64_t body_start, body_len; /* the part's body: BODY[x] */
	uint64_t body_lines;
	char type[64], subtype[64];    /* lower-case, NUL-terminated, truncated */
	enum mime_cte cte;
	bool is_multipart;
	/* True for the top level (section "") and for message/rfc822 parts:
	 * msg_* is the encapsulated message, for x.HEADER and x.TEXT. */
	bool is_message;
	uint64_t msg_hdr_start, msg_hdr_len, msg_body_start, msg_body_len;
};

/* Readers over a blob; the body is not needed. All return 0, or -1 for a
 * malformed blob, an unknown section or when out's maximum is exceeded
 * (out may then hold a partial result). */

/* IMAP ENVELOPE of the top-level message (RFC 9051 7.5.2), e.g.
 * ("date" "subject" (("name" NIL "user" "host")) ... "<id@host>"). Strings
 * with CR, LF or 8-bit bytes are sent as literals; NUL bytes are dropped. */
int mime_blob_envelope(struct view blob, struct buf *out);
/* BODY (extended=false) or BODYSTRUCTURE (extended=true) of the message. */
int mime_blob_bodystructure(struct view blob, bool extended, struct buf *out);
/* section: "" for the top level or dot-separated part numbers "1.2.3"
 * (IMAP rules: a message/rfc822 part's numbers refer to the encapsulated
 * message's parts; a non-multipart body is its own part 1). */
int mime_blob_find_part(struct view blob, const char *section,
			struct mime_part_info *out);

enum mime_search_field {
	MIME_SEARCH_SUBJECT,
	MIME_SEARCH_FROM,
	MIME_SEARCH_TO,
	MIME_SEARCH_CC,
	MIME_SEARCH_BCC,
};
/* Decoded UTF-8 text of a top-level header for SEARCH; out points into the
 * blob. Returns 0 (empty view if the header is absent) or -1 if malformed. */
int mime_blob_search_text(struct view blob, enum mime_search_field f,
			  struct view *out);

/* Decodes RFC 2047 encoded-words (B and Q; us-ascii, utf-8, iso-8859-1,
 * iso-8859-15, windows-1252; words in other charsets are kept raw), joins
 * adjacent encoded-words, unfolds, and appends UTF-8 to utf8_out (other
 * 8-bit text: UTF-8 kept, invalid bytes read as windows-1252; NUL dropped).
 * Returns 0, or -1 when utf8_out's maximum stopped the output (at a
 * character boundary). */
int mime_decode_header(struct view raw, struct buf *utf8_out);

/* Streaming Content-Transfer-Encoding decoder for BINARY[]. Garbage is
 * skipped and sets `damaged`; decoding always goes on. */
struct mime_decoder {
	enum mime_cte cte;
	bool damaged;
	/* private */
	uint32_t acc;
	uint8_t nacc, state, hex;
	bool pad_seen;
	uint8_t nws;
	uint8_t ws[64];
};

/* Returns -1 for MIME_CTE_UNKNOWN (the node answers UNKNOWN-CTE). */
int mime_decoder_init(struct mime_decoder *d, enum mime_cte cte);
/* Append decoded bytes to out; -1 when out's maximum is exceeded. */
int mime_decoder_feed(struct mime_decoder *d, const uint8_t *p, size_t len,
		      struct buf *out);
int mime_decoder_finish(struct mime_decoder *d, struct buf *out);

#endif
