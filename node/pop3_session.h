/* The POP3 server of the storage node (RFC 1939 with CAPA, RESP-CODES,
 * PIPELINING, UIDL, TOP, AUTH PLAIN, UTF8).
 *
 * One session per accepted connection: AUTHORIZATION (USER/PASS or
 * AUTH PLAIN, the password checked on the worker pool), then TRANSACTION
 * over a snapshot of INBOX taken at login (message numbers 1..n in UID
 * order; UIDL is "<uidvalidity>.<uid>"), then UPDATE on QUIT, the only
 * point where DELE takes effect (a dropped connection deletes nothing).
 *
 * A user has at most one POP3 session per process: a second login gets
 * "-ERR [IN-USE]" until the first ends. Commands run strictly in order;
 * while one waits on the worker pool or streams a message, input is
 * paused. Messages are streamed from storage in pieces, the next piece
 * read only once the output has drained below a low mark. Limits:
 * 255-octet command lines, a 10 minute idle timeout, 10 protocol errors
 * (or 3 failed logins) close the session. */
#ifndef NODE_POP3_SESSION_H
#define NODE_POP3_SESSION_H

#include <stddef.h>

struct conn;

/* A listener_accept_cb: `node` is the struct node * of the loop the
 * listener runs on. Sets the handler and writes the greeting. */
void pop3_session_accept(struct conn *c, void *node);

/* sizeof(struct pop3_session): a connected session's fixed cost on top of
 * the connection (the snapshot comes on top after login). */
size_t pop3_session_struct_size(void);

#endif
