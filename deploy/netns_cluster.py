#!/usr/bin/env python3
"""The local cluster with every process on a host of its own: one network
namespace per process, each with its own address, joined by a bridge.

  deploy/netns-cluster up [--nodes N] [--dir DIR] [--net K]
  deploy/netns-cluster status [--dir DIR]
  deploy/netns-cluster exec HOST [--dir DIR] -- COMMAND...
  deploy/netns-cluster down [--dir DIR]

Needs root (ip netns, ip link). `up` makes a bridge <tag>-br in the root
namespace (no address on it, so no route of the host changes), and for each
host (redis, node1..nodeN, proxy1, client) a namespace <tag>-<host> with
loopback up and a veth pair: <tag>-<host> on the bridge, eth0 inside with
10.201.K.x/24 (redis .2, node I .10+I, proxy .100, client .200). K (the
--net, 1..254, default 1) picks the subnet and the tag "mc<K>". The
addresses exist only inside the namespaces. Redis, the nodes and the proxy
then run in their namespaces on the ordinary ports (SMTP 25, submission
587, submissions 465, IMAP 143, IMAPS 993, POP3 110, POP3S 995; node RPC
7001; Redis 6379), the shard map is initialised, the domain example.test
and demo@example.test are created, and DIR/cluster.env names the addresses
(PROXY_ADDR, REDIS_URL, NODEi_RPC, CLIENT_NS, ...). `exec client -- ...`
runs a command on the client host, e.g. curl or mailctl.

`down` stops the processes it started (by PID), deletes the namespaces
(their veth ends go with them) and the bridge, and leaves nothing behind.
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import local_cluster as lc  # noqa: E402

DEMO_USER = "demo@example.test"


def die(msg):
    print(f"netns-cluster: {msg}", file=sys.stderr)
    sys.exit(1)


def ip(*args, check=True):
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


class Net:
    def __init__(self, d, nodes=3, net=1):
        self.dir = os.path.abspath(d)
        self.nodes, self.net = nodes, net
        state = os.path.join(self.dir, "netns.state")
        if os.path.exists(state):
            with open(state) as f:
                kv = dict(line.strip().split("=", 1) for line in f if "=" in line)
            self.nodes, self.net = int(kv["nodes"]), int(kv["net"])
        self.piddir = os.path.join(self.dir, "pids")
        self.logdir = os.path.join(self.dir, "logs")

    def save(self):
        os.makedirs(self.dir, exist_ok=True)
        with open(os.path.join(self.dir, "netns.state"), "w") as f:
            f.write(f"nodes={self.nodes}\nnet={self.net}\n")

    @property
    def tag(self):
        return f"mc{self.net}"

    @property
    def bridge(self):
        return f"{self.tag}-br"

    def hosts(self):
        return ["redis"] + [f"node{i}" for i in range(1, self.nodes + 1)] + ["proxy1", "client"]

    def addr(self, host):
        last = {"redis": 2, "proxy1": 100, "client": 200}.get(host)
        if last is None:
            last = 10 + int(host[4:])
        return f"10.201.{self.net}.{last}"

    def ns(self, host):
        return f"{self.tag}-{host}"

    @property
    def redis_url(self):
        return f"redis://{self.addr('redis')}:6379/0"

    # ---- the network -----------------------------------------------------------
    def existing_ns(self):
        r = ip("netns", "list", check=False)
        return {line.split()[0] for line in r.stdout.splitlines() if line.strip()}

    def link_exists(self, name):
        return ip("link", "show", "dev", name, check=False).returncode == 0

    def make_network(self):
        if not self.link_exists(self.bridge):
            ip("link", "add", "name", self.bridge, "type", "bridge")
        ip("link", "set", "dev", self.bridge, "up")
        have = self.existing_ns()
        for h in self.hosts():
            ns, veth = self.ns(h), self.ns(h)
            if ns in have:
                continue
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "dev", "lo", "up")
            # Made inside the namespace, the host end moved out to the
            # bridge: the veth never exists with a clashing name in the
            # root namespace.
            ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", veth)
            ip("-n", ns, "link", "set", "dev", veth, "netns", str(os.getpid()))
            ip("link", "set", "dev", veth, "master", self.bridge)
            ip("link", "set", "dev", veth, "up")
            ip("-n", ns, "addr", "add", f"{self.addr(h)}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "dev", "eth0", "up")

    def remove_network(self):
        for h in self.hosts():
            if self.ns(h) in self.existing_ns():
                ip("netns", "del", self.ns(h), check=False)
            if self.link_exists(self.ns(h)):
                ip("link", "del", "dev", self.ns(h), check=False)
        if self.link_exists(self.bridge):
            ip("link", "del", "dev", self.bridge, check=False)

    # ---- processes ---------------------------------------------------------------
    def pidfile(self, name):
        return os.path.join(self.piddir, name + ".pid")

    def read_pid(self, name):
        try:
            with open(self.pidfile(name)) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def running(self, name, binary):
        pid = self.read_pid(name)
        if pid and lc.pid_alive(pid) and \
                os.path.basename(lc.pid_cmd(pid).split(" ")[0]) == os.path.basename(binary):
            return pid
        return None

    def spawn(self, host, argv):
        os.makedirs(self.piddir, exist_ok=True)
        os.makedirs(self.logdir, exist_ok=True)
        log = open(os.path.join(self.logdir, host + ".log"), "ab")
        # ip netns exec execs the program: the PID is the daemon's.
        p = subprocess.Popen(["ip", "netns", "exec", self.ns(host)] + argv, stdout=log,
                             stderr=log, stdin=subprocess.DEVNULL, cwd=self.dir,
                             start_new_session=True)
        with open(self.pidfile(host), "w") as f:
            f.write(f"{p.pid}\n")
        return p.pid

    def stop(self, name, binary, timeout=10):
        pid = self.running(name, binary)
        if pid:
            os.kill(pid, signal.SIGTERM)
            end = time.time() + timeout
            while lc.pid_alive(pid) and time.time() < end:
                time.sleep(0.05)
            if lc.pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
                while lc.pid_alive(pid):
                    time.sleep(0.05)
        try:
            os.unlink(self.pidfile(name))
        except OSError:
            pass

    def run_in(self, host, argv, **kw):
        return subprocess.run(["ip", "netns", "exec", self.ns(host)] + [str(a) for a in argv],
                              capture_output=True, text=True, **kw)

    def port_open(self, host, addr, port):
        code = ("import socket,sys\n"
                "try:\n socket.create_connection((sys.argv[1], int(sys.argv[2])), 0.3).close()\n"
                "except OSError:\n sys.exit(1)\n")
        return self.run_in(host, ["python3", "-c", code, addr, port]).returncode == 0

    def wait_port(self, host, port, pid, what, timeout=20):
        end = time.time() + timeout
        while time.time() < end:
            if self.port_open("client", self.addr(host), port):
                return
            if not lc.pid_alive(pid):
                die(f"{what} exited during start-up; see {self.logdir}/{host}.log")
            time.sleep(0.1)
        die(f"{what} did not accept connections on {self.addr(host)}:{port}")

    def mailctl(self, bins, *args, stdin=None):
        return self.run_in("client", [bins["mailctl"], "--redis", self.redis_url, *args],
                           input=stdin)

    def certs(self):
        tls = os.path.join(self.dir, "tls")
        ca, cert, key = (os.path.join(tls, n) for n in ("ca.pem", "server.pem", "server.key"))
        if all(os.path.exists(p) for p in (ca, cert, key)):
            return ca, cert, key
        os.makedirs(tls, exist_ok=True)
        run = lambda *a: subprocess.run(a, check=True, capture_output=True)
        cakey = os.path.join(tls, "ca.key")
        run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", cakey, "-out", ca, "-days", "3650",
            "-subj", "/CN=mailcluster netns CA")
        csr = os.path.join(tls, "server.csr")
        run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", key, "-out", csr, "-subj", "/CN=mail.example.test")
        ext = os.path.join(tls, "server.ext")
        with open(ext, "w") as f:
            f.write(f"subjectAltName=DNS:mail.example.test,IP:{self.addr('proxy1')}\n"
                    "extendedKeyUsage=serverAuth\n")
        run("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", cakey,
            "-CAcreateserial", "-out", cert, "-days", "825", "-extfile", ext)
        os.chmod(key, 0o600)
        return ca, cert, key


def cmd_up(args):
    if os.geteuid() != 0:
        die("needs root (network namespaces)")
    if not shutil.which("ip"):
        die("ip (iproute2) not found")
    n = Net(args.dir, args.nodes, args.net)
    bins = lc.ensure_built()
    redis = shutil.which("redis-server") or die("redis-server not found")
    n.save()
    ca, cert, key = n.certs()
    try:
        n.make_network()
    except RuntimeError as e:
        n.remove_network()
        die(f"cannot make the network: {e}")
    if not n.running("redis", redis):
        rdir = os.path.join(n.dir, "redis")
        os.makedirs(rdir, exist_ok=True)
        pid = n.spawn("redis", [redis, "--port", "6379", "--bind", n.addr("redis"),
                                "--dir", rdir, "--appendonly", "yes", "--save", "",
                                "--daemonize", "no", "--protected-mode", "no"])
        n.wait_port("redis", 6379, pid, "redis-server")
    for i in range(1, n.nodes + 1):
        h = f"node{i}"
        if n.running(h, bins["mailnode"]):
            continue
        lo, hi = (i - 1) * 256 // n.nodes, i * 256 // n.nodes - 1
        data = os.path.join(n.dir, h)
        os.makedirs(data, exist_ok=True)
        pid = n.spawn(h, [bins["mailnode"], "--set", f"node.id={h}",
                          "--set", "shards.count=256", "--set", f"shards.local={lo}-{hi}",
                          "--set", f"rpc.listen={n.addr(h)}:7001",
                          "--set", f"metrics.listen={n.addr(h)}:9100",
                          "--set", f"redis.url={n.redis_url}", "--set", f"data.dir={data}"])
        n.wait_port(h, 7001, pid, h)
    if not n.running("proxy1", bins["mailproxy"]):
        a = n.addr("proxy1")
        pid = n.spawn("proxy1", [bins["mailproxy"], "--set", "proxy.id=proxy1",
                                 "--set", "proxy.hostname=mail.example.test",
                                 "--set", f"metrics.listen={a}:9100",
                                 "--set", f"redis.url={n.redis_url}",
                                 "--set", f"smtp.listen={a}:25",
                                 "--set", f"submission.listen={a}:587",
                                 "--set", f"submissions.listen={a}:465",
                                 "--set", f"imap.listen={a}:143", "--set", f"imaps.listen={a}:993",
                                 "--set", f"pop3.listen={a}:110", "--set", f"pop3s.listen={a}:995",
                                 "--set", f"tls.cert={cert}", "--set", f"tls.key={key}"])
        n.wait_port("proxy1", 993, pid, "mailproxy")
        n.wait_port("proxy1", 25, pid, "mailproxy")
    end = time.time() + 15
    while True:
        r = n.mailctl(bins, "status")
        if r.returncode == 0 and r.stdout.count(" up ") >= n.nodes + 1:
            break
        if time.time() > end:
            die(f"members did not register in Redis: {r.stdout}{r.stderr}")
        time.sleep(0.2)
    r = n.mailctl(bins, "cluster", "init")
    if r.returncode != 0 and "initialised already" not in r.stderr:
        die(f"cluster init: {r.stderr.strip()}")
    r = n.mailctl(bins, "domain", "add", "example.test")
    if r.returncode != 0:
        die(f"domain add: {r.stderr.strip()}")
    pwfile = os.path.join(n.dir, "demo.password")
    if not os.path.exists(pwfile):
        password = subprocess.run(["openssl", "rand", "-base64", "15"], check=True,
                                  capture_output=True, text=True).stdout.strip()
        r = n.mailctl(bins, "user", "add", DEMO_USER, "--password-stdin", stdin=password + "\n")
        if r.returncode != 0:
            die(f"cannot create {DEMO_USER}: {r.stderr.strip()}")
        with open(pwfile, "w") as f:
            f.write(password + "\n")
        os.chmod(pwfile, 0o600)
    with open(pwfile) as f:
        password = f.read().strip()
    env = {"PROXY_ADDR": n.addr("proxy1"), "SMTP_PORT": 25, "SUBMISSION_PORT": 587,
           "SMTPS_PORT": 465, "IMAP_PORT": 143, "IMAPS_PORT": 993, "POP3_PORT": 110,
           "POP3S_PORT": 995, "REDIS_URL": n.redis_url, "CA_FILE": ca,
           "MAILCTL": bins["mailctl"], "MAILBENCH": bins["mailbench"], "NODES": n.nodes,
           "DEMO_USER": DEMO_USER, "DEMO_PASSWORD": password,
           "CLIENT_NS": n.ns("client"), "CLIENT_ADDR": n.addr("client"),
           "NETNS_TAG": n.tag}
    for i in range(1, n.nodes + 1):
        env[f"NODE{i}_RPC"] = f"{n.addr(f'node{i}')}:7001"
        env[f"NODE{i}_NS"] = n.ns(f"node{i}")
    with open(os.path.join(n.dir, "cluster.env"), "w") as f:
        for k, v in env.items():
            f.write(f"{k}={v}\n")
    print(f"""netns cluster is up ({n.dir}): bridge {n.bridge}, namespaces {n.tag}-*
redis {n.addr('redis')}:6379, nodes {', '.join(n.addr(f'node{i}') for i in range(1, n.nodes + 1))}, proxy {n.addr('proxy1')}
demo user: {DEMO_USER}  password: {password}
from the client host:
  {os.path.join(HERE, 'netns-cluster')} exec client --dir {n.dir} -- curl -s --cacert {ca} \\
      --resolve mail.example.test:993:{n.addr('proxy1')} --user '{DEMO_USER}:{password}' \\
      'imaps://mail.example.test/INBOX'
stop with: {os.path.join(HERE, 'netns-cluster')} down --dir {n.dir}""")


def cmd_status(args):
    n = Net(args.dir)
    bins = lc.binaries()
    redis = shutil.which("redis-server") or "redis-server"
    ok = True
    have = n.existing_ns()
    for h in n.hosts():
        binary = {"redis": redis, "proxy1": bins["mailproxy"], "client": None}.get(
            h, bins["mailnode"])
        pid = n.running(h, binary) if binary else None
        state = ("running pid " + str(pid)) if pid else ("-" if not binary else "stopped")
        present = n.ns(h) in have
        ok &= present and (pid is not None or binary is None)
        print(f"{h:8} {n.ns(h):16} {n.addr(h):16} {'namespace' if present else 'no namespace':13} "
              f"{state}")
    if n.ns("client") in have:
        r = n.mailctl(bins, "cluster", "status")
        print(r.stdout + r.stderr, end="")
        ok &= r.returncode == 0
    return 0 if ok else 1


def cmd_exec(args):
    cmd = list(args.command)
    if "--" in cmd:
        opts, cmd = cmd[:cmd.index("--")], cmd[cmd.index("--") + 1:]
        if opts[:1] == ["--dir"] and len(opts) == 2:
            args.dir = opts[1]
        elif opts:
            die("exec HOST [--dir DIR] -- COMMAND...")
    n = Net(args.dir)
    if args.host not in n.hosts():
        die(f"no host {args.host} (hosts: {' '.join(n.hosts())})")
    if not cmd:
        die("exec HOST -- COMMAND...")
    os.execvp("ip", ["ip", "netns", "exec", n.ns(args.host)] + cmd)


def cmd_down(args):
    n = Net(args.dir)
    bins = lc.binaries()
    n.stop("proxy1", bins["mailproxy"])
    for i in range(1, n.nodes + 1):
        n.stop(f"node{i}", bins["mailnode"])
    n.stop("redis", shutil.which("redis-server") or "redis-server")
    n.remove_network()
    left = [ns for ns in n.existing_ns() if ns.startswith(n.tag + "-")]
    if left or n.link_exists(n.bridge):
        die(f"left behind: {left} {n.bridge if n.link_exists(n.bridge) else ''}")
    print("netns cluster stopped, namespaces and bridge removed")


def main():
    ap = argparse.ArgumentParser(prog="netns-cluster", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up")
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--net", type=int, default=1)
    ex = sub.add_parser("exec")
    ex.add_argument("host")
    ex.add_argument("command", nargs=argparse.REMAINDER)
    for p in (up, ex, sub.add_parser("status"), sub.add_parser("down")):
        p.add_argument("--dir", default=os.path.join(os.getcwd(), "run-netns"))
    args = ap.parse_args()
    if args.cmd == "up" and not (1 <= args.nodes <= 64 and 1 <= args.net <= 254):
        die("--nodes 1..64, --net 1..254")
    fn = {"up": cmd_up, "status": cmd_status, "exec": cmd_exec, "down": cmd_down}[args.cmd]
    sys.exit(fn(args) or 0)


if __name__ == "__main__":
    main()
