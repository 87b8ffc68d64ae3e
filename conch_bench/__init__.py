"""`conch bench`: load generator, plain-FastAPI baseline and the benchmark suite.

Kept out of the serving path: nothing in the control plane imports this package.
"""
