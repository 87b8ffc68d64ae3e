"""The contract between the exporters and the control plane: the manifest written
beside every exported model, the model-name rule, and the repository layout.

It imports neither side; both import it."""
