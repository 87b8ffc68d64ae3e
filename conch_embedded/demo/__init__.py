"""The demo `make run` serves: seeded models, a project with two A/B slots, keys."""
