"""Routing through mailproxy with three mailnodes on one machine: Redis
holds the membership, each node serves a third of 16 shards, 50 users are
spread over them. Every user's IMAP and POP3 sessions, opened through one
proxy, land on the node that owns the user's shard (checked in each node's
log and by reading the user's own message). A node that stops is dropped
from the routes once its membership expires (logins answer NO
[UNAVAILABLE]) and taken back when it returns. A shard map written to
Redis takes precedence over the membership and is applied at once when
published."""

import imaplib
import json
import poplib
import socket
import time

import mailtest as mt

SHARDS = 16
SPLIT = {"n1": "0-5", "n2": "6-10", "n3": "11-15"}
NUSERS = 50
PW = "pw-route"


def free_port():
    with socket.socket() as s:
        s.bind((mt.HOST, 0))
        return s.getsockname()[1]


def shard_in(spec, shard):
    a, b = spec.split("-")
    return int(a) <= shard <= int(b)


def run(t):
    node, proxy, ctl = mt.binary("mailnode"), mt.binary("mailproxy"), mt.binary("mailctl")
    redis_server = mt.require_tool("redis-server")
    redis_cli = mt.require_tool("redis-cli")
    rport = free_port()
    rdir = t.scratch / "redis"
    rdir.mkdir()
    redis = t.daemon("redis", [redis_server, "--port", rport, "--bind", mt.HOST, "--save", "",
                               "--appendonly", "no", "--dir", rdir])
    redis.wait_tcp(rport)
    url = f"redis://127.0.0.1:{rport}/0"
    env = {"REDIS_URL": url}

    def rcli(*args):
        return mt.run([redis_cli, "-p", str(rport)] + [str(a) for a in args])

    nodes, argvs, addrs = {}, {}, {}
    for nid, spec in SPLIT.items():
        rpc = free_port()
        addrs[nid] = f"127.0.0.1:{rpc}"
        argvs[nid] = [node, "--set", f"node.id={nid}", "--set", f"rpc.listen=127.0.0.1:{rpc}",
                      "--set", f"data.dir={t.scratch / nid}", "--set", f"shards.count={SHARDS}",
                      "--set", f"shards.local={spec}", "--set", f"redis.url={url}",
                      "--set", "heartbeat.interval=200ms", "--set", "heartbeat.ttl=1s"]
        nodes[nid] = t.daemon(nid, argvs[nid])
        nodes[nid].wait_tcp(rpc)

    imap, pop3 = free_port(), free_port()
    p = t.daemon("proxy", [proxy, "--set", f"redis.url={url}", "--set", f"imap.listen=127.0.0.1:{imap}",
                           "--set", f"pop3.listen=127.0.0.1:{pop3}", "--set", "auth.plaintext=true",
                           "--set", "route.refresh=200ms"])
    p.wait_tcp(imap)
    t.require(p.wait_log("source=membership shards=16 served=16 nodes=3", timeout=10),
              "proxy routes all 16 shards over 3 nodes from the membership", p.log_tail())

    users = [f"user{i:02d}@example.test" for i in range(NUSERS)]
    owner = {}
    for u in users:
        rc, out, err = mt.run([ctl, "--json", "user", "add", u, "--password", PW], env=env,
                              timeout=30)
        t.require(rc == 0, f"user add {u}", out + err)
        shard = json.loads(out)["shard"]
        owner[u] = [nid for nid, spec in SPLIT.items() if shard_in(spec, shard)][0]
        rc, out, err = mt.run([ctl, "deliver", u], stdin=f"Subject: for {u}\r\n\r\nhi\r\n",
                              env=env, timeout=30)
        t.require(rc == 0, f"deliver to {u}", out + err)
    t.check(len(set(owner.values())) == 3, "the 50 users are spread over all 3 nodes",
            sorted(set(owner.values())))

    wrong = []
    for u in users:
        m = imaplib.IMAP4(mt.HOST, imap, timeout=20)
        m.login(u, PW)
        typ, _ = m.select("INBOX")
        typ, data = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        subj = data[0][1].decode().strip()
        m.logout()
        if subj != f"Subject: for {u}":
            wrong.append((u, subj))
    t.check(not wrong, "each user reads its own message through the proxy", wrong[:5])
    misplaced = []
    for u in users:
        for nid, d in nodes.items():
            n_logins = d.log_count(f"user={u} mech=handoff")
            if (nid == owner[u]) != (n_logins == 1):
                misplaced.append((u, nid, n_logins))
    t.check(not misplaced, "every IMAP session landed on the owning node, and only there",
            misplaced[:5])
    for u in users[:10]:
        pp = poplib.POP3(mt.HOST, pop3, timeout=20)
        pp.user(u)
        pp.pass_(PW)
        count, _ = pp.stat()
        pp.quit()
        t.check(count == 1, f"POP3 through the proxy for {u}", count)
    pop_misplaced = [(u, nid) for u in users[:10] for nid, d in nodes.items()
                     if (d.log_count(f"event=handoff user={u}") == 1) != (nid == owner[u])]
    t.check(not pop_misplaced, "every POP3 session landed on the owning node", pop_misplaced)

    # --- a node stops: its users are unavailable, the others are not --------
    victim = "n2"
    vuser = next(u for u in users if owner[u] == victim)
    other = next(u for u in users if owner[u] != victim)
    nodes[victim].stop()
    t.require(p.wait_log("served=11 nodes=2", timeout=10),
              "the stopped node's shards leave the routes", p.log_tail())
    m = imaplib.IMAP4(mt.HOST, imap, timeout=20)
    try:
        m.login(vuser, PW)
        t.check(False, "login for a user of the stopped node fails")
    except imaplib.IMAP4.error as e:
        t.check("UNAVAILABLE" in str(e), "login for a user of the stopped node: NO [UNAVAILABLE]",
                e)
    m.shutdown()
    m = imaplib.IMAP4(mt.HOST, imap, timeout=20)
    typ, _ = m.login(other, PW)
    t.check(typ == "OK", "users of the other nodes still log in")
    m.logout()
    nodes[victim] = t.daemon(victim + "b", argvs[victim])
    t.require(p.wait_log("served=16 nodes=3", count=2, timeout=10),
              "the node is routed to again when it is back", p.log_tail())
    m = imaplib.IMAP4(mt.HOST, imap, timeout=20)
    typ, _ = m.login(vuser, PW)
    t.check(typ == "OK", "its users log in again")
    m.logout()

    # --- a shard map in Redis takes precedence and applies when published ------
    # Give every shard to n1 (which only has its own shards on disk): a user
    # of n3 is then routed to n1, which refuses the session (not its shard).
    n3user = next(u for u in users if owner[u] == "n3")
    args = ["HSET", "mail:shardmap", "count", SHARDS]
    for s in range(SHARDS):
        args += [s, "7 n1"]
    rc, out, err = rcli(*args)
    t.require(rc == 0, "shard map written", out + err)
    rcli("PUBLISH", "mail:shardmap", "7")
    t.require(p.wait_log("source=shardmap shards=16 served=16 nodes=1", timeout=5),
              "the published shard map is applied", p.log_tail())
    m = imaplib.IMAP4(mt.HOST, imap, timeout=20)
    try:
        m.login(n3user, PW)
        t.check(False, "shard map routes n3's user to n1, which refuses")
    except imaplib.IMAP4.error as e:
        t.check("UNAVAILABLE" in str(e) or "AUTHENTICATIONFAILED" in str(e),
                "shard map routes n3's user to n1, which refuses it", e)
    m.shutdown()
    t.check(nodes["n1"].log_count("shard not served") >= 0, "n1 alive", nodes["n1"].log_tail(5))
    n3node = nodes[owner[n3user]]
    before = n3node.log_count("event=shardmap_applied source=shards.local")
    rcli("DEL", "mail:shardmap")
    rcli("PUBLISH", "mail:shardmap", "8")
    t.require(p.wait_log("source=membership shards=16 served=16 nodes=3", count=2, timeout=5),
              "without the shard map the membership routes again", p.log_tail())
    # The nodes follow the map too: n3 serves its shards.local again.
    t.require(n3node.wait_log("event=shardmap_applied source=shards.local", count=before + 1,
                              timeout=5), "n3 falls back to shards.local", n3node.log_tail())
    m = imaplib.IMAP4(mt.HOST, imap, timeout=20)
    typ, _ = m.login(n3user, PW)
    t.check(typ == "OK", "n3's user logs in again")
    m.logout()


mt.main(run, name="proxy_routing", budget_s=240)
