"""Shell completion scripts (bash, zsh, fish, powershell) generated from a :class:`~.cliargs.CommandParser`.

cobra's ``completion`` sub-command, for every hatchway program that asks for it
(``ParserBuilder.completion_command``). Completes sub-command names and each
sub-command's flags. Stdlib only.
"""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING

from .cliargs import SHELLS

if TYPE_CHECKING:
    from .cliargs import CommandParser

__all__ = ["SHELLS", "script"]


def _flags(parser: CommandParser) -> list[str]:
    parser.materialize()
    return [name for action in parser.actions if action.help != argparse.SUPPRESS
            for name in action.option_strings]


def _tree(root: CommandParser) -> dict[str, list[str]]:
    """'' -> the root's sub-commands and flags; each sub-command -> its flags."""
    tree = {"": [*root.commands, *_flags(root)]}
    for name, parser in root.commands.items():
        tree[name] = _flags(parser) or ([*parser.commands] if parser.commands else [])
    if "help" in root.commands:
        tree["help"] = [name for name in root.commands if name != "help"]
    if "completion" in root.commands:
        tree["completion"] = list(SHELLS)
    return tree


def _ident(prog: str) -> str:
    return re.sub(r"\W", "_", prog)


def _bash(prog: str, tree: dict[str, list[str]]) -> str:
    fn = f"__{_ident(prog)}_complete"
    names = "|".join(name for name in tree if name)
    cases = "\n".join(f'        {name or chr(34) * 2}) words="{" ".join(words)}" ;;' for name, words in tree.items())
    return f"""# bash completion for {prog}; load with: source <({prog} completion bash)
{fn}() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" cmd="" words="" i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in
            {names or '""'}) cmd="${{COMP_WORDS[i]}}"; break ;;
        esac
    done
    case "$cmd" in
{cases}
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}
complete -o default -F {fn} {prog}
"""


def _zsh(prog: str, tree: dict[str, list[str]]) -> str:
    return f"""#compdef {prog}
# zsh completion for {prog}; load with: source <({prog} completion zsh)
autoload -U +X bashcompinit && bashcompinit
{_bash(prog, tree)}"""


def _fish(prog: str, tree: dict[str, list[str]]) -> str:
    commands = [name for name in tree if name]
    lines = [f"# fish completion for {prog}; load with: {prog} completion fish | source",
             f"complete -c {prog} -f"]
    for name in commands:
        lines.append(f"complete -c {prog} -n '__fish_use_subcommand' -a '{name}'")
    for name, words in tree.items():
        condition = "__fish_use_subcommand" if not name else f"__fish_seen_subcommand_from {name}"
        for word in words:
            if word in commands and not name:
                continue
            if word.startswith("--"):
                lines.append(f"complete -c {prog} -n '{condition}' -l '{word[2:]}'")
            elif word.startswith("-") and len(word) == 2:
                lines.append(f"complete -c {prog} -n '{condition}' -s '{word[1:]}'")
            elif word.startswith("-"):
                lines.append(f"complete -c {prog} -n '{condition}' -o '{word[1:]}'")
            else:
                lines.append(f"complete -c {prog} -n '{condition}' -a '{word}'")
    return "\n".join(lines) + "\n"


def _powershell(prog: str, tree: dict[str, list[str]]) -> str:
    table = "\n".join(f"        '{name}' = @({', '.join(repr(word) for word in words)})" for name, words in tree.items())
    return f"""# powershell completion for {prog}; load with: {prog} completion powershell | Out-String | Invoke-Expression
Register-ArgumentCompleter -Native -CommandName '{prog}' -ScriptBlock {{
    param($wordToComplete, $commandAst, $cursorPosition)
    $tree = @{{
{table}
    }}
    $command = ''
    foreach ($element in ($commandAst.CommandElements | Select-Object -Skip 1)) {{
        $word = $element.ToString()
        if ($word -ne $wordToComplete -and $tree.ContainsKey($word) -and $word -ne '') {{ $command = $word; break }}
    }}
    $tree[$command] | Where-Object {{ $_ -like "$wordToComplete*" }} | ForEach-Object {{
        [System.Management.Automation.CompletionResult]::new($_, $_, 'ParameterValue', $_)
    }}
}}
"""


def script(root: CommandParser, shell: str) -> str:
    """The completion script of ``root`` for ``shell`` (one of :data:`SHELLS`)."""
    tree = _tree(root)
    prog = root.prog
    if shell == "bash":
        return _bash(prog, tree)
    if shell == "zsh":
        return _zsh(prog, tree)
    if shell == "fish":
        return _fish(prog, tree)
    if shell == "powershell":
        return _powershell(prog, tree)
    raise ValueError(f"unknown shell: {shell}")
