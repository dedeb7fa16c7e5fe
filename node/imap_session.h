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
 * reported on NOOP and CHECK (EXPUNGE, EXISTS, FETCH FLAGS), and during IDLE
 * by polling the mailbox record every second.
 *
 * Not implemented in this version (answered BAD or NO [CANNOT]): STARTTLS
 * (the node is reached through the proxy), MULTIAPPEND, CONDSTORE /
 * QRESYNC, BINARY, SORT / THREAD, QUOTA, COMPRESS, SEARCHRES. */
#ifndef NODE_IMAP_SESSION_H
#define NODE_IMAP_SESSION_H

struct conn;

/* listener_accept_cb: `node` is the struct node * of the accepting loop.
 * Sets the handler and writes the greeting. */
void imap_session_accept(struct conn *c, void *node);

#endif
