"""The node's POP3 server against Python's poplib and raw sockets: CAPA,
USER/PASS and AUTH PLAIN (initial response and continuation), STAT, LIST,
UIDL (stable across sessions and a restart), RETR byte-exact after
dot-unstuffing (a message with dot lines, one of 300 KiB), TOP, DELE
applied only at QUIT (a dropped connection deletes nothing), RSET,
[AUTH] and [IN-USE] response codes, pipelined commands, an over-long
line, and too many errors."""

import base64
import poplib
import socket
import time

import mailtest as mt

USER = "u@example.test"
PW = "pw"
# Few shards: a quick start. `mailctl --node` asks the node for the shard.
SHARDS = 4


def free_port():
    with socket.socket() as s:
        s.bind((mt.HOST, 0))
        return s.getsockname()[1]


def make_messages():
    m1 = (b"From: a@example.test\r\nTo: u@example.test\r\nSubject: dots\r\n\r\n"
          b"Hello\r\n.leading dot\r\n..two dots\r\n.\r\n. space\r\nend\r\n")
    lines = [b"From: big@example.test", b"To: u@example.test", b"Subject: big", b""]
    i = 0
    size = sum(len(x) + 2 for x in lines)
    while size < 300 * 1024:
        ln = (b"." if i % 13 == 0 else b"") + (b"line %06d " % i) + b"x" * (i % 97)
        lines.append(ln)
        size += len(ln) + 2
        i += 1
    m2 = b"\r\n".join(lines) + b"\r\n"
    m3 = b"Subject: three\r\nX-Seq: 3\r\n\r\nline1\r\nline2\r\nline3\r\n"
    return [m1, m2, m3]


def body_of(lines):
    return b"\r\n".join(lines) + b"\r\n"


def login(port, user=USER, pw=PW, retries=20):
    """poplib session, retrying while a previous session still holds the
    maildrop (its close may lag the client by a moment)."""
    for _ in range(retries):
        p = poplib.POP3(mt.HOST, port, timeout=20)
        p.user(user)
        try:
            p.pass_(pw)
            return p
        except poplib.error_proto as e:
            p.close()
            if b"[IN-USE]" not in e.args[0]:
                raise
            time.sleep(0.1)
    raise RuntimeError("maildrop stayed locked")


class Raw:
    """A raw POP3 connection with a buffered reader (replies may arrive
    together in one segment)."""

    def __init__(self, port):
        self.sock = mt.connect(port, timeout=20)
        self.buf = b""
        self.greeting = self.line()

    def _fill(self, needle, timeout):
        deadline = time.monotonic() + timeout
        while needle not in self.buf and time.monotonic() < deadline:
            chunk = mt.recv_until(self.sock, needle, timeout=deadline - time.monotonic())
            if not chunk:
                break
            self.buf += chunk

    def line(self, timeout=20):
        self._fill(b"\r\n", timeout)
        k = self.buf.find(b"\r\n")
        if k < 0:
            out, self.buf = self.buf, b""
            return out
        out, self.buf = self.buf[:k + 2], self.buf[k + 2:]
        return out

    def reply(self, multiline=False, timeout=20):
        first = self.line(timeout)
        if not (multiline and first.startswith(b"+OK")):
            return first
        if first.endswith(b"\r\n"):
            self.buf = b"\r\n" + self.buf  # so the terminator search can match at once
        self._fill(b"\r\n.\r\n", timeout)
        k = self.buf.find(b"\r\n.\r\n")
        if k < 0:
            out, self.buf = self.buf, b""
        else:
            out, self.buf = self.buf[:k + 5], self.buf[k + 5:]
        return first + out[2:]

    def send(self, data):
        self.sock.sendall(data)

    def close(self):
        mt.close_quietly(self.sock)


def run(t):
    node, ctl = mt.binary("mailnode"), mt.binary("mailctl")
    rpc, pop = free_port(), free_port()
    data = t.scratch / "data"
    argv = [node, "--set", f"rpc.listen=127.0.0.1:{rpc}", "--set", f"pop3.listen=127.0.0.1:{pop}",
            "--set", f"data.dir={data}", "--set", f"shards.count={SHARDS}"]
    n = t.daemon("node", argv)
    n.wait_tcp(rpc)
    n.wait_tcp(pop)
    naddr = f"127.0.0.1:{rpc}"

    rc, out, err = mt.run([ctl, "--node", naddr, "user", "add", USER, "--password", PW],
                          timeout=30)
    t.require(rc == 0, "mailctl user add", out + err)
    msgs = make_messages()
    for i, m in enumerate(msgs):
        rc, out, err = mt.run([ctl, "--node", naddr, "deliver", USER], stdin=m, timeout=30)
        t.require(rc == 0, f"deliver message {i + 1} ({len(m)} bytes)", out + err)

    # --- greeting, CAPA, failed logins ---------------------------------
    p = poplib.POP3(mt.HOST, pop, timeout=20)
    welcome = p.getwelcome()
    t.check(welcome.startswith(b"+OK") and b"ready" in welcome, "greeting", welcome)
    capa = p.capa()
    t.check(all(k in capa for k in ("TOP", "UIDL", "USER", "RESP-CODES", "PIPELINING",
                                    "AUTH-RESP-CODE", "SASL", "UTF8", "IMPLEMENTATION"))
            and capa.get("SASL") == ["PLAIN"], "CAPA lists the capabilities", capa)
    p.user(USER)
    try:
        p.pass_("wrong")
        t.check(False, "wrong password refused")
    except poplib.error_proto as e:
        t.check(e.args[0].startswith(b"-ERR [AUTH]"), "wrong password: -ERR [AUTH]", e.args[0])
    p.user("nobody@example.test")
    try:
        p.pass_("pw")
        t.check(False, "unknown user refused")
    except poplib.error_proto as e:
        t.check(e.args[0].startswith(b"-ERR [AUTH]"), "unknown user: -ERR [AUTH]", e.args[0])
    p.quit()

    # --- STAT, LIST, UIDL, RETR, TOP -------------------------------------
    p = login(pop)
    count, total = p.stat()
    t.check(count == 3 and total == sum(len(m) for m in msgs), "STAT", (count, total))
    _, listing, _ = p.list()
    sizes = [int(x.split()[1]) for x in listing]
    t.check([int(x.split()[0]) for x in listing] == [1, 2, 3] and sizes == [len(m) for m in msgs],
            "LIST numbers and sizes", listing)
    t.check(p.list(2).split() == [b"+OK", b"2", str(len(msgs[1])).encode()], "LIST 2",
            p.list(2))
    _, uidl, _ = p.uidl()
    uids = [x.split()[1] for x in uidl]
    t.check(len(uids) == 3 and len(set(uids)) == 3 and all(b"." in u for u in uids),
            "UIDL lists <uidvalidity>.<uid>", uidl)
    t.check(p.uidl(3).split()[2] == uids[2], "UIDL 3", p.uidl(3))
    for i, m in enumerate(msgs):
        _, lines, octets = p.retr(i + 1)
        t.check(body_of(lines) == m, f"RETR {i + 1} byte-exact ({len(m)} bytes)",
                f"got {len(body_of(lines))} bytes")
    _, lines, _ = p.top(3, 0)
    t.check(lines == [b"Subject: three", b"X-Seq: 3", b""], "TOP 3 0: header only", lines)
    _, lines, _ = p.top(3, 2)
    t.check(lines == [b"Subject: three", b"X-Seq: 3", b"", b"line1", b"line2"], "TOP 3 2",
            lines)
    _, lines, _ = p.top(1, 2)
    t.check(lines[-2:] == [b"Hello", b".leading dot"], "TOP unstuffs dot lines", lines)
    for bad in ("RETR 4", "RETR 0", "DELE 9"):
        try:
            p._shortcmd(bad)
            t.check(False, f"{bad} refused")
        except poplib.error_proto as e:
            t.check(e.args[0].startswith(b"-ERR"), f"{bad}: -ERR", e.args[0])

    # --- DELE + RSET, DELE + QUIT ------------------------------------------
    p.dele(2)
    t.check(p.stat()[0] == 2, "DELE 2 hides the message in this session")
    try:
        p.retr(2)
        t.check(False, "RETR of a deleted message refused")
    except poplib.error_proto as e:
        t.check(b"deleted" in e.args[0], "RETR of a deleted message refused", e.args[0])
    p.rset()
    t.check(p.stat()[0] == 3, "RSET undeletes")
    p.dele(2)
    t.check(p.quit().startswith(b"+OK"), "QUIT after DELE 2")

    p = login(pop)
    _, uidl2, _ = p.uidl()
    uids2 = [x.split()[1] for x in uidl2]
    t.check(p.stat()[0] == 2 and uids2 == [uids[0], uids[2]],
            "DELE applied at QUIT; the others keep their UIDLs", uidl2)
    _, lines, _ = p.retr(2)
    t.check(body_of(lines) == msgs[2], "message 3 is now number 2")

    # --- a dropped connection deletes nothing ---------------------------------
    p.dele(1)
    p.dele(2)
    p.close()  # no QUIT: the connection just drops
    p = login(pop)
    t.check(p.stat()[0] == 2, "dropped connection after DELE deletes nothing", p.stat())

    # --- [IN-USE] ------------------------------------------------------------
    q = poplib.POP3(mt.HOST, pop, timeout=20)
    q.user(USER)
    try:
        q.pass_(PW)
        t.check(False, "second session refused")
    except poplib.error_proto as e:
        t.check(e.args[0].startswith(b"-ERR [IN-USE]"), "second session: -ERR [IN-USE]",
                e.args[0])
    q.quit()
    p.quit()

    # --- AUTH PLAIN ----------------------------------------------------------
    ir = base64.b64encode(b"\0" + USER.encode() + b"\0" + PW.encode())
    s = Raw(pop)
    s.send(b"AUTH PLAIN " + ir + b"\r\n")
    r = s.reply()
    t.check(r.startswith(b"+OK"), "AUTH PLAIN with initial response", r)
    s.send(b"STAT\r\nQUIT\r\n")
    s._fill(b"bye", 20)
    r, s.buf = s.buf, b""
    t.check(r.startswith(b"+OK 2 "), "STAT after AUTH PLAIN", r)
    s.close()

    s = Raw(pop)
    s.send(b"AUTH PLAIN\r\n")
    r = s.reply()
    t.check(r == b"+ \r\n", "AUTH PLAIN continuation prompt", r)
    s.send(base64.b64encode(b"\0" + USER.encode() + b"\0nope") + b"\r\n")
    r = s.reply()
    t.check(r.startswith(b"-ERR [AUTH]"), "AUTH PLAIN wrong password: -ERR [AUTH]", r)
    s.send(b"AUTH PLAIN\r\n")
    s.reply()
    s.send(b"*\r\n")
    r = s.reply()
    t.check(r.startswith(b"-ERR"), "AUTH PLAIN cancelled with *", r)
    s.send(b"AUTH PLAIN !!!notbase64\r\n")
    r = s.reply()
    t.check(r.startswith(b"-ERR"), "AUTH PLAIN malformed payload", r)
    s.send(b"AUTH PLAIN\r\n")
    s.reply()
    s.send(ir + b"\r\n")
    r = s.reply()
    t.check(r.startswith(b"+OK"), "AUTH PLAIN continuation login", r)
    s.send(b"QUIT\r\n")
    s._fill(b"bye", 20)
    s.close()

    # --- pipelining -----------------------------------------------------------
    time.sleep(0.2)
    s = Raw(pop)
    s.send(f"CAPA\r\nUSER {USER}\r\nPASS {PW}\r\nSTAT\r\nLIST\r\nUIDL 1\r\nRETR 1\r\n"
              "TOP 2 1\r\nNOOP\r\nQUIT\r\n".encode())
    s._fill(b"+OK bye", 20)
    data_in = s.buf
    s.close()
    stuffed = (msgs[0].replace(b"\r\n.", b"\r\n..")) + b".\r\n"
    expect_order = [b"+OK Capability", b"+OK send PASS", b"+OK maildrop has 2",
                    b"+OK 2 ", b"+OK 2 messages", b"+OK 1 " + uids[0],
                    b"+OK %d octets\r\n" % len(msgs[0]) + stuffed,
                    b"+OK top of message follows", b"+OK\r\n", b"+OK bye"]
    pos, ok = 0, True
    for e in expect_order:
        k = data_in.find(e, pos)
        if k < 0:
            ok = False
            break
        pos = k + len(e)
    t.check(ok, "pipelined commands answered in order", data_in[:2000])

    # --- over-long line, bad commands ---------------------------------------
    s = Raw(pop)
    s.send(b"NOOP " + b"x" * 400 + b"\r\nCAPA\r\n")
    r = s.reply()
    t.check(r.startswith(b"-ERR") and b"too long" in r, "over-long line: -ERR", r)
    r = s.reply(multiline=True)
    t.check(r.startswith(b"+OK Capability"), "session goes on after the long line", r)
    s.send(b"X" * 5000 + b"\r\nUSER a\r\n")
    r = s.reply()
    t.check(r.startswith(b"-ERR"), "a 5000-byte line: -ERR", r)
    r = s.reply()
    t.check(r.startswith(b"+OK"), "next command after a 5000-byte line", r)
    s.send(b"BOGUS\r\n" * 12)
    s._fill(b"too many errors\r\n", 20)
    r = s.buf
    t.check(b"-ERR too many errors" in r and mt.wait_closed(s.sock), "too many errors: closed", r)
    s.close()

    # --- UIDL stable across a restart ---------------------------------------------
    n.stop()
    n = t.daemon("node2", argv)
    n.wait_tcp(pop)
    p = login(pop)
    _, uidl3, _ = p.uidl()
    t.check([x.split()[1] for x in uidl3] == uids2, "UIDL stable across a restart", uidl3)
    _, lines, _ = p.retr(1)
    t.check(body_of(lines) == msgs[0], "RETR after restart")
    p.quit()
    t.check(n.log_count("comp=pop3") > 0 and "pw" not in
            [w.split("=", 1)[-1] for w in n.log_text().split() if w.startswith("user=")],
            "pop3 log lines", n.log_tail(10))


mt.main(run, name="pop3", budget_s=180)
