"""Checkpoints: spec sources, overrides and weights in one file, loaded without unpickling code.

The file is written with ``torch.save`` and read with ``torch.load(weights_only=True)``,
which only accepts tensors and plain containers: loading never runs arbitrary objects.
"""

from __future__ import annotations

import os

import torch

from ..atomicio import atomic_write as _atomic_write

FORMAT = "archdsl-checkpoint"
VERSION = 1
#: the versions this archdsl reads, and the entries each must have
READABLE = {1: ("model", "main", "sources", "overrides", "input_shape", "state_dict")}


class CheckpointError(ValueError):
    """A file that is not a usable archdsl checkpoint, or weights that do not fit their spec."""


def save_checkpoint(spec, module, path) -> None:
    """Write ``spec``'s sources and overrides and ``module``'s state_dict to ``path`` atomically.

    Refuses (:class:`CheckpointError`) a module whose state_dict is not the one the spec builds
    (e.g. a head replaced after building): ``load_checkpoint`` could not load it.
    """
    state = module.state_dict()
    expected = {k: tuple(v.shape) for k, v in spec.build(device="meta").state_dict().items()}
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    diff = _differences(expected, shapes)
    if diff:
        example = _setting(expected, shapes)
        raise CheckpointError(
            f"cannot save {os.fspath(path)}: the module's state_dict does not match spec `{spec.name}`, so "
            f"load_checkpoint could not rebuild it:\n" + "\n".join(diff) + "\na checkpoint holds the spec's own "
            f"layers: load the spec with the settings the module now has (e.g. `archdsl.load_spec(SPEC, {example})`, "
            f"or `--set {example}`), build it, copy the weights into it and save that module")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": spec.name,
        "main": spec.main,
        "sources": dict(spec.sources),
        "overrides": dict(spec.overrides),
        "input_shape": list(spec.input_override) if spec.input_override else None,
        "state_dict": {k: v.detach().cpu() for k, v in state.items()},
    }
    atomic_write(path, lambda f: torch.save(payload, f))


def atomic_write(path, write) -> None:
    """Write through a temporary file in the same folder, then rename over ``path`` (mode
    ``0o666 & ~umask``, as a plain ``open`` would give it: see :mod:`archdsl.atomicio`)."""
    _atomic_write(path, write)


def load_checkpoint(path, device=None):
    """Rebuild the model saved by ``archdsl compile -o FILE`` and load its weights (strict).

    Raises :class:`CheckpointError` (a ``ValueError``) for a file that is not an archdsl checkpoint
    (a plain state_dict, a training checkpoint, a damaged file) and for weights that do not fit
    the model the checkpoint's spec builds.
    """
    from ..elaborate.elaborator import Override
    from ..spec import load_sources
    where = os.fspath(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # not a torch file, or one holding objects other than tensors and plain data
        raise CheckpointError(f"{where} is not an archdsl checkpoint: torch.load(weights_only=True) cannot read "
                              f"it as a torch file of tensors and plain data ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no details'})") from None
    _check_payload(data, where)
    overrides = {k: Override(v) for k, v in data["overrides"].items()}
    spec = load_sources(data["sources"], data["main"], model=data["model"],
                        input_shape=data["input_shape"], **overrides)
    module = spec.build(device=device)
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    saved = {k: tuple(v.shape) for k, v in data["state_dict"].items()}
    diff = _differences(expected, saved, "saved")
    if diff:
        raise CheckpointError(f"{where}: the saved weights do not fit the model its spec `{spec.name}` builds:\n" +
                              "\n".join(diff) + "\nthe weights come from a module changed after it was built; "
                              f"load the spec with the settings that module had (e.g. `archdsl.load_spec(SPEC, "
                              f"{_setting(expected, saved)})`), build it and call `load_state_dict` with the "
                              "checkpoint's \"state_dict\" entry (strict=False if some layers were replaced)")
    module.load_state_dict(data["state_dict"], strict=True)
    return module


def _check_payload(data, where: str) -> None:
    """Refuse, with what the file is and what it lacks, anything but a checkpoint this archdsl reads."""
    def tensors(d):
        return isinstance(d, dict) and bool(d) and all(isinstance(v, torch.Tensor) for v in d.values())

    if not isinstance(data, dict):
        raise CheckpointError(f"{where} is not an archdsl checkpoint: it holds {type(data).__name__}, not a dict")
    if data.get("format") != FORMAT:
        if tensors(data):
            first = next(iter(data))
            raise CheckpointError(
                f"{where} is a plain state_dict ({len(data)} tensors, e.g. `{first}`), not an archdsl checkpoint "
                f"(which also holds the spec): build the model from its spec and load the weights into it, "
                f"`model = archdsl.load_spec(SPEC).build(); model.load_state_dict(torch.load(FILE))`")
        inner = [k for k in ("state_dict", "model_state_dict", "model") if tensors(data.get(k))]
        if inner:
            raise CheckpointError(
                f"{where} is not an archdsl checkpoint: it is a dict whose `{inner[0]}` entry holds a state_dict; "
                f"build the model from its spec and load that entry, "
                f"`model.load_state_dict(torch.load(FILE)[\"{inner[0]}\"])`")
        keys = ", ".join(f"`{k}`" for k in list(data)[:8]) or "none"
        raise CheckpointError(f"{where} is not an archdsl checkpoint: a dict without `format: {FORMAT}` "
                              f"(its keys: {keys})")
    version = data.get("version")
    if version not in READABLE:
        raise CheckpointError(f"{where}: unsupported checkpoint version {version!r} "
                              f"(this archdsl reads version{'s' if len(READABLE) > 1 else ''} "
                              f"{', '.join(map(str, READABLE))})")
    missing = [k for k in READABLE[version] if k not in data]
    if missing:
        raise CheckpointError(
            f"{where} is an archdsl checkpoint (version {version}) but lacks "
            f"{', '.join(f'`{k}`' for k in missing)}: it is damaged or was not written by archdsl "
            f"(write checkpoints with `spec.save_checkpoint` or `archdsl compile -o FILE`)")
    bad = []
    if not isinstance(data["model"], str):
        bad.append("`model` is not a string")
    if not (isinstance(data["sources"], dict) and all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in data["sources"].items())):
        bad.append("`sources` is not a dict of file texts")
    elif data["main"] not in data["sources"]:
        bad.append(f"`main` ({data['main']!r}) is not one of its `sources`")
    if not (isinstance(data["overrides"], dict) and all(isinstance(k, str) and isinstance(v, str)
                                                       for k, v in data["overrides"].items())):
        bad.append("`overrides` is not a dict of expression texts")
    shape = data["input_shape"]
    if shape is not None and not (isinstance(shape, (list, tuple)) and
                                  all(isinstance(d, int) and not isinstance(d, bool) for d in shape)):
        bad.append("`input_shape` is not a list of integers")
    if not (isinstance(data["state_dict"], dict) and all(isinstance(v, torch.Tensor)
                                                         for v in data["state_dict"].values())):
        bad.append("`state_dict` is not a dict of tensors")
    if bad:
        raise CheckpointError(f"{where} is a damaged archdsl checkpoint: " + "; ".join(bad))


def _fmt(shape) -> str:
    return "x".join(map(str, shape)) if shape else "a scalar"


def _differences(expected: dict, got: dict, here: str = "here", limit: int = 12) -> list[str]:
    """One line per state_dict key whose presence or shape differs (``expected``: what the spec builds)."""
    lines = [f"  {k}: {_fmt(got[k])} {here}, {_fmt(v)} in the spec" for k, v in expected.items()
             if k in got and tuple(got[k]) != tuple(v)]
    lines += [f"  {k}: missing {here} ({_fmt(v)} in the spec)" for k, v in expected.items() if k not in got]
    lines += [f"  {k}: {_fmt(v)} {here}, not in the spec" for k, v in got.items() if k not in expected]
    if len(lines) > limit:
        lines = lines[:limit] + [f"  ... and {len(lines) - limit} more"]
    return lines


def _setting(expected: dict, got: dict) -> str:
    """An example override for a module changed after it was built: ``num_classes=10`` when exactly one
    module's tensors changed their first dim to one size (a new head), else ``num_classes=N``."""
    changed = [k for k, v in expected.items() if k in got and tuple(got[k]) != tuple(v)]
    owners = {k.rsplit(".", 1)[0] for k in changed}
    sizes = {got[k][0] for k in changed if got[k]}
    same_rest = all(got[k][1:] == tuple(expected[k])[1:] for k in changed if got[k])
    whole = len(changed) == sum(1 for k in expected if k.rsplit(".", 1)[0] in owners)
    if changed and len(owners) == 1 and len(sizes) == 1 and same_rest and whole and set(got) == set(expected):
        return f"num_classes={sizes.pop()}"
    return "num_classes=N"
