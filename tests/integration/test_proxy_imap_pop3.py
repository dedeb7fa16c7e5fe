"""IMAP and POP3 through mailproxy to a real mailnode: the proxy's
pre-login dialogue (capabilities, LOGINDISABLED/STARTTLS before TLS,
LOGIN/AUTHENTICATE PLAIN with SASL-IR, POP3 CAPA/STLS/USER/PASS/AUTH), the
credentials checked by the node, the session handed over (post-login
capabilities are the node's), mail read byte-exact through IMAPS, STARTTLS,
POP3S and STLS, commands pipelined behind the login, IDLE woken by a
delivery through the proxy, STARTTLS/STLS command injection, failed logins,
and a node that goes away (BYE / -ERR to the client)."""

import base64
import imaplib
import poplib
import socket
import ssl
import time

import mailtest as mt

USER = "pat@example.test"
PW = "s3cret pw"
SHARDS = 8


def free_port():
    with socket.socket() as s:
        s.bind((mt.HOST, 0))
        return s.getsockname()[1]


class Lines:
    """A raw (optionally TLS) client connection read line by line."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def fill(self, needle, timeout=10):
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while needle not in self.buf and time.monotonic() < deadline:
            try:
                chunk = self.sock.recv(65536)
            except (socket.timeout, ssl.SSLError, OSError):
                break
            if not chunk:
                break
            self.buf += chunk

    def until(self, needle, timeout=10):
        self.fill(needle, timeout)
        i = self.buf.find(needle)
        if i < 0:
            out, self.buf = self.buf, b""
            return out
        out, self.buf = self.buf[:i + len(needle)], self.buf[i + len(needle):]
        return out

    def tagged(self, tag, timeout=10):
        """Everything up to and including the tagged completion line."""
        out = self.until(b"\r\n" + tag + b" ", timeout) if not self.buf.startswith(tag + b" ") \
            else b""
        return out + self.line(timeout)

    def line(self, timeout=10):
        return self.until(b"\r\n", timeout)

    def send(self, data):
        self.sock.sendall(data)

    def nothing_more(self, wait=0.5):
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, ssl.SSLError, OSError):
            data = b""
        return self.buf + data


def run(t):
    node, proxy, ctl = mt.binary("mailnode"), mt.binary("mailproxy"), mt.binary("mailctl")
    pki = mt.PKI(t.scratch / "pki")
    ca = pki.ca("Proxy Test CA")
    leaf = pki.leaf("mail", "mail.example.test", ["mail.example.test"], ca)
    ctx = mt.tls_client_context(ca.cert)
    # imaplib/poplib verify against the host they connect to (127.0.0.1):
    # same CA, no name check.
    ipctx = mt.tls_client_context(ca.cert)
    ipctx.check_hostname = False

    rpc = free_port()
    argv_node = [node, "--set", f"rpc.listen=127.0.0.1:{rpc}", "--set",
                 f"data.dir={t.scratch / 'data'}", "--set", f"shards.count={SHARDS}"]
    n = t.daemon("node", argv_node)
    n.wait_tcp(rpc)
    naddr = f"127.0.0.1:{rpc}"
    rc, out, err = mt.run([ctl, "--node", naddr, "user", "add", USER, "--password", PW],
                          timeout=30)
    t.require(rc == 0, "user add", out + err)
    msg = (b"From: a@example.test\r\nTo: pat@example.test\r\nSubject: via proxy\r\n\r\n"
           b"line one\r\n.dot line\r\n" + b"x" * 5000 + b"\r\n")
    rc, out, err = mt.run([ctl, "--node", naddr, "deliver", USER], stdin=msg, timeout=30)
    t.require(rc == 0, "deliver", out + err)

    imap, imaps, pop3, pop3s, mport = (free_port() for _ in range(5))
    p = t.daemon("proxy", [proxy, "--set", f"imap.listen=127.0.0.1:{imap}",
                           "--set", f"imaps.listen=127.0.0.1:{imaps}",
                           "--set", f"pop3.listen=127.0.0.1:{pop3}",
                           "--set", f"pop3s.listen=127.0.0.1:{pop3s}",
                           "--set", f"route.node={naddr}", "--set", f"route.shards={SHARDS}",
                           "--set", f"tls.cert={leaf.chain}", "--set", f"tls.key={leaf.key}",
                           "--set", f"metrics.listen=127.0.0.1:{mport}"])
    for port in (imap, imaps, pop3, pop3s):
        p.wait_tcp(port)

    # --- IMAP on 143: before TLS -----------------------------------------------
    s = Lines(mt.connect(imap, timeout=10))
    g = s.line()
    t.check(g.startswith(b"* OK [CAPABILITY IMAP4rev2") and b"STARTTLS" in g and
            b"LOGINDISABLED" in g and b"AUTH=PLAIN" not in g,
            "greeting before TLS: STARTTLS and LOGINDISABLED", g)
    s.send(b"a1 LOGIN pat@example.test pw\r\n")
    r = s.line()
    t.check(r.startswith(b"a1 NO [PRIVACYREQUIRED]"), "LOGIN before TLS refused", r)
    s.send(b"a2 SELECT INBOX\r\n")
    r = s.line()
    t.check(r.startswith(b"a2 BAD"), "SELECT before login: BAD", r)
    # STARTTLS injection: the LOGIN pipelined behind STARTTLS must vanish.
    s.send(b"a3 STARTTLS\r\na4 CAPABILITY\r\n")
    r = s.line()
    t.check(r.startswith(b"a3 OK"), "STARTTLS accepted", r)
    tls = ctx.wrap_socket(s.sock, server_hostname="mail.example.test")
    s = Lines(tls)
    s.send(b"a5 NOOP\r\n")
    r = s.until(b"a5 ")
    r += s.line()
    t.check(b"a4" not in r and r.startswith(b"a5 OK"),
            "STARTTLS injection: the pipelined command is not answered", r)
    s.send(b"a6 CAPABILITY\r\n")
    r = s.tagged(b"a6")
    t.check(b"AUTH=PLAIN" in r and b"LOGINDISABLED" not in r and b"STARTTLS" not in r,
            "after STARTTLS: AUTH=PLAIN, no STARTTLS", r)
    # Failed login, then the right one with a command pipelined behind it.
    s.send(b'a7 LOGIN pat@example.test "wrong"\r\n')
    r = s.line()
    t.check(r.startswith(b"a7 NO [AUTHENTICATIONFAILED]"), "wrong password: NO", r)
    s.send(b'a8 LOGIN Pat@Example.Test "s3cret pw"\r\na9 SELECT INBOX\r\n')
    r = s.line()
    t.check(r.startswith(b"a8 OK [CAPABILITY IMAP4rev2") and b"UIDPLUS" in r,
            "LOGIN through the proxy: the node's capabilities", r)
    r = s.tagged(b"a9")
    t.check(b"* 1 EXISTS" in r, "SELECT pipelined behind LOGIN", r)
    s.send(b"b1 FETCH 1 BODY.PEEK[]\r\n")
    r = s.tagged(b"b1")
    t.check(msg in r, "FETCH through STARTTLS: byte-exact", len(r))
    s.send(b"b2 LOGOUT\r\n")
    r = s.tagged(b"b2")
    t.check(b"* BYE" in r, "LOGOUT", r)
    mt.close_quietly(s.sock)

    # --- IMAPS with imaplib, AUTHENTICATE PLAIN, IDLE ------------------------
    m = imaplib.IMAP4_SSL(mt.HOST, imaps, ssl_context=ipctx, timeout=20)
    t.check("AUTH=PLAIN" in m.capabilities and "STARTTLS" not in m.capabilities,
            "IMAPS greeting capabilities", m.capabilities)
    try:
        m.login(USER, "nope")
        t.check(False, "IMAPS wrong password refused")
    except imaplib.IMAP4.error as e:
        t.check("AUTHENTICATIONFAILED" in str(e), "IMAPS wrong password refused", e)
    typ, _ = m.authenticate("PLAIN", lambda _: b"\0" + USER.encode() + b"\0" + PW.encode())
    typ2, caps = m.capability()
    t.check(typ == "OK" and b"MOVE" in caps[0], "AUTHENTICATE PLAIN through IMAPS: the node's "
            "capabilities after login", caps)
    typ, data = m.select("INBOX")
    t.check(typ == "OK" and data == [b"1"], "imaplib SELECT through the proxy", data)
    typ, data = m.fetch("1", "(BODY.PEEK[])")
    t.check(typ == "OK" and data[0][1] == msg, "imaplib FETCH byte-exact")
    # IDLE: a delivery wakes the session through the proxy.
    tag = m._new_tag()
    m.send(tag + b" IDLE\r\n")
    cont = m.readline()
    t.check(cont.startswith(b"+"), "IDLE continuation", cont)
    rc, out, err = mt.run([ctl, "--node", naddr, "deliver", USER], stdin=b"Subject: 2\r\n\r\nx\r\n",
                          timeout=30)
    m.sock.settimeout(5)
    line = m.readline()
    t.check(line.strip() == b"* 2 EXISTS", "IDLE through the proxy: EXISTS on delivery", line)
    m.send(b"DONE\r\n")
    line = m.readline()
    t.check(line.startswith(tag + b" OK"), "IDLE done", line)
    m.logout()

    # SASL-IR with a wrong authzid, and a continuation with "*".
    s = Lines(mt.tls_connect(imaps, ca.cert, "mail.example.test", timeout=10))
    s.line()
    ir = base64.b64encode(b"other@example.test\0" + USER.encode() + b"\0" + PW.encode())
    s.send(b"c1 AUTHENTICATE PLAIN " + ir + b"\r\n")
    r = s.line()
    t.check(r.startswith(b"c1 NO [AUTHORIZATIONFAILED]"), "authzid of another user refused", r)
    s.send(b"c2 AUTHENTICATE PLAIN\r\n")
    t.check(s.line() == b"+ \r\n", "AUTHENTICATE continuation")
    s.send(b"*\r\n")
    r = s.line()
    t.check(r.startswith(b"c2 BAD"), "AUTHENTICATE cancelled with *", r)
    s.send(b"c3 AUTHENTICATE PLAIN\r\n")
    s.line()
    s.send(base64.b64encode(b"\0" + USER.encode() + b"\0" + PW.encode()) + b"\r\n")
    r = s.line()
    t.check(r.startswith(b"c3 OK [CAPABILITY"), "AUTHENTICATE PLAIN with a continuation", r)
    s.send(b"c4 LOGOUT\r\n")
    s.tagged(b"c4")
    mt.close_quietly(s.sock)

    # --- POP3 on 110 with STLS, and POP3S ----------------------------------------
    s = Lines(mt.connect(pop3, timeout=10))
    t.check(s.line().startswith(b"+OK"), "POP3 greeting")
    s.send(b"CAPA\r\n")
    r = s.until(b"\r\n.\r\n")
    t.check(b"STLS" in r and b"USER" not in r and b"SASL" not in r, "CAPA before TLS", r)
    s.send(b"USER pat@example.test\r\n")
    t.check(s.line().startswith(b"-ERR"), "USER before TLS refused")
    s.send(b"STLS\r\nUSER injected\r\n")
    t.check(s.line().startswith(b"+OK"), "STLS")
    s = Lines(ctx.wrap_socket(s.sock, server_hostname="mail.example.test"))
    s.send(b"NOOP\r\n")
    r = s.line()
    t.check(r.startswith(b"+OK") and not s.nothing_more(0.3),
            "STLS injection: the pipelined USER is not answered", r)
    s.send(b"CAPA\r\n")
    r = s.until(b"\r\n.\r\n")
    t.check(b"USER" in r and b"SASL PLAIN" in r and b"STLS" not in r, "CAPA after STLS", r)
    s.send(b"USER pat@example.test\r\nPASS wrong\r\n")
    s.line()
    r = s.line()
    t.check(r.startswith(b"-ERR [AUTH]"), "POP3 wrong password", r)
    s.send(b"USER pat@example.test\r\nPASS s3cret pw\r\nSTAT\r\n")
    s.line()
    r = s.line()
    t.check(r.startswith(b"+OK maildrop has 2 messages"), "POP3 login through the proxy", r)
    r = s.line()
    t.check(r.startswith(b"+OK 2 "), "STAT pipelined behind PASS", r)
    s.send(b"RETR 1\r\n")
    r = s.until(b"\r\n.\r\n")
    body = r.split(b"\r\n", 1)[1][:-3]
    unstuffed = body.replace(b"\r\n..", b"\r\n.")
    t.check(unstuffed == msg, "RETR through STLS: byte-exact after dot-unstuffing", r[:80])
    s.send(b"QUIT\r\n")
    t.check(s.line().startswith(b"+OK"), "QUIT")
    mt.close_quietly(s.sock)

    poplib._MAXLINE = 16384  # the test message has a 5000-byte line
    pp = poplib.POP3_SSL(mt.HOST, pop3s, context=ipctx, timeout=20)
    pp._shortcmd("AUTH PLAIN " + base64.b64encode(b"\0" + USER.encode() + b"\0" +
                                                  PW.encode()).decode())
    _, lines, _ = pp.retr(1)
    t.check(b"\r\n".join(lines) + b"\r\n" == msg, "POP3S AUTH PLAIN + RETR byte-exact")
    pp.quit()

    # --- garbage and limits before login -------------------------------------
    s = Lines(mt.connect(imap, timeout=10))
    s.line()
    s.send(b"x" * 20000 + b"\r\n")
    r = s.until(b"\r\n")
    t.check(r.startswith(b"* BYE") or b"BAD" in r, "over-long line before login", r)
    mt.close_quietly(s.sock)
    s = Lines(mt.connect(imap, timeout=10))
    s.line()
    s.send(b"z BOGUS\r\n" * 11)
    r = s.until(b"too many errors")
    t.check(b"* BYE too many errors" in r and mt.wait_closed(s.sock),
            "too many bad commands: BYE and close", r[-80:])
    mt.close_quietly(s.sock)

    # --- the node goes away under a live session ----------------------------------
    m = imaplib.IMAP4_SSL(mt.HOST, imaps, ssl_context=ipctx, timeout=20)
    m.login(USER, PW)
    m.select("INBOX")
    pp = Lines(mt.tls_connect(pop3s, ca.cert, "mail.example.test", timeout=10))
    pp.line()
    pp.send(b"USER pat@example.test\r\nPASS s3cret pw\r\n")
    pp.line()
    t.check(pp.line().startswith(b"+OK maildrop"), "POP3S session open before the node stops")
    n.stop(sig=9)
    m.sock.settimeout(5)
    line = m.readline()
    t.check(line.startswith(b"* BYE [UNAVAILABLE]"), "node killed: IMAP client gets BYE", line)
    r = pp.line()
    t.check(r.startswith(b"-ERR [SYS/TEMP]") and mt.wait_closed(pp.sock),
            "node killed: POP3 client gets -ERR and a close", r)
    # Logins while the node is down: a temporary failure, not a crash.
    s = Lines(mt.tls_connect(imaps, ca.cert, "mail.example.test", timeout=10))
    s.line()
    s.send(b'd1 LOGIN pat@example.test "s3cret pw"\r\n')
    r = s.line(timeout=20)
    t.check(r.startswith(b"d1 NO [UNAVAILABLE]"), "login with the node down: NO [UNAVAILABLE]", r)
    mt.close_quietly(s.sock)
    t.check(p.alive(), "proxy still running", p.log_tail())


mt.main(run, name="proxy_imap_pop3", budget_s=120)
