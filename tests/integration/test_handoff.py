"""Session handoff on the node (OPEN_SESSION), the way the proxy uses it:
a connection to the node's RPC port whose first frame is an OPEN_SESSION
request; after the node's empty RESPONSE the same connection carries the
IMAP or POP3 session's raw bytes. Checks the tagged login reply with the
node's capabilities, a PREAUTH greeting without a tag, bytes pipelined
right behind the frame, POP3 with the maildrop lock, and the refusals:
wrong shard, unknown protocol, a bad tag, OPEN_SESSION after another
frame, a garbage payload."""

import socket

import mailtest as mt

USER = "hand@example.test"
PW = "pw"
SHARDS = 4

from pbwire import ERROR, REQUEST, RESPONSE, read_frame, request_frame  # noqa: F401
from pbwire import field as pb_field
from pbwire import varint

OPEN_SESSION, PING = 4, 1
IMAP, POP3, SMTP = 2, 3, 1


def open_session_msg(protocol, user, shard, tag="", utf8=False, client="192.0.2.7"):
    m = pb_field(1, protocol) + pb_field(2, user) + pb_field(3, shard)
    m += pb_field(5, client) + pb_field(6, 40000) + pb_field(7, True)
    m += pb_field(8, "TLSv1.3") + pb_field(11, "p-1")
    if tag:
        m += pb_field(12, tag)
    if utf8:
        m += pb_field(13, True)
    return m


def shard_of(ctl, naddr, user):
    rc, out, err = mt.run([ctl, "--node", naddr, "--json", "user", "show", user], timeout=30)
    import json
    return json.loads(out)["shard"]


class Session:
    """A handed-off session: send the frame, read the reply frame, then
    line-oriented I/O on the same socket."""

    def __init__(self, port, payload, extra=b"", req_id=7):
        self.sock = mt.connect(port, timeout=20)
        self.sock.sendall(request_frame(OPEN_SESSION, req_id, payload) + extra)
        self.kind, self.req_id, self.body, self.buf = read_frame(self.sock)

    def line(self, timeout=10):
        while b"\r\n" not in self.buf:
            chunk = mt.recv_until(self.sock, b"\r\n", timeout=timeout)
            if not chunk:
                break
            self.buf += chunk
        ln, sep, self.buf = self.buf.partition(b"\r\n")
        return ln + sep

    def until(self, needle, timeout=10):
        while needle not in self.buf:
            chunk = mt.recv_until(self.sock, needle, timeout=timeout)
            if not chunk:
                break
            self.buf += chunk
        i = self.buf.find(needle)
        if i < 0:
            out, self.buf = self.buf, b""
            return out
        out, self.buf = self.buf[:i + len(needle)], self.buf[i + len(needle):]
        return out

    def send(self, data):
        self.sock.sendall(data)

    def close(self):
        mt.close_quietly(self.sock)


def run(t):
    node, ctl = mt.binary("mailnode"), mt.binary("mailctl")
    rpc = mt.free_port() if hasattr(mt, "free_port") else None
    if rpc is None:
        with socket.socket() as s:
            s.bind((mt.HOST, 0))
            rpc = s.getsockname()[1]
    data = t.scratch / "data"
    argv = [node, "--set", f"rpc.listen=127.0.0.1:{rpc}", "--set", f"data.dir={data}",
            "--set", f"shards.count={SHARDS}"]
    n = t.daemon("node", argv)
    n.wait_tcp(rpc)
    naddr = f"127.0.0.1:{rpc}"
    rc, out, err = mt.run([ctl, "--node", naddr, "user", "add", USER, "--password", PW],
                          timeout=30)
    t.require(rc == 0, "mailctl user add", out + err)
    msg = b"From: a@example.test\r\nTo: hand@example.test\r\nSubject: hi\r\n\r\nbody\r\n"
    rc, out, err = mt.run([ctl, "--node", naddr, "deliver", USER], stdin=msg, timeout=30)
    t.require(rc == 0, "deliver", out + err)
    shard = shard_of(ctl, naddr, USER)

    # --- IMAP with the login tag, a command pipelined behind the frame ------
    s = Session(rpc, open_session_msg(IMAP, USER, shard, tag="a1"),
                extra=b"a2 SELECT INBOX\r\n")
    t.check(s.kind == RESPONSE and s.req_id == 7 and s.body == b"",
            "OPEN_SESSION answered by an empty RESPONSE", (s.kind, s.body, s.buf))
    ln = s.line()
    t.check(ln.startswith(b"a1 OK [CAPABILITY IMAP4rev2") and ln.endswith(b"Logged in\r\n")
            and b"LOGINDISABLED" not in ln,
            "first session bytes: tagged OK with post-login capabilities", ln)
    sel = s.until(b"a2 OK")
    t.check(b"* 1 EXISTS" in sel and b"[READ-WRITE]" in s.line(),
            "pipelined SELECT after the frame", sel)
    s.send(b"a3 FETCH 1 BODY[]\r\n")
    f = s.until(b"a3 OK")
    t.check(msg in f, "FETCH through the handed-off session returns the message", f)
    s.send(b"a4 LOGOUT\r\n")
    bye = s.until(b"a4 OK")
    t.check(b"* BYE" in bye and mt.wait_closed(s.sock), "LOGOUT closes", bye)
    s.close()

    # --- IMAP without a tag: PREAUTH greeting -------------------------------
    s = Session(rpc, open_session_msg(IMAP, USER, shard))
    ln = s.line()
    t.check(s.kind == RESPONSE and ln.startswith(b"* PREAUTH [CAPABILITY IMAP4rev2"),
            "no tag: PREAUTH greeting", ln)
    s.send(b"x CAPABILITY\r\n")
    t.check(b"x OK" in s.until(b"x OK"), "commands after PREAUTH")
    s.close()

    # --- POP3 ---------------------------------------------------------------
    s = Session(rpc, open_session_msg(POP3, USER, shard, utf8=True))
    ln = s.line()
    t.check(s.kind == RESPONSE and ln == b"+OK maildrop has 1 messages (%d octets)\r\n"
            % len(msg), "POP3 handoff: maildrop reply first", ln)
    # A second POP3 session of the same user: [IN-USE], then closed.
    s2 = Session(rpc, open_session_msg(POP3, USER, shard))
    ln2 = s2.line()
    t.check(ln2.startswith(b"-ERR [IN-USE]") and mt.wait_closed(s2.sock),
            "second POP3 handoff: -ERR [IN-USE] and closed", ln2)
    s2.close()
    s.send(b"RETR 1\r\n")
    r = s.until(b"\r\n.\r\n")
    t.check(r.startswith(b"+OK") and msg in r, "RETR through the handed-off POP3 session", r)
    s.send(b"QUIT\r\n")
    t.check(s.line().startswith(b"+OK"), "POP3 QUIT")
    s.close()

    # --- refusals ------------------------------------------------------------
    def refused(payload, what, code, extra_first=None):
        sock = mt.connect(rpc, timeout=10)
        if extra_first:
            sock.sendall(extra_first)
            kind, _, _, rest = read_frame(sock)
            t.check(kind == RESPONSE, f"{what}: first call answered", kind)
        sock.sendall(request_frame(OPEN_SESSION, 9, payload))
        kind, req_id, body, _ = read_frame(sock)
        ok = kind == ERROR and req_id == 9 and body[:2] == varint(8) + varint(code)[:1]
        t.check(ok and mt.wait_closed(sock), f"{what}: ERROR {code} and closed", (kind, body))
        mt.close_quietly(sock)

    other = (shard + 1) % SHARDS
    # The node owns all shards here; a shard that does not match the user's
    # hash is refused as not the owner.
    refused(open_session_msg(IMAP, USER, other), "wrong shard", 4)
    refused(open_session_msg(SMTP, USER, shard), "SMTP is not handed over", 1)
    refused(open_session_msg(IMAP, USER, shard, tag="a b"), "a tag with a space", 1)
    refused(open_session_msg(IMAP, "Hand@Example.Test", shard), "non-canonical user", 1)
    refused(b"\xff\xff\xff", "payload that does not decode", 1)
    refused(open_session_msg(IMAP, USER, shard), "OPEN_SESSION after a PING", 1,
            extra_first=request_frame(PING, 3, b""))
    # The RPC server still answers normal calls.
    rc, out, err = mt.run([ctl, "ping", naddr, "1"], timeout=10)
    t.check(rc == 0, "node still serves RPC", out + err)
    t.check(n.log_count("mech=handoff") >= 2 and n.log_count("event=handoff") >= 2,
            "handoffs logged", n.log_tail(20))


mt.main(run, name="handoff", budget_s=120)
