"""Checkpoint files every stage writes and reads: atomic `torch.save`, a load that names the file when it is
missing or unreadable, and where torch's hub cache keeps downloaded weights.

A checkpoint is a dict `{model, optimizer, step, config, metrics, ...}` (STYLE 4). Loading uses
`weights_only=False` because our own checkpoints hold plain Python config dicts and history lists; never load a
checkpoint from someone you do not trust.
"""
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
    """Read a checkpoint written by `save_checkpoint` onto the CPU.

    Raises `FileNotFoundError` when the file is missing and `InputError` when it is not a torch checkpoint
    (truncated, garbage, another format) or does not hold a dict: one line naming the file, `hint` saying how to
    make one (the CLIs report both as bad input, exit code 2).
    """
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
    """Where torchvision / torch.hub cache a downloaded weights file: `<hub dir>/checkpoints/<filename>`.

    The hub dir is `$TORCH_HOME/hub` (default `~/.cache/torch/hub`).
    """
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / filename
