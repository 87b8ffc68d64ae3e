"""The embedded stack (`conch[embedded]`): Triton and Redis started by Conch itself,
supervised, for a fresh machine, CI and CPU-only hosts; and the demo.

Production runs NVIDIA's Triton container and a real Redis: nothing here is imported
by the serving code."""
