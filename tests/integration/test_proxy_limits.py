"""Limits at the proxy with a real Redis shared by two mailproxy processes
and a real mailnode: open connections per client address (several
127.0.0.x sources) and new connections per minute, shared by both proxies;
failed logins answered after growing delays, then a ban (also through the
other proxy) answered like a wrong password without asking the node; a
user ban; open IMAP sessions per user; `mailctl sessions` listing sessions
with their node and forgetting them after logout; Redis killed: logins and
sessions go on with in-process limits (log line, metric); Redis back: the
limits are shared again (a ban through proxy A refuses a login at B) and
the sessions opened meanwhile are registered again. SMTP: connections per
address (421), a banned address' AUTH (535) and messages per day of an
authenticated sender (450 4.7.1 at MAIL FROM, shared by both proxies)."""

import base64

import socket
import time
import urllib.request

import mailtest as mt

PW = "secret1"
USERS = ["pat@example.test", "sam@example.test", "kim@example.test"]
SHARDS = 8


def free_port():
    with socket.socket() as s:
        s.bind((mt.HOST, 0))
        return s.getsockname()[1]


class Lines:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def line(self, timeout=10):
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while b"\r\n" not in self.buf and time.monotonic() < deadline:
            try:
                chunk = self.sock.recv(65536)
            except (socket.timeout, OSError):
                break
            if not chunk:
                break
            self.buf += chunk
        i = self.buf.find(b"\r\n")
        if i < 0:
            out, self.buf = self.buf, b""
            return out
        out, self.buf = self.buf[:i + 2], self.buf[i + 2:]
        return out

    def tagged(self, tag, timeout=10):
        out = b""
        while True:
            ln = self.line(timeout)
            out += ln
            if not ln or ln.startswith(tag + b" "):
                return out

    def send(self, data):
        self.sock.sendall(data)

    def close(self):
        mt.close_quietly(self.sock)


def dial(port, src):
    s = socket.create_connection((mt.HOST, port), timeout=10, source_address=(src, 0))
    return Lines(s)


def greet(port, src):
    """A connection and its first line."""
    c = dial(port, src)
    return c, c.line()


def imap_login(port, src, user, pw=PW, tag=b"a1"):
    """(connection, greeting, login reply, seconds the reply took)."""
    c, g = greet(port, src)
    t0 = time.monotonic()
    c.send(tag + b" LOGIN " + user.encode() + b" " + pw.encode() + b"\r\n")
    r = c.tagged(tag, timeout=20)
    return c, g, r, time.monotonic() - t0


def logout(c):
    """LOGOUT and wait for the proxy to close (so it has counted the close)."""
    c.send(b"z LOGOUT\r\n")
    c.tagged(b"z")
    mt.wait_closed(c.sock)
    c.close()


def smtp_reply(c, timeout=10):
    """(code, all lines) of one SMTP reply."""
    out = b""
    while True:
        ln = c.line(timeout)
        out += ln
        if len(ln) < 4 or ln[3:4] != b"-":
            return (int(ln[:3]) if ln[:3].isdigit() else 0), out


def smtp_cmd(c, line):
    c.send(line.encode() + b"\r\n")
    return smtp_reply(c)


def smtp_auth(port, src, user, pw=PW):
    c = dial(port, src)
    smtp_reply(c)
    smtp_cmd(c, "EHLO client.test")
    plain = base64.b64encode(b"\0" + user.encode() + b"\0" + pw.encode()).decode()
    return c, smtp_cmd(c, "AUTH PLAIN " + plain)


def redis_cmd(port, *args):
    """One command over RESP; returns the reply (int, bytes, None or list)."""
    with socket.create_connection((mt.HOST, port), timeout=5) as s:
        req = b"*%d\r\n" % len(args)
        for a in args:
            a = a.encode() if isinstance(a, str) else a
            req += b"$%d\r\n%s\r\n" % (len(a), a)
        s.sendall(req)
        f = s.makefile("rb")
        return _resp(f)


def _resp(f):
    line = f.readline()
    kind, rest = line[:1], line[1:-2]
    if kind in (b"+", b"-"):
        return rest
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2]
    if kind == b"*":
        return [_resp(f) for _ in range(int(rest))]
    raise RuntimeError(f"bad RESP {line!r}")


def metric(mport, name):
    body = urllib.request.urlopen(f"http://{mt.HOST}:{mport}/metrics", timeout=5).read()
    for ln in body.decode().splitlines():
        if ln.startswith(name + " "):
            return float(ln.split()[1])
    return None


def wait_for(pred, timeout=10.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def run(t):
    redis_server = mt.require_tool("redis-server")
    node, proxy, ctl = mt.binary("mailnode"), mt.binary("mailproxy"), mt.binary("mailctl")

    rport = free_port()
    rdir = t.scratch / "redis"
    rdir.mkdir()
    redis_argv = [redis_server, "--port", rport, "--bind", mt.HOST, "--save", "",
                  "--appendonly", "no", "--dir", rdir]
    redis = t.daemon("redis", redis_argv)
    redis.wait_tcp(rport)
    url = f"redis://127.0.0.1:{rport}/0"

    rpc = free_port()
    n = t.daemon("node", [node, "--set", "node.id=n1", "--set", f"rpc.listen=127.0.0.1:{rpc}",
                          "--set", f"data.dir={t.scratch / 'data'}", "--set",
                          f"shards.count={SHARDS}", "--set", f"redis.url={url}", "--set",
                          "heartbeat.interval=200ms"])
    n.wait_tcp(rpc)
    naddr = f"127.0.0.1:{rpc}"
    for u in USERS:
        rc, out, err = mt.run([ctl, "--node", naddr, "user", "add", u, "--password", PW],
                              timeout=30)
        t.require(rc == 0, f"user add {u}", out + err)
    rc, out, err = mt.run([ctl, "--node", naddr, "domain", "add", "example.test"], timeout=30)
    t.require(rc == 0, "domain add", out + err)

    limits = ["limits.conn_per_ip=3", "limits.conn_rate=12", "limits.auth_fail_ip=4",
              "limits.auth_fail_user=5", "limits.auth_delay=200ms", "limits.auth_delay_max=800ms",
              "limits.auth_ban=10m", "limits.imap_sessions=2", "limits.pop3_sessions=1",
              "limits.refresh=1s", "limits.messages_per_day=2"]

    def start_proxy(pid):
        imap, pop3, mport, smtp, sub = (free_port() for _ in range(5))
        argv = [proxy, "--set", f"proxy.id={pid}", "--set", f"redis.url={url}",
                "--set", f"imap.listen=127.0.0.1:{imap}", "--set", f"pop3.listen=127.0.0.1:{pop3}",
                "--set", f"smtp.listen=127.0.0.1:{smtp}",
                "--set", f"submission.listen=127.0.0.1:{sub}",
                "--set", "auth.plaintext=true", "--set", f"metrics.listen=127.0.0.1:{mport}",
                "--set", "route.refresh=200ms", "--set", "heartbeat.interval=200ms",
                "--set", "threads=2"]
        for kv in limits:
            argv += ["--set", kv]
        d = t.daemon(pid, argv)
        for port in (imap, pop3, mport, smtp, sub):
            d.wait_tcp(port)
        d.smtp, d.sub = smtp, sub
        return d, imap, pop3, mport

    pa, imap_a, pop3_a, mport_a = start_proxy("pA")
    pb, imap_b, pop3_b, mport_b = start_proxy("pB")
    # Both route by the node's membership in Redis.
    t.require(pa.wait_log("event=map", timeout=10) and pb.wait_log("event=map", timeout=10),
              "both proxies know the node", pa.log_tail())

    # --- open connections per address, shared by both proxies ----------------
    # (the proxies' own wait_tcp probes came from 127.0.0.1: use other sources)
    src = "127.0.0.2"
    conns = []
    for i in range(3):
        c, g = greet(imap_a if i < 2 else imap_b, src)
        conns.append(c)
        t.check(g.startswith(b"* OK [CAPABILITY"), f"connection {i + 1} from {src} greeted", g)
    c, g = greet(imap_b, src)
    t.check(g == b"* BYE [UNAVAILABLE] too many connections\r\n" and mt.wait_closed(c.sock),
            "4th connection from one address (at the other proxy): BYE and close", g)
    c.close()
    c, g = greet(imap_a, src)
    t.check(g.startswith(b"* BYE [UNAVAILABLE]"), "and at the first proxy too", g)
    c.close()
    t.check(pb.wait_log("event=refused reason=conn_per_ip service=imap ip=127.0.0.2"),
            "refusal logged", pb.log_tail())
    c, g = greet(imap_a, "127.0.0.3")
    t.check(g.startswith(b"* OK"), "another address is not limited", g)
    c.close()
    c, g = greet(pop3_a, src)
    t.check(g.startswith(b"+OK"), "POP3 counts apart from IMAP", g)
    c.close()
    logout(conns.pop(0))
    # the proxy counts the close right after closing: a few tries at most
    for _ in range(5):
        c, g = greet(imap_b, src)
        c.close()
        if g.startswith(b"* OK"):
            break
        time.sleep(0.2)
    t.check(g.startswith(b"* OK"), "a closed connection makes room for a new one", g)
    for c in conns:
        c.close()

    # POP3's refusal
    pconns = [greet(pop3_b, "127.0.0.4")[0] for _ in range(3)]
    c, g = greet(pop3_b, "127.0.0.4")
    t.check(g == b"-ERR [SYS/TEMP] too many connections, try again later\r\n" and
            mt.wait_closed(c.sock), "POP3: -ERR [SYS/TEMP] and close", g)
    c.close()
    for c in pconns:
        c.close()

    # --- new connections per minute (12), across both proxies ----------------
    src = "127.0.0.5"
    ok = 0
    for i in range(12):
        c, g = greet(imap_a if i % 2 else imap_b, src)
        ok += g.startswith(b"* OK")
        logout(c)
    c, g = greet(imap_a, src)
    t.check(ok == 12 and g.startswith(b"* BYE [UNAVAILABLE] too many connections"),
            "13th new connection within a minute refused", (ok, g))
    c.close()
    t.check(pa.wait_log("reason=conn_rate service=imap ip=127.0.0.5"), "rate refusal logged")

    # --- failed logins: growing delays, then a ban --------------------------------
    src, user = "127.0.0.6", USERS[0]
    c, g = greet(imap_a, src)
    times = []
    for i in range(3):
        tag = b"f%d" % i
        t0 = time.monotonic()
        c.send(tag + b" LOGIN " + user.encode() + b" wrong\r\n")
        r = c.tagged(tag, timeout=20)
        times.append(time.monotonic() - t0)
        t.check(r.startswith(tag + b" NO [AUTHENTICATIONFAILED]"), f"failure {i + 1}: NO", r)
    r = c.line()
    t.check(r == b"* BYE too many authentication failures\r\n" and mt.wait_closed(c.sock),
            "3 failures on one connection: BYE", r)
    c.close()
    t.check(times[1] >= 0.19 and times[2] >= 0.39,
            "2nd and 3rd failure answers wait at least 200 / 400 ms", times)
    t.check(pa.wait_log(f"ip={src} user={user} failures=3 delay_ms=400 counted=redis"),
            "the 3rd failure earned 400 ms (log)", pa.log_tail())
    c, g, r, dt = imap_login(imap_a, src, user, "wrong")
    t.check(r.startswith(b"a1 NO [AUTHENTICATIONFAILED]") and dt >= 0.79,
            "4th failure: NO after at least 800 ms (the cap)", (r, dt))
    c.close()
    t.check(pa.wait_log(f"event=ban scope=ip ip={src}"), "the 4th failure starts a ban (log)")
    logins_before = pa.log_count("event=login ")
    c, g, r, dt = imap_login(imap_a, src, user, PW)
    t.check(r.startswith(b"a1 NO [AUTHENTICATIONFAILED]"),
            "banned address: the right password is answered like a wrong one", r)
    c.close()
    t.check(pa.wait_log(f"event=refused reason=banned_ip service=imap ip={src}") and
            pa.log_count("event=login ") == logins_before,
            "the ban is logged and the node was not asked", pa.log_tail())
    c, g, r, dt = imap_login(imap_b, src, user, PW)
    t.check(r.startswith(b"a1 NO [AUTHENTICATIONFAILED]") and
            pb.wait_log(f"event=refused reason=banned_ip service=imap ip={src}"),
            "the ban applies at the other proxy too (shared)", r)
    c.close()
    c, g = greet(pop3_b, src)
    c.send(b"USER " + user.encode() + b"\r\nPASS " + PW.encode() + b"\r\n")
    c.line()
    r = c.line(timeout=20)
    t.check(r.startswith(b"-ERR [AUTH]"), "and to POP3", r)
    c.close()
    c, (code, r) = smtp_auth(pb.sub, src, user)
    t.check(code == 535 and b"5.7.8" in r and
            pb.wait_log("event=auth_failed user=pat@example.test reason=banned_ip"),
            "and to SMTP AUTH (submission)", r)
    c.close()
    c, g, r, dt = imap_login(imap_a, "127.0.0.7", user, PW)
    t.check(r.startswith(b"a1 OK"), "the same user from another address logs in", r)
    c.send(b"a2 LOGOUT\r\n")
    c.tagged(b"a2")
    c.close()

    # a user ban: 5 failures for sam from 5 addresses
    sam = USERS[1]
    for i in range(5):
        c, g, r, dt = imap_login(imap_a if i % 2 else imap_b, f"127.0.1.{i + 1}", sam, "bad")
        t.check(r.startswith(b"a1 NO [AUTHENTICATIONFAILED]"), f"{sam} failure {i + 1}", r)
        c.close()
    c, g, r, dt = imap_login(imap_a, "127.0.1.9", sam, PW)
    t.check(r.startswith(b"a1 NO [AUTHENTICATIONFAILED]") and
            pa.wait_log(f"event=refused reason=banned_user service=imap ip=127.0.1.9 user={sam}"),
            "5 failures from 5 addresses ban the user", r)
    c.close()

    # --- SMTP: connections per address, messages per day ----------------------------
    src = "127.0.2.1"
    held = []
    for i in range(3):
        c = dial(pa.smtp if i % 2 else pb.smtp, src)
        held.append(c)
        code, g = smtp_reply(c)
        t.check(code == 220, f"SMTP connection {i + 1} greeted", g)
    c = dial(pa.smtp, src)
    code, g = smtp_reply(c)
    t.check(code == 421 and b"Too many connections" in g and mt.wait_closed(c.sock),
            "4th SMTP connection from one address: 421 and close", g)
    c.close()
    for c in held:
        c.close()
    src = "127.0.2.2"
    c, (code, r) = smtp_auth(pa.sub, src, USERS[2])
    t.check(code == 235, "kim authenticates on submission", r)
    body = b"Subject: counted\r\n\r\none of two today\r\n"
    code, r = smtp_cmd(c, f"MAIL FROM:<{USERS[2]}>")
    t.check(code == 250, "1st message of the day: MAIL 250", r)
    smtp_cmd(c, f"RCPT TO:<{USERS[1]}>")
    smtp_cmd(c, "DATA")
    c.send(body + b".\r\n")
    code, r = smtp_reply(c, timeout=30)
    t.check(code == 250, "1st message delivered", r)
    c.close()
    c, (code, r) = smtp_auth(pb.sub, src, USERS[2])
    code, r = smtp_cmd(c, f"MAIL FROM:<{USERS[2]}>")
    t.check(code == 250, "2nd message (other proxy): MAIL 250", r)
    smtp_cmd(c, "RSET")
    code, r = smtp_cmd(c, f"MAIL FROM:<{USERS[2]}>")
    t.check(code == 450 and b"4.7.1" in r, "3rd message of the day: 450 4.7.1 at MAIL FROM", r)
    code, r = smtp_cmd(c, f"RCPT TO:<{USERS[1]}>")
    t.check(code == 503, "no transaction after the refusal", r)
    c.close()
    t.check(pb.wait_log("event=refused reason=messages_per_day service=submission"),
            "messages per day refusal logged", pb.log_tail())

    # --- sessions per user, mailctl sessions ------------------------------------------
    kim = USERS[2]
    s1, g, r, dt = imap_login(imap_a, "127.0.0.8", kim)
    t.check(r.startswith(b"a1 OK [CAPABILITY"), "kim's 1st session (proxy A)", r)
    s2, g, r, dt = imap_login(imap_b, "127.0.0.9", kim)
    t.check(r.startswith(b"a1 OK [CAPABILITY"), "kim's 2nd session (proxy B)", r)
    c, g, r, dt = imap_login(imap_a, "127.0.0.10", kim)
    t.check(r == b"a1 NO [LIMIT] Too many sessions for this user, log out elsewhere first\r\n",
            "3rd session refused: NO [LIMIT]", r)
    c.send(b"a2 LOGOUT\r\n")
    c.tagged(b"a2")
    c.close()
    rc, out, err = mt.run([ctl, "--redis", url, "sessions", kim], timeout=10)
    lines = [ln for ln in out.splitlines() if kim in ln]
    t.check(rc == 0 and "sessions: 2" in out and len(lines) == 2 and
            all(f"node={naddr}" in ln and " imap " in ln for ln in lines) and
            any("127.0.0.8:" in ln and "proxy=pA" in ln for ln in lines) and
            any("127.0.0.9:" in ln and "proxy=pB" in ln for ln in lines),
            "mailctl sessions: both sessions with client, node and proxy", out + err)
    rc, out, err = mt.run([ctl, "--redis", url, "--json", "sessions"], timeout=10)
    t.check(rc == 0 and out.count(f'"user":"{kim}"') == 2 and f'"node":"{naddr}"' in out,
            "mailctl --json sessions", out + err)
    s1.send(b"b1 LOGOUT\r\n")
    t.check(b"b1 OK" in s1.tagged(b"b1"), "LOGOUT through the relay")
    s1.close()

    def kim_sessions():
        rc, out, err = mt.run([ctl, "--redis", url, "sessions", kim], timeout=10)
        return out if rc == 0 and "sessions: 1" in out else None

    out = wait_for(kim_sessions, timeout=5, step=0.1)
    t.check(out and "proxy=pB" in out, "after logout the session is gone from mailctl", out)
    s3, g, r, dt = imap_login(imap_a, "127.0.0.10", kim)
    t.check(r.startswith(b"a1 OK"), "after logout there is room for a new session", r)
    s3.send(b"a2 LOGOUT\r\n")
    s3.tagged(b"a2")
    s3.close()
    # kim's 2nd session (s2, through B) stays open across the Redis outage.

    # POP3 sessions: 1 per user
    p1 = dial(pop3_a, "127.0.0.11")
    p1.line()
    p1.send(b"USER " + USERS[0].encode() + b"\r\nPASS " + PW.encode() + b"\r\n")
    p1.line()
    r = p1.line()
    t.check(r.startswith(b"+OK maildrop"), "POP3 session", r)
    p2 = dial(pop3_b, "127.0.0.12")
    p2.line()
    p2.send(b"USER " + USERS[0].encode() + b"\r\nPASS " + PW.encode() + b"\r\n")
    p2.line()
    r = p2.line()
    t.check(r == b"-ERR [IN-USE] too many sessions for this user\r\n",
            "2nd POP3 session of the user refused at the other proxy", r)
    p2.close()
    rc, out, err = mt.run([ctl, "--redis", url, "sessions", USERS[0]], timeout=10)
    t.check(" pop3 " in out and "proxy=pA" in out, "mailctl sessions lists POP3", out)
    p1.send(b"QUIT\r\n")
    p1.line()
    p1.close()

    # --- Redis killed ------------------------------------------------------------------
    t.check(metric(mport_a, "mail_proxy_limits_in_process") == 0, "metric: shared limits")
    redis.stop(sig=9)
    c, g, r, dt = imap_login(imap_a, "127.0.0.13", kim, PW)
    t.check(r.startswith(b"a1 OK [CAPABILITY"), "Redis down: login through A works", r)
    t.check(pa.wait_log("event=redis_unreachable", timeout=5), "A logs the switch",
            pa.log_tail())
    t.check(pa.log_count("event=redis_unreachable") == 1, "... once")
    t.check(metric(mport_a, "mail_proxy_limits_in_process") == 1, "metric: in-process limits")
    c.send(b"a2 SELECT INBOX\r\n")
    r = c.tagged(b"a2")
    t.check(b"a2 OK" in r, "the session works", r)
    outage_session = c
    s2.send(b"c1 NOOP\r\n")
    t.check(b"c1 OK" in s2.tagged(b"c1"), "a session opened before the outage works")
    # kim has 2 sessions now, one through each proxy; in process A knows
    # only its own: one more is allowed at A, then none.
    c3, g, r, dt = imap_login(imap_a, "127.0.0.14", kim, PW)
    t.check(r.startswith(b"a1 OK"), "in-process: A allows its 2nd session of kim", r)
    c4, g, r, dt = imap_login(imap_a, "127.0.0.15", kim, PW)
    t.check(r.startswith(b"a1 NO [LIMIT]"), "in-process: A refuses its 3rd session of kim", r)
    c4.close()
    c3.send(b"a2 LOGOUT\r\n")
    c3.tagged(b"a2")
    c3.close()
    # in-process connection limit
    src = "127.0.0.16"
    held = [greet(imap_a, src) for _ in range(3)]
    c, g = greet(imap_a, src)
    t.check(all(g0.startswith(b"* OK") for _, g0 in held) and
            g.startswith(b"* BYE [UNAVAILABLE] too many connections"),
            "in-process: 4th connection from one address refused", g)
    c.close()
    for c0, _ in held:
        c0.close()
    # in-process ban at A (4 failures) does not reach B while Redis is away
    src = "127.0.0.17"
    c, g = greet(imap_a, src)
    for i in range(3):
        c.send(b"f%d LOGIN %s bad\r\n" % (i, USERS[0].encode()))
        c.tagged(b"f%d" % i, timeout=20)
    c.close()
    c, g, r, dt = imap_login(imap_a, src, USERS[0], "bad")
    c.close()
    t.check(pa.wait_log(f"event=ban scope=ip ip={src} user={USERS[0]} failures=4 "
                        "duration_ms=600000 counted=in-process"), "in-process ban at A")
    c, g, r, dt = imap_login(imap_a, src, USERS[0], PW)
    t.check(r.startswith(b"a1 NO [AUTHENTICATIONFAILED]"), "in-process ban refuses at A", r)
    c.close()
    c, g, r, dt = imap_login(imap_b, src, USERS[0], PW)
    t.check(r.startswith(b"a1 OK"), "B does not know A's in-process ban", r)
    c.send(b"a2 LOGOUT\r\n")
    c.tagged(b"a2")
    c.close()
    t.check(pb.wait_log("event=redis_unreachable"), "B logs the switch too")

    # --- Redis back ----------------------------------------------------------------------
    redis = t.daemon("redis2", redis_argv)
    redis.wait_tcp(rport)
    t.check(pa.wait_log("event=redis_back", timeout=15) and
            pb.wait_log("event=redis_back", timeout=15), "both proxies log that Redis is back",
            pa.log_tail())
    t.check(wait_for(lambda: metric(mport_a, "mail_proxy_limits_in_process") == 0, timeout=5),
            "metric: shared limits again")
    # the node re-registers; the proxies' maps follow
    t.check(wait_for(lambda: redis_cmd(rport, "EXISTS", "mail:node:n1") == 1, timeout=10),
            "node registered again")
    time.sleep(0.5)

    def sessions_of(user):
        rc, out, err = mt.run([ctl, "--redis", url, "sessions", user], timeout=10)
        return out

    out = wait_for(lambda: (lambda o: o if "sessions: 2" in o else None)(sessions_of(kim)),
                   timeout=5, step=0.2)
    t.check(out and "127.0.0.13:" in out and "127.0.0.9:" in out,
            "sessions opened before and during the outage are registered again", out)
    # a ban through A, seen by B
    src = "127.0.0.18"
    c, g = greet(imap_a, src)
    for i in range(3):
        c.send(b"f%d LOGIN %s bad\r\n" % (i, USERS[0].encode()))
        c.tagged(b"f%d" % i, timeout=20)
    c.close()
    c, g, r, dt = imap_login(imap_a, src, USERS[0], "bad")
    c.close()
    t.check(pa.wait_log(f"event=ban scope=ip ip={src} user={USERS[0]} failures=4 "
                        "duration_ms=600000 counted=redis"), "ban through A, counted in Redis")
    c, g, r, dt = imap_login(imap_b, src, USERS[0], PW)
    t.check(r.startswith(b"a1 NO [AUTHENTICATIONFAILED]") and
            pb.wait_log(f"event=refused reason=banned_ip service=imap ip={src}"),
            "Redis back: A's ban refuses the login at B", r)
    c.close()
    # the outage session still works; logging out removes it from Redis
    outage_session.send(b"a3 LOGOUT\r\n")
    t.check(b"a3 OK" in outage_session.tagged(b"a3"), "outage session logs out")
    outage_session.close()
    s2.send(b"c2 LOGOUT\r\n")
    s2.tagged(b"c2")
    s2.close()
    out = wait_for(lambda: (lambda o: o if "sessions: 0" in o else None)(sessions_of(kim)),
                   timeout=5, step=0.2)
    t.check(out, "after logout no session of kim is left", sessions_of(kim))
    t.check(pa.alive() and pb.alive(), "proxies still running")


mt.main(run, name="proxy_limits", budget_s=150)
