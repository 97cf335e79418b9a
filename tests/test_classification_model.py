"""Stage 2 model: which parameters train for each k, frozen BatchNorm stays frozen, missing-weights message."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from classification.model import (WeightsUnavailableError, build_classifier, calibrate_batchnorm,
                                  imagenet_sanity, unfreeze_last_blocks)


def trainable_prefixes(model) -> set[str]:
    """'classifier' or 'features.<i>' for every trainable parameter."""
    return {".".join(name.split(".")[:2]) if name.startswith("features") else name.split(".")[0]
            for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("k, expected", [
    (0, {"classifier"}),
    (1, {"classifier", "features.18"}),  # the final 1x1 conv counts as a block
    (2, {"classifier", "features.18", "features.17"}),
    (3, {"classifier", "features.18", "features.17", "features.16"}),
])
def test_unfreeze_last_blocks_leaves_exactly_the_expected_parameters_trainable(k, expected):
    model = build_classifier("none")
    names = unfreeze_last_blocks(model, k)
    assert trainable_prefixes(model) == expected
    assert set(names) == {n for n, p in model.named_parameters() if p.requires_grad}
    # the head is a single logit
    assert model.classifier[1].out_features == 1
    blocks = [model.features[i] for i in range(19 - k, 19)] + [model.classifier]
    expected_count = sum(p.numel() for b in blocks for p in b.parameters())
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected_count


def test_invalid_k_is_rejected():
    with pytest.raises(ValueError, match="between 0 and 19"):
        unfreeze_last_blocks(build_classifier("none"), 20)


def test_one_step_changes_only_trainable_parameters_and_frozen_batchnorm_stays_put():
    torch.manual_seed(0)
    model = build_classifier("none")
    unfreeze_last_blocks(model, 2)
    model.train()  # must NOT put frozen BatchNorm back into training mode
    norms = {name: m for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    frozen_norms = {n for n in norms if not n.startswith(("features.17", "features.18"))}
    assert all(not norms[n].training for n in frozen_norms)
    assert all(norms[n].training for n in set(norms) - frozen_norms)

    before = {n: t.detach().clone() for n, t in model.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    images, labels = torch.randn(4, 3, 64, 64), torch.tensor([1.0, 0.0, 1.0, 0.0])
    loss = nn.functional.binary_cross_entropy_with_logits(model(images).squeeze(1), labels)
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    trainable_stats = {n for n in before if n.startswith(("features.17", "features.18")) and "running" in n}
    assert trainable <= changed  # every trainable parameter moved
    # nothing else moved: no frozen weight, no frozen running mean/var (num_batches_tracked of live BN may tick)
    assert {n for n in changed if not n.endswith("num_batches_tracked")} == trainable | trainable_stats
    assert not any(n.startswith("features.1.") or n.startswith("features.16.") for n in changed)


def test_calibrate_batchnorm_restores_a_usable_signal_for_random_init():
    torch.manual_seed(0)
    model = build_classifier("none")
    unfreeze_last_blocks(model, 0)
    model.eval()
    images = torch.rand(8, 3, 64, 64)
    with torch.no_grad():
        weak = model.features[:16](images).std()
        assert calibrate_batchnorm(model, [images, (images,)], max_batches=2) == 2
        model.eval()
        strong = model.features[:16](images).std()
    assert weak < 1e-3 < strong  # default stats shrink the signal to nothing; calibrated ones keep it
    assert not any(p.requires_grad for p in model.features.parameters())  # still frozen afterwards


def test_missing_imagenet_weights_give_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.hub.set_dir(str(tmp_path / "hub"))  # get_dir caches the env var only when unset; set it explicitly

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    try:
        with pytest.raises(WeightsUnavailableError) as error:
            build_classifier("imagenet")
        message = str(error.value)
        assert str(tmp_path / "hub" / "checkpoints" / "mobilenet_v2-7ebf99e0.pth") in message
        assert "https://download.pytorch.org/models/mobilenet_v2-7ebf99e0.pth" in message
        assert "weights='none'" in message
        result = imagenet_sanity()
        assert result["status"] == "skipped" and "not available offline" in result["reason"]
    finally:
        torch.hub._hub_dir = None  # back to the default ($TORCH_HOME/hub)


def test_unknown_weights_name_is_rejected():
    with pytest.raises(ValueError, match="weights must be one of"):
        build_classifier("imagenet21k")
