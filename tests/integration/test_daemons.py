"""The daemons as an operator meets them: config errors that name the line,
--print-config that loads back, a real Redis for membership, mailctl, the
Prometheus admin port (curl), SIGHUP certificate reload, SIGTERM drain,
a port already in use, and the local-cluster script."""

import os
import re
import signal
import socket
import subprocess
import time

import mailtest as mt


def free_port():
    with socket.socket() as s:
        s.bind((mt.HOST, 0))
        return s.getsockname()[1]


def run(t):
    redis_server = mt.require_tool("redis-server")
    curl = mt.require_tool("curl")
    node, proxy, ctl = mt.binary("mailnode"), mt.binary("mailproxy"), mt.binary("mailctl")

    # --- configuration -------------------------------------------------
    bad = t.scratch / "bad.conf"
    bad.write_text("# a comment\nlog.level = info\n\nrpc.listen = 127.0.0.1:7001\n"
                   "heartbeat.ttl = 100ms\n")
    rc, out, err = mt.run([node, "--config", bad])
    t.check(rc != 0 and "bad.conf:5" in err and "heartbeat.ttl" in err,
            "out-of-range value is an error naming file, line and key", err)
    bad.write_text("rpc.listn = 127.0.0.1:7001\n")
    rc, out, err = mt.run([node, "--config", bad])
    t.check(rc != 0 and "bad.conf:1" in err and "rpc.listn" in err,
            "unknown key is an error naming file, line and key", err)
    rc, out, err = mt.run([node, "--set", "threads=0"])
    t.check(rc != 0 and "threads" in err, "--set value out of range refused", err)

    rc, printed, err = mt.run([node, "--set", "node.id=n7", "--set", "threads=2",
                               "--print-config"])
    t.check(rc == 0 and "node.id = n7" in printed and "threads = 2" in printed,
            "--print-config shows effective values", err)
    conf = t.scratch / "printed.conf"
    conf.write_text(printed)
    rc, again, err = mt.run([node, "--config", conf, "--print-config"])
    t.check(rc == 0 and again == printed, "--print-config output loads back unchanged", err)

    # --- a real Redis ----------------------------------------------------
    rport = free_port()
    rdir = t.scratch / "redis"
    rdir.mkdir()
    redis = t.daemon("redis", [redis_server, "--port", rport, "--bind", mt.HOST,
                               "--save", "", "--appendonly", "no", "--dir", rdir])
    redis.wait_tcp(rport)
    url = f"redis://127.0.0.1:{rport}/0"

    # --- TLS material for the proxy --------------------------------------
    pki = mt.PKI(t.scratch / "pki")
    ca = pki.ca("Daemon Test CA")
    leaf1 = pki.leaf("mail1", "mail.example.test", ["mail.example.test"], ca)

    # --- mailnode + mailproxy --------------------------------------------
    nport, mport, pmport = free_port(), free_port(), free_port()
    n = t.daemon("node", [node, "--set", "node.id=n1", "--set", f"rpc.listen=127.0.0.1:{nport}",
                          "--set", f"data.dir={t.scratch / 'node-data'}", "--set", "shards.count=16",
                          "--set", f"metrics.listen=127.0.0.1:{mport}", "--set",
                          f"redis.url={url}", "--set", "threads=2", "--set",
                          "heartbeat.interval=200ms"])
    n.wait_tcp(nport)
    n.wait_tcp(mport)
    p = t.daemon("proxy", [proxy, "--set", "proxy.id=p1", "--set",
                           f"metrics.listen=127.0.0.1:{pmport}", "--set", f"redis.url={url}",
                           "--set", f"tls.cert={leaf1.chain}", "--set", f"tls.key={leaf1.key}",
                           "--set", "heartbeat.interval=200ms"])
    p.wait_tcp(pmport)

    # Membership shows up in Redis; mailctl sees both and pings the node.
    deadline = time.monotonic() + 5
    out = ""
    while time.monotonic() < deadline:
        rc, out, err = mt.run([ctl, "--redis", url, "status"])
        if rc == 0 and re.search(r"n1\s+up", out) and re.search(r"p1\s+up", out):
            break
        time.sleep(0.1)
    t.check(re.search(r"n1\s+up\s+127\.0\.0\.1:%d\s+rtt=" % nport, out) is not None,
            "mailctl status: node up with its RPC address and a ping round trip", out)
    t.check(re.search(r"p1\s+up", out) is not None, "mailctl status: proxy up", out)
    rc, out, err = mt.run([ctl, "--json", "--redis", url, "status"])
    t.check(rc == 0 and '"id":"n1","state":"up"' in out, "mailctl status --json", out + err)
    rc, out, err = mt.run([ctl, "ping", f"127.0.0.1:{nport}", "3"])
    t.check(rc == 0 and out.count("pong from") == 3 and "(n1)" in out,
            "mailctl ping: three RPC round trips", out + err)
    rc, out, err = mt.run([ctl, "ping", f"127.0.0.1:{free_port()}", "1"], timeout=15)
    t.check(rc == 1 and "no pong" in out, "mailctl ping of a closed port fails cleanly",
            out + err)
    rc, out, err = mt.run([ctl, "status"], env={k: v for k, v in os.environ.items()
                                                 if k != "REDIS_URL"})
    t.check(rc == 2 and "REDIS_URL" in err, "mailctl without a cluster says how to name one",
            err)

    # Users, delivery and mailboxes through the node's storage.
    env = dict(os.environ, REDIS_URL=url)
    rc, out, err = mt.run([ctl, "user", "add", "Alice@Example.TEST", "--quota", "100000"],
                          env=env, timeout=30)
    m = re.search(r"password (\S+)", out)
    t.check(rc == 0 and "user alice@example.test" in out and m,
            "mailctl user add: canonical address, generated password printed", out + err)
    pw = m.group(1) if m else ""
    rc, out, err = mt.run([ctl, "auth", "alice+x@Example.test"], stdin=pw + "\n", env=env,
                          timeout=30)
    t.check(rc == 0 and out.startswith("ok alice@example.test"),
            "auth with the right password (sub-address, any case)", out + err)
    rc, out, err = mt.run([ctl, "auth", "alice@example.test"], stdin="wrong\n", env=env,
                          timeout=30)
    t.check(rc == 1 and out.startswith("denied"), "auth with a wrong password is denied", out + err)
    rc, out, err = mt.run([ctl, "auth", "nobody@example.test"], stdin=pw + "\n", env=env,
                          timeout=30)
    t.check(rc == 1 and out.startswith("denied"), "auth of an unknown user is denied the same way",
            out + err)
    rc, out, err = mt.run([ctl, "user", "add", "alice@example.test"], env=env, timeout=30)
    t.check(rc == 1 and "exists" in err, "adding the same user twice is refused", out + err)
    msg = "From: bob@example.test\r\nSubject: test\r\n\r\nhello\r\n"
    rc, out, err = mt.run([ctl, "deliver", "alice@example.test", "alice+news@example.test",
                           "nobody@example.test"], stdin=msg, env=env, timeout=30)
    t.check(rc == 1 and "alice@example.test: 250" in out and "alice+news@example.test: 250" in out
            and "nobody@example.test: 550" in out,
            "mailctl deliver: per-recipient status (stored, +tag stored, unknown 550)", out + err)
    rc, out, err = mt.run([ctl, "--json", "mailbox", "list", "alice@example.test"], env=env)
    inbox = [line for line in out.splitlines() if '"name":"INBOX"' in line]
    t.check(rc == 0 and inbox and '"messages":1' in inbox[0] and '"unseen":1' in inbox[0] and
            all(f'"name":"{b}"' in out for b in ("Sent", "Drafts", "Trash", "Junk", "Archive")),
            "mailbox list: one copy for alice and alice+news (duplicates collapsed), "
            "special-use mailboxes exist", out + err)
    big = "Subject: big\r\n\r\n" + "x" * 120000 + "\r\n"
    rc, out, err = mt.run([ctl, "deliver", "alice@example.test"], stdin=big, env=env, timeout=30)
    t.check(rc == 1 and "452 4.2.2" in out, "over quota: 452 4.2.2 for that recipient", out + err)
    rc, out, err = mt.run([ctl, "--json", "user", "show", "alice@example.test"], env=env)
    t.check(rc == 0 and '"used_messages":1' in out, "user show: usage counted", out + err)

    # Directory: domains and aliases; delivery to an alias reaches every target.
    rc, out, err = mt.run([ctl, "user", "add", "bob@example.test", "--password", "pw-bob-1"],
                          env=env, timeout=30)
    rc, out, err = mt.run([ctl, "domain", "add", "Example.Test"], env=env)
    t.check(rc == 0 and out.strip() == "example.test", "domain add (canonical, listed)", out + err)
    rc, out, err = mt.run([ctl, "alias", "set", "team@example.test", "alice@example.test",
                           "BOB@example.test"], env=env)
    t.check(rc == 0 and "team@example.test -> alice@example.test bob@example.test" in out,
            "alias set", out + err)
    rc, out, err = mt.run([ctl, "alias", "set", "x@elsewhere.test", "alice@example.test"], env=env)
    t.check(rc != 0 and "not local" in err, "an alias in a foreign domain is refused", out + err)
    rc, out, err = mt.run([ctl, "resolve", "team+x@example.test"], env=env)
    t.check(rc == 0 and out.split() == ["alice@example.test", "bob@example.test"],
            "resolve: an alias (via +tag) expands to its targets", out + err)
    rc, out, err = mt.run([ctl, "deliver", "team@example.test"], stdin=msg, env=env, timeout=30)
    t.check(rc == 0 and "(alice@example.test): 250" in out and "(bob@example.test): 250" in out,
            "deliver to an alias stores a copy for each target", out + err)
    rc, out, err = mt.run([ctl, "--json", "mailbox", "list", "bob@example.test"], env=env)
    t.check(rc == 0 and '"name":"INBOX"' in out and '"messages":1' in out,
            "the alias target has the message", out + err)

    # Prometheus metrics over HTTP, read with curl.
    rc, out, err = mt.run([curl, "-sS", "-i", f"http://127.0.0.1:{mport}/metrics"])
    t.check(rc == 0 and " 200 " in out.splitlines()[0] and
            "# TYPE mail_loop_iterations_total counter" in out and
            re.search(r"^mail_connections_accepted_total \d+", out, re.M),
            "GET /metrics: Prometheus text with loop and connection counters", out[:400])
    time.sleep(1.2)  # the per-thread counters are folded in every second
    rc, out, err = mt.run([curl, "-sS", f"http://127.0.0.1:{mport}/metrics"])
    m = re.search(r"^mail_connections_accepted_total (\d+)", out, re.M)
    t.check(m and int(m.group(1)) >= 1, "accepted connections are counted", out[:400])
    rc, out, err = mt.run([curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                           f"http://127.0.0.1:{mport}/nope"])
    t.check(out == "404", "unknown admin path: 404", out)
    rc, out, err = mt.run([curl, "-sS", f"http://127.0.0.1:{pmport}/health"])
    t.check(out.strip() == "ok", "proxy /health", out)

    # A second node on the same RPC port is refused, not silently sharing it.
    rc, out, err = mt.run([node, "--set", f"rpc.listen=127.0.0.1:{nport}", "--set",
                           f"data.dir={t.scratch / 'node-data2'}", "--set", "shards.count=4"],
                          timeout=30)
    t.check(rc != 0 and "in use" in err, "a port held by another process is an error", err)
    rc, out, err = mt.run([node, "--set", f"rpc.listen=127.0.0.1:{free_port()}", "--set",
                           f"data.dir={t.scratch / 'node-data'}", "--set", "shards.count=16"],
                          timeout=30)
    t.check(rc != 0 and "lock" in err.lower(),
            "a second node on the same data directory is refused", err)

    # --- SIGHUP: certificate reload in the proxy --------------------------
    p.send_signal(signal.SIGHUP)
    t.check(p.wait_log("tls_reloaded", timeout=5), "SIGHUP reloads the certificates",
            p.log_tail())
    # Break the key file: reload fails, the old certificates stay, it runs on.
    key_backup = leaf1.key.read_bytes() if hasattr(leaf1.key, "read_bytes") else None
    with open(leaf1.key, "w") as f:
        f.write("not a key\n")
    p.send_signal(signal.SIGHUP)
    t.check(p.wait_log("tls_reload_failed", timeout=5) and p.alive(),
            "a broken certificate reload is logged and the proxy keeps running", p.log_tail())
    if key_backup:
        with open(leaf1.key, "wb") as f:
            f.write(key_backup)

    # --- SIGTERM: drain, leave membership, exit 0 --------------------------
    rc_n, took, killed = n.stop(timeout=10)
    t.check(rc_n == 0 and not killed, f"mailnode exits 0 on SIGTERM ({took:.2f}s)",
            n.log_tail())
    t.check("event=draining" in n.log_text() and "event=exit status=0" in n.log_text(),
            "mailnode logs its drain and exit", n.log_tail())
    rc, out, err = mt.run([ctl, "--redis", url, "status"])
    t.check(rc == 1 and re.search(r"n1\s+down", out) is not None,
            "a stopped node leaves the membership at once", out)
    rc_p, took, killed = p.stop(timeout=10)
    t.check(rc_p == 0 and not killed, "mailproxy exits 0 on SIGTERM", p.log_tail())

    # Startup errors are reported, not hidden: no TLS key for the cert.
    rc, out, err = mt.run([proxy, "--set", f"tls.cert={leaf1.chain}"])
    t.check(rc != 0 and "tls.key" in err, "tls.cert without tls.key is refused", err)

    # --- deploy/local-cluster ----------------------------------------------
    # Below the ephemeral range (32768+), so no port picked by the kernel
    # for another socket can collide with the cluster's fixed ports.
    base = 12000 + (os.getpid() % 100) * 100
    cdir = t.scratch / "cluster"
    lc = mt.source_dir() / "deploy" / "local_cluster.py"
    env = dict(os.environ)
    rc, out, err = mt.run(["python3", lc, "up", "--nodes", "2", "--dir", cdir,
                           "--port-base", base], timeout=60, env=env)
    t.check(rc == 0 and "cluster is up" in out, "local-cluster up (2 nodes)", out + err)
    envfile = cdir / "cluster.env"
    kv = {}
    if envfile.exists():
        kv = dict(line.split("=", 1) for line in envfile.read_text().splitlines() if "=" in line)
    t.check(kv.get("REDIS_URL") == f"redis://127.0.0.1:{base + 379}/0" and
            kv.get("IMAP_PORT") == str(base + 143) and os.path.exists(kv.get("CA_FILE", "")) and
            kv.get("DEMO_USER") == "demo@example.test" and len(kv.get("DEMO_PASSWORD", "")) >= 12,
            "cluster.env names Redis, ports, the CA and the demo user", str(kv))
    rc, out, err = mt.run([ctl, "--json", "mailbox", "list", "demo@example.test"],
                          env=dict(os.environ, REDIS_URL=kv.get("REDIS_URL", "")))
    t.check(rc == 0 and '"name":"INBOX"' in out and '"messages":1' in out,
            "the demo user exists with a welcome message in INBOX", out + err)
    import imaplib
    import poplib
    try:
        im = imaplib.IMAP4("127.0.0.1", int(kv.get("DEMO_NODE_IMAP_PORT", "0")), timeout=10)
        im.login(kv["DEMO_USER"], kv["DEMO_PASSWORD"])
        typ, _ = im.select("INBOX")
        typ2, data = im.fetch("1", "(BODY.PEEK[])")
        im.logout()
        body = data[0][1] if data and isinstance(data[0], tuple) else b""
        t.check(typ == "OK" and typ2 == "OK" and b"Welcome to your mail cluster" in body,
                "IMAP on the demo user's node: login and fetch the welcome message")
    except Exception as e:  # noqa: BLE001 - reported as a failed check
        t.check(False, "IMAP on the demo user's node: login and fetch the welcome message",
                repr(e))
    try:
        po = poplib.POP3("127.0.0.1", int(kv.get("DEMO_NODE_POP3_PORT", "0")), timeout=10)
        po.user(kv["DEMO_USER"])
        po.pass_(kv["DEMO_PASSWORD"])
        count, _ = po.stat()
        po.quit()
        t.check(count == 1, "POP3 on the demo user's node: one message")
    except Exception as e:  # noqa: BLE001
        t.check(False, "POP3 on the demo user's node: one message", repr(e))
    curl = mt.require_tool("curl")
    rc, out, err = mt.run([curl, "-sS", "--cacert", kv.get("CA_FILE", ""), "--resolve",
                           f"mail.example.test:{base + 993}:127.0.0.1", "--user",
                           f"{kv.get('DEMO_USER')}:{kv.get('DEMO_PASSWORD')}",
                           f"imaps://mail.example.test:{base + 993}/INBOX;UID=1"], timeout=30)
    t.check(rc == 0 and "Welcome to your mail cluster" in out,
            "curl over IMAPS through the proxy reads the welcome message", out + err)
    swaks = mt.require_tool("swaks")
    rc, out, err = mt.run([swaks, "--server", f"127.0.0.1:{base + 25}", "--from",
                           "someone@example.org", "--to", kv.get("DEMO_USER", ""), "--header",
                           "Subject: through the cluster", "--body", "sent with swaks"],
                          timeout=30)
    t.check(rc == 0 and "250 " in out, "swaks to the demo user on the proxy's SMTP port",
            out[-600:] + err)
    rc, out, err = mt.run([curl, "-sS", "--cacert", kv.get("CA_FILE", ""), "--user",
                           f"{kv.get('DEMO_USER')}:{kv.get('DEMO_PASSWORD')}",
                           f"pop3s://127.0.0.1:{base + 995}/2"], timeout=30)
    t.check(rc == 0 and "sent with swaks" in out and "Received: from" in out,
            "the SMTP message read back over POP3S through the proxy", out + err)
    rc, out, err = mt.run([curl, "-sS", "--cacert", kv.get("CA_FILE", ""), "--user",
                           f"{kv.get('DEMO_USER')}:{kv.get('DEMO_PASSWORD')}",
                           f"pop3s://127.0.0.1:{base + 995}/1"], timeout=30)
    t.check(rc == 0 and "Welcome to your mail cluster" in out,
            "curl over POP3S through the proxy reads the welcome message", out + err)
    rc, out, err = mt.run(["python3", lc, "up", "--dir", cdir], timeout=60, env=env)
    t.check(rc == 0, "local-cluster up twice is safe", out + err)
    rc, out, err = mt.run(["python3", lc, "stop-node", "2", "--dir", cdir], timeout=30)
    rc2, out2, err2 = mt.run(["python3", lc, "status", "--dir", cdir], timeout=30)
    t.check(rc == 0 and rc2 == 1 and re.search(r"node2\s+stopped", out2) and
            re.search(r"node2\s+down", out2), "stop-node: the node is down", out2 + err2)
    rc, out, err = mt.run(["python3", lc, "start-node", "2", "--dir", cdir], timeout=30)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rc2, out2, err2 = mt.run(["python3", lc, "status", "--dir", cdir], timeout=30)
        if rc2 == 0:
            break
        time.sleep(0.2)
    t.check(rc == 0 and rc2 == 0, "start-node: the node is back", out2 + err2)
    pids = []
    for f in (cdir / "pids").glob("*.pid"):
        pids.append(int(f.read_text()))
    rc, out, err = mt.run(["python3", lc, "down", "--dir", cdir], timeout=60)

    def gone(pid):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                return fh.read().split()[2] == "Z"
        except OSError:
            return True
    t.check(rc == 0 and len(pids) == 4 and all(gone(pid) for pid in pids),
            "local-cluster down stops exactly what up started", f"{pids} {out}{err}")


if __name__ == "__main__":
    mt.main(run, name="daemons", budget_s=120)
