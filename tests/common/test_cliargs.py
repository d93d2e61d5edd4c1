import argparse

import pytest

from hatchway.common.cliargs import ParserBuilder, parse_bool, parse_duration


def build(environ):
    parser = ParserBuilder.new_parser("prog", "test")
    b = ParserBuilder(parser, environ)
    b.option("-p", "--port", env="PORT", default=8765, type=int, help="port")
    b.flag("-f", "--fast", env="FAST", help="fast")
    b.count("-d", "--debug")
    b.go_option("authkey", env="AUTHKEY", help="key")
    b.go_flag("keep-alive", help="keepalive")
    b.version("prog", "1.2.3")
    return parser


def test_env_fallback_supplies_the_default_and_the_flag_wins():
    parser = build({"PORT": "9000", "FAST": "true", "AUTHKEY": "k"})
    args = parser.parse_args([])
    assert (args.port, args.fast, args.authkey) == (9000, True, "k")
    assert parser.parse_args(["-p", "1"]).port == 1


def test_defaults_without_env():
    args = build({}).parse_args([])
    assert (args.port, args.fast, args.debug, args.authkey, args.keep_alive) == (8765, False, 0, None, False)


def test_go_style_single_dash_long_flags():
    parser = build({})
    assert parser.parse_args(["-authkey", "a"]).authkey == "a"
    assert parser.parse_args(["--authkey=b"]).authkey == "b"
    assert parser.parse_args(["-authkey=c"]).authkey == "c"
    assert parser.parse_args(["-keep-alive"]).keep_alive is True


def test_counted_flag():
    assert build({}).parse_args(["-dd"]).debug == 2


def test_bad_env_value_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        build({"PORT": "eighty"})
    assert exc.value.code == 2
    assert "$PORT" in capsys.readouterr().err


def test_help_names_the_env_var():
    assert "(env: PORT)" in build({}).format_help()


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        build({}).parse_args(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == "prog 1.2.3"


@pytest.mark.parametrize("text,value", [("30s", 30.0), ("1m30s", 90.0), ("500ms", 0.5), ("2", 2.0), ("1h", 3600.0)])
def test_parse_duration(text, value):
    assert parse_duration(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "s", "5x", "1m5"])
def test_parse_duration_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


def test_parse_bool():
    assert parse_bool("TRUE") and parse_bool("1") and not parse_bool("false") and not parse_bool("0")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_bool("maybe")
