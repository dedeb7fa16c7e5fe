#include "proto/frame.h"

#include <stdlib.h>

#include "proto/rpc.pb-c.h"

static uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static uint64_t get_be64(const uint8_t *p)
{
	return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

static uint16_t get_be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static void put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
	put_be32(p, (uint32_t)(v >> 32));
	put_be32(p + 4, (uint32_t)v);
}

enum frame_result frame_decode(const uint8_t *p, size_t len, size_t max_frame,
			       struct frame *out, size_t *consumed_r)
{
	/* Each check runs as soon as the bytes it needs are present, so a bad
	 * header is refused before the peer can make us wait for a body. */
	if (len < 4)
		return FRAME_MORE;
	uint32_t length = get_be32(p);
	if (length < FRAME_MIN_LENGTH || length > max_frame)
		return FRAME_BAD;

	if (len < 5)
		return FRAME_MORE;
	uint8_t kind = p[4];
	if (kind < RPC_REQUEST || kind > RPC_KIND_MAX)
		return FRAME_BAD;
	if (kind == RPC_REQUEST &&
	    length < FRAME_MIN_LENGTH + FRAME_REQUEST_HEADER_LEN)
		return FRAME_BAD;
	if (kind == RPC_CANCEL && length != FRAME_MIN_LENGTH)
		return FRAME_BAD;

	if (len < FRAME_HEADER_LEN)
		return FRAME_MORE;
	uint64_t req_id = get_be64(p + 5);
	if (req_id == 0 && kind != RPC_ERROR)
		return FRAME_BAD;

	/* len >= 13 here; compare without forming 4 + length (no overflow
	 * where size_t is 32 bits). */
	if (len - 4 < length)
		return FRAME_MORE;

	const uint8_t *body = p + FRAME_HEADER_LEN;
	size_t body_len = length - FRAME_MIN_LENGTH;
	out->kind = kind;
	out->req_id = req_id;
	out->method = 0;
	out->deadline_ms = 0;
	if (kind == RPC_REQUEST) {
		out->method = get_be16(body);
		out->deadline_ms = get_be32(body + 2);
		body += FRAME_REQUEST_HEADER_LEN;
		body_len -= FRAME_REQUEST_HEADER_LEN;
	}
	out->payload = view_make(body, body_len);
	*consumed_r = 4 + (size_t)length;
	return FRAME_OK;
}

/* Reserve a whole frame with extra_len header bytes and body_len bytes of
 * message, write the fixed header, and return where the request header (or
 * the body) goes; NULL if it cannot be represented or out is full. Nothing
 * is committed. */
static uint8_t *frame_begin(struct buf *out, uint8_t kind, uint64_t req_id,
			    size_t extra_len, size_t body_len)
{
	if (body_len > UINT32_MAX - FRAME_MIN_LENGTH - extra_len)
		return NULL;
	size_t length = FRAME_MIN_LENGTH + extra_len + body_len;
	uint8_t *p = buf_reserve(out, 4 + length);
	if (!p)
		return NULL;
	put_be32(p, (uint32_t)length);
	p[4] = kind;
	put_be64(p + 5, req_id);
	return p + FRAME_HEADER_LEN;
}

static void pack_into(const ProtobufCMessage *msg, uint8_t *dst, size_t size)
{
	if (!msg)
		return;
	/* A mismatch would be a protobuf-c bug or a message mutated between
	 * the two calls: internal, so abort rather than send garbage. */
	if (unlikely(protobuf_c_message_pack(msg, dst) != size))
		abort();
}

int frame_encode(struct buf *out, uint8_t kind, uint64_t req_id,
		 const ProtobufCMessage *msg)
{
	if (kind != RPC_RESPONSE && kind != RPC_ERROR)
		return -1;
	if (req_id == 0 && kind != RPC_ERROR)
		return -1;
	size_t size = msg ? protobuf_c_message_get_packed_size(msg) : 0;
	uint8_t *body = frame_begin(out, kind, req_id, 0, size);
	if (!body)
		return -1;
	pack_into(msg, body, size);
	buf_commit(out, FRAME_HEADER_LEN + size);
	return 0;
}

int frame_encode_request(struct buf *out, uint16_t method, uint64_t req_id,
			 uint32_t deadline_ms, const ProtobufCMessage *msg)
{
	if (req_id == 0)
		return -1;
	size_t size = msg ? protobuf_c_message_get_packed_size(msg) : 0;
	uint8_t *hdr = frame_begin(out, RPC_REQUEST, req_id,
				   FRAME_REQUEST_HEADER_LEN, size);
	if (!hdr)
		return -1;
	put_be16(hdr, method);
	put_be32(hdr + 2, deadline_ms);
	pack_into(msg, hdr + FRAME_REQUEST_HEADER_LEN, size);
	buf_commit(out, FRAME_HEADER_LEN + FRAME_REQUEST_HEADER_LEN + size);
	return 0;
}

int frame_encode_raw(struct buf *out, uint8_t kind, uint64_t req_id,
		     struct view payload)
{
	if (kind < RPC_RESPONSE || kind > RPC_KIND_MAX)
		return -1;
	if (req_id == 0 && kind != RPC_ERROR)
		return -1;
	if (kind == RPC_CANCEL && payload.len != 0)
		return -1;
	uint8_t *body = frame_begin(out, kind, req_id, 0, payload.len);
	if (!body)
		return -1;
	if (payload.len)
		memcpy(body, payload.ptr, payload.len);
	buf_commit(out, FRAME_HEADER_LEN + payload.len);
	return 0;
}

ProtobufCMessage *frame_unpack(const ProtobufCMessageDescriptor *desc,
			       struct view payload)
{
	static const uint8_t empty[1];
	const uint8_t *data = payload.len ? payload.ptr : empty;
	ProtobufCMessage *msg =
		protobuf_c_message_unpack(desc, NULL, payload.len, data);
	if (!msg)
		return NULL;
	/* protobuf-c accepts a repeated scalar (last wins), over-long varints
	 * and explicit defaults, and cuts strings at an embedded NUL; each of
	 * these re-packs to a different size, so one comparison rejects them
	 * all, along with any smuggled bytes the C struct cannot show. */
	if (protobuf_c_message_get_packed_size(msg) != payload.len) {
		protobuf_c_message_free_unpacked(msg, NULL);
		return NULL;
	}
	return msg;
}

void frame_unpacked_free(void *msg)
{
	if (msg)
		protobuf_c_message_free_unpacked(msg, NULL);
}

static const struct rpc_method_info rpc_methods[] = {
	{ RPC_METHOD_PING, "ping", &mail__rpc__ping__descriptor,
	  &mail__rpc__pong__descriptor },
	{ RPC_METHOD_DELIVER, "deliver",
	  &mail__rpc__deliver_request__descriptor,
	  &mail__rpc__deliver_reply__descriptor },
	{ RPC_METHOD_AUTH, "auth", &mail__rpc__auth_request__descriptor,
	  &mail__rpc__auth_reply__descriptor },
	{ RPC_METHOD_OPEN_SESSION, "open_session",
	  &mail__rpc__open_session__descriptor, NULL },
	{ RPC_METHOD_REPLICATE, "replicate",
	  &mail__rpc__replicate_batch__descriptor,
	  &mail__rpc__replicate_ack__descriptor },
	{ RPC_METHOD_USER_ADD, "user_add", &mail__rpc__user_add_request__descriptor,
	  &mail__rpc__user_info__descriptor },
	{ RPC_METHOD_USER_GET, "user_get", &mail__rpc__user_request__descriptor,
	  &mail__rpc__user_info__descriptor },
	{ RPC_METHOD_MAILBOX_LIST, "mailbox_list", &mail__rpc__user_request__descriptor,
	  &mail__rpc__mailbox_list__descriptor },
	{ RPC_METHOD_DOMAIN_ADD, "domain_add", &mail__rpc__domain_request__descriptor,
	  &mail__rpc__domain_list__descriptor },
	{ RPC_METHOD_DOMAIN_LIST, "domain_list", &mail__rpc__domain_request__descriptor,
	  &mail__rpc__domain_list__descriptor },
	{ RPC_METHOD_ALIAS_SET, "alias_set", &mail__rpc__alias_request__descriptor,
	  &mail__rpc__alias_request__descriptor },
	{ RPC_METHOD_RESOLVE, "resolve", &mail__rpc__user_request__descriptor,
	  &mail__rpc__alias_request__descriptor },
	{ RPC_METHOD_USER_UPDATE, "user_update", &mail__rpc__user_update_request__descriptor,
	  &mail__rpc__user_info__descriptor },
	{ RPC_METHOD_USER_DELETE, "user_delete", &mail__rpc__user_request__descriptor, NULL },
	{ RPC_METHOD_DOMAIN_DELETE, "domain_delete", &mail__rpc__domain_request__descriptor,
	  &mail__rpc__domain_list__descriptor },
	{ RPC_METHOD_ALIAS_DELETE, "alias_delete", &mail__rpc__alias_request__descriptor, NULL },
	{ RPC_METHOD_USER_LIST, "user_list", &mail__rpc__user_list_request__descriptor,
	  &mail__rpc__user_list__descriptor },
	{ RPC_METHOD_ALIAS_LIST, "alias_list", &mail__rpc__domain_request__descriptor,
	  &mail__rpc__alias_list__descriptor },
	{ RPC_METHOD_DKIM_SET, "dkim_set", &mail__rpc__dkim_key__descriptor,
	  &mail__rpc__dkim_key__descriptor },
	{ RPC_METHOD_DKIM_GET, "dkim_get", &mail__rpc__dkim_request__descriptor,
	  &mail__rpc__dkim_keys__descriptor },
	{ RPC_METHOD_DKIM_DELETE, "dkim_delete", &mail__rpc__dkim_request__descriptor, NULL },
};

const struct rpc_method_info *rpc_method_get(uint16_t method)
{
	for (size_t i = 0; i < ARRAY_LEN(rpc_methods); i++)
		if (rpc_methods[i].method == method)
			return &rpc_methods[i];
	return NULL;
}

const char *rpc_method_str(uint16_t method)
{
	const struct rpc_method_info *m = rpc_method_get(method);
	return m ? m->name : "?";
}

const char *rpc_kind_str(uint8_t kind)
{
	switch (kind) {
	case RPC_REQUEST:
		return "request";
	case RPC_RESPONSE:
		return "response";
	case RPC_ERROR:
		return "error";
	case RPC_CANCEL:
		return "cancel";
	case RPC_SESSION_DATA:
		return "session_data";
	}
	return "?";
}

const char *frame_result_str(enum frame_result r)
{
	switch (r) {
	case FRAME_OK:
		return "ok";
	case FRAME_MORE:
		return "more";
	case FRAME_BAD:
		return "bad";
	}
	return "?";
}
