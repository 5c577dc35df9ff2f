"""Helpers shared by the Python-backend models in triton_models/ (imported inside tritonserver)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def instance_device(args: dict[str, Any]) -> str:
    """The torch device of this model instance: Triton says KIND_GPU/KIND_CPU per instance."""
    if args.get("model_instance_kind") == "GPU":
        return f"cuda:{args.get('model_instance_device_id', 0)}"
    return "cpu"


def parameter(args: dict[str, Any], key: str, default: str) -> str:
    params = json.loads(args["model_config"]).get("parameters", {})
    return params.get(key, {}).get("string_value", default)


def version_folder(args: dict[str, Any]) -> Path:
    """Where Triton keeps this model version's files (triton_models/<model>/<version>/)."""
    return Path(args["model_repository"]) / args["model_version"]
