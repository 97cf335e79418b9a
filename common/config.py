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


def seed_everything(seed: int, threads: int | None = None, deterministic: bool = True) -> None:
    """Seed Python, NumPy and (if imported) PyTorch; with `deterministic`, ask PyTorch for deterministic kernels
    (`torch.use_deterministic_algorithms(warn_only=True)`: ops without one warn instead of failing) and cuDNN's
    deterministic mode. `threads` fixes PyTorch's intra-op thread count (float sums depend on how work is split,
    so the same seed on the same machine gives the same numbers only with the same thread count)."""
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
    """DataLoader `worker_init_fn`: seed Python and NumPy in each worker from the seed PyTorch gave it (which the
    loader's seeded generator decides), so random augmentations in workers repeat run after run."""
    import numpy as np
    import torch

    worker_seed = torch.initial_seed() % 2**32
    random.seed(worker_seed)
    np.random.seed(worker_seed)


def code_version(*packages: str) -> str:
    """A short fingerprint of the source code that produces a result: sha256 over the `.py` files (paths and
    bytes) of the named top-level packages, e.g. `code_version("common", "classification")`.

    Stored with every finished run; a run is reused only when its config and this fingerprint both match, so a
    result never outlives the code that made it.
    """
    import hashlib

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
