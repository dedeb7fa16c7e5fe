/* POP3 command parser and response helpers: pure code, no I/O.
 *
 * Grammar: RFC 1939 (POP3), RFC 2449 (CAPA, RESP-CODES, 255-octet command
 * lines), RFC 5034 (AUTH, SASL PLAIN per RFC 4616), RFC 6856 (UTF8).
 *
 * Commands. pop3_parse_line() takes the bytes received so far and returns:
 *
 *   POP3_OK    one command in *out; *consumed_r bytes (through its LF) are
 *              used. The views in *out point into p and stay valid until
 *              the caller drops those bytes.
 *   POP3_MORE  no complete line yet; *consumed_r is 0. Call again with more.
 *   POP3_BAD   the line is invalid (out->error says why; reply "-ERR").
 *              Normally the parser has consumed through the end of that
 *              line and the next command starts right after. A line longer
 *              than max_line is refused as soon as max_line bytes arrived
 *              without an LF: everything received is consumed and
 *              out->line_open is set; the caller then drops input through
 *              the next LF with pop3_skip_line() before parsing again.
 *
 * A line ends in CRLF; a bare LF is accepted and reported (out->bare_lf).
 * max_line counts the whole line including its CRLF (RFC 2449: 255).
 * The keyword is case-insensitive; arguments are separated by spaces
 * (runs of spaces tolerated). Control characters and NUL are refused
 * anywhere in the line. PASS takes the rest of the line as one argument
 * (passwords may contain spaces). Numeric arguments are plain decimal,
 * overflow-checked into 32 bits. Per-command argument counts are checked
 * here; an unknown keyword is POP3_OK with POP3_CMD_UNKNOWN (the session
 * answers -ERR). */
#ifndef PROTO_POP3_PARSE_H
#define PROTO_POP3_PARSE_H

#include "common/base.h"

/* RFC 2449 section 4: command lines, CRLF included. */
#define POP3_LINE_MAX 255
/* A SASL continuation line (base64 of authzid\0authcid\0passwd). */
#define POP3_SASL_LINE_MAX 1024
/* Decoded SASL PLAIN fields. */
#define POP3_SASL_ID_MAX 255
#define POP3_SASL_PASS_MAX 255

enum pop3_result {
	POP3_OK,
	POP3_MORE,
	POP3_BAD,
};

enum pop3_verb {
	POP3_CMD_UNKNOWN = 0,
	POP3_CMD_USER,
	POP3_CMD_PASS,
	POP3_CMD_APOP,
	POP3_CMD_STAT,
	POP3_CMD_LIST,
	POP3_CMD_RETR,
	POP3_CMD_DELE,
	POP3_CMD_NOOP,
	POP3_CMD_RSET,
	POP3_CMD_QUIT,
	POP3_CMD_TOP,
	POP3_CMD_UIDL,
	POP3_CMD_CAPA,
	POP3_CMD_AUTH,
	POP3_CMD_STLS,
	POP3_CMD_UTF8,
};
const char *pop3_verb_str(enum pop3_verb v);

#define POP3_MAX_ARGS 2

struct pop3_command {
	enum pop3_verb verb;
	struct view keyword;          /* as sent (for logs of unknown verbs) */
	unsigned nargs;
	struct view args[POP3_MAX_ARGS];
	/* For LIST, UIDL (when nargs == 1), RETR, DELE and TOP: the
	 * arguments as numbers (the message number, TOP's line count). */
	uint32_t num[POP3_MAX_ARGS];
	bool bare_lf;                 /* the line ended in LF without CR */
	bool line_open;               /* BAD: line end not seen yet, skip it */
	const char *error;            /* POP3_BAD: static reason */
};

enum pop3_result pop3_parse_line(const uint8_t *p, size_t len, size_t max_line,
				 struct pop3_command *out, size_t *consumed_r);

/* A raw line (SASL continuation response) of at most max_line bytes with
 * its CRLF: same results and line_open rule as pop3_parse_line, the line
 * without its CRLF in out->args[0] (nargs 1, verb UNKNOWN). */
enum pop3_result pop3_parse_raw_line(const uint8_t *p, size_t len, size_t max_line,
				     struct pop3_command *out, size_t *consumed_r);

/* Drop input of an over-long line: returns the bytes to consume and sets
 * *done_r when they include the terminating LF. */
size_t pop3_skip_line(const uint8_t *p, size_t len, bool *done_r);

/* ---- SASL ------------------------------------------------------------- */

/* Strict standard base64 (RFC 4648 section 4, padding required, no
 * whitespace, zero pad bits). Writes at most out_cap bytes. Returns 0, or
 * -1 if the input is malformed or does not fit. */
int pop3_base64_decode(struct view in, uint8_t *out, size_t out_cap, size_t *out_len_r);

struct pop3_sasl_plain {
	struct view authzid; /* may be empty */
	struct view authcid;
	struct view passwd;
};

/* Decode an AUTH PLAIN response (RFC 4616: [authzid] NUL authcid NUL
 * passwd) from base64 `b64` into out[out_cap] (the views point there; the
 * caller wipes it). authcid and passwd must be non-empty and at most
 * POP3_SASL_ID_MAX / POP3_SASL_PASS_MAX bytes; exactly two NULs. Returns 0,
 * or -1 with a static reason. */
int pop3_sasl_plain_decode(struct view b64, uint8_t *out, size_t out_cap,
			   struct pop3_sasl_plain *r, const char **error_r);

/* ---- multi-line responses ----------------------------------------------- */

/* Turns a message, fed in pieces split anywhere, into the body of a POP3
 * multi-line response: a '.' at the start of a line gets another '.', a
 * bare LF becomes CRLF, and finish() ends an unterminated last line and
 * adds the ".\r\n" terminator. The TOP variant passes the header, the
 * blank line that ends it and then at most `lines` body lines; a message
 * without a blank line is passed whole. */
struct pop3_dotstuff {
	bool at_line_start;
	bool prev_cr;
	bool line_content;  /* current line has bytes other than its CRLF */
	bool top;
	bool in_header;
	bool done;          /* TOP limit reached: the rest is ignored */
	bool finished;
	uint32_t lines_left;
};

void pop3_dotstuff_init(struct pop3_dotstuff *d);
void pop3_dotstuff_init_top(struct pop3_dotstuff *d, uint32_t lines);
/* Appends the transformed bytes to out (at most 2 * len bytes). All or
 * nothing: returns 0, or -1 with out and d unchanged if out's maximum
 * would be exceeded. */
int pop3_dotstuff_feed(struct pop3_dotstuff *d, const uint8_t *p, size_t len, struct buf *out);
/* TOP has everything it wants: the caller may stop reading the message. */
static inline bool pop3_dotstuff_done(const struct pop3_dotstuff *d)
{
	return d->done;
}
/* Appends the final CRLF (when the message did not end in one) and
 * ".\r\n" (at most 5 bytes). Returns 0 or -1 as feed. */
int pop3_dotstuff_finish(struct pop3_dotstuff *d, struct buf *out);

#endif
