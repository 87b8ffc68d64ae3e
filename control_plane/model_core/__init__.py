"""The model core: one handle per registered model, built from its manifest.

Every door (seed 000's `/inference/`, seed 002's `/api/inference/`, the Open
Inference Protocol's `/v2/`) finds a model through `ModelCatalog` and calls it
through the handle; none of them reads a manifest or builds a tensor itself.
"""
