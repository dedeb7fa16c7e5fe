"""IMAP extensions of the node, as scripted dialogs with exact responses:
CONDSTORE (SELECT/FETCH/STORE with UNCHANGEDSINCE and [MODIFIED], SEARCH
MODSEQ, STATUS HIGHESTMODSEQ), QRESYNC (ENABLE, SELECT with VANISHED
(EARLIER) after another session's expunges, VANISHED instead of EXPUNGE,
FETCH CHANGEDSINCE/VANISHED), SEARCHRES (SEARCH RETURN (SAVE) then $),
BINARY (decoded base64 and quoted-printable parts byte-exact, literal8 for
NULs, partial, BINARY.SIZE, UNKNOWN-CTE), SAVEDATE; and two sessions that
change and read one mailbox at the same time and must end up agreeing with
each other and with a fresh session on UIDs, flags and MODSEQs."""

import base64
import datetime
import random
import re
import socket
import threading

import mailtest as mt

USER, PW = "u@example.test", "pw"


def free_port():
    with socket.socket() as s:
        s.bind((mt.HOST, 0))
        return s.getsockname()[1]


class Client:
    """A raw IMAP client: one command at a time, responses as lines with
    literals kept inline ("... {n}\\r\\n<n bytes>...")."""

    def __init__(self, port, name):
        self.s = mt.connect(port, timeout=20)
        self.s.settimeout(20)
        self.name = name
        self.buf = b""
        self.n = 0
        self.greeting = self.line()

    def _fill(self):
        d = self.s.recv(1 << 16)
        if not d:
            raise EOFError(f"{self.name}: connection closed")
        self.buf += d

    def line(self):
        out = b""
        while True:
            while b"\r\n" not in self.buf:
                self._fill()
            i = self.buf.index(b"\r\n")
            part, self.buf = self.buf[:i], self.buf[i + 2:]
            out += part
            m = re.search(rb"~?\{(\d+)\}$", part)
            if not m:
                return out
            n = int(m.group(1))
            while len(self.buf) < n:
                self._fill()
            out += b"\r\n" + self.buf[:n]
            self.buf = self.buf[n:]

    def cmd(self, text):
        """Send one command; returns (untagged lines, tagged line without
        the tag)."""
        self.n += 1
        tag = b"%s%d" % (self.name.encode(), self.n)
        if isinstance(text, str):
            text = text.encode()
        self.s.sendall(tag + b" " + text + b"\r\n")
        untagged = []
        while True:
            ln = self.line()
            if ln.startswith(tag + b" "):
                return untagged, ln[len(tag) + 1:]
            untagged.append(ln)

    def close(self):
        mt.close_quietly(self.s)


def literal(line):
    """The data of the first literal in a response line."""
    m = re.search(rb"~?\{(\d+)\}\r\n", line)
    return line[m.end():m.end() + int(m.group(1))] if m else None


def expect(t, c, command, want_untagged, want_tagged, msg):
    got, tagged = c.cmd(command)
    want = [w.encode() if isinstance(w, str) else w for w in want_untagged]
    if isinstance(want_tagged, str):
        want_tagged = want_tagged.encode()
    return t.check(got == want and tagged == want_tagged, msg,
                   "sent: %r\ngot:  %r\n      %r\nwant: %r\n      %r" %
                   (command, got, tagged, want, want_tagged))


def select_lines(n, uidvalidity, uidnext, hms, rev1=True):
    return ["* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)", f"* {n} EXISTS"] + \
        (["* 0 RECENT"] if rev1 else []) + \
        [f"* OK [UIDVALIDITY {uidvalidity}] UIDs valid",
         f"* OK [UIDNEXT {uidnext}] Predicted next UID",
         f"* OK [HIGHESTMODSEQ {hms}] Highest",
         "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] "
         "Flags permitted"]


def plain(i):
    return b"From: a@example.org\r\nSubject: message %d\r\n\r\nbody %d\r\n" % (i, i)


BIN_DATA = bytes(range(256)) * 3 + b"\0tail\r\n\0"
QP_TEXT = ("Caf\u00e9 cr\u00e8me = 2\u20ac, tr\u00e8s " + "long line " * 12 +
           "\r\nsecond line with trailing space \r\nend").encode("utf-8")
BIG_DATA = bytes(random.Random(7).getrandbits(8) for _ in range(700 * 1024))


def qp_encode(data):
    """Quoted-printable (RFC 2045 6.7) with CRLF line ends and soft breaks."""
    out = []
    for line in data.split(b"\r\n"):
        enc = b""
        for i, ch in enumerate(line):
            last = i == len(line) - 1
            if (33 <= ch <= 126 and ch != ord("=")) or (ch in b" \t" and not last):
                e = bytes([ch])
            else:
                e = b"=%02X" % ch
            if len(enc.rsplit(b"\r\n", 1)[-1]) + len(e) > 75:
                enc += b"=\r\n"
            enc += e
        out.append(enc)
    return b"\r\n".join(out)


def mime_message():
    qp = qp_encode(QP_TEXT)
    b64 = base64.encodebytes(BIN_DATA).replace(b"\n", b"\r\n")
    return (b"From: b@example.org\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n"
            b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + qp + b"\r\n"
            b"--XX\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + b64 +
            b"--XX\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n"
            b"begin 644 x\r\n`\r\nend\r\n"
            b"--XX\r\nContent-Type: text/plain\r\n\r\nplain 7bit part\r\n"
            b"--XX--\r\n")


def big_message():
    b64 = base64.encodebytes(BIG_DATA).replace(b"\n", b"\r\n")
    return (b"Subject: big\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + b64)


FETCH_RE = re.compile(rb"^\* (\d+) FETCH \((.*)\)$", re.S)


def fetch_items(line):
    m = FETCH_RE.match(line)
    if not m:
        return None
    body = m.group(2)
    d = {"seq": int(m.group(1))}
    mo = re.search(rb"UID (\d+)", body)
    if mo:
        d["uid"] = int(mo.group(1))
    mo = re.search(rb"FLAGS \(([^)]*)\)", body)
    if mo:
        d["flags"] = tuple(sorted(mo.group(1).split()))
    mo = re.search(rb"MODSEQ \((\d+)\)", body)
    if mo:
        d["modseq"] = int(mo.group(1))
    return d


def state_of(c):
    """(seq, uid, flags, modseq) of every message as this session numbers
    them, and which message it counts last ("*")."""
    got, tagged = c.cmd("FETCH 1:* (UID FLAGS MODSEQ)")
    out = []
    for ln in got:
        d = fetch_items(ln)
        if d and "uid" in d:
            out.append((d["seq"], d["uid"], d.get("flags"), d.get("modseq")))
    last, _ = c.cmd("FETCH * (UID)")
    return out, last, tagged


def run(t):
    node, ctl = mt.binary("mailnode"), mt.binary("mailctl")
    rport, iport = free_port(), free_port()
    argv = [node, "--set", f"rpc.listen=127.0.0.1:{rport}",
            "--set", f"imap.listen=127.0.0.1:{iport}", "--set", "shards.count=4",
            "--set", f"data.dir={t.scratch / 'data'}", "--set", "threads=2"]
    n = t.daemon("node", argv)
    n.wait_tcp(rport, timeout=20)
    n.wait_tcp(iport, timeout=20)
    ctlnode = ["--node", f"127.0.0.1:{rport}"]
    rc, out, err = mt.run([ctl] + ctlnode + ["user", "add", USER, "--password", PW])
    t.require(rc == 0, "user created", out + err)

    def deliver(data):
        rc, out, err = mt.run([ctl] + ctlnode + ["deliver", USER], stdin=data, timeout=30)
        t.require(rc == 0 and "250" in out, "delivered", out + err)

    for i in range(1, 6):
        deliver(plain(i))
    # INBOX: UIDs 1..5 with MODSEQs 2..6 (a new mailbox starts at 1).

    a = Client(iport, "a")
    t.check(b"CONDSTORE QRESYNC ESEARCH SEARCHRES BINARY SAVEDATE" in a.greeting,
            "the extensions are advertised", a.greeting)
    got, tagged = a.cmd(f"LOGIN {USER} {PW}")
    t.require(tagged.startswith(b"OK [CAPABILITY "), "LOGIN", tagged)
    got, _ = a.cmd("STATUS INBOX (UIDVALIDITY)")
    uv = int(re.search(rb"UIDVALIDITY (\d+)", got[0]).group(1))

    # --- CONDSTORE ----------------------------------------------------------
    expect(t, a, "ENABLE CONDSTORE", ["* ENABLED CONDSTORE"], "OK Enabled", "ENABLE CONDSTORE")
    expect(t, a, "SELECT INBOX", select_lines(5, uv, 6, 6), "OK [READ-WRITE] SELECT completed",
           "SELECT reports HIGHESTMODSEQ")
    expect(t, a, "FETCH 1:5 (UID MODSEQ)",
           [f"* {i} FETCH (UID {i} MODSEQ ({i + 1}))" for i in range(1, 6)],
           "OK FETCH completed", "FETCH MODSEQ")
    expect(t, a, "STORE 1 +FLAGS (\\Flagged)",
           ["* 1 FETCH (FLAGS (\\Flagged) UID 1 MODSEQ (7))"], "OK STORE completed",
           "STORE answers the new MODSEQ")

    b = Client(iport, "b")
    b.cmd(f"LOGIN {USER} {PW}")
    b.cmd("SELECT INBOX")
    expect(t, b, "STORE 2 +FLAGS (\\Seen)", ["* 2 FETCH (FLAGS (\\Seen) UID 2)"],
           "OK STORE completed", "a session without CONDSTORE: no MODSEQ")
    expect(t, a, "STORE 1:2 (UNCHANGEDSINCE 7) +FLAGS (\\Answered)",
           ["* 1 FETCH (FLAGS (\\Answered \\Flagged) UID 1 MODSEQ (9))",
            "* 2 FETCH (UID 2 FLAGS (\\Seen) MODSEQ (8))"],
           "OK [MODIFIED 2] Conditional STORE failed",
           "UNCHANGEDSINCE: message 2 changed meanwhile, [MODIFIED 2], its new flags reported")
    expect(t, a, "STORE 1 (UNCHANGEDSINCE 0) -FLAGS (\\Answered)", [],
           "OK [MODIFIED 1] Conditional STORE failed", "UNCHANGEDSINCE 0 always fails")
    expect(t, a, "FETCH 1:* (FLAGS) (CHANGEDSINCE 7)",
           ["* 1 FETCH (FLAGS (\\Answered \\Flagged) MODSEQ (9))",
            "* 2 FETCH (FLAGS (\\Seen) MODSEQ (8))"], "OK FETCH completed",
           "FETCH (CHANGEDSINCE 7)")
    expect(t, a, "UID STORE 3 +FLAGS.SILENT (\\Deleted)", ["* 3 FETCH (UID 3 MODSEQ (10))"],
           "OK UID STORE completed", ".SILENT still reports the MODSEQ")
    expect(t, a, "SEARCH MODSEQ 9", ["* SEARCH 1 3 (MODSEQ 10)"], "OK SEARCH completed",
           "SEARCH MODSEQ with (MODSEQ n)")
    expect(t, a, "SEARCH RETURN (COUNT) MODSEQ 9",
           [f'* ESEARCH (TAG "a{a.n + 1}") COUNT 2 MODSEQ 10'],
           "OK SEARCH completed", "ESEARCH with MODSEQ")
    expect(t, a, "STATUS INBOX (MESSAGES HIGHESTMODSEQ)",
           ["* STATUS INBOX (MESSAGES 5 HIGHESTMODSEQ 10)"], "OK STATUS completed",
           "STATUS HIGHESTMODSEQ")
    expect(t, a, "EXPUNGE", ["* 3 EXPUNGE"], "OK [HIGHESTMODSEQ 11] EXPUNGE completed",
           "EXPUNGE with [HIGHESTMODSEQ]")
    expect(t, b, "NOOP", ["* 3 EXPUNGE", "* 1 FETCH (UID 1 FLAGS (\\Answered \\Flagged))"],
           "OK NOOP completed", "the other session: EXPUNGE and the flag change on NOOP")
    # UIDs 1 2 4 5, HIGHESTMODSEQ 11.

    # --- expunges held back during FETCH/STORE/SEARCH -----------------------
    expect(t, b, "STORE 3 +FLAGS.SILENT (\\Deleted)", [], "OK STORE completed",
           "b marks UID 4 deleted")
    expect(t, b, "EXPUNGE", ["* 3 EXPUNGE"], "OK EXPUNGE completed", "b expunges UID 4")
    expect(t, a, "FETCH 3:4 (UID)", ["* 4 FETCH (UID 5)"], "OK FETCH completed",
           "FETCH keeps the numbering: no EXPUNGE during FETCH, the gone message is skipped")
    expect(t, a, "SEARCH ALL", ["* SEARCH 1 2 4"], "OK SEARCH completed",
           "SEARCH keeps the numbering too")
    expect(t, a, "UID FETCH 5 (FLAGS)",
           ["* 4 FETCH (UID 5 FLAGS () MODSEQ (6))", "* 3 EXPUNGE"], "OK UID FETCH completed",
           "UID FETCH reports the held EXPUNGE after its own responses")
    # UIDs 1 2 5, HIGHESTMODSEQ 13 (store 12, expunge 13).

    # --- QRESYNC ------------------------------------------------------------
    c = Client(iport, "c")
    c.cmd(f"LOGIN {USER} {PW}")
    expect(t, c, f"SELECT INBOX (QRESYNC ({uv} 6))", [], "BAD QRESYNC is not enabled",
           "QRESYNC before ENABLE is BAD")
    expect(t, c, "ENABLE QRESYNC", ["* ENABLED QRESYNC"], "OK Enabled", "ENABLE QRESYNC")
    # The client's cache: UIDs 1..5 as of MODSEQ 6.
    expect(t, c, f"SELECT INBOX (QRESYNC ({uv} 6))",
           select_lines(3, uv, 6, 13) +
           ["* VANISHED (EARLIER) 3:4",
            "* 1 FETCH (UID 1 FLAGS (\\Answered \\Flagged) MODSEQ (9))",
            "* 2 FETCH (UID 2 FLAGS (\\Seen) MODSEQ (8))"],
           "OK [READ-WRITE] SELECT completed",
           "QRESYNC SELECT: VANISHED (EARLIER) for the other sessions' expunges, changed flags")
    expect(t, c, f"EXAMINE INBOX (QRESYNC ({uv} 6 1:3))",
           ["* OK [CLOSED] Previous mailbox closed"] +
           select_lines(3, uv, 6, 13)[:-1] +
           ["* OK [PERMANENTFLAGS ()] Read-only mailbox",
            "* VANISHED (EARLIER) 3",
            "* 1 FETCH (UID 1 FLAGS (\\Answered \\Flagged) MODSEQ (9))",
            "* 2 FETCH (UID 2 FLAGS (\\Seen) MODSEQ (8))"],
           "OK [READ-ONLY] EXAMINE completed", "QRESYNC with known UIDs 1:3")
    expect(t, c, f"SELECT INBOX (QRESYNC ({uv + 1} 6))",
           ["* OK [CLOSED] Previous mailbox closed"] + select_lines(3, uv, 6, 13),
           "OK [READ-WRITE] SELECT completed", "QRESYNC with another UIDVALIDITY: plain SELECT")
    deliver(plain(6))  # UID 6, MODSEQ 14
    expect(t, a, "UID STORE 2 +FLAGS.SILENT (\\Deleted)",
           ["* 2 FETCH (UID 2 MODSEQ (15))", "* 4 EXISTS"], "OK UID STORE completed",
           "a: STORE, then EXISTS for the delivery")
    expect(t, a, "UID EXPUNGE 2", ["* 2 EXPUNGE"], "OK [HIGHESTMODSEQ 16] UID EXPUNGE completed",
           "a: UID EXPUNGE")
    expect(t, c, "NOOP",
           ["* VANISHED 2", "* 3 EXISTS", "* OK [HIGHESTMODSEQ 16] Highest"],
           "OK NOOP completed", "QRESYNC session: VANISHED instead of EXPUNGE, EXISTS, HIGHESTMODSEQ")
    expect(t, c, "UID FETCH 1:* (FLAGS) (CHANGEDSINCE 8 VANISHED)",
           ["* VANISHED (EARLIER) 2:4",
            "* 1 FETCH (UID 1 FLAGS (\\Answered \\Flagged) MODSEQ (9))",
            "* 3 FETCH (UID 6 FLAGS () MODSEQ (14))"],
           "OK UID FETCH completed", "UID FETCH (CHANGEDSINCE 8 VANISHED)")
    expect(t, c, "FETCH 1 (FLAGS) (CHANGEDSINCE 8 VANISHED)", [],
           "BAD VANISHED needs UID FETCH and CHANGEDSINCE", "VANISHED needs UID FETCH")
    expect(t, c, "STORE 2 +FLAGS.SILENT (\\Deleted)", ["* 2 FETCH (UID 5 MODSEQ (17))"],
           "OK STORE completed", "QRESYNC session marks UID 5 deleted")
    expect(t, c, "EXPUNGE", ["* VANISHED 5"], "OK [HIGHESTMODSEQ 18] EXPUNGE completed",
           "QRESYNC EXPUNGE: VANISHED and [HIGHESTMODSEQ]")
    got, tagged = c.cmd("UID MOVE 6 Archive")
    t.check(len(got) == 2 and re.match(rb"^\* OK \[COPYUID \d+ 6 1\] Moved$", got[0]) and
            got[1] == b"* VANISHED 6" and tagged == b"OK [HIGHESTMODSEQ 19] UID MOVE completed",
            "QRESYNC UID MOVE: COPYUID, VANISHED, [HIGHESTMODSEQ]", (got, tagged))
    expect(t, a, "NOOP", ["* 3 EXPUNGE", "* 2 EXPUNGE"], "OK NOOP completed",
           "a sees both expunges, highest sequence number first")
    # INBOX: UID 1 only, HIGHESTMODSEQ 19.

    # --- SEARCHRES ----------------------------------------------------------
    for i in range(7, 11):
        deliver(plain(i))  # UIDs 7..10, MODSEQs 20..23
    d = Client(iport, "d")
    d.cmd(f"LOGIN {USER} {PW}")
    d.cmd("SELECT INBOX")  # 1 7 8 9 10
    expect(t, d, "STORE 2,4 +FLAGS (\\Flagged)",
           ["* 2 FETCH (FLAGS (\\Flagged) UID 7)", "* 4 FETCH (FLAGS (\\Flagged) UID 9)"],
           "OK STORE completed", "flag two messages")
    expect(t, d, "SEARCH RETURN (SAVE) FLAGGED", [], "OK SEARCH completed",
           "SEARCH RETURN (SAVE) answers no ESEARCH")
    expect(t, d, "FETCH $ (UID)", ["* 1 FETCH (UID 1)", "* 2 FETCH (UID 7)",
                                   "* 4 FETCH (UID 9)"], "OK FETCH completed", "FETCH $")
    expect(t, d, "UID SEARCH UID $ UNSEEN", ["* SEARCH 1 7 9"], "OK UID SEARCH completed",
           "UID SEARCH UID $")
    expect(t, d, "SEARCH RETURN (SAVE MIN COUNT) OR $ 5",
           [f'* ESEARCH (TAG "d{d.n + 1}") MIN 1 COUNT 4'], "OK SEARCH completed",
           "SAVE with MIN and COUNT saves everything; $ in the criteria is the old result")
    expect(t, d, "UID FETCH $ (UID)", ["* 1 FETCH (UID 1)", "* 2 FETCH (UID 7)",
                                       "* 4 FETCH (UID 9)", "* 5 FETCH (UID 10)"],
           "OK UID FETCH completed", "UID FETCH $")
    expect(t, d, "SEARCH RETURN (SAVE MAX) ALL", [f'* ESEARCH (TAG "d{d.n + 1}") MAX 5'],
           "OK SEARCH completed", "SAVE MAX saves the maximum only")
    expect(t, d, "STORE $ +FLAGS (\\Answered)", ["* 5 FETCH (FLAGS (\\Answered) UID 10)"],
           "OK STORE completed", "STORE $")
    got, tagged = d.cmd("COPY $ Archive")
    t.check(re.match(rb"^OK \[COPYUID \d+ 10 2\] COPY completed$", tagged) and got == [],
            "COPY $", (got, tagged))
    expect(t, d, "SEARCH RETURN (SAVE) BODY nothing-matches", [], "OK SEARCH completed",
           "an empty result is saved too")
    expect(t, d, "FETCH $ (UID)", [], "OK FETCH completed", "FETCH of an empty $")
    d.cmd("SEARCH RETURN (SAVE) ALL")
    d.cmd("SELECT INBOX")
    expect(t, d, "FETCH $ (UID)", [], "OK FETCH completed", "SELECT resets $")
    d.cmd("SEARCH RETURN (SAVE) ALL")
    expect(t, d, "SEARCH RETURN (SAVE) CHARSET X-NONE ALL", [],
           "NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset", "a failed SEARCH...")
    expect(t, d, "FETCH $ (UID)", [], "OK FETCH completed", "...leaves $ empty")

    # --- BINARY -----------------------------------------------------------------
    deliver(mime_message())  # UID 11, seq 6
    expect(t, d, "ID NIL", ["* 6 EXISTS", '* ID ("name" "mailcluster" "version" "0.1")'],
           "OK ID completed", "a command answered without the store reports EXISTS first")
    deliver(big_message())  # UID 12, seq 7
    got, tagged = d.cmd('LIST "" Archive')
    t.check(len(got) == 2 and got[0] == b"* 7 EXISTS" and got[1].startswith(b"* LIST (") and
            tagged == b"OK LIST completed", "so does LIST", (got, tagged))
    got, tagged = d.cmd("FETCH 6 (BINARY.PEEK[1] BINARY.PEEK[2] BINARY.PEEK[4])")
    t.check(tagged == b"OK FETCH completed" and len(got) == 1 and
            b"BINARY[1] {%d}\r\n" % len(QP_TEXT) in got[0] and
            b"BINARY[2] ~{%d}\r\n" % len(BIN_DATA) in got[0] and
            b"BINARY[4] {15}\r\nplain 7bit part)" in got[0],
            "BINARY: quoted-printable as {n}, base64 with NULs as literal8 ~{n}, 7bit as is",
            (got[0][:200] if got else got, tagged))
    m = re.search(rb"BINARY\[1\] \{(\d+)\}\r\n", got[0]) if got else None
    t.check(m and got[0][m.end():m.end() + int(m.group(1))] == QP_TEXT,
            "quoted-printable part decoded byte-exact")
    m = re.search(rb"BINARY\[2\] ~\{(\d+)\}\r\n", got[0]) if got else None
    t.check(m and got[0][m.end():m.end() + int(m.group(1))] == BIN_DATA,
            "base64 part decoded byte-exact")
    expect(t, d, "FETCH 6 (BINARY.SIZE[1] BINARY.SIZE[2] BINARY.SIZE[9])",
           [f"* 6 FETCH (BINARY.SIZE[1] {len(QP_TEXT)} BINARY.SIZE[2] {len(BIN_DATA)} "
            f"BINARY.SIZE[9] 0)"], "OK FETCH completed", "BINARY.SIZE")
    expect(t, d, "FETCH 6 (BINARY.PEEK[2]<250.10>)",
           [b"* 6 FETCH (BINARY[2]<250> ~{10}\r\n" + BIN_DATA[250:260] + b")"],
           "OK FETCH completed", "BINARY partial with a NUL: literal8")
    expect(t, d, "FETCH 6 (BINARY.PEEK[2]<1.10>)",
           [b"* 6 FETCH (BINARY[2]<1> {10}\r\n" + BIN_DATA[1:11] + b")"],
           "OK FETCH completed", "BINARY partial without NUL: literal")
    expect(t, d, "FETCH 6 (BINARY.PEEK[2]<100000.10>)", ["* 6 FETCH (BINARY[2]<100000> {0}\r\n)"],
           "OK FETCH completed", "BINARY partial beyond the end")
    expect(t, d, "FETCH 6 (BINARY.PEEK[3])", [], "NO [UNKNOWN-CTE] Cannot decode a part's "
           "content-transfer-encoding", "unknown encoding: NO [UNKNOWN-CTE]")
    got, tagged = d.cmd("FETCH 7 (BINARY.PEEK[1] BINARY.SIZE[1])")
    lit = literal(got[0]) if got else None
    t.check(tagged == b"OK FETCH completed" and lit == BIG_DATA and
            got[0].endswith(b" BINARY.SIZE[1] %d)" % len(BIG_DATA)),
            f"{len(BIG_DATA)}-byte base64 part decoded byte-exact (streamed in steps)",
            (tagged, len(lit) if lit else None))
    expect(t, d, "FETCH 7 (BINARY.PEEK[1]<700000.100>)",
           [b"* 7 FETCH (BINARY[1]<700000> ~{100}\r\n" + BIG_DATA[700000:700100] + b")"]
           if b"\0" in BIG_DATA[700000:700100] else
           [b"* 7 FETCH (BINARY[1]<700000> {100}\r\n" + BIG_DATA[700000:700100] + b")"],
           "OK FETCH completed", "partial BINARY deep into a large part")
    expect(t, d, "FETCH 6 (BINARY[4])",
           [b"* 6 FETCH (BINARY[4] {15}\r\nplain 7bit part FLAGS (\\Seen))"],
           "OK FETCH completed", "BINARY without .PEEK sets \\Seen")

    # --- SAVEDATE -----------------------------------------------------------------
    today = datetime.datetime.now(datetime.timezone.utc)
    day = f"{today.day}-{today.strftime('%b')}-{today.year}"
    got, tagged = d.cmd("FETCH 1 (SAVEDATE)")
    t.check(tagged == b"OK FETCH completed" and len(got) == 1 and
            re.match(rb'^\* 1 FETCH \(SAVEDATE "%02d-%s-%d \d\d:\d\d:\d\d \+0000"\)$' %
                     (today.day, today.strftime("%b").encode(), today.year), got[0]),
            "FETCH SAVEDATE", (got, tagged))
    expect(t, d, f"SEARCH SAVEDON {day}", ["* SEARCH 1 2 3 4 5 6 7"], "OK SEARCH completed",
           "SEARCH SAVEDON today")
    expect(t, d, "SEARCH SAVEDBEFORE 1-Jan-2000", ["* SEARCH"], "OK SEARCH completed",
           "SEARCH SAVEDBEFORE")
    expect(t, d, "SEARCH SAVEDSINCE 1-Jan-2000 SAVEDATESUPPORTED", ["* SEARCH 1 2 3 4 5 6 7"],
           "OK SEARCH completed", "SEARCH SAVEDSINCE, SAVEDATESUPPORTED")

    # --- pipelining holds expunges back; IDLE pushes VANISHED ------------------------
    a.cmd("SELECT Drafts")
    for i in range(3):
        a.cmd(b"APPEND Drafts {%d+}\r\n" % len(plain(i)) + plain(i))  # UIDs 1..3
    b.cmd("SELECT Drafts")
    b.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)")
    b.cmd("EXPUNGE")  # UID 1
    a.s.sendall(b"z1 UID FETCH 2 (UID)\r\nz2 NOOP\r\n")
    lines = [a.line() for _ in range(4)]
    t.check(lines == [b"* 2 FETCH (UID 2)", b"z1 OK UID FETCH completed", b"* 1 EXPUNGE",
                      b"z2 OK NOOP completed"],
            "a command with more commands queued behind it holds another session's EXPUNGE",
            lines)
    c.cmd("SELECT Drafts")
    c.s.sendall(b"i1 IDLE\r\n")
    cont = c.line()
    b.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)")
    b.cmd("EXPUNGE")  # UID 2
    pushed = [c.line(), c.line()]
    c.s.sendall(b"DONE\r\n")
    done = c.line()
    t.check(cont == b"+ idling" and pushed == [b"* VANISHED 2", b"* OK [HIGHESTMODSEQ 8] Highest"]
            and done == b"i1 OK IDLE terminated", "IDLE pushes VANISHED to a QRESYNC session",
            (cont, pushed, done))
    for x in (a, b, c, d):
        x.close()

    # --- two sessions at once -------------------------------------------------------
    two_sessions(t, iport, deliver)


def two_sessions(t, iport, deliver):
    """Session 1 changes flags, expunges and appends in a loop while
    session 2 fetches and NOOPs; session 2 keeps a model of the mailbox
    from the untagged responses only. Afterwards sessions 1 and 2, the
    model and a fresh session must agree."""
    s1 = Client(iport, "p")
    s1.cmd(f"LOGIN {USER} {PW}")
    s1.cmd("ENABLE CONDSTORE")
    s1.cmd("CREATE Race")
    for i in range(12):
        s1.cmd(b"APPEND Race {%d+}\r\n" % len(plain(i)) + plain(i))
    s1.cmd("SELECT Race")
    s2 = Client(iport, "q")
    s2.cmd(f"LOGIN {USER} {PW}")
    s2.cmd("ENABLE CONDSTORE")
    got, _ = s2.cmd("SELECT Race")
    model = []  # [uid, flags, modseq] by sequence number
    got, _ = s2.cmd("FETCH 1:* (UID FLAGS MODSEQ)")
    for ln in got:
        f = fetch_items(ln)
        model.append([f["uid"], f["flags"], f["modseq"]])
    errors = []
    done = threading.Event()

    def writer():
        rnd = random.Random(11)
        flags = ["\\Seen", "\\Flagged", "\\Answered", "$Label1", "$Label2"]
        try:
            for i in range(80):
                got, tagged = s1.cmd("UID SEARCH ALL")
                uids = [int(x) for x in got[0].split()[2:]] if got and got[0].startswith(
                    b"* SEARCH") else []
                r = rnd.random()
                if uids and r < 0.55:
                    pick = rnd.sample(uids, min(len(uids), rnd.randint(1, 3)))
                    op = rnd.choice(["+", "-", ""])
                    s1.cmd("UID STORE %s %sFLAGS (%s)" % (",".join(map(str, pick)), op,
                                                         " ".join(rnd.sample(flags, 2))))
                elif uids and r < 0.7:
                    pick = str(rnd.choice(uids))
                    s1.cmd("UID STORE %s +FLAGS.SILENT (\\Deleted)" % pick)
                    s1.cmd("UID EXPUNGE %s" % pick)
                elif r < 0.9:
                    m = plain(100 + i)
                    s1.cmd(b"APPEND Race {%d+}\r\n" % len(m) + m)
                else:
                    s1.cmd("NOOP")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"writer: {e!r}")
        finally:
            done.set()

    def apply(lines, seq_check=True):
        for ln in lines:
            mo = re.match(rb"^\* (\d+) EXPUNGE$", ln)
            if mo:
                q = int(mo.group(1))
                if not 1 <= q <= len(model):
                    errors.append(f"EXPUNGE {q} beyond {len(model)}")
                else:
                    del model[q - 1]
                continue
            mo = re.match(rb"^\* (\d+) EXISTS$", ln)
            if mo:
                q = int(mo.group(1))
                if q < len(model):
                    errors.append(f"EXISTS {q} below {len(model)}")
                while len(model) < q:
                    model.append([None, None, None])
                continue
            f = fetch_items(ln)
            if f:
                q = f["seq"]
                if not 1 <= q <= len(model):
                    errors.append(f"FETCH {q} beyond {len(model)}: {ln!r}")
                    continue
                ent = model[q - 1]
                if "uid" in f:
                    if ent[0] is not None and ent[0] != f["uid"] and seq_check:
                        errors.append(f"seq {q} is UID {ent[0]} here, {f['uid']} there")
                    ent[0] = f["uid"]
                if "flags" in f:
                    ent[1] = f["flags"]
                if "modseq" in f:
                    ent[2] = f["modseq"]

    th = threading.Thread(target=writer)
    th.start()
    rnd = random.Random(5)
    rounds = 0
    while not done.is_set() or rounds < 5:
        rounds += 1
        r = rnd.random()
        if r < 0.3:
            cmd = "NOOP"
        elif r < 0.55 and model:
            q = rnd.randint(1, len(model))
            cmd = f"FETCH {q}:{len(model)} (UID FLAGS)"
        elif r < 0.75 and model:
            cmd = "SEARCH ALL"
        else:
            last = max([e[0] for e in model if e[0]] or [0])
            cmd = f"UID FETCH {last + 1}:* (FLAGS)"
        got, tagged = s2.cmd(cmd)
        if not tagged.startswith(b"OK"):
            errors.append(f"{cmd}: {tagged!r}")
        if cmd == "SEARCH ALL":
            nums = [int(x) for x in got[-1].split()[2:]] if got and got[-1].startswith(
                b"* SEARCH") else []
            if any(x > len(model) for x in nums):
                errors.append(f"SEARCH names {max(nums)} of {len(model)}")
            got = [g for g in got if not g.startswith(b"* SEARCH")]
        apply(got)
    th.join(timeout=60)
    t.check(not errors, f"session 2 ({rounds} commands) saw consistent numbering", errors[:10])
    got, _ = s1.cmd("NOOP")
    got, _ = s2.cmd("NOOP")
    apply(got)
    # New messages the model only knows as EXISTS: a client fetches them.
    last = max([e[0] for e in model if e[0]] or [0])
    got, _ = s2.cmd(f"UID FETCH {last + 1}:* (FLAGS)")
    apply(got)
    st1, last1, _ = state_of(s1)
    st2, last2, _ = state_of(s2)
    s3 = Client(iport, "r")
    s3.cmd(f"LOGIN {USER} {PW}")
    s3.cmd("SELECT Race")
    st3, last3, _ = state_of(s3)
    mod = [(i + 1,) + tuple(e) for i, e in enumerate(model)]
    t.check(st1 and st1 == st2 == st3 and last1 == last2 == last3 and
            last3 == [b"* %d FETCH (UID %d)" % st3[-1][:2]],
            f"sessions 1, 2 and a fresh one agree on {len(st3)} messages (sequence numbers, "
            "UIDs, flags, MODSEQs)", (st1, st2, st3, last1, last2, last3))
    t.check(mod == st3, "session 2's model from untagged responses matches",
            [(x, y) for x, y in zip(mod, st3) if x != y][:10] or (len(mod), len(st3)))
    for x in (s1, s2, s3):
        x.close()


mt.main(run, name="imap_condstore", budget_s=240)
