"""The files for real hosts: the systemd units pass `systemd-analyze
verify` and keep a low `systemd-analyze security` exposure (the node
without any capability, the proxy with only CAP_NET_BIND_SERVICE); every
example config loads in the daemon it is for; the compose file is
consistent (and `docker compose config` accepts it where the client
exists); the Containerfile's packages exist in Debian 12."""

import re
import shutil
import subprocess

import mailtest as mt


def run(t):
    src = mt.source_dir() / "deploy"
    node, proxy = mt.binary("mailnode"), mt.binary("mailproxy")

    # --- systemd units ------------------------------------------------------------
    units = {"mailnode@.service": "mailnode@node1.service",
             "mailproxy@.service": "mailproxy@proxy1.service"}
    text = {u: (src / "systemd" / u).read_text() for u in units}
    t.check("AmbientCapabilities=CAP_NET_BIND_SERVICE" in text["mailproxy@.service"] and
            re.search(r"^CapabilityBoundingSet=CAP_NET_BIND_SERVICE$", text["mailproxy@.service"],
                      re.M) and
            re.search(r"^CapabilityBoundingSet=$", text["mailnode@.service"], re.M) and
            re.search(r"^AmbientCapabilities=$", text["mailnode@.service"], re.M),
            "capabilities: only the proxy may bind low ports, the node has none")
    for u in units:
        t.check(all(k in text[u] for k in ("User=mailcluster", "NoNewPrivileges=yes",
                                           "ProtectSystem=strict", "io_uring_setup")),
                f"{u}: dedicated user, NoNewPrivileges, ProtectSystem=strict, io_uring allowed")
    t.check("ReadWritePaths=/var/lib/mailcluster/%i" in text["mailnode@.service"] and
            "ReadWritePaths" not in text["mailproxy@.service"],
            "only the node writes, and only its data directory")
    sda = shutil.which("systemd-analyze")
    if sda:
        d = t.scratch / "units"
        d.mkdir()
        for u in units:
            # The binaries of this build instead of /usr/local/bin.
            (d / u).write_text(text[u].replace("/usr/local/bin/", f"{node.parent}/"))
        r = subprocess.run([sda, "verify"] + list(units.values()), cwd=d, capture_output=True,
                           text=True, timeout=60)
        t.check(r.returncode == 0 and r.stderr.strip() == "" and r.stdout.strip() == "",
                "systemd-analyze verify: no complaint", r.stdout + r.stderr)
        for u, inst in units.items():
            r = subprocess.run([sda, "security", "--offline=yes", inst], cwd=d,
                               capture_output=True, text=True, timeout=60)
            m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout + r.stderr)
            t.check(m and float(m.group(1)) <= 2.0,
                    f"{inst}: systemd-analyze security exposure <= 2.0 "
                    f"({m.group(1) if m else '?'})", (r.stdout + r.stderr)[-600:])
    else:
        t.skip("systemd-analyze verify", "systemd-analyze not installed")

    # --- example configs ------------------------------------------------------------
    confs = sorted((src / "examples").glob("mail*/mail*.conf"))
    t.check(len(confs) == 6, "three hosts, a node and a proxy each", confs)
    for f in confs:
        binary = node if f.name.startswith("mailnode") else proxy
        rc, out, err = mt.run([binary, "--config", f, "--print-config"], timeout=20)
        t.check(rc == 0, f"{f.parent.name}/{f.name} loads in {binary.name}", err)
    ids = {}
    for f in confs:
        kv = dict(re.findall(r"^([a-z.]+) = (.*)$", f.read_text(), re.M))
        if f.name.startswith("mailnode"):
            ids[kv["node.id"]] = kv["rpc.listen"]
            t.check(kv.get("shards.local") == "none" and
                    kv["data.dir"].endswith("/" + kv["node.id"]),
                    f"{f.name}: shards from the map only, data in /var/lib/mailcluster/<id>")
    t.check(len(set(ids.values())) == 3, "three distinct node addresses", ids)
    redis = (src / "examples" / "redis" / "redis-primary.conf").read_text()
    t.check("requirepass" in redis and "appendonly yes" in redis and
            re.search(r"^bind 10\.", redis, re.M), "Redis: private address, password, AOF")

    # --- compose and the Containerfile ----------------------------------------------
    compose = src / "compose.yaml"
    try:
        import yaml
    except ImportError:
        yaml = None
    if yaml:
        c = yaml.safe_load(compose.read_text())
        svcs = c["services"]
        addrs = [s["networks"]["mail"]["ipv4_address"] for n, s in svcs.items()
                 if s.get("networks", {}).get("mail")]
        t.check(set(svcs) == {"redis", "node1", "node2", "node3", "proxy", "ctl"} and
                len(addrs) == len(set(addrs)) == 5, "compose: services with unique addresses",
                svcs.keys())
        for n in ("node1", "node2", "node3"):
            cmd = " ".join(svcs[n]["command"])
            ip = svcs[n]["networks"]["mail"]["ipv4_address"]
            t.check(f"node.id={n}" in cmd and f"rpc.listen={ip}:7001" in cmd and
                    "shards.local=none" in cmd, f"compose: {n} listens on its own address")
        t.check(svcs["proxy"]["sysctls"]["net.ipv4.ip_unprivileged_port_start"] == 0 and
                "25:25" in svcs["proxy"]["ports"], "compose: the proxy publishes the mail ports")
    else:
        t.skip("compose structure", "python3-yaml not installed")
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode \
            == 0:
        r = subprocess.run([docker, "compose", "-f", compose, "config", "-q"],
                           capture_output=True, text=True, timeout=60)
        t.check(r.returncode == 0, "docker compose config", r.stderr)
    else:
        t.skip("docker compose config", "no docker compose client")
    cf = (src / "Containerfile").read_text()
    t.check(re.search(r"^FROM debian:12 AS build$", cf, re.M) and
            re.search(r"^FROM debian:12-slim$", cf, re.M) and "USER mailcluster" in cf,
            "Containerfile: Debian 12 stages, runs as mailcluster")
    pkgs = set()
    for block in re.findall(r"apt-get install -y --no-install-recommends\s*\\\n(.*?)\n &&", cf,
                            re.S):
        pkgs |= set(re.findall(r"[a-z0-9][a-z0-9.+-]+", block.replace("\\", " ")))
    t.check(len(pkgs) > 15, "Containerfile: apt packages found", pkgs)
    policy = shutil.which("apt-cache")
    if policy:
        r = subprocess.run([policy, "policy"] + sorted(pkgs), capture_output=True, text=True,
                           timeout=60)
        missing = [p for p in pkgs if not re.search(r"^%s:\n\s+Installed: .*\n\s+Candidate: \S+"
                                                    % re.escape(p), r.stdout, re.M)
                   or re.search(r"^%s:\n\s+Installed: .*\n\s+Candidate: \(none\)"
                                % re.escape(p), r.stdout, re.M)]
        t.check(not missing, "every package the Containerfile installs exists in apt", missing)


if __name__ == "__main__":
    mt.main(run, name="deploy_files", budget_s=60)
