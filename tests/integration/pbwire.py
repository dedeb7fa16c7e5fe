"""Just enough protobuf and RPC framing to talk to a node from a test
without generated code: varint/length-delimited fields in canonical form
(defaults left out, as the node insists), a decoder into {field: [values]},
and the frames of proto/frame.h."""

import struct

REQUEST, RESPONSE, ERROR = 1, 2, 3


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, value):
    """int/bool as varint, str/bytes length-delimited; a default value
    (0, False, "", b"") is left out."""
    if not value:
        return b""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return varint(num << 3) + varint(value)
    if isinstance(value, str):
        value = value.encode()
    return varint((num << 3) | 2) + varint(len(value)) + value


def decode(buf):
    """Message bytes -> {field number: [int or bytes, ...]}."""
    out = {}
    i = 0

    def rd_varint():
        nonlocal i
        shift = v = 0
        while True:
            b = buf[i]
            i += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return v

    while i < len(buf):
        key = rd_varint()
        num, wt = key >> 3, key & 7
        if wt == 0:
            val = rd_varint()
        elif wt == 2:
            n = rd_varint()
            val = buf[i:i + n]
            i += n
        else:
            raise ValueError(f"wire type {wt}")
        out.setdefault(num, []).append(val)
    return out


def request_frame(method, req_id, payload, deadline_ms=5000):
    body = struct.pack(">HI", method, deadline_ms) + payload
    return struct.pack(">IBQ", 9 + len(body), REQUEST, req_id) + body


def read_frame(sock, buf=b""):
    """One frame: (kind, req_id, body, rest of the bytes read)."""
    while len(buf) < 4:
        chunk = sock.recv(65536)
        if not chunk:
            return None, None, None, buf
        buf += chunk
    n = struct.unpack(">I", buf[:4])[0]
    while len(buf) < 4 + n:
        chunk = sock.recv(65536)
        if not chunk:
            return None, None, None, buf
        buf += chunk
    kind, req_id = struct.unpack(">BQ", buf[4:13])
    return kind, req_id, buf[13:4 + n], buf[4 + n:]
