"""The shells' side of completion (``_RUNBOOK_COMPLETE``): scripts for bash and zsh that leave no space after a
``key=`` answer so its value can follow; bash also passes its whole line, since it splits words at ``=``.

Imported only when a shell asks (``runner.cli._run``); the answers come from :mod:`runner.cli.complete`.
"""

from __future__ import annotations

import os

from click.shell_completion import BashComplete, CompletionItem, ZshComplete, add_completion_class, split_arg_string

__all__ = ["Bash", "Zsh", "register"]

_BASH = """\
%(complete_func)s() {
    local IFS=$'\\n'
    local response type value

    response=$(env COMP_LINE="${COMP_LINE:0:COMP_POINT}" COMP_WORDBREAKS="$COMP_WORDBREAKS" \\
        %(complete_var)s=bash_complete "$1")

    for completion in $response; do
        IFS=',' read -r type value <<< "$completion"
        if [[ $type == 'dir' ]]; then
            COMPREPLY=()
            compopt -o dirnames
        elif [[ $type == 'file' ]]; then
            COMPREPLY=()
            compopt -o default
        elif [[ $type == 'plain' ]]; then
            [[ $value == *= ]] && compopt -o nospace
            COMPREPLY+=("$value")
        fi
    done

    return 0
}

%(complete_func)s_setup() {
    complete -o nosort -F %(complete_func)s %(prog_name)s
}

%(complete_func)s_setup;
"""


class Bash(BashComplete):
    """bash: the line up to the cursor (``COMP_LINE``) instead of bash's words, which split ``key=value`` at ``=``;
    each answer is cut to the part bash replaces (after the last word-break character), and ``key=`` gets no space.

    Without ``COMP_LINE`` (a script that click itself generated), click's protocol applies unchanged."""

    source_template = _BASH
    _cut = 0

    def get_completion_args(self) -> tuple[list[str], str]:
        """(complete args, the word being completed) from ``COMP_LINE``."""
        line = os.environ.get("COMP_LINE")
        if line is None:
            return super().get_completion_args()
        words = split_arg_string(line)
        incomplete = words.pop() if words and not line[-1:].isspace() else ""
        breaks = set(os.environ.get("COMP_WORDBREAKS", "\"'><=;|&(:")) - set(" \t\n\"'")
        self._cut = max((incomplete.rfind(c) + 1 for c in breaks), default=0)
        self._prefix = incomplete[: self._cut]
        return words[1:], incomplete

    def format_completion(self, item: CompletionItem) -> str:
        """``type,value`` with the part before bash's current word removed."""
        value = str(item.value)
        if self._cut and value.startswith(self._prefix):
            value = value[self._cut :]
        return f"{item.type},{value}"


_ZSH_NOSPACE = """\
            if [[ "$key" == *= ]]; then
                if [[ "$descr" == "_" ]]; then
                    nospace+=("$key")
                else
                    nospace_with_descriptions+=("$key":"$descr")
                fi
            elif [[ "$descr" == "_" ]]; then"""


class Zsh(ZshComplete):
    """zsh: click's script, with no space after a ``key=`` answer."""

    source_template = (
        ZshComplete.source_template.replace("    local -a completions\n", "    local -a completions nospace nospace_with_descriptions\n", 1)
        .replace('            if [[ "$descr" == "_" ]]; then', _ZSH_NOSPACE, 1)
        .replace(
            '    if [ -n "$completions" ]; then',
            '    if [ -n "$nospace_with_descriptions" ]; then\n'
            "        _describe -V unsorted nospace_with_descriptions -U -S ''\n"
            "    fi\n\n"
            '    if [ -n "$nospace" ]; then\n'
            "        compadd -U -S '' -V unsorted -a nospace\n"
            "    fi\n\n"
            '    if [ -n "$completions" ]; then',
            1,
        )
    )


def register() -> None:
    """Use :class:`Bash` and :class:`Zsh` for ``bash_*`` and ``zsh_*`` instructions (fish keeps click's own)."""
    add_completion_class(Bash, "bash")
    add_completion_class(Zsh, "zsh")
