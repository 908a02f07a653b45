"""Checkpoints: spec sources, overrides and weights in one file, loaded without unpickling code.

The file is written with ``torch.save`` and read with ``torch.load(weights_only=True)``,
which only accepts tensors and plain containers: loading never runs arbitrary objects.
"""

from __future__ import annotations

import os
import tempfile

import torch

FORMAT = "archdsl-checkpoint"
VERSION = 1


def save_checkpoint(spec, module, path) -> None:
    """Write ``spec``'s sources and overrides and ``module``'s state_dict to ``path`` atomically."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": spec.name,
        "main": spec.main,
        "sources": dict(spec.sources),
        "overrides": dict(spec.overrides),
        "input_shape": list(spec.input_override) if spec.input_override else None,
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
    }
    atomic_write(path, lambda f: torch.save(payload, f))


def atomic_write(path, write) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".archdsl-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path, device=None):
    """Rebuild the model saved by ``archdsl compile -o FILE`` and load its weights (strict)."""
    from ..elaborate.elaborator import Override
    from ..spec import load_sources
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not an archdsl checkpoint")
    if data.get("version") != VERSION:
        raise ValueError(f"{path}: unsupported checkpoint version {data.get('version')}")
    overrides = {k: Override(v) for k, v in data["overrides"].items()}
    spec = load_sources(data["sources"], data["main"], model=data["model"],
                        input_shape=data["input_shape"], **overrides)
    module = spec.build(device=device)
    module.load_state_dict(data["state_dict"], strict=True)
    return module
