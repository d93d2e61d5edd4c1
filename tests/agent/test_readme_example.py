"""The README's Python API example for the agent (tests/agent/readme_agent_example.py, copied verbatim into
the README) runs as a complete program and prints what the README says it prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).with_name("readme_agent_example.py")


def test_readme_example_runs() -> None:
    done = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "b'hello\\n' b'to-stderr\\n' 3",
        "0 [(1, b'framed\\n')]",
        "b'\\r\\n30 100\\r\\n' 0",
    ]
