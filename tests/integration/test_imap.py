"""The node's IMAP4rev2 session driven the way a client's first sync does:
imaplib for login, LIST, STATUS, SELECT, FETCH (flags, headers, ENVELOPE and
BODYSTRUCTURE against the golden files, BODY[] byte-exact, a large message),
STORE/EXPUNGE, UID COPY/MOVE with COPYUID, SEARCH, APPEND with APPENDUID,
mailbox management; raw sockets for literals, SASL-IR, pipelining and the
error limit; two sessions for change reports on NOOP."""

import base64
import imaplib
import re
import socket
import time

import mailtest as mt

USER, PW = "u@example.test", "pw"
CORPUS = ["plain_7bit", "nested", "rfc822_attach"]


def free_port():
    with socket.socket() as s:
        s.bind((mt.HOST, 0))
        return s.getsockname()[1]


def raw_exchange(port, payload, until, timeout=5.0):
    """Send payload on a fresh connection (after the greeting) and read
    until `until` shows up."""
    s = mt.connect(port)
    try:
        greet = mt.recv_line(s)
        s.sendall(payload)
        return greet, mt.recv_until(s, until, timeout)
    finally:
        mt.close_quietly(s)


def tagged(m, *args):
    """Run a command through imaplib; returns (typ, tagged response text)."""
    typ, dat = m._simple_command(*args)
    return typ, b" ".join(d for d in dat if isinstance(d, bytes))


def run(t):
    node, ctl = mt.binary("mailnode"), mt.binary("mailctl")
    src = mt.source_dir() / "tests" / "data" / "mime"
    rport, iport = free_port(), free_port()
    # Few shards for a quick start; mailctl --node asks the node for the shard.
    argv = [node, "--set", f"rpc.listen=127.0.0.1:{rport}",
            "--set", f"imap.listen=127.0.0.1:{iport}", "--set", "shards.count=4",
            "--set", f"data.dir={t.scratch / 'data'}", "--set", "threads=1"]
    n = t.daemon("node", argv)
    n.wait_tcp(rport, timeout=20)
    n.wait_tcp(iport, timeout=20)
    ctlnode = ["--node", f"127.0.0.1:{rport}"]
    rc, out, err = mt.run([ctl] + ctlnode + ["user", "add", USER, "--password", PW])
    t.require(rc == 0, "user created", out + err)
    bodies = []
    for name in CORPUS:
        data = (src / f"{name}.eml").read_bytes()
        bodies.append(data)
        rc, out, err = mt.run([ctl] + ctlnode + ["deliver", USER], stdin=data)
        t.require(rc == 0 and "250" in out, f"delivered {name}", out + err)

    # --- pre-auth --------------------------------------------------------
    m = imaplib.IMAP4(mt.HOST, iport, timeout=10)
    t.check(m.welcome.startswith(b"* OK [CAPABILITY IMAP4rev2"), "greeting with capabilities",
            m.welcome)
    typ, caps = m.capability()
    capset = set(caps[0].split())
    t.check(typ == "OK" and {b"IMAP4rev2", b"IMAP4rev1", b"AUTH=PLAIN", b"UIDPLUS", b"MOVE",
                             b"SASL-IR", b"LITERAL+", b"SPECIAL-USE"} <= capset,
            "CAPABILITY lists the implemented extensions", caps)
    greet, resp = raw_exchange(iport, b"x1 SELECT INBOX\r\n", b"x1 ")
    t.check(b"x1 BAD" in resp, "SELECT before login is BAD", resp)
    try:
        m.login(USER, "wrong")
        t.check(False, "wrong password fails")
    except imaplib.IMAP4.error as e:
        t.check("AUTHENTICATIONFAILED" in str(e), "wrong password: NO [AUTHENTICATIONFAILED]",
                str(e))
    try:
        m.login("nobody@example.test", PW)
        t.check(False, "unknown user fails")
    except imaplib.IMAP4.error as e:
        t.check("AUTHENTICATIONFAILED" in str(e), "unknown user fails the same way", str(e))
    typ, dat = m.login(USER, PW)
    t.require(typ == "OK", "LOGIN", dat)

    # --- first sync ----------------------------------------------------------
    typ, dat = m.list('""', "*")
    names = {}
    for line in dat:
        mo = re.match(rb'\(([^)]*)\) "/" "?([^"]*)"?$', line)
        if mo:
            names[mo.group(2).decode()] = mo.group(1).decode().split()
    t.check(typ == "OK" and set(names) == {"INBOX", "Sent", "Drafts", "Trash", "Junk",
                                           "Archive"}, "LIST shows the default mailboxes", dat)
    t.check("\\Sent" in names.get("Sent", []) and "\\Trash" in names.get("Trash", []) and
            "\\HasNoChildren" in names.get("INBOX", []), "LIST special-use and child flags",
            dat)
    typ, dat = m.status("INBOX", "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN SIZE)")
    total = sum(len(b) for b in bodies)
    t.check(typ == "OK" and b"MESSAGES 3" in dat[0] and b"UIDNEXT 4" in dat[0] and
            b"UNSEEN 3" in dat[0] and f"SIZE {total}".encode() in dat[0], "STATUS", dat)
    typ, dat = m.select("INBOX")
    t.require(typ == "OK" and dat == [b"3"], "SELECT INBOX: 3 EXISTS", dat)
    uidvalidity = m.untagged_responses.get("UIDVALIDITY", [b"?"])[0]
    t.check(m.untagged_responses.get("UIDNEXT") == [b"4"] and uidvalidity.isdigit(),
            "SELECT reports UIDVALIDITY and UIDNEXT", m.untagged_responses)
    typ, dat = m.fetch("1:*", "(FLAGS UID RFC822.SIZE)")
    want = [f"{i + 1} (FLAGS () UID {i + 1} RFC822.SIZE {len(b)})".encode()
            for i, b in enumerate(bodies)]
    t.check(typ == "OK" and dat == want, "FETCH 1:* (FLAGS UID RFC822.SIZE)", dat)
    typ, dat = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (From Subject Date)])")
    t.check(typ == "OK" and isinstance(dat[0], tuple) and dat[0][1] ==
            b"Date: Tue, 14 May 2024 11:12:00 +0200\r\nFrom: Alice Example "
            b"<alice@example.org>\r\nSubject: Lunch on Thursday?\r\n\r\n",
            "FETCH BODY.PEEK[HEADER.FIELDS (From Subject Date)]", dat)
    for i, name in enumerate(CORPUS):
        env = (src / f"{name}.envelope").read_bytes().strip()
        bs = (src / f"{name}.bodystructure").read_bytes().strip()
        typ, dat = m.fetch(str(i + 1), "(ENVELOPE)")
        t.check(typ == "OK" and dat == [b"%d (ENVELOPE %s)" % (i + 1, env)],
                f"ENVELOPE of {name} matches the golden file", dat)
        typ, dat = m.fetch(str(i + 1), "(BODYSTRUCTURE)")
        t.check(typ == "OK" and dat == [b"%d (BODYSTRUCTURE %s)" % (i + 1, bs)],
                f"BODYSTRUCTURE of {name} matches the golden file", dat)
    typ, dat = m.fetch("2", "(BODY.PEEK[1.MIME] BODY.PEEK[TEXT]<0.20> RFC822.HEADER)")
    t.check(typ == "OK" and len(dat) == 4 and
            dat[0][1] == b'Content-Type: multipart/alternative; boundary="==alt=="\r\n\r\n' and
            dat[1][0].endswith(b"BODY[TEXT]<0> {20}") and len(dat[1][1]) == 20 and
            bodies[1].startswith(dat[2][1]), "FETCH part.MIME, TEXT<partial>, RFC822.HEADER",
            dat)
    typ, dat = m.fetch("3", "(BODY.PEEK[2.HEADER.FIELDS.NOT (Date From To Message-ID)])")
    t.check(typ == "OK" and dat[0][1] == b"Subject: meeting notes\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/alternative; boundary=\"inner\"\r\n\r\n",
            "FETCH HEADER.FIELDS.NOT of an attached message", dat)
    typ, dat = m.search(None, "UNSEEN")
    t.check(typ == "OK" and dat == [b"1 2 3"], "SEARCH UNSEEN before reading", dat)
    typ, dat = m.fetch("1", "(BODY[])")
    t.check(typ == "OK" and dat[0][1] == bodies[0] and b"\\Seen" in dat[1],
            "FETCH BODY[] is byte-exact and sets \\Seen", dat[1:])
    typ, dat = m.search(None, "UNSEEN")
    t.check(dat == [b"2 3"], "SEARCH UNSEEN after reading", dat)
    typ, dat = m.search(None, "FROM", "carol")
    t.check(dat == [b"3"], "SEARCH FROM", dat)
    typ, dat = m.search(None, "SUBJECT", '"your order"')
    t.check(dat == [b"2"], "SEARCH SUBJECT", dat)
    typ, dat = m.search(None, "BODY", "lunch")
    t.check(dat == [b"1"], "SEARCH BODY", dat)
    typ, dat = m.uid("SEARCH", "OR", "FROM", "alice", "TO", "dave")
    t.check(dat == [b"1 3"], "UID SEARCH OR", dat)
    typ, dat = m.search(None, "2:3", "NOT", "FROM", "carol")
    t.check(dat == [b"2"], "SEARCH with a sequence set and NOT", dat)

    # --- STORE / EXPUNGE -----------------------------------------------------------
    typ, dat = m.store("1", "+FLAGS", "(\\Seen \\Deleted)")
    t.check(typ == "OK" and dat == [b"1 (FLAGS (\\Deleted \\Seen) UID 1)"],
            "STORE +FLAGS answers FETCH FLAGS", dat)
    typ, dat = m.store("2", "+FLAGS.SILENT", "($Important)")
    t.check(typ == "OK" and dat == [None], "STORE .SILENT sends no FETCH", dat)
    typ, dat = m.fetch("2", "(FLAGS)")
    t.check(dat == [b"2 (FLAGS ($Important))"], "keyword stored", dat)
    typ, dat = m.expunge()
    t.check(typ == "OK" and dat == [b"1"], "EXPUNGE reports message 1", dat)
    typ, dat = m.fetch("1:*", "(UID)")
    t.check(dat == [b"1 (UID 2)", b"2 (UID 3)"], "sequence numbers renumbered", dat)

    # --- COPY / MOVE ---------------------------------------------------------------------
    typ, txt = tagged(m, "UID", "COPY", "2:3", "Archive")
    t.check(typ == "OK" and re.search(rb"\[COPYUID \d+ 2:3 1:2\]", txt), "UID COPY answers COPYUID", txt)
    typ, txt = tagged(m, "UID", "MOVE", "2", "Trash")
    moved = m.untagged_responses.pop("EXPUNGE", None)
    t.check(typ == "OK" and moved == [b"1"], "UID MOVE expunges the message", (txt, moved))
    t.check(any(re.search(rb"\[COPYUID \d+ 2 1\]", x or b"")
                for x in m.untagged_responses.pop("OK", [])) or b"COPYUID" in txt,
            "UID MOVE reports COPYUID", (txt, m.untagged_responses))
    typ, txt = tagged(m, "COPY", "1", "Nowhere")
    t.check(typ == "NO" and b"TRYCREATE" in txt, "COPY to a missing mailbox: NO [TRYCREATE]",
            txt)
    typ, dat = m.status("Archive", "(MESSAGES)")
    t.check(b"MESSAGES 2" in dat[0], "Archive has the copies", dat)

    # --- APPEND ----------------------------------------------------------------------------
    msg = b"From: me@example.test\r\nSubject: appended\r\n\r\nappended body\r\n"
    typ, dat = m.append("INBOX", "(\\Seen $Label1)", None, msg)
    mo = re.search(rb"\[APPENDUID (\d+) (\d+)\]", dat[0] if dat else b"")
    t.check(typ == "OK" and mo and mo.group(1) == uidvalidity, "APPEND answers APPENDUID",
            dat)
    if mo:
        typ, dat = m.uid("FETCH", mo.group(2).decode(), "(FLAGS BODY.PEEK[])")
        t.check(typ == "OK" and dat and isinstance(dat[0], tuple) and dat[0][1] == msg and
                b"$Label1" in dat[0][0] and b"\\Seen" in dat[0][0],
                "appended message fetched back with its flags", dat)
    typ, dat = m.append("Drafts", None, '"01-Jan-2020 10:00:00 +0100"', msg)
    t.check(typ == "OK", "APPEND with a date", dat)
    m.select("Drafts")
    typ, dat = m.fetch("1", "(INTERNALDATE FLAGS)")
    t.check(dat == [b'1 (INTERNALDATE "01-Jan-2020 09:00:00 +0000" FLAGS ())'],
            "APPEND date kept as INTERNALDATE", dat)
    big_append = b"Subject: streamed\r\n\r\n" + b"0123456789abcdef" * (2 * 65536) + b"\r\n"
    typ, dat = m.append("Drafts", None, None, big_append)
    t.check(typ == "OK" and b"APPENDUID" in dat[0], "2 MB APPEND streamed to storage", dat)
    typ, dat = m.fetch("2", "(RFC822.SIZE BODY.PEEK[])")
    got = [d[1] for d in dat if isinstance(d, tuple)]
    t.check(got == [big_append], "2 MB APPEND fetched back byte-exact",
            [len(g) for g in got])
    m.select("INBOX")
    typ, dat = m.append("NoSuchBox", None, None, msg)
    t.check(typ == "NO" and b"TRYCREATE" in dat[0], "APPEND to a missing mailbox", dat)

    # --- mailboxes ---------------------------------------------------------------------------
    t.check(m.create("Projects/2024")[0] == "OK", "CREATE Projects/2024")
    typ, dat = m.list('""', "Projects*")
    t.check(any(b"Projects/2024" in x for x in dat), "LIST shows the new mailbox", dat)
    t.check(m.rename("Projects/2024", "Projects/2025")[0] == "OK", "RENAME")
    typ, dat = m.list('""', "Projects/%")
    t.check(dat == [b'(\\HasNoChildren) "/" "Projects/2025"'], "LIST after RENAME", dat)
    typ, dat = m.list('""', "%")
    t.check(b'(\\Noselect \\HasChildren) "/" "Projects"' in dat,
            "LIST % shows the intermediate level as \\Noselect", dat)
    t.check(m.delete("Projects/2025")[0] == "OK", "DELETE")
    typ, dat = m.create("Archive")
    t.check(typ == "NO" and b"ALREADYEXISTS" in dat[0], "CREATE of an existing mailbox", dat)
    typ, dat = m.subscribe("Archive")
    t.check(typ == "OK", "SUBSCRIBE", dat)
    typ, dat = m.namespace()
    t.check(typ == "OK" and dat == [b'(("" "/")) NIL NIL'], "NAMESPACE", dat)
    imaplib.Commands.setdefault("FROB", ("AUTH", "SELECTED"))
    try:
        m._simple_command("FROB")
        t.check(False, "unknown command is BAD")
    except imaplib.IMAP4.error as e:
        t.check("BAD" in str(e) and "Unknown command" in str(e), "unknown command is BAD",
                str(e))

    # --- two sessions: an EXPUNGE seen on NOOP -------------------------------------------------
    m2 = imaplib.IMAP4(mt.HOST, iport, timeout=10)
    m2.login(USER, PW)
    typ, dat = m2.select("INBOX")
    count = int(dat[0])
    t.check(count == 2, "second session selects INBOX", dat)
    m.store("1", "+FLAGS", "(\\Deleted)")
    m.expunge()
    m2.untagged_responses.clear()
    m2.noop()
    t.check(m2.untagged_responses.get("EXPUNGE") == [b"1"],
            "the other session sees * 1 EXPUNGE on NOOP", m2.untagged_responses)
    rc, out, err = mt.run([ctl] + ctlnode + ["deliver", USER], stdin=bodies[0])
    m2.untagged_responses.clear()
    m2.noop()
    t.check(m2.untagged_responses.get("EXISTS") == [b"2"],
            "a delivery shows up as EXISTS on NOOP", m2.untagged_responses)
    m.store("1", "+FLAGS", "(\\Flagged)")
    m2.untagged_responses.clear()
    m2.noop()
    t.check(any(b"\\Flagged" in x for x in m2.untagged_responses.get("FETCH", [])),
            "a flag change shows up as FETCH FLAGS on NOOP", m2.untagged_responses)

    # --- IDLE: a delivery is pushed without a command ---------------------------------------------
    s = mt.connect(iport)
    try:
        mt.recv_line(s)
        s.sendall(b"i1 LOGIN u@example.test pw\r\ni2 SELECT INBOX\r\n")
        resp = mt.recv_until(s, b"i2 OK", timeout=5)
        exists = re.search(rb"\* (\d+) EXISTS", resp)
        s.sendall(b"i3 IDLE\r\n")
        cont = mt.recv_line(s)
        rc, out, err = mt.run([ctl] + ctlnode + ["deliver", USER], stdin=bodies[1])
        t0 = time.monotonic()
        pushed = mt.recv_until(s, b"EXISTS", timeout=5)
        # Measured, not asserted (timings are for the benchmarks).
        print(f"note: IDLE push {1000 * (time.monotonic() - t0):.0f} ms after the delivery returned")
        s.sendall(b"DONE\r\n")
        done = mt.recv_until(s, b"i3 ", timeout=5)
        n_before = int(exists.group(1)) if exists else -1
        t.check(cont.startswith(b"+") and f"* {n_before + 1} EXISTS".encode() in pushed and
                b"i3 OK" in done, "IDLE reports a new message; DONE ends it",
                (resp, cont, pushed, done))
    finally:
        mt.close_quietly(s)

    # --- ESEARCH after ENABLE IMAP4rev2 --------------------------------------------------------
    m2.unselect()
    typ, dat = m2._simple_command("ENABLE", "IMAP4rev2")
    t.check(typ == "OK" and m2.untagged_responses.get("ENABLED") == [b"IMAP4rev2"],
            "ENABLE IMAP4rev2", m2.untagged_responses)
    m2.select("INBOX")
    typ, dat = m2._simple_command("UID", "SEARCH", "ALL")
    es = m2.untagged_responses.pop("ESEARCH", [b""])[0]
    t.check(typ == "OK" and re.match(rb'\(TAG "[A-Z0-9]+"\) UID ALL \d+(:\d+)?', es),
            "SEARCH answers ESEARCH once IMAP4rev2 is enabled", es)
    m2.logout()

    # --- a large message: BODY[] streamed in pieces ----------------------------------------
    big = b"From: big@example.test\r\nSubject: big\r\n\r\n" + b"".join(
        b"line %07d " % i + b"x" * 60 + b"\r\n" for i in range(45000))
    rc, out, err = mt.run([ctl] + ctlnode + ["deliver", USER], stdin=big, timeout=30)
    t.check(rc == 0, "large message delivered", out + err)
    m.noop()
    typ, dat = m.search(None, "SUBJECT", "big")
    seq = dat[0].split()[-1].decode() if dat and dat[0] else "*"
    m.untagged_responses.clear()
    typ, dat = m.fetch(seq, "(BODY.PEEK[])")
    got = [d[1] for d in dat if isinstance(d, tuple)]
    t.check(typ == "OK" and got == [big], f"{len(big)}-byte BODY[] is byte-exact",
            (typ, [len(g) for g in got], [d for d in dat if not isinstance(d, tuple)]))
    typ, dat = m.fetch(seq, "(BODY.PEEK[]<1000000.100>)")
    got = [d[1] for d in dat if isinstance(d, tuple)]
    t.check(typ == "OK" and got == [big[1000000:1000100]], "partial fetch of the large body",
            dat)
    # A client that goes away in the middle of a streamed literal.
    s = mt.connect(iport)
    s.sendall(b"d1 LOGIN u@example.test pw\r\nd2 SELECT INBOX\r\n"
              b"d3 FETCH %s (BODY.PEEK[])\r\n" % seq.encode())
    part = mt.recv_until(s, b"xxxxxxxxxx", timeout=5)
    mt.close_quietly(s)
    time.sleep(0.3)
    t.check(b"BODY[] {" in part and m.noop()[0] == "OK" and n.alive(),
            "a client dropping mid-FETCH leaves the node serving", part[-100:])
    t.check(m.close()[0] == "OK", "CLOSE")
    m.logout()

    # --- quota ----------------------------------------------------------------------------
    rc, out, err = mt.run([ctl] + ctlnode + ["user", "add", "q@example.test", "--password", PW,
                                             "--quota", "1000"])
    t.check(rc == 0, "user with a 1000-byte quota", out + err)
    mq = imaplib.IMAP4(mt.HOST, iport, timeout=10)
    mq.login("q@example.test", PW)
    typ, dat = mq.append("INBOX", None, None, b"Subject: q\r\n\r\n" + b"x" * 2000 + b"\r\n")
    t.check(typ == "NO" and b"OVERQUOTA" in dat[0], "APPEND over quota: NO [OVERQUOTA]", dat)
    mq.logout()

    # --- raw sockets ---------------------------------------------------------------------
    s = mt.connect(iport)
    try:
        mt.recv_line(s)
        s.sendall(b"a1 LOGIN {14}\r\n")
        cont = mt.recv_line(s)
        s.sendall(b"u@example.test {2}\r\n")
        cont2 = mt.recv_line(s)
        s.sendall(b"pw\r\n")
        resp = mt.recv_until(s, b"a1 ")
        resp += mt.recv_until(s, b"\r\n") if not resp.endswith(b"\r\n") else b""
        t.check(cont.startswith(b"+") and cont2.startswith(b"+") and b"a1 OK" in resp,
                "LOGIN with synchronizing literals", (cont, cont2, resp))
        # Pipelined: every command in one write, answers in order.
        s.sendall(b"p1 SELECT INBOX\r\np2 FETCH 1 (UID)\r\np3 NOOP\r\n"
                  b"p4 UID SEARCH ALL\r\np5 STATUS Archive (MESSAGES)\r\np6 LOGOUT\r\n")
        resp = mt.recv_until(s, b"p6 OK", timeout=10)
        tags = re.findall(rb"^(p\d) OK", resp, re.M)
        t.check(tags == [b"p1", b"p2", b"p3", b"p4", b"p5", b"p6"] and
                b"* 1 FETCH (UID" in resp, "pipelined commands answered in order", resp)
    finally:
        mt.close_quietly(s)

    ir = base64.b64encode(b"\0" + USER.encode() + b"\0" + PW.encode())
    greet, resp = raw_exchange(iport, b"s1 AUTHENTICATE PLAIN " + ir + b"\r\n", b"s1 ")
    t.check(b"s1 OK" in resp, "AUTHENTICATE PLAIN with SASL-IR", resp)
    m3 = imaplib.IMAP4(mt.HOST, iport, timeout=10)
    typ, dat = m3.authenticate("PLAIN", lambda _: b"\0" + USER.encode() + b"\0" + PW.encode())
    t.check(typ == "OK", "AUTHENTICATE PLAIN with a continuation", dat)
    m3.logout()
    greet, resp = raw_exchange(iport, b"s1 AUTHENTICATE PLAIN " + base64.b64encode(
        b"\0" + USER.encode() + b"\0nope") + b"\r\n", b"s1 ")
    t.check(b"s1 NO [AUTHENTICATIONFAILED]" in resp, "AUTHENTICATE PLAIN, wrong password", resp)

    greet, resp = raw_exchange(iport, b"".join(b"e%d FROB\r\n" % i for i in range(25)),
                               b"* BYE", timeout=5)
    t.check(b"* BYE too many errors" in resp and resp.count(b" BAD ") == 20,
            "too many errors closes the session", resp[-200:])

    log = n.log_text()
    t.check("comp=imap" in log and "event=login user=u@example.test" in log and
            "event=login_failed" in log, "imap events logged", n.log_tail(10))
    t.check("nope" not in log and "wrong" not in log, "passwords never logged")


mt.main(run, name="imap", budget_s=120)
