"""Every command's --help shows every option's help text whole: rich markup once swallowed a word
in brackets ("full, or a  of the profile")."""

from __future__ import annotations

import re

import typer
from typer.testing import CliRunner

from hil_tune.cli import app

BORDERS = re.compile(r"[│╭╮╰╯─┃━┏┓┗┛]")


def _commands(cmd, path=()):
    out = [(path, cmd)]
    for name, sub in getattr(cmd, "commands", {}).items():
        out += _commands(sub, (*path, name))
    return out


def _flat(text: str) -> str:
    return " ".join(BORDERS.sub(" ", text).split())


def test_every_help_text_is_shown_whole():
    root = typer.main.get_command(app)
    runner = CliRunner()
    checked = 0
    for path, cmd in _commands(root):
        res = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0, (path, res.output)
        shown = _flat(res.output)
        for param in cmd.params:
            help_text = getattr(param, "help", None)
            if help_text:
                expected = _flat(re.sub(r"\\\[", "[", help_text))
                assert expected in shown, (path, param.name, expected)
                checked += 1
    assert checked > 50  # every command's options, not a handful
