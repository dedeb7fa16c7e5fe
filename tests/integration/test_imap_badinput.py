"""Bad input to the node's IMAP server (issue 4, "Bad input"): literal
sizes over the limit refused without allocating (the node's RSS does not
grow), over-long lines, deeply nested lists, unknown commands and commands
in the wrong state (BAD/NO and the session goes on), invalid modified
UTF-7 and UTF-8 mailbox names, tighter limits before authentication, the
error limit closing the session, and clients that disconnect in the middle
of a literal or of an APPEND leaving no partial message behind."""

import socket
import time

import mailtest as mt

USER, PW = "bad@example.test", "pw"


def free_port():
    with socket.socket() as s:
        s.bind((mt.HOST, 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class C:
    def __init__(self, port):
        self.s = mt.connect(port, timeout=10)
        self.buf = b""
        self.greeting = self.line()

    def fill(self, needle, timeout=10):
        self.s.settimeout(timeout)
        end = time.monotonic() + timeout
        while needle not in self.buf and time.monotonic() < end:
            try:
                chunk = self.s.recv(65536)
            except (socket.timeout, OSError):
                break
            if not chunk:
                break
            self.buf += chunk

    def line(self, timeout=10):
        self.fill(b"\r\n", timeout)
        ln, sep, self.buf = self.buf.partition(b"\r\n")
        return ln + sep

    def tagged(self, tag, timeout=10):
        out = b""
        while True:
            ln = self.line(timeout)
            out += ln
            if not ln or ln.startswith(tag + b" "):
                return out

    def send(self, data):
        self.s.sendall(data)

    def close(self):
        mt.close_quietly(self.s)


def run(t):
    node, ctl = mt.binary("mailnode"), mt.binary("mailctl")
    rport, iport = free_port(), free_port()
    argv = [node, "--set", f"rpc.listen=127.0.0.1:{rport}", "--set",
            f"imap.listen=127.0.0.1:{iport}", "--set", "shards.count=4", "--set",
            f"data.dir={t.scratch / 'data'}"]
    n = t.daemon("node", argv)
    n.wait_tcp(iport)
    rc, out, err = mt.run([ctl, "--node", f"127.0.0.1:{rport}", "user", "add", USER,
                           "--password", PW], timeout=30)
    t.require(rc == 0, "user add", out + err)

    def login():
        c = C(iport)
        c.send(b"l LOGIN %s %s\r\n" % (USER.encode(), PW.encode()))
        r = c.tagged(b"l")
        t.require(b"l OK" in r, "login", r)
        return c

    # --- before authentication: tighter limits -----------------------------
    c = C(iport)
    c.send(b"p1 LOGIN {100000}\r\n")
    r = c.line()
    t.check(r.startswith(b"p1 BAD") or r.startswith(b"p1 NO"),
            "pre-auth: a 100 KB literal is refused", r)
    c.send(b"p2 NOOP\r\n")
    t.check(c.tagged(b"p2").startswith(b"p2 OK"), "pre-auth: the session goes on")
    c.send(b"p3 SELECT INBOX\r\n")
    t.check(c.tagged(b"p3").startswith(b"p3 BAD"), "SELECT before login: BAD")
    c.send(b"p4 FETCH 1 FLAGS\r\n")
    t.check(c.tagged(b"p4").startswith(b"p4 BAD"), "FETCH before login: BAD")
    c.send(b"p5 " + b"(" * 50 + b")" * 50 + b"\r\n")
    t.check(b"BAD" in c.line(), "pre-auth: deep nesting refused")
    c.send(b"p6 NOOP\r\n")
    t.check(c.tagged(b"p6").startswith(b"p6 OK"), "still usable after nesting")
    c.send(b"p7 LOGIN " + b"a" * 20000 + b" x\r\n")
    r = c.line()
    t.check(r.startswith(b"* BYE") or b"BAD" in r, "pre-auth: 20 KB line refused", r)
    c.close()

    # --- authenticated: literal over the limit without allocating -----------
    c = login()
    pid = n.proc.pid if hasattr(n, "proc") else None
    before = rss_kib(pid) if pid else 0
    c.send(b"a1 APPEND INBOX {4000000000}\r\n")
    r = c.line()
    t.check(r.startswith(b"a1 NO [TOOBIG]") or r.startswith(b"a1 BAD"),
            "APPEND of a 4 GB literal refused at once", r)
    c.send(b"a2 LOGIN {99999999999999999999}\r\n")
    r = c.line()
    t.check(b"BAD" in r or b"NO" in r, "a literal size beyond 64 bits refused", r)
    c.send(b"a3 SEARCH TEXT {2000000}\r\n")
    r = c.line()
    t.check(r.startswith(b"a3 BAD") or r.startswith(b"a3 NO"),
            "a 2 MB search literal refused (over the in-memory literal limit)", r)
    after = rss_kib(pid) if pid else 0
    t.check(not pid or after - before < 8 * 1024, "no allocation for refused literals",
            (before, after))
    c.send(b"a4 NOOP\r\n")
    t.check(c.tagged(b"a4").startswith(b"a4 OK"), "session goes on after refused literals")
    # Non-synchronizing literal over the limit (APPENDLIMIT, storage.max_message,
    # 100M by default): the server must skip or close, never buffer it.
    c.send(b"a5 APPEND INBOX {200000000+}\r\n" + b"x" * 65536)
    r = c.line()
    t.check(r.startswith(b"a5") or r.startswith(b"* BYE"),
            "an over-limit LITERAL+ is refused (skipped or closed)", r)
    c.close()

    # --- names, unknown commands, wrong state --------------------------------
    c = login()
    c.send(b"b1 CREATE &Jjo\r\n")
    r = c.tagged(b"b1")
    t.check(r.startswith(b"b1 BAD") or r.startswith(b"b1 NO"), "invalid modified UTF-7 refused",
            r)
    c.send(b"b2 CREATE \"\xff\xfe\"\r\n")
    r = c.tagged(b"b2")
    t.check(r.startswith(b"b2 BAD") or r.startswith(b"b2 NO"), "invalid UTF-8 name refused", r)
    c.send(b"b3 FROBNICATE\r\n")
    t.check(c.tagged(b"b3").startswith(b"b3 BAD"), "unknown command: BAD")
    c.send(b"b4 FETCH 1 FLAGS\r\n")
    t.check(c.tagged(b"b4").startswith(b"b4 BAD"), "FETCH without a selected mailbox: BAD")
    c.send(b"b5 LOGIN a b\r\n")
    t.check(c.tagged(b"b5").startswith(b"b5 BAD"), "LOGIN when authenticated: BAD")
    c.send(b"b6 SELECT INBOX\r\nb7 FETCH 1:* (FLAGS\r\n")
    c.tagged(b"b6")
    t.check(c.tagged(b"b7").startswith(b"b7 BAD"), "unbalanced parenthesis: BAD")
    c.send(b"b8 FETCH 1:* (" + b"(" * 200 + b")" * 200 + b")\r\n")
    t.check(b"BAD" in c.tagged(b"b8"), "deep nesting after login: BAD")
    c.send(b"b9 NOOP\r\n")
    t.check(c.tagged(b"b9").startswith(b"b9 OK"), "session goes on after all that")
    c.send(b"b10 " + b"x" * 100000 + b"\r\n")
    r = c.line()
    t.check(r.startswith(b"* BYE") or b"BAD" in r, "a 100 KB command line refused", r)
    c.close()

    # --- the error limit -------------------------------------------------------
    c = login()
    c.send(b"e FROB\r\n" * 30)
    c.fill(b"* BYE", 10)
    t.check(b"* BYE" in c.buf and mt.wait_closed(c.s), "too many errors: BYE and close",
            c.buf[-100:])
    c.close()

    # --- disconnect mid-literal and mid-APPEND: no partial message --------------
    for cut in (10, 50000):
        c = login()
        c.send(b"x APPEND INBOX {100000}\r\n")
        cont = c.line()
        t.check(cont.startswith(b"+"), "APPEND continuation", cont)
        c.send(b"Subject: partial\r\n\r\n" + b"z" * cut)
        time.sleep(0.2)
        c.close()
    c = login()
    c.send(b"m1 LOGIN a\r\n")  # wrong state + wrong args, just noise
    c.tagged(b"m1")
    c.send(b"m2 STATUS INBOX (MESSAGES)\r\n")
    r = c.tagged(b"m2")
    t.check(b"(MESSAGES 0)" in r, "aborted APPENDs left no message", r)
    c.close()
    rc, out, err = mt.run([ctl, "--node", f"127.0.0.1:{rport}", "--json", "user", "show", USER],
                          timeout=30)
    t.check('"used_messages":0' in out and '"used_bytes":0' in out,
            "and no usage was counted", out + err)
    t.check(n.alive(), "the node is still running", n.log_tail())


mt.main(run, name="imap_badinput", budget_s=120)
