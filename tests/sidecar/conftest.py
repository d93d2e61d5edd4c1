"""Sidecar tests: tests/sidecar on sys.path for the process harness (scproc)."""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


from collections.abc import AsyncIterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from origins import InProcess  # noqa: E402


@pytest.fixture
async def sidecars(tmp_path: Path) -> AsyncIterator[InProcess]:
    made = InProcess(str(tmp_path))
    try:
        yield made
    finally:
        await made.aclose()


@pytest.fixture(scope="module")
def fake_tailnet():  # type: ignore[no-untyped-def]
    from tailnet import FakeTailnet

    net = FakeTailnet()
    try:
        net.start()
        yield net
    finally:
        net.stop()
