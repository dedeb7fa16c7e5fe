"""mailctl against a running local cluster (deploy/local-cluster up with
--test-users): cluster init/status and re-init refused, node
list/add/drain/remove (a node outside the shard map serves nothing and
refuses with NOT_PRIMARY), users (add with --password-stdin, duplicate,
bad quota, passwd, list with paging, remove), domains and aliases (list,
catch-all, unknown domain), DKIM keys and the dns records (SPF and DMARC
syntax, a zone fragment that parses, a DKIM key in DNS that verifies a
signature made with the stored private key), and import of mailcow and
Mailu hashes (BLF-CRYPT, SHA512-CRYPT, ARGON2ID, SSHA256) checked by a
login through the node, rehashed to scrypt at the first one."""

import base64
import json
import os
import pty
import re
import select
import subprocess

import mailtest as mt

PW = "correct horse battery staple"
# Made with tools independent of the project (see tests/unit/test_pwhash_import.c).
HASHES = {
    "blf": "{BLF-CRYPT}$2y$05$abcdefghijklmnopqrstuuFiPhXf1sVd3pCCRO.uVh34H/qI/ZsuS",
    "sha512": "{SHA512-CRYPT}$6$Qw8x.Zp1$9O4P.SMJB7R47GvcuXGLluVKqyfn3A/niIasF.ezSyq67zVogQKJqMI"
              "/4/qVBJsByehpPGTRTEIRpOsyXJ5T8/",
    "argon": "{ARGON2ID}$argon2id$v=19$m=4096,t=3,p=1$c2FsdHNhbHRzYWx0MTZi$"
             "JNY8BvpJ+u4hWuoecaC/DVxomYKqV4jc9x6DnmiM8HM",
    "ssha": "{SSHA256}PdDwo/zjNW4fChnEKQMy2pZSShtJAyJXonyy92vIpUShssPU5fYHGA==",
}


def run(t):
    ctl, node = mt.binary("mailctl"), mt.binary("mailnode")
    mt.require_tool("redis-server")
    openssl = mt.require_tool("openssl")
    base = 2000 + (os.getpid() % 50) * 100
    cdir = t.scratch / "cluster"
    lc = mt.source_dir() / "deploy" / "local_cluster.py"

    rc, out, err = mt.run(["python3", lc, "up", "--nodes", "2", "--dir", cdir, "--port-base",
                           base, "--test-users", "30"], timeout=120)
    t.require(rc == 0 and "cluster is up" in out, "local-cluster up --test-users 30", out + err)
    kv = dict(line.split("=", 1) for line in (cdir / "cluster.env").read_text().splitlines()
              if "=" in line)
    env = dict(os.environ, REDIS_URL=kv["REDIS_URL"])
    env.pop("MAILCTL_PASSWORD", None)

    def m(*args, stdin=None):
        return mt.run([ctl] + [str(a) for a in args], stdin=stdin, env=env, timeout=60)

    def auth(user, pw):
        rc, out, err = m("auth", user, stdin=pw + "\n")
        return rc == 0 and out.startswith("ok " + user)

    try:
        body(t, m, auth, kv, env, cdir, node, openssl, base)
    finally:
        rc, out, err = mt.run(["python3", lc, "down", "--dir", cdir], timeout=60)
        t.check(rc == 0, "local-cluster down", out + err)


def body(t, m, auth, kv, env, cdir, node, openssl, base):
    # --- test users from cluster.env ----------------------------------------------
    t.check(kv.get("USER_PATTERN") == "user%d@example.test" and kv.get("USER_COUNT") == "30" and
            len(kv.get("USER_PASSWORD", "")) >= 12, "cluster.env: USER_PATTERN, USER_COUNT, "
            "USER_PASSWORD", str(kv))
    t.check(auth("user1@example.test", kv["USER_PASSWORD"]) and
            auth("user30@example.test", kv["USER_PASSWORD"]) and
            not auth("user31@example.test", kv["USER_PASSWORD"]) and
            not auth("user2@example.test", "wrong"), "test users log in with the shared password")

    # --- cluster ---------------------------------------------------------------------
    rc, out, err = m("cluster", "status")
    t.check(rc == 0 and "shard map: 256 shards, epoch 1" in out and
            re.search(r"^node1\s+up\s+\S+\s+128\s+1\s+0-127\b", out, re.M) and
            re.search(r"^node2\s+up\s+\S+\s+128\s+1\s+128-255\b", out, re.M) and
            "every shard has a live primary" in out,
            "cluster status: contiguous ranges by node id, epoch 1", out + err)
    rc, out, err = m("--json", "cluster", "status")
    st = json.loads(out) if rc == 0 else {}
    t.check(st.get("initialised") is True and st.get("shards") == 256 and
            [n["primary_of"] for n in st.get("nodes", [])] == [128, 128] and
            "replica" not in out, "cluster status --json (no replication fields invented)", out)
    rc, out, err = m("cluster", "init", "--shards", "64")
    t.check(rc == 1 and "initialised already" in err, "cluster init on an initialised cluster "
            "is refused", out + err)
    rc, out, err = m("cluster", "init", "--shards", "0")
    t.check(rc == 2, "cluster init --shards 0: usage error", out + err)
    rc, out, err = m("cluster", "frob")
    t.check(rc == 2 and "usage" in err, "cluster: unknown subcommand", out + err)

    # --- nodes -----------------------------------------------------------------------
    rc, out, err = m("node", "list")
    t.check(rc == 0 and re.search(r"^node1\s+up", out, re.M) and
            re.search(r"^node2\s+up", out, re.M), "node list", out + err)
    rc, out, err = m("node", "add", "node9")
    t.check(rc == 1 and "not known" in err, "node add of an unknown node fails", out + err)
    rc, out, err = m("node", "add", "node1")
    t.check(rc == 0 and "primary of 128 shards already" in out, "node add of a member", out + err)
    rc, out, err = m("node", "drain", "node2")
    t.check(rc == 3 and "needs replication" in err, "node drain: exit 3, needs replication",
            out + err)
    rc, out, err = m("node", "remove", "node2")
    t.check(rc == 3 and "would lose them" in err, "node remove of a primary: exit 3", out + err)
    rc, out, err = m("node", "add", "bad id!")
    t.check(rc == 2, "node add: a bad id is a usage error", out + err)

    # A node outside the map: registered and reachable, serves no shard.
    rpc = base + 7050
    extra = t.daemon("extra", [node, "--set", "node.id=extra", "--set",
                               f"rpc.listen=127.0.0.1:{rpc}", "--set",
                               f"data.dir={cdir / 'extra'}", "--set", "shards.count=256",
                               "--set", f"redis.url={kv['REDIS_URL']}",
                               "--set", "heartbeat.interval=200ms"])
    extra.wait_tcp(rpc)
    t.require(extra.wait_log("event=shardmap_applied", timeout=10), "extra node read the map",
              extra.log_tail())
    for _ in range(50):
        rc, out, err = m("node", "list")
        if re.search(r"^extra\s+up", out, re.M):
            break
    t.check(re.search(r"^extra\s+up\s+\S+\s+0\s", out, re.M), "node list: extra is up with "
            "no shard", out + err)
    rc, out, err = m("node", "add", "extra")
    t.check(rc == 3 and "reachable" in err and "not possible yet" in err,
            "node add of a live node outside the map: exit 3", out + err)
    rc, out, err = m("--node", f"127.0.0.1:{rpc}", "user", "show", "user1@example.test")
    t.check(rc == 1 and "user's shard not served by this node" in err and
            extra.wait_log("event=not_primary", timeout=5),
            "a node refuses (and logs) a shard the map does not give it", out + err)
    rc, out, err = m("node", "remove", "extra")
    t.check(rc == 1 and "running" in err, "node remove of a running node is refused", out + err)
    extra.stop()
    rc, out, err = m("node", "remove", "extra")
    t.check(rc == 0 and "removed" in out, "node remove of a stopped node outside the map",
            out + err)
    rc, out, err = m("node", "list")
    t.check("extra" not in out, "the removed node is gone from node list", out)

    # --- users -------------------------------------------------------------------------
    U = "erin@example.test"
    rc, out, err = m("user", "add", U, "--password-stdin", "--quota", "10M", stdin="pw-erin-1\n")
    t.check(rc == 0 and f"user {U}" in out and "10485760" in out and "password" not in
            out.split("\n", 1)[1], "user add --password-stdin --quota 10M", out + err)
    t.check(auth(U, "pw-erin-1"), "the password from stdin is in force")
    rc, out, err = m("user", "add", U, "--password-stdin", stdin="x\n")
    t.check(rc == 1 and "exists" in err, "duplicate user refused", out + err)
    for q in ("12x", "-5", "", "1Q"):
        rc, out, err = m("user", "add", "frank@example.test", "--quota", q)
        t.check(rc == 2 and "quota" in err, f"bad quota {q!r} refused", out + err)
    rc, out, err = m("user", "add", "frank@elsewhere.test", "--password-stdin", stdin="x\n")
    t.check(rc == 0 and "not a local domain" in err, "user add in an unknown domain warns",
            out + err)
    rc, out, err = m("user", "add", "not-an-address", "--password-stdin", stdin="x\n")
    t.check(rc == 2, "user add of a bad address: usage error", out + err)
    # Run on a terminal without a password option: a prompt without echo, twice.
    out, status = on_tty(t, [mt.binary("mailctl"), "user", "add", "tty@example.test"], env,
                         [(b"Password: ", b"pw-tty-1\n"), (b"Again: ", b"pw-tty-1\n")])
    t.check(status == 0 and b"user tty@example.test" in out and b"pw-tty-1" not in out and
            auth("tty@example.test", "pw-tty-1"),
            "user add on a terminal prompts twice without echo", out)
    out, status = on_tty(t, [mt.binary("mailctl"), "user", "passwd", "tty@example.test"], env,
                         [(b"Password: ", b"one\n"), (b"Again: ", b"two\n")])
    t.check(status != 0 and b"differ" in out and auth("tty@example.test", "pw-tty-1"),
            "different passwords at the prompt change nothing", out)
    m("user", "remove", "tty@example.test")
    rc, out, err = m("user", "passwd", U, "--password-stdin", stdin="pw-erin-2\n")
    t.check(rc == 0 and auth(U, "pw-erin-2") and not auth(U, "pw-erin-1"),
            "user passwd --password-stdin", out + err)
    rc, out, err = m("user", "quota", U, "2G")
    t.check(rc == 0 and "2147483648" in out, "user quota with a unit", out + err)
    rc, out, err = m("user", "quota", U, "lots")
    t.check(rc == 2, "user quota: bad value", out + err)
    rc, out, err = m("user", "list")
    lines = [ln for ln in out.splitlines() if ln.strip()]
    t.check(rc == 0 and len(lines) == 33 and "33 users" in err,
            "user list: 30 test users, demo, erin, frank", out + err)
    rc, out, err = m("--json", "user", "list", "example.test", "--page", "3")
    users = [json.loads(ln)["user"] for ln in out.splitlines()]
    t.check(rc == 0 and len(users) == 32 and len(set(users)) == 32 and
            "frank@elsewhere.test" not in users,
            "user list DOMAIN --page 3: every user of the domain once, across pages", out + err)
    rc, out, err = m("user", "remove", "frank@elsewhere.test")
    t.check(rc == 0 and "deleted" in out, "user remove", out + err)
    rc, out, err = m("user", "remove", "frank@elsewhere.test")
    t.check(rc == 1 and "no such user" in err, "user remove twice: no such user", out + err)
    rc, out, err = m("user", "frob", U)
    t.check(rc == 2, "user: unknown subcommand", out + err)

    # --- domains and aliases ------------------------------------------------------------
    rc, out, err = m("domain", "add", "other.test")
    rc2, out2, err2 = m("domain", "list")
    t.check(rc == 0 and out2.split() == ["example.test", "other.test"], "domain add, list",
            out + err + out2)
    rc, out, err = m("domain", "remove", "other.test")
    rc2, out2, err2 = m("domain", "list")
    t.check(rc == 0 and out2.split() == ["example.test"], "domain remove", out + err + out2)
    rc, out, err = m("domain", "remove", "other.test")
    t.check(rc == 1 and "no such domain" in err, "domain remove of an unknown domain", out + err)
    rc, out, err = m("alias", "add", "team@example.test", "user1@example.test",
                     "user2@example.test")
    t.check(rc == 0 and "team@example.test -> user1@example.test user2@example.test" in out,
            "alias add", out + err)
    rc, out, err = m("alias", "add", "@example.test", "demo@example.test")
    t.check(rc == 0, "catch-all alias add", out + err)
    rc, out, err = m("alias", "add", "x@unknown.test", "user1@example.test")
    t.check(rc == 1 and "not local" in err, "alias in an unknown domain refused", out + err)
    rc, out, err = m("alias", "list")
    t.check(rc == 0 and out.splitlines() == ["@example.test -> demo@example.test",
                                             "team@example.test -> user1@example.test "
                                             "user2@example.test"], "alias list", out + err)
    rc, out, err = m("--json", "alias", "list", "example.test")
    t.check(rc == 0 and json.loads(out.splitlines()[1]) ==
            {"alias": "team@example.test", "targets": ["user1@example.test", "user2@example.test"]},
            "alias list DOMAIN --json", out + err)
    rc, out, err = m("alias", "remove", "@example.test")
    rc2, out2, err2 = m("alias", "list")
    t.check(rc == 0 and not any(ln.startswith("@") for ln in out2.splitlines()) and
            "team@example.test" in out2, "alias remove", out2)
    rc, out, err = m("alias", "remove", "nobody@example.test")
    t.check(rc == 1 and "no such alias" in err, "alias remove of an unknown alias", out + err)

    # --- DKIM and DNS --------------------------------------------------------------------
    rc, out, err = m("dkim", "keygen", "example.test")
    t.check(rc == 0 and "dkim._domainkey.example.test" in out and "k=rsa" in out,
            "dkim keygen (rsa2048, selector dkim)", out + err)
    rc, out, err = m("dkim", "keygen", "example.test", "--selector", "ed", "--algo", "ed25519")
    t.check(rc == 0 and "k=ed25519" in out, "dkim keygen --algo ed25519", out + err)
    rc, out, err = m("dkim", "keygen", "example.test")
    t.check(rc == 1 and "already has a key" in err, "dkim keygen on a used selector refused",
            out + err)
    rc, out, err = m("dkim", "keygen", "unknown.test")
    t.check(rc == 1 and "not a local domain" in err, "dkim keygen: unknown domain", out + err)
    rc, out, err = m("dkim", "keygen", "example.test", "--algo", "dsa")
    t.check(rc == 2, "dkim keygen: bad algorithm", out + err)
    rc, out, err = m("dns", "unknown.test")
    t.check(rc == 1 and "not a local domain" in err, "dns: unknown domain", out + err)

    rc, zone, err = m("dns", "example.test", "--zone", "--ipv4", "192.0.2.10", "--host",
                      "mx.example.test")
    t.check(rc == 0, "dns --zone", zone + err)
    recs = parse_zone(t, zone)
    txt = {}
    for name, typ, data in recs:
        if typ == "TXT":
            txt.setdefault(name, []).append(data)
    spf = [v for v in txt.get("example.test.", []) if v.startswith("v=spf1")]
    t.check(len(spf) == 1 and re.fullmatch(r"v=spf1( (ip4:[0-9.]+|ip6:[0-9a-f:]+|mx|a))* [-~]all",
                                           spf[0]) and "ip4:192.0.2.10" in spf[0],
            "SPF: one v=spf1 record with mechanisms and -all", spf)
    dmarc = txt.get("_dmarc.example.test.", [""])[0]
    tags = dict(p.strip().split("=", 1) for p in dmarc.split(";") if p.strip())
    t.check(dmarc.startswith("v=DMARC1;") and tags.get("p") in ("none", "quarantine", "reject")
            and tags.get("rua", "").startswith("mailto:"), "DMARC: v=DMARC1 first, p=, rua=",
            dmarc)
    t.check(("example.test.", "MX", "10 mx.example.test.") in recs and
            ("mx.example.test.", "A", "192.0.2.10") in recs, "MX and A records", recs)
    t.check(re.fullmatch(r"v=STSv1; id=[A-Za-z0-9]{1,32}",
                         txt.get("_mta-sts.example.test.", [""])[0]) and
            txt.get("_smtp._tls.example.test.", [""])[0].startswith("v=TLSRPTv1; rua=mailto:"),
            "MTA-STS and TLS-RPT records", txt)
    srv = {n for n, typ, d in recs if typ == "SRV"}
    t.check({"_submissions._tcp.example.test.", "_imaps._tcp.example.test.",
             "_pop3s._tcp.example.test.", "_autodiscover._tcp.example.test."} <= srv and
            "; PTR:" in zone and "mta-sts.txt" in zone and "mode: enforce" in zone,
            "SRV records, the PTR note and the MTA-STS policy", zone)

    rc, out, err = m("--json", "dkim", "show", "example.test", "--private")
    keys = {json.loads(ln)["selector"]: json.loads(ln) for ln in out.splitlines()}
    t.check(rc == 0 and set(keys) == {"dkim", "ed"}, "dkim show --private --json", out + err)
    for sel, algo in (("dkim", "rsa"), ("ed", "ed25519")):
        dns_txt = txt.get(f"{sel}._domainkey.example.test.", [""])[0]
        dtags = dict(p.strip().split("=", 1) for p in dns_txt.split(";") if p.strip())
        ok = (dtags.get("v") == "DKIM1" and dtags.get("k") == algo and sel in keys and
              verify_with_dns_key(t, openssl, algo, dtags.get("p", ""),
                                  keys[sel]["private_pem"]))
        t.check(ok, f"DKIM {algo}: the key in DNS verifies a signature made with the stored "
                "private key", dns_txt)
    rc, out, err = m("dkim", "remove", "example.test", "ed")
    rc2, out2, err2 = m("dkim", "show", "example.test")
    t.check(rc == 0 and "k=ed25519" not in out2 and "k=rsa" in out2, "dkim remove", out + out2)

    # --- import ---------------------------------------------------------------------------
    tsv = t.scratch / "mailcow.tsv"
    tsv.write_text("username\tpassword\tquota\tactive\n"
                   f"blf@import.test\t{HASHES['blf']}\t1048576\t1\n"
                   f"sha512@import.test\t{HASHES['sha512']}\t0\t1\n"
                   f"ssha@import.test\t{HASHES['ssha']}\t0\t1\n"
                   f"off@import.test\t{HASHES['ssha']}\t0\t0\n")
    jsonl = t.scratch / "mailu.jsonl"
    jsonl.write_text(json.dumps({"email": "Argon@Import.test", "password_hash": HASHES["argon"],
                                 "quota_bytes": 2048, "enabled": True}) + "\n")
    bad = t.scratch / "bad.tsv"
    bad.write_text("username\tpassword\nx@import.test\t{PLAIN}secret\n"
                   f"y@import.test\t{HASHES['blf']}\n")
    rc, out, err = m("import", bad)
    rc2, out2, err2 = m("user", "show", "y@import.test")
    t.check(rc == 1 and "line 2" in err and "unsupported" in err and rc2 == 1,
            "import with a bad line imports nothing and names the line", out + err)
    rc, out, err = m("import", tsv)
    t.check(rc == 0 and "imported 4 users" in out, "import of a mailcow table (TSV)", out + err)
    rc, out, err = m("import", jsonl)
    t.check(rc == 0 and "imported 1 users" in out, "import of Mailu JSON lines", out + err)
    rc, out, err = m("domain", "list")
    t.check("import.test" in out.split(), "import added the users' domain", out)
    rc, out, err = m("--json", "user", "show", "blf@import.test")
    t.check(rc == 0 and json.loads(out)["quota_bytes"] == 1048576, "imported quota", out + err)
    rc, out, err = m("--json", "user", "show", "off@import.test")
    t.check(rc == 0 and json.loads(out)["enabled"] is False, "active=0 imports disabled",
            out + err)
    for user in ("blf", "sha512", "ssha", "argon"):
        addr = f"{user}@import.test"
        t.check(not auth(addr, PW + "x") and not auth(addr, ""),
                f"{user}: a wrong password is refused")
        t.check(auth(addr, PW), f"{user}: the imported hash accepts the old password")
        t.check(auth(addr, PW) and not auth(addr, "Correct horse battery staple"),
                f"{user}: after the rehash to scrypt the password still works")
    t.check(not auth("off@import.test", PW), "a disabled imported user cannot log in")
    logs = "".join(p.read_text() for p in (cdir / "logs").glob("node*.log"))
    t.check(len(re.findall(r"event=password_rehashed user=\S+@import.test from=\S+ to=scrypt",
                           logs)) == 4, "each imported hash was replaced by scrypt once",
            re.findall(r"event=password_rehashed.*", logs))
    rc, out, err = m("import", tsv)
    t.check(rc == 0 and "imported 0 users (4 existed already" in out,
            "importing again skips the existing users", out + err)
    rc, out, err = m("import", t.scratch / "nope.tsv")
    t.check(rc == 2, "import of a missing file: usage error", out + err)


def on_tty(t, argv, env, dialogue, timeout=10):
    """Run argv on a pseudo-terminal; answer each expected prompt."""
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execve(str(argv[0]), [str(a) for a in argv], env)
        finally:
            os._exit(127)
    out = b""
    try:
        for expect, answer in dialogue:
            while expect not in out:
                r, _, _ = select.select([fd], [], [], timeout)
                if not r:
                    return out, -1
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    break
                out += chunk
            if expect not in out:
                break
            os.write(fd, answer)
        while True:
            r, _, _ = select.select([fd], [], [], timeout)
            if not r:
                break
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        # A child still waiting for input is a failure, not a hang.
        for _ in range(100):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            select.select([], [], [], 0.05)
        else:
            os.kill(pid, 9)
            _, status = os.waitpid(pid, 0)
        os.close(fd)
    return out, os.waitstatus_to_exitcode(status)


def parse_zone(t, zone):
    """(name, type, data) of each record; TXT data joined from its strings."""
    recs = []
    for line in zone.splitlines():
        if not line or line.startswith(";"):
            continue
        m = re.fullmatch(r"(\S+\.)\t(\d+)\tIN\t([A-Z]+)\t(.*)", line)
        t.check(m is not None, "zone line: NAME. TTL IN TYPE DATA", line)
        if not m:
            continue
        name, ttl, typ, data = m.groups()
        if typ == "TXT":
            inner = data[2:-2] if data.startswith("( ") else data
            parts = re.findall(r'"([^"]*)"', inner)
            t.check(parts and all(len(p) <= 255 for p in parts) and
                    re.fullmatch(r'(\s*"[^"]*")+\s*', inner),
                    "TXT strings of at most 255 bytes", line)
            data = "".join(parts)
        recs.append((name, typ, data))
    return recs


def verify_with_dns_key(t, openssl, algo, p, private_pem):
    """Sign with the stored private key, verify with the DNS public key."""
    d = t.scratch / f"dkim-{algo}"
    d.mkdir(exist_ok=True)
    (d / "key.pem").write_text(private_pem)
    (d / "msg").write_bytes(b"From: a@example.test\r\nSubject: hi\r\n")
    der = base64.b64decode(p)
    if algo == "ed25519":
        # RFC 8463: p= is the raw key; wrap it as a SubjectPublicKeyInfo.
        if len(der) != 32:
            return False
        der = bytes.fromhex("302a300506032b6570032100") + der
    pub = "-----BEGIN PUBLIC KEY-----\n" + base64.encodebytes(der).decode() + \
          "-----END PUBLIC KEY-----\n"
    (d / "pub.pem").write_text(pub)
    if algo == "ed25519":
        sign = [openssl, "pkeyutl", "-sign", "-rawin", "-inkey", d / "key.pem", "-in", d / "msg",
                "-out", d / "sig"]
        verify = [openssl, "pkeyutl", "-verify", "-rawin", "-pubin", "-inkey", d / "pub.pem",
                  "-in", d / "msg", "-sigfile", d / "sig"]
    else:
        sign = [openssl, "dgst", "-sha256", "-sign", d / "key.pem", "-out", d / "sig", d / "msg"]
        verify = [openssl, "dgst", "-sha256", "-verify", d / "pub.pem", "-signature", d / "sig",
                  d / "msg"]
    r1 = subprocess.run([str(a) for a in sign], capture_output=True)
    r2 = subprocess.run([str(a) for a in verify], capture_output=True)
    # And a signature over other bytes must not verify.
    (d / "msg").write_bytes(b"From: b@example.test\r\nSubject: hi\r\n")
    r3 = subprocess.run([str(a) for a in verify], capture_output=True)
    return r1.returncode == 0 and r2.returncode == 0 and r3.returncode != 0


if __name__ == "__main__":
    mt.main(run, name="mailctl", budget_s=180)
