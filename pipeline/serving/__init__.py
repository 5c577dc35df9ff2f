"""The model side: what the `emotion` model composes, how its nets run, and how a version is installed.

Apart from the worker on purpose: a worker talks to Triton over gRPC and never imports this package;
the Triton model, `callstream models` and the benchmark's in-process limit do.
"""
