"""The tunnel URL rule (tunnel.md section 4.1, D12)."""

import logging

import pytest
from fake_runner import tunnel_client

from hatchway.tunnel.urls import check_runner_url, tunnel_url


@pytest.mark.parametrize(
    "base, container_id, url",
    [
        ("ws://h:8001", "c", "ws://h:8001/ws/tunnel/c"),
        ("ws://h:8001///", "c", "ws://h:8001/ws/tunnel/c"),
        ("wss://h:8001/", "kohakuriver-vps-7", "wss://h:8001/ws/tunnel/kohakuriver-vps-7"),
        ("ws://h:8001/base/", "c", "ws://h:8001/base/ws/tunnel/c"),
        ("ws://h:8001/?x=1", "c", "ws://h:8001/?x=1/ws/tunnel/c"),
        ("ws://h:8001", "a b%2F?", "ws://h:8001/ws/tunnel/a b%2F?"),
    ],
)
def test_url_rule(base, container_id, url):
    assert tunnel_url(base, container_id) == url


def test_url_with_path_or_query_logs_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        check_runner_url("ws://h:8001/")
        assert caplog.records == []
        check_runner_url("ws://h:8001/api")
        check_runner_url("ws://h:8001?token=x")
    assert len(caplog.records) == 2 and all("path or query" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("bad", ["http://h:8001", "h:8001", "ws://", "tcp://h:1"])
def test_non_websocket_urls_are_rejected(bad):
    with pytest.raises(ValueError):
        check_runner_url(bad)


async def test_query_kept_verbatim_and_id_not_percent_encoded_on_the_wire(runner):
    async with tunnel_client(runner, container_id="task%2F1:x", url=f"{runner.url}/?k=v") as (_, peer):
        assert peer.raw_path == "/?k=v/ws/tunnel/task%2F1:x"


@pytest.mark.parametrize(
    "container_id, raw_path",
    [
        ("task 1", "/ws/tunnel/task%201"),
        ("täsk", "/ws/tunnel/t%C3%A4sk"),
        ('a"<b>`{c}', "/ws/tunnel/a%22%3Cb%3E%60%7Bc%7D"),
    ],
)
async def test_id_with_spaces_or_non_ascii_is_percent_encoded_on_the_wire(runner, container_id, raw_path):
    """Issue #11: such an id made an invalid request line; upstream's URL parser percent-encodes it."""
    async with tunnel_client(runner, container_id=container_id) as (client, peer):
        assert peer.raw_path == raw_path
        assert client.url.endswith("/ws/tunnel/" + container_id)  # the URL rule itself is unchanged
