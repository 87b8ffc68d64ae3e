"""Conch control plane: FastAPI in front of NVIDIA Triton Inference Server."""

__version__ = "0.1.0"
