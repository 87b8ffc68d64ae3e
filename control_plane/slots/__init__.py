"""Deployment slots: which models serve a project, with what weight."""
