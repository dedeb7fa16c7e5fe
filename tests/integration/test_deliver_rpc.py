"""Deliver over RPC to a real node, as the proxy's SMTP receiver does:
per-recipient statuses in request order (stored, unknown 550 5.1.1,
disabled 550 5.2.1, wrong shard 451), duplicates collapsed, and
idempotence: the same delivery_id sent again (a retry after a timeout)
answers the same statuses without storing a second copy, also after the
node restarts; a different id stores again; an over-long id is refused."""

import json
import socket

import mailtest as mt
import pbwire as pb

DELIVER = 2
SHARDS = 4


def run(t):
    node, ctl = mt.binary("mailnode"), mt.binary("mailctl")
    with socket.socket() as s:
        s.bind((mt.HOST, 0))
        rpc = s.getsockname()[1]
    argv = [node, "--set", f"rpc.listen=127.0.0.1:{rpc}", "--set",
            f"data.dir={t.scratch / 'data'}", "--set", f"shards.count={SHARDS}"]
    n = t.daemon("node", argv)
    n.wait_tcp(rpc)
    naddr = f"127.0.0.1:{rpc}"

    def ctl_json(*args):
        rc, out, err = mt.run([ctl, "--node", naddr, "--json"] + list(args), timeout=30)
        return json.loads(out) if rc == 0 else None

    users = {}
    for u in ("ann@example.test", "ben@example.test"):
        info = ctl_json("user", "add", u, "--password", "pw")
        t.require(info is not None, f"user add {u}")
        users[u] = info["shard"]
    ctl_json("user", "disable", "ben@example.test")
    shard = users["ann@example.test"]
    # Recipients of ann's shard only (a DeliverRequest is per shard).
    same = [u for u in users if users[u] == shard]
    body = b"Subject: rpc\r\n\r\nhello\r\n"

    def deliver(rcpts, delivery_id=b"", req_id=1):
        m = pb.field(1, shard) + pb.field(3, "")
        for r in rcpts:
            m += pb.field(4, r)
        m += pb.field(5, body) + pb.field(6, 1700000000000) + pb.field(7, delivery_id)
        sock = mt.connect(rpc, timeout=10)
        sock.sendall(pb.request_frame(DELIVER, req_id, m))
        kind, rid, reply, _ = pb.read_frame(sock)
        mt.close_quietly(sock)
        if kind != pb.RESPONSE:
            return kind, pb.decode(reply) if reply else {}
        out = []
        for st in pb.decode(reply).get(1, []):
            d = pb.decode(st)
            out.append((d.get(1, [b""])[0].decode(), d.get(2, [0])[0],
                        d.get(3, [b""])[0].decode()))
        return kind, out

    def count():
        info = ctl_json("user", "show", "ann@example.test")
        return info["used_messages"] if info else None

    rcpts = ["ann@example.test", "nobody@example.test", "Ann+x@Example.test"]
    if "ben@example.test" in same:
        rcpts.append("ben@example.test")
    kind, st = deliver(rcpts, b"id-0001")
    codes = {r: (c, txt.split()[0]) for r, c, txt in st} if kind == pb.RESPONSE else {}
    t.check(kind == pb.RESPONSE and [r for r, _, _ in st] == rcpts, "statuses in request order",
            st)
    t.check(codes.get("ann@example.test") == (250, "2.0.0") and
            codes.get("Ann+x@Example.test") == (250, "2.0.0") and
            codes.get("nobody@example.test") == (550, "5.1.1"),
            "stored / unknown 550 5.1.1 / duplicate via +tag also 250", st)
    if "ben@example.test" in codes:
        t.check(codes["ben@example.test"] == (550, "5.2.1"), "disabled user: 550 5.2.1", st)
    t.check(count() == 1, "duplicates collapsed: one copy", count())

    kind, st2 = deliver(rcpts, b"id-0001", req_id=2)
    t.check(kind == pb.RESPONSE and st2 == st, "retry with the same delivery_id: same statuses",
            (st, st2))
    t.check(count() == 1, "retry stored nothing", count())
    t.check(n.wait_log("event=deliver_duplicate", timeout=2), "duplicate logged")

    n.stop()
    n = t.daemon("node2", argv)
    n.wait_tcp(rpc)
    kind, st3 = deliver(rcpts, b"id-0001", req_id=3)
    t.check(kind == pb.RESPONSE and st3 == st and count() == 1,
            "retry after a restart: same statuses, nothing stored", st3)
    kind, st4 = deliver(["ann@example.test"], b"id-0002", req_id=4)
    t.check(kind == pb.RESPONSE and st4[0][1] == 250 and count() == 2,
            "another delivery_id stores again", st4)
    kind, st5 = deliver(["ann@example.test"], req_id=5)
    t.check(kind == pb.RESPONSE and count() == 3, "no delivery_id: stored every time", st5)
    kind, err = deliver(["ann@example.test"], b"x" * 65, req_id=6)
    t.check(kind == pb.ERROR and count() == 3, "a delivery_id over 64 bytes is refused", err)
    other = (shard + 1) % SHARDS
    m = pb.field(1, other) + pb.field(4, "ann@example.test") + pb.field(5, body)
    sock = mt.connect(rpc, timeout=10)
    sock.sendall(pb.request_frame(DELIVER, 7, m))
    kind, _, reply, _ = pb.read_frame(sock)
    mt.close_quietly(sock)
    d = pb.decode(pb.decode(reply)[1][0]) if kind == pb.RESPONSE else {}
    t.check(d.get(2, [0])[0] == 451, "recipient of another shard: 451", d)


mt.main(run, name="deliver_rpc", budget_s=90)
