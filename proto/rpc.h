/* RPC endpoints on the event loop: a server that dispatches requests to
 * method handlers, and a client with many calls in flight per connection,
 * a deadline on every call, reconnect with backoff, and optional (mutual)
 * TLS. Framing is proto/frame.h; messages are proto/rpc.proto. */
#ifndef PROTO_RPC_H
#define PROTO_RPC_H

#include <protobuf-c/protobuf-c.h>

#include "common/loop.h"
#include "proto/frame.h"
#include "proto/rpc.pb-c.h"

struct tls_server;
struct tls_client;

/* Status of a finished client call. */
enum rpc_status {
	RPC_OK = 0,          /* reply is the method's reply message (or NULL) */
	RPC_REMOTE_ERROR,    /* err holds the callee's ErrorReply */
	RPC_TIMEOUT,         /* deadline passed */
	RPC_UNAVAILABLE,     /* not connected / connection lost */
	RPC_BAD_REPLY,       /* reply did not decode */
	RPC_CANCELLED,       /* client freed with the call pending */
};
const char *rpc_status_str(enum rpc_status s);

/* ---- server ---------------------------------------------------------- */

struct rpc_call;
/* A handler gets the decoded request (borrowed until the call completes)
 * and must finish the call exactly once, now or later, with
 * rpc_call_reply() or rpc_call_error(). */
typedef void (*rpc_handler_fn)(struct rpc_call *call, const ProtobufCMessage *req,
			       void *arg);

struct rpc_method_handler {
	uint16_t method;
	rpc_handler_fn fn;
};

struct rpc_server_config {
	const char *addr;
	struct tls_server *tls;   /* NULL: plaintext; else TLS (mutual if the
				   * tls_server was made with a client CA) */
	size_t max_frame;         /* default FRAME_MAX_DEFAULT */
	uint32_t idle_ms;         /* idle connection timeout (default 600 s) */
	const struct rpc_method_handler *handlers;
	size_t n_handlers;
	void *arg;                /* passed to every handler */
	/* Optional: session handoff. An OPEN_SESSION request that is the
	 * first frame of a connection is checked by session_check (on the
	 * loop, must not block): nonzero is an ErrorCode, sent with *msg_r,
	 * and the connection closes. On 0 the server answers the empty
	 * RESPONSE, forgets the connection and session_start takes it over
	 * (sets its handler and limits); bytes after the frame go to the new
	 * handler. `req` is borrowed for the duration of each call. */
	uint32_t (*session_check)(const Mail__Rpc__OpenSession *req, void *arg,
				  const char **msg_r);
	void (*session_start)(struct conn *c, const Mail__Rpc__OpenSession *req, void *arg);
};

struct rpc_server;
struct rpc_server *rpc_server_new(struct loop *l, const struct rpc_server_config *cfg,
				  const char **error_r);
uint16_t rpc_server_port(const struct rpc_server *s);
void rpc_server_free(struct rpc_server **s);

/* Reply (msg may be NULL for an empty reply) / fail the call; frees it.
 * Safe after the connection went away (the reply is then dropped). */
void rpc_call_reply(struct rpc_call *call, const ProtobufCMessage *msg);
void rpc_call_error(struct rpc_call *call, uint32_t code, const char *message);
/* Milliseconds left before the caller's deadline (UINT32_MAX: none). */
uint32_t rpc_call_remaining_ms(const struct rpc_call *call);
uint64_t rpc_call_conn_id(const struct rpc_call *call);
bool rpc_call_cancelled(const struct rpc_call *call);

/* ---- client ---------------------------------------------------------- */

typedef void (*rpc_reply_fn)(void *arg, enum rpc_status status,
			     const ProtobufCMessage *reply, const Mail__Rpc__ErrorReply *err);

struct rpc_client_config {
	const char *addr;         /* host:port */
	struct tls_client *tls;   /* NULL: plaintext */
	const char *tls_name;     /* SNI / verified name */
	size_t max_frame;
	uint32_t connect_timeout_ms; /* default 3 s */
	/* Requests encoded but not yet handed to the socket are bounded by
	 * this many bytes (default 2 x max_frame); a call beyond it fails at
	 * once with RPC_UNAVAILABLE. Writes stop while the connection's output
	 * is above 1 MiB and resume as it drains, so a burst of large calls
	 * never overflows the connection. */
	size_t max_queued;
	/* Keep the connection through the loop's drain (SIGTERM) until the
	 * client is freed: for callers whose sessions finish their work while
	 * draining (the proxy). Default: close it once no call is in flight. */
	bool keep_on_drain;
};

struct rpc_client;
struct rpc_client *rpc_client_new(struct loop *l, const struct rpc_client_config *cfg,
				  const char **error_r);
/* Start a call; `done` runs exactly once, never before this returns.
 * deadline_ms 0 means the default (10 s). Returns the request id. */
uint64_t rpc_client_call(struct rpc_client *c, uint16_t method, const ProtobufCMessage *req,
			 uint32_t deadline_ms, rpc_reply_fn done, void *arg);
bool rpc_client_connected(const struct rpc_client *c);
size_t rpc_client_inflight(const struct rpc_client *c);
/* Pending calls finish with RPC_CANCELLED. NULL-safe, clears *c. */
void rpc_client_free(struct rpc_client **c);

#endif
