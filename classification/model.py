"""The classifier: torchvision's MobileNetV2 with a 1-logit head, partial unfreezing, and pretrained weights.

`build_classifier(weights)`: "imagenet" (torchvision's IMAGENET1K_V2 from the `$TORCH_HOME` cache, downloaded if
online), "synthetic" (`classification.pretrain`'s backbone, the offline stand-in) or "none" (random init).
`unfreeze_last_blocks(model, k)` trains the head plus the last k entries of `model.features` (k=1 is the final
1x1 conv `features[18]`); frozen blocks keep their BatchNorm in eval mode even after `model.train()`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torchvision.models import MobileNet_V2_Weights, MobileNetV2

from common.checkpoints import torch_hub_file

# V2 is torchvision's better recipe (72.2% vs 71.9% top-1) with the same architecture.
IMAGENET_WEIGHTS = MobileNet_V2_Weights.IMAGENET1K_V2
WEIGHT_CHOICES = ("imagenet", "synthetic", "none")
BATCH_NORM = nn.modules.batchnorm._BatchNorm


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither cached nor downloadable; the message says which file to put where."""


def imagenet_weights_file() -> Path:
    """Where torchvision caches the ImageNet weights: `<torch hub dir>/checkpoints/<file name of the URL>`."""
    return torch_hub_file(IMAGENET_WEIGHTS.url.rsplit("/", 1)[-1])


def load_imagenet_state_dict() -> dict:
    """The 1000-class MobileNetV2 state dict, cached or downloaded; `WeightsUnavailableError` saying which file
    to put where when neither works."""
    path = imagenet_weights_file()
    try:
        return IMAGENET_WEIGHTS.get_state_dict(progress=False, check_hash=True)
    except Exception as error:  # offline: URLError, socket errors, HTTP errors, a bad hash ...
        reason = f"cached file unreadable: {error}" if path.exists() else f"{type(error).__name__}: {error}"
        raise WeightsUnavailableError(
            f"ImageNet weights for MobileNetV2 are not available ({reason}). Expected file: {path} . Download "
            f"{IMAGENET_WEIGHTS.url} on a machine with internet and copy it there (or set TORCH_HOME so that "
            "<TORCH_HOME>/hub/checkpoints/ holds it), or run with weights='none' (random init, what the offline "
            "demo uses).") from error


class FaceClassifier(MobileNetV2):
    """MobileNetV2 whose head outputs one logit: "is this photo the target person?". `train()` keeps the
    BatchNorm layers of frozen parts (all parameters `requires_grad=False`) in eval mode."""

    def __init__(self, dropout: float = 0.2):
        super().__init__(num_classes=1000, dropout=dropout)
        self.classifier[1] = nn.Linear(self.last_channel, 1)

    def train(self, mode: bool = True) -> "FaceClassifier":
        super().train(mode)
        for module in self.modules() if mode else []:
            params = list(module.parameters(recurse=False))
            if isinstance(module, BATCH_NORM) and params and not any(p.requires_grad for p in params):
                module.eval()
        return self


def calibrate_batchnorm(model: nn.Module, batches, max_batches: int = 8, only_trainable: bool = False) -> int:
    """Re-estimate BatchNorm running statistics from up to `max_batches` batches (tensors or `(images, ...)`
    tuples; None skipped), as `torch.optim.swa_utils.update_bn` does; returns the number of batches used.
    With random init, default statistics make frozen blocks shrink the signal to nothing. `only_trainable=True`
    re-estimates only trainable layers: "precise BN" before validation (Wu & Johnson, 2021)."""
    all_norms = [m for m in model.modules() if isinstance(m, BATCH_NORM)]
    norms = [m for m in all_norms if not only_trainable or any(p.requires_grad for p in m.parameters(recurse=False))]
    if not norms:
        return 0
    momenta = {m: m.momentum for m in norms}
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the calibration batches
    nn.Module.train(model, True)  # plain train mode: every BatchNorm (frozen ones too) updates its statistics
    for m in all_norms:
        if m not in norms:
            m.eval()  # only_trainable: the others keep their statistics
    used, device = 0, next(model.parameters()).device
    with torch.no_grad():
        for batch in (b for b in batches if b is not None):
            if used >= max_batches:
                break
            model((batch[0] if isinstance(batch, (list, tuple)) else batch).to(device))
            used += 1
    for m in norms:
        m.momentum = momenta[m]
    model.train(was_training)
    return used


def build_classifier(weights: str = "none", dropout: float = 0.2,
                     synthetic_checkpoint: str | Path | None = None) -> FaceClassifier:
    """A `FaceClassifier` with the "imagenet" or "synthetic" backbone (`synthetic_checkpoint`, default: the
    default `PretrainConfig`'s cache) or random init ("none"); fresh head, every parameter trainable."""
    if weights not in WEIGHT_CHOICES:
        raise ValueError(f"weights must be one of {WEIGHT_CHOICES}, got {weights!r}")
    model = FaceClassifier(dropout=dropout)
    if weights != "none":
        from .pretrain import load_synthetic_backbone

        state = load_imagenet_state_dict() if weights == "imagenet" else load_synthetic_backbone(synthetic_checkpoint)
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("classifier.") for k in missing):
            raise RuntimeError(f"{weights} weights do not fit MobileNetV2: missing={missing} unexpected={unexpected}")
    return model


def unfreeze_last_blocks(model: FaceClassifier, k: int) -> list[str]:
    """Freeze everything except the head and the last `k` (0..19) blocks of `model.features`; return the
    trainable parameter names. Frozen BatchNorm layers stay in eval mode."""
    n_blocks = len(model.features)
    if not 0 <= k <= n_blocks:
        raise ValueError(f"k must be between 0 and {n_blocks} (blocks in model.features), got {k}")
    model.requires_grad_(False)
    model.classifier.requires_grad_(True)
    for block in model.features[n_blocks - k:] if k else []:
        block.requires_grad_(True)
    model.train(model.training)
    return [name for name, p in model.named_parameters() if p.requires_grad]


def imagenet_sanity(images: Sequence | None = None, top: int = 5, download: bool = False) -> dict:
    """Top labels of the pretrained 1000-class MobileNetV2 for `(name, image)` pairs (default: scikit-image's cat
    and coffee cup): {"status": "ok", "results": [{"name", "top"}]}, or {"status": "skipped", "reason"} when the
    weights are not cached (`download=False`) or not downloadable."""
    from PIL import Image

    if images is None:
        try:
            from skimage import data as skdata
        except ImportError:
            return {"status": "skipped", "reason": "no images given and scikit-image is not installed"}
        images = [("chelsea (a cat)", skdata.chelsea()), ("coffee (a cup)", skdata.coffee())]
    try:
        if not download and not imagenet_weights_file().exists():
            raise WeightsUnavailableError("ImageNet weights for MobileNetV2 are not available (not in the cache; "
                                          f"download=True fetches it). Expected file: {imagenet_weights_file()}")
        state = load_imagenet_state_dict()
    except WeightsUnavailableError as error:
        return {"status": "skipped", "reason": f"weights not available offline: {error}"}
    net = MobileNetV2()
    net.load_state_dict(state)
    net.eval()
    preprocess = IMAGENET_WEIGHTS.transforms()
    categories = IMAGENET_WEIGHTS.meta["categories"]
    results = []
    with torch.inference_mode():
        for name, picture in images:
            picture = picture if isinstance(picture, Image.Image) else Image.fromarray(picture)
            probs = net(preprocess(picture.convert("RGB")).unsqueeze(0)).softmax(dim=1)[0]
            values, indices = probs.topk(top)
            results.append({"name": name, "top": [[categories[i], round(float(v), 4)]
                                                  for v, i in zip(values, indices.tolist())]})
    return {"status": "ok", "results": results}


def cli_add_arguments_sanity(parser) -> None:
    parser.add_argument("--top", type=int, default=5, help="labels per image")


def cli_run_sanity(args) -> dict:
    return {"command": "sanity", **imagenet_sanity(top=args.top)}
