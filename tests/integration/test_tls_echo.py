"""TLS, SNI, STARTTLS and reload behaviour of the event loop, driven through
`mailbench echo-server` with real clients (openssl s_client, Python ssl).

Certificates: a root CA, an intermediate CA, a default RSA leaf for
mail.example.test (served as leaf+intermediate) and an ECDSA leaf for
*.other.test chosen by SNI.
"""

import os
import re
import signal
import ssl
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mailtest as mt  # noqa: E402

DEFAULT_NAME = "mail.example.test"
WILD_NAME = "*.other.test"
WILD_HOST = "x.other.test"
INTER_CN = "Mail Test Intermediate CA"


def token(tag):
    return f"{tag}-{os.getpid()}-{time.monotonic_ns() % 1000000}"


def s_client_facts(out):
    """Protocol, verification result and server certificate from s_client."""
    m = re.search(r"^New, (\S+), Cipher is (\S+)", out, re.M)
    pems = mt.pem_blocks(out)
    return {
        "protocol": m.group(1).rstrip(",") if m else None,
        "cipher": m.group(2) if m else None,
        "verified": "Verification: OK" in out and "Verify return code: 0 (ok)" in out,
        "cert": mt.cert_info(pems[0]) if pems else None,
        "pems": pems,
    }


def cn_of(subject):
    m = re.search(r"CN\s*=\s*([^,/]+)", subject or "")
    return m.group(1).strip() if m else ""


def run(t):
    mt.require_tool("openssl")
    bench = mt.binary("mailbench")

    # ---- certificates ----------------------------------------------------
    pki = mt.PKI(t.scratch / "pki")
    ca = pki.ca("Mail Test Root CA")
    inter = pki.intermediate(INTER_CN, ca)
    mail1 = pki.leaf("mail1", DEFAULT_NAME, [DEFAULT_NAME], inter, kind="rsa", ou="gen1")
    wild = pki.leaf("wild", WILD_NAME, [WILD_NAME], inter, kind="ec")
    srv = t.scratch / "srv"
    srv.mkdir()
    def_cert, def_key = srv / "default.pem", srv / "default.key"
    wild_cert, wild_key = srv / "wild.pem", srv / "wild.key"
    mt.write_atomic(def_cert, mail1.chain.read_text())
    mt.write_atomic(def_key, mail1.key.read_text())
    mt.write_atomic(wild_cert, wild.chain.read_text())
    mt.write_atomic(wild_key, wild.key.read_text())
    cafile = ca.cert

    port_file = t.scratch / "ports"
    d = t.daemon("echo-server", [bench, "echo-server",
                                 "--listen", "127.0.0.1:0",
                                 "--tls-listen", "127.0.0.1:0",
                                 "--starttls-listen", "127.0.0.1:0",
                                 "--cert", def_cert, "--key", def_key,
                                 "--cert", wild_cert, "--key", wild_key,
                                 "--port-file", port_file])
    ports = d.wait_port_file(port_file, timeout=10, keys=("plain", "tls", "starttls"))
    t.require(all(ports[k] > 0 for k in ("plain", "tls", "starttls")),
              f"port file lists three listening ports {ports}")
    tls_port, st_port, plain_port = ports["tls"], ports["starttls"], ports["plain"]
    verify = ["-CAfile", cafile, "-verify_return_error"]

    # ---- plain echo (sanity) -------------------------------------------
    s = mt.connect(plain_port)
    t.check(mt.echo_roundtrip(s, token("plain") + "\n"), "plain listener echoes a line")
    s.close()

    # ---- handshake + data both ways, TLS 1.3 and 1.2 ----------------------
    for flag, want in (("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")):
        line = token(f"echo{want}")
        rc, out, err = mt.s_client(tls_port, [flag, *verify, "-verify_hostname", DEFAULT_NAME,
                                              "-servername", DEFAULT_NAME],
                                   stdin=line + "\n", wait_for=line, timeout=8)
        f = s_client_facts(out)
        detail = f"rc={rc}\n{err}\n{out[-1500:]}"
        t.check(rc == 0 and f["protocol"] == want,
                f"s_client {flag}: handshake completes with {want} (got {f['protocol']}, "
                f"cipher {f['cipher']})", detail)
        t.check(f["verified"], f"s_client {flag}: chain verifies against the CA with "
                f"hostname {DEFAULT_NAME}", detail)
        t.check(line in out, f"s_client {flag}: line sent over TLS comes back", detail)

    # ---- bulk data both ways ---------------------------------------------------
    # Well above the server's 4 MiB output limit and its 4 MiB receive
    # ring: a client that sends fast but keeps reading must be slowed down
    # by backpressure, never cut off. MAIL_TEST_BULK_BYTES changes it.
    bulk = int(os.environ.get("MAIL_TEST_BULK_BYTES", 24 << 20))
    for label, port, wrap in (("plain", plain_port, False), ("TLS", tls_port, True)):
        s = mt.tls_connect(tls_port, cafile, DEFAULT_NAME) if wrap else mt.connect(port)
        ok, n, note = mt.echo_bulk(s, bulk, timeout=15)
        t.check(ok, f"{label}: {bulk} random bytes echo back intact ({n} received, {note})")
        s.close()

    # ---- TLS 1.1 refused -------------------------------------------------
    rc, out, err = mt.run(["openssl", "s_client", "-help"], timeout=5)
    if "-tls1_1" not in out + err:
        t.skip("TLS 1.1 refused", "local openssl s_client has no -tls1_1")
    else:
        failed0 = d.log_count("event=tls_handshake_failed")
        # SECLEVEL=0 so that the local OpenSSL 3 client really offers 1.1.
        rc, out, err = mt.s_client(tls_port, ["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0",
                                              "-CAfile", cafile, "-servername", DEFAULT_NAME],
                                   timeout=8)
        f = s_client_facts(out)
        t.check(rc != 0 and f["protocol"] in (None, "(NONE)") and not f["pems"],
                "TLS 1.1 ClientHello is refused (no certificate, no cipher)",
                f"rc={rc} protocol={f['protocol']}\n{err}\n{out[-800:]}")
        t.check("alert protocol version" in err + out,
                "TLS 1.1 refusal is a protocol_version alert", err[-600:])
        t.check(d.wait_log("event=tls_handshake_failed", failed0 + 1, timeout=3),
                "server logs tls_handshake_failed for the TLS 1.1 attempt")

    # ---- SNI ---------------------------------------------------------------
    sni_cases = [
        (["-servername", WILD_HOST, "-verify_hostname", WILD_HOST], "wild",
         f"SNI {WILD_HOST}"),
        (["-servername", WILD_HOST.upper(), "-verify_hostname", WILD_HOST], "wild",
         f"SNI {WILD_HOST.upper()} (case-insensitive)"),
        (["-servername", DEFAULT_NAME, "-verify_hostname", DEFAULT_NAME], "default",
         f"SNI {DEFAULT_NAME}"),
        (["-noservername"], "default", "no SNI"),
        (["-servername", "unknown.invalid"], "default", "SNI unknown.invalid"),
        (["-servername", "a.b.other.test"], "default",
         "SNI a.b.other.test (wildcard covers one label only)"),
    ]
    for args, which, label in sni_cases:
        rc, out, err = mt.s_client(tls_port, ["-tls1_3", "-CAfile", cafile, *args], timeout=8)
        f = s_client_facts(out)
        c = f["cert"] or {}
        detail = f"rc={rc}\n{err[-500:]}\n{out[-1200:]}"
        if which == "wild":
            ok = (cn_of(c.get("subject")) == WILD_NAME and "DNS:" + WILD_NAME in c.get("san", [])
                  and c.get("key") == "ec" and f["verified"])
            t.check(ok, f"{label}: gets the ECDSA {WILD_NAME} certificate, verified "
                    f"(subject {c.get('subject')}, SAN {c.get('san')})", detail)
        else:
            ok = (cn_of(c.get("subject")) == DEFAULT_NAME and
                  "DNS:" + DEFAULT_NAME in c.get("san", []) and c.get("key") == "rsa")
            t.check(ok, f"{label}: gets the default RSA {DEFAULT_NAME} certificate "
                    f"(subject {c.get('subject')})", detail)

    # ---- the chain is served whole -----------------------------------------
    for name, label in ((DEFAULT_NAME, "default"), (WILD_HOST, "wildcard")):
        rc, out, err = mt.s_client(tls_port, ["-tls1_3", "-showcerts", *verify,
                                              "-servername", name], timeout=8)
        pems = mt.pem_blocks(out)
        subj1 = mt.cert_info(pems[1])["subject"] if len(pems) > 1 else ""
        t.check(len(pems) == 2 and cn_of(subj1) == INTER_CN and
                re.search(r"^ 1 s:.*" + re.escape(INTER_CN), out, re.M),
                f"{label} certificate: -showcerts shows 2 certificates, the second is "
                f"'{INTER_CN}' (got {len(pems)}, second '{subj1}')", out[-1500:])

    # ---- garbage instead of a ClientHello ----------------------------------
    keep = mt.tls_connect(tls_port, cafile, DEFAULT_NAME)
    t.check(mt.echo_roundtrip(keep, token("keep-before")),
            "established TLS connection echoes before the garbage")
    failed0 = d.log_count("event=tls_handshake_failed")
    garbage = {
        "random bytes": b"\x42" + os.urandom(511),
        "an HTTP request": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "a record header with an oversized length": b"\x16\x03\x01\xff\xff" + os.urandom(64),
    }
    for label, data in garbage.items():
        g = mt.connect(tls_port)
        g.sendall(data)
        t0 = time.monotonic()
        closed = mt.wait_closed(g, timeout=3)
        t.check(closed, f"{label} on the TLS port: server closes that socket "
                f"({time.monotonic() - t0:.2f}s)")
        g.close()
        t.check(mt.echo_roundtrip(keep, token("keep")),
                f"established TLS connection still echoes after {label}")
    t.check(d.wait_log("event=tls_handshake_failed", failed0 + len(garbage), timeout=3),
            f"server logged {len(garbage)} tls_handshake_failed for the garbage connections")
    t.check(d.alive(), "server still running after garbage")

    # ---- half-open: silent clients do not block others ------------------------
    silent = [mt.connect(tls_port), mt.connect(tls_port), mt.connect(st_port),
              mt.connect(plain_port)]
    line = token("while-silent")
    rc, out, err = mt.s_client(tls_port, ["-tls1_3", *verify, "-servername", DEFAULT_NAME],
                               stdin=line + "\n", wait_for=line, timeout=8)
    t.check(rc == 0 and line in out,
            "with silent connections open, a new TLS client completes and echoes",
            f"rc={rc}\n{err[-500:]}")
    s = mt.connect(plain_port)
    t.check(mt.echo_roundtrip(s, token("plain-while-silent")),
            "with silent connections open, the plain listener echoes")
    s.close()
    t.check(mt.echo_roundtrip(keep, token("keep-silent")),
            "with silent connections open, the established TLS connection echoes")

    # ---- STARTTLS with Python ssl ---------------------------------------------
    ctx = mt.tls_client_context(cafile)
    for sni, want in ((DEFAULT_NAME, DEFAULT_NAME), (WILD_HOST, WILD_NAME)):
        raw = mt.connect(st_port)
        greet = mt.recv_line(raw)
        t.check(greet == b"OK echo ready\r\n", f"STARTTLS ({sni}): greeting {greet!r}")
        raw.sendall(b"HELLO\r\n")
        r = mt.recv_line(raw)
        t.check(r == b"ECHO HELLO\r\n", f"STARTTLS ({sni}): plaintext HELLO -> {r!r}")
        raw.sendall(b"STARTTLS\r\n")
        r = mt.recv_line(raw)
        t.check(r == b"OK begin TLS\r\n", f"STARTTLS ({sni}): STARTTLS -> {r!r}")
        try:
            ts = ctx.wrap_socket(raw, server_hostname=sni)
        except (ssl.SSLError, OSError) as e:
            t.check(False, f"STARTTLS ({sni}): TLS handshake after STARTTLS: {e}")
            raw.close()
            continue
        cert = ts.getpeercert()
        cn = dict(x[0] for x in cert.get("subject", ()))["commonName"]
        t.check(cn == want, f"STARTTLS ({sni}): verified handshake ({ts.version()}), "
                f"certificate CN {cn}")
        payload = token("over-starttls") + "\r\n"
        t.check(mt.echo_roundtrip(ts, payload),
                f"STARTTLS ({sni}): data echoes over TLS (raw echo after upgrade)")
        ts.close()
    t.skip("STARTTLS with openssl s_client -starttls",
           "no s_client -starttls mode speaks this line protocol "
           "(pop3 sends STLS, smtp/imap expect their own replies)")

    # ---- STARTTLS injection -----------------------------------------------
    # One write carries STARTTLS and a pipelined line; the server must drop
    # the pipelined bytes (not echo them, not feed them to TLS). Variant 2
    # first leaves a partial line buffered so the command is parsed from
    # the connection's saved input rather than straight from the recv.
    variants = [
        ("direct", [b"STARTTLS\r\nINJECTED\r\n"]),
        ("buffered", [b"HEL", b"LO\r\nSTARTTLS\r\nINJECTED\r\n"]),
    ]
    for label, writes in variants:
        raw = mt.connect(st_port)
        mt.recv_line(raw)
        for i, w in enumerate(writes):
            raw.sendall(w)
            if i + 1 < len(writes):
                time.sleep(0.15)  # let the server buffer the partial line
        if label == "buffered":
            r = mt.recv_line(raw)
            t.check(r == b"ECHO HELLO\r\n", f"injection ({label}): split HELLO -> {r!r}")
        r = mt.recv_line(raw)
        t.check(r == b"OK begin TLS\r\n", f"injection ({label}): STARTTLS -> {r!r}")
        extra = mt.pending_bytes(raw, wait=0.3)
        t.check(extra == b"", f"injection ({label}): no plaintext reply to the pipelined line "
                f"before the handshake (got {extra[:60]!r})")
        try:
            ts = ctx.wrap_socket(raw, server_hostname=DEFAULT_NAME)
        except (ssl.SSLError, OSError) as e:
            t.check(False, f"injection ({label}): TLS handshake succeeds despite the "
                    f"pipelined bytes: {type(e).__name__}: {e}")
            raw.close()
            continue
        t.check(True, f"injection ({label}): TLS handshake succeeds ({ts.version()})")
        probe = token("probe").encode() + b"\r\n"
        ts.sendall(probe)
        got = mt.recv_until(ts, probe, timeout=3)
        t.check(b"INJECTED" not in got and got.startswith(probe),
                f"injection ({label}): first bytes over TLS are our probe, no INJECTED "
                f"(got {got[:80]!r})")
        ts.close()
    t.check(d.alive(), "server still running after STARTTLS tests")

    # ---- certificate reload ------------------------------------------------------
    before = mt.tls_connect(tls_port, cafile, DEFAULT_NAME)
    serial1 = int(before.getpeercert()["serialNumber"], 16)
    t.check(serial1 == mail1.serial, f"before reload: default cert serial {serial1:X}")
    t.check(mt.echo_roundtrip(before, token("before-reload")),
            "connection opened before the reload echoes")

    mail2 = pki.leaf("mail2", DEFAULT_NAME, [DEFAULT_NAME], inter, kind="rsa", ou="gen2")
    mt.write_atomic(def_key, mail2.key.read_text())
    mt.write_atomic(def_cert, mail2.chain.read_text())
    n_ok = d.log_count("event=tls_reloaded")
    d.send_signal(signal.SIGHUP)
    t.check(d.wait_log("event=tls_reloaded", n_ok + 1, timeout=5),
            "SIGHUP: server logs tls_reloaded")

    def served(name=DEFAULT_NAME):
        rc, out, err = mt.s_client(tls_port, ["-tls1_3", *verify, "-servername", name,
                                              "-verify_hostname", name], timeout=8)
        f = s_client_facts(out)
        c = f["cert"] or {}
        serial = int(c["serial"], 16) if c.get("serial") else None
        return serial, c.get("subject", ""), f["verified"], f"rc={rc}\n{err[-400:]}"

    serial, subj, ok, detail = served()
    t.check(serial == mail2.serial and "gen2" in subj and ok,
            f"after reload: new handshakes get the new cert (serial {serial and hex(serial)}, "
            f"{subj})", detail)
    serial, subj, ok, detail = served(WILD_HOST)
    t.check(serial == wild.serial and ok, "after reload: SNI still selects the wildcard cert",
            detail)
    t.check(mt.echo_roundtrip(before, token("after-reload")),
            "connection opened before the reload still echoes after it")

    # A broken certificate file: reload fails, the previous cert stays.
    fail0 = d.log_count("event=tls_reload_failed")
    mt.write_atomic(def_cert, "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
    d.send_signal(signal.SIGHUP)
    t.check(d.wait_log("event=tls_reload_failed", fail0 + 1, timeout=5),
            "SIGHUP with a broken cert file: server logs tls_reload_failed",
            d.log_tail(5))
    serial, subj, ok, detail = served()
    t.check(d.alive() and serial == mail2.serial and ok,
            f"after the failed reload: still serving the previous cert "
            f"(serial {serial and hex(serial)})", detail)

    # A certificate that does not match the key: also refused.
    mail3 = pki.leaf("mail3", DEFAULT_NAME, [DEFAULT_NAME], inter, kind="rsa", ou="gen3")
    mt.write_atomic(def_cert, mail3.chain.read_text())  # key file still holds mail2's key
    d.send_signal(signal.SIGHUP)
    t.check(d.wait_log("event=tls_reload_failed", fail0 + 2, timeout=5),
            "SIGHUP with a cert that does not match the key: tls_reload_failed",
            d.log_tail(5))
    serial, subj, ok, detail = served()
    t.check(serial == mail2.serial and ok,
            "after the mismatched reload: still serving the previous cert", detail)
    t.check(mt.echo_roundtrip(before, token("after-failed-reload")) and
            mt.echo_roundtrip(keep, token("keep-end")),
            "older connections still echo after the failed reloads")

    # ---- SIGTERM -----------------------------------------------------------------
    # Idle connections (an established TLS one, silent half-open ones) stay
    # open: draining must close them rather than wait for them.
    mt.close_quietly(before)
    rc, took, killed = d.stop(timeout=8)
    t.check(rc == 0 and not killed and took < 6,
            f"SIGTERM with idle connections open: server exits 0 "
            f"(rc={rc}, {took:.2f}s, killed={killed})")
    t.check("event=draining" in d.log_text(), "SIGTERM: server logs draining")
    mt.close_quietly(keep, *silent)


if __name__ == "__main__":
    mt.main(run, name="tls_echo", budget_s=40)
