"""IMAP extensions of the node, against a real mailnode on loopback:
LIST-EXTENDED (selection and return options, several patterns, CHILDINFO,
\\NonExistent), LIST-STATUS, SPECIAL-USE and CREATE-SPECIAL-USE, LSUB,
STATUS with every item (SIZE, DELETED, DELETED-STORAGE, APPENDLIMIT,
HIGHESTMODSEQ), MULTIAPPEND with its all-or-nothing rule, APPENDLIMIT and
TOOBIG, literal8 APPEND, QUOTA (GETQUOTA, GETQUOTAROOT, SETQUOTA refused,
OVERQUOTA on APPEND and COPY). Raw sockets with scripted send/expect steps
check every response line exactly.

Then an imaplib session that does what Thunderbird does on its first
sync, checked against what was delivered, and the golden files: ENVELOPE
and BODYSTRUCTURE of every message of the MIME corpus (tests/data/mime)
fetched through IMAP and compared with tests/golden/imap/<name>.{envelope,
bodystructure}. To write them again (then review each by hand against
RFC 9051 before committing):

    MAIL_BUILD_DIR=build python3 tests/integration/test_imap_ext.py --regen-golden
"""

import imaplib
import re
import socket
import sys

import mailtest as mt

USER, PW = "u@example.test", "pw"
QUSER = "q@example.test"
QUOTA = 20000
MAX_MESSAGE = 200 * 1024  # storage.max_message given to the node
REGEN = "--regen-golden" in sys.argv


def free_port():
    with socket.socket() as s:
        s.bind((mt.HOST, 0))
        return s.getsockname()[1]


class Raw:
    """A plain IMAP connection read response by response (literals
    included), so exact lines can be compared."""

    def __init__(self, port):
        self.s = mt.connect(port, timeout=10)
        self.buf = b""
        self.greeting = self.line()

    def close(self):
        mt.close_quietly(self.s)

    def _fill(self):
        self.s.settimeout(10)
        chunk = self.s.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk

    def line(self):
        """One response line with any literals it announces, CRLF kept."""
        out = b""
        while True:
            while b"\r\n" not in self.buf:
                self._fill()
            i = self.buf.index(b"\r\n") + 2
            part, self.buf = self.buf[:i], self.buf[i:]
            out += part
            m = re.search(rb"~?\{(\d+)\}\r\n$", part)
            if not m:
                return out
            n = int(m.group(1))
            while len(self.buf) < n:
                self._fill()
            out += self.buf[:n]
            self.buf = self.buf[n:]

    def send(self, data):
        self.s.sendall(data.encode() if isinstance(data, str) else data)

    def until_tagged(self, tag):
        """Lines up to and including the tagged response of tag."""
        lines = []
        while True:
            ln = self.line()
            lines.append(ln)
            if ln.startswith(tag.encode() + b" "):
                return lines

    def cmd(self, text, tag=None):
        """Send one command (str, CRLF added) and return its lines as
        str without CRLF."""
        tag = tag or text.split(" ", 1)[0]
        self.send(text + "\r\n")
        return [ln.decode("utf-8", "replace").rstrip("\r\n") for ln in self.until_tagged(tag)]


def expect(t, conn, text, want, what=None):
    """Run text on conn; the response lines must be exactly want."""
    got = conn.cmd(text)
    t.check(got == want, what or text, "\n".join(["want:"] + want + ["got:"] + got))
    return got


def login(port, user=USER):
    c = Raw(port)
    got = c.cmd(f"L LOGIN {user} {PW}")
    if not got or not got[-1].startswith("L OK"):
        raise RuntimeError(f"login failed: {got}")
    return c


def deliver(t, ctl, rport, user, data, what):
    rc, out, err = mt.run([ctl, "--node", f"127.0.0.1:{rport}", "deliver", user], stdin=data)
    t.require(rc == 0 and "250" in out, what, out + err)


# ---- LIST / LSUB / CREATE -------------------------------------------------


def check_list(t, port):
    c = login(port)
    for name in ("Work", "Work/Reports", "Work/Reports/2024", "Work/Old", "Projects/2025"):
        expect(t, c, f"C CREATE {name}", ["C OK CREATE completed"])
    for name in ("Work/Reports", "Work/Reports/2024", "Projects/2025"):
        expect(t, c, f"S SUBSCRIBE {name}", ["S OK SUBSCRIBE completed"])
    # CREATE-SPECIAL-USE (RFC 6154 3)
    expect(t, c, "C CREATE MyDrafts (USE (\\Drafts))", ["C OK CREATE completed"],
           "CREATE with USE (\\Drafts)")
    expect(t, c, "C CREATE Everything (USE (\\All))",
           ["C NO [USEATTR] Unsupported special use"], "CREATE USE (\\All): NO [USEATTR]")
    expect(t, c, "C CREATE Odd (USE (\\Whatever))",
           ["C NO [USEATTR] Unsupported special use"], "CREATE with an unknown use")
    expect(t, c, "C CREATE Odd (USE (Drafts))", ["C BAD Invalid special-use flag"],
           "CREATE USE without a backslash is BAD")
    expect(t, c, 'L LIST "" Odd', ["L OK LIST completed"], "a refused CREATE made nothing")

    expect(t, c, 'L LIST "" %', [
        '* LIST (\\HasNoChildren \\Archive) "/" "Archive"',
        '* LIST (\\HasNoChildren \\Drafts) "/" "Drafts"',
        '* LIST (\\HasNoChildren) "/" INBOX',
        '* LIST (\\HasNoChildren \\Junk) "/" "Junk"',
        '* LIST (\\HasNoChildren \\Drafts) "/" "MyDrafts"',
        '* LIST (\\Noselect \\HasChildren) "/" "Projects"',
        '* LIST (\\HasNoChildren \\Sent) "/" "Sent"',
        '* LIST (\\HasNoChildren \\Trash) "/" "Trash"',
        '* LIST (\\HasChildren) "/" "Work"',
        'L OK LIST completed'], 'LIST "" %: levels, children, special use')
    expect(t, c, 'L LIST (SUBSCRIBED) "" *', [
        '* LIST (\\HasNoChildren \\Subscribed \\Archive) "/" "Archive"',
        '* LIST (\\HasNoChildren \\Subscribed \\Drafts) "/" "Drafts"',
        '* LIST (\\HasNoChildren \\Subscribed) "/" INBOX',
        '* LIST (\\HasNoChildren \\Subscribed \\Junk) "/" "Junk"',
        '* LIST (\\HasNoChildren \\Subscribed) "/" "Projects/2025"',
        '* LIST (\\HasNoChildren \\Subscribed \\Sent) "/" "Sent"',
        '* LIST (\\HasNoChildren \\Subscribed \\Trash) "/" "Trash"',
        '* LIST (\\HasChildren \\Subscribed) "/" "Work/Reports"',
        '* LIST (\\HasNoChildren \\Subscribed) "/" "Work/Reports/2024"',
        'L OK LIST completed'], "LIST (SUBSCRIBED): subscribed names only, \\Subscribed")
    expect(t, c, 'L LIST (SUBSCRIBED RECURSIVEMATCH) "" %', [
        '* LIST (\\HasNoChildren \\Subscribed \\Archive) "/" "Archive"',
        '* LIST (\\HasNoChildren \\Subscribed \\Drafts) "/" "Drafts"',
        '* LIST (\\HasNoChildren \\Subscribed) "/" INBOX',
        '* LIST (\\HasNoChildren \\Subscribed \\Junk) "/" "Junk"',
        '* LIST (\\NonExistent \\HasChildren) "/" "Projects" ("CHILDINFO" ("SUBSCRIBED"))',
        '* LIST (\\HasNoChildren \\Subscribed \\Sent) "/" "Sent"',
        '* LIST (\\HasNoChildren \\Subscribed \\Trash) "/" "Trash"',
        '* LIST (\\HasChildren) "/" "Work" ("CHILDINFO" ("SUBSCRIBED"))',
        'L OK LIST completed'],
        "RECURSIVEMATCH: parents of subscribed names with CHILDINFO, \\NonExistent")
    expect(t, c, 'L LIST (SUBSCRIBED RECURSIVEMATCH) "" Work/%', [
        '* LIST (\\HasChildren \\Subscribed) "/" "Work/Reports" ("CHILDINFO" ("SUBSCRIBED"))',
        'L OK LIST completed'], "RECURSIVEMATCH: CHILDINFO on a subscribed parent")
    expect(t, c, 'L LIST (SUBSCRIBED RECURSIVEMATCH) "" Work*', [
        '* LIST (\\HasChildren \\Subscribed) "/" "Work/Reports" ("CHILDINFO" ("SUBSCRIBED"))',
        '* LIST (\\HasNoChildren \\Subscribed) "/" "Work/Reports/2024"',
        'L OK LIST completed'],
        "RECURSIVEMATCH with *: no unsubscribed parent whose children are listed anyway")
    expect(t, c, 'L LIST (SPECIAL-USE) "" *', [
        '* LIST (\\HasNoChildren \\Archive) "/" "Archive"',
        '* LIST (\\HasNoChildren \\Drafts) "/" "Drafts"',
        '* LIST (\\HasNoChildren \\Junk) "/" "Junk"',
        '* LIST (\\HasNoChildren \\Drafts) "/" "MyDrafts"',
        '* LIST (\\HasNoChildren \\Sent) "/" "Sent"',
        '* LIST (\\HasNoChildren \\Trash) "/" "Trash"',
        'L OK LIST completed'], "LIST (SPECIAL-USE) selects special-use mailboxes")
    expect(t, c, 'L LIST (SPECIAL-USE SUBSCRIBED) "" *', [
        '* LIST (\\HasNoChildren \\Subscribed \\Archive) "/" "Archive"',
        '* LIST (\\HasNoChildren \\Subscribed \\Drafts) "/" "Drafts"',
        '* LIST (\\HasNoChildren \\Subscribed \\Junk) "/" "Junk"',
        '* LIST (\\HasNoChildren \\Subscribed \\Sent) "/" "Sent"',
        '* LIST (\\HasNoChildren \\Subscribed \\Trash) "/" "Trash"',
        'L OK LIST completed'], "selection options combine (SPECIAL-USE SUBSCRIBED)")
    expect(t, c, 'L LIST "" Work/* RETURN (SUBSCRIBED CHILDREN SPECIAL-USE)', [
        '* LIST (\\HasNoChildren) "/" "Work/Old"',
        '* LIST (\\HasChildren \\Subscribed) "/" "Work/Reports"',
        '* LIST (\\HasNoChildren \\Subscribed) "/" "Work/Reports/2024"',
        'L OK LIST completed'], "RETURN (SUBSCRIBED CHILDREN SPECIAL-USE)")
    expect(t, c, 'L LIST "" (INBOX "Work/%" "work/reports" Trash INBOX)', [
        '* LIST (\\HasNoChildren) "/" INBOX',
        '* LIST (\\HasNoChildren \\Trash) "/" "Trash"',
        '* LIST (\\HasNoChildren) "/" "Work/Old"',
        '* LIST (\\HasChildren) "/" "Work/Reports"',
        'L OK LIST completed'], "several patterns: each mailbox once")
    expect(t, c, 'L LIST "Work/" (Old "R%")', [
        '* LIST (\\HasNoChildren) "/" "Work/Old"',
        '* LIST (\\HasChildren) "/" "Work/Reports"',
        'L OK LIST completed'], "the reference applies to every pattern")
    got_plain = c.cmd('L LIST "" %')
    expect(t, c, 'L LIST (REMOTE) "" %', got_plain, "REMOTE changes nothing (no remote mailboxes)")
    expect(t, c, 'L LIST () "" %', got_plain, "empty selection options")
    expect(t, c, 'L LIST "" ""', ['* LIST (\\Noselect) "/" ""', 'L OK LIST completed'],
           'LIST "" "" gives the delimiter')
    expect(t, c, 'L LIST () "" ""', ['L OK LIST completed'],
           "an empty pattern in extended LIST matches nothing")
    expect(t, c, 'L LIST "" inbox', ['* LIST (\\HasNoChildren) "/" INBOX', 'L OK LIST completed'],
           "INBOX matches in any case")
    # wildcards that would make a backtracking matcher take ~C(120, 30) steps
    expect(t, c, "C CREATE " + "a" * 120, ["C OK CREATE completed"])
    expect(t, c, 'L LIST "" "' + "*a" * 30 + '*b"', ['L OK LIST completed'],
           "a pattern full of wildcards is answered at once")
    expect(t, c, 'L LIST "" "' + "%a" * 30 + '%"', [
        '* LIST (\\HasNoChildren) "/" "' + "a" * 120 + '"', 'L OK LIST completed'],
        "a pattern full of wildcards that matches")
    expect(t, c, "C DELETE " + "a" * 120, ["C OK DELETE completed"])

    # LSUB (RFC 3501 6.3.9): an unsubscribed parent of a subscribed name
    # that '%' does not reach is \Noselect
    expect(t, c, 'L LSUB "" %', [
        '* LSUB () "/" "Archive"',
        '* LSUB () "/" "Drafts"',
        '* LSUB () "/" INBOX',
        '* LSUB () "/" "Junk"',
        '* LSUB (\\Noselect) "/" "Projects"',
        '* LSUB () "/" "Sent"',
        '* LSUB () "/" "Trash"',
        '* LSUB (\\Noselect) "/" "Work"',
        'L OK LSUB completed'], "LSUB with %")
    expect(t, c, 'L LSUB "" Work/*', [
        '* LSUB () "/" "Work/Reports"',
        '* LSUB () "/" "Work/Reports/2024"',
        'L OK LSUB completed'], "LSUB with *")

    # LIST-STATUS (RFC 5819): after each selectable mailbox only
    expect(t, c, 'L LIST "" (INBOX Projects Projects/%) RETURN (STATUS (MESSAGES UIDNEXT))', [
        '* LIST (\\HasNoChildren) "/" INBOX',
        '* STATUS INBOX (MESSAGES 3 UIDNEXT 4)',
        '* LIST (\\Noselect \\HasChildren) "/" "Projects"',
        '* LIST (\\HasNoChildren) "/" "Projects/2025"',
        '* STATUS "Projects/2025" (MESSAGES 0 UIDNEXT 1)',
        'L OK LIST completed'], "LIST-STATUS")
    expect(t, c, 'L LIST (SPECIAL-USE) "" "*Drafts" RETURN (STATUS (SIZE) SUBSCRIBED)', [
        '* LIST (\\HasNoChildren \\Subscribed \\Drafts) "/" "Drafts"',
        '* STATUS "Drafts" (SIZE 0)',
        '* LIST (\\HasNoChildren \\Drafts) "/" "MyDrafts"',
        '* STATUS "MyDrafts" (SIZE 0)',
        'L OK LIST completed'], "LIST-STATUS with selection and other return options")

    # bad options
    for cmd, why in (('L LIST (FOO) "" *', "L BAD Unknown LIST selection option"),
                     ('L LIST (RECURSIVEMATCH) "" *', "L BAD RECURSIVEMATCH needs another option"),
                     ('L LIST (SPECIAL-USE RECURSIVEMATCH) "" *',
                      "L BAD RECURSIVEMATCH needs another option"),
                     ('L LIST "" * RETURN (FOO)', "L BAD Unknown LIST return option"),
                     ('L LIST "" * RETURN CHILDREN', "L BAD RETURN needs a list"),
                     ('L LIST "" * RETURN (STATUS (FOO))', "L BAD Unknown status item: FOO"),
                     ('L LIST "" * RETURN (STATUS ())', "L BAD Expected a list of status items"),
                     ('L LIST "" * RETURN (STATUS (MAILBOXID))', "L BAD MAILBOXID is not supported"),
                     ('L LIST "" ()', "L BAD Empty pattern list"),
                     ('L LSUB () "" *', None)):
        got = c.cmd(cmd)
        if why:
            t.check(got == [why], f"{cmd}: {why}", got)
        else:
            t.check(len(got) == 1 and got[0].startswith("L BAD"), f"{cmd}: BAD", got)
    expect(t, c, "N NOOP", ["N OK NOOP completed"], "the session goes on after bad LISTs")
    c.close()


# ---- STATUS -----------------------------------------------------------------


def check_status(t, port, bodies):
    c = login(port)
    uv = c.cmd("S STATUS INBOX (UIDVALIDITY)")[0].split()[-1].rstrip(")")
    expect(t, c, "S STORE 1 +FLAGS (\\Deleted)", ["S BAD No mailbox selected"])
    # Asked before SELECT: STATUS HIGHESTMODSEQ turns CONDSTORE on (RFC 7162
    # 3.1), so the SELECT below reports where the mailbox stands and no
    # later command has to announce it.
    ms = c.cmd("S STATUS INBOX (HIGHESTMODSEQ)")
    hms = re.fullmatch(r"\* STATUS INBOX \(HIGHESTMODSEQ (\d+)\)", ms[0])
    t.check(hms is not None and ms[1] == "S OK STATUS completed",
            "STATUS HIGHESTMODSEQ is a number", ms)
    hms = int(hms.group(1)) if hms else 0
    sel = c.cmd("S SELECT INBOX")
    t.check(sel[-1] == "S OK [READ-WRITE] SELECT completed", "SELECT INBOX", sel)
    # even a silent STORE reports the new MODSEQ under CONDSTORE
    expect(t, c, "S STORE 2 +FLAGS.SILENT (\\Deleted \\Seen)",
           [f"* 2 FETCH (UID 2 MODSEQ ({hms + 1}))", "S OK STORE completed"])
    hms += 1
    total = sum(len(b) for b in bodies)
    expect(t, c, "S STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE RECENT "
                 "HIGHESTMODSEQ APPENDLIMIT DELETED-STORAGE)", [
        f"* STATUS INBOX (MESSAGES 3 UIDNEXT 4 UIDVALIDITY {uv} UNSEEN 2 DELETED 1 "
        f"SIZE {total} RECENT 0 HIGHESTMODSEQ {hms} APPENDLIMIT {MAX_MESSAGE} "
        f"DELETED-STORAGE {len(bodies[1])})",
        "S OK STATUS completed"], "STATUS with every item, on the selected mailbox")
    expect(t, c, "S STATUS Trash (DELETED-STORAGE DELETED SIZE)", [
        '* STATUS "Trash" (DELETED 0 SIZE 0 DELETED-STORAGE 0)', "S OK STATUS completed"],
        "STATUS of an empty mailbox")
    expect(t, c, "S STATUS Nope (MESSAGES)", ["S NO [NONEXISTENT] Mailbox does not exist"],
           "STATUS of a missing mailbox")
    expect(t, c, "S STATUS INBOX (MAILBOXID)", ["S BAD MAILBOXID is not supported"])
    expect(t, c, "S STATUS INBOX (BOGUS)", ["S BAD Unknown status item: BOGUS"])
    expect(t, c, "S STORE 2 -FLAGS.SILENT (\\Deleted \\Seen)",
           [f"* 2 FETCH (UID 2 MODSEQ ({hms + 1}))", "S OK STORE completed"])
    expect(t, c, "S STATUS INBOX (DELETED UNSEEN)", [
        "* STATUS INBOX (UNSEEN 3 DELETED 0)", "S OK STATUS completed"],
        "DELETED follows the flags")
    c.close()


# ---- APPEND, MULTIAPPEND, APPENDLIMIT ------------------------------------------


def msg(subject, size=None):
    m = b"From: a@example.test\r\nSubject: " + subject.encode() + b"\r\n\r\n"
    if size is not None:
        m += b"x" * (size - len(m) - 2) + b"\r\n"
    else:
        m += b"body of " + subject.encode() + b"\r\n"
    return m


def status_of(c, box, items="MESSAGES UIDNEXT SIZE"):
    return c.cmd(f"T STATUS {box} ({items})")[0]


def append_sync(c, tag, box, parts):
    """APPEND with synchronizing literals: parts is a list of (prefix,
    message); every literal waits for '+'. Returns (continuations, lines)."""
    conts = []
    head = f"{tag} APPEND {box}"
    for i, (prefix, body) in enumerate(parts):
        c.send(f"{head}{prefix} {{{len(body)}}}\r\n".encode())
        ln = c.line()
        conts.append(ln)
        if not ln.startswith(b"+"):
            return conts, [ln.decode().rstrip("\r\n")]
        c.send(body)
        head = ""
    c.send(b"\r\n")
    return conts, [ln.decode().rstrip("\r\n") for ln in c.until_tagged(tag)]


def check_append(t, port):
    c = login(port)
    uv = c.cmd("S STATUS Drafts (UIDVALIDITY)")[0].split()[-1].rstrip(")")
    m1, m2, m3 = msg("one"), msg("two"), msg("three")
    conts, got = append_sync(c, "A1", "Drafts", [
        (" (\\Seen)", m1),
        (' (\\Flagged $Todo) "05-Jan-2024 10:11:12 +0100"', m2),
        ("", m3)])
    t.check(conts == [b"+ OK\r\n"] * 3 and got == [f"A1 OK [APPENDUID {uv} 1:3] APPEND completed"],
            "MULTIAPPEND of 3 messages with synchronizing literals: APPENDUID with a UID set",
            (conts, got))
    sel = c.cmd("S SELECT Drafts")
    t.check("* 3 EXISTS" in sel, "the three messages are there", sel)
    c.send(b"F FETCH 1:3 (UID FLAGS INTERNALDATE BODY.PEEK[])\r\n")
    resp = b"".join(c.until_tagged("F"))
    t.check(resp.count(b"BODY[] {") == 3 and m1 in resp and m2 in resp and m3 in resp and
            b"* 2 FETCH (UID 2 FLAGS (\\Flagged $Todo) INTERNALDATE \"05-Jan-2024 09:11:12 +0000\""
            in resp and b"* 1 FETCH (UID 1 FLAGS (\\Seen) " in resp and
            b"* 3 FETCH (UID 3 FLAGS () " in resp,
            "MULTIAPPEND messages fetched back with their flags, date and bytes", resp)

    # LITERAL+ for every message; the selected mailbox reports EXISTS
    c.send(b"A2 APPEND Drafts {%d+}\r\n%s (\\Draft) {%d+}\r\n%s\r\n" % (len(m1), m1, len(m2), m2))
    got = [ln.decode().rstrip("\r\n") for ln in c.until_tagged("A2")]
    t.check(got == ["* 5 EXISTS", f"A2 OK [APPENDUID {uv} 4:5] APPEND completed"],
            "MULTIAPPEND with LITERAL+ into the selected mailbox: EXISTS, then APPENDUID", got)
    before = status_of(c, "Drafts")

    # all or nothing
    conts, got = append_sync(c, "A3", "Drafts", [("", m1), ("", m2), ("", b"")])
    t.check(got == ["A3 NO Zero-length message literal: APPEND cancelled"],
            "a zero-length literal cancels the MULTIAPPEND", got)
    c.send(b"A4 APPEND Drafts {%d+}\r\n%s (\\Bogus) {%d+}\r\n%s\r\n" % (len(m1), m1, len(m2), m2))
    got = [ln.decode().rstrip("\r\n") for ln in c.until_tagged("A4")]
    t.check(got == ["A4 BAD Unknown system flag"], "a bad flag on the second message: BAD", got)
    nul = b"Subject: nul\r\n\r\na\0b\r\n"
    c.send(b"A5 APPEND Drafts {%d+}\r\n%s {%d+}\r\n%s\r\n" % (len(m1), m1, len(nul), nul))
    got = [ln.decode().rstrip("\r\n") for ln in c.until_tagged("A5")]
    t.check(got == ["A5 BAD NUL in message: use literal8"],
            "a NUL in a normal literal is refused, and the message before it too", got)
    c.send(b"A6 APPEND Drafts {%d+}\r\n%s (\\Seen) \"bad date\" {%d+}\r\n%s\r\n"
           % (len(m1), m1, len(m2), m2))
    got = [ln.decode().rstrip("\r\n") for ln in c.until_tagged("A6")]
    t.check(got == ["A6 BAD Invalid date-time"], "a bad date on the second message: BAD", got)
    # more than APPENDLIMIT in total: refused at the literal that goes over,
    # before the client sends it
    half = msg("half", MAX_MESSAGE // 2 + 10)
    conts, got = append_sync(c, "A7", "Drafts", [("", half), ("", half)])
    t.check(conts == [b"+ OK\r\n", b"A7 NO [LIMIT] At most 1000 messages and "
                      b"%d bytes in one APPEND\r\n" % MAX_MESSAGE],
            "MULTIAPPEND over APPENDLIMIT in total: NO [LIMIT] instead of '+'", (conts, got))
    expect(t, c, "N NOOP", ["N OK NOOP completed"], "the session goes on after [LIMIT]")
    t.check(status_of(c, "Drafts") == before, "nothing of the failed MULTIAPPENDs was kept",
            (before, status_of(c, "Drafts")))

    # APPENDLIMIT (RFC 7889): TOOBIG before any byte is sent
    c.send(b"B1 APPEND Drafts {%d}\r\n" % (MAX_MESSAGE + 1))
    got = c.line()
    t.check(got == b"B1 NO [TOOBIG] Message too large\r\n",
            "a literal over APPENDLIMIT: NO [TOOBIG] instead of '+'", got)
    expect(t, c, "N NOOP", ["N OK NOOP completed"], "the client sent nothing of it")
    exact = msg("exact", MAX_MESSAGE)
    conts, got = append_sync(c, "B2", "Drafts", [("", exact)])
    t.check(conts == [b"+ OK\r\n"] and len(got) == 2 and got[0] == "* 6 EXISTS" and
            got[1] == f"B2 OK [APPENDUID {uv} 6] APPEND completed",
            "a message of exactly APPENDLIMIT bytes is taken", got)
    # LITERAL+ over the limit: the server cannot stop it; it reads and
    # drops it and answers BAD (the limit was advertised)
    over = msg("over", MAX_MESSAGE + 100)
    c.send(b"B3 APPEND Drafts {%d+}\r\n%s\r\n" % (len(over), over))
    got = [ln.decode().rstrip("\r\n") for ln in c.until_tagged("B3")]
    t.check(got == ["B3 BAD Literal too large"], "LITERAL+ over APPENDLIMIT: BAD", got)
    expect(t, c, "N NOOP", ["N OK NOOP completed"], "the session goes on after it")

    # literal8 (RFC 3516): NULs allowed
    bin8 = b"Subject: binary\r\nContent-Transfer-Encoding: binary\r\n\r\n\x00\x01\x02\xff\r\n"
    c.send(b"B4 APPEND Drafts ~{%d+}\r\n%s\r\n" % (len(bin8), bin8))
    got = [ln.decode().rstrip("\r\n") for ln in c.until_tagged("B4")]
    t.check(got == ["* 7 EXISTS", f"B4 OK [APPENDUID {uv} 7] APPEND completed"],
            "APPEND of a literal8 with NULs", got)
    c.send(b"F FETCH 7 (RFC822.SIZE BODY.PEEK[])\r\n")
    resp = b"".join(c.until_tagged("F"))
    t.check(resp.startswith(b"* 7 FETCH (RFC822.SIZE %d BODY[] " % len(bin8)) and
            re.search(rb"~?\{%d\}\r\n" % len(bin8) + re.escape(bin8) + rb"\)\r\n", resp),
            "the literal8 message is stored byte-exact", resp)
    c.send(b"B5 APPEND Drafts (\\Seen) UTF8 (~{%d+}\r\n%s)\r\n" % (len(m3), m3))
    got = [ln.decode().rstrip("\r\n") for ln in c.until_tagged("B5")]
    t.check(got == ["* 8 EXISTS", f"B5 OK [APPENDUID {uv} 8] APPEND completed"],
            "APPEND in the UTF8 (~{n}) form", got)
    expect(t, c, "B6 APPEND Nowhere {3+}\r\nabc", ["B6 NO [TRYCREATE] Mailbox does not exist"],
           "APPEND to a missing mailbox: TRYCREATE")
    before = status_of(c, "Drafts")
    # a client that goes away in the middle of a MULTIAPPEND
    d = login(port)
    d.send(b"D APPEND Drafts {%d+}\r\n%s {%d}\r\n" % (len(m1), m1, len(half)))
    cont = d.line()
    d.send(half[:1000])
    d.close()
    expect(t, c, "N NOOP", ["N OK NOOP completed"], "a client dropping mid-MULTIAPPEND")
    t.check(cont == b"+ OK\r\n" and status_of(c, "Drafts") == before,
            "nothing of the dropped MULTIAPPEND was kept", cont)
    c.close()


# ---- QUOTA --------------------------------------------------------------------------


def check_quota(t, port, ctl, rport):
    c = login(port)
    expect(t, c, "Q GETQUOTAROOT INBOX", ["* QUOTAROOT INBOX", "Q OK GETQUOTAROOT completed"],
           "GETQUOTAROOT of a user without a quota: no root")
    expect(t, c, 'Q GETQUOTA ""', ["Q NO [NONEXISTENT] No such quota root"],
           "GETQUOTA without a quota")
    c.close()

    rc, out, err = mt.run([ctl, "--node", f"127.0.0.1:{rport}", "user", "add", QUSER,
                           "--password", PW, "--quota", str(QUOTA)])
    t.require(rc == 0, "user with a quota", out + err)
    c = login(port, QUSER)
    expect(t, c, "Q GETQUOTAROOT INBOX", [
        '* QUOTAROOT INBOX ""', f'* QUOTA "" (STORAGE 0 {QUOTA // 1024})',
        "Q OK GETQUOTAROOT completed"], "GETQUOTAROOT: the user's root and its STORAGE")
    m = msg("q", 12000)
    expect(t, c, f"A APPEND INBOX {{{len(m)}+}}\r\n{m.decode()}",
           [f"A OK [APPENDUID {c.cmd('S STATUS INBOX (UIDVALIDITY)')[0].split()[-1].rstrip(')')} 1]"
            " APPEND completed"], "APPEND within the quota")
    expect(t, c, 'Q GETQUOTA ""', [f'* QUOTA "" (STORAGE {(12000 + 1023) // 1024} '
                                   f'{QUOTA // 1024})', "Q OK GETQUOTA completed"],
           "GETQUOTA: usage in KiB")
    expect(t, c, f"A APPEND Drafts {{{len(m)}+}}\r\n{m.decode()}",
           ["A NO [OVERQUOTA] Quota exceeded"], "APPEND over the quota: NO [OVERQUOTA]")
    small = msg("small", 3000)
    expect(t, c, f"A APPEND Drafts {{{len(small)}+}}\r\n{small.decode()} {{{len(small)}+}}\r\n"
                 f"{small.decode()} {{{len(small)}+}}\r\n{small.decode()}",
           ["A NO [OVERQUOTA] Quota exceeded"],
           "MULTIAPPEND that fits only in part: NO [OVERQUOTA], none kept")
    expect(t, c, "S STATUS Drafts (MESSAGES)", ['* STATUS "Drafts" (MESSAGES 0)',
                                               "S OK STATUS completed"])
    c.cmd("S SELECT INBOX")
    expect(t, c, "C COPY 1 Archive", ["C NO [OVERQUOTA] Quota exceeded"],
           "COPY over the quota: NO [OVERQUOTA]")
    auv = c.cmd("S STATUS Archive (UIDVALIDITY)")[0].split()[-1].rstrip(")")
    expect(t, c, "C MOVE 1 Archive", [f"* OK [COPYUID {auv} 1 1] Moved", "* 1 EXPUNGE",
                                      "C OK MOVE completed"],
           "MOVE needs no more room: it works at the quota")
    expect(t, c, 'Q SETQUOTA "" (STORAGE 100)',
           ["Q NO [NOPERM] Quotas are set by the administrator"], "SETQUOTA is refused")
    expect(t, c, 'Q GETQUOTA "other"', ["Q NO [NONEXISTENT] No such quota root"],
           "GETQUOTA of an unknown root")
    expect(t, c, "Q GETQUOTAROOT Nowhere", ["Q NO [NONEXISTENT] Mailbox does not exist"],
           "GETQUOTAROOT of a missing mailbox")
    expect(t, c, "Q GETQUOTAROOT Archive", [
        '* QUOTAROOT "Archive" ""', f'* QUOTA "" (STORAGE 12 {QUOTA // 1024})',
        "Q OK GETQUOTAROOT completed"], "every mailbox is under the one root")
    # the administrator's tool sets quotas; the session sees the new one
    rc, out, err = mt.run([ctl, "--node", f"127.0.0.1:{rport}", "user", "quota", QUSER,
                           str(10 * QUOTA)])
    t.check(rc == 0, "mailctl user quota", out + err)
    expect(t, c, 'Q GETQUOTA ""', [f'* QUOTA "" (STORAGE 12 {10 * QUOTA // 1024})',
                                   "Q OK GETQUOTA completed"], "GETQUOTA after mailctl user quota")
    rc, out, err = mt.run([ctl, "--node", f"127.0.0.1:{rport}", "user", "quota", QUSER, "0"])
    t.check(rc == 0, "mailctl user quota 0 (unlimited)", out + err)
    expect(t, c, "Q GETQUOTAROOT INBOX", ["* QUOTAROOT INBOX", "Q OK GETQUOTAROOT completed"],
           "no quota root once the quota is gone")
    c.close()
    r = Raw(port)
    got = r.cmd("Q GETQUOTA \"\"")
    t.check(got == ["Q BAD Log in first"], "QUOTA before login is BAD", got)
    r.close()


# ---- a first sync as Thunderbird does it --------------------------------------------


def check_thunderbird(t, port, delivered):
    """delivered: the bodies in INBOX, in order."""
    m = imaplib.IMAP4(mt.HOST, port, timeout=10)
    typ, caps = m.capability()
    capset = set(caps[0].split())
    t.check(typ == "OK" and {b"IMAP4rev1", b"LIST-EXTENDED", b"SPECIAL-USE", b"LIST-STATUS",
                             b"MULTIAPPEND", b"QUOTA", b"QUOTA=RES-STORAGE", b"STATUS=SIZE",
                             b"CREATE-SPECIAL-USE", b"APPENDLIMIT=%d" % MAX_MESSAGE} <= capset,
            "CAPABILITY before login lists the extensions", caps)
    t.require(m.login(USER, PW)[0] == "OK", "LOGIN")
    imaplib.Commands.setdefault("ID", ("NONAUTH", "AUTH", "SELECTED"))
    typ, dat = m._simple_command("ID", '("name" "Thunderbird" "version" "128.0")')
    t.check(typ == "OK" and m.untagged_responses.pop("ID", [None])[0] ==
            b'("name" "mailcluster" "version" "0.1")', "ID", dat)
    if b"LIST-EXTENDED" in capset and b"SPECIAL-USE" in capset:
        typ, dat = m._simple_command("LIST", '""', '"*"', "RETURN", "(SPECIAL-USE SUBSCRIBED)")
        dat = m.untagged_responses.pop("LIST", [])
    else:
        typ, dat = m.list('""', "*")
    boxes = {}
    for line in dat:
        mo = re.match(rb'\(([^)]*)\) "/" "?([^"]*)"?$', line)
        if mo:
            boxes[mo.group(2).decode()] = mo.group(1).decode().split()
    t.check(typ == "OK" and boxes.get("INBOX") == ["\\HasNoChildren", "\\Subscribed"] and
            boxes.get("Sent") == ["\\HasNoChildren", "\\Subscribed", "\\Sent"] and
            boxes.get("Trash") == ["\\HasNoChildren", "\\Subscribed", "\\Trash"] and
            "\\Subscribed" not in boxes.get("Work/Old", ["?"]),
            "LIST RETURN (SPECIAL-USE SUBSCRIBED): folders, roles, subscriptions", dat)
    typ, dat = m.lsub('""', "*")
    subs = {re.match(rb'\([^)]*\) "/" "?([^"]*)"?$', x).group(1).decode() for x in dat if x}
    t.check(typ == "OK" and {n for n, a in boxes.items() if "\\Subscribed" in a} == subs,
            "LSUB agrees with LIST's \\Subscribed", (subs, boxes))
    for name, attrs in boxes.items():
        if "\\Noselect" in attrs or "\\NonExistent" in attrs:
            continue
        typ, dat = m.status(f'"{name}"' if name != "INBOX" else name,
                            "(UIDNEXT MESSAGES UNSEEN RECENT)")
        t.check(typ == "OK" and re.match(rb'^"?' + re.escape(name.encode()) +
                                         rb'"? \(MESSAGES \d+ UIDNEXT \d+ UNSEEN \d+ RECENT 0\)$',
                                         dat[0]), f"STATUS {name}", dat)
    typ, dat = m.status("INBOX", "(UIDNEXT MESSAGES UNSEEN RECENT)")
    t.check(dat == [b"INBOX (MESSAGES %d UIDNEXT %d UNSEEN %d RECENT 0)" %
                    (len(delivered), len(delivered) + 1, len(delivered))],
            "STATUS INBOX counts what was delivered", dat)
    condstore = b"CONDSTORE" in capset
    if condstore:
        # what Thunderbird sends when CONDSTORE is advertised
        m.untagged_responses.clear()
        m.state = "SELECTED"
        typ, dat = m._simple_command("SELECT", "INBOX", "(CONDSTORE)")
        exists = m.untagged_responses.get("EXISTS")
        hms = [x for x in m.untagged_responses.get("OK", []) if x.startswith(b"[HIGHESTMODSEQ ")]
        t.require(typ == "OK" and exists == [b"%d" % len(delivered)] and len(hms) == 1,
                  "SELECT INBOX (CONDSTORE): EXISTS and HIGHESTMODSEQ", m.untagged_responses)
    else:
        typ, dat = m.select("INBOX")
        t.require(typ == "OK" and dat == [b"%d" % len(delivered)], "SELECT INBOX", dat)
    typ, dat = m.fetch("1:*", "(FLAGS)")
    t.check(typ == "OK" and len(dat) == len(delivered) and
            all(re.fullmatch(rb"%d \((FLAGS \(\)( MODSEQ \(\d+\))?|MODSEQ \(\d+\) FLAGS \(\))\)"
                             % (i + 1), d) for i, d in enumerate(dat)),
            "FETCH 1:* (FLAGS)", dat)
    fields = ("From To Cc Subject Date Message-ID Priority X-Priority References Newsgroups "
              "In-Reply-To Content-Type Reply-To")
    typ, dat = m.uid("FETCH", "1:*", f"(UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS ({fields})])")
    got = [d for d in dat if isinstance(d, tuple)]
    ok = typ == "OK" and len(got) == len(delivered)
    for i, (head, hdr) in enumerate(got):
        body = delivered[i] if i < len(delivered) else b""
        want = expected_header_fields(body, fields.split())
        ok = ok and (b"UID %d" % (i + 1)) in head and (b"RFC822.SIZE %d" % len(body)) in head \
            and b"FLAGS ()" in head and hdr == want
        if hdr != want:
            print(f"      | message {i + 1}: want {want!r}\n      | got  {hdr!r}")
    t.check(ok, "UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (...)])",
            [g[0] for g in got])
    typ, dat = m.uid("FETCH", str(len(delivered)), "(UID RFC822.SIZE BODY.PEEK[])")
    got = [d[1] for d in dat if isinstance(d, tuple)]
    t.check(typ == "OK" and got == [delivered[-1]], "body fetch is byte-exact", dat)
    typ, dat = m.uid("FETCH", "1", "(UID BODY.PEEK[1])")
    got = [d[1] for d in dat if isinstance(d, tuple)]
    t.check(typ == "OK" and len(got) == 1 and got[0] in delivered[0],
            "FETCH BODY.PEEK[1] of a single-part message", dat)
    m.logout()


def expected_header_fields(msg, names):
    """What BODY[HEADER.FIELDS (names)] must return: the matching header
    lines (with their folding) in message order, then the blank line."""
    head = msg.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    lines = re.findall(rb"[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*", head)
    want = {n.lower().encode() for n in names}
    out = b"".join(ln for ln in lines if ln.split(b":", 1)[0].strip().lower() in want)
    return out + b"\r\n"


# ---- golden ENVELOPE / BODYSTRUCTURE --------------------------------------------------


def check_golden(t, port, ctl, rport):
    corpus = mt.source_dir() / "tests" / "data" / "mime"
    golden = mt.source_dir() / "tests" / "golden" / "imap"
    names = sorted(p.stem for p in corpus.glob("*.eml"))
    user = "corpus@example.test"
    rc, out, err = mt.run([ctl, "--node", f"127.0.0.1:{rport}", "user", "add", user,
                           "--password", PW])
    t.require(rc == 0, "corpus user", out + err)
    for name in names:
        deliver(t, ctl, rport, user, (corpus / f"{name}.eml").read_bytes(), f"delivered {name}")
    c = login(port, user)
    sel = c.cmd("S EXAMINE INBOX")
    t.require(f"* {len(names)} EXISTS" in sel, "all corpus messages are there", sel)
    if REGEN:
        golden.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        for item in ("ENVELOPE", "BODYSTRUCTURE"):
            c.send(f"G FETCH {i + 1} ({item})\r\n")
            lines = c.until_tagged("G")
            resp = b"".join(lines[:-1])
            prefix = b"* %d FETCH (%s " % (i + 1, item.encode())
            ok = lines[-1].startswith(b"G OK") and resp.startswith(prefix) and \
                resp.endswith(b")\r\n")
            value = resp[len(prefix):-3] if ok else resp
            path = golden / f"{name}.{item.lower()}"
            if REGEN:
                path.write_bytes(value + b"\n")
                continue
            want = path.read_bytes()[:-1] if path.exists() else None
            t.check(ok and value == want, f"{item} of {name} matches {path.name}",
                    f"want: {want!r}\ngot:  {value!r}")
    c.close()
    if REGEN:
        print(f"golden files written to {golden}: review each before committing")


def run(t):
    node, ctl = mt.binary("mailnode"), mt.binary("mailctl")
    rport, iport = free_port(), free_port()
    argv = [node, "--set", f"rpc.listen=127.0.0.1:{rport}",
            "--set", f"imap.listen=127.0.0.1:{iport}", "--set", "shards.count=4",
            "--set", f"data.dir={t.scratch / 'data'}", "--set", "threads=1",
            "--set", f"storage.max_message={MAX_MESSAGE // 1024}k"]
    n = t.daemon("node", argv)
    n.wait_tcp(rport, timeout=20)
    n.wait_tcp(iport, timeout=20)
    if REGEN:
        check_golden(t, iport, ctl, rport)
        return
    rc, out, err = mt.run([ctl, "--node", f"127.0.0.1:{rport}", "user", "add", USER,
                           "--password", PW])
    t.require(rc == 0, "user created", out + err)
    src = mt.source_dir() / "tests" / "data" / "mime"
    bodies = [(src / f"{x}.eml").read_bytes() for x in ("plain_7bit", "nested", "rfc2047")]
    for i, b in enumerate(bodies):
        deliver(t, ctl, rport, USER, b, f"delivered message {i + 1}")

    r = Raw(iport)
    caps = (" IMAP4rev2 IMAP4rev1 LITERAL+ SASL-IR AUTH=PLAIN ENABLE ID IDLE NAMESPACE UIDPLUS "
            "MOVE UNSELECT SPECIAL-USE CHILDREN LIST-EXTENDED LIST-STATUS CREATE-SPECIAL-USE "
            f"STATUS=SIZE MULTIAPPEND QUOTA QUOTA=RES-STORAGE APPENDLIMIT={MAX_MESSAGE}")
    got = r.greeting.decode().rstrip("\r\n")
    words = set(got.split("[CAPABILITY ", 1)[-1].split("]")[0].split())
    t.check(set(caps.split()) <= words, "greeting advertises the extensions", got)
    got = r.cmd("C CAPABILITY")
    t.check(len(got) == 2 and set(caps.split()) <= set(got[0].split()[2:]) and
            got[1] == "C OK CAPABILITY completed", "CAPABILITY", got)
    r.close()

    check_list(t, iport)
    check_status(t, iport, bodies)
    check_thunderbird(t, iport, bodies)
    check_append(t, iport)
    check_quota(t, iport, ctl, rport)
    check_golden(t, iport, ctl, rport)
    rc, secs, killed = n.stop()
    t.check(rc == 0 and not killed and "Sanitizer" not in n.log_text(),
            "the node exits cleanly (no sanitizer report)", n.log_tail(30))


mt.main(run, name="imap_ext", budget_s=150)
