"""SORT, THREAD, SORT=DISPLAY and ESORT on the node's IMAP server, driven by
imaplib against a real mailnode on loopback. Eleven messages with crafted
headers are APPENDed with chosen internal dates (after one expunged
message, so UIDs are sequence numbers + 1); every expected order below was
worked out by hand from the table in messages(), not computed by the test.
Also: ESORT with SEARCHRES ($), MODSEQ (CONDSTORE), and another session's
changes reported around SORT (flags always, EXPUNGE only for UID SORT).
"""

import imaplib
import re
import socket

import mailtest as mt

USER, PW = "sorter@example.test", "pw"


def free_port():
    with socket.socket() as s:
        s.bind((mt.HOST, 0))
        return s.getsockname()[1]


# (internal date, body padding, header lines). Sent dates in UTC:
#  1 Jan 1 10:00   2 Jan 1 09:30   3 Jan 2 13:00   4 Jan 3 00:00
#  5 Jan 4 09:00   6 (none: internal Jan 10 00:00)  7 Jan 5   8 Jan 6
#  9 Jan 7   10 Jan 8   11 Jan 9
# Base subjects: 1 2 5 PROJECT PLAN; 3 4 6 LUNCH (3 and 6 are
# forwards); 7 8 ZEBRA; 9 DUPLICATE; 10 LOOP ONE; 11 LOOP TWO.
def messages():
    return [
        ("05-Jan-2024 10:00:00 +0000", 3000, [
            "Date: Mon, 01 Jan 2024 10:00:00 +0000",
            "Subject: Project plan",
            'From: "Zoe Adams" <zoe@example.org>',
            "To: bob@example.com",
            "Cc: carl@example.com",
            "Message-ID: <p1@x>"]),
        ("04-Jan-2024 10:00:00 +0000", 1000, [
            "Date: Mon, 01 Jan 2024 11:30:00 +0200",
            "Subject: Re: Project plan",
            "From: alice@example.org",
            'To: "Aaron" <zed@example.com>',
            "Message-ID: <p2@x>",
            "References: <p1@x>"]),
        ("03-Jan-2024 10:00:00 +0000", 5000, [
            "Date: Tue, 02 Jan 2024 08:00:00 -0500",
            "Subject: [team] Fwd: lunch",
            "From: =?utf-8?q?=C3=89mile_Zola?= <emile@example.net>",
            'To: "Anna" <anna@example.com>',
            "Message-ID: <l1@x>"]),
        ("02-Jan-2024 10:00:00 +0000", 0, [
            "Date: Wed, 03 Jan 2024 00:00:00 +0000",
            "Subject: Lunch",
            'From: "bob" <bob@example.com>',
            "To: carl@example.com",
            'Cc: "Alice" <alice@example.org>',
            "Message-ID: <l2@x>"]),
        ("01-Jan-2024 10:00:00 +0000", 2000, [
            "Date: Thu, 04 Jan 2024 09:00:00 +0000",
            "Subject: Re: Re: project PLAN",
            'From: "Carl" <carl@example.com>',
            "To: bob@example.com",
            "Message-ID: <p3@x>",
            "References: <p1@x>\r\n <p2@x>"]),
        ("10-Jan-2024 00:00:00 +0000", 4000, [
            "Subject: lunch (fwd)",
            "From: dave@example.com",
            "To: bob@example.com",
            "In-Reply-To: <l2@x>"]),
        ("07-Jan-2024 10:00:00 +0000", 6000, [
            "Date: Fri, 05 Jan 2024 09:00:00 +0000",
            "Subject: zebra",
            'From: "Yann" <yann@example.net>',
            "To: undisclosed-recipients:;",
            "Message-ID: <z1@x>",
            "References: <missing@x>"]),
        ("08-Jan-2024 10:00:00 +0000", 500, [
            "Date: Sat, 06 Jan 2024 09:00:00 +0000",
            "Subject: Re: zebra",
            'From: "Xavier" <xavier@example.net>',
            "To: anna@example.com",
            "Message-ID: <z2@x>",
            "References: <missing@x>"]),
        ("09-Jan-2024 10:00:00 +0000", 7000, [
            "Date: Sun, 07 Jan 2024 09:00:00 +0000",
            "Subject: Duplicate",
            "From: a@b.example",
            "To: bob@example.com",
            "Message-ID: <p1@x>"]),
        ("11-Jan-2024 10:00:00 +0000", 2500, [
            "Date: Mon, 08 Jan 2024 09:00:00 +0000",
            "Subject: loop one",
            'From: "Walter" <walter@example.net>',
            "To: bob@example.com",
            "Message-ID: <la@x>",
            "References: <lb@x>"]),
        ("12-Jan-2024 10:00:00 +0000", 3500, [
            "Date: Tue, 09 Jan 2024 09:00:00 +0000",
            "Subject: loop two",
            'From: "Victor" <victor@example.net>',
            "To: bob@example.com",
            "Message-ID: <lb@x>",
            "References: <la@x>"]),
    ]


def build(headers, pad):
    body = ("x" * 70 + "\r\n") * (pad // 72) + "end\r\n"
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode()


def uids(seqs):
    return " ".join(str(int(n) + 1) for n in seqs.split())


def run(t):
    node, ctl = mt.binary("mailnode"), mt.binary("mailctl")
    rport, iport = free_port(), free_port()
    argv = [node, "--set", f"rpc.listen=127.0.0.1:{rport}",
            "--set", f"imap.listen=127.0.0.1:{iport}", "--set", "shards.count=4",
            "--set", f"data.dir={t.scratch / 'data'}", "--set", "threads=1"]
    n = t.daemon("node", argv)
    n.wait_tcp(rport, timeout=20)
    n.wait_tcp(iport, timeout=20)
    rc, out, err = mt.run([ctl, "--node", f"127.0.0.1:{rport}", "user", "add", USER,
                           "--password", PW])
    t.require(rc == 0, "user created", out + err)

    m = imaplib.IMAP4(mt.HOST, iport, timeout=20)
    typ, caps = m.capability()
    capset = set(caps[0].split())
    t.check({b"SORT", b"SORT=DISPLAY", b"ESORT", b"THREAD=ORDEREDSUBJECT",
             b"THREAD=REFERENCES"} <= capset, "CAPABILITY advertises SORT and THREAD", caps)
    m.login(USER, PW)
    # One message expunged first: UIDs are then sequence numbers + 1.
    m.append("INBOX", None, None, b"Subject: gone\r\n\r\nx\r\n")
    sizes = []
    for date, pad, headers in messages():
        data = build(headers, pad)
        sizes.append(len(data))
        typ, dat = m.append("INBOX", None, f'"{date}"', data)
        t.require(typ == "OK", "APPEND with an internal date", dat)
    m.select("INBOX")
    m.store("1", "+FLAGS", "(\\Deleted)")
    m.expunge()
    typ, dat = m.fetch("1:*", "(UID)")
    t.require(typ == "OK" and len(dat) == 11 and dat[0] == b"1 (UID 2)", "11 messages, UID 2..12",
              dat)

    def sort(crit, *search, charset="UTF-8"):
        typ, dat = m.sort(crit, charset, *search)
        return typ, (dat[0] or b"").decode() if typ == "OK" else dat

    def uid_sort(crit, *search):
        typ, dat = m.uid("SORT", crit, "UTF-8", *search)
        return typ, (dat[0] or b"").decode() if typ == "OK" else dat

    cases = [
        ("(ARRIVAL)", "5 4 3 2 1 7 8 9 6 10 11"),
        ("(DATE)", "2 1 3 4 5 7 8 9 10 11 6"),
        ("(REVERSE DATE)", "6 11 10 9 8 7 5 4 3 1 2"),
        ("(SIZE)", "4 8 2 5 10 1 11 6 3 7 9"),
        ("(SUBJECT)", "9 10 11 3 4 6 1 2 5 7 8"),
        ("(SUBJECT DATE)", "9 10 11 3 4 6 2 1 5 7 8"),
        ("(REVERSE SUBJECT REVERSE DATE)", "8 7 5 1 2 6 4 3 11 10 9"),
        ("(FROM)", "9 2 4 5 6 3 11 10 8 7 1"),
        ("(DISPLAYFROM)", "9 2 4 5 6 11 10 8 7 1 3"),
        ("(TO)", "3 8 1 5 6 9 10 11 4 7 2"),
        ("(DISPLAYTO)", "2 3 8 1 5 6 9 10 11 4 7"),
        ("(CC)", "2 3 5 6 7 8 9 10 11 4 1"),
        ("(CC REVERSE SIZE)", "9 7 3 6 11 10 5 2 8 4 1"),
        ("(REVERSE ARRIVAL ARRIVAL)", "11 10 6 9 8 7 1 2 3 4 5"),
    ]
    for crit, want in cases:
        typ, got = sort(crit, "ALL")
        t.check(typ == "OK" and got == want, f"SORT {crit}", (typ, got, want))
    # The sizes really are in the order claimed above.
    by_size = sorted(range(11), key=lambda i: (sizes[i], i))
    t.check(" ".join(str(i + 1) for i in by_size) == "4 8 2 5 10 1 11 6 3 7 9",
            "message sizes ordered as designed", sizes)

    typ, got = sort("(SUBJECT)", "FROM", "example.net")
    t.check(typ == "OK" and got == "10 11 3 7 8", "SORT with search criteria", got)
    typ, got = sort("(DATE)", "SUBJECT", "nomatch")
    t.check(typ == "OK" and got == "", "SORT matching nothing", got)
    typ, got = sort("(DATE)", "ALL", charset="US-ASCII")
    t.check(typ == "OK" and got == "2 1 3 4 5 7 8 9 10 11 6", "SORT with US-ASCII", got)
    typ, got = uid_sort("(DATE)", "ALL")
    t.check(typ == "OK" and got == uids("2 1 3 4 5 7 8 9 10 11 6"), "UID SORT (DATE)", got)
    typ, got = uid_sort("(REVERSE ARRIVAL)", "1:4")
    t.check(typ == "OK" and got == "2 3 4 5", "UID SORT with a sequence set", got)
    typ, got = uid_sort("(SIZE)", "UID", "5:9")
    t.check(typ == "OK" and got == "5 9 6 7 8", "UID SORT with a UID set", got)

    # Errors.
    try:
        typ, dat = m.sort("(DATE)", "ISO-8859-1", "ALL")
    except imaplib.IMAP4.error as e:
        typ, dat = "NO", [str(e).encode()]
    t.check(typ == "NO" and b"BADCHARSET" in dat[0], "unknown charset: NO [BADCHARSET]", dat)
    for bad in ["(FOO)", "()", "(REVERSE)", "DATE"]:
        try:
            typ, dat = m._simple_command("SORT", bad, "UTF-8", "ALL")
        except imaplib.IMAP4.error as e:
            typ, dat = "BAD", [str(e).encode()]
        t.check(typ == "BAD", f"SORT {bad} is BAD", dat)

    # ESORT (RFC 5267): MIN/MAX are the ends of the sort order.
    def esort(*args):
        m.untagged_responses.pop("ESEARCH", None)
        typ, dat = m._simple_command(*args)
        es = m.untagged_responses.pop("ESEARCH", [b""])[0]
        return typ, re.sub(rb'^\(TAG "[^"]*"\) ?', b"", es).decode()

    typ, es = esort("SORT", "RETURN", "(MIN MAX COUNT)", "(DATE)", "UTF-8", "ALL")
    t.check(typ == "OK" and es == "MIN 2 MAX 6 COUNT 11", "ESORT MIN MAX COUNT", es)
    typ, es = esort("SORT", "RETURN", "(ALL)", "(ARRIVAL)", "UTF-8", "ALL")
    t.check(typ == "OK" and es == "ALL 5,4,3,2,1,7:9,6,10:11", "ESORT ALL in sort order", es)
    typ, es = esort("UID", "SORT", "RETURN", "()", "(SIZE)", "UTF-8", "ALL")
    t.check(typ == "OK" and es == "UID ALL 5,9,3,6,11,2,12,7,4,8,10", "UID ESORT RETURN ()", es)
    typ, es = esort("SORT", "RETURN", "(COUNT MIN)", "(DATE)", "UTF-8", "SUBJECT", "nomatch")
    t.check(typ == "OK" and es == "COUNT 0", "ESORT matching nothing", es)

    # THREAD.
    def thread(alg, *search, uid=False, charset="UTF-8"):
        if uid:
            typ, dat = m.uid("THREAD", alg, charset, *search)
        else:
            typ, dat = m.thread(alg, charset, *search)
        return typ, (dat[0] or b"").decode() if typ == "OK" and dat else dat

    typ, got = thread("ORDEREDSUBJECT", "ALL")
    t.check(typ == "OK" and got == "(2 (1)(5))(3 (4)(6))(7 8)(9)(10)(11)",
            "THREAD=ORDEREDSUBJECT", got)
    # REFERENCES: 2 and 5 hang below 1 by References; 6 below 4 by
    # In-Reply-To; 7 and 8 share a missing parent (a dummy, kept at the
    # top); 9 reuses 1's Message-ID and stands alone; 10 and 11 reference
    # each other (the loop is refused: 11 keeps 10); 3, a forward of
    # "lunch", joins 4 by subject.
    typ, got = thread("REFERENCES", "ALL")
    t.check(typ == "OK" and got == "(1 2 5)(4 (3)(6))((7)(8))(9)(11 10)",
            "THREAD=REFERENCES", got)
    typ, got = thread("REFERENCES", "ALL", uid=True)
    t.check(typ == "OK" and got == "(2 3 6)(5 (4)(7))((8)(9))(10)(12 11)",
            "UID THREAD=REFERENCES", got)
    # Without message 1, message 9 is the first with <p1@x>: 2 and 5
    # follow it.
    typ, got = thread("REFERENCES", "NOT", "FROM", "zoe")
    t.check(typ == "OK" and got == "(4 (3)(6))((7)(8))(9 2 5)(11 10)",
            "THREAD=REFERENCES over a search result", got)
    typ, got = thread("REFERENCES", "SUBJECT", "zebra", uid=True)
    t.check(typ == "OK" and got == "((8)(9))", "UID THREAD with search criteria", got)
    typ, got = thread("ORDEREDSUBJECT", "SUBJECT", "nomatch")
    t.check(typ == "OK" and got == "", "THREAD matching nothing", got)
    for alg, cs, want in [("FOO", "UTF-8", "BAD"), ("REFERENCES", "KOI8-R", "NO")]:
        try:
            typ, dat = m.thread(alg, cs, "ALL")
        except imaplib.IMAP4.error as e:
            typ, dat = ("NO" if "BADCHARSET" in str(e) else "BAD"), [str(e).encode()]
        t.check(typ == want, f"THREAD {alg} {cs}: {want}", dat)

    # SEARCHRES (RFC 5182) with ESORT: "$" is the set, MIN/MAX alone save
    # only those; a failed SORT leaves "$" empty.
    typ, es = esort("SORT", "RETURN", "(SAVE)", "(DATE)", "UTF-8", "FROM", "example.net")
    t.check(typ == "OK" and es == "", "SORT RETURN (SAVE) answers no ESEARCH", es)
    typ, dat = m.search(None, "$")
    t.check(typ == "OK" and dat == [b"3 7 8 10 11"], "SEARCH $ after SORT RETURN (SAVE)", dat)
    typ, got = sort("(SUBJECT)", "$")
    t.check(typ == "OK" and got == "10 11 3 7 8", "SORT over $", got)
    typ, es = esort("SORT", "RETURN", "(SAVE MIN)", "(DATE)", "UTF-8", "ALL")
    typ2, dat = m.search(None, "$")
    t.check(typ == "OK" and es == "MIN 2" and dat == [b"2"],
            "SORT RETURN (SAVE MIN) saves the first in sort order", (es, dat))
    typ, es = esort("UID", "SORT", "RETURN", "(SAVE MIN MAX)", "(DATE)", "UTF-8", "ALL")
    typ2, dat = m.uid("SEARCH", "$")
    t.check(typ == "OK" and es == "UID MIN 3 MAX 7" and dat == [b"3 7"],
            "UID SORT RETURN (SAVE MIN MAX)", (es, dat))
    typ, dat = m._simple_command("SORT", "RETURN", "(SAVE)", "(DATE)", "KOI8-R", "ALL")
    typ2, dat2 = m.search(None, "$")
    t.check(typ == "NO" and dat2 in ([b""], [None]), "a failed SORT RETURN (SAVE) empties $",
            (typ, dat, dat2))

    # CONDSTORE (RFC 7162 3.1.5): MODSEQ in the criteria adds the highest
    # mod-sequence of the messages returned.
    typ, dat = m.store("4", "+FLAGS", "(\\Flagged)")
    typ, dat = m.sort("(DATE)", "UTF-8", "MODSEQ", "1")
    line = (dat[0] or b"").decode()
    typ2, fdat = m.fetch("1:*", "(MODSEQ)")
    mods = {int(x.split()[0]): int(re.search(rb"MODSEQ \((\d+)\)", x).group(1)) for x in fdat}
    t.check(typ == "OK" and line == f"2 1 3 4 5 7 8 9 10 11 6 (MODSEQ {mods[4]})" and
            mods[4] == max(mods.values()), "SORT with MODSEQ reports (MODSEQ n)", (line, mods))
    typ, es = esort("SORT", "RETURN", "(MIN)", "(REVERSE DATE)", "UTF-8", "MODSEQ", "1")
    t.check(typ == "OK" and es == f"MIN 6 MODSEQ {mods[6]}",
            "ESORT MIN with MODSEQ: the returned message's mod-sequence", (es, mods))

    # Raw: exact untagged lines, and SORT before SELECT.
    s = mt.connect(iport)
    try:
        mt.recv_line(s)
        s.sendall(b"a1 LOGIN sorter@example.test pw\r\na2 SORT (DATE) UTF-8 ALL\r\n"
                  b"a3 SELECT INBOX\r\na4 SORT (SUBJECT) UTF-8 SUBJECT zebra\r\n"
                  b"a5 THREAD REFERENCES UTF-8 SUBJECT lunch\r\n"
                  b"a6 SORT (DATE) UTF-8 SUBJECT nomatch\r\na7 THREAD REFERENCES UTF-8 "
                  b"SUBJECT nomatch\r\na8 LOGOUT\r\n")
        resp = mt.recv_until(s, b"a8 OK", timeout=10)
        t.check(b"a2 BAD" in resp, "SORT without a selected mailbox is BAD", resp)
        t.check(b"\r\n* SORT 7 8\r\na4 OK SORT completed\r\n" in resp, "raw SORT line", resp)
        t.check(b"\r\n* THREAD (4 (3)(6))\r\na5 OK THREAD completed\r\n" in resp,
                "raw THREAD line", resp)
        t.check(b"\r\n* SORT\r\na6 OK" in resp and b"\r\n* THREAD\r\na7 OK" in resp,
                "empty results", resp)
    finally:
        mt.close_quietly(s)

    # Changes by another session are reported before the tagged reply; a
    # SORT by sequence number holds back EXPUNGE, a UID SORT may send it.
    m2 = imaplib.IMAP4(mt.HOST, iport, timeout=20)
    m2.login(USER, PW)
    m2.select("INBOX")
    m2.store("5", "+FLAGS", "(\\Seen)")
    m.untagged_responses.clear()
    typ, got = sort("(SUBJECT)", "SUBJECT", "zebra")
    t.check(typ == "OK" and got == "7 8" and
            any(b"\\Seen" in x for x in m.untagged_responses.get("FETCH", [])),
            "another session's flag change reported with SORT", m.untagged_responses)
    m2.store("1", "+FLAGS", "(\\Deleted)")
    m2.expunge()
    m2.logout()
    m.untagged_responses.clear()
    typ, got = sort("(DATE)", "ALL")
    t.check(typ == "OK" and got == "2 3 4 5 7 8 9 10 11 6" and
            "EXPUNGE" not in m.untagged_responses,
            "SORT: the expunged message is gone, numbers unchanged", (got, m.untagged_responses))
    m.untagged_responses.clear()
    typ, got = uid_sort("(DATE)", "ALL")
    t.check(typ == "OK" and got == "3 4 5 6 8 9 10 11 12 7" and
            m.untagged_responses.get("EXPUNGE") == [b"1"],
            "UID SORT reports the EXPUNGE", (got, m.untagged_responses))
    typ, got = sort("(DATE)", "ALL")
    t.check(typ == "OK" and got == "1 2 3 4 6 7 8 9 10 5", "SORT after renumbering", got)
    m.logout()


mt.main(run, name="imap_sort", budget_s=120)
