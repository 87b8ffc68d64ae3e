"""Conch's Python client: `from conch.client import Client, AsyncClient, ConchError`."""
