/* RPC framing: pure code, no syscalls, no allocation in the decoder.
 *
 * Wire format (all integers big-endian):
 *
 *   u32 length | u8 kind | u64 req_id | body
 *
 * `length` counts the bytes after the length field: 9 + body length. It is
 * checked against the receiver's maximum as soon as its 4 bytes are in, so a
 * peer cannot make us wait for (or buffer) a body we would refuse.
 *
 * Kind and method design. The kind byte says what a frame *is* in the call
 * protocol (request, response, error, cancel, session data), never which
 * message it carries. The method is named once, by the request, in a small
 * request header at the start of its body:
 *
 *   RPC_REQUEST body = u16 method | u32 deadline_ms | protobuf message
 *
 * Every other frame is paired with its request by req_id, and the caller,
 * which remembers the method of each id in flight, knows the reply type.
 * This keeps the kind space fixed at a handful of values (the decoder can
 * reject an unknown kind after 5 bytes), gives 65535 methods, and lets
 * framing code (relays, tracing, cancellation) work without knowing any
 * message type. `deadline_ms` is the caller's remaining budget in
 * milliseconds when it sent the request (relative, since hosts' clocks
 * differ; 0 = no deadline): the callee drops work whose deadline has passed.
 *
 * Kinds:
 *   RPC_REQUEST       request header + request message of `method`.
 *   RPC_RESPONSE      reply message of the request's method (may be empty).
 *   RPC_ERROR         mail.rpc.ErrorReply; the call is over. req_id 0 is a
 *                     connection-level error sent just before closing.
 *   RPC_CANCEL        empty body; the caller gave up on req_id. The callee
 *                     stops if it can and answers nothing further for it.
 *   RPC_SESSION_DATA  reserved (never sent): a handed-off session has a
 *                     connection of its own, whose first frame is the
 *                     OPEN_SESSION request and whose bytes after the
 *                     node's RESPONSE are the session's, unframed.
 *
 * Request ids are nonzero and chosen by the side sending the REQUEST, so
 * each side has its own id space: the REQUESTs and CANCELs a side sends
 * carry its own ids, the RESPONSEs and ERRORs it sends carry the peer's.
 * The decoder
 * rejects (FRAME_BAD) an unknown kind, req_id 0 on anything but RPC_ERROR, a
 * REQUEST shorter than its header and a CANCEL with a body. Unknown methods
 * are not a framing error: answer ERROR_UNKNOWN_METHOD and go on. */
#ifndef PROTO_FRAME_H
#define PROTO_FRAME_H

#include <protobuf-c/protobuf-c.h>

#include "common/base.h"

enum rpc_kind {
	RPC_REQUEST = 1,
	RPC_RESPONSE = 2,
	RPC_ERROR = 3,
	RPC_CANCEL = 4,
	RPC_SESSION_DATA = 5,
};
#define RPC_KIND_MAX RPC_SESSION_DATA

/* Method ids (u16 in the request header). Never renumber; see rpc.proto. */
enum rpc_method {
	RPC_METHOD_PING = 1,         /* Ping -> Pong */
	RPC_METHOD_DELIVER = 2,      /* DeliverRequest -> DeliverReply */
	RPC_METHOD_AUTH = 3,         /* AuthRequest -> AuthReply */
	RPC_METHOD_OPEN_SESSION = 4, /* OpenSession -> empty; then raw bytes */
	RPC_METHOD_REPLICATE = 5,    /* ReplicateBatch -> ReplicateAck */
	RPC_METHOD_USER_ADD = 6,     /* UserAddRequest -> UserInfo */
	RPC_METHOD_USER_GET = 7,     /* UserRequest -> UserInfo */
	RPC_METHOD_MAILBOX_LIST = 8, /* UserRequest -> MailboxList */
	RPC_METHOD_DOMAIN_ADD = 9,   /* DomainRequest -> DomainList */
	RPC_METHOD_DOMAIN_LIST = 10, /* DomainRequest -> DomainList */
	RPC_METHOD_ALIAS_SET = 11,   /* AliasRequest -> AliasRequest */
	RPC_METHOD_RESOLVE = 12,     /* UserRequest -> AliasRequest */
	RPC_METHOD_USER_UPDATE = 13, /* UserUpdateRequest -> UserInfo */
	RPC_METHOD_USER_DELETE = 14, /* UserRequest -> empty */
	RPC_METHOD_DOMAIN_DELETE = 15, /* DomainRequest -> DomainList */
	RPC_METHOD_ALIAS_DELETE = 16,  /* AliasRequest -> empty */
	RPC_METHOD_USER_LIST = 17,   /* UserListRequest -> UserList */
	RPC_METHOD_ALIAS_LIST = 18,  /* DomainRequest -> AliasList */
	RPC_METHOD_DKIM_SET = 19,    /* DkimKey -> DkimKey */
	RPC_METHOD_DKIM_GET = 20,    /* DkimRequest -> DkimKeys */
	RPC_METHOD_DKIM_DELETE = 21, /* DkimRequest -> empty */
};

/* Bytes of u32 length + u8 kind + u64 req_id. */
#define FRAME_HEADER_LEN 13u
/* Minimum value of the length field (kind + req_id). */
#define FRAME_MIN_LENGTH 9u
/* u16 method + u32 deadline_ms at the start of a REQUEST body. */
#define FRAME_REQUEST_HEADER_LEN 6u
/* A sensible max_frame for node<->proxy links: the largest accepted mail
 * plus headroom. Pre-auth or untrusted links should use far less. */
#define FRAME_MAX_DEFAULT (64u * 1024 * 1024)

struct frame {
	uint8_t kind;         /* enum rpc_kind */
	uint16_t method;      /* RPC_REQUEST only, else 0 */
	uint32_t deadline_ms; /* RPC_REQUEST only, else 0 */
	uint64_t req_id;
	/* The message (after the request header for RPC_REQUEST). Borrowed
	 * from the decoder input: valid until that memory changes. */
	struct view payload;
};

enum frame_result {
	FRAME_OK,   /* *out holds one complete frame of *consumed_r bytes */
	FRAME_MORE, /* no complete frame yet: call again with more bytes */
	FRAME_BAD,  /* protocol error: the connection must be closed */
};

/* Decode the frame at the start of p[0..len). Reads no byte at or beyond
 * p + len, and on FRAME_OK none beyond the frame itself. max_frame bounds
 * the length field (a frame occupies at most 4 + max_frame bytes); a length
 * above it or below FRAME_MIN_LENGTH is FRAME_BAD as soon as the 4 length
 * bytes are present, and a bad kind as soon as the 5th is. On FRAME_OK *out
 * is filled and *consumed_r is the frame's size; otherwise both are left
 * untouched. out and consumed_r may not be NULL. */
enum frame_result frame_decode(const uint8_t *p, size_t len, size_t max_frame,
			       struct frame *out, size_t *consumed_r);

/* Append one frame carrying msg (NULL: empty body) to out, packed in place
 * into out's reserved tail. kind must be RPC_RESPONSE or RPC_ERROR (RPC_REQUEST
 * has its own encoder). Returns 0, or -1 leaving out unchanged if kind or
 * req_id is invalid, the frame exceeds the 32-bit length, or out's max.
 * The peer's max_frame is not known here: callers keep messages under it
 * (a DeliverRequest's size is bounded by the configured message size). */
int frame_encode(struct buf *out, uint8_t kind, uint64_t req_id,
		 const ProtobufCMessage *msg);

/* Append an RPC_REQUEST frame for method with msg (NULL: empty body). Same
 * return contract as frame_encode. */
int frame_encode_request(struct buf *out, uint16_t method, uint64_t req_id,
			 uint32_t deadline_ms, const ProtobufCMessage *msg);

/* Append a frame whose body is payload as is: RPC_SESSION_DATA bytes, an
 * already packed RESPONSE/ERROR, or RPC_CANCEL (payload must be empty). Not
 * for RPC_REQUEST. Same return contract as frame_encode. */
int frame_encode_raw(struct buf *out, uint8_t kind, uint64_t req_id,
		     struct view payload);

/* Unpack payload as a message of desc with protobuf-c's default allocator.
 * Returns the message (free with frame_unpacked_free), or NULL if payload is
 * not exactly one canonical encoding of such a message: malformed or
 * truncated data, trailing bytes that are not a field, a field given twice,
 * an over-long varint, an explicitly encoded proto3 default, or a string
 * with an embedded NUL (which C code would silently truncate) are all
 * rejected; the test is that the message re-packs to exactly payload.len
 * bytes. Unknown fields (with fresh field numbers) are accepted and kept,
 * so peers one version ahead still interoperate. Allocation failure also
 * gives NULL: the size is the peer's, bounded by max_frame. */
ProtobufCMessage *frame_unpack(const ProtobufCMessageDescriptor *desc,
			       struct view payload);
/* Free a message from frame_unpack. NULL-safe; takes any generated type. */
void frame_unpacked_free(void *msg);

/* Request and reply descriptors of a method; NULL for an unknown method.
 * reply is NULL when the method's RESPONSE has an empty body. */
struct rpc_method_info {
	uint16_t method;
	const char *name;
	const ProtobufCMessageDescriptor *request;
	const ProtobufCMessageDescriptor *reply;
};
const struct rpc_method_info *rpc_method_get(uint16_t method);

/* Names for logs; never NULL ("?" for unknown values). */
const char *rpc_kind_str(uint8_t kind);
const char *rpc_method_str(uint16_t method);
const char *frame_result_str(enum frame_result r);

#endif
