"""The proxy's bound on buffered SMTP message bytes (smtp.buffer_budget):
a message that would take a thread past it is answered 452 4.3.1 at the
end of its data and nothing is stored; the budget is released when a
transaction ends, so the next message goes through. Also: a message for
users on several shards of one node (one DELIVER in flight per node, the
groups one after another) reaches every one of them."""

import json
import smtplib
import socket

import mailtest as mt

SHARDS = 16


def free_port():
    with socket.socket() as s:
        s.bind((mt.HOST, 0))
        return s.getsockname()[1]


def run(t):
    node, proxy, ctl = mt.binary("mailnode"), mt.binary("mailproxy"), mt.binary("mailctl")
    rpc, smtp, mport = free_port(), free_port(), free_port()
    n = t.daemon("node", [node, "--set", f"rpc.listen=127.0.0.1:{rpc}", "--set",
                          f"data.dir={t.scratch / 'data'}", "--set", f"shards.count={SHARDS}"])
    n.wait_tcp(rpc)
    naddr = f"127.0.0.1:{rpc}"
    users, shards = [], set()
    for i in range(12):
        u = f"b{i}@example.test"
        rc, out, err = mt.run([ctl, "--node", naddr, "--json", "user", "add", u, "--password",
                               "pw"], timeout=30)
        t.require(rc == 0, f"user add {u}", out + err)
        sh = json.loads(out)["shard"]
        if sh not in shards:
            shards.add(sh)
            users.append(u)
    mt.run([ctl, "--node", naddr, "domain", "add", "example.test"], timeout=30)
    p = t.daemon("proxy", [proxy, "--set", f"smtp.listen=127.0.0.1:{smtp}",
                           "--set", f"route.node={naddr}", "--set", f"route.shards={SHARDS}",
                           "--set", "smtp.buffer_budget=1M", "--set",
                           f"metrics.listen=127.0.0.1:{mport}", "--set", "limits.conn_rate=0"])
    p.wait_tcp(smtp)

    def count(u):
        rc, out, err = mt.run([ctl, "--node", naddr, "--json", "user", "show", u], timeout=30)
        return json.loads(out)["used_messages"] if rc == 0 else None

    def send(size, rcpts):
        body = b"Subject: budget\r\n\r\n" + (b"y" * 76 + b"\r\n") * (size // 78)
        with smtplib.SMTP(mt.HOST, smtp, timeout=30) as c:
            try:
                c.sendmail("s@example.org", rcpts, body)
                return 250, b""
            except smtplib.SMTPDataError as e:
                return e.smtp_code, e.smtp_error

    code, _ = send(600 * 1024, [users[0]])
    t.check(code == 250 and count(users[0]) == 1, "600 KB within a 1 MB budget: 250", code)
    code, msg = send(2 * 1024 * 1024, [users[0]])
    t.check(code == 452 and b"4.3.1" in msg and count(users[0]) == 1,
            "2 MB over the budget: 452 4.3.1, nothing stored", (code, msg))
    code, _ = send(600 * 1024, [users[0]])
    t.check(code == 250 and count(users[0]) == 2, "the budget is released: 250 again", code)
    rc, out, err = mt.run(["curl", "-sS", f"http://127.0.0.1:{mport}/metrics"], timeout=10)
    t.check("smtp_buffer_budget_exceeded_total 1" in out, "counted in the metrics", out[-300:])

    t.require(len(users) >= 4, "users on at least 4 shards", users)
    code, _ = send(300 * 1024, users)
    t.check(code == 250 and all(count(u) == (3 if u == users[0] else 1) for u in users),
            f"one message to {len(users)} shards of one node reaches every recipient",
            [(u, count(u)) for u in users])


mt.main(run, name="smtp_budget", budget_s=90)
