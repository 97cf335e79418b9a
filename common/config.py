"""Run-time plumbing shared by every stage: config overrides, seeding, device choice, JSON summary lines.

Each long operation takes a `Config` dataclass; `apply_overrides` is how CLIs and notebooks change it, and an
unknown key is an error (a typo must not be silently ignored).
"""
from __future__ import annotations

import dataclasses
import json
import random
import sys
from pathlib import Path
from typing import Any, TypeVar

from .errors import InputError

C = TypeVar("C")


def apply_overrides(config: C, overrides: dict[str, Any] | None = None, **kwargs: Any) -> C:
    """Return a copy of dataclass `config` with fields replaced; unknown keys raise `InputError` (a ValueError)."""
    changes = {**(overrides or {}), **kwargs}
    names = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise InputError(
            f"unknown {type(config).__name__} field(s): {', '.join(unknown)}; valid: {', '.join(sorted(names))}"
        )
    return dataclasses.replace(config, **changes)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a dataclass config (paths become strings)."""
    out = {}
    for key, value in dataclasses.asdict(config).items():
        out[key] = str(value) if isinstance(value, Path) else value
    return out


def save_config(config: Any, path: str | Path) -> Path:
    """Write `config` as JSON next to the outputs it produced (atomically)."""
    from .files import atomic_write_text

    return atomic_write_text(path, json.dumps(config_to_dict(config), indent=2, sort_keys=True) + "\n")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and (if imported) PyTorch."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)


def pick_device(device: str = "auto"):
    """`"auto"` picks CUDA, then Apple MPS, then CPU; anything else is passed to `torch.device`."""
    import torch

    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def print_summary(summary: dict[str, Any]) -> None:
    """Print the one-line JSON summary that every CLI command ends with (its last stdout line)."""
    print(json.dumps(summary, sort_keys=True, default=str), flush=True)


def parse_set_options(pairs: list[str] | None) -> dict[str, Any]:
    """Parse CLI `--set key=value` pairs; values are read as JSON when they parse, else kept as strings."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise InputError(f"--set expects KEY=VALUE, got {pair!r}")
        key, raw = pair.split("=", 1)
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out
