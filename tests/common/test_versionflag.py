"""``--version`` without argparse (hatchway.common.versionflag): for every program, a lone version
word prints exactly what the program's parser prints for it, and nothing else takes the short path."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from hatchway.common.versionflag import answer_version, asks_only_version, go_version_string, version_string

PROGRAMS = ("agent", "hostproxy", "linksocks", "sidecar", "tunnel")


def parser_output(prog: str, word: str, capsys: pytest.CaptureFixture[str]) -> str:
    args = importlib.import_module(f"hatchway.{prog}.args")
    with pytest.raises(SystemExit) as exit_info:
        args.build_parser().parse_args([word])
    assert exit_info.value.code in (0, None)
    return capsys.readouterr().out


@pytest.mark.parametrize("prog", PROGRAMS)
def test_short_path_prints_what_the_parser_prints(prog: str, capsys: pytest.CaptureFixture[str]) -> None:
    package = importlib.import_module(f"hatchway.{prog}")
    assert package.VERSION_FLAGS
    for word in package.VERSION_FLAGS:
        assert answer_version([word], package.VERSION_FLAGS, package.version_line) is True
        short = capsys.readouterr().out
        assert short == parser_output(prog, word, capsys)
        assert short.startswith(f"hatchway-{prog} ") and short.endswith("\n") and short.count("\n") == 1


@pytest.mark.parametrize("prog", PROGRAMS)
def test_cli_main_answers_every_version_word(prog: str, capsys: pytest.CaptureFixture[str]) -> None:
    package = importlib.import_module(f"hatchway.{prog}")
    cli = importlib.import_module(f"hatchway.{prog}.cli")
    for word in package.VERSION_FLAGS + package.VERSION_COMMANDS:
        assert cli.main([word]) == 0
        assert capsys.readouterr().out == package.version_line() + "\n"


def test_only_a_lone_version_word_takes_the_short_path(capsys: pytest.CaptureFixture[str]) -> None:
    words = ("-V", "--version")
    for argv in ([], ["--version", "--bogus"], ["server", "--version"], ["--versio"], ["-v"], ["--version=1"]):
        assert asks_only_version(argv, words) is False
        assert answer_version(argv, words, lambda: "x") is False
    assert capsys.readouterr().out == ""
    assert answer_version(["-V"], words, lambda: "prog 1") is True
    assert capsys.readouterr().out == "prog 1\n"


def test_version_line_shapes() -> None:
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
