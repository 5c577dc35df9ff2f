"""What the `emotion` model's Python backend asks of Triton (imported inside tritonserver)."""

from __future__ import annotations

from typing import Any


def instance_device(args: dict[str, Any]) -> str:
    """The torch device of this model instance: Triton says KIND_GPU/KIND_CPU per instance."""
    if args.get("model_instance_kind") == "GPU":
        return f"cuda:{args.get('model_instance_device_id', 0)}"
    return "cpu"
