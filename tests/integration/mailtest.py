"""Shared helpers for the integration tests (standard library only).

A test script does, roughly:

    import mailtest as mt

    def run(t):
        pki = mt.PKI(t.scratch / "pki")
        ca = pki.ca("Mail Test Root CA")
        leaf = pki.leaf("mail", "mail.example.test", ["mail.example.test"], ca)
        d = t.daemon("echo", [mt.binary("mailbench"), "echo-server", ...])
        ports = d.wait_port_file(t.scratch / "ports", timeout=10)
        t.check(..., "what is being checked")

    mt.main(run, name="tls_echo", budget_s=50)

Environment (set by tests/CMakeLists.txt): MAIL_BUILD_DIR, MAIL_SOURCE_DIR,
MAIL_TEST_TMP. Exit status: 0 all checks passed, 1 a check failed, 77 a
required external tool is missing (skip).

Every daemon started through a Test is stopped (SIGTERM, then SIGKILL) when
the test ends, however it ends; the log tail of each daemon is printed when
a check failed.
"""

import atexit
import os
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

SKIP = 77
HOST = "127.0.0.1"


# ---- environment ---------------------------------------------------------


def _env_dir(var, fallback=None):
    v = os.environ.get(var)
    if v:
        return Path(v)
    if fallback is not None:
        return Path(fallback)
    print(f"mailtest: {var} is not set (run through ctest)", file=sys.stderr)
    sys.exit(2)


def build_dir():
    return _env_dir("MAIL_BUILD_DIR")


def source_dir():
    return _env_dir("MAIL_SOURCE_DIR", Path(__file__).resolve().parents[2])


def binary(name):
    """Path of an executable in the build dir (top level or tests/)."""
    for cand in (build_dir() / name, build_dir() / "tests" / name):
        if cand.is_file() and os.access(cand, os.X_OK):
            return cand
    raise FileNotFoundError(f"{name} not found under {build_dir()}; build it first")


def require_tool(name):
    """Path of an external CLI; exits 77 (skipped) when it is missing."""
    path = shutil.which(name)
    if not path:
        print(f"SKIP: required tool '{name}' not found in PATH")
        sys.exit(SKIP)
    return path


def make_scratch(prefix):
    """A fresh unique directory under MAIL_TEST_TMP (or the system tmp)."""
    root = Path(os.environ.get("MAIL_TEST_TMP") or tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-{os.getpid()}-", dir=root))


# ---- processes -----------------------------------------------------------


def run(argv, stdin=None, timeout=10, cwd=None, env=None):
    """Run a command to completion; returns (rc, stdout, stderr) as text.
    rc is -9 with a note in stderr when it exceeded the timeout."""
    if isinstance(stdin, str):
        stdin = stdin.encode()
    try:
        p = subprocess.run([str(a) for a in argv], input=stdin or b"",
                           capture_output=True, timeout=timeout, cwd=cwd, env=env)
        return p.returncode, _text(p.stdout), _text(p.stderr)
    except subprocess.TimeoutExpired as e:
        return -9, _text(e.stdout), _text(e.stderr) + f"\n[mailtest: timed out after {timeout}s]"


def _text(b):
    if b is None:
        return ""
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else b


def s_client(port, args, stdin=b"", timeout=10, wait_for=None, host=HOST):
    """Run `openssl s_client -connect host:port ARGS`.

    stdin is written once the process starts. Without wait_for, stdin is
    then closed (s_client ends the session at EOF unless -ign_eof/-quiet).
    With wait_for (bytes or str), stdin stays open until wait_for shows up
    in stdout (or the timeout passes), so an echo reply is not raced by
    the EOF; then stdin is closed and the process ends or is killed.
    Returns (rc, stdout, stderr); rc is -9 when it had to be killed."""
    argv = ["openssl", "s_client", "-connect", f"{host}:{port}"] + [str(a) for a in args]
    if isinstance(stdin, str):
        stdin = stdin.encode()
    if isinstance(wait_for, str):
        wait_for = wait_for.encode()
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    out, err = bytearray(), bytearray()

    def pump(src, dst):
        for chunk in iter(lambda: src.read1(65536), b""):
            dst += chunk

    threads = [threading.Thread(target=pump, args=(p.stdout, out), daemon=True),
               threading.Thread(target=pump, args=(p.stderr, err), daemon=True)]
    for th in threads:
        th.start()
    deadline = time.monotonic() + timeout
    killed = False
    try:
        try:
            if stdin:
                p.stdin.write(stdin)
                p.stdin.flush()
            if wait_for is not None:
                while wait_for not in out and p.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.02)
            p.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            killed = True
    finally:
        # Also reached when the test's budget alarm interrupts us: never
        # leave an s_client behind.
        if p.poll() is None:
            p.kill()
            p.wait()
    for th in threads:
        th.join(timeout=2)
    rc = -9 if killed else p.returncode
    e = _text(bytes(err))
    if killed:
        e += f"\n[mailtest: s_client killed after {timeout}s]"
    return rc, _text(bytes(out)), e


PEM_RE = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.S)


def pem_blocks(text):
    """All PEM certificates in a text (e.g. s_client -showcerts output)."""
    return PEM_RE.findall(text)


def cert_info(pem):
    """Facts about one PEM certificate via `openssl x509`: a dict with
    subject, issuer, serial (hex, upper case), san (list of 'DNS:x'),
    key ('rsa'/'ec'/other)."""
    rc, out, err = run(["openssl", "x509", "-noout", "-subject", "-issuer", "-serial",
                        "-ext", "subjectAltName", "-text"], stdin=pem, timeout=10)
    if rc != 0:
        raise RuntimeError(f"openssl x509 failed: {err.strip()}")
    info = {"subject": "", "issuer": "", "serial": "", "san": [], "key": "other"}
    for line in out.splitlines():
        if line.startswith("subject="):
            info["subject"] = line[len("subject="):].strip()
        elif line.startswith("issuer="):
            info["issuer"] = line[len("issuer="):].strip()
        elif line.startswith("serial="):
            info["serial"] = line[len("serial="):].strip().upper()
        elif "DNS:" in line and not info["san"]:
            info["san"] = [s.strip() for s in line.split(",") if s.strip().startswith("DNS:")]
    if "rsaEncryption" in out:
        info["key"] = "rsa"
    elif "id-ecPublicKey" in out:
        info["key"] = "ec"
    return info


# ---- certificates --------------------------------------------------------

_REQ_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""

_INTER_EXT = """\
[ext]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""

_LEAF_EXT = """\
[ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, {ku}
extendedKeyUsage = serverAuth, clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
subjectAltName = {san}
"""


class Cert:
    """cert: the certificate alone; chain: cert followed by its
    intermediates (what a server is given); key: the private key."""

    def __init__(self, name, cert, key, chain, serial, subject, issuer=None):
        self.name, self.cert, self.key, self.chain = name, cert, key, chain
        self.serial, self.subject, self.issuer = serial, subject, issuer

    @property
    def serial_hex(self):
        return format(self.serial, "X")

    def __repr__(self):
        return f"Cert({self.name}, {self.subject}, serial={self.serial_hex})"


class PKI:
    """A throwaway CA hierarchy made with the openssl CLI."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cnf = self.dir / "req.cnf"
        self.cnf.write_text(_REQ_CNF)
        self._serial = int(time.time()) * 1000 % (1 << 40)

    def next_serial(self):
        self._serial += 1
        return self._serial

    def _ossl(self, *args, stdin=None):
        rc, out, err = run(["openssl", *args], stdin=stdin, timeout=30)
        if rc != 0:
            raise RuntimeError(f"openssl {' '.join(map(str, args))} failed: {err.strip()}")
        return out

    def genkey(self, path, kind="rsa"):
        if kind == "rsa":
            self._ossl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                       "-out", path)
        elif kind in ("ec", "ecdsa"):
            self._ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                       "-out", path)
        else:
            raise ValueError(f"unknown key kind {kind}")
        os.chmod(path, 0o600)
        return path

    @staticmethod
    def _subj(cn, ou=None):
        return f"/O=Mail Test/{'OU=' + ou + '/' if ou else ''}CN={cn}"

    def ca(self, cn, name="ca", kind="ec", days=3):
        """A self-signed root."""
        key, cert = self.dir / f"{name}.key", self.dir / f"{name}.pem"
        self.genkey(key, kind)
        serial = self.next_serial()
        self._ossl("req", "-new", "-x509", "-config", self.cnf, "-extensions", "v3_ca",
                   "-key", key, "-subj", self._subj(cn), "-days", days,
                   "-set_serial", serial, "-out", cert)
        return Cert(name, cert, key, cert, serial, cn)

    def _sign(self, name, cn, issuer, ext, kind, days, ou=None):
        key, cert = self.dir / f"{name}.key", self.dir / f"{name}.pem"
        csr, extf = self.dir / f"{name}.csr", self.dir / f"{name}.ext"
        self.genkey(key, kind)
        self._ossl("req", "-new", "-config", self.cnf, "-key", key,
                   "-subj", self._subj(cn, ou), "-out", csr)
        extf.write_text(ext)
        serial = self.next_serial()
        self._ossl("x509", "-req", "-in", csr, "-CA", issuer.cert, "-CAkey", issuer.key,
                   "-set_serial", serial, "-days", days, "-extfile", extf,
                   "-extensions", "ext", "-out", cert)
        chain = self.dir / f"{name}.chain.pem"
        parts = [cert.read_text()]
        if issuer.issuer is not None:
            # issuer is an intermediate: append it and whatever is above it
            # except the root (servers do not send the trust anchor).
            parts.append(_chain_without_root(issuer))
        chain.write_text("".join(p if p.endswith("\n") else p + "\n" for p in parts))
        return Cert(name, cert, key, chain, serial, cn, issuer)

    def intermediate(self, cn, issuer, name="inter", kind="ec", days=3):
        return self._sign(name, cn, issuer, _INTER_EXT, kind, days)

    def leaf(self, name, cn, sans, issuer, kind="rsa", days=2, ou=None):
        """A server/client leaf. sans: DNS names (or 'IP:...' entries)."""
        san = ", ".join(s if ":" in s else f"DNS:{s}" for s in sans)
        ku = "digitalSignature, keyEncipherment" if kind == "rsa" else "digitalSignature"
        return self._sign(name, cn, issuer, _LEAF_EXT.format(ku=ku, san=san), kind, days, ou)


def _chain_without_root(c):
    """PEM text of c and its issuers up to (not including) the root."""
    out = []
    while c is not None and c.issuer is not None:
        out.append(Path(c.cert).read_text())
        c = c.issuer
    return "".join(out)


def write_atomic(path, data):
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


# ---- daemons -------------------------------------------------------------

_live_daemons = []


def _die_with_parent():
    """In the child: SIGKILL when the test process dies, even by SIGKILL
    (no atexit then). Linux only; best effort."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class Daemon:
    """A process under test. stdout+stderr go to DIR/NAME.log."""

    def __init__(self, name, argv, scratch, env=None, cwd=None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = Path(scratch) / f"{name}.log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=self._log, env=env, cwd=cwd,
                                     preexec_fn=_die_with_parent)
        self.pid = self.proc.pid
        self.returncode = None  # set by stop()
        self.died_rc = None  # set by stop() when the process had already exited
        _live_daemons.append(self)

    def alive(self):
        return self.proc.poll() is None

    def send_signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines=40):
        return "\n".join(self.log_text().splitlines()[-lines:])

    def log_count(self, needle):
        return self.log_text().count(needle)

    def wait_log(self, needle, count=1, timeout=5.0):
        """Wait until needle occurs at least count times in the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log_count(needle) >= count:
                return True
            if not self.alive():
                return self.log_count(needle) >= count
            time.sleep(0.02)
        return False

    def wait_port_file(self, path, timeout=10.0, keys=None):
        """Wait for a 'key=port' file; returns {key: int}. Raises on
        timeout or when the daemon exits first."""
        path = Path(path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists():
                ports = {}
                for line in path.read_text().splitlines():
                    k, sep, v = line.partition("=")
                    if sep and v.strip().isdigit():
                        ports[k.strip()] = int(v)
                if not keys or all(k in ports for k in keys):
                    return ports
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before "
                                   f"writing {path}:\n{self.log_tail()}")
            time.sleep(0.02)
        raise TimeoutError(f"{self.name}: no port file {path} after {timeout}s:\n{self.log_tail()}")

    def wait_tcp(self, port, timeout=10.0, host=HOST):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                socket.create_connection((host, port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"{self.name}: port {port} not accepting after {timeout}s")

    def stop(self, timeout=5.0, sig=signal.SIGTERM):
        """Signal the process (by PID), wait, SIGKILL after timeout.
        Returns (returncode, seconds taken, killed)."""
        t0 = time.monotonic()
        killed = False
        if not self.alive() and self.died_rc is None and self.returncode is None:
            self.died_rc = self.proc.returncode  # crashed or exited on its own
        if self.alive():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                killed = True
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        self.returncode = self.proc.returncode
        if not self._log.closed:
            self._log.close()
        if self in _live_daemons:
            _live_daemons.remove(self)
        return self.returncode, time.monotonic() - t0, killed


def _cleanup_daemons():
    for d in list(_live_daemons):
        try:
            d.stop(timeout=3)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


atexit.register(_cleanup_daemons)


# ---- sockets -------------------------------------------------------------


def connect(port, timeout=5.0, host=HOST):
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_until(sock, needle, timeout=5.0, limit=1 << 20):
    """Read until needle (bytes) is in the data, EOF, or timeout; returns
    everything read (the caller checks for needle)."""
    if isinstance(needle, str):
        needle = needle.encode()
    data = b""
    deadline = time.monotonic() + timeout
    while needle not in data and len(data) < limit:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            break
        if not chunk:
            break
        data += chunk
    return data


def recv_line(sock, timeout=5.0):
    """One CRLF/LF-terminated line from a plain socket, reading byte by
    byte so nothing after it is consumed (safe before STARTTLS)."""
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            b = sock.recv(1)
        except socket.timeout:
            break
        if not b:
            break
        data += b
    return data


def wait_closed(sock, timeout=3.0):
    """True when the peer closes (EOF or reset) within timeout; any data
    received meanwhile is discarded."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        r, _, _ = select.select([sock], [], [], left)
        if not r:
            return False
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except OSError:
            return True


def pending_bytes(sock, wait=0.2):
    """Bytes already sent by the peer within `wait` seconds (non-consuming
    peek); b'' when nothing arrived."""
    r, _, _ = select.select([sock], [], [], wait)
    if not r:
        return b""
    try:
        return sock.recv(65536, socket.MSG_PEEK)
    except OSError:
        return b""


def tls_client_context(cafile, minimum=None, maximum=None):
    ctx = ssl.create_default_context(cafile=str(cafile))
    if minimum:
        ctx.minimum_version = minimum
    if maximum:
        ctx.maximum_version = maximum
    return ctx


def tls_connect(port, cafile, server_hostname, timeout=5.0, host=HOST, ctx=None):
    ctx = ctx or tls_client_context(cafile)
    raw = connect(port, timeout, host)
    try:
        return ctx.wrap_socket(raw, server_hostname=server_hostname)
    except BaseException:
        raw.close()
        raise


def echo_roundtrip(sock, payload, timeout=5.0):
    """Send payload, read until it comes back; True when it did."""
    if isinstance(payload, str):
        payload = payload.encode()
    sock.sendall(payload)
    return payload in recv_until(sock, payload, timeout)


def echo_bulk(sock, size, timeout=20.0, chunk=65536):
    """Push `size` random bytes through an echo peer from one thread
    (safe for SSLSocket: no concurrent read/write), reading whatever is
    readable before each write. Returns (ok, received, note)."""
    data = os.urandom(size)
    got = bytearray()
    off = 0
    want = (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError)
    old_timeout = sock.gettimeout()
    sock.setblocking(False)
    deadline = time.monotonic() + timeout
    try:
        while len(got) < size:
            left = deadline - time.monotonic()
            if left <= 0:
                return False, len(got), f"timeout after {timeout}s (sent {off})"
            select.select([sock], [sock] if off < size else [], [], min(left, 0.5))
            try:
                while True:
                    c = sock.recv(chunk)
                    if not c:
                        return False, len(got), f"EOF from peer (sent {off})"
                    got += c
            except want:
                pass
            if off < size:
                try:
                    off += sock.send(data[off:off + chunk])
                except want:
                    pass
    except OSError as e:  # includes ssl.SSLError
        return False, len(got), f"{type(e).__name__}: {e} (sent {off})"
    finally:
        sock.settimeout(old_timeout)
    if bytes(got) != data:
        return False, len(got), "data differs"
    return True, len(got), "ok"


def close_quietly(*socks):
    for s in socks:
        if s is None:
            continue
        try:
            s.close()
        except OSError:
            pass


# ---- checks --------------------------------------------------------------


class TestFailure(Exception):
    """Raised by require() to abort the rest of a test."""


class Test:
    def __init__(self, name):
        self.name = name
        self.scratch = make_scratch(name)
        self.passed = 0
        self.failed = 0
        self.skipped = 0
        self.failures = []
        self.daemons = []

    def check(self, cond, msg, detail=None):
        """Record one check; prints one line. Returns cond as a bool."""
        if cond:
            self.passed += 1
            print(f"ok    {msg}", flush=True)
        else:
            self.failed += 1
            self.failures.append(msg)
            print(f"FAIL  {msg}", flush=True)
            if detail:
                for line in str(detail).rstrip().splitlines()[-30:]:
                    print(f"      | {line}", flush=True)
        return bool(cond)

    def require(self, cond, msg, detail=None):
        """check(), but abort the test when it fails."""
        if not self.check(cond, msg, detail):
            raise TestFailure(msg)

    def skip(self, msg, reason):
        self.skipped += 1
        print(f"skip  {msg} ({reason})", flush=True)

    def daemon(self, name, argv, env=None):
        d = Daemon(name, argv, self.scratch, env=env)
        self.daemons.append(d)
        return d

    def finish(self):
        """Stop daemons, print the summary (and the daemon logs when
        something failed) and exit."""
        _cleanup_daemons()
        if self.failed:
            for d in self.daemons:
                how = (f"exited by itself with status {d.died_rc}" if d.died_rc is not None
                       else f"stopped by the test, status {d.returncode}")
                print(f"---- {d.name} (pid {d.pid}, {how}) log tail, {d.log_path} ----")
                print(d.log_tail(60))
            print("---- failed checks ----")
            for f in self.failures:
                print(f"  {f}")
        print(f"{self.name}: {self.passed} passed, {self.failed} failed, {self.skipped} skipped "
              f"(scratch {self.scratch})", flush=True)
        if self.failed == 0 and self.passed == 0:
            print("no checks ran: counting as failure")
            sys.exit(1)
        sys.exit(1 if self.failed else 0)


class _Deadline(BaseException):
    pass


def main(body, name, budget_s=50):
    """Run body(test) with a wall-clock budget; an exception or the budget
    running out counts as a failed check. Always ends in Test.finish()."""
    t = Test(name)

    def on_alarm(signum, frame):
        raise _Deadline(f"test budget of {budget_s}s exhausted")

    def on_term(signum, frame):
        raise SystemExit(f"terminated by signal {signum}")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.alarm(budget_s)
    try:
        body(t)
    except TestFailure:
        pass
    except _Deadline as e:
        t.check(False, str(e), traceback.format_exc())
    except SystemExit as e:
        t.check(False, f"aborted: {e}")
    except Exception as e:  # noqa: BLE001 - report and fail
        t.check(False, f"exception: {type(e).__name__}: {e}", traceback.format_exc())
    finally:
        signal.alarm(0)
    for d in t.daemons:
        if d.returncode is None and not d.alive():
            t.check(False, f"{d.name} (pid {d.pid}) exited unexpectedly with status "
                    f"{d.proc.returncode}")
    t.finish()
