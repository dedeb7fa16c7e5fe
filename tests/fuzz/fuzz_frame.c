/* libFuzzer target for proto/frame.c: the input is a byte stream from a peer.
 *
 * It is decoded as a sequence of frames under two frame maxima, checking
 * that feeding it one byte at a time gives the same frames and the same end
 * state, that non-request frames re-encode to the same bytes, and that every
 * payload unpacks (or cleanly fails) as every message type, with accepted
 * messages surviving a re-encode.
 *
 * Built with -DFUZZ_STANDALONE_MAIN it has its own main() that runs each file
 * named on the command line, or each file of a named directory, through the
 * target once, so CI can replay tests/fuzz/corpus/frame without libFuzzer. */
#include <stdio.h>
#include <stdlib.h>

#include "common/base.h"
#include "proto/frame.h"
#include "proto/rpc.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_REQUIRE(cond)                                                   \
	do {                                                                 \
		if (!(cond)) {                                               \
			fprintf(stderr, "%s:%d: property failed: %s\n",     \
				__FILE__, __LINE__, #cond);                  \
			abort();                                             \
		}                                                            \
	} while (0)

static const ProtobufCMessageDescriptor *const all_messages[] = {
	&mail__rpc__ping__descriptor,
	&mail__rpc__pong__descriptor,
	&mail__rpc__error_reply__descriptor,
	&mail__rpc__deliver_request__descriptor,
	&mail__rpc__recipient_status__descriptor,
	&mail__rpc__deliver_reply__descriptor,
	&mail__rpc__auth_request__descriptor,
	&mail__rpc__auth_reply__descriptor,
	&mail__rpc__open_session__descriptor,
	&mail__rpc__replicate_batch__descriptor,
	&mail__rpc__replicate_ack__descriptor,
};

/* An accepted message must pack back to payload.len bytes, and its
 * re-encoded frame must decode and unpack again. */
static void check_message(const ProtobufCMessageDescriptor *desc,
			  struct view payload)
{
	ProtobufCMessage *m = frame_unpack(desc, payload);
	if (!m)
		return;
	FUZZ_REQUIRE(protobuf_c_message_get_packed_size(m) == payload.len);

	struct buf b;
	buf_init(&b, 0);
	FUZZ_REQUIRE(frame_encode(&b, RPC_RESPONSE, 1, m) == 0);
	struct frame f;
	size_t used = 0;
	FUZZ_REQUIRE(frame_decode(b.data, b.len, SIZE_MAX, &f, &used) ==
		     FRAME_OK);
	FUZZ_REQUIRE(used == b.len && f.payload.len == payload.len);
	ProtobufCMessage *again = frame_unpack(desc, f.payload);
	FUZZ_REQUIRE(again != NULL);
	frame_unpacked_free(again);
	buf_cleanup(&b);
	frame_unpacked_free(m);
}

static void check_frame(const struct frame *f, const uint8_t *raw,
			size_t raw_len)
{
	if (f->kind != RPC_REQUEST) {
		struct buf b;
		buf_init(&b, 0);
		FUZZ_REQUIRE(frame_encode_raw(&b, f->kind, f->req_id,
					      f->payload) == 0);
		FUZZ_REQUIRE(b.len == raw_len &&
			     memcmp(b.data, raw, raw_len) == 0);
		buf_cleanup(&b);
	} else {
		FUZZ_REQUIRE(raw_len == FRAME_HEADER_LEN +
						FRAME_REQUEST_HEADER_LEN +
						f->payload.len);
	}
	if (f->kind == RPC_SESSION_DATA || f->kind == RPC_CANCEL)
		return;
	for (size_t i = 0; i < ARRAY_LEN(all_messages); i++)
		check_message(all_messages[i], f->payload);
}

/* Decode the whole stream, then again as if it arrived one byte per read;
 * both must see the same frame boundaries and the same final result. */
static void run_stream(const uint8_t *data, size_t size, size_t max_frame,
		       bool deep)
{
	size_t off = 0, nframes = 0;
	enum frame_result end;
	for (;;) {
		struct frame f;
		size_t used = 0;
		end = frame_decode(data + off, size - off, max_frame, &f, &used);
		if (end != FRAME_OK)
			break;
		FUZZ_REQUIRE(used >= FRAME_HEADER_LEN && used <= size - off);
		FUZZ_REQUIRE(used - 4 <= max_frame);
		FUZZ_REQUIRE(f.payload.ptr >= data + off + FRAME_HEADER_LEN &&
			     f.payload.ptr + f.payload.len == data + off + used);
		if (deep)
			check_frame(&f, data + off, used);
		off += used;
		nframes++;
	}

	size_t off2 = 0, nframes2 = 0;
	enum frame_result end2 = FRAME_MORE;
	for (size_t avail = 0; avail <= size && end2 != FRAME_BAD; avail++) {
		for (;;) {
			struct frame f;
			size_t used = 0;
			end2 = frame_decode(data + off2, avail - off2,
					    max_frame, &f, &used);
			if (end2 != FRAME_OK)
				break;
			off2 += used;
			nframes2++;
		}
	}
	FUZZ_REQUIRE(end2 == end && off2 == off && nframes2 == nframes);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t empty[1];
	if (size == 0)
		data = empty; /* never form NULL + 0 */
	run_stream(data, size, 1u << 20, true);
	run_stream(data, size, 64, false);
	return 0;
}

#include "tests/fuzz/fuzz_main.h"
