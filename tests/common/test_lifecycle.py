import json
import logging
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from hatchway.common import lifecycle

PROGRAM = textwrap.dedent(
    """
    import asyncio, sys
    from hatchway.common import lifecycle

    async def main():
        lifecycle.announce_ready("test loop=" + type(asyncio.get_running_loop()).__module__.split(".")[0])
        try:
            await asyncio.Event().wait()
        finally:
            print("cleaned up", flush=True)

    sys.exit(lifecycle.run(main))
    """
)


def start(env_extra=None):
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), "..", "..", "src"), **(env_extra or {}))
    proc = subprocess.Popen(
        [sys.executable, "-c", PROGRAM], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    ready = proc.stderr.readline()
    return proc, ready


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_shuts_down_gracefully_with_exit_0(signum):
    proc, ready = start()
    try:
        assert ready.startswith("READY test loop=uvloop")
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert "cleaned up" in out


def test_asyncio_loop_can_be_forced():
    proc, ready = start({"HATCHWAY_LOOP": "asyncio"})
    try:
        assert ready.startswith("READY test loop=asyncio")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_fatal_maps_to_its_exit_code():
    async def main():
        raise lifecycle.Fatal("no runner", code=3)

    assert lifecycle.run(main) == 3


def test_json_log_lines(capsys):
    import io

    stream = io.StringIO()
    lifecycle.setup_logging("debug", fmt="json", stream=stream)
    logging.getLogger("hatchway.test").info("hello %s", "world")
    entry = json.loads(stream.getvalue().splitlines()[-1])
    assert entry["msg"] == "hello world" and entry["level"] == "info" and entry["logger"] == "hatchway.test"
    lifecycle.setup_logging("info")


@pytest.mark.parametrize(
    "name,level",
    [("warn", logging.WARNING), ("trace", 5), ("hyper=info,tunnel_client=debug", logging.DEBUG), ("error", logging.ERROR)],
)
def test_level_names_and_rust_log_directives(name, level):
    assert lifecycle.level_from_name(name) == level
