"""IMAP COMPRESS=DEFLATE (RFC 4978) on a real mailnode, from a Python client
that compresses with zlib by hand (raw deflate, wbits -15) after the tagged
OK: the capability, state and argument checks, NO [COMPRESSIONACTIVE] for a
second COMPRESS, a large message fetched byte-exact through the compressed
stream, IDLE woken by a delivery while compressed, a command pipelined
behind COMPRESS, a corrupt stream and a deflate bomb (the node closes the
connection, stays up and its memory stays put), the compression counters
on /metrics, and COMPRESS through mailproxy over IMAPS (compression inside
TLS end to end)."""

import os
import re
import socket
import ssl
import time
import urllib.request
import zlib

import mailtest as mt

USER, PW = "z@example.test", "pw"


def free_port():
    with socket.socket() as s:
        s.bind((mt.HOST, 0))
        return s.getsockname()[1]


class ZClient:
    """An IMAP connection that reads lines and literals, plain until
    start_compress() sees the tagged OK, then through zlib both ways."""

    def __init__(self, port, sock=None):
        self.s = sock or mt.connect(port)
        self.raw = b""      # received, not yet decoded (plain mode)
        self.buf = b""      # decoded, not yet consumed
        self.c = self.d = None
        self.wire_in = 0    # bytes read from the socket
        self.eof = False
        self.greeting = self.line()

    def send(self, data, sync=True):
        if self.c:
            data = self.c.compress(data) + (self.c.flush(zlib.Z_SYNC_FLUSH) if sync else b"")
        self.s.sendall(data)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0 or self.eof:
            return False
        self.s.settimeout(left)
        try:
            chunk = self.s.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            return False
        except (ConnectionResetError, ssl.SSLError):
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.wire_in += len(chunk)
        if self.d:
            self.buf += self.d.decompress(chunk)
        else:
            self.buf += chunk
        return True

    def line(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while b"\r\n" not in self.buf:
            if not self._fill(deadline):
                return b""
        i = self.buf.index(b"\r\n") + 2
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def take(self, n, timeout=20.0):
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            if not self._fill(deadline):
                break
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def until_tag(self, tag, timeout=10.0):
        """Lines (literals inlined) up to and including the tagged one."""
        lines = []
        while True:
            ln = self.line(timeout)
            if not ln:
                return lines
            m = re.search(rb"\{(\d+)\}\r\n$", ln)
            if m:
                ln += self.take(int(m.group(1)), timeout)
                ln += self.line(timeout)
            lines.append(ln)
            if ln.startswith(tag + b" "):
                return lines

    def cmd(self, tag, text, timeout=10.0):
        self.send(tag + b" " + text + b"\r\n")
        return self.until_tag(tag, timeout)

    def start_compress(self, tag=b"z1"):
        """COMPRESS DEFLATE; on the tagged OK both directions switch.
        Bytes after the OK in the same read are already compressed."""
        self.s.sendall(tag + b" COMPRESS DEFLATE\r\n")
        resp = self.until_tag(tag)
        if resp and resp[-1].startswith(tag + b" OK"):
            self.c = zlib.compressobj(6, zlib.DEFLATED, -15)
            self.d = zlib.decompressobj(-15)
            rest, self.buf = self.buf, b""
            self.buf = self.d.decompress(rest)
        return resp

    def closed(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while not self.eof and time.monotonic() < deadline:
            self._fill(deadline)
        return self.eof

    def close(self):
        mt.close_quietly(self.s)


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    return 0


def metric(port, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    m = re.search(rf"^{re.escape(name)} (\d+)$", text, re.M)
    return int(m.group(1)) if m else None


def wait_metric(port, name, want, timeout=5.0):
    deadline = time.monotonic() + timeout
    v = None
    while time.monotonic() < deadline:
        v = metric(port, name)
        if v == want:
            return v
        time.sleep(0.2)
    return v


def run(t):
    node, ctl = mt.binary("mailnode"), mt.binary("mailctl")
    rport, iport, mport = free_port(), free_port(), free_port()
    n = t.daemon("node", [node, "--set", f"rpc.listen=127.0.0.1:{rport}",
                          "--set", f"imap.listen=127.0.0.1:{iport}", "--set", "shards.count=4",
                          "--set", f"metrics.listen=127.0.0.1:{mport}",
                          "--set", f"data.dir={t.scratch / 'data'}", "--set", "threads=1"])
    n.wait_tcp(rport, timeout=20)
    n.wait_tcp(iport, timeout=20)
    n.wait_tcp(mport, timeout=20)
    ctlnode = ["--node", f"127.0.0.1:{rport}"]
    rc, out, err = mt.run([ctl] + ctlnode + ["user", "add", USER, "--password", PW])
    t.require(rc == 0, "user created", out + err)

    def deliver(data):
        rc, out, err = mt.run([ctl] + ctlnode + ["deliver", USER], stdin=data, timeout=30)
        t.require(rc == 0 and "250" in out, "delivered", out + err)

    # Text that compresses well and a base64 attachment that does not.
    text = b"".join(b"line %07d of the big message, " % i + b"lorem ipsum " * 4 + b"\r\n"
                    for i in range(40000))
    attach = b"\r\n".join(mt_b64(os.urandom(768 * 1024)))
    big = (b"From: big@example.test\r\nSubject: big\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\n"
           b"Content-Type: text/plain\r\n\r\n" + text + b"--b1\r\n"
           b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + attach + b"\r\n--b1--\r\n")
    deliver(b"From: a@example.test\r\nSubject: small\r\n\r\nhello\r\n")
    deliver(big)

    # --- capability and state -------------------------------------------------
    z = ZClient(iport)
    t.check(b"COMPRESS=DEFLATE" in z.greeting, "greeting advertises COMPRESS=DEFLATE", z.greeting)
    resp = z.cmd(b"a0", b"COMPRESS DEFLATE")
    t.check(resp and resp[-1].startswith(b"a0 BAD"), "COMPRESS before login is BAD", resp)
    resp = z.cmd(b"a1", b"LOGIN " + USER.encode() + b" " + PW.encode())
    t.require(resp and resp[-1].startswith(b"a1 OK") and b"COMPRESS=DEFLATE" in resp[-1],
              "login (capabilities list COMPRESS=DEFLATE)", resp)
    resp = z.cmd(b"a2", b"COMPRESS GZIP")
    t.check(resp and resp[-1].startswith(b"a2 BAD"), "unknown mechanism is BAD", resp)
    resp = z.cmd(b"a3", b"COMPRESS")
    t.check(resp and resp[-1].startswith(b"a3 BAD"), "COMPRESS without a mechanism is BAD", resp)
    resp = z.cmd(b"a4", b"NOOP")
    t.check(resp == [b"a4 OK NOOP completed\r\n"], "still plain after the refusals", resp)

    # --- compressed session ----------------------------------------------------------
    resp = z.start_compress(b"a5")
    t.require(resp and resp[-1].startswith(b"a5 OK"), "COMPRESS DEFLATE: tagged OK in plain",
              resp)
    resp = z.cmd(b"a6", b"compress deflate")
    t.check(resp == [b"a6 NO [COMPRESSIONACTIVE] DEFLATE already active\r\n"],
            "second COMPRESS: NO [COMPRESSIONACTIVE], answered compressed", resp)
    resp = z.cmd(b"a7", b"SELECT INBOX")
    t.check(resp and resp[-1].startswith(b"a7 OK") and b"* 2 EXISTS\r\n" in resp,
            "SELECT through the compressed stream", resp)
    wire0 = z.wire_in
    t0 = time.monotonic()
    resp = z.cmd(b"a8", b"FETCH 2 (BODY.PEEK[])", timeout=60)
    secs = time.monotonic() - t0
    m = re.match(rb"\* 2 FETCH \(BODY\[\] \{(\d+)\}\r\n", resp[0] if resp else b"")
    body = resp[0][m.end():m.end() + int(m.group(1))] if m else b""
    wire = z.wire_in - wire0
    print(f"note: FETCH of {len(big)} bytes took {wire} bytes on the wire "
          f"({100.0 * wire / len(big):.0f}%) in {secs * 1000:.0f} ms")
    t.check(resp and resp[-1].startswith(b"a8 OK") and body == big,
            f"{len(big)}-byte message fetched byte-exact through DEFLATE",
            (len(body), resp[-1] if resp else None))
    t.check(wire < len(big) * 0.6, "the FETCH was compressed on the wire", wire)
    resp = z.cmd(b"a9", b"FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    t.check(resp and b"Subject: small" in resp[0] and resp[-1].startswith(b"a9 OK"),
            "small FETCH after the large one", resp)

    # APPEND with a synchronizing literal: the "+" continuation must reach
    # the client through the compressed stream before it sends the data.
    msg = b"From: me@example.test\r\nSubject: appended compressed\r\n\r\n" + text[:1 << 20]
    z.send(b"ap1 APPEND INBOX {%d}\r\n" % len(msg))
    cont = z.line()
    z.send(msg + b"\r\n")
    resp = z.until_tag(b"ap1", timeout=30)
    t.check(cont.startswith(b"+ ") and resp and resp[-1].startswith(b"ap1 OK") and
            b"APPENDUID" in resp[-1], "APPEND with a synchronizing literal while compressed",
            (cont, resp))
    resp = z.cmd(b"ap2", b"FETCH 3 (BODY.PEEK[])", timeout=30)
    got = b"".join(resp[:1])
    t.check(resp and resp[-1].startswith(b"ap2 OK") and got.endswith(msg + b")\r\n"),
            "the appended message fetched back byte-exact", (len(got), resp[-1:]))

    # IDLE: a delivery wakes the compressed session.
    z.send(b"i1 IDLE\r\n")
    cont = z.line()
    deliver(b"From: b@example.test\r\nSubject: while idle\r\n\r\nwake up\r\n")
    pushed = z.line(timeout=10)
    z.send(b"DONE\r\n")
    done = z.until_tag(b"i1")
    t.check(cont.startswith(b"+ ") and pushed == b"* 4 EXISTS\r\n" and
            done and done[-1].startswith(b"i1 OK"),
            "IDLE woken by a delivery while compressed", (cont, pushed, done))
    resp = z.cmd(b"a10", b"LOGOUT")
    t.check(resp and resp[0].startswith(b"* BYE") and resp[-1].startswith(b"a10 OK") and
            z.closed(), "LOGOUT: BYE and OK arrive compressed, then the close", resp)
    z.close()

    # --- a command pipelined right behind COMPRESS ---------------------------------------
    z = ZClient(iport)
    z.cmd(b"p0", b"LOGIN " + USER.encode() + b" " + PW.encode())
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    z.s.sendall(b"p1 COMPRESS DEFLATE\r\n" + c.compress(b"p2 NOOP\r\n") +
                c.flush(zlib.Z_SYNC_FLUSH))
    ok = z.line()
    z.c, z.d = c, zlib.decompressobj(-15)
    rest, z.buf = z.buf, b""
    z.buf = z.d.decompress(rest)
    resp = z.until_tag(b"p2")
    t.check(ok.startswith(b"p1 OK") and resp == [b"p2 OK NOOP completed\r\n"],
            "bytes pipelined after COMPRESS are inflated", (ok, resp))
    z.close()

    # --- a corrupt stream -------------------------------------------------------------
    z = ZClient(iport)
    z.cmd(b"c0", b"LOGIN " + USER.encode() + b" " + PW.encode())
    z.start_compress(b"c1")
    z.s.sendall(z.c.compress(b"c2 NOOP\r\n") + z.c.flush(zlib.Z_SYNC_FLUSH) + b"\xff" * 64)
    resp = z.until_tag(b"c2")
    t.check(resp == [b"c2 OK NOOP completed\r\n"] and z.closed(),
            "corrupt stream: the reply before it arrives, then the node closes", resp)
    z.close()
    t.check(n.wait_log("inflate_error", timeout=5), "the node logs inflate_error")

    # --- a deflate bomb: one endless line ---------------------------------------------------
    z = ZClient(iport)
    z.cmd(b"b0", b"LOGIN " + USER.encode() + b" " + PW.encode())
    z.start_compress(b"b1")
    rss0 = rss_kb(n.pid)
    chunk = z.c.compress(b"b2 NOOP " + b"a" * (1 << 20))
    sent = 0
    try:
        z.s.sendall(chunk)
        piece = z.c.compress(b"a" * (1 << 20)) + z.c.flush(zlib.Z_SYNC_FLUSH)
        for _ in range(1023):  # 1 GiB of plaintext, about 1 MiB compressed
            z.s.sendall(piece)
            sent += 1
    except (BrokenPipeError, ConnectionResetError):
        pass
    rest = []
    while not z.eof:
        ln = z.line(timeout=5)
        if not ln:
            break
        rest.append(ln)
    rss1 = rss_kb(n.pid)
    print(f"note: bomb: {sent} MiB sent before the close, node RSS {rss0} -> {rss1} KiB")
    t.check(z.closed() and any(ln.startswith(b"* BYE") for ln in rest),
            "deflate bomb: the over-long line ends the session with BYE", rest[-3:])
    t.check(rss1 - rss0 < 32 * 1024, "node memory did not follow the inflated size",
            (rss0, rss1))
    z.close()
    m = ZClient(iport)
    resp = m.cmd(b"n1", b"NOOP")
    t.check(n.alive() and resp == [b"n1 OK NOOP completed\r\n"], "node still serving", resp)
    m.close()

    # --- through the proxy over IMAPS: the node compresses inside the TLS
    # the proxy terminates ------------------------------------------------------------------
    pki = mt.PKI(t.scratch / "pki")
    ca = pki.ca("Compress Test CA")
    leaf = pki.leaf("mail", "mail.example.test", ["mail.example.test"], ca)
    imaps = free_port()
    p = t.daemon("proxy", [mt.binary("mailproxy"), "--set", f"imaps.listen=127.0.0.1:{imaps}",
                           "--set", f"route.node=127.0.0.1:{rport}", "--set", "route.shards=4",
                           "--set", f"tls.cert={leaf.chain}", "--set", f"tls.key={leaf.key}"])
    p.wait_tcp(imaps, timeout=20)
    ctx = mt.tls_client_context(ca.cert)
    z = ZClient(imaps, mt.tls_connect(imaps, ca.cert, "mail.example.test", ctx=ctx))
    resp = z.cmd(b"x1", b"LOGIN " + USER.encode() + b" " + PW.encode())
    t.check(resp and resp[-1].startswith(b"x1 OK") and b"COMPRESS=DEFLATE" in resp[-1],
            "through the proxy: the node's capabilities list COMPRESS=DEFLATE", resp)
    resp = z.start_compress(b"x2")
    t.check(resp and resp[-1].startswith(b"x2 OK"), "COMPRESS through the proxy", resp)
    resp = z.cmd(b"x3", b"EXAMINE INBOX")
    t.check(resp and resp[-1].startswith(b"x3 OK"), "EXAMINE compressed inside TLS", resp)
    resp = z.cmd(b"x4", b"FETCH 2 (BODY.PEEK[])", timeout=60)
    m = re.match(rb"\* 2 FETCH \(BODY\[\] \{(\d+)\}\r\n", resp[0] if resp else b"")
    body = resp[0][m.end():m.end() + int(m.group(1))] if m else b""
    t.check(resp and resp[-1].startswith(b"x4 OK") and body == big,
            "large message byte-exact through proxy, TLS and DEFLATE", len(body))
    # LOGOUT: the node's BYE and OK arrive compressed, then the close; the
    # proxy must not add plaintext of its own to the deflate stream.
    resp = z.cmd(b"x5", b"LOGOUT")
    t.check(resp and resp[-1].startswith(b"x5 OK") and any(ln.startswith(b"* BYE") for ln in resp),
            "LOGOUT through the proxy with COMPRESS", resp)
    t.check(z.closed(), "closed after LOGOUT")
    t.check(b"connection lost" not in z.buf and z.d.unused_data == b"",
            "no plaintext from the proxy inside the compressed stream", z.buf[-200:])
    z.close()

    # --- counters -----------------------------------------------------------------------
    t.check(wait_metric(mport, "mail_compress_started_total", 5) == 5,
            "mail_compress_started_total counts the sessions", metric(mport, "mail_compress_started_total"))
    t.check(wait_metric(mport, "mail_compress_errors_total", 1) == 1,
            "mail_compress_errors_total counts the corrupt stream",
            metric(mport, "mail_compress_errors_total"))
    t.check(wait_metric(mport, "mail_compress_active", 0) == 0, "no session compressing now",
            metric(mport, "mail_compress_active"))


def mt_b64(data):
    import base64
    enc = base64.b64encode(data)
    return [enc[i:i + 76] for i in range(0, len(enc), 76)]


if __name__ == "__main__":
    mt.main(run, name="imap_compress", budget_s=120)
