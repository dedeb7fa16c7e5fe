"""The SMTP receiver under hostile or broken clients: SMTP smuggling (LF.LF,
CR.CR, LF.CRLF, CRLF.LF, CR.CRLF, CRLF.CR, ... never end DATA; bare LF/CR
refused after the data by default, kept inside the one message with
smtp.bare_lf=accept), STARTTLS command injection (plaintext pipelined behind
STARTTLS is never answered), an early talker (554 and close), too many bad
commands (421 and close), over-long lines, HTTP sent to SMTP, AUTH over
plaintext (refused unless auth.plaintext), repeated wrong passwords, the
idle timeout (421 4.4.2), SIGTERM (421 4.3.2 to an idle session), and a
node killed mid-transaction (451, nothing acknowledged, nothing stored;
service resumes when it is back)."""

import base64
import signal
import ssl
import time

import mailtest as mt
from test_smtp import HOSTNAME, PW, Cluster, addr, dot_stuff, make_body, split_trace

SMUGGLE = [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r", b"\n.\r",
           b"\r.\n", b"\n..\n", b"\r\n\n.\n"]
EVIL = b"MAIL FROM:<evil@remote.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n" \
       b"Subject: smuggled\r\n\r\nevil\r\n"


def plain_b64(user, pw):
    return base64.b64encode(b"\0" + user.encode() + b"\0" + pw.encode()).decode()


def run(t):
    cl = Cluster(t, users=["alice", "bob"])
    p = cl.proxy
    lax = cl.start_proxy("lax", ["auth.plaintext=true", "smtp.bare_lf=accept",
                                 "smtp.greeting_delay=400ms", "smtp.idle_timeout=2s",
                                 "rpc.timeout=3s"])

    # --- smuggling, default policy: one reply, nothing stored -----------------------
    before_a, before_b = len(cl.mailbox("alice")), len(cl.mailbox("bob"))
    c = cl.connect()
    c.reply()
    c.cmd("EHLO smuggler.test")
    for v in SMUGGLE:
        c.cmd("MAIL FROM:<s@remote.test>")
        c.cmd(f"RCPT TO:<{addr('alice')}>")
        c.cmd("DATA")
        c.send(b"Subject: smuggle\r\n\r\nhello" + v + EVIL + b".\r\n")
        code, txt = c.reply(timeout=15)
        t.check(code == 550 and b"5.6.0" in txt, f"smuggling {v!r}: one 550 5.6.0 after the "
                "data", txt)
        code, txt = c.cmd("NOOP")
        t.check(code == 250 and c.pending(0.2) == b"", f"smuggling {v!r}: next reply is the "
                "NOOP's, nothing else", txt)
    c.cmd("QUIT")
    c.close()
    t.check(len(cl.mailbox("alice")) == before_a and len(cl.mailbox("bob")) == before_b,
            "smuggling: nothing stored")

    # --- smuggling with bare_lf=accept: all of it is one message ---------------------
    c = cl.connect(proxy=lax)
    c.reply()
    c.cmd("EHLO smuggler.test")
    for v in SMUGGLE[:6]:
        c.cmd("MAIL FROM:<s@remote.test>")
        c.cmd(f"RCPT TO:<{addr('alice')}>")
        c.cmd("DATA")
        c.send(b"Subject: smuggle\r\n\r\nhello" + v + EVIL + b".\r\n")
        code, txt = c.reply(timeout=15)
        t.check(code == 250, f"accept policy {v!r}: one 250 for the whole", txt)
        code, txt = c.cmd("NOOP")
        t.check(code == 250 and c.pending(0.2) == b"", f"accept policy {v!r}: in sync", txt)
    c.close()
    msgs = cl.mailbox("alice")[before_a:]
    t.check(len(msgs) == 6 and all(EVIL in split_trace(m)[1] for m in msgs) and
            len(cl.mailbox("bob")) == before_b,
            "accept policy: the smuggled commands are text inside one message each")

    # --- STARTTLS injection -------------------------------------------------------
    for svc in ("smtp", "submission"):
        c = cl.connect(svc)
        c.reply()
        c.cmd("EHLO inject.test")
        c.send(b"STARTTLS\r\nRSET\r\nMAIL FROM:<x@remote.test>\r\n")
        code, txt = c.reply()
        t.check(code == 220, f"{svc}: STARTTLS with commands behind it: 220", txt)
        t.check(c.buf == b"", f"{svc}: nothing else before the handshake", c.buf)
        c.sock = cl.ctx.wrap_socket(c.sock, server_hostname=HOSTNAME)
        code, txt = c.cmd("EHLO after.test")
        t.check(code == 250 and txt.startswith(b"250-" + HOSTNAME.encode()),
                f"{svc}: first reply after the handshake is the EHLO's", txt)
        t.check(c.pending(0.3) == b"", f"{svc}: the injected RSET/MAIL are never answered")
        c.close()
    t.check(p.wait_log("event=starttls_pipelined", count=2), "injection attempts logged")

    # --- early talker ----------------------------------------------------------------
    c = cl.connect(proxy=lax)
    c.send(b"EHLO early.test\r\n")
    code, txt = c.reply()
    t.check(code == 554 and c.closed(), "early talker: 554 and closed", txt)
    c = cl.connect(proxy=lax)
    code, txt = c.reply()
    t.check(code == 220, "a client that waits gets the delayed greeting", txt)
    code, txt = c.cmd("EHLO patient.test")
    t.check(code == 250, "and goes on", txt)
    # --- idle timeout (smtp.idle_timeout=2s on lax) ----------------------------------
    code, txt = c.reply(timeout=15)
    t.check(code == 421 and b"4.4.2" in txt and c.closed(), "idle client: 421 4.4.2, closed",
            txt)

    # --- bad commands ------------------------------------------------------------------
    c = cl.connect()
    c.reply()
    c.cmd("EHLO ok.test")
    code, txt = c.cmd("NOOP " + "a" * 600)
    t.check(code == 500 and b"5.5.2" in txt, "over-long line: 500 5.5.2", txt)
    code, txt = c.cmd("NOOP")
    t.check(code == 250, "session goes on after an over-long line", txt)
    code, txt = c.cmd("MAIL FROM:<a@b> SIZE=1 FOO=bar")
    t.check(code == 555, "unknown MAIL parameter: 555", txt)
    code, txt = c.cmd("RCPT TO:<x@example.test>")
    t.check(code == 503 and b"5.5.1" in txt, "RCPT without MAIL: 503 5.5.1", txt)
    code, txt = c.cmd("MAIL FROM:<a@remote.test>")
    code, txt = c.cmd("RCPT TO:<élève@example.test>")
    t.check(code == 553 and b"5.6.7" in txt, "non-ASCII RCPT without SMTPUTF8: 553 5.6.7", txt)
    code, txt = c.cmd("RSET")
    c.send(b"FOO\r\n" * 10)
    got = c.replies(10)
    # four errors so far (500, 555, 503, 553); the tenth closes
    t.check([x[0] for x in got[:5]] == [500] * 5 and got[5][0] == 421 and c.closed(),
            "too many bad commands: 421 and closed", got)
    c = cl.connect()
    c.reply()
    code, txt = c.cmd("GET / HTTP/1.1")
    t.check(code == 554 and c.closed(), "HTTP request: 554 and closed", txt)
    c = cl.connect()
    c.reply()
    c.cmd("EHLO x")
    code, txt = c.cmd("BDAT lots")
    t.check(code == 554 and c.closed(), "BDAT without a size: 554 and closed", txt)

    # --- AUTH over plaintext -----------------------------------------------------------
    c = cl.connect("submission")
    c.reply()
    code, txt = c.cmd("EHLO plain.test")
    t.check(b"AUTH" not in txt and b"STARTTLS" in txt, "587 plaintext: no AUTH offered", txt)
    code, txt = c.cmd("AUTH PLAIN " + plain_b64(addr("alice"), PW))
    t.check(code == 530 and b"5.7.0" in txt, "AUTH before TLS: 530 5.7.0", txt)
    c.close()
    c = cl.connect("smtp")
    c.reply()
    c.cmd("EHLO mx.test")
    code, txt = c.cmd("AUTH PLAIN " + plain_b64(addr("alice"), PW))
    t.check(code == 502, "AUTH on the MX port: 502", txt)
    c.close()
    c = cl.connect("submission", proxy=lax)
    c.reply()
    code, txt = c.cmd("EHLO plain.test")
    t.check(b"AUTH PLAIN LOGIN" in txt, "auth.plaintext: AUTH offered before TLS", txt)
    code, txt = c.cmd("AUTH LOGIN")
    t.check(code == 334, "AUTH LOGIN prompt", txt)
    code, txt = c.cmd(base64.b64encode(addr("alice").encode()).decode())
    code, txt = c.cmd(base64.b64encode(PW.encode()).decode())
    t.check(code == 235, "auth.plaintext: AUTH LOGIN accepted", txt)
    before = len(cl.mailbox("bob"))
    body = make_body("plaintext auth")
    c.cmd(f"MAIL FROM:<{addr('alice')}>")
    c.cmd(f"RCPT TO:<{addr('bob')}>")
    c.cmd("DATA")
    c.send(dot_stuff(body) + b".\r\n")
    code, txt = c.reply()
    t.check(code == 250, "sent after plaintext AUTH", txt)
    c.close()
    m, rest = split_trace(cl.mailbox("bob")[-1])
    t.check(len(cl.mailbox("bob")) == before + 1 and m and m.group("proto") == b"ESMTPA" and
            rest == body, "stored with 'with ESMTPA'")
    c = cl.connect("submission", proxy=lax)
    c.reply()
    c.cmd("EHLO guess.test")
    got = [c.cmd("AUTH PLAIN " + plain_b64(addr("alice"), f"guess{i}")) for i in range(3)]
    t.check([x[0] for x in got] == [535, 535, 421] and c.closed(),
            "three wrong passwords: 535, 535, 421 and closed", got)
    c = cl.connect("submission", proxy=lax)
    c.reply()
    c.cmd("EHLO cancel.test")
    code, txt = c.cmd("AUTH PLAIN")
    t.check(code == 334, "AUTH PLAIN without initial response: 334", txt)
    code, txt = c.cmd("*")
    t.check(code == 501, "'*' cancels: 501", txt)
    code, txt = c.cmd("AUTH PLAIN")
    code, txt = c.cmd("!!notbase64")
    t.check(code == 501, "bad base64: 501", txt)
    c.close()

    # --- a node that stops answering: DELIVER sent again with the same id --------------
    before = len(cl.mailbox("alice"))
    c = cl.connect(proxy=lax)
    c.reply()
    c.cmd("EHLO frozen.test")
    c.cmd("MAIL FROM:<f@remote.test>")
    code, txt = c.cmd(f"RCPT TO:<{addr('alice')}>")
    c.cmd("DATA")
    body = make_body("frozen node")
    c.send(dot_stuff(body))
    cl.node.send_signal(signal.SIGSTOP)
    c.send(b".\r\n")
    retried = lax.wait_log("retry=yes", timeout=20)
    cl.node.send_signal(signal.SIGCONT)
    t.check(retried, "DELIVER timed out against a stopped node: sent again", lax.log_tail(5))
    code, txt = c.reply(timeout=30)
    t.check(code == 250, "the retry with the same delivery id is answered 250", txt)
    c.close()
    msgs = cl.mailbox("alice")
    t.check(len(msgs) == before + 1 and split_trace(msgs[-1])[1] == body,
            "stored once although the node got the DELIVER twice",
            f"{len(msgs) - before} new; node: {cl.node.log_count('deliver_duplicate')} duplicate")

    # --- a node killed mid-transaction ------------------------------------------------
    before = len(cl.mailbox("alice"))
    c = cl.connect()
    c.reply()
    c.cmd("EHLO doomed.test")
    c.cmd("MAIL FROM:<d@remote.test>")
    code, txt = c.cmd(f"RCPT TO:<{addr('alice')}>")
    t.check(code == 250, "recipient accepted while the node is up", txt)
    c.cmd("DATA")
    c.send(b"Subject: doomed\r\n\r\nfirst half\r\n")
    cl.node.send_signal(signal.SIGKILL)
    cl.node.stop(timeout=10)
    c.send(b"second half\r\n.\r\n")
    code, txt = c.reply(timeout=40)
    t.check(code == 451 and txt.startswith(b"451 4."), "node killed before the end of DATA: "
            "451, not 250", txt)
    code, txt = c.cmd(f"RCPT TO:<{addr('bob')}>")
    code, txt = c.cmd("MAIL FROM:<d@remote.test>")
    code, txt = c.cmd(f"RCPT TO:<{addr('bob')}>", timeout=40)
    t.check(code == 451 and b"4.3.0" in txt, "RCPT with the node down: 451 4.3.0", txt)
    c.cmd("RSET")
    cl.start_node()
    ok = False
    deadline = time.monotonic() + 20
    while not ok and time.monotonic() < deadline:
        code, txt = c.cmd(f"MAIL FROM:<d@remote.test>")
        code, txt = c.cmd(f"RCPT TO:<{addr('alice')}>", timeout=30)
        ok = code == 250
        if not ok:
            c.cmd("RSET")
            time.sleep(0.3)
    t.check(ok, "node back: recipients accepted again", txt)
    c.cmd("DATA")
    body = make_body("after the restart")
    c.send(dot_stuff(body) + b".\r\n")
    code, txt = c.reply(timeout=30)
    t.check(code == 250, "and stored", txt)
    c.close()
    msgs = cl.mailbox("alice")
    t.check(len(msgs) == before + 1 and split_trace(msgs[-1])[1] == body,
            "the message that got 451 was not stored; the later one was")

    # --- SIGTERM: an idle session is told ------------------------------------------------
    c = cl.connect(proxy=p)
    c.reply()
    c.cmd("EHLO late.test")
    p.send_signal(signal.SIGTERM)
    code, txt = c.reply(timeout=10)
    t.check(code == 421 and b"4.3.2" in txt and c.closed(), "SIGTERM: 421 4.3.2 to an idle "
            "session", txt)
    rc, _, killed = p.stop(timeout=10)
    t.check(rc == 0 and not killed, "proxy exits 0 after the drain", p.log_tail(5))


if __name__ == "__main__":
    mt.main(run, name="smtp_defenses", budget_s=150)
