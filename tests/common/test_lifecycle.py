"""lifecycle: run() with signals and its hook, logging (text and JSON with fields), levels, readiness, Service."""

import io
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hatchway.common import lifecycle
from helpers import wait_until

SRC = str(Path(__file__).resolve().parents[2] / "src")

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

HOOKED = textwrap.dedent(
    """
    import asyncio, signal, sys
    from hatchway.common import lifecycle

    seen = []
    done = None

    def hook(signum):
        seen.append(signum)
        print("hook", signal.Signals(signum).name, flush=True)
        done.set()
        return True  # handled: keep running, main ends by itself

    async def main():
        global done
        done = asyncio.Event()
        lifecycle.announce_ready("hooked")
        await done.wait()
        return 7

    sys.exit(lifecycle.run(main, on_signal=hook))
    """
)


def start(program, env_extra=None):
    env = dict(os.environ, PYTHONPATH=SRC, **(env_extra or {}))
    proc = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    ready = proc.stderr.readline()
    return proc, ready


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    lifecycle.setup_logging(level, "text", stream=io.StringIO())
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_shuts_down_gracefully_with_exit_0(signum):
    proc, ready = start(PROGRAM)
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


def test_signal_hook_takes_the_signal_over():
    proc, ready = start(HOOKED)
    try:
        assert ready.startswith("READY hooked")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert out.strip() == "hook SIGTERM"
    assert proc.returncode == 7  # main's own result, not a cancellation


def test_asyncio_loop_can_be_forced():
    proc, ready = start(PROGRAM, {"HATCHWAY_LOOP": "asyncio"})
    try:
        assert ready.startswith("READY test loop=asyncio")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_importing_lifecycle_imports_no_asyncio():
    probe = "import sys, hatchway.common.lifecycle; print(sorted(m for m in sys.modules if m in ('asyncio', 'ssl')))"
    out = subprocess.run([sys.executable, "-c", probe], env=dict(os.environ, PYTHONPATH=SRC), capture_output=True,
                         text=True, timeout=30, check=True).stdout
    assert out.strip() == "[]"


def test_fatal_maps_to_its_exit_code():
    async def main():
        raise lifecycle.Fatal("no runner", code=3)

    assert lifecycle.run(main) == 3


def test_json_log_lines_carry_fields(restore_logging):
    stream = io.StringIO()
    lifecycle.setup_logging("debug", fmt="JSON", stream=stream)
    logging.getLogger("hatchway.test").info("hello %s on %d", "world", 8765, extra={"peer": "127.0.0.1"})
    entry = json.loads(stream.getvalue().splitlines()[-1])
    assert entry["msg"] == "hello world on 8765" and entry["level"] == "info" and entry["logger"] == "hatchway.test"
    assert entry["template"] == "hello %s on %d" and entry["args"] == ["world", 8765]
    assert entry["peer"] == "127.0.0.1"


def test_a_later_setup_keeps_the_chosen_format(restore_logging):
    stream = io.StringIO()
    lifecycle.setup_logging("info", fmt="json", stream=stream)
    lifecycle.setup_logging("debug", stream=stream)  # a sub-command's own call, without a format
    logging.getLogger("hatchway.test").debug("still json")
    assert json.loads(stream.getvalue().splitlines()[-1])["msg"] == "still json"


def test_ready_line_as_json(restore_logging, capsys):
    lifecycle.setup_logging("info", fmt="json", stream=io.StringIO())
    lifecycle.announce_ready("linksocks server ws://127.0.0.1:1", port=1)
    entry = json.loads(capsys.readouterr().err)
    assert entry["ready"] is True and entry["msg"] == "READY linksocks server ws://127.0.0.1:1" and entry["port"] == 1


@pytest.mark.parametrize(
    "name,level",
    [("warn", logging.WARNING), ("trace", 5), ("hyper=info,tunnel_client=debug", logging.DEBUG),
     ("error", logging.ERROR), ("DEBUG", logging.DEBUG), ("warning", logging.WARNING), ("Info", logging.INFO),
     ("info,tunnel=debug", logging.DEBUG), ("tunnel", logging.INFO), ("", logging.INFO), ("off", 60),
     ("fatal", logging.CRITICAL), ("panic", logging.CRITICAL), ("disabled", 60), ("bogus", logging.INFO)],
)
def test_level_names_and_tracing_filters(name, level):
    assert lifecycle.level_from_name(name) == level


class Started(lifecycle.Service):
    def __init__(self):
        self.events = []

    async def start(self):
        self.events.append("start")
        return self

    async def aclose(self):
        self.events.append("aclose")


async def test_service_is_an_async_context_manager():
    service = Started()
    async with service as entered:
        assert entered is service and service.events == ["start"]
    assert service.events == ["start", "aclose"]
    await service.close()  # close() is aclose()
    assert service.events[-1] == "aclose"


def test_service_requires_start_and_aclose():
    class NoClose(lifecycle.Service):
        async def start(self):
            return None

    with pytest.raises(TypeError, match="aclose"):
        NoClose()


class _Recorded(lifecycle.Service):
    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail
        self.events: list[str] = []

    async def start(self) -> None:
        self.events.append("start")
        if self.fail is not None:
            raise self.fail

    async def aclose(self) -> None:
        self.events.append("aclose")


async def test_run_service_announces_ready_waits_and_closes(capsys):
    import asyncio

    service = _Recorded()
    stop = asyncio.Event()

    async def until() -> None:
        service.events.append("waiting")
        stop.set()

    code = await lifecycle.run_service(service, lambda: "thing 1", start_failed=lambda exc: 9,
                                       started=lambda: service.events.append("started"), until=until, ended=3)
    assert code == 3
    assert service.events == ["start", "started", "waiting", "aclose"]
    assert "READY thing 1" in capsys.readouterr().err


async def test_run_service_start_failure_goes_to_start_failed_without_ready(capsys):
    service = _Recorded(fail=OSError(98, "Address in use"))
    failures: list[Exception] = []

    def failed(exc: Exception) -> int:
        failures.append(exc)
        return 7

    assert await lifecycle.run_service(service, lambda: "never", start_failed=failed) == 7
    assert service.events == ["start"] and isinstance(failures[0], OSError)
    assert "READY" not in capsys.readouterr().err


async def test_run_service_closes_when_cancelled_while_waiting():
    import asyncio

    service = _Recorded()
    task = asyncio.ensure_future(lifecycle.run_service(service, lambda: "forever", start_failed=lambda exc: 1))
    await wait_until(lambda: "start" in service.events, what="the service started")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert service.events == ["start", "aclose"]
