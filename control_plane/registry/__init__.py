"""The model registry: exported models, registered from their manifests (immutable rows)."""
