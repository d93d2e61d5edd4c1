"""Every async test runs on both loops: asyncio's and uvloop's (packaging.md 7.4)."""

import asyncio


def pytest_asyncio_loop_factories(config, item):
    factories = {"asyncio": asyncio.new_event_loop}
    try:
        import uvloop
    except ImportError:
        pass
    else:
        factories["uvloop"] = uvloop.new_event_loop
    return factories
