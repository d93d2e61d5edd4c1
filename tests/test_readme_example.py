"""The README's embedding example is a complete program: extract it and run it as written.

The block sits between the markers ``<!-- example:embedding -->`` and
``<!-- /example:embedding -->`` in README.md, as one fenced ```python block.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- example:embedding -->", "<!-- /example:embedding -->"


def embedding_example() -> str:
    readme = (ROOT / "README.md").read_text()
    assert BEGIN in readme and END in readme, "README.md lacks the embedding example markers"
    section = readme.split(BEGIN, 1)[1].split(END, 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 1, "one python block between the markers"
    return blocks[0]


def test_readme_embedding_example_runs_as_a_script(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(embedding_example())
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["tunnel: b'hello through the tunnel'", "socks5: b'hello through LinkSocks'"]
    assert "Traceback" not in out.stderr and "Task was destroyed" not in out.stderr and "Error" not in out.stderr
