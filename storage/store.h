/* The mailbox store: one RocksDB instance per shard.
 *
 * Blocking API: every call may touch the disk and must run on a worker
 * thread (loop_post_work), never on an event-loop thread. Calls on one
 * shard may come from many threads at once: writers are serialised per
 * shard for their read-modify-write step and share one WAL sync per group
 * (group commit); readers never wait for writers.
 *
 * Durability: a call that changes data returns 0 only after its batch is
 * in the WAL and synced. Every change is one atomic WriteBatch; readers
 * never see a half-applied change, and never see a change before it is
 * durable (RocksDB inserts into the memtable after the WAL write).
 *
 * Errors: -1 with a static or thread-local message in *error_r; the
 * enum storage_status in *status_r (where given) says which kind, so the
 * node can map it to the right protocol reply. */
#ifndef STORAGE_STORE_H
#define STORAGE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/base.h"

struct storage;
struct shard;

enum storage_status {
	ST_OK = 0,
	ST_NOT_FOUND,      /* user, mailbox or message does not exist */
	ST_EXISTS,         /* create of something that exists */
	ST_OVER_QUOTA,     /* the write would exceed the user's quota */
	ST_TOO_LARGE,      /* message over the size limit */
	ST_INVALID,        /* bad argument (name, range) */
	ST_MODIFIED,       /* UNCHANGEDSINCE failed for some messages */
	ST_IO,             /* storage failure: retry later */
	ST_DISABLED,       /* the user exists but is disabled: no delivery */
};
const char *storage_status_str(enum storage_status s);

struct storage_options {
	const char *dir;            /* DATA: shards live in DATA/shards/NNNN */
	size_t block_cache_bytes;   /* shared by all shards (default 256 MiB) */
	size_t write_buffer_bytes;  /* per shard memtable (default 8 MiB) */
	/* One memtable budget for all shards of the node: when set, each of
	 * expected_shards shards gets budget / (2 * expected_shards) (two
	 * memtables each, at least 1 MiB), so the total stays within it.
	 * (RocksDB's C API has no shared WriteBufferManager.) */
	size_t write_buffer_budget;
	unsigned expected_shards;
	size_t blob_min_bytes;      /* values this large go to blob files (4 KiB) */
	size_t body_chunk_bytes;    /* bodies are stored in chunks this big (256 KiB) */
	uint64_t max_message_bytes; /* default 64 MiB */
	bool no_sync;               /* benchmarks only: do not fsync the WAL */
};

/* ---- shards ------------------------------------------------------------ */

struct storage *storage_open(const struct storage_options *opts, const char **error_r);
void storage_close(struct storage **st);

/* Open (creating when asked) shard `id`; the same id twice returns the same
 * handle. Shards stay open until storage_shard_close or storage_close. */
struct shard *storage_shard_open(struct storage *st, uint32_t id, bool create,
				 const char **error_r);
struct shard *storage_shard_get(struct storage *st, uint32_t id); /* NULL if not open */
void storage_shard_close(struct storage *st, uint32_t id);
/* Close and delete a shard's directory. */
int storage_shard_drop(struct storage *st, uint32_t id, const char **error_r);
uint32_t shard_id(const struct shard *sh);
const char *shard_dir(const struct shard *sh);

/* ---- replication hooks ---------------------------------------------------- */

uint64_t shard_latest_seq(struct shard *sh);
/* Calls fn for every write batch with sequence > after_seq, in order, with
 * the batch's first sequence number and its serialized bytes (the RocksDB
 * WriteBatch representation). Stops early when fn returns non-zero.
 * Returns 0, or -1 if the WAL no longer reaches back that far (the replica
 * then needs a checkpoint). */
int shard_updates_since(struct shard *sh, uint64_t after_seq,
			int (*fn)(void *arg, uint64_t seq, struct view batch), void *arg,
			const char **error_r);
/* Apply a batch shipped from the primary (replica side), durably. seq is
 * the batch's first sequence number (from shard_updates_since). A batch
 * the replica already has is skipped (returns 0); one that does not follow
 * the replica's latest sequence is refused (-1): the replica needs the
 * missing batches or a checkpoint. */
int shard_apply_batch(struct shard *sh, uint64_t seq, struct view batch, const char **error_r);
/* A consistent checkpoint of the shard into dir (must not exist). */
int shard_checkpoint(struct shard *sh, const char *dir, const char **error_r);
/* Calls fn for every key/value of the shard, in key order (for
 * comparisons and tests). */
int shard_scan_all(struct shard *sh, int (*fn)(void *arg, struct view k, struct view v),
		   void *arg, const char **error_r);

/* ---- raw key/value access (for modules with their own records, e.g. the
 * directory; not for mailbox data) ---------------------------------------- */

struct kv_op {
	struct view key;
	struct view value; /* ignored for deletes */
	bool del;
};
/* Committed value of key: 1 found (out filled), 0 absent, -1 error. */
int shard_kv_get(struct shard *sh, struct view key, struct buf *out, const char **error_r);
/* Apply the operations as one atomic, durable batch (group commit). */
int shard_kv_write(struct shard *sh, const struct kv_op *ops, size_t n, const char **error_r);
/* Every key starting with prefix, in order; fn returning non-zero stops. */
int shard_kv_scan(struct shard *sh, struct view prefix,
		  int (*fn)(void *arg, struct view k, struct view v), void *arg,
		  const char **error_r);

/* ---- users ------------------------------------------------------------- */

#define MAILBOX_NAME_MAX 512
#define KEYWORD_MAX 64

struct user_info {
	char address[256];   /* canonical */
	char pwhash[160];    /* PHC string, "" = no password login */
	uint64_t quota_bytes;  /* 0 = unlimited */
	uint64_t used_bytes;
	uint64_t used_messages;
	bool enabled;
	uint64_t created_ms;
};

/* Creates the user with INBOX and the special-use mailboxes Sent, Drafts,
 * Trash, Junk and Archive (all subscribed). ST_EXISTS if present. */
int store_user_create(struct shard *sh, const char *address, const char *pwhash,
		      uint64_t quota_bytes, enum storage_status *status_r, const char **error_r);
int store_user_get(struct shard *sh, const char *address, struct user_info *out,
		   enum storage_status *status_r, const char **error_r);
/* Change password hash, quota or enabled flag (NULL / UINT64_MAX / -1 =
 * leave as is). */
int store_user_update(struct shard *sh, const char *address, const char *pwhash,
		      uint64_t quota_bytes, int enabled, enum storage_status *status_r,
		      const char **error_r);
/* Users of the shard in address order, starting after `after` ("" from
 * the first), only those of `domain` when it is not NULL or "": at most
 * max into *out (malloc'ed; pwhash wiped), *more_r when more follow. */
int store_user_list(struct shard *sh, const char *after, const char *domain, size_t max,
		    struct user_info **out, size_t *n_r, bool *more_r, const char **error_r);
/* Deletes the user, every mailbox and message, and releases bodies. */
int store_user_delete(struct shard *sh, const char *address, enum storage_status *status_r,
		      const char **error_r);

/* ---- mailboxes ---------------------------------------------------------- */

enum special_use {
	SPECIAL_NONE = 0,
	SPECIAL_SENT = 1 << 0,
	SPECIAL_DRAFTS = 1 << 1,
	SPECIAL_TRASH = 1 << 2,
	SPECIAL_JUNK = 1 << 3,
	SPECIAL_ARCHIVE = 1 << 4,
	SPECIAL_ALL = 1 << 5,
	SPECIAL_FLAGGED = 1 << 6,
};

struct mailbox_info {
	uint64_t id;               /* unique in the shard, never reused */
	char name[MAILBOX_NAME_MAX]; /* "INBOX", "Archive/2024" ('/' delimiter) */
	uint32_t uidvalidity;
	uint32_t uidnext;
	uint64_t highestmodseq;
	uint32_t messages;
	uint32_t unseen;
	uint32_t recent;           /* always 0: \Recent is gone in IMAP4rev2 */
	uint64_t size;             /* sum of message sizes */
	uint32_t special_use;      /* enum special_use bits */
	bool subscribed;
};

int store_mailbox_create(struct shard *sh, const char *user, const char *name,
			 uint32_t special_use, struct mailbox_info *out,
			 enum storage_status *status_r, const char **error_r);
/* Name lookup; INBOX is case-insensitive. */
int store_mailbox_get(struct shard *sh, const char *user, const char *name,
		      struct mailbox_info *out, enum storage_status *status_r,
		      const char **error_r);
int store_mailbox_get_by_id(struct shard *sh, uint64_t id, struct mailbox_info *out,
			    enum storage_status *status_r, const char **error_r);
/* All mailboxes of the user, in name order. *out is malloc'ed. */
int store_mailbox_list(struct shard *sh, const char *user, struct mailbox_info **out,
		       size_t *n_r, const char **error_r);
/* Renames the mailbox and its children ("a" -> "b" moves "a/x" to "b/x").
 * Renaming INBOX moves its messages to the new mailbox and leaves INBOX
 * empty (RFC 9051 6.3.6). */
int store_mailbox_rename(struct shard *sh, const char *user, const char *from,
			 const char *to, enum storage_status *status_r, const char **error_r);
/* Deletes the mailbox and its messages (not its children). INBOX cannot be
 * deleted (ST_INVALID). */
int store_mailbox_delete(struct shard *sh, const char *user, const char *name,
			 enum storage_status *status_r, const char **error_r);
int store_mailbox_subscribe(struct shard *sh, const char *user, const char *name, bool on,
			    enum storage_status *status_r, const char **error_r);

/* ---- messages ----------------------------------------------------------- */

/* System flags (bits) as stored. \Recent does not exist in IMAP4rev2. */
enum msg_flag {
	FLAG_SEEN = 1 << 0,
	FLAG_ANSWERED = 1 << 1,
	FLAG_FLAGGED = 1 << 2,
	FLAG_DELETED = 1 << 3,
	FLAG_DRAFT = 1 << 4,
};

struct msg_info {
	uint32_t uid;
	uint64_t modseq;
	uint32_t flags;            /* enum msg_flag bits */
	char **keywords;           /* NULL-terminated, owned (msg_info_cleanup) */
	uint64_t internal_date_ms; /* realtime, ms */
	uint64_t save_date_ms;
	uint64_t size;
	uint8_t body_hash[32];
};
void msg_info_cleanup(struct msg_info *m);

/* One delivery target: a mailbox of a user on this shard. */
struct deliver_target {
	const char *user;
	uint64_t mailbox_id;       /* 0 = the user's INBOX */
	uint32_t flags;            /* initial flags (APPEND), 0 for delivery */
	const char *const *keywords; /* NULL-terminated or NULL */
	/* results */
	uint64_t mailbox_id_r;         /* the mailbox stored into */
	uint32_t uid_r;
	uint32_t uidvalidity_r;
	enum storage_status status_r; /* per target: OK, OVER_QUOTA, NOT_FOUND */
};

/* A message body under construction: bytes are added in pieces (so a
 * 100 MB message never needs 100 MB of contiguous memory) and the MIME
 * structure is recorded as they pass. */
struct body_writer;
struct body_writer *body_writer_new(struct shard *sh);
int body_writer_add(struct body_writer *bw, const void *p, size_t len);
uint64_t body_writer_size(const struct body_writer *bw);
void body_writer_free(struct body_writer **bw);

/* Store the body once and add it to every target in one atomic batch.
 * Targets over quota or missing get their own status and are skipped; the
 * call fails (ST_TOO_LARGE) only when the message is over the size limit.
 * Returns 0 when the batch (for the targets that succeeded) is durable. */
int store_deliver(struct shard *sh, struct body_writer *bw, uint64_t internal_date_ms,
		  struct deliver_target *targets, size_t n_targets,
		  enum storage_status *status_r, const char **error_r);

/* store_deliver made idempotent by a caller-chosen delivery id (1 to
 * DELIVERY_ID_MAX bytes, unique per message and shard): the first call
 * stores, and records each target's result in the same batch; a later
 * call with the same id stores nothing and returns the recorded results
 * (*duplicate_r true). A retry after a timeout or a failover therefore
 * never delivers twice. The same id with a different number of targets is
 * ST_INVALID. Records are kept until store_deliveries_prune. */
#define DELIVERY_ID_MAX 64
int store_deliver_once(struct shard *sh, struct body_writer *bw, uint64_t internal_date_ms,
		       struct view delivery_id, struct deliver_target *targets, size_t n_targets,
		       bool *duplicate_r, enum storage_status *status_r, const char **error_r);
/* Delete delivery records written before `before_ms` (wall clock). Returns
 * the number deleted, or -1. Blocking: worker threads only. */
long store_deliveries_prune(struct shard *sh, uint64_t before_ms, const char **error_r);

/* APPEND (and MULTIAPPEND) into one mailbox of user: every message is
 * stored in one atomic batch, or none is. Fails with ST_TOO_LARGE (a
 * message over the size limit), ST_OVER_QUOTA (all of them together do not
 * fit), ST_NOT_FOUND (user or mailbox gone), ST_DISABLED (user disabled),
 * ST_INVALID (UIDs exhausted).
 * The writers are used up (free them afterwards); uid_r of each message
 * and *uidvalidity_r are set on success, UIDs ascending in message order. */
struct append_msg {
	struct body_writer *bw;
	uint64_t internal_date_ms;   /* 0 = now */
	uint32_t flags;
	const char *const *keywords; /* NULL-terminated or NULL */
	uint32_t uid_r;
};
int store_append(struct shard *sh, const char *user, uint64_t mailbox_id,
		 struct append_msg *msgs, size_t n, uint32_t *uidvalidity_r,
		 enum storage_status *status_r, const char **error_r);

/* Messages of a mailbox with first_uid <= uid <= last_uid in UID order;
 * *out malloc'ed, free each with msg_info_cleanup and then the array. */
int store_fetch_range(struct shard *sh, uint64_t mailbox_id, uint32_t first_uid,
		      uint32_t last_uid, struct msg_info **out, size_t *n_r,
		      const char **error_r);
/* Messages flagged \Deleted in the mailbox, and their total size (STATUS
 * DELETED and DELETED-STORAGE); reads every message record's head. */
int store_mailbox_deleted(struct shard *sh, uint64_t mailbox_id, uint32_t *count_r,
			  uint64_t *bytes_r, const char **error_r);
/* All UIDs of the mailbox in order (for sequence-number mapping). */
int store_uids(struct shard *sh, uint64_t mailbox_id, uint32_t **uids_r, size_t *n_r,
	       const char **error_r);

/* Read the body: calls fn with consecutive pieces of [offset, offset+len)
 * (len UINT64_MAX = to the end), reading only the chunks that overlap it.
 * fn returning non-zero stops the read early; the call then returns 0. */
int store_body_read(struct shard *sh, const uint8_t hash[32], uint64_t offset, uint64_t len,
		    int (*fn)(void *arg, const uint8_t *p, size_t n), void *arg,
		    const char **error_r);
/* The MIME description recorded at delivery (storage/mime.h), malloc'ed. */
int store_body_mime(struct shard *sh, const uint8_t hash[32], struct buf *out,
		    const char **error_r);

enum store_flags_mode { FLAGS_SET, FLAGS_ADD, FLAGS_REMOVE };

/* STORE: change flags of the given UIDs. With unchangedsince != 0, messages
 * whose modseq is higher are left alone and listed in *failed_r (malloc'ed;
 * status ST_MODIFIED). Each changed message gets a new modseq. *changed_r
 * (malloc'ed) receives the new state of every changed message. */
int store_flags(struct shard *sh, uint64_t mailbox_id, const uint32_t *uids, size_t n_uids,
		enum store_flags_mode mode, uint32_t flags, const char *const *keywords,
		uint64_t unchangedsince, struct msg_info **changed_r, size_t *n_changed_r,
		uint32_t **failed_r, size_t *n_failed_r, enum storage_status *status_r,
		const char **error_r);

/* EXPUNGE the given UIDs (only those with \Deleted when only_deleted).
 * *expunged_r gets the UIDs removed (malloc'ed). */
int store_expunge(struct shard *sh, uint64_t mailbox_id, const uint32_t *uids, size_t n_uids,
		  bool only_deleted, uint32_t **expunged_r, size_t *n_r,
		  enum storage_status *status_r, const char **error_r);

/* COPY (move=false) or MOVE UIDs to another mailbox of the same user.
 * *src_uids_r and *dst_uids_r get the pairs for COPYUID (malloc'ed). */
int store_copy(struct shard *sh, uint64_t from_mailbox, uint64_t to_mailbox,
	       const uint32_t *uids, size_t n_uids, bool move, uint32_t **src_uids_r,
	       uint32_t **dst_uids_r, size_t *n_r, uint32_t *dst_uidvalidity_r,
	       enum storage_status *status_r, const char **error_r);

/* CONDSTORE/QRESYNC: messages changed and UIDs expunged after modseq. */
int store_changes_since(struct shard *sh, uint64_t mailbox_id, uint64_t modseq,
			struct msg_info **changed_r, size_t *n_changed_r,
			uint32_t **vanished_r, size_t *n_vanished_r, const char **error_r);

/* One consistent view of a mailbox for an IMAP session, read from a single
 * snapshot: the mailbox record; with want_uids every UID (ascending); the
 * messages whose modseq is above `since` (UID order, the new ones
 * included); and the expunges logged above `since` (by UID, with the
 * modseq each got). Nothing is scanned for the last two when `since` is
 * not below the mailbox's HIGHESTMODSEQ. Free with store_view_cleanup. */
struct store_expunged {
	uint32_t uid;
	uint64_t modseq;
};
struct store_view {
	struct mailbox_info mi;
	uint32_t *uids;
	size_t n_uids;
	struct msg_info *changed;
	size_t n_changed;
	struct store_expunged *vanished;
	size_t n_vanished;
};
int store_mailbox_view(struct shard *sh, uint64_t mailbox_id, uint64_t since, bool want_uids,
		       struct store_view *out, enum storage_status *status_r, const char **error_r);
void store_view_cleanup(struct store_view *v);

/* ---- change notification ------------------------------------------------- */

/* A process-wide counter per mailbox, bumped after every durable change of
 * the mailbox made through this process (delivery, APPEND, flags,
 * expunge, copy/move, rename, delete). Lock-free to read from any thread:
 * IDLE polls it cheaply instead of reading the store. Mailboxes whose
 * (shard, id) hash alike share a counter, so a change may be reported for
 * a mailbox that did not change (a spurious re-check), never missed. */
uint64_t store_mailbox_changes(const struct shard *sh, uint64_t mailbox_id);

/* ---- consistency ---------------------------------------------------------- */

/* Recount every counter (mailbox counts, unseen, sizes, user usage, body
 * reference counts) from the records and compare with what is stored.
 * Returns the number of mismatches (0 = consistent), printing each to
 * `report` when non-NULL; -1 on error. Used by tests and `mailctl fsck`. */
long store_verify(struct shard *sh, void (*report)(void *arg, const char *line), void *arg,
		  const char **error_r);

#endif
