"""Pallas kernels for the hot paths (fused loss / log-prob, sampling, decode attention).

Filled in by the kernels work; the pure-JAX references live beside each kernel.
"""
