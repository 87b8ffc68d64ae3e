"""Conch exporters: trained models -> Triton model repository entries.

Each framework has its own module, imported lazily behind its optional extra.
Every export ends with a parity check through the real embedded Triton.
"""
