"""hatchway: drop-in asyncio replacements for tunnel, proxy and agent tools."""

__version__ = "0.1.0"
