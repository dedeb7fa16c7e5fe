"""Administration over RPC with mailctl against a real node: password
change (old one refused, new one accepted, "" disables password login),
quota change (delivery then over quota with 452, raised again 250),
disable/enable (login refused while disabled, mail still accepted), user
delete (mailboxes gone, login refused, delivery 550, the address can be
created again), domain delete and alias delete, and the argument errors."""

import imaplib
import json
import socket

import mailtest as mt

SHARDS = 4


def run(t):
    node, ctl = mt.binary("mailnode"), mt.binary("mailctl")
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind((mt.HOST, 0))
            ports.append(s.getsockname()[1])
    rpc, imap = ports
    argv = [node, "--set", f"rpc.listen=127.0.0.1:{rpc}", "--set", f"imap.listen=127.0.0.1:{imap}",
            "--set",
            f"data.dir={t.scratch / 'data'}", "--set", f"shards.count={SHARDS}"]
    n = t.daemon("node", argv)
    n.wait_tcp(rpc)
    base = [ctl, "--node", f"127.0.0.1:{rpc}"]

    def ctl_run(*args, stdin=None):
        return mt.run(base + list(args), stdin=stdin, timeout=30)

    def auth(user, pw):
        rc, out, err = ctl_run("auth", user, stdin=pw + "\n")
        return rc == 0 and out.startswith("ok")

    def deliver(user, body="Subject: x\r\n\r\nhello\r\n"):
        rc, out, err = ctl_run("deliver", user, stdin=body)
        return out + err

    def show(user):
        rc, out, err = ctl_run("--json", "user", "show", user)
        return json.loads(out) if rc == 0 else None

    U = "carol@example.test"
    rc, out, err = ctl_run("user", "add", U, "--password", "old-pw")
    t.require(rc == 0, "user add", out + err)

    # --- password ---------------------------------------------------------------
    rc, out, err = ctl_run("user", "passwd", U, "--password", "new-pw")
    t.check(rc == 0 and f"user {U}" in out, "user passwd", out + err)
    t.check(not auth(U, "old-pw") and auth(U, "new-pw"), "old password refused, new accepted")
    rc, out, err = ctl_run("user", "passwd", U)
    gen = [ln.split()[1] for ln in out.splitlines() if ln.strip().startswith("password ")]
    t.check(rc == 0 and gen and auth(U, gen[0]) and not auth(U, "new-pw"),
            "user passwd without a password: generated, printed and in force", out + err)
    rc, out, err = ctl_run("user", "passwd", U, "--password", "")
    t.check(rc == 0 and not auth(U, "") and not auth(U, gen[0] if gen else "x"),
            "an empty password disables password login", out + err)
    ctl_run("user", "passwd", U, "--password", "pw3")
    t.check(auth(U, "pw3"), "a password can be set again")

    # --- quota ------------------------------------------------------------------
    rc, out, err = ctl_run("user", "quota", U, "2000")
    info = show(U)
    t.check(rc == 0 and info and info["quota_bytes"] == 2000, "user quota sets the quota",
            out + err)
    r = deliver(U, "Subject: big\r\n\r\n" + "y" * 3000 + "\r\n")
    t.check("452 4.2.2" in r, "over the new quota: 452 4.2.2", r)
    ctl_run("user", "quota", U, "0")
    r = deliver(U, "Subject: big\r\n\r\n" + "y" * 3000 + "\r\n")
    t.check(": 250" in r and show(U)["quota_bytes"] == 0, "quota 0 = unlimited: 250", r)
    for bad in (["user", "quota", U], ["user", "quota", U, "-5"], ["user", "quota", U, "12x"]):
        rc, out, err = ctl_run(*bad)
        t.check(rc == 2, f"argument error: {' '.join(bad[2:])}", out + err)

    # --- disable / enable ---------------------------------------------------------
    rc, out, err = ctl_run("--json", "user", "disable", U)
    t.check(rc == 0 and json.loads(out)["enabled"] is False and not auth(U, "pw3"),
            "disabled: login refused", out + err)
    r = deliver(U)
    t.check("550 5.2.1" in r, "disabled user: delivery refused with 550 5.2.1", r)
    rc, out, err = ctl_run("user", "enable", U)
    t.check(rc == 0 and auth(U, "pw3") and show(U)["enabled"] is True, "enabled again",
            out + err)

    # --- delete -------------------------------------------------------------------
    used = show(U)["used_messages"]
    t.check(used == 1, "one message stored before delete", used)
    rc, out, err = ctl_run("user", "delete", U)
    t.check(rc == 0 and f"deleted {U}" in out, "user delete", out + err)
    t.check(show(U) is None and not auth(U, "pw3"), "deleted user: show fails, login refused")
    r = deliver(U)
    t.check("550" in r, "deleted user: delivery 550", r)
    rc, out, err = ctl_run("mailbox", "list", U)
    t.check(rc != 0, "deleted user has no mailboxes", out + err)
    rc, out, err = ctl_run("user", "delete", U)
    t.check(rc == 1 and "no such user" in err, "deleting twice: no such user", out + err)
    rc, out, err = ctl_run("--json", "user", "add", U, "--password", "again")
    t.check(rc == 0 and json.loads(out)["used_messages"] == 0 and auth(U, "again"),
            "the address can be created again, empty", out + err)

    # --- sub-addressing: user+tag into folder "tag" when it exists ----------------
    im = imaplib.IMAP4(mt.HOST, imap, timeout=20)
    im.login(U, "again")
    typ, _ = im.create("news")
    t.check(typ == "OK", "IMAP CREATE news")
    r = deliver("carol+news@example.test")
    r2 = deliver("carol+nosuchfolder@example.test")
    r3 = deliver("carol+news@example.test carol@example.test".split()[0])
    rc, out, err = ctl_run("--json", "mailbox", "list", U)
    boxes = {json.loads(ln)["name"]: json.loads(ln) for ln in out.splitlines() if ln.startswith("{")}
    t.check(": 250" in r and ": 250" in r2 and ": 250" in r3 and
            boxes.get("news", {}).get("messages") == 2 and boxes["INBOX"]["messages"] == 1,
            "+news went to folder news, +nosuchfolder to INBOX", (r, r2, out))
    # Duplicates collapse to one copy; the first recipient picks the folder.
    rc, out, err = ctl_run("deliver", "carol@example.test", "carol+news@example.test",
                           stdin="Subject: dup\r\n\r\nx\r\n")
    rc, out2, err = ctl_run("--json", "mailbox", "list", U)
    boxes = {json.loads(ln)["name"]: json.loads(ln) for ln in out2.splitlines()
             if ln.startswith("{")}
    t.check(out.count(": 250") == 2 and boxes["INBOX"]["messages"] == 2 and
            boxes["news"]["messages"] == 2,
            "duplicate recipients in one delivery: one copy, in the first one's folder",
            (out, out2))
    im.logout()

    # --- domain and alias delete ----------------------------------------------------
    ctl_run("domain", "add", "example.test")
    ctl_run("domain", "add", "other.test")
    rc, out, err = ctl_run("alias", "set", "team@example.test", U)
    t.check(rc == 0, "alias set", out + err)
    rc, out, err = ctl_run("resolve", "team@example.test")
    t.check(out.split() == [U], "alias resolves", out + err)
    rc, out, err = ctl_run("alias", "delete", "team@example.test")
    t.check(rc == 0, "alias delete", out + err)
    rc, out, err = ctl_run("resolve", "team@example.test")
    t.check(out.split() == ["team@example.test"], "deleted alias resolves to itself", out + err)
    rc, out, err = ctl_run("domain", "delete", "other.test")
    rc2, out2, err2 = ctl_run("domain", "list")
    t.check(rc == 0 and out2.split() == ["example.test"], "domain delete", out + err + out2)
    rc, out, err = ctl_run("user", "frob", U)
    t.check(rc == 2 and "unknown user command" in err, "unknown user subcommand", err)


mt.main(run, name="admin", budget_s=120)
