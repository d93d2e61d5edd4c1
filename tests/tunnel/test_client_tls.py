"""wss:// runners: the system trust store, extended by $SSL_CERT_FILE (tunnel.md section 4.1)."""

import ssl
import subprocess

import pytest
from fake_runner import FakeRunner, tunnel_client

from hatchway.tunnel import TunnelClient, TunnelGaveUp
from hatchway.tunnel.protocol import MsgType


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )
    return cert, key


@pytest.fixture
async def tls_runner(certificate):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*map(str, certificate))
    fake = await FakeRunner().start(ssl_context=context)
    yield fake
    await fake.stop()


async def test_wss_runner_trusted_through_ssl_cert_file(tls_runner, certificate, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    assert tls_runner.url.startswith("wss://")
    async with tunnel_client(tls_runner) as (_, peer):
        assert peer.raw_path == "/ws/tunnel/test"
        await peer.ping(1)
        await peer.expect(MsgType.PONG, 1)


async def test_wss_runner_with_an_untrusted_certificate_is_refused(tls_runner, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    client = TunnelClient(tls_runner.url, "test", reconnect_delay=0, max_reconnect=1, connect_timeout=5)
    with pytest.raises(TunnelGaveUp):
        await client.run()
    assert tls_runner.tunnels == []
