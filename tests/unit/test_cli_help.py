"""Every `python -m astropt...` command's help names the command as typed and holds no Sphinx
markup; its usage errors exit with code 2."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

COMMANDS = [
    ["astropt.probe"],
    ["astropt.probe.scale"],
    ["astropt.data.convert"],
    ["astropt.data.convert", "hf"],
    ["astropt.data.convert", "folder"],
    ["astropt.data.check"],
    ["astropt.spool"],
    ["astropt.fit_scaling"],
    ["astropt.data.synth"],
    ["astropt.train"],
]
MARKUP = re.compile(r":(mod|func|class|meth|attr):|``")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_names_the_command_and_has_no_markup(command):
    shown = _run(*command, "--help")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"usage: python -m {' '.join(command)} "), shown.stdout
    assert not MARKUP.search(shown.stdout), MARKUP.search(shown.stdout)


def test_usage_errors_exit_2_naming_the_command():
    refused = _run("astropt.data.check", "data/train", "--expect-shape", "3,64")
    assert refused.returncode == 2
    assert refused.stderr.startswith("usage: python -m astropt.data.check")
    assert "error: argument --expect-shape: expected C,H,W" in refused.stderr
