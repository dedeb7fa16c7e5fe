/* Private to node/imap_*.c: the session state and the helpers the command
 * files share. */
#ifndef NODE_IMAP_INTERNAL_H
#define NODE_IMAP_INTERNAL_H

#include "common/base.h"
#include "common/loop.h"
#include "proto/imap_parse.h"
#include "storage/store.h"

struct node;
struct search_key;
struct imap_fetch;

enum imap_state {
	IMAP_STATE_NOT_AUTH,
	IMAP_STATE_AUTH,
	IMAP_STATE_SELECTED,
	IMAP_STATE_LOGOUT,
};
const char *imap_state_str(enum imap_state st);

/* Output of one worker step is bounded by this (plus one message's
 * non-literal data). */
#define IMAP_STEP_BYTES (256 * 1024)
/* Output a worker may produce at once (hard cap). */
#define IMAP_OUT_MAX (64u * 1024 * 1024)
/* IDLE looks at the store's change counter of the selected mailbox this
 * often (no I/O: an atomic load) and re-checks the mailbox only when it
 * moved, so changes reach an idling client within ~50 ms. */
#define IMAP_IDLE_POLL_MS 50

struct imap_session {
	struct conn *c; /* NULL once closed */
	struct node *node;
	struct loop *loop;
	struct imap_parser *parser;
	uint64_t id;
	enum imap_state state;
	unsigned errors;
	unsigned auth_failures;
	bool rev2;       /* ENABLE IMAP4rev2 */
	bool utf8;       /* ENABLE UTF8=ACCEPT or IMAP4rev2 */
	bool condstore;  /* a CONDSTORE enabling command was seen (RFC 7162) */
	bool qresync;    /* ENABLE QRESYNC: VANISHED replaces EXPUNGE */
	bool sasl_wait;  /* AUTHENTICATE PLAIN waiting for "+ " response */
	bool closed;     /* on_close ran; free when nothing is in flight */
	unsigned in_cb;  /* inside on_data / job_done */

	char *user; /* canonical, after login (exact size) */
	struct shard *sh;

	/* SELECTED */
	uint64_t sel_id;
	char *sel_name; /* exact size; NULL unless SELECTED */
	uint32_t sel_uidvalidity;
	/* Every change up to sel_modseq is reflected in the UID list and was
	 * reported, except the expunges held in pend. */
	uint64_t sel_modseq;
	uint64_t sync_seen; /* store_mailbox_changes() read before the last sync */
	uint64_t hms_sent;  /* the HIGHESTMODSEQ the client was last told */
	/* Expunged by others while sequence numbers could not change (FETCH,
	 * STORE, SEARCH...): still in uids, reported by a later command. By
	 * UID, with the modseq of each expunge. */
	struct imap_change *pend;
	size_t n_pend;
	bool sel_readonly;
	uint32_t *uids; /* sequence number = index + 1 */
	size_t n_uids;
	/* Between commands the list is kept as runs of consecutive UIDs
	 * (first, last pairs) when that is smaller: uids is then NULL and
	 * n_uids still the count. imap_uids_unpack() before use (worker or
	 * loop), imap_uids_pack() when the command is over. */
	uint32_t *uid_runs;
	size_t n_uid_runs;
	/* SEARCHRES: the saved result "$" as UIDs (ascending); reset by
	 * SELECT, EXAMINE, CLOSE and UNSELECT. */
	uint32_t *saved;
	size_t n_saved;

	/* the command in progress (views valid while paused) */
	const struct imap_command *cmd;
	char *tag;
	bool busy;
	bool in_flight; /* a step is queued or running on the pool */
	struct work work;
	void (*run)(struct imap_session *s);  /* worker thread */
	void (*done)(struct imap_session *s); /* loop thread, optional */
	struct buf out; /* written by run, sent by the loop */
	bool more;      /* run wants another step after a drain */
	bool fatal;     /* close after sending out */
	/* Untagged updates of the command (see imap_sync_selected). */
	bool pipelined;    /* more input followed the command */
	bool sync_expunge; /* others' expunges may be reported now */
	bool presync;      /* sync before the job runs (no sync of its own) */
	bool hms_tagged;   /* the tagged OK carries [HIGHESTMODSEQ] */
	bool hms_announce; /* first CONDSTORE enabling command: tell HIGHESTMODSEQ */
	char *after_sync;  /* reply of a loop-thread command, sent after a sync */

	/* login */
	char *auth_user; /* AUTH_USER_MAX bytes while a login runs */
	char *auth_pass;
	size_t auth_pass_len;
	struct shard *auth_sh;
	bool auth_ok;
	bool auth_broken; /* storage error during login */
	const char *auth_mech; /* static string */

	/* APPEND: one body writer per message literal of the command being
	 * read (several with MULTIAPPEND), filled by the parser's sink */
	struct body_writer **bws;
	unsigned bw_count;
	uint64_t bw_bytes; /* announced sizes, bounded by APPENDLIMIT */
	uint8_t bw_fail;   /* why the sink refused (imap_append.c) */

	/* IDLE: the selected mailbox's change counter is watched every
	 * IMAP_IDLE_POLL_MS */
	bool idling;
	struct timer idle_timer;

	struct search_key *search;
	struct imap_fetch *fetch;
};

#define AUTH_USER_MAX 256

/* A message's UID with a modseq: a change, or an expunge. */
struct imap_change {
	uint32_t uid;
	uint64_t modseq;
};

/* The selected mailbox's UID list: expanded for a command, packed while
 * the session waits. */
void imap_uids_unpack(struct imap_session *s);
void imap_uids_pack(struct imap_session *s);
/* Free both forms (unselect, session end). */
void imap_uids_clear(struct imap_session *s);

/* Post s->run to the pool (s->done afterwards on the loop): pauses input
 * until the job finishes. */
void imap_post(struct imap_session *s, void (*run)(struct imap_session *s),
	       void (*done)(struct imap_session *s));
/* Direct replies from the loop thread. */
void imap_reply(struct imap_session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* "tag BAD ..." and count the error. */
void imap_bad(struct imap_session *s, const char *text);

/* Output helpers (worker or loop). */
void imap_put_flags(struct buf *b, uint32_t flags, char *const *keywords);
void imap_put_quoted(struct buf *b, struct view v);
/* Mailbox name as astring (modified UTF-7 unless UTF-8 was enabled). */
void imap_put_mailbox(struct imap_session *s, struct buf *b, const char *name);
/* Sorted values as a sequence set "1:3,7". */
void imap_put_set(struct buf *b, const uint32_t *v, size_t n);
void imap_put_internaldate(struct buf *b, uint64_t ms);
/* Parse STORE/APPEND flags into bits and a NULL-terminated keyword list
 * (free with imap_keywords_free). 0 or -1 with a reason. */
int imap_parse_flags(const struct view *flags, size_t n, uint32_t *bits_r,
		     char ***keywords_r, const char **error_r);
void imap_keywords_free(char ***kw);
/* View to a NUL-terminated copy in dst (truncated to dst_len - 1). */
void imap_view_cstr(struct view v, char *dst, size_t dst_len);

/* Sequence set of the current command resolved against the selected
 * mailbox: ascending UIDs (malloc'ed) and, for sequence numbers, 0 or -1
 * (BAD: a number beyond EXISTS). */
int imap_resolve_set(struct imap_session *s, const struct imap_seqset *set, bool uid,
		     uint32_t **uids_r, size_t *n_r, const char **error_r);
/* Sequence number of uid (1-based), 0 if unknown. */
uint32_t imap_seq_of(const struct imap_session *s, uint32_t uid);
/* Remove UIDs (ascending) from the selected list, writing "* n EXPUNGE"
 * in descending order to b, or one "* VANISHED uids" once QRESYNC is on. */
void imap_apply_expunge(struct imap_session *s, const uint32_t *gone, size_t n, struct buf *b);
/* Worker: bring the selected mailbox up to date and write the untagged
 * updates for changes made by others to s->out: EXPUNGE (or VANISHED)
 * first, then EXISTS, then FETCH (UID, FLAGS, and MODSEQ under
 * CONDSTORE). Expunges are reported only when s->sync_expunge (the
 * command may renumber: RFC 9051 7.5.1, 5.5); otherwise they wait in
 * s->pend. Costs an atomic load when nothing changed. Once QRESYNC is on
 * and something was reported, an untagged OK [HIGHESTMODSEQ] follows
 * (unless the tagged OK carries it, s->hms_tagged). */
void imap_sync_selected(struct imap_session *s);
/* The same, skipping the flag changes this command reported itself
 * (own: by UID ascending). */
void imap_sync_own(struct imap_session *s, const struct imap_change *own, size_t n_own);
/* The HIGHESTMODSEQ the client may be told: below the first expunge still
 * held back. */
uint64_t imap_highestmodseq(const struct imap_session *s);
/* A CONDSTORE enabling command (RFC 7162 3.1), on the loop thread before
 * its job is posted: from now on FETCH responses carry MODSEQ, and the
 * first one in the selected state also reports HIGHESTMODSEQ. */
void imap_condstore_on(struct imap_session *s);
/* "* n FETCH (UID u FLAGS (...)[ MODSEQ (m)])" for a flag change. */
void imap_put_flag_fetch(struct imap_session *s, struct buf *b, uint32_t seq,
			 const struct msg_info *m);

/* Command handlers (loop thread); each either replies or posts a job. */
void imap_cmd_select(struct imap_session *s, bool readonly);
void imap_cmd_close(struct imap_session *s, bool expunge);
void imap_cmd_noop(struct imap_session *s);
void imap_cmd_expunge(struct imap_session *s);
void imap_cmd_store(struct imap_session *s);
void imap_cmd_copy(struct imap_session *s, bool move);
void imap_cmd_search(struct imap_session *s);
/* The store's search program for a parsed one (loop thread: resolves
 * sequence numbers against the selected mailbox); NULL with a reason for
 * BAD. */
struct search_key *imap_search_program(struct imap_session *s, const struct imap_search_key *k,
					const char **error_r);
/* SORT / UID SORT (with ESORT's RETURN) and THREAD / UID THREAD
 * (node/imap_sort.c). */
void imap_cmd_sort(struct imap_session *s);
void imap_cmd_thread(struct imap_session *s);
void imap_cmd_append(struct imap_session *s);
/* Drop the messages of an APPEND being read. */
void imap_append_reset(struct imap_session *s);
/* At a synchronizing literal of an APPEND: when the sink refused the
 * command already (too many messages or bytes), reply NO now, so the
 * client does not send the literal (the caller resets the parser). */
bool imap_append_refused(struct imap_session *s);
void imap_cmd_fetch(struct imap_session *s);
void imap_fetch_free(struct imap_fetch **f);
/* The literal sink for APPEND. */
extern const struct imap_literal_sink imap_append_sink_ops;

#endif
