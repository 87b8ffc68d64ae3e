"""Parsed manifests, read once per model on this replica (store.py)."""
