"""`facetrail --help` as a user runs it (the installed console script): every top-level command is listed, and
each one's own --help works."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main

FACETRAIL = str(Path(sys.executable).parent / "facetrail")
# every top-level command (pipeline/cli/*_cmd.py register them); a command module that fails to load, or one that
# is silently skipped by build_parser, drops out of this list
COMMANDS = ["config", "redis", "models", "detect", "verify", "gallery", "identify", "up", "worker", "process",
            "camera", "events", "api", "apikey", "demo"]


def test_help_lists_every_command():
    p = subprocess.run([FACETRAIL, "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("usage: facetrail ")
    # commands are the indented first words of the COMMAND section (each followed by its one-line help)
    section = p.stdout.split("positional arguments:", 1)[1].split("options:", 1)[0]
    listed = re.findall(r"^ {4}([a-z][a-z-]*)(?: {2,}\S|\n {5,}\S)", section, re.M)
    missing = [c for c in COMMANDS if c not in listed]
    assert not missing, f"`facetrail --help` does not list {missing}:\n{p.stdout}"
    assert len(listed) == len(set(listed))


def test_no_command_is_a_usage_error():
    p = subprocess.run([FACETRAIL], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "usage: facetrail" in p.stderr and "COMMAND" in p.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: facetrail {command}")
