#!/usr/bin/env python3
"""Run a whole cluster on this machine, on loopback.

  deploy/local-cluster up [--nodes N] [--dir DIR] [--port-base P] [--test-users N]
  deploy/local-cluster status [--dir DIR]
  deploy/local-cluster down [--dir DIR]
  deploy/local-cluster stop-node I [--kill] [--dir DIR]
  deploy/local-cluster start-node I [--dir DIR]

`up` (through the deploy/local-cluster wrapper) installs missing packages
and builds the project (deploy/setup), then starts a Redis of its
own, N mailnodes and one mailproxy, with a CA and a certificate for
mail.example.test, writes DIR/cluster.env and returns once everything
accepts connections. On a fresh cluster `up` runs `mailctl cluster init`
(the shard map: node I of N is primary of a contiguous range of the 256
shards) and adds the demo domain example.test. With --test-users N it also
creates user1..userN@example.test sharing one generated password
(USER_PATTERN, USER_PASSWORD, USER_COUNT in cluster.env), imported in bulk
with one precomputed scrypt hash. `status` shows each process, its shards
and its health. `down` stops exactly what `up` started (by PID). Running
`up` twice is safe.

Ports (P = port base, default 10000): Redis P+379, node I RPC P+7000+I,
node I IMAP P+7100+I and POP3 P+7200+I (plaintext, loopback), node I
metrics P+9100+I, proxy metrics P+9100. The proxy serves SMTP P+25,
submission P+587 (STARTTLS + AUTH), submissions P+465, IMAP P+143
(STARTTLS), IMAPS P+993, POP3 P+110 (STLS) and POP3S P+995 for every user,
routed to the user's node. All ports are in cluster.env.
"""
import argparse
import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEMO_USER = "demo@example.test"
ROOT = os.path.dirname(HERE)


def die(msg):
    print(f"local-cluster: {msg}", file=sys.stderr)
    sys.exit(1)


def binaries():
    build = os.environ.get("MAIL_BUILD_DIR", os.path.join(ROOT, "build"))
    return {name: os.path.join(build, name)
            for name in ("mailnode", "mailproxy", "mailctl", "mailbench")}


def ensure_built():
    bins = binaries()
    if all(os.access(p, os.X_OK) for p in bins.values()):
        return bins
    print("local-cluster: building (deploy/setup) ...", flush=True)
    subprocess.run([os.path.join(HERE, "setup")], check=True)
    return bins



def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def check_free(port, what):
    if port_open(port):
        die(f"port {port} for {what} is taken by a process this cluster did not start; "
            "stop it or choose another --port-base")


def wait_port(port, proc_pid, what, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        if port_open(port):
            return
        if not pid_alive(proc_pid):
            die(f"{what} exited during start-up; see its log")
        time.sleep(0.05)
    die(f"{what} did not accept connections on port {port} within {timeout}s")


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def pid_cmd(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


class Cluster:
    def __init__(self, d, port_base=10000, nodes=3):
        self.dir = os.path.abspath(d)
        self.piddir = os.path.join(self.dir, "pids")
        self.logdir = os.path.join(self.dir, "logs")
        self.port_base = port_base
        self.nodes = nodes
        state = os.path.join(self.dir, "cluster.state")
        if os.path.exists(state):
            with open(state) as f:
                kv = dict(line.strip().split("=", 1) for line in f if "=" in line)
            self.port_base = int(kv.get("port_base", port_base))
            self.nodes = int(kv.get("nodes", nodes))

    def save_state(self):
        os.makedirs(self.dir, exist_ok=True)
        with open(os.path.join(self.dir, "cluster.state"), "w") as f:
            f.write(f"port_base={self.port_base}\nnodes={self.nodes}\n")

    # ports
    @property
    def redis_port(self):
        return self.port_base + 379

    def node_rpc(self, i):
        return self.port_base + 7000 + i

    def node_imap(self, i):
        return self.port_base + 7100 + i

    def node_pop3(self, i):
        return self.port_base + 7200 + i

    def node_range(self, i):
        return (i - 1) * 256 // self.nodes, i * 256 // self.nodes - 1

    def node_metrics(self, i):
        return self.port_base + 9100 + i

    @property
    def proxy_metrics(self):
        return self.port_base + 9100

    @property
    def redis_url(self):
        return f"redis://127.0.0.1:{self.redis_port}/0"

    # processes
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
        # Compare the program name only: redis-server rewrites its title.
        if pid and pid_alive(pid) and \
                os.path.basename(pid_cmd(pid).split(" ")[0]) == os.path.basename(binary):
            return pid
        return None

    def spawn(self, name, argv):
        os.makedirs(self.piddir, exist_ok=True)
        os.makedirs(self.logdir, exist_ok=True)
        log = open(os.path.join(self.logdir, name + ".log"), "ab")
        p = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                             cwd=self.dir, start_new_session=True)
        with open(self.pidfile(name), "w") as f:
            f.write(f"{p.pid}\n")
        return p.pid

    def stop(self, name, binary, kill=False, timeout=10):
        pid = self.running(name, binary)
        if not pid:
            return False
        os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
        end = time.time() + timeout
        while pid_alive(pid) and time.time() < end:
            time.sleep(0.05)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            while pid_alive(pid):
                time.sleep(0.05)
        try:
            os.unlink(self.pidfile(name))
        except OSError:
            pass
        return True

    # pieces
    def make_certs(self):
        tls = os.path.join(self.dir, "tls")
        ca, cert, key = (os.path.join(tls, n) for n in ("ca.pem", "server.pem", "server.key"))
        if all(os.path.exists(p) for p in (ca, cert, key)):
            return ca, cert, key
        os.makedirs(tls, exist_ok=True)
        run = lambda *a: subprocess.run(a, check=True, capture_output=True)
        cakey = os.path.join(tls, "ca.key")
        run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", cakey, "-out", ca, "-days", "3650",
            "-subj", "/CN=mailcluster local CA")
        csr = os.path.join(tls, "server.csr")
        run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", key, "-out", csr, "-subj", "/CN=mail.example.test")
        ext = os.path.join(tls, "server.ext")
        with open(ext, "w") as f:
            f.write("subjectAltName=DNS:mail.example.test,DNS:localhost,IP:127.0.0.1\n"
                    "extendedKeyUsage=serverAuth\n")
        run("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", cakey,
            "-CAcreateserial", "-out", cert, "-days", "825", "-extfile", ext)
        os.chmod(key, 0o600)
        return ca, cert, key

    def demo_user(self, bins):
        """Create demo@example.test once; its password is kept in DIR."""
        pwfile = os.path.join(self.dir, "demo.password")
        env = dict(os.environ, REDIS_URL=self.redis_url)
        if os.path.exists(pwfile):
            with open(pwfile) as f:
                return f.read().strip()
        # (init_cluster made the demo domain local: SMTP accepts mail for it.)
        r = subprocess.run([bins["mailctl"], "user", "show", DEMO_USER], env=env,
                           capture_output=True, text=True)
        password = subprocess.run(["openssl", "rand", "-base64", "15"], check=True,
                                  capture_output=True, text=True).stdout.strip()
        if r.returncode != 0:
            r = subprocess.run([bins["mailctl"], "user", "add", DEMO_USER, "--password-stdin"],
                               env=env, input=password + "\n", capture_output=True, text=True)
            if r.returncode != 0:
                die(f"cannot create {DEMO_USER}: {r.stderr.strip()}")
            welcome = ("From: postmaster@example.test\r\nTo: " + DEMO_USER + "\r\n"
                       "Subject: Welcome to your mail cluster\r\n\r\n"
                       "This message was stored by a mailnode over RPC.\r\n")
            subprocess.run([bins["mailctl"], "deliver", DEMO_USER], env=env, input=welcome,
                           capture_output=True, text=True)
        else:
            die(f"{DEMO_USER} exists but {pwfile} is gone; remove {self.dir} to start afresh")
        with open(pwfile, "w") as f:
            f.write(password + "\n")
        os.chmod(pwfile, 0o600)
        return password

    def mailctl(self, bins, *args, stdin=None):
        env = dict(os.environ, REDIS_URL=self.redis_url)
        return subprocess.run([bins["mailctl"], *args], env=env, input=stdin,
                              capture_output=True, text=True)

    def init_cluster(self, bins):
        """The shard map (once) and the demo domain (idempotent)."""
        r = self.mailctl(bins, "cluster", "init", "--shards", "256")
        if r.returncode != 0 and "initialised already" not in r.stderr:
            die(f"mailctl cluster init: {r.stderr.strip()}")
        r = self.mailctl(bins, "domain", "add", "example.test")
        if r.returncode != 0:
            die(f"mailctl domain add example.test: {r.stderr.strip()}")

    def test_users(self, bins, count):
        """user1..userN@example.test with one password: a single scrypt
        hash (what mailnode would compute), imported in bulk."""
        pwfile = os.path.join(self.dir, "test-users.password")
        if os.path.exists(pwfile):
            with open(pwfile) as f:
                password = f.read().strip()
        else:
            password = secrets.token_urlsafe(12)
            with open(pwfile, "w") as f:
                f.write(password + "\n")
            os.chmod(pwfile, 0o600)
        salt = secrets.token_bytes(16)
        dk = hashlib.scrypt(password.encode(), salt=salt, n=1 << 15, r=8, p=1,
                            maxmem=64 << 20, dklen=32)
        b64 = lambda b: base64.b64encode(b).decode().rstrip("=")
        phc = f"$scrypt$ln=15,r=8,p=1${b64(salt)}${b64(dk)}"
        lines = ["email\tpassword"] + [f"user{i}@example.test\t{phc}"
                                       for i in range(1, count + 1)]
        r = self.mailctl(bins, "import", "-", stdin="\n".join(lines) + "\n")
        if r.returncode != 0:
            die(f"importing the test users: {r.stderr.strip()[-2000:]}")
        return password

    def owner_node(self, bins, user):
        """Index of the node holding user's shard (the fixed slices)."""
        env = dict(os.environ, REDIS_URL=self.redis_url)
        r = subprocess.run([bins["mailctl"], "--json", "user", "show", user], env=env,
                           capture_output=True, text=True)
        m = re.search(r'"shard":(\d+)', r.stdout)
        if not m:
            return 1
        shard = int(m.group(1))
        for i in range(1, self.nodes + 1):
            lo, hi = self.node_range(i)
            if lo <= shard <= hi:
                return i
        return 1

    def write_env(self, bins, ca, password, users=None):
        p = self.port_base
        env = {
            "SMTP_PORT": p + 25, "SUBMISSION_PORT": p + 587, "SMTPS_PORT": p + 465,
            "IMAP_PORT": p + 143, "IMAPS_PORT": p + 993, "POP3_PORT": p + 110,
            "POP3S_PORT": p + 995, "REDIS_URL": self.redis_url, "CA_FILE": ca,
            "MAILCTL": bins["mailctl"], "MAILBENCH": bins["mailbench"],
            "NODES": self.nodes, "PROXY_METRICS": f"http://127.0.0.1:{self.proxy_metrics}/metrics",
            "DEMO_USER": DEMO_USER, "DEMO_PASSWORD": password,
        }
        owner = self.owner_node(bins, DEMO_USER)
        env["DEMO_NODE_IMAP_PORT"] = self.node_imap(owner)
        env["DEMO_NODE_POP3_PORT"] = self.node_pop3(owner)
        if users:
            env["USER_PATTERN"] = "user%d@example.test"
            env["USER_PASSWORD"] = users[1]
            env["USER_COUNT"] = users[0]
        for i in range(1, self.nodes + 1):
            env[f"NODE{i}_RPC"] = f"127.0.0.1:{self.node_rpc(i)}"
            env[f"NODE{i}_METRICS"] = f"http://127.0.0.1:{self.node_metrics(i)}/metrics"
        with open(os.path.join(self.dir, "cluster.env"), "w") as f:
            for k, v in env.items():
                f.write(f"{k}={v}\n")

    def start_redis(self):
        redis = shutil.which("redis-server")
        if not redis:
            die("redis-server not found (run deploy/setup)")
        if self.running("redis", redis):
            return
        check_free(self.redis_port, "redis")
        rdir = os.path.join(self.dir, "redis")
        os.makedirs(rdir, exist_ok=True)
        pid = self.spawn("redis", [redis, "--port", str(self.redis_port), "--bind", "127.0.0.1",
                                   "--dir", rdir, "--appendonly", "yes", "--save", "",
                                   "--daemonize", "no", "--protected-mode", "yes"])
        wait_port(self.redis_port, pid, "redis-server")

    def start_node(self, bins, i):
        name = f"node{i}"
        if self.running(name, bins["mailnode"]):
            return
        check_free(self.node_rpc(i), name)
        data = os.path.join(self.dir, name)
        os.makedirs(data, exist_ok=True)
        # Until the shard map exists, node I of N owns a fixed slice of the
        # 256 shards.
        lo, hi = self.node_range(i)
        pid = self.spawn(name, [bins["mailnode"],
                                "--set", f"node.id={name}",
                                "--set", "shards.count=256",
                                "--set", f"shards.local={lo}-{hi}",
                                "--set", f"rpc.listen=127.0.0.1:{self.node_rpc(i)}",
                                "--set", f"imap.listen=127.0.0.1:{self.node_imap(i)}",
                                "--set", f"pop3.listen=127.0.0.1:{self.node_pop3(i)}",
                                "--set", f"metrics.listen=127.0.0.1:{self.node_metrics(i)}",
                                "--set", f"redis.url={self.redis_url}",
                                "--set", f"data.dir={data}"])
        wait_port(self.node_rpc(i), pid, name)

    def start_proxy(self, bins, cert, key):
        if self.running("proxy1", bins["mailproxy"]):
            return
        check_free(self.proxy_metrics, "proxy1")
        p = self.port_base
        pid = self.spawn("proxy1", [bins["mailproxy"],
                                    "--set", "proxy.id=proxy1",
                                    "--set", "proxy.hostname=mail.example.test",
                                    "--set", f"metrics.listen=127.0.0.1:{self.proxy_metrics}",
                                    "--set", f"redis.url={self.redis_url}",
                                    "--set", f"smtp.listen=127.0.0.1:{p + 25}",
                                    "--set", f"submission.listen=127.0.0.1:{p + 587}",
                                    "--set", f"submissions.listen=127.0.0.1:{p + 465}",
                                    "--set", f"imap.listen=127.0.0.1:{p + 143}",
                                    "--set", f"imaps.listen=127.0.0.1:{p + 993}",
                                    "--set", f"pop3.listen=127.0.0.1:{p + 110}",
                                    "--set", f"pop3s.listen=127.0.0.1:{p + 995}",
                                    "--set", f"tls.cert={cert}", "--set", f"tls.key={key}"])
        wait_port(self.proxy_metrics, pid, "mailproxy")
        wait_port(p + 993, pid, "mailproxy")


def cmd_up(args):
    c = Cluster(args.dir, args.port_base, args.nodes)
    if not os.path.exists(os.path.join(c.dir, "cluster.state")):
        c.port_base, c.nodes = args.port_base, args.nodes
    bins = ensure_built()
    c.save_state()
    ca, cert, key = c.make_certs()
    c.start_redis()
    for i in range(1, c.nodes + 1):
        c.start_node(bins, i)
    c.start_proxy(bins, cert, key)
    # Wait until every member shows up in Redis.
    end = time.time() + 10
    while True:
        r = subprocess.run([bins["mailctl"], "--redis", c.redis_url, "status"],
                           capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.count(" up ") >= c.nodes + 1:
            break
        if time.time() > end:
            print(r.stdout, r.stderr)
            die("members did not register in Redis")
        time.sleep(0.1)
    c.init_cluster(bins)
    password = c.demo_user(bins)
    users = None
    if args.test_users:
        users = (args.test_users, c.test_users(bins, args.test_users))
    elif os.path.exists(os.path.join(c.dir, "cluster.env")):
        # up again without --test-users keeps what an earlier up made
        with open(os.path.join(c.dir, "cluster.env")) as f:
            kv = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
        if "USER_COUNT" in kv:
            users = (int(kv["USER_COUNT"]), kv["USER_PASSWORD"])
    c.write_env(bins, ca, password, users)
    env = os.path.join(c.dir, "cluster.env")
    owner = c.owner_node(bins, DEMO_USER)
    test_line = (f"\ntest users: user1..user{users[0]}@example.test  password: {users[1]}"
                 if users else "")
    p = c.port_base
    print(f"""cluster is up: Redis, {c.nodes} mailnode(s), 1 mailproxy ({c.dir})
demo user: {DEMO_USER}  password: {password}{test_line}
through the proxy (TLS with the cluster's own CA, routed to node{owner}):
SMTP 127.0.0.1:{p + 25}, submission :{p + 587}, submissions :{p + 465},
IMAPS :{p + 993}, IMAP+STARTTLS :{p + 143}, POP3S :{p + 995}, POP3+STLS :{p + 110}

  swaks --server 127.0.0.1:{p + 25} --from you@example.org --to {DEMO_USER} --body 'hello'

  curl -s --cacert {ca} --resolve mail.example.test:{p + 993}:127.0.0.1 \\
       --user '{DEMO_USER}:{password}' 'imaps://mail.example.test:{p + 993}/INBOX;UID=1'
  curl -s --cacert {ca} --user '{DEMO_USER}:{password}' pop3s://127.0.0.1:{p + 995}/1

  export REDIS_URL={c.redis_url}
  {bins['mailctl']} status
  {bins['mailctl']} mailbox list {DEMO_USER}
  printf 'Subject: hi\\r\\n\\r\\nhello\\r\\n' | {bins['mailctl']} deliver {DEMO_USER}
  {bins['mailctl']} user add you@example.test
  curl -s http://127.0.0.1:{c.proxy_metrics}/metrics

settings: {env}; logs: {c.logdir}; stop with: {os.path.join(HERE, "local-cluster")} down --dir {c.dir}
The nodes also serve plaintext IMAP/POP3 on loopback for tests (node{owner}:
IMAP {c.node_imap(owner)}, POP3 {c.node_pop3(owner)}).""")


def redis_ping(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as so:
            so.sendall(b"PING\r\n")
            return so.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def http_health(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as so:
            so.sendall(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
            data = b""
            while True:
                chunk = so.recv(4096)
                if not chunk:
                    break
                data += chunk
        return b" 200 " in data.split(b"\r\n", 1)[0] and data.rstrip().endswith(b"ok")
    except OSError:
        return False


def cmd_status(args):
    """Each process, its shards (from the shard map) and its health."""
    c = Cluster(args.dir)
    bins = binaries()
    redis = shutil.which("redis-server") or "redis-server"
    ok = True
    nodes = {}
    cluster_out = ""
    if c.running("redis", redis):
        r = subprocess.run([bins["mailctl"], "--json", "--redis", c.redis_url, "node", "list"],
                           capture_output=True, text=True)
        try:
            nodes = {n["id"]: n for n in json.loads(r.stdout)["nodes"]}
        except (ValueError, KeyError):
            nodes = {}
        r = subprocess.run([bins["mailctl"], "--redis", c.redis_url, "cluster", "status"],
                           capture_output=True, text=True)
        cluster_out = r.stdout + r.stderr
        ok &= r.returncode == 0
    print(f"{'process':8} {'state':22} {'address':22} health")
    pid = c.running("redis", redis)
    healthy = bool(pid) and redis_ping(c.redis_port)
    ok &= healthy
    print(f"{'redis':8} {('running pid ' + str(pid)) if pid else 'stopped':22} "
          f"{'127.0.0.1:' + str(c.redis_port):22} {'PONG' if healthy else 'no answer'}")
    for i in range(1, c.nodes + 1):
        name = f"node{i}"
        pid = c.running(name, bins["mailnode"])
        n = nodes.get(name, {})
        state = n.get("state", "unknown")
        health = state
        if "rtt_us" in n:
            health += f" rtt={n['rtt_us']}us"
        shards = n.get("shards") or "-"
        if "primary_of" in n:
            shards = f"{n['primary_of']} shards ({shards}) epoch {n.get('max_epoch')}"
        ok &= bool(pid) and state == "up"
        print(f"{name:8} {('running pid ' + str(pid)) if pid else 'stopped':22} "
              f"{'127.0.0.1:' + str(c.node_rpc(i)):22} {health}; {shards}")
    pid = c.running("proxy1", bins["mailproxy"])
    healthy = bool(pid) and http_health(c.proxy_metrics)
    ok &= healthy
    print(f"{'proxy1':8} {('running pid ' + str(pid)) if pid else 'stopped':22} "
          f"{'127.0.0.1:' + str(c.port_base + 993):22} "
          f"{'/health ok' if healthy else 'no answer'}; routes every shard")
    if cluster_out:
        print()
        print(cluster_out, end="")
    return 0 if ok else 1


def cmd_down(args):
    c = Cluster(args.dir)
    bins = binaries()
    c.stop("proxy1", bins["mailproxy"])
    for i in range(1, c.nodes + 1):
        c.stop(f"node{i}", bins["mailnode"])
    c.stop("redis", shutil.which("redis-server") or "redis-server")
    print("cluster stopped")


def cmd_stop_node(args):
    c = Cluster(args.dir)
    if not 1 <= args.index <= c.nodes:
        die(f"no node {args.index} (nodes 1..{c.nodes})")
    if not c.stop(f"node{args.index}", binaries()["mailnode"], kill=args.kill):
        die(f"node{args.index} is not running")


def cmd_start_node(args):
    c = Cluster(args.dir)
    if not 1 <= args.index <= c.nodes:
        die(f"no node {args.index} (nodes 1..{c.nodes})")
    c.start_node(binaries(), args.index)


def main():
    ap = argparse.ArgumentParser(prog="local-cluster", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up")
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--port-base", type=int, default=10000)
    up.add_argument("--test-users", type=int, default=0, metavar="N",
                    help="create user1..userN@example.test with one shared password")
    for p in [up] + [sub.add_parser(n) for n in ("status", "down")]:
        p.add_argument("--dir", default=os.path.join(os.getcwd(), "run"))
    sn = sub.add_parser("stop-node")
    sn.add_argument("index", type=int)
    sn.add_argument("--kill", action="store_true")
    st = sub.add_parser("start-node")
    st.add_argument("index", type=int)
    for p in (sn, st):
        p.add_argument("--dir", default=os.path.join(os.getcwd(), "run"))
    args = ap.parse_args()
    if args.cmd == "up" and not 1 <= args.nodes <= 64:
        die("--nodes must be 1..64")
    if args.cmd == "up" and not 0 <= args.test_users <= 1000000:
        die("--test-users must be 0..1000000")
    fn = {"up": cmd_up, "status": cmd_status, "down": cmd_down,
          "stop-node": cmd_stop_node, "start-node": cmd_start_node}[args.cmd]
    sys.exit(fn(args) or 0)


if __name__ == "__main__":
    main()
