/* IMAP4rev2 server session on the storage node (RFC 9051).
 *
 * One session per accepted connection: the greeting, then commands parsed by
 * proto/imap_parse and executed against the local shard of the logged-in
 * user. Every storage call (login check, mailbox and message operations)
 * runs on the worker pool; while it does, the connection is paused, so
 * commands are answered strictly in order even when pipelined.
 *
 * FETCH output is produced in steps of bounded size: a large literal is
 * written a piece at a time and the next piece is read once the previous
 * one has been sent (on_drain), so a 50 MB message never sits whole in the
 * output buffer.
 *
 * Changes made by other sessions or deliveries to the selected mailbox are
 * reported before the tagged reply of every command in the selected state
 * (EXISTS, FETCH with the new flags, EXPUNGE or VANISHED), and during IDLE
 * within ~50 ms (the store's per-mailbox change counter is polled, an
 * atomic load). Each session keeps the HIGHESTMODSEQ its view reflects and
 * catches up from one store snapshot (store_mailbox_view), so sessions
 * never disagree on UIDs, flags or MODSEQs. Expunges by others are held
 * back while a command uses sequence numbers (FETCH, STORE, SEARCH, COPY,
 * MOVE without UID) or further commands are already waiting, as RFC 9051
 * 7.5.1 and 5.5 require; NOOP, CHECK, EXPUNGE, IDLE and UID commands
 * report them.
 *
 * Extensions beyond IMAP4rev2: CONDSTORE and QRESYNC (RFC 7162: MODSEQ,
 * CHANGEDSINCE, UNCHANGEDSINCE with [MODIFIED], SEARCH MODSEQ, STATUS
 * HIGHESTMODSEQ, SELECT (QRESYNC ...) with VANISHED (EARLIER), VANISHED
 * replacing EXPUNGE), SEARCHRES (RFC 5182), BINARY (RFC 3516; FETCH
 * BINARY[], BINARY.PEEK[], BINARY.SIZE[] decoded from base64 and
 * quoted-printable while streaming, APPEND literal8), SAVEDATE (RFC 8514),
 * LIST-EXTENDED (RFC 5258: SUBSCRIBED, REMOTE, RECURSIVEMATCH with
 * CHILDINFO, SPECIAL-USE selection; SUBSCRIBED, CHILDREN, SPECIAL-USE
 * return options; several patterns), LIST-STATUS (RFC 5819), SPECIAL-USE
 * and CREATE-SPECIAL-USE (RFC 6154; \All and \Flagged cannot be created:
 * [USEATTR]), STATUS=SIZE (RFC 8438) and STATUS DELETED, DELETED-STORAGE,
 * APPENDLIMIT, MULTIAPPEND (RFC 3502: every message of one APPEND is
 * stored in one atomic batch or none is; a zero-length literal cancels),
 * APPENDLIMIT (RFC 7889: storage.max_message; a larger synchronizing
 * literal is refused with [TOOBIG] before the client sends it), QUOTA
 * (RFC 9208: one quota root "" per user with the STORAGE resource in KiB;
 * SETQUOTA is refused, `mailctl user quota` sets it; [OVERQUOTA] on
 * APPEND and COPY), plus the ones in IMAP_CAPS.
 *
 * Subscriptions belong to existing mailboxes (the store keeps them in the
 * mailbox record), so a subscribed name never lacks its mailbox:
 * \NonExistent appears only for levels of hierarchy that RECURSIVEMATCH
 * lists for their subscribed descendants.
 *
 * Not implemented in this version (answered BAD or NO [CANNOT]): STARTTLS
 * (the node is reached through the proxy), OBJECTID (STATUS MAILBOXID is
 * BAD). */
#ifndef NODE_IMAP_SESSION_H
#define NODE_IMAP_SESSION_H

#include <stdbool.h>

struct conn;

/* listener_accept_cb: `node` is the struct node * of the accepting loop.
 * Sets the handler and writes the greeting. */
void imap_session_accept(struct conn *c, void *node);

struct shard;
/* A session handed over by the proxy (OPEN_SESSION): already
 * authenticated as `user` (canonical) of shard sh. The first bytes written
 * answer the client's login command `tag` with the node's capabilities
 * (or a PREAUTH greeting when tag is empty). `client` is the client's
 * address, for the log. */
void imap_session_open(struct conn *c, void *node, const char *user, struct shard *sh,
		       const char *tag, const char *client);
/* A valid IMAP tag (what the proxy may pass as imap_tag), 1..64 chars. */
bool imap_tag_valid(const char *tag);

#endif
