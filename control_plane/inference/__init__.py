"""The public inference API (seed 000): predict by model, batch, by project; health; models."""
