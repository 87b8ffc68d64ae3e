"""Triton: the embedded server Conch starts, and the client the API uses."""
