"""A test Tailscale control server (ts2021 over HTTP/1.1 upgrade, Noise IK, HTTP/2) and DERP relay.

Run inside a network namespace (see ``tailnet.py``):
``python fake_control.py --port 8080 --derp-port 8443 --dir DIR``; it writes DIR/ca.pem (the DERP's test CA) and
DIR/ready once both listeners are up, and DIR/nodes.json after every change. Offline, test only
(sidecar.md 11.3). Enough for Go tsnet (Go sidecar, caddy-tailscale) and arkitekt-mesh to join and talk.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import hashlib
import hmac
import ipaddress
import json
import os
import ssl
import struct
import sys
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import nacl.public
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.x509.oid import NameOID

AUTH_KEY = "tskey-auth-test"
DOMAIN = "tail.example"
KEEPALIVE = 10.0
REGION = 900

# ------------------------------------------------------------------ Noise IK (controlbase)

PROTOCOL_NAME = b"Noise_IK_25519_ChaChaPoly_BLAKE2s"
ZERO_NONCE = bytes(12)


def _hash(data: bytes) -> bytes:
    return hashlib.blake2s(data).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.blake2s).digest()


def _hkdf(ck: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    prk = _hmac(ck, ikm)
    out1 = _hmac(prk, b"\x01")
    return out1, _hmac(prk, out1 + b"\x02")


def _dh(private: X25519PrivateKey, public: bytes) -> bytes:
    return private.exchange(X25519PublicKey.from_public_bytes(public))


def _pub(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class Handshake:
    def __init__(self, control_private: X25519PrivateKey, version: int) -> None:
        self.private = control_private
        self.h = _hash(PROTOCOL_NAME)
        self.ck = self.h
        self.mix_hash(b"Tailscale Control Protocol v" + str(version).encode())
        self.mix_hash(_pub(control_private))

    def mix_hash(self, data: bytes) -> None:
        self.h = _hash(self.h + data)

    def mix_dh(self, private: X25519PrivateKey, public: bytes) -> bytes:
        self.ck, key = _hkdf(self.ck, _dh(private, public))
        return key

    def decrypt_and_hash(self, key: bytes, ciphertext: bytes) -> bytes:
        plain = ChaCha20Poly1305(key).decrypt(ZERO_NONCE, ciphertext, self.h)
        self.mix_hash(ciphertext)
        return plain

    def encrypt_and_hash(self, key: bytes, plain: bytes) -> bytes:
        ciphertext = ChaCha20Poly1305(key).encrypt(ZERO_NONCE, plain, self.h)
        self.mix_hash(ciphertext)
        return ciphertext

    def respond(self, init: bytes) -> tuple[bytes, bytes, bytes, bytes]:
        """Process the 101-byte initiation; return (response, machine key, rx key, tx key)."""
        if len(init) != 101 or init[2] != 1:
            raise ValueError("bad initiation")
        ephemeral = init[5:37]
        self.mix_hash(ephemeral)
        key = self.mix_dh(self.private, ephemeral)
        machine = self.decrypt_and_hash(key, init[37:85])
        key = self.mix_dh(self.private, machine)
        self.decrypt_and_hash(key, init[85:101])
        mine = X25519PrivateKey.generate()
        self.mix_hash(_pub(mine))
        self.mix_dh(mine, ephemeral)
        key = self.mix_dh(mine, machine)
        tag = self.encrypt_and_hash(key, b"")
        c1, c2 = _hkdf(self.ck, b"")
        return bytes([2]) + struct.pack(">H", 48) + _pub(mine) + tag, machine, c1, c2


class NoiseStream:
    """Transport records (type 4, BE length, ChaCha20-Poly1305 with a BE counter nonce) over a TCP stream."""

    MAX_PLAIN = 4096 - 3 - 16

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rx: bytes, tx: bytes) -> None:
        self.reader, self.writer = reader, writer
        self.rx, self.tx = ChaCha20Poly1305(rx), ChaCha20Poly1305(tx)
        self.rx_n = self.tx_n = 0

    async def read(self) -> bytes:
        head = await self.reader.readexactly(3)
        if head[0] != 4:
            raise ValueError(f"unexpected noise frame type {head[0]}")
        body = await self.reader.readexactly(struct.unpack(">H", head[1:])[0])
        nonce = bytes(4) + struct.pack(">Q", self.rx_n)
        self.rx_n += 1
        return self.rx.decrypt(nonce, body, None)

    def write(self, data: bytes) -> None:
        if self.writer.is_closing():
            raise ConnectionResetError("control connection closed")
        for i in range(0, len(data), self.MAX_PLAIN):
            nonce = bytes(4) + struct.pack(">Q", self.tx_n)
            self.tx_n += 1
            sealed = self.tx.encrypt(nonce, data[i:i + self.MAX_PLAIN], None)
            self.writer.write(bytes([4]) + struct.pack(">H", len(sealed)) + sealed)


# ------------------------------------------------------------------ the tailnet model


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Node:
    def __init__(self, number: int, machine: str, node_key: str, hostinfo: dict[str, Any]) -> None:
        self.id = number
        self.machine = machine
        self.key = node_key
        self.hostinfo = hostinfo
        self.disco = "discokey:" + "0" * 64
        self.endpoints: list[str] = []
        self.online = False
        self.created = _now()

    @property
    def hostname(self) -> str:
        return str(self.hostinfo.get("Hostname") or f"node{self.id}")

    @property
    def addresses(self) -> list[str]:
        return [f"100.64.0.{self.id}/32", f"fd7a:115c:a1e0::{self.id}/128"]

    def to_json(self) -> dict[str, Any]:
        return {
            "ID": self.id, "StableID": f"n{self.id}", "Name": f"{self.hostname}.{DOMAIN}.", "User": 1,
            "Key": self.key, "KeyExpiry": "0001-01-01T00:00:00Z", "Machine": self.machine, "DiscoKey": self.disco,
            "Addresses": self.addresses, "AllowedIPs": self.addresses, "Endpoints": self.endpoints,
            "HomeDERP": REGION, "DERP": f"127.3.3.40:{REGION}", "Hostinfo": self.hostinfo, "Online": self.online,
            "MachineAuthorized": True, "Created": self.created, "LastSeen": _now(),
            "Capabilities": [], "CapMap": {},
        }


class Tailnet:
    def __init__(self, derp_port: int, state_dir: str) -> None:
        self.nodes: dict[str, Node] = {}  # by machine key
        self.streams: dict[str, asyncio.Queue[bool]] = {}
        self.derp_port = derp_port
        self.state_dir = state_dir
        self.login_mode = os.environ.get("FAKE_CONTROL_LOGIN", "") == "1"

    def save(self) -> None:
        doc = [{"name": n.hostname, "addresses": n.addresses, "online": n.online, "endpoints": n.endpoints}
               for n in self.nodes.values()]
        with open(os.path.join(self.state_dir, "nodes.json.tmp"), "w") as fh:
            json.dump(doc, fh)
        os.replace(os.path.join(self.state_dir, "nodes.json.tmp"), os.path.join(self.state_dir, "nodes.json"))

    def changed(self) -> None:
        self.save()
        for queue in self.streams.values():
            queue.put_nowait(True)

    def register(self, machine: str, request: dict[str, Any]) -> dict[str, Any]:
        auth = (request.get("Auth") or {}).get("AuthKey", "") or ""
        node = self.nodes.get(machine)
        if node is None and auth != AUTH_KEY:
            if self.login_mode or not auth:
                return {"AuthURL": "http://127.0.0.1/login/abc", "MachineAuthorized": False}
            return {"Error": "invalid auth key"}
        if node is None:
            node = Node(len(self.nodes) + 2, machine, request["NodeKey"], request.get("Hostinfo") or {})
            self.nodes[machine] = node
        else:
            node.key = request.get("NodeKey") or node.key
            node.hostinfo = request.get("Hostinfo") or node.hostinfo
        self.changed()
        user = {"ID": 1, "LoginName": "test@example", "DisplayName": "test", "ProfilePicURL": ""}
        return {"User": user, "Login": {"ID": 1, "LoginName": "test@example", "DisplayName": "test"},
                "MachineAuthorized": True, "NodeKeyExpired": False, "AuthURL": ""}

    def map_response(self, node: Node) -> dict[str, Any]:
        derp_node = {"Name": "900a", "RegionID": REGION, "HostName": "127.0.0.1", "IPv4": "127.0.0.1", "IPv6": "none",
                     "STUNPort": -1, "DERPPort": self.derp_port, "InsecureForTests": True}
        return {
            "Node": node.to_json(),
            "Peers": [n.to_json() for n in self.nodes.values() if n is not node],
            "DERPMap": {"Regions": {str(REGION): {"RegionID": REGION, "RegionCode": "fake", "RegionName": "Fake",
                                                  "Nodes": [derp_node]}}},
            "DNSConfig": {"Domains": [DOMAIN], "Proxied": True},
            "Domain": DOMAIN,
            "PacketFilter": [{"SrcIPs": ["*"], "DstPorts": [{"IP": "*", "Ports": {"First": 0, "Last": 65535}}]}],
            "UserProfiles": [{"ID": 1, "LoginName": "test@example", "DisplayName": "test"}],
            "ControlTime": _now(),
        }


# ------------------------------------------------------------------ HTTP/2 over Noise


class ControlSession:
    def __init__(self, tailnet: Tailnet, noise: NoiseStream, machine: str) -> None:
        self.tailnet = tailnet
        self.noise = noise
        self.machine = machine
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.requests: dict[int, tuple[dict[str, str], bytearray]] = {}
        self.window = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.noise.write(data)

    async def run(self) -> None:
        self.h2.initiate_connection()
        self.flush()
        try:
            while True:
                data = await self.noise.read()
                for event in self.h2.receive_data(data):
                    self.on_event(event)
                self.flush()
        finally:
            tasks = list(self.tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self.requests[event.stream_id] = (dict(event.headers or []), bytearray())
        elif isinstance(event, h2.events.DataReceived):
            self.requests[event.stream_id][1].extend(event.data or b"")
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            headers, body = self.requests.pop(event.stream_id)
            task = asyncio.ensure_future(self.handle(event.stream_id, headers, bytes(body)))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self.window.set()
        elif isinstance(event, h2.events.StreamReset):
            self.requests.pop(event.stream_id, None)

    async def send(self, stream_id: int, data: bytes, end: bool = False) -> None:
        while data:
            room = min(self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size)
            if room <= 0:
                self.window.clear()
                await self.window.wait()
                continue
            self.h2.send_data(stream_id, data[:room])
            data = data[room:]
            self.flush()
        if end:
            self.h2.end_stream(stream_id)
            self.flush()

    def respond(self, stream_id: int, status: int, content_type: str = "application/json") -> None:
        self.h2.send_headers(stream_id, [(":status", str(status)), ("content-type", content_type)])
        self.flush()

    async def handle(self, stream_id: int, headers: dict[str, str], body: bytes) -> None:
        path = headers.get(":path", "")
        try:
            if path.startswith("/machine/register"):
                reply = self.tailnet.register(self.machine, json.loads(body or b"{}"))
                self.respond(stream_id, 200)
                await self.send(stream_id, json.dumps(reply).encode(), end=True)
            elif path.startswith("/machine/map"):
                await self.map(stream_id, json.loads(body or b"{}"))
            else:
                self.respond(stream_id, 200)
                await self.send(stream_id, b"{}", end=True)
        except (ConnectionError, h2.exceptions.StreamClosedError):
            pass  # the node went away or reset this stream (a new map request replaces it)
        except Exception as exc:  # a broken stream must not take the session down
            print(f"fake control: {path}: {exc!r}", file=sys.stderr, flush=True)

    async def map(self, stream_id: int, request: dict[str, Any]) -> None:
        node = self.tailnet.nodes.get(self.machine)
        if node is None:
            self.respond(stream_id, 403)
            await self.send(stream_id, b"", end=True)
            return
        node.key = request.get("NodeKey") or node.key
        node.disco = request.get("DiscoKey") or node.disco
        if request.get("Endpoints") is not None:
            node.endpoints = list(request.get("Endpoints") or [])
        if request.get("Hostinfo"):
            node.hostinfo = request["Hostinfo"]
        compress = request.get("Compress") == "zstd"

        def frame(doc: dict[str, Any]) -> bytes:
            raw = json.dumps(doc).encode()
            if compress:
                import zstandard

                raw = zstandard.ZstdCompressor().compress(raw)
            return struct.pack("<I", len(raw)) + raw

        self.respond(stream_id, 200, "application/octet-stream")
        if not request.get("Stream"):
            self.tailnet.changed()
            if request.get("OmitPeers"):
                await self.send(stream_id, b"", end=True)
            else:
                await self.send(stream_id, frame(self.tailnet.map_response(node)), end=True)
            return
        queue: asyncio.Queue[bool] = asyncio.Queue()
        key = f"{self.machine}/{stream_id}"
        self.tailnet.streams[key] = queue
        node.online = True
        self.tailnet.changed()
        try:
            await self.send(stream_id, frame(self.tailnet.map_response(node)))
            while True:
                try:
                    await asyncio.wait_for(queue.get(), KEEPALIVE)
                except TimeoutError:
                    await self.send(stream_id, frame({"KeepAlive": True}))
                    continue
                while not queue.empty():
                    queue.get_nowait()
                await self.send(stream_id, frame(self.tailnet.map_response(node)))
        finally:
            self.tailnet.streams.pop(key, None)
            if not any(k.startswith(self.machine + "/") for k in self.tailnet.streams):
                node.online = False
                self.tailnet.changed()


# ------------------------------------------------------------------ HTTP/1.1 front (key, ts2021)


async def read_head(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]]:
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return method, target, headers


def simple(writer: asyncio.StreamWriter, status: str, body: bytes, ctype: str = "application/json") -> None:
    writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                 f"Connection: close\r\n\r\n".encode() + body)


class Control:
    def __init__(self, tailnet: Tailnet) -> None:
        self.tailnet = tailnet
        self.private = X25519PrivateKey.generate()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            method, target, headers = await read_head(reader)
            if target.startswith("/key"):
                body = json.dumps({"legacyPublicKey": "mkey:" + "0" * 64,
                                   "publicKey": "mkey:" + _pub(self.private).hex()}).encode()
                simple(writer, "200 OK", body)
            elif target.startswith("/ts2021") and "x-tailscale-handshake" in headers:
                init = base64.b64decode(headers["x-tailscale-handshake"])
                version = struct.unpack(">H", init[:2])[0]
                response, machine, rx, tx = Handshake(self.private, version).respond(init)
                writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: tailscale-control-protocol\r\n"
                             b"Connection: upgrade\r\n\r\n" + response)
                noise = NoiseStream(reader, writer, rx, tx)
                await ControlSession(self.tailnet, noise, "mkey:" + machine.hex()).run()
            else:
                simple(writer, "404 Not Found", b"not found", "text/plain")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception as exc:
            print(f"fake control: {exc!r}", file=sys.stderr, flush=True)
        finally:
            writer.close()


# ------------------------------------------------------------------ DERP

DERP_MAGIC = b"DERP\xf0\x9f\x94\x91"


class Derp:
    def __init__(self) -> None:
        self.private = nacl.public.PrivateKey.generate()
        self.clients: dict[bytes, asyncio.StreamWriter] = {}

    @staticmethod
    def frame(kind: int, payload: bytes) -> bytes:
        return bytes([kind]) + struct.pack(">I", len(payload)) + payload

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        key = b""
        try:
            method, target, headers = await read_head(reader)
            if headers.get("upgrade", "").lower() != "derp":
                simple(writer, "200 OK", b"", "text/plain")
                await writer.drain()
                return
            public = bytes(self.private.public_key)
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n"
                         b"Derp-Version: 2\r\nDerp-Public-Key: " + public.hex().encode() + b"\r\n\r\n")
            writer.write(self.frame(1, DERP_MAGIC + public))
            kind, payload = await self.read_frame(reader)
            if kind != 2:
                return
            key = payload[:32]
            box = nacl.public.Box(self.private, nacl.public.PublicKey(key))
            box.decrypt(payload[56:], payload[32:56])
            writer.write(self.frame(3, bytes(box.encrypt(b'{"version":2}'))))
            self.clients[key] = writer
            while True:
                kind, payload = await self.read_frame(reader)
                if kind == 4:
                    target_writer = self.clients.get(payload[:32])
                    if target_writer is not None:
                        target_writer.write(self.frame(5, key + payload[32:]))
                elif kind == 0x12:
                    writer.write(self.frame(0x13, payload[:8]))
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        except Exception as exc:
            print(f"fake derp: {exc!r}", file=sys.stderr, flush=True)
        finally:
            if key and self.clients.get(key) is writer:
                del self.clients[key]
            writer.close()

    @staticmethod
    async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
        head = await reader.readexactly(5)
        return head[0], await reader.readexactly(struct.unpack(">I", head[1:])[0])


def make_tls(directory: str) -> ssl.SSLContext:
    """A test CA (written to DIR/ca.pem) and a server certificate for 127.0.0.1 / derp.test."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake tailnet test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "derp.test")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("derp.test"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM)  # noqa: E731
    with open(os.path.join(directory, "ca.pem"), "wb") as fh:
        fh.write(pem(ca))
    cert_path = os.path.join(directory, "derp.pem")
    with open(cert_path, "wb") as fh:
        fh.write(pem(cert) + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path)
    return context


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--derp-port", type=int, default=8443)
    parser.add_argument("--dir", required=True)
    args = parser.parse_args()
    tailnet = Tailnet(args.derp_port, args.dir)
    control, derp = Control(tailnet), Derp()
    tls = make_tls(args.dir)
    servers = [await asyncio.start_server(control.serve, "127.0.0.1", args.port),
               await asyncio.start_server(derp.serve, "127.0.0.1", args.derp_port, ssl=tls)]
    tailnet.save()
    with open(os.path.join(args.dir, "ready"), "w") as fh:
        fh.write("ready\n")
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
