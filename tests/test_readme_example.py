"""The README's Python examples are complete programs: extract each and run it as written.

Each example sits between the markers ``<!-- example:NAME -->`` and ``<!-- /example:NAME -->`` in
README.md, as one fenced ```python block. Where the README says what an example prints, the test
checks exactly that.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"<!-- example:([a-z0-9-]+) -->\n(.*?)<!-- /example:\1 -->", re.DOTALL)

# What the examples print, where the README promises it.
EXPECTED = {
    "embedding": ["tunnel: b'hello through the tunnel'", "socks5: b'hello through LinkSocks'"],
    "agent": ["b'hello\\n' b'to-stderr\\n' 3", "0 [(1, b'framed\\n')]", "b'\\r\\n30 100\\r\\n' 0"],
}


def examples() -> dict[str, str]:
    found = {}
    for name, section in MARKER.findall((ROOT / "README.md").read_text()):
        blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
        assert len(blocks) == 1, f"example {name}: one python block between the markers"
        found[name] = blocks[0]
    return found


def test_the_readme_marks_its_examples() -> None:
    assert {"embedding", "agent", "hostproxy"} <= set(examples())


@pytest.mark.parametrize("name", sorted(examples()))
def test_readme_example_runs_as_a_script(name: str, tmp_path: Path) -> None:
    script = tmp_path / f"{name}.py"
    script.write_text(examples()[name])
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env,
                         cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    if name in EXPECTED:
        assert out.stdout.splitlines() == EXPECTED[name]
    else:
        assert out.stdout.strip(), "the example prints what it did"
    for bad in ("Traceback", "Task was destroyed", "never retrieved", "Unclosed"):
        assert bad not in out.stderr, out.stderr
