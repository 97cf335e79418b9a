"""Run-time plumbing shared by every stage: `Config` overrides (an unknown key is an error), seeding, device
choice, code fingerprints and JSON summary lines."""
from __future__ import annotations

import dataclasses
import hashlib
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
        raise InputError(f"unknown {type(config).__name__} field(s): {', '.join(unknown)}; "
                         f"valid: {', '.join(sorted(names))}")
    return dataclasses.replace(config, **changes)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a dataclass config (paths become strings)."""
    return {key: str(value) if isinstance(value, Path) else value for key, value in dataclasses.asdict(config).items()}


def save_config(config: Any, path: str | Path) -> Path:
    """Write `config` as JSON next to the outputs it produced (atomically)."""
    from .files import atomic_write_text

    return atomic_write_text(path, json.dumps(config_to_dict(config), indent=2, sort_keys=True) + "\n")


def seed_everything(seed: int, threads: int | None = None, deterministic: bool = True) -> None:
    """Seed Python, NumPy and (if imported) PyTorch, optionally with deterministic kernels (ops without one warn).
    `threads` fixes PyTorch's thread count: float sums depend on how the work is split."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)
        if threads:
            torch.set_num_threads(int(threads))
        if deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False


def seed_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: seed Python and NumPy from the worker's torch seed (augmentations repeat)."""
    import numpy as np
    import torch

    worker_seed = torch.initial_seed() % 2**32
    random.seed(worker_seed)
    np.random.seed(worker_seed)


def code_version(*packages: str) -> str:
    """sha256 fingerprint of the `.py` files of the named top-level packages, e.g. `code_version("common", "vae")`:
    a finished run is reused only when its config and this fingerprint both match."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for package in sorted(packages):
        for path in sorted((root / package).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def pick_device(device: str = "auto"):
    """`"auto"` picks CUDA, then Apple MPS, then CPU; anything else is passed to `torch.device`."""
    import torch

    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("mps" if torch.backends.mps.is_available() else "cpu")


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
