"""The one CLI builder: Go (cobra/pflag, flag) and clap conventions, sub-command-scoped environment,
help/completion commands, man page sections (tests run the parsers in-process and the shells for real)."""

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hatchway.common.cliargs import (
    CommandParser,
    ParserBuilder,
    go_version_string,
    parse_bool,
    parse_boolish,
    parse_duration,
    parse_go_int,
)

SRC = Path(__file__).resolve().parents[2] / "src"


def cobra(environ=None):
    parser = ParserBuilder.new_parser("prog", "test program", style="cobra", environ=environ or {})
    b = ParserBuilder(parser)
    b.version("prog", "1.2.3", text=go_version_string("prog", "1.2.3"))
    server = b.command("server", help="serve", examples=[("prog server -P 1", "serve on port 1")])
    server.option("-P", "--port", env="PORT", default=8765, type=int, help="port")
    server.flag("-f", "--fast", env="FAST", help="fast")
    server.count("-d", "--debug")
    server.option("--grace", default=30.0, type=parse_duration, help="grace")
    server.option("--mode", default="auto", choices=("auto", "relay-only"), help="mode")
    client = b.command("client", help="connect")
    client.option("-t", "--token", env="TOKEN", default="anonymous", help="token")
    client.flag("-r", "--reverse", help="reverse")
    b.command("version", help="print the version")
    b.help_command()
    b.completion_command()
    b.document(examples=[("prog server", "a server")], exit_status=[("0", "fine"), ("1", "usage error")])
    return parser


def goflag(environ=None):
    parser = ParserBuilder.new_parser("agent", "an agent", style="goflag", environ=environ or {})
    b = ParserBuilder(parser)
    b.go_option("addr", default=":9111", help="listen address")
    b.go_option("callback", default="", help="reverse-mode URL")
    b.go_flag("keep-alive", help="run the rest of argv as the main process")
    b.go_option("log-level", env="AGENT_LOG", default="info", help="level")
    b.rest("argv")
    return parser


def usage_error(parser, argv, capsys):
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(argv)
    return exc.value.code, capsys.readouterr()


# --- environment ---------------------------------------------------------------------------------------------


def test_env_fallback_supplies_the_default_and_the_command_line_wins():
    env = {"PORT": "9000", "FAST": "true", "TOKEN": "envtok"}
    args = cobra(env).parse_args(["server"])
    assert (args.port, args.fast) == (9000, True)
    assert cobra(env).parse_args(["server", "-P", "1", "--fast=false"]).port == 1
    assert cobra(env).parse_args(["server", "--fast=false"]).fast is False
    assert cobra(env).parse_args(["client"]).token == "envtok"
    assert cobra(env).parse_args(["client", "-t", "x"]).token == "x"


def test_an_empty_variable_counts_as_unset():
    assert cobra({"PORT": "", "FAST": ""}).parse_args(["server"]).port == 8765


def test_only_the_running_subcommands_variables_are_read(capsys):
    broken = {"PORT": "abc", "FAST": "yes"}  # both belong to `server`
    assert cobra(broken).parse_args(["client"]).token == "anonymous"
    for argv in (["--version"], ["--help"], ["client", "--help"], ["version"], ["help", "server"]):
        code, _ = usage_error(cobra(broken), argv, capsys) if argv != ["version"] else (0, None)
        assert code == 0, argv
    code, out = usage_error(cobra(broken), ["server"], capsys)
    assert code == 1
    assert out.err.count("\n") == 1 and "$PORT" in out.err and "-P/--port" in out.err


def test_go_bool_variables_reject_yes(capsys):
    code, out = usage_error(cobra({"FAST": "yes"}), ["server"], capsys)
    assert code == 1 and "$FAST" in out.err and 'parsing "yes"' in out.err


def test_help_names_the_variable_and_the_default():
    text = cobra().commands["server"].format_help()
    assert "(env: PORT)" in text and "[default: 8765]" in text


# --- cobra / pflag -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv,fast", [
    (["server", "-f"], True), (["server", "--fast"], True), (["server", "--fast=true"], True),
    (["server", "--fast=false"], False), (["server", "-f=false"], False), (["server", "--fast=0"], False),
    (["server", "--fast=false", "--fast"], True), (["server", "--fast", "--fast=F"], False), (["server"], False),
])
def test_booleans_take_true_and_false(argv, fast):
    assert cobra().parse_args(argv).fast is fast


@pytest.mark.parametrize("argv,message", [
    (["server", "--bogus"], "Error: unknown flag: --bogus"),
    (["server", "-z"], "Error: unknown shorthand flag: 'z' in -z"),
    (["server", "-P", "abc"], 'Error: invalid argument "abc" for "-P, --port" flag'),
    (["bogus"], 'Error: unknown command "bogus" for "prog"'),
    (["server", "--fast=yes"], 'Error: invalid argument "yes" for "--fast" flag'),
    (["server", "--grace", "30"], 'Error: invalid argument "30" for "--grace" flag: time: missing unit'),
    (["server", "--mode", "bogus"], 'Error: invalid argument "bogus" for "--mode" flag'),
    (["server", "-P"], "Error: flag needs an argument: --port"),
])
def test_usage_errors_are_one_line_and_exit_1(argv, message, capsys):
    code, out = usage_error(cobra(), argv, capsys)
    assert code == 1
    assert out.err.startswith(message) and out.err.count("\n") == 1, out.err
    assert out.out == ""


def test_pflag_value_forms():
    parser = cobra()
    assert parser.parse_args(["server", "--port=1"]).port == 1
    assert parser.parse_args(["server", "-P=2"]).port == 2
    assert parser.parse_args(["server", "-P3"]).port == 3
    assert parser.parse_args(["server", "-P", "0x10"]).port == 16
    assert parser.parse_args(["server", "-dd"]).debug == 2
    assert parser.parse_args(["server", "--grace", "1m30s"]).grace == 90.0


def test_no_abbreviated_long_options(capsys):
    code, out = usage_error(cobra(), ["server", "--po", "1"], capsys)
    assert code == 1 and out.err.startswith("Error: unknown flag: --po")
    assert cobra().parse_args(["server", "-fdd"]).debug == 2  # short flags still group


def test_no_arguments_print_the_help_and_exit_0(capsys):
    code, out = usage_error(cobra(), [], capsys)
    assert code == 0 and out.out.startswith("usage: prog") and "server" in out.out


def test_help_command(capsys):
    code, out = usage_error(cobra(), ["help", "server"], capsys)
    assert code == 0 and out.out.startswith("usage: prog server") and "--port" in out.out
    assert "Examples:" in out.out and "prog server -P 1" in out.out
    code, out = usage_error(cobra(), ["help"], capsys)
    assert code == 0 and out.out.startswith("usage: prog ")
    code, out = usage_error(cobra(), ["help", "bogus"], capsys)
    assert code == 1 and out.err.count("\n") == 1


def test_version_flag_in_gos_shape(capsys):
    code, out = usage_error(cobra(), ["--version"], capsys)
    assert code == 0
    assert re.fullmatch(r"prog version v1\.2\.3 linux/(amd64|arm64|386|arm|ppc64le|s390x|riscv64)\n", out.out)


def test_a_subcommands_options_are_built_only_when_it_runs_or_is_documented():
    built = []
    parser = ParserBuilder.new_parser("prog", "p", style="cobra", environ={})
    b = ParserBuilder(parser)
    for name in ("one", "two"):
        b.command(name, help=name, build=lambda sub, name=name: (built.append(name),
                                                                   sub.option("--port", default=1, type=int)))
    assert parser.parse_args(["one", "--port", "2"]).port == 2
    assert built == ["one"]
    page = render(parser)
    assert built == ["one", "two"] and page.count(r"\-\-port") >= 2


def test_root_help_has_examples_and_exit_status():
    text = cobra().format_help()
    assert "Examples:\n  # a server\n  prog server" in text
    assert "Exit status:\n  0      fine" in text


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish", "powershell"])
def test_completion_scripts_name_every_command_and_flag(shell, capsys):
    code, out = usage_error(cobra(), ["completion", shell], capsys)
    assert code == 0
    for word in ("server", "client", "port", "token", "reverse"):
        assert word in out.out, (shell, word)


def test_bash_completion_completes_in_bash(capsys, tmp_path):
    _, out = usage_error(cobra(), ["completion", "bash"], capsys)
    script = tmp_path / "prog.bash"
    script.write_text(out.out)
    probe = f"""
source {script}
COMP_WORDS=(prog server --p); COMP_CWORD=2; __prog_complete; echo "A:${{COMPREPLY[*]}}"
COMP_WORDS=(prog s); COMP_CWORD=1; __prog_complete; echo "B:${{COMPREPLY[*]}}"
COMP_WORDS=(prog client -); COMP_CWORD=2; __prog_complete; echo "C:${{COMPREPLY[*]}}"
"""
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30, check=True).stdout
    assert "A:--port" in out
    assert "B:server" in out
    line_c = next(line for line in out.splitlines() if line.startswith("C:"))
    assert "--token" in line_c and "--port" not in line_c


# --- Go flag -------------------------------------------------------------------------------------------------


def test_go_flag_forms_and_the_rest_of_argv():
    parser = goflag()
    args = parser.parse_args(["--addr", ":1", "-keep-alive", "--", "node", "server.js", "-x"])
    assert (args.addr, args.keep_alive, args.argv) == (":1", True, ["node", "server.js", "-x"])
    args = parser.parse_args(["-addr=:2", "-keep-alive=false", "sh", "-c", "exit 3"])
    assert (args.addr, args.keep_alive, args.argv) == (":2", False, ["sh", "-c", "exit 3"])
    args = parser.parse_args(["-callback", "ws://x", "-keep-alive=true"])
    assert (args.callback, args.keep_alive, args.argv) == ("ws://x", True, [])


def test_go_flag_help_is_gos_usage_on_stderr_exit_0(capsys):
    code, out = usage_error(goflag(), ["-h"], capsys)
    assert code == 0 and out.out == ""
    assert out.err.startswith("Usage of agent:\n  -addr string\n    \tlisten address (default \":9111\")\n")
    assert "  -keep-alive\n    \trun the rest" in out.err


def test_go_flag_unknown_flag_exits_2(capsys):
    code, out = usage_error(goflag(), ["-bogus"], capsys)
    assert code == 2 and out.err.startswith("flag provided but not defined: -bogus\nUsage of agent:")


@pytest.mark.parametrize("argv,first", [
    (["-addr"], "flag needs an argument: -addr"),
    (["--bogus=1"], "flag provided but not defined: -bogus"),
    (["-keep-alive=maybe"], 'invalid value "maybe" for flag -keep-alive: parse error'),
])
def test_go_flag_error_wording(argv, first, capsys):
    code, out = usage_error(goflag(), argv, capsys)
    assert code == 2 and out.err.splitlines()[0] == first and out.err.splitlines()[1] == "Usage of agent:"


def test_go_flag_log_format_takes_one_dash():
    parser = goflag()
    ParserBuilder(parser).log_format()
    assert parser.parse_args(["-log-format", "JSON"]).log_format == "json"
    assert parser.parse_args(["--log-format=text"]).log_format == "text"


def test_go_flag_environment_is_read_after_parsing():
    assert goflag({"AGENT_LOG": "debug"}).parse_args([]).log_level == "debug"
    assert goflag({"AGENT_LOG": "debug"}).parse_args(["-log-level", "warn"]).log_level == "warn"


# --- clap ----------------------------------------------------------------------------------------------------


def test_clap_style_keeps_argparse_errors_and_boolish_variables(capsys):
    parser = ParserBuilder.new_parser("tool", "t", style="clap", environ={"ON": "yes"})
    b = ParserBuilder(parser)
    b.flag("--on", env="ON")
    b.option("-r", "--runner-url", env="RUNNER_URL", required=True)
    assert parser.parse_args(["-r", "x"]).on is True
    code, out = usage_error(parser, [], capsys)
    assert code == 2 and "required: -r/--runner-url" in out.err


def test_required_option_satisfied_by_its_variable():
    parser = ParserBuilder.new_parser("tool", "t", style="clap", environ={"RUNNER_URL": "ws://r"})
    ParserBuilder(parser).option("-r", "--runner-url", env="RUNNER_URL", required=True)
    assert parser.parse_args([]).runner_url == "ws://r"


# --- value parsers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text,value", [("30s", 30.0), ("1m30s", 90.0), ("500ms", 0.5), ("0", 0.0), ("1h", 3600.0),
                                        ("-1.5h", -5400.0), (".5s", 0.5), ("1.5m", 90.0), ("2\u00b5s", 2e-6),
                                        ("3us", 3e-6), ("1h1m1s", 3661.0)])
def test_parse_duration_is_gos(text, value):
    assert parse_duration(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "30", "1.5", "s", "5x", "1m5", ".s", "1d", "+"])
def test_parse_duration_rejects_like_go(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


def test_parse_bool_is_gos_strconv_parsebool():
    for text in ("1", "t", "T", "TRUE", "true", "True"):
        assert parse_bool(text) is True
    for text in ("0", "f", "F", "FALSE", "false", "False"):
        assert parse_bool(text) is False
    for text in ("yes", "no", "on", "tRUE", "", " true"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_bool(text)


def test_parse_boolish_is_claps():
    assert parse_boolish("Yes") and parse_boolish("on") and not parse_boolish("OFF") and not parse_boolish("0")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_boolish("maybe")


@pytest.mark.parametrize("text,value", [("10", 10), ("0x10", 16), ("010", 8), ("1_000", 1000), ("-5", -5)])
def test_parse_go_int(text, value):
    assert parse_go_int(text) == value


def test_parse_go_int_rejects():
    with pytest.raises(argparse.ArgumentTypeError):
        parse_go_int("abc")


# --- man page ------------------------------------------------------------------------------------------------


def render(parser: CommandParser) -> str:
    from argparse_manpage.manpage import Manpage

    return str(Manpage(parser, {"project_name": "hatchway", "version": "0.1.0"}))


def test_man_page_has_the_extra_sections():
    page = render(cobra({"PORT": "abc"}))  # a broken variable does not break the page
    for heading in ("ENVIRONMENT", "EXIT STATUS", "SIGNALS", "EXAMPLES"):
        assert f"\n.SH {heading}\n" in page, heading
    environment = page.split(".SH ENVIRONMENT", 1)[1].split(".SH ", 1)[0]
    assert ".B PORT" in environment and "(server)" in environment and ".B TOKEN" in environment
    assert page.index(".nh") < page.index(r"\-\-port")  # no hyphenation from the synopsis on
    assert "Exit status:" not in page and "Examples:" not in page.split(".SH COMMAND")[0]  # sections, not epilog text


@pytest.mark.parametrize("program", ["linksocks", "tunnel"])
def test_man_page_of_each_program_as_build_release_makes_it(program, tmp_path):
    """argparse-manpage's own command line, exactly as build/release runs it (the --pyfile form)."""
    tool = Path(sys.executable).with_name("argparse-manpage")
    out = tmp_path / f"hatchway-{program}.1"
    env = {"PATH": os.environ["PATH"], "LC_ALL": "C.UTF-8", "SOURCE_DATE_EPOCH": "1700000000",
           "LINKSOCKS_WEBSOCKET_PORT": "abc", "MAX_RECONNECT": "abc"}
    subprocess.run([str(tool), "--pyfile", str(SRC / "hatchway" / program / "args.py"), "--function",
                    "build_parser", "--prog", f"hatchway-{program}", "--project-name", "hatchway", "--version",
                    "0.1.0", "--output", str(out)], env=env, check=True, timeout=60)
    page = out.read_text()
    for heading in ("ENVIRONMENT", "EXIT STATUS", "SIGNALS", "EXAMPLES", "LOGGING"):
        assert f"\n.SH {heading}\n" in page, heading
    assert "READY" in page
    assert {"linksocks": r"\-\-ws\-port", "tunnel": r"\-\-allow\-tokenless\-tunnels"}[program] in page
    text = subprocess.run(["groff", "-man", "-Tascii", "-rLL=64n", "-P-cbou", str(out)], capture_output=True,
                          text=True, timeout=60, check=True).stdout
    long_options = {name.replace("\\-", "-") for name in re.findall(r"\\-\\-([a-z0-9]+(?:\\-[a-z0-9]+)*)", page)}
    assert len(long_options) > 10
    flat = re.sub(r"\s+", " ", text)
    for name in sorted(long_options):
        assert "--" + name in flat, f"--{name} is hyphenated or broken across lines"


# --- lazy package exports (common/lazy.py) -------------------------------------------------------------------


@pytest.mark.parametrize("package,name", [("hatchway.linksocks", "Server"), ("hatchway.tunnel", "Runner")])
def test_packages_export_lazily(package, name):
    probe = (f"import sys, {package} as p; before = 'aiohttp' in sys.modules; cls = p.{name}; "
             f"print(before, 'aiohttp' in sys.modules, cls.__name__, '{name}' in dir(p))")
    out = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "PYTHONPATH": str(SRC)},
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.split() == ["False", "True", name, "True"]
