"""The SMTP receiver of mailproxy against a real mailnode: swaks and
smtplib deliver through MX (25), submission with STARTTLS (587, AUTH PLAIN
and LOGIN) and submissions (465, implicit TLS); every message is read back
byte-exact from the node's IMAP with one Received: header prepended;
EHLO capabilities before and after TLS; PIPELINING replies in order; BDAT
with LAST and mixed chunks; SIZE (at MAIL, and an over-size DATA and BDAT
answered after the data with nothing stored and without the proxy's memory
growing by the message); RCPT checked at once (unknown 550 5.1.1, disabled
550 5.2.1, over quota 452 4.2.2, quota smaller than SIZE 552); aliases and
+tags; relaying refused unauthenticated and authenticated; VRFY/EXPN."""

import base64
import imaplib
import re
import smtplib
import socket
import ssl
import time
import urllib.request

import mailtest as mt

SHARDS = 8
DOMAIN = "example.test"
HOSTNAME = "mx.example.test"
PW = "pw of the users"
USERS = ["alice", "bob", "carol", "dave", "erin"]
MAX_SIZE = 2 << 20


def free_port():
    with socket.socket() as s:
        s.bind((mt.HOST, 0))
        return s.getsockname()[1]


def addr(user):
    return f"{user}@{DOMAIN}"


class Smtp:
    """A raw SMTP client: exact bytes out, whole replies in."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self, timeout):
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except (socket.timeout, ssl.SSLError, OSError):
            return False
        if not chunk:
            return False
        self.buf += chunk
        return True

    def line(self, timeout=10):
        deadline = time.monotonic() + timeout
        while b"\r\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not self._fill(left):
                out, self.buf = self.buf, b""
                return out
        i = self.buf.index(b"\r\n") + 2
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def reply(self, timeout=10):
        """(code, all lines) of one reply; code 0 when none came."""
        lines = b""
        while True:
            ln = self.line(timeout)
            lines += ln
            if not ln.endswith(b"\r\n"):
                return 0, lines
            if len(ln) < 6 or ln[3:4] != b"-":
                try:
                    return int(ln[:3]), lines
                except ValueError:
                    return 0, lines

    def replies(self, n, timeout=10):
        return [self.reply(timeout) for _ in range(n)]

    def send(self, data):
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def cmd(self, data, timeout=10):
        self.send(data if data.endswith("\r\n") else data + "\r\n")
        return self.reply(timeout)

    def pending(self, wait=0.4):
        """Whatever else the server sent (nothing expected)."""
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, ssl.SSLError, OSError):
            data = b""
        return self.buf + data

    def closed(self, timeout=5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False
            except (ssl.SSLError, OSError):
                return True
            if not chunk:
                return True
            self.buf += chunk
        return False

    def close(self):
        mt.close_quietly(self.sock)


class Cluster:
    """One mailnode (plaintext IMAP for reading back) and one mailproxy."""

    def __init__(self, t, proxy_args=(), users=USERS):
        self.t = t
        self.node_bin, self.proxy_bin = mt.binary("mailnode"), mt.binary("mailproxy")
        self.ctl_bin = mt.binary("mailctl")
        self.pki = mt.PKI(t.scratch / "pki")
        ca = self.pki.ca("SMTP Test CA")
        self.ca = ca
        self.leaf = self.pki.leaf("mail", HOSTNAME, [HOSTNAME], ca)
        self.ctx = mt.tls_client_context(ca.cert)
        self.ctx.check_hostname = False
        self.rpc, self.imap = free_port(), free_port()
        self.naddr = f"127.0.0.1:{self.rpc}"
        self.start_node()
        self.ctl("domain", "add", DOMAIN)
        for u in users:
            self.ctl("user", "add", addr(u), "--password", PW)
        self.proxies = []
        self.proxy = self.start_proxy("proxy", proxy_args)

    def start_node(self):
        argv = [self.node_bin, "--set", f"rpc.listen={self.naddr}", "--set",
                f"imap.listen=127.0.0.1:{self.imap}", "--set",
                f"data.dir={self.t.scratch / 'data'}", "--set", f"shards.count={SHARDS}"]
        self.node = self.t.daemon("node", argv)
        self.node.wait_tcp(self.rpc)
        self.node.wait_tcp(self.imap)

    def start_proxy(self, name, args=()):
        ports = {k: free_port() for k in ("smtp", "submission", "submissions")}
        metrics = free_port()
        argv = [self.proxy_bin, "--set", f"smtp.listen=127.0.0.1:{ports['smtp']}",
                "--set", f"submission.listen=127.0.0.1:{ports['submission']}",
                "--set", f"submissions.listen=127.0.0.1:{ports['submissions']}",
                "--set", f"route.node={self.naddr}", "--set", f"route.shards={SHARDS}",
                "--set", f"tls.cert={self.leaf.chain}", "--set", f"tls.key={self.leaf.key}",
                "--set", f"proxy.hostname={HOSTNAME}", "--set", f"smtp.max_size={MAX_SIZE}",
                "--set", f"metrics.listen=127.0.0.1:{metrics}"]
        for a in args:
            argv += ["--set", a]
        d = self.t.daemon(name, argv)
        for p in ports.values():
            d.wait_tcp(p)
        d.ports = ports
        d.metrics = metrics
        self.proxies.append(d)
        return d

    def ctl(self, *args, stdin=None, ok=True):
        rc, out, err = mt.run([self.ctl_bin, "--node", self.naddr, *args], stdin=stdin,
                              timeout=30)
        if ok:
            self.t.require(rc == 0, "mailctl " + " ".join(args[:3]), out + err)
        return rc, out + err

    def mailbox(self, user, folder="INBOX"):
        """Every message of a folder, byte-exact, in UID order."""
        m = imaplib.IMAP4(mt.HOST, self.imap, timeout=20)
        try:
            m.login(addr(user), PW)
            typ, _ = m.select(folder, readonly=True)
            if typ != "OK":
                return []
            typ, data = m.uid("FETCH", "1:*", "(BODY.PEEK[])")
            out = []
            for item in data or []:
                if isinstance(item, tuple):
                    out.append(item[1])
            return out
        finally:
            try:
                m.logout()
            except (imaplib.IMAP4.error, OSError):
                pass

    def connect(self, svc="smtp", proxy=None, tls=False):
        p = proxy or self.proxy
        sock = mt.connect(p.ports[svc], timeout=20)
        if tls:
            sock = self.ctx.wrap_socket(sock, server_hostname=HOSTNAME)
        return Smtp(sock)


RECEIVED_RE = re.compile(
    rb"\AReceived: from (?P<helo>[^ ]+) \(\[(?P<ip>[^\]]+)\]\)\r\n"
    rb"(?:\t\(using (?P<tlsv>TLSv[0-9.]+) with cipher (?P<cipher>[A-Z0-9_-]+)\)\r\n)?"
    rb"\tby (?P<by>[^ ]+) \(mailcluster\) with (?P<proto>[A-Z0-9]+) id (?P<id>[0-9A-F]+)"
    rb"(?:\r\n\tfor <(?P<for>[^>]+)>)?;\r\n"
    rb"\t(?P<date>(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{1,2} "
    rb"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    rb"[0-9]{2}:[0-9]{2}:[0-9]{2} \+0000)\r\n")


def split_trace(stored):
    """(match of the Received header, rest) or (None, stored)."""
    m = RECEIVED_RE.match(stored)
    if not m:
        return None, stored
    return m, stored[m.end():]


def check_stored(t, cl, user, body, what, before, **want):
    """The user's INBOX got exactly one new message: one Received header
    (with the fields in want) and then body byte-exact."""
    msgs = cl.mailbox(user)
    t.check(len(msgs) == before + 1, f"{what}: one new message for {user}",
            f"{len(msgs)} messages, {before} before")
    if len(msgs) != before + 1:
        return None
    m, rest = split_trace(msgs[-1])
    t.check(m is not None, f"{what}: a Received: header in front", msgs[-1][:400])
    if m is None:
        return None
    t.check(rest == body, f"{what}: body byte-exact after the trace header",
            f"{len(rest)} vs {len(body)} bytes; first difference at "
            f"{next((i for i, (a, b) in enumerate(zip(rest, body)) if a != b), min(len(rest), len(body)))}")
    for k, v in want.items():
        got = m.group(k)
        got = got.decode() if got is not None else None
        t.check(got == v, f"{what}: Received {k} = {v}", f"got {got!r}")
    return m


def make_body(subject, extra=b""):
    return (b"From: sender@remote.test\r\nTo: someone@example.test\r\n"
            b"Subject: " + subject.encode() + b"\r\nMessage-ID: <" +
            str(time.monotonic_ns()).encode() + b"@remote.test>\r\n\r\n"
            b"Hello.\r\n.leading dot\r\n..two dots\r\n. dot space\r\n"
            b"8-bit: \xc3\xa9\xe2\x82\xac\r\n" + extra + b"last line\r\n")


def dot_stuff(body):
    lines = body.split(b"\r\n")
    return b"\r\n".join(b"." + ln if ln.startswith(b".") else ln for ln in lines)


def run(t):
    swaks = mt.require_tool("swaks")
    cl = Cluster(t)
    # carol: over quota below; dave: disabled; erin: +tags and SIZE
    cl.ctl("user", "disable", addr("dave"))
    cl.ctl("alias", "set", f"team@{DOMAIN}", addr("alice"), addr("bob"), f"ghost@{DOMAIN}")
    p = cl.proxy

    # --- MX on 25 with smtplib -------------------------------------------------------
    s = smtplib.SMTP(mt.HOST, p.ports["smtp"], local_hostname="client.remote.test", timeout=20)
    code, msg = s.ehlo()
    feats = s.esmtp_features
    t.check(code == 250 and all(k in feats for k in ("pipelining", "size", "8bitmime",
                                                       "smtputf8", "chunking",
                                                       "enhancedstatuscodes", "starttls")),
            "EHLO on 25 lists PIPELINING SIZE 8BITMIME SMTPUTF8 CHUNKING "
            "ENHANCEDSTATUSCODES STARTTLS", msg)
    t.check(feats.get("size") == str(MAX_SIZE), "SIZE shows smtp.max_size", feats.get("size"))
    t.check("auth" not in feats, "no AUTH on the MX port", msg)
    t.check(msg.split(b"\n")[0].startswith(HOSTNAME.encode()), "EHLO reply names the host", msg)
    body = make_body("mx plain") + b"x" * 2000 + b"\r\n"
    before = len(cl.mailbox("alice"))
    refused = s.sendmail("sender@remote.test", [addr("alice")], body)
    t.check(refused == {}, "smtplib sendmail on 25 accepted", refused)
    s.quit()
    check_stored(t, cl, "alice", body, "MX delivery", before, helo="client.remote.test",
                 ip="127.0.0.1", by=HOSTNAME, proto="ESMTP", tlsv=None, **{"for": addr("alice")})

    # a larger body: 300 KiB of varied lines, dot lines included
    lines = []
    i = 0
    while sum(len(x) + 2 for x in lines) < 300 * 1024:
        lines.append((b"." if i % 11 == 0 else b"") + b"line %06d " % i + b"z" * (i % 200))
        i += 1
    big = b"Subject: big\r\n\r\n" + b"\r\n".join(lines) + b"\r\n"
    before = len(cl.mailbox("bob"))
    s = smtplib.SMTP(mt.HOST, p.ports["smtp"], local_hostname="client.remote.test", timeout=20)
    t.check(s.sendmail("", [addr("bob")], big) == {}, "300 KiB message with the null sender")
    s.quit()
    check_stored(t, cl, "bob", big, "300 KiB message", before)

    # --- submission 587: STARTTLS, then AUTH -----------------------------------------
    s = smtplib.SMTP(mt.HOST, p.ports["submission"], local_hostname="laptop.test", timeout=20)
    s.ehlo()
    t.check("starttls" in s.esmtp_features and "auth" not in s.esmtp_features,
            "587 before TLS: STARTTLS, no AUTH", s.esmtp_features)
    code, msg = s.docmd("AUTH", "PLAIN " + base64.b64encode(
        b"\0" + addr("alice").encode() + b"\0" + PW.encode()).decode())
    t.check(code == 530 and b"5.7.0" in msg, "AUTH before STARTTLS on 587: 530 5.7.0", msg)
    code, msg = s.docmd("MAIL", "FROM:<alice@example.test>")
    t.check(code == 530, "MAIL before STARTTLS on 587: 530", msg)
    s.starttls(context=cl.ctx)
    s.ehlo()
    t.check(s.esmtp_features.get("auth", "").split() == ["PLAIN", "LOGIN"] and
            "starttls" not in s.esmtp_features, "587 after TLS: AUTH PLAIN LOGIN",
            s.esmtp_features)
    code, msg = s.docmd("MAIL", "FROM:<alice@example.test>")
    t.check(code == 530 and b"5.7.0" in msg, "MAIL without AUTH on 587: 530 5.7.0", msg)
    try:
        s.login(addr("alice"), "wrong password")
        t.check(False, "wrong password refused")
    except smtplib.SMTPAuthenticationError as e:
        t.check(e.smtp_code == 535 and b"5.7.8" in e.smtp_error, "wrong password: 535 5.7.8",
                e.smtp_error)
    s.login(addr("alice"), PW, initial_response_ok=True)
    body = make_body("submission starttls plain")
    before = len(cl.mailbox("bob"))
    t.check(s.sendmail(addr("alice"), [addr("bob")], body) == {}, "sent via 587 STARTTLS+PLAIN")
    s.quit()
    m = check_stored(t, cl, "bob", body, "587 STARTTLS AUTH PLAIN", before, helo="laptop.test",
                     proto="ESMTPSA", tlsv="TLSv1.3")
    t.check(m is not None and m.group("cipher"), "Received names the TLS cipher")

    # swaks: STARTTLS + AUTH LOGIN
    body = make_body("swaks login")
    before = len(cl.mailbox("carol"))
    rc, out, err = mt.run([swaks, "--server", f"{mt.HOST}:{p.ports['submission']}", "--tls",
                           "--auth", "LOGIN", "--auth-user", addr("bob"), "--auth-password", PW,
                           "--from", addr("bob"), "--to", addr("carol"), "--helo", "swaks.test",
                           "--data", "-"], stdin=body, timeout=30)
    t.check(rc == 0 and "235 2.7.0" in out and "250 2.0.0" in out,
            "swaks STARTTLS + AUTH LOGIN on 587", out + err)
    # swaks sends the message as given (it ends in CRLF already)
    # swaks ends the data with CRLF "." CRLF after the body: one more CRLF
    check_stored(t, cl, "carol", body + b"\r\n", "swaks AUTH LOGIN", before, proto="ESMTPSA",
                 helo="swaks.test")

    # --- submissions 465: implicit TLS ------------------------------------------------
    s = smtplib.SMTP_SSL(mt.HOST, p.ports["submissions"], local_hostname="phone.test",
                         context=cl.ctx, timeout=20)
    s.ehlo()
    t.check("auth" in s.esmtp_features and "starttls" not in s.esmtp_features,
            "465: AUTH offered, no STARTTLS", s.esmtp_features)
    s.login(addr("bob"), PW)
    body = make_body("implicit tls")
    before = len(cl.mailbox("alice"))
    t.check(s.sendmail(addr("bob"), [addr("alice")], body) == {}, "sent via 465")
    s.quit()
    check_stored(t, cl, "alice", body, "465 implicit TLS", before, proto="ESMTPSA",
                 tlsv="TLSv1.3", helo="phone.test")

    body = make_body("swaks implicit")
    before = len(cl.mailbox("bob"))
    rc, out, err = mt.run([swaks, "--server", f"{mt.HOST}:{p.ports['submissions']}", "--tlsc",
                           "--auth", "PLAIN", "--auth-user", addr("alice"), "--auth-password",
                           PW, "--from", addr("alice"), "--to", addr("bob"), "--data", "-"],
                          stdin=body, timeout=30)
    t.check(rc == 0 and "250 2.0.0" in out, "swaks implicit TLS + AUTH PLAIN on 465", out + err)
    check_stored(t, cl, "bob", body + b"\r\n", "swaks 465", before)

    # swaks MX with STARTTLS on 25, two recipients: no "for" clause
    body = make_body("swaks mx tls")
    before_a, before_b = len(cl.mailbox("alice")), len(cl.mailbox("bob"))
    rc, out, err = mt.run([swaks, "--server", f"{mt.HOST}:{p.ports['smtp']}", "--tls",
                           "--from", "x@remote.test", "--to", f"{addr('alice')},{addr('bob')}",
                           "--pipeline", "--data", "-"], stdin=body, timeout=30)
    t.check(rc == 0 and "250 2.0.0" in out, "swaks STARTTLS on 25, pipelined, 2 recipients",
            out + err)
    m1 = check_stored(t, cl, "alice", body + b"\r\n", "two recipients (alice)", before_a,
                      proto="ESMTPS")
    m2 = check_stored(t, cl, "bob", body + b"\r\n", "two recipients (bob)", before_b,
                      proto="ESMTPS")
    t.check(m1 is not None and m2 is not None and m1.group("for") is None and
            m1.group("id") == m2.group("id"), "same id, no 'for' with two recipients")

    # --- PIPELINING: replies strictly in order ---------------------------------------
    c = cl.connect()
    t.check(c.reply()[0] == 220, "greeting")
    c.send(f"EHLO pipe.test\r\nMAIL FROM:<p@remote.test>\r\nRCPT TO:<nobody@{DOMAIN}>\r\n"
           f"RCPT TO:<{addr('alice')}>\r\nRCPT TO:<x@elsewhere.test>\r\n"
           f"RCPT TO:<{addr('dave')}>\r\nRCPT TO:<{addr('bob')}>\r\nVRFY alice\r\nDATA\r\n")
    got = c.replies(9)
    codes = [x[0] for x in got]
    t.check(codes == [250, 250, 550, 250, 554, 550, 250, 252, 354],
            "pipelined EHLO MAIL RCPT*5 VRFY DATA answered in order", got)
    t.check(b"5.1.1" in got[2][1] and b"5.7.1" in got[4][1] and b"5.2.1" in got[5][1],
            "unknown 5.1.1, relay 5.7.1, disabled 5.2.1", got)
    body = make_body("pipelined")
    before_a, before_b = len(cl.mailbox("alice")), len(cl.mailbox("bob"))
    c.send(dot_stuff(body) + b".\r\nNOOP\r\nRSET\r\nMAIL FROM:<q@remote.test>\r\n"
           b"RCPT TO:<team@example.test>\r\nDATA\r\n")
    got = c.replies(6)
    t.check([x[0] for x in got] == [250, 250, 250, 250, 250, 354],
            "message end, NOOP, RSET, MAIL, RCPT (alias), DATA in order", got)
    body2 = make_body("alias")
    c.send(dot_stuff(body2) + b".\r\nQUIT\r\n")
    got = c.replies(2)
    t.check([x[0] for x in got] == [250, 221], "alias message accepted, QUIT", got)
    c.close()
    msgs = cl.mailbox("alice")
    t.check(len(msgs) == before_a + 2 and split_trace(msgs[-2])[1] == body and
            split_trace(msgs[-1])[1] == body2, "alice got the pipelined and the alias message")
    msgs = cl.mailbox("bob")
    t.check(len(msgs) == before_b + 2 and split_trace(msgs[-1])[1] == body2,
            "bob (alias target) got it too")

    # +tag into a folder that exists, else INBOX
    im = imaplib.IMAP4(mt.HOST, cl.imap, timeout=20)
    im.login(addr("erin"), PW)
    im.create("news")
    im.logout()
    before = len(cl.mailbox("erin"))
    c = cl.connect()
    c.reply()
    c.send(f"EHLO t\r\nMAIL FROM:<>\r\nRCPT TO:<erin+news@{DOMAIN}>\r\n"
           f"RCPT TO:<erin@{DOMAIN}>\r\nDATA\r\n")
    got = c.replies(5)
    t.check([x[0] for x in got] == [250, 250, 250, 250, 354], "+tag recipients accepted", got)
    body = make_body("tagged")
    c.send(dot_stuff(body) + b".\r\n")
    t.check(c.reply()[0] == 250, "+tag message stored")
    c.close()
    t.check([split_trace(x)[1] for x in cl.mailbox("erin", "news")] == [body] and
            len(cl.mailbox("erin")) == before,
            "erin+news filed in news, one copy for user+tag and user")
    c = cl.connect()
    c.reply()
    c.send(f"EHLO t\r\nMAIL FROM:<>\r\nRCPT TO:<erin+nosuch@{DOMAIN}>\r\nDATA\r\n")
    got = c.replies(4)
    c.send(dot_stuff(body) + b".\r\n")
    t.check(c.reply()[0] == 250 and len(cl.mailbox("erin")) == before + 1,
            "user+tag without such a folder: INBOX", got)
    c.close()

    # --- BDAT ----------------------------------------------------------------------
    c = cl.connect()
    c.reply()
    part1 = b"Subject: chunked\r\n\r\nfirst chunk with a lone\nLF and a dot line:\r\n.\r\n"
    part2 = b"second\r\n.\r\n"
    part3 = b"end\r\n"
    before = len(cl.mailbox("alice"))
    c.send(f"EHLO bdat.test\r\nMAIL FROM:<b@remote.test> BODY=8BITMIME\r\n"
           f"RCPT TO:<{addr('alice')}>\r\n".encode() +
           b"BDAT %d\r\n" % len(part1) + part1 + b"BDAT %d\r\n" % len(part2) + part2 +
           b"BDAT 0\r\n" + b"BDAT %d LAST\r\n" % len(part3) + part3)
    got = c.replies(7)
    t.check([x[0] for x in got] == [250, 250, 250, 250, 250, 250, 250] and
            b"2.0.0 Ok" in got[6][1], "BDAT chunks (one empty) and LAST, pipelined", got)
    check_stored(t, cl, "alice", part1 + part2 + part3, "BDAT message (binary-clean)", before)
    # BDAT 0 LAST alone ends a message; BDAT without MAIL is read and refused
    before = len(cl.mailbox("alice"))
    c.send(f"MAIL FROM:<b@remote.test>\r\nRCPT TO:<{addr('alice')}>\r\n".encode() +
           b"BDAT 7\r\nabc\r\nd\rBDAT 0 LAST\r\nBDAT 6\r\nRSET\r\nNOOP\r\n")
    got = c.replies(6)
    t.check([x[0] for x in got] == [250, 250, 250, 250, 503, 250],
            "BDAT 7, BDAT 0 LAST, then BDAT without MAIL swallows its 6 bytes", got)
    check_stored(t, cl, "alice", b"abc\r\nd\r", "BDAT 0 LAST", before)
    # DATA after BDAT in one transaction is refused
    c.send(f"MAIL FROM:<b@remote.test>\r\nRCPT TO:<{addr('alice')}>\r\nBDAT 3\r\nabcDATA\r\n"
           f"RSET\r\n")
    got = c.replies(5)
    t.check([x[0] for x in got] == [250, 250, 250, 503, 250], "DATA after BDAT: 503", got)
    c.close()

    # --- SIZE ----------------------------------------------------------------------
    c = cl.connect()
    c.reply()
    c.cmd("EHLO size.test")
    code, txt = c.cmd(f"MAIL FROM:<s@remote.test> SIZE={MAX_SIZE + 1}")
    t.check(code == 552 and b"5.3.4" in txt, "MAIL SIZE over the limit: 552 5.3.4", txt)
    code, txt = c.cmd(f"MAIL FROM:<s@remote.test> SIZE={MAX_SIZE}")
    t.check(code == 250, "MAIL SIZE at the limit: 250", txt)
    c.cmd(f"RCPT TO:<{addr('bob')}>")
    before = len(cl.mailbox("bob"))
    rss0 = rss_kb(p.pid)
    code, txt = c.cmd("DATA")
    t.check(code == 354, "DATA for an over-size message", txt)
    chunk = (b"y" * 998 + b"\r\n") * 1024
    total = 0
    while total < 40 << 20:  # 40 MiB against a 2 MiB limit
        c.send(chunk)
        total += len(chunk)
    code, txt = c.cmd(".", timeout=60)
    t.check(code == 552 and b"5.3.4" in txt, "over-size DATA answered 552 5.3.4 after the dot",
            txt)
    rss1 = rss_kb(p.pid)
    t.check(rss1 - rss0 < 12 * 1024, "proxy RSS did not grow by the message (40 MiB sent)",
            f"{rss0} KiB -> {rss1} KiB")
    code, txt = c.cmd("NOOP")
    t.check(code == 250, "session in sync after the over-size message", txt)
    # BDAT over the limit: the chunk that crosses it and every later one 552
    c.cmd("MAIL FROM:<s@remote.test>")
    c.cmd(f"RCPT TO:<{addr('bob')}>")
    half = b"z" * (MAX_SIZE // 2 + 10)
    c.send(b"BDAT %d\r\n" % len(half) + half + b"BDAT %d\r\n" % len(half) + half +
           b"BDAT 3 LAST\r\nabc")
    got = c.replies(3, timeout=30)
    t.check([x[0] for x in got] == [250, 552, 552], "over-size BDAT: 552 from the crossing "
            "chunk to LAST", got)
    code, txt = c.cmd("NOOP")
    t.check(code == 250, "session in sync after the over-size BDAT", txt)
    c.cmd("QUIT")
    c.close()
    t.check(len(cl.mailbox("bob")) == before, "nothing stored for over-size messages")

    # --- RCPT checks: quota, relay, VRFY --------------------------------------------
    # carol holds more than her new 4000-byte quota
    filler = b"Subject: filler\r\n\r\n" + b"f" * 5000 + b"\r\n"
    cl.ctl("deliver", addr("carol"), stdin=filler)
    cl.ctl("user", "quota", addr("carol"), "4000")
    c = cl.connect()
    c.reply()
    c.cmd("EHLO quota.test")
    c.cmd("MAIL FROM:<q@remote.test>")
    code, txt = c.cmd(f"RCPT TO:<{addr('carol')}>")
    t.check(code == 452 and b"4.2.2" in txt, "RCPT to a full mailbox: 452 4.2.2", txt)
    c.cmd("RSET")
    code, txt = c.cmd("MAIL FROM:<q@remote.test> SIZE=10000")
    code, txt = c.cmd(f"RCPT TO:<{addr('erin')}>")
    t.check(code == 250, "RCPT with SIZE to an unlimited mailbox", txt)
    cl.ctl("user", "quota", addr("erin"), "5000")
    code, txt = c.cmd(f"RCPT TO:<{addr('erin')}>")
    t.check(code == 552 and b"5.2.2" in txt, "SIZE larger than the whole quota: 552 5.2.2", txt)
    cl.ctl("user", "quota", addr("erin"), "0")
    code, txt = c.cmd("RCPT TO:<Nobody@Example.TEST>")
    t.check(code == 550 and b"5.1.1" in txt, "unknown user: 550 5.1.1", txt)
    code, txt = c.cmd("RCPT TO:<victim@gmail.example>")
    t.check(code == 554 and b"5.7.1" in txt, "unauthenticated relay: 554 5.7.1", txt)
    code, txt = c.cmd("VRFY alice")
    t.check(code == 252, "VRFY answers 252", txt)
    code, txt = c.cmd("EXPN team")
    t.check(code == 502, "EXPN answers 502", txt)
    code, txt = c.cmd("DATA")
    t.check(code == 354, "DATA with one good recipient (erin)", txt)
    c.send(b"Subject: q\r\n\r\nok\r\n.\r\n")
    t.check(c.reply()[0] == 250, "message to erin stored")
    c.cmd("QUIT")
    c.close()

    s = smtplib.SMTP_SSL(mt.HOST, p.ports["submissions"], context=cl.ctx, timeout=20)
    s.login(addr("alice"), PW)
    try:
        s.sendmail(addr("alice"), ["friend@outside.example"], b"Subject: x\r\n\r\nx\r\n")
        t.check(False, "authenticated relay refused")
    except smtplib.SMTPRecipientsRefused as e:
        code, txt = e.recipients["friend@outside.example"]
        t.check(code == 550 and b"5.7.1" in txt and b"not available" in txt,
                "authenticated relay: 550 5.7.1 relaying not available yet", txt)
    s.quit()

    # logs and metrics
    t.check(p.log_count("event=message") >= 10 and p.log_count("result=accepted") >= 10,
            "one log line per message", p.log_tail(5))
    text = urllib.request.urlopen(f"http://127.0.0.1:{p.metrics}/metrics", timeout=10).read()
    vals = {}
    for ln in text.decode().splitlines():
        if ln.startswith("smtp_"):
            k, _, v = ln.rpartition(" ")
            vals[k] = int(float(v))
    t.check(vals.get('smtp_messages_total{result="accepted"}', 0) >= 10 and
            vals.get('smtp_messages_total{result="rejected"}', 0) >= 2 and
            vals.get('smtp_recipients_total{result="rejected"}', 0) >= 5 and
            vals.get('smtp_recipients_total{result="tempfail"}', 0) >= 1 and
            vals.get("smtp_relay_denied_total", 0) >= 2 and
            vals.get('smtp_auth_total{result="failed"}', 0) >= 1 and
            vals.get("smtp_message_bytes_total", 0) > 300 * 1024,
            "Prometheus counters for messages, recipients, relay and AUTH", vals)


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


if __name__ == "__main__":
    mt.main(run, name="smtp", budget_s=150)
