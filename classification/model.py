"""The classifier: torchvision's MobileNetV2 with a 1-logit head, partial unfreezing, and pretrained weights.

- `build_classifier(weights)`: `"imagenet"` loads torchvision's IMAGENET1K_V2 weights from the `$TORCH_HOME`
  cache (downloading them if online); `"synthetic"` loads the backbone pretrained on the world's synthetic faces
  (`classification.pretrain`, cached under `runs/pretrained/`; the offline stand-in for ImageNet, what the demo
  uses); `"none"` is random init.
- `unfreeze_last_blocks(model, k)`: train the head plus the last `k` entries of `model.features`.
  Decision: the final 1x1 conv `features[18]` (320 -> 1280 channels, conv + BN + ReLU6) COUNTS as a block, so
  every entry of `model.features` is one block and the rule is simply "the last k entries": k=1 is
  `features[18]`, k=2 adds the last inverted-residual block `features[17]`, k=3 adds `features[16]`.
- Frozen blocks keep their BatchNorm in eval mode even after `model.train()` (`FaceClassifier.train` re-applies
  it), so fine-tuning the head never drifts the running statistics the frozen convolutions were trained with.
- `calibrate_batchnorm(model, batches)`: with random init, frozen BatchNorm statistics are estimated once from
  training batches before fine-tuning (otherwise frozen random blocks pass on almost nothing).
- `imagenet_sanity(images)`: the pretrained 1000-class network's top-5 labels, the "it tells a bear from an
  elephant" check, or a clear "skipped" result when the weights are not available offline.
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


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither cached nor downloadable; the message says which file to put where."""


def imagenet_weights_file(weights: MobileNet_V2_Weights = IMAGENET_WEIGHTS) -> Path:
    """Where torchvision caches `weights`: `<torch hub dir>/checkpoints/<file name of the URL>`.

    The hub dir is `$TORCH_HOME/hub` (default `~/.cache/torch/hub`).
    """
    return torch_hub_file(weights.url.rsplit("/", 1)[-1])


def missing_weights_message(weights: MobileNet_V2_Weights = IMAGENET_WEIGHTS, reason: str = "") -> str:
    """The instructions shown when the pretrained weights cannot be loaded."""
    path = imagenet_weights_file(weights)
    return (
        f"ImageNet weights for MobileNetV2 are not available{f' ({reason})' if reason else ''}. "
        f"Expected file: {path} . Download {weights.url} on a machine with internet and copy it there "
        "(or set TORCH_HOME so that <TORCH_HOME>/hub/checkpoints/ holds it), or run with weights='none' "
        "(random init, what the offline demo uses)."
    )


def load_imagenet_state_dict(weights: MobileNet_V2_Weights = IMAGENET_WEIGHTS) -> dict:
    """The 1000-class MobileNetV2 state dict, from the `$TORCH_HOME` cache or downloaded (hash-checked).

    Raises `WeightsUnavailableError` naming the expected file when the cache is empty and the download fails.
    """
    path = imagenet_weights_file(weights)
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as error:  # offline: URLError, socket errors, HTTP errors, a bad hash ...
        raise WeightsUnavailableError(missing_weights_message(
            weights, f"{type(error).__name__}: {error}" if not path.exists() else f"cached file unreadable: {error}"
        )) from error


def imagenet_weights_available(weights: MobileNet_V2_Weights = IMAGENET_WEIGHTS) -> bool:
    """True when the pretrained file is already in the cache (no network needed)."""
    return imagenet_weights_file(weights).exists()


class FaceClassifier(MobileNetV2):
    """MobileNetV2 whose head outputs one logit: "is this photo the target person?".

    `train()` keeps BatchNorm layers of frozen parts (all parameters `requires_grad=False`) in eval mode.
    """

    def __init__(self, dropout: float = 0.2):
        super().__init__(num_classes=1000, dropout=dropout)
        self.classifier[1] = nn.Linear(self.last_channel, 1)

    def train(self, mode: bool = True) -> "FaceClassifier":
        super().train(mode)
        if mode:
            keep_frozen_batchnorm_in_eval(self)
        return self


def keep_frozen_batchnorm_in_eval(model: nn.Module) -> None:
    """Put every BatchNorm whose affine parameters are all frozen into eval mode (running stats stay fixed)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()


def calibrate_batchnorm(model: nn.Module, batches, max_batches: int = 8, only_trainable: bool = False) -> int:
    """Re-estimate every BatchNorm's running mean/variance from up to `max_batches` input batches.

    Why: with random init (`weights="none"`) the running statistics are the defaults (mean 0, variance 1),
    which do not match the real activations, so frozen blocks in eval mode shrink the signal ~10x per stage
    (by `features[14]` it is ~1e-7) and a head on top learns nothing. Estimating them once from data (as
    `torch.optim.swa_utils.update_bn` does: a cumulative average, no gradients) gives frozen random features
    a fair chance; afterwards they stay frozen like any other frozen parameter. `batches` yields tensors or
    `(images, ...)` tuples (None items are skipped). Returns the number of batches used.

    `only_trainable=True` re-estimates only BatchNorm layers with trainable affine parameters and leaves frozen
    ones untouched: the "precise BN" step (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021) used before
    validation. While a small network trains fast from scratch, the exponential running averages (momentum 0.1)
    lag behind the weights, so eval-mode outputs differ from what training optimised; fresh population
    statistics of the current weights remove that mismatch.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and (not only_trainable or any(p.requires_grad for p in m.parameters(recurse=False)))]
    if not norms:
        return 0
    left_alone = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m not in norms]
    momenta = {m: m.momentum for m in norms}
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the calibration batches
    used = 0
    device = next(model.parameters()).device
    nn.Module.train(model, True)  # plain train mode: every BatchNorm (frozen ones too) updates its statistics
    for m in left_alone:
        m.eval()  # only_trainable: the others keep their statistics (eval mode uses and never updates them)
    with torch.no_grad():
        for batch in batches:
            if used >= max_batches:
                break
            if batch is None:
                continue
            images = batch[0] if isinstance(batch, (list, tuple)) else batch
            model(images.to(device))
            used += 1
    for m in norms:
        m.momentum = momenta[m]
    model.train(was_training)
    return used


def build_classifier(weights: str = "none", dropout: float = 0.2,
                     synthetic_checkpoint: str | Path | None = None) -> FaceClassifier:
    """A `FaceClassifier` with the ImageNet backbone (`weights="imagenet"`), the synthetic-faces backbone
    (`"synthetic"`) or random init (`"none"`).

    synthetic_checkpoint: for `"synthetic"`, a checkpoint written by `classification.pretrain` (default: the cache
        of the default `PretrainConfig`); a missing one raises `InputError` saying how to make it.
    The 1-logit head is always freshly initialised. All parameters start trainable; call
    `unfreeze_last_blocks` to choose what trains.
    """
    if weights not in WEIGHT_CHOICES:
        raise ValueError(f"weights must be one of {WEIGHT_CHOICES}, got {weights!r}")
    model = FaceClassifier(dropout=dropout)
    if weights in ("imagenet", "synthetic"):
        if weights == "imagenet":
            state = load_imagenet_state_dict()
        else:
            from .pretrain import load_synthetic_backbone

            state = load_synthetic_backbone(synthetic_checkpoint)
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("classifier.") for k in missing):
            raise RuntimeError(f"{weights} weights do not fit MobileNetV2: missing={missing} unexpected={unexpected}")
    return model


def unfreeze_last_blocks(model: FaceClassifier, k: int) -> list[str]:
    """Freeze everything except the head and the last `k` blocks of `model.features`; return trainable names.

    `k=0` trains the head only; `k` may go up to `len(model.features)` (19, the whole network). The final 1x1
    conv `features[18]` counts as a block (see the module docstring). BatchNorm layers in frozen blocks are put in
    eval mode now and on every later `model.train()`.
    """
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
    """Classify everyday photos with the pretrained 1000-class MobileNetV2 and return the top labels.

    `images`: a sequence of `(name, PIL image or HxWx3 uint8 array)`; default: scikit-image's `chelsea` (a cat)
    and `coffee` (a cup) when scikit-image is installed. Returns `{"status": "ok", "results": [{"name",
    "top": [[label, probability], ...]}]}`, or `{"status": "skipped", "reason": ...}` when the weights are not
    available offline (never raises for that). `download=False` uses only the `$TORCH_HOME` cache, so an offline
    notebook neither waits on the network nor prints the download attempt.
    """
    from PIL import Image

    if images is None:
        try:
            from skimage import data as skdata
        except ImportError:
            return {"status": "skipped", "reason": "no images given and scikit-image is not installed"}
        images = [("chelsea (a cat)", skdata.chelsea()), ("coffee (a cup)", skdata.coffee())]
    if not download and not imagenet_weights_available():
        reason = missing_weights_message(reason="not in the cache; download=True fetches it")
        return {"status": "skipped", "reason": f"weights not available offline: {reason}"}
    try:
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
