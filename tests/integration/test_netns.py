"""The cluster across network namespaces (deploy/netns-cluster): Redis, two
nodes and the proxy each on a host of its own with its own address on a
bridge; from a client host, mail goes in by SMTP and is read back through
IMAPS and POP3S at the proxy's address (the proxy sees the client's real
address); `down` leaves no namespace, link or process. Skipped without
root or network namespaces."""

import os
import re
import subprocess
import sys

import mailtest as mt

CLIENT = r'''
import imaplib, poplib, smtplib, ssl, sys
proxy, ca, user, pw = sys.argv[1:5]
msg = ("From: someone@example.org\r\nTo: %s\r\nSubject: across hosts\r\n\r\n"
       "hello from the client namespace\r\n" % user)
with smtplib.SMTP(proxy, 25, timeout=20) as s:
    s.sendmail("someone@example.org", [user], msg)
# The certificate names mail.example.test and the proxy's address: verified.
ctx = ssl.create_default_context(cafile=ca)
im = imaplib.IMAP4_SSL(proxy, 993, ssl_context=ctx, timeout=20)
im.login(user, pw)
im.select("INBOX")
typ, data = im.search(None, 'SUBJECT "across hosts"')
num = data[0].split()[-1]
typ, data = im.fetch(num, "(BODY.PEEK[])")
body = data[0][1].decode()
im.logout()
print("IMAPS", "hello from the client namespace" in body)
print("RECEIVED", body.split("\r\n\r\n", 1)[0].replace("\r\n", " "))
po = poplib.POP3_SSL(proxy, 995, context=ctx, timeout=20)
po.user(user)
po.pass_(pw)
count, _ = po.stat()
resp, lines, _ = po.retr(count)
po.quit()
print("POP3S", any(b"hello from the client namespace" in ln for ln in lines))
'''


def run(t):
    if os.geteuid() != 0:
        print("skip: network namespaces need root")
        sys.exit(mt.SKIP)
    mt.require_tool("ip")
    mt.require_tool("redis-server")
    net = 50 + os.getpid() % 150
    tag = f"mc{net}"
    d = t.scratch / "netns"
    script = mt.source_dir() / "deploy" / "netns_cluster.py"
    rc, out, err = mt.run(["python3", script, "up", "--nodes", "2", "--dir", d, "--net", net],
                          timeout=120)
    if rc != 0 and "cannot make the network" in err:
        print(f"skip: {err.strip()}")
        sys.exit(mt.SKIP)
    pids = {}
    try:
        t.require(rc == 0 and "netns cluster is up" in out, "netns-cluster up", out + err)
        kv = dict(line.split("=", 1) for line in (d / "cluster.env").read_text().splitlines()
                  if "=" in line)
        for f in (d / "pids").glob("*.pid"):
            pids[f.stem] = int(f.read_text())
        t.check(sorted(pids) == ["node1", "node2", "proxy1", "redis"], "four daemons", pids)
        for host, pid in pids.items():
            r = subprocess.run(["ip", "netns", "identify", str(pid)], capture_output=True,
                               text=True)
            t.check(r.stdout.strip() == f"{tag}-{host}",
                    f"{host} runs in its own namespace {tag}-{host}", r.stdout + r.stderr)
        rc, out, err = mt.run(["ip", "netns", "exec", kv["CLIENT_NS"], kv["MAILCTL"], "--redis",
                               kv["REDIS_URL"], "cluster", "status"], timeout=30)
        t.check(rc == 0 and re.search(r"node1\s+up\s+10\.201\.%d\.11:7001" % net, out) and
                "every shard has a live primary" in out,
                "mailctl on the client host reaches Redis and the nodes by their addresses",
                out + err)
        rc, out, err = mt.run(["ip", "netns", "exec", kv["CLIENT_NS"], "python3", "-c", CLIENT,
                               kv["PROXY_ADDR"], kv["CA_FILE"], kv["DEMO_USER"],
                               kv["DEMO_PASSWORD"]], timeout=60)
        t.check(rc == 0 and "IMAPS True" in out,
                "SMTP into the proxy's address, read back through IMAPS", out + err)
        t.check("POP3S True" in out, "and through POP3S", out + err)
        received = out.split("RECEIVED", 1)[-1].split("\n")[0]
        t.check(f"([{kv['CLIENT_ADDR']}])" in received,
                "the proxy saw the client host's address (Received: header)", received)
    finally:
        rc, out, err = mt.run(["python3", script, "down", "--dir", d], timeout=60)
        t.check(rc == 0, "netns-cluster down", out + err)
        r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
        t.check(not any(ln.startswith(tag + "-") for ln in r.stdout.splitlines()),
                "no namespace left", r.stdout)
        r = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True)
        t.check(not any(ln.startswith(tag + "-") for ln in r.stdout.splitlines()),
                "no link left (bridge, veth)", r.stdout)

        def gone(pid):
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    return fh.read().split()[2] == "Z"
            except OSError:
                return True
        t.check(pids and all(gone(p) for p in pids.values()), "no process left", pids)


if __name__ == "__main__":
    mt.main(run, name="netns", budget_s=150)
