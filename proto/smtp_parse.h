/* SMTP server-side parser and reply helpers: pure code, no I/O.
 *
 * Grammar: RFC 5321 plus PIPELINING (RFC 2920), SIZE (RFC 1870), 8BITMIME
 * (RFC 6152), SMTPUTF8 (RFC 6531), CHUNKING/BINARYMIME (RFC 3030),
 * ENHANCEDSTATUSCODES (RFC 2034, RFC 3463), STARTTLS (RFC 3207), AUTH
 * (RFC 4954, SASL PLAIN RFC 4616 and LOGIN), DSN parameters (RFC 3461)
 * parsed and handed to the session.
 *
 * Command lines. smtp_parse_command() takes the bytes received so far:
 *
 *   SMTP_OK    one command in *out; *consumed_r bytes (through its LF) are
 *              used. Views in *out point into p and stay valid until the
 *              caller drops those bytes. An unknown verb is SMTP_OK with
 *              SMTP_CMD_UNKNOWN (the session answers 500 5.5.2).
 *   SMTP_MORE  no complete line yet; *consumed_r is 0.
 *   SMTP_BAD   the line was consumed and is refused: reply
 *              out->reply_code / out->enh / out->error (500, 501, 552,
 *              553 or 555) and go on with the next line. A line longer than
 *              its limit sets out->line_too_long (reply 500 5.5.2): when
 *              its LF is already in p it is consumed through it; otherwise
 *              everything received is consumed and out->line_open is set,
 *              and the caller drops input through the next LF with
 *              smtp_skip_line() before parsing again.
 *   SMTP_FATAL reply out->reply_code (421/554) and close: a BDAT command
 *              whose size cannot be read (its chunk can't be skipped, RFC
 *              3030 section 4.2), or an HTTP request line sent to SMTP.
 *
 * A line ends in CRLF; a bare LF is accepted and reported (out->bare_lf).
 * NUL, bare CR and other control characters except HTAB are refused (501).
 * The limit counts the line with its CRLF: lim->max_line (RFC 5321
 * 4.5.3.1.4: 512) or, for a line starting "AUTH ", lim->max_auth_line
 * (RFC 4954 section 4: 12288, room for an initial response).
 *
 * Verbs are case-insensitive. MAIL and RCPT accept spaces after the colon
 * ("MAIL FROM: <a@b>", as sent by some clients) and runs of spaces between
 * parameters; the path must be in angle brackets.
 *
 * Paths (RFC 5321 4.1.2): "<>" (MAIL only), "<local@domain>", source
 * routes "<@a,@b:local@domain>" (accepted, the route is dropped), quoted
 * local parts, address literals "[192.0.2.1]" / "[IPv6:...]" (and general
 * literals "[tag:text]"), "<postmaster>" without a domain for RCPT. Limits:
 * local part lim->max_local (64), domain lim->max_domain (255), the whole
 * path with its brackets lim->max_path (256). Non-ASCII (valid UTF-8 only)
 * is accepted in local parts and domains only when lim->smtputf8 is set and
 * - for MAIL - the command carries the SMTPUTF8 parameter. For RCPT the
 * parser cannot know the transaction: path.utf8 is set and the session
 * refuses it (553 5.6.7) unless the MAIL of the transaction had SMTPUTF8.
 *
 * Parameters: MAIL SIZE=n (overflow-checked, compared to lim->max_size:
 * 552 5.3.4), BODY=7BIT|8BITMIME|BINARYMIME, SMTPUTF8, RET=FULL|HDRS,
 * ENVID=xtext, AUTH=xtext|<>; RCPT NOTIFY=NEVER|SUCCESS,FAILURE,DELAY and
 * ORCPT=type;xtext. A duplicate or malformed parameter is 501 5.5.4; an
 * unknown one is 555 5.5.4 with its keyword in out->unknown_param. Whether
 * BODY=BINARYMIME etc. were advertised is the session's business. */
#ifndef PROTO_SMTP_PARSE_H
#define PROTO_SMTP_PARSE_H

#include "common/base.h"

/* RFC 5321 4.5.3.1: the minimums, which are also our defaults. */
#define SMTP_LINE_MAX 512
#define SMTP_AUTH_LINE_MAX 12288
#define SMTP_LOCAL_MAX 64
#define SMTP_DOMAIN_MAX 255
#define SMTP_PATH_MAX 256
/* Decoded SASL identities and passwords. */
#define SMTP_SASL_ID_MAX 255
#define SMTP_SASL_PASS_MAX 255
/* A reply line, CRLF included (RFC 5321 4.5.3.1.5). */
#define SMTP_REPLY_LINE_MAX 512

enum smtp_result {
	SMTP_OK,
	SMTP_MORE,
	SMTP_BAD,
	SMTP_FATAL,
};

/* Line limits below 512 are raised to 512 (RFC 5321 4.5.3.1.4). */
struct smtp_limits {
	size_t max_line;        /* command line with CRLF (>= 512) */
	size_t max_auth_line;   /* an AUTH line or SASL response (>= 12288) */
	size_t max_local;
	size_t max_domain;
	size_t max_path;
	uint64_t max_size;      /* message size limit (SIZE); 0 = none */
	bool smtputf8;          /* SMTPUTF8 advertised */
};

/* RFC minimums as above, max_size 50 MiB, SMTPUTF8 on. */
struct smtp_limits smtp_limits_default(void);

enum smtp_verb {
	SMTP_CMD_UNKNOWN = 0,
	SMTP_CMD_HELO,
	SMTP_CMD_EHLO,
	SMTP_CMD_MAIL,
	SMTP_CMD_RCPT,
	SMTP_CMD_DATA,
	SMTP_CMD_BDAT,
	SMTP_CMD_RSET,
	SMTP_CMD_NOOP,
	SMTP_CMD_QUIT,
	SMTP_CMD_VRFY,
	SMTP_CMD_EXPN,
	SMTP_CMD_HELP,
	SMTP_CMD_STARTTLS,
	SMTP_CMD_AUTH,
	SMTP_CMD_COUNT_
};
const char *smtp_verb_str(enum smtp_verb v);

/* Command table flags. */
/* Allowed before STARTTLS where TLS is required (RFC 3207 section 4:
 * others get 530 5.7.0). */
#define SMTP_F_PRE_TLS 0x1u
/* Allowed before AUTH on submission (RFC 4954 section 6 / RFC 6409). */
#define SMTP_F_PRE_AUTH 0x2u
/* Sync point: must be the last command of a pipelined group (RFC 2920
 * section 3.1: EHLO, DATA, VRFY, EXPN, TURN, QUIT, NOOP; RFC 3207 STARTTLS;
 * RFC 4954 AUTH; and HELO, after which nothing may be pipelined). BDAT is
 * not one (RFC 3030 section 4.2 lets BDAT chunks, LAST included, be
 * pipelined). The session refuses a command that arrived in the same read
 * after a sync point only where it matters (STARTTLS: drop the plaintext
 * and close; DATA/AUTH: the bytes are data, not commands). */
#define SMTP_F_SYNC 0x4u
/* Takes part in a mail transaction (refused before EHLO/HELO). */
#define SMTP_F_TXN 0x8u
unsigned smtp_verb_flags(enum smtp_verb v);

enum smtp_body {
	SMTP_BODY_NONE = 0, /* no BODY= parameter */
	SMTP_BODY_7BIT,
	SMTP_BODY_8BITMIME,
	SMTP_BODY_BINARYMIME,
};

enum smtp_ret {
	SMTP_RET_NONE = 0,
	SMTP_RET_FULL,
	SMTP_RET_HDRS,
};

#define SMTP_NOTIFY_NEVER 0x1u
#define SMTP_NOTIFY_SUCCESS 0x2u
#define SMTP_NOTIFY_FAILURE 0x4u
#define SMTP_NOTIFY_DELAY 0x8u

struct smtp_path {
	bool null;          /* "<>" */
	bool postmaster;    /* RCPT "<postmaster>" without domain */
	bool source_route;  /* "<@a,@b:...>": route seen and dropped */
	bool quoted;        /* quoted local part */
	bool addr_literal;  /* domain is "[...]" */
	bool utf8;          /* non-ASCII bytes in the mailbox */
	struct view mailbox; /* local@domain as sent (no brackets, no route) */
	struct view local;   /* as sent, quotes included */
	struct view domain;  /* as sent, brackets included; empty for null */
};

struct smtp_command {
	enum smtp_verb verb;
	unsigned flags;      /* smtp_verb_flags(verb) */
	struct view keyword; /* as sent */
	/* HELO/EHLO domain, VRFY/EXPN/HELP/NOOP argument (trailing spaces
	 * removed; may be empty for HELP/NOOP). */
	struct view arg;

	struct smtp_path path;          /* MAIL, RCPT */
	bool has_size;
	uint64_t size;                  /* MAIL SIZE= */
	enum smtp_body body;
	bool smtputf8;
	enum smtp_ret ret;
	struct view envid;              /* xtext as sent */
	bool has_auth_param;
	struct view auth_param;         /* MAIL AUTH=, "<>" kept */
	unsigned notify;                /* RCPT NOTIFY= bits */
	struct view orcpt;              /* RCPT ORCPT= as sent */

	uint64_t bdat_size;             /* BDAT */
	bool bdat_last;

	struct view auth_mech;          /* AUTH, upper case as sent */
	bool has_initial;
	struct view auth_initial;       /* base64 or "=" */

	struct view unknown_param;      /* BAD 555: the keyword */

	bool bare_lf;
	bool line_too_long;
	bool line_open;                 /* BAD: skip through the next LF */
	int reply_code;                 /* BAD/FATAL: suggested reply */
	const char *enh;                /* BAD/FATAL: enhanced code */
	const char *error;              /* BAD/FATAL: static reply text */
};

enum smtp_result smtp_parse_command(const uint8_t *p, size_t len,
				    const struct smtp_limits *lim,
				    struct smtp_command *out, size_t *consumed_r);

/* A SASL client response line (AUTH continuation) of at most
 * lim->max_auth_line bytes with its CRLF: same results and line_open rule
 * as smtp_parse_command, the line without CRLF in out->arg (verb
 * UNKNOWN). */
enum smtp_result smtp_parse_raw_line(const uint8_t *p, size_t len,
				     const struct smtp_limits *lim,
				     struct smtp_command *out, size_t *consumed_r);

/* Drop input of an over-long line: returns the bytes to consume and sets
 * *done_r when they include the terminating LF. */
size_t smtp_skip_line(const uint8_t *p, size_t len, bool *done_r);

/* ---- DATA ---------------------------------------------------------------- */

/* What to do with a bare LF or a bare CR (one no LF follows) in DATA.
 * Neither ever ends a line for dot handling or the end of the message. */
enum smtp_lf_policy {
	SMTP_LF_ACCEPT,    /* pass them through unchanged */
	SMTP_LF_NORMALIZE, /* turn each into CRLF */
	SMTP_LF_REJECT,    /* pass through, refuse the message after the end */
};

/* Unstuffs a DATA body fed in pieces split anywhere. The body ends only
 * at CRLF "." CRLF, where the first CRLF belongs to the message (the
 * CRLF of the DATA command line counts, so ".\r\n" first is an empty
 * message). A bare LF never starts a line: "\n.\n", "\n.\r\n" and
 * "\r\n.\n" do not end the message (SMTP smuggling), and a dot after a
 * bare LF is kept. A leading dot of any other line is removed.
 *
 * Output goes to out(ctx, bytes, len) in pieces, mostly pointing into the
 * input. Once the message is over max_size (0: no limit) too_big is set
 * and output stops; once out() returns -1 out_failed is set and output
 * stops. Either way parsing goes on to the end, so the session answers
 * (smtp_data_status) after the end without buffering. Bare LF, bare CR
 * (a CR not followed by LF) and NUL are counted; bare LF and bare CR are
 * handled by the policy. */
typedef int (*smtp_data_out_fn)(void *ctx, const uint8_t *p, size_t len);

struct smtp_data {
	uint8_t state;
	enum smtp_lf_policy lf_policy;
	bool done;
	bool too_big;
	bool out_failed;
	uint64_t max_size;
	uint64_t size;        /* bytes of the message after unstuffing */
	uint64_t bare_lf;
	uint64_t bare_cr;
	uint64_t nul;
};

void smtp_data_init(struct smtp_data *d, uint64_t max_size, enum smtp_lf_policy policy);
/* Returns 1 when the end was reached (*consumed_r counts through its LF;
 * the rest of the input is the next command) or 0 when all of the input was
 * consumed and more is needed. After 1, further calls consume nothing and
 * return 1. */
int smtp_data_feed(struct smtp_data *d, const uint8_t *in, size_t len,
		   size_t *consumed_r, smtp_data_out_fn out, void *ctx);
/* The reply after the end: 250 (accepted), 552 5.3.4 (too big), 550 5.6.0
 * (bare LF or CR under SMTP_LF_REJECT) or 451 4.3.0 (out() failed). */
int smtp_data_status(const struct smtp_data *d, const char **enh_r, const char **text_r);

/* ---- BDAT ---------------------------------------------------------------- */

/* Counts the bytes of BDAT chunks (no unstuffing) and the running message
 * size against max_size. */
struct smtp_bdat {
	uint64_t max_size;  /* 0: none */
	uint64_t total;     /* announced so far in this transaction (saturated) */
	uint64_t remaining; /* bytes of the current chunk still to come */
	bool last;          /* the current chunk is BDAT LAST */
	bool too_big;
};
void smtp_bdat_init(struct smtp_bdat *b, uint64_t max_size);
/* Start a chunk from a parsed BDAT command. Returns false when the message
 * is now over max_size (too_big set): the chunk must still be read and
 * dropped, then 552 5.3.4. */
bool smtp_bdat_begin(struct smtp_bdat *b, uint64_t size, bool last);
/* Of `avail` input bytes, how many belong to the current chunk; marks them
 * taken. */
size_t smtp_bdat_take(struct smtp_bdat *b, size_t avail);
static inline bool smtp_bdat_chunk_done(const struct smtp_bdat *b)
{
	return b->remaining == 0;
}

/* ---- AUTH ---------------------------------------------------------------- */

/* Strict base64 (RFC 4648 section 4: padding required, no whitespace, zero
 * pad bits), at most out_cap bytes. Returns 0, or -1 (out wiped). */
int smtp_base64_decode(struct view in, uint8_t *out, size_t out_cap, size_t *out_len_r);
/* Appends base64 of p to out. Returns 0 or -1 (out's maximum). */
int smtp_base64_encode(struct buf *out, const void *p, size_t len);

/* "*" from the client cancels the exchange (RFC 4954: 501 5.0.0). */
bool smtp_sasl_is_cancel(struct view line);

struct smtp_sasl_plain {
	struct view authzid; /* may be empty */
	struct view authcid;
	struct view passwd;
};
/* RFC 4616 response ([authzid] NUL authcid NUL passwd) from base64 into
 * out[out_cap]; the views point there and the caller wipes it. "=" (an
 * empty initial response) is refused here: the session sends "334 " and
 * waits. Returns 0, or -1 with a static reason (out wiped). */
int smtp_sasl_plain_decode(struct view b64, uint8_t *out, size_t out_cap,
			   struct smtp_sasl_plain *r, const char **error_r);
/* One LOGIN step (user name or password): base64 of 1..max bytes without
 * NUL. Returns 0, or -1 with a static reason (out wiped). */
int smtp_sasl_login_decode(struct view b64, uint8_t *out, size_t out_cap, size_t max,
			   struct view *r, const char **error_r);
/* Base64 prompts of the LOGIN mechanism ("Username:", "Password:"). */
#define SMTP_LOGIN_PROMPT_USER "VXNlcm5hbWU6"
#define SMTP_LOGIN_PROMPT_PASS "UGFzc3dvcmQ6"

/* ---- replies ------------------------------------------------------------- */

/* "code[ enh] text\r\n" appended to out; enh may be NULL (greeting, HELO
 * and EHLO replies carry none, RFC 2034 section 3). Control characters in
 * the text become '?', a line is cut to SMTP_REPLY_LINE_MAX. Returns 0 or
 * -1 (out's maximum). */
int smtp_reply(struct buf *out, int code, const char *enh, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Multi-line reply: every line "code-[enh ]text" and the last one
 * "code [enh ]text". */
struct smtp_multi {
	struct buf *out;
	int code;
	const char *enh;
	size_t start;       /* out->len at begin */
	size_t last_sep;    /* offset of the last line's '-' */
	bool any;
	bool failed;
};
void smtp_multi_begin(struct smtp_multi *m, struct buf *out, int code, const char *enh);
void smtp_multi_add(struct smtp_multi *m, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Returns 0, or -1 (out restored to its length at begin) if a line did not
 * fit out's maximum or no line was added. */
int smtp_multi_end(struct smtp_multi *m);

struct smtp_ehlo_caps {
	uint64_t size;        /* SIZE n; 0: "SIZE" alone */
	bool pipelining, eightbitmime, smtputf8, chunking, binarymime;
	bool enhancedstatuscodes, dsn;
	bool starttls;        /* offer STARTTLS (not yet in TLS) */
	const char *auth;     /* "PLAIN LOGIN", or NULL: no AUTH line */
};
/* "250-host greeting" and one line per capability. */
int smtp_ehlo_reply(struct buf *out, const char *host, const char *greeting,
		    const struct smtp_ehlo_caps *caps);

#endif
