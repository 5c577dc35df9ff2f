"""The model: what runs inside Triton (the per-item analysis, face detection, voice, the nets a
manifest declares, the backend glue) and what builds and installs model versions.

A house of its own: the worker talks to Triton over gRPC and never imports this package, and this
package imports nothing of the worker, only `pipeline.shared` (tests/unit/test_houses.py checks both).
The Triton image copies this package and `pipeline/shared/`, nothing else of `pipeline/`.
"""
