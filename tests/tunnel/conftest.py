"""Make the tunnel test harnesses (fake_runner, fake_client, ...) importable by module name.

pytest runs with ``--import-mode=importlib``, which does not put test
directories on ``sys.path``.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import pytest  # noqa: E402
from fake_runner import FakeRunner  # noqa: E402
from local_services import TcpService, UdpEcho, echo  # noqa: E402


@pytest.fixture
async def runner():
    """A fake runner playing /ws/tunnel/{id} (test files may override it)."""
    fake = await FakeRunner().start()
    yield fake
    await fake.stop()


@pytest.fixture
async def echo_service():
    service = await TcpService(echo).start()
    yield service
    await service.stop()


@pytest.fixture
async def udp_echo():
    service = await UdpEcho().start()
    yield service
    await service.stop()
