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

#include <stdbool.h>
#include <stddef.h>

struct conn;

/* A listener_accept_cb: `node` is the struct node * of the loop the
 * listener runs on. Sets the handler and writes the greeting. */
void pop3_session_accept(struct conn *c, void *node);

struct shard;
/* A session handed over by the proxy (OPEN_SESSION) after it checked the
 * credentials: the maildrop of `user` (canonical, on shard sh) is locked
 * and read, and the first bytes written answer the client's PASS/AUTH
 * ("+OK maildrop has ..." or "-ERR [IN-USE] ..." and close). utf8: the
 * client sent UTF8 before logging in. `client` is for the log. */
void pop3_session_open(struct conn *c, void *node, const char *user, struct shard *sh,
		       bool utf8, const char *client);

/* sizeof(struct pop3_session): a connected session's fixed cost on top of
 * the connection (the snapshot comes on top after login). */
size_t pop3_session_struct_size(void);

#endif
