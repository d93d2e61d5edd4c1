"""``--version`` without argparse (hatchway.common.versionflag): for every program, a lone version
word prints exactly what the program's parser prints for it, and nothing else takes the short path."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from hatchway.common.versionflag import Version, go_version_string, version_string

PROGRAMS = ("agent", "hostproxy", "linksocks", "sidecar", "tunnel")


def parser_output(prog: str, word: str, capsys: pytest.CaptureFixture[str]) -> str:
    args = importlib.import_module(f"hatchway.{prog}.args")
    with pytest.raises(SystemExit) as exit_info:
        args.build_parser().parse_args([word])
    assert exit_info.value.code in (0, None)
    return capsys.readouterr().out


@pytest.mark.parametrize("prog", PROGRAMS)
def test_short_path_prints_what_the_parser_prints(prog: str, capsys: pytest.CaptureFixture[str]) -> None:
    version = importlib.import_module(f"hatchway.{prog}").VERSION
    assert version.prog == f"hatchway-{prog}" and version.flags
    for word in version.flags:
        assert version.answer([word]) is True
        short = capsys.readouterr().out
        assert short == parser_output(prog, word, capsys)
        assert short.startswith(f"hatchway-{prog} ") and short.endswith("\n") and short.count("\n") == 1


@pytest.mark.parametrize("prog", PROGRAMS)
def test_cli_main_answers_every_version_word(prog: str, capsys: pytest.CaptureFixture[str]) -> None:
    version = importlib.import_module(f"hatchway.{prog}").VERSION
    cli = importlib.import_module(f"hatchway.{prog}.cli")
    for word in version.flags + version.commands:
        assert cli.main([word]) == 0
        assert capsys.readouterr().out == version.line() + "\n"


def test_only_a_lone_version_word_takes_the_short_path(capsys: pytest.CaptureFixture[str]) -> None:
    version = Version("prog", commands=("version",))
    for argv in ([], ["--version", "--bogus"], ["server", "--version"], ["--versio"], ["-v"], ["--version=1"]):
        assert version.asked(argv) is False
        assert version.answer(argv) is False
    assert capsys.readouterr().out == ""
    for word in ("-V", "--version", "version"):
        assert version.answer([word]) is True
        assert capsys.readouterr().out == version.line() + "\n"


def test_version_line_shapes() -> None:
    from hatchway import __version__

    assert Version("prog").line() == f"prog {__version__}"
    assert Version("prog", go=True).line() == go_version_string("prog", __version__)
    assert version_string("prog", "1.2.3") == "prog 1.2.3"
    line = go_version_string("prog", "v1.2.3")
    assert line.startswith("prog version v1.2.3 linux/") and "/" in line.rsplit(" ", 1)[1]


def test_short_path_imports_no_argparse() -> None:
    code = ("import sys; from hatchway.linksocks.cli import main; rc = main(['--version']); "
            "print(sorted(m for m in ('argparse', 're', 'asyncio', 'logging', 'typing') if m in sys.modules)); "
            "sys.exit(rc)")
    res = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1] == "[]"
