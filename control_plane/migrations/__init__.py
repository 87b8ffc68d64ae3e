"""Alembic migrations of the control plane (env.py, versions/); run by control_plane.db."""
