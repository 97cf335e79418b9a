"""Checkpoints (`{model, optimizer, step, config, metrics, ...}` dicts): atomic save, a load that names a bad file,
and torch hub's weights cache. Loading unpickles (`weights_only=False`): load only checkpoints you trust."""
from __future__ import annotations

import io
from pathlib import Path

from .errors import InputError
from .files import atomic_write_bytes


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    """`torch.save` into memory, then one atomic write: a crash never leaves half a checkpoint."""
    import torch

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path, hint: str = "") -> dict:
    """Read a checkpoint written by `save_checkpoint` onto the CPU. A missing file raises `FileNotFoundError`, an
    unreadable one or one without a dict `InputError`; `hint` says how to make one."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist" + (f"; {hint}" if hint else ""))
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, ValueError ... for bad files
        raise InputError(f"checkpoint {path} is not a readable torch checkpoint ({type(error).__name__}: truncated, "
                         f"corrupt or another format); delete it and train again" + (f" ({hint})" if hint else "")
                         ) from error
    if not isinstance(checkpoint, dict):
        raise InputError(f"checkpoint {path} holds a {type(checkpoint).__name__}, not a checkpoint dict")
    return checkpoint


def torch_hub_file(filename: str) -> Path:
    """Where torch.hub caches a downloaded weights file: `<hub dir>/checkpoints/<filename>`."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / filename
