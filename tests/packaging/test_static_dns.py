"""Name resolution of the static executable (musl's resolver, no NSS) in an empty root as
scratch and distroless give it: /etc/hosts and a Kubernetes-style /etc/resolv.conf (search
domains, ndots:5) against a real DNS server (Debian's dnsmasq) in a network namespace the
test creates.  The resolver is exercised through the built executable itself: in its
python mode (the same file run under the name python3) and through a real program."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from pathlib import Path

import nsroot
import pytest
from pkgtest_helpers import exited_check, require_tool, wait_for

RESOLV = ("search team.svc.cluster.local svc.cluster.local cluster.local\n"
          "nameserver 127.0.0.53\n"
          "options ndots:5\n")
HOSTS = ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
         "10.0.0.5\tpinned.example.test pinned\n")
RECORDS = {
    "backend.team.svc.cluster.local": "10.96.0.11",  # a short name, found through the first search domain
    "db.other.svc.cluster.local": "10.96.0.12",  # "db.other" (1 dot < ndots): found through the second
    "api.example.test": "10.96.0.13",  # reached as an absolute name, trailing dot
    "a.b.c.d.e.example.test": "10.96.0.14",  # 5 dots >= ndots: tried as is first
    "pinned.example.test": "10.96.0.99",  # /etc/hosts wins over DNS
    "linksocks.team.svc.cluster.local": "127.0.0.1",  # the program test's server
}

RESOLVE = r"""
import json, socket, sys
out = {}
for name in json.loads(sys.argv[1]):
    try:
        out[name] = sorted({ai[4][0] for ai in socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)})
    except socket.gaierror as e:
        out[name] = "gaierror %d" % e.errno
print(json.dumps(out))
"""


@pytest.fixture
def dns_netns(tmp_path):
    """A network namespace with lo up and dnsmasq answering RECORDS on 127.0.0.53:53."""
    ip, dnsmasq = require_tool("ip"), require_tool("dnsmasq", "/usr/sbin/dnsmasq")
    name = f"hwdns-{uuid.uuid4().hex[:8]}"
    subprocess.run([ip, "netns", "add", name], check=True, timeout=30)
    path = f"/run/netns/{name}"
    proc = None
    try:
        subprocess.run([ip, "-n", name, "link", "set", "lo", "up"], check=True, timeout=30)
        subprocess.run([ip, "-n", name, "addr", "add", "127.0.0.53/8", "dev", "lo"], check=False, timeout=30)
        conf = tmp_path / "dnsmasq.conf"
        conf.write_text("no-resolv\nno-hosts\nlisten-address=127.0.0.53\nbind-interfaces\nport=53\n"
                        "log-queries\nuser=root\n"
                        # authoritative for every name, as CoreDNS is for cluster.local: NODATA for the
                        # AAAA of an A-only name, NXDOMAIN for unknown names (never REFUSED or silence,
                        # which musl treats as a failure of the whole lookup or waits out)
                        "local=/#/\n"
                        + "".join(f"host-record={n},{a}\n" for n, a in RECORDS.items()))
        log = open(tmp_path / "dnsmasq.log", "wb")
        proc = subprocess.Popen([require_tool("nsenter"), f"--net={path}", dnsmasq, "--keep-in-foreground",
                                 f"--conf-file={conf}", "--log-facility=-"],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()

        def udp53() -> bool:
            try:
                table = Path(f"/proc/{proc.pid}/net/udp").read_text()  # the namespace's own table
            except FileNotFoundError:
                return False
            return any(line.split()[1].endswith(":0035") for line in table.splitlines()[1:])

        wait_for(udp53, "dnsmasq on 127.0.0.53:53", alive=[exited_check(proc, "dnsmasq")])
        yield path
    finally:
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            print((tmp_path / "dnsmasq.log").read_text(errors="replace")[-3000:])
        subprocess.run([ip, "netns", "delete", name], check=False, timeout=30)


def scratch_root(tmp_path: Path, static_binary, *, hosts: bool = True) -> Path:
    exe = static_binary("linksocks")
    files = {"app/python3": exe, "app/hatchway-linksocks": exe, "etc/resolv.conf": RESOLV.encode()}
    if hosts:
        files["etc/hosts"] = HOSTS.encode()
    return nsroot.make_root(tmp_path, files)


def resolve(root: Path, netns: str, names: list[str]) -> dict:
    res = nsroot.run(root, 65532, ["/app/python3", "-c", RESOLVE, json.dumps(names)], netns=netns)
    assert res.returncode == 0, res.stderr.decode()
    return json.loads(res.stdout)


def test_hosts_search_domains_and_ndots(static_binary, dns_netns, tmp_path):
    root = scratch_root(tmp_path, static_binary)
    got = resolve(root, dns_netns, ["localhost", "pinned", "pinned.example.test", "backend", "db.other",
                                    "api.example.test.", "a.b.c.d.e.example.test", "nosuchname",
                                    "backend.team.svc.cluster.local"])
    assert got["localhost"] == ["127.0.0.1", "::1"]
    assert got["pinned"] == ["10.0.0.5"] and got["pinned.example.test"] == ["10.0.0.5"]
    assert got["backend"] == ["10.96.0.11"]
    assert got["db.other"] == ["10.96.0.12"]
    assert got["api.example.test."] == ["10.96.0.13"]
    assert got["a.b.c.d.e.example.test"] == ["10.96.0.14"]
    assert got["backend.team.svc.cluster.local"] == ["10.96.0.11"]
    assert str(got["nosuchname"]).startswith("gaierror")


def test_without_etc_hosts_localhost_needs_dns(static_binary, dns_netns, tmp_path):
    """What the image's /etc/hosts is for: without one (a runtime that supplies none), musl
    asks DNS for localhost, which this server does not know."""
    root = scratch_root(tmp_path, static_binary, hosts=False)
    got = resolve(root, dns_netns, ["localhost", "backend", "127.0.0.1"])
    assert str(got["localhost"]).startswith("gaierror")
    assert got["backend"] == ["10.96.0.11"] and got["127.0.0.1"] == ["127.0.0.1"]


def test_program_connects_to_a_short_name_through_the_search_domains(static_binary, dns_netns, tmp_path):
    """hatchway-linksocks client -u ws://linksocks:PORT (the Kubernetes service name) from the empty
    root reaches a server in the same network namespace."""
    root = scratch_root(tmp_path, static_binary)
    port, socks = 18765, 11080
    nsenter = require_tool("nsenter")
    server = subprocess.Popen([nsenter, f"--net={dns_netns}", str(static_binary("linksocks")), "server",
                               "-H", "127.0.0.1", "-P", str(port), "-t", "tok"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    client = None
    try:
        def server_ready() -> bool:
            table = Path(f"/proc/{server.pid}/net/tcp").read_text()
            return any(ln.split()[1].endswith(f":{port:04X}") and ln.split()[3] == "0A"
                       for ln in table.splitlines()[1:])

        wait_for(server_ready, "the server in the namespace", alive=[exited_check(server, "server")])
        log = tmp_path / "client.log"
        with open(log, "wb") as out:
            client = subprocess.Popen(
                nsroot.command(root, 65532, ["/app/hatchway-linksocks", "client", "-t", "tok", "-u",
                                             f"ws://linksocks:{port}", "-p", str(socks), "-R"], netns=dns_netns),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        (child,) = wait_for(lambda: nsroot.children(client.pid) or None, "the client process")
        # READY comes once the client has connected and authenticated
        wait_for(lambda: b"READY linksocks client" in log.read_bytes(), "the client's READY line",
                 alive=[exited_check(client, "client")])
        assert f"ws://linksocks:{port}".encode() in log.read_bytes()
        os.kill(child, signal.SIGTERM)
        assert client.wait(timeout=30) == 0, log.read_bytes()[-3000:]
    finally:
        for proc in (client, server):
            if proc is not None:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                if proc.stderr is not None:
                    proc.stderr.close()
