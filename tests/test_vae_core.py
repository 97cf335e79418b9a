"""Stage 3's core: the CelebA loader, the VAE, its losses and metrics, and the training loop (resume, DDP).

Everything runs on a generated CelebA-layout fixture (tests/celeba_fixture.py) with a tiny VAE (32 px, 8 latent
dims, 8 base channels) and a few training steps; no download, no GPU.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.celeba_fixture import write_celeba_fixture
from vae import losses
from vae.celeba import (CelebA, CelebAFormatError, ImageFolderFlat, load_face_image, open_image_dataset,
                        read_attributes)
from vae.metrics import mse, psnr, ssim
from vae.model import ConvVAE, UpsampleConv2d
from vae.train import (DistributedContext, RunExistsError, TrainConfig, load_vae, train_step, train_vae)

TINY = {"image_size": 32, "latent_dim": 8, "base_channels": 8, "batch_size": 8, "device": "cpu",
        "monitor_every": 2, "eval_every": 2, "num_eval": 8}


@pytest.fixture(scope="module")
def celeba(tmp_path_factory):
    return write_celeba_fixture(tmp_path_factory.mktemp("celeba"), n_identities=4, per_identity=6)


def copy_layout(fixture: dict, dest: Path) -> Path:
    """A copy of the fixture's text files with the image folder linked, so a test can break one file."""
    dest.mkdir()
    for name in ("identity_CelebA.txt", "list_attr_celeba.txt", "list_eval_partition.txt", "list_bbox_celeba.txt"):
        (dest / name).write_text((fixture["root"] / name).read_text())
    (dest / "img_align_celeba").symlink_to(fixture["root"] / "img_align_celeba", target_is_directory=True)
    return dest


# ------------------------------------------------------------------------------------------------- loader
def test_loader_reads_identities_partitions_and_attributes(celeba):
    everything = CelebA(celeba["root"], split="all", image_size=32)
    assert everything.files == celeba["files"]
    assert all(everything.identity_of(f) == celeba["identities"][f] for f in celeba["files"])
    assert everything.files_of_identity(103) == [f for f in celeba["files"] if celeba["identities"][f] == 103]
    assert everything.attributes == celeba["attribute_names"] and len(everything.attributes) == 40
    expected = np.stack([celeba["attributes"][f] for f in everything.files])
    assert np.array_equal(everything.attribute_matrix, expected)

    for split, code in (("train", 0), ("valid", 1), ("test", 2)):
        part = CelebA(celeba["root"], split=split, image_size=32)
        assert part.files == [f for f in celeba["files"] if celeba["partitions"][f] == code]
    assert len(CelebA(celeba["root"], split="train")) == 4 * 4  # per person: 4 train, 1 valid, 1 test

    only = CelebA(celeba["root"], split="all", identities=[101, 104], image_size=32)
    assert {celeba["identities"][f] for f in only.files} == {101, 104} and len(only) == 12

    image = everything[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0 and float(image.std()) > 0.05
    assert CelebA(celeba["root"], split="all", image_size=64)[0].shape == (3, 64, 64)
    assert isinstance(open_image_dataset(celeba["root"], "all", 32), CelebA)


def test_in_the_wild_images_are_cropped_to_their_face_box(celeba):
    """The fixture pastes each aligned face at its bbox on a larger canvas: the wild crop must find the face."""
    wild = CelebA(celeba["root"], split="all", image_size=32, in_the_wild=True)
    assert wild.files == celeba["files"]
    for i in (0, 5):
        file = wild.files[i]
        with Image.open(wild.path_of(file)) as photo:
            box = wild.crop_box(file, *photo.size)
        x, y, w, h = celeba["bboxes"][file]
        side = max(w, h)
        assert box == (x + w / 2 - side / 2, y + h / 2 - side / 2, x + w / 2 + side / 2, y + h / 2 + side / 2)
        # The same square in the aligned photo's own coordinates (it reaches past its left and right edges,
        # where the canvas shows background, so only the middle of the two crops is compared).
        expected = load_face_image(celeba["root"] / "img_align_celeba" / file, 32,
                                   (w / 2 - side / 2, h / 2 - side / 2, w / 2 + side / 2, h / 2 + side / 2))
        assert float((wild[i][:, 8:24, 8:24] - expected[:, 8:24, 8:24]).abs().mean()) < 0.05


@pytest.mark.parametrize("file, text, message", [
    ("identity_CelebA.txt", "000001.jpg 101\n000002.jpg\n", r"identity_CelebA.txt, line 2: expected '<image> <identity>'"),
    ("identity_CelebA.txt", "000001.jpg alice\n", r"line 1: identity 'alice' is not an integer"),
    ("list_eval_partition.txt", "000001.jpg 7\n", r"partition of 000001.jpg is 7"),
    ("list_attr_celeba.txt", "1\nSmiling Young\n000001.jpg 1\n", r"line 3: expected an image id and 2 values, got 1"),
    ("list_attr_celeba.txt", "1\nSmiling Young\n000001.jpg 1 0\n", r"line 3: attribute values must be -1 or 1"),
    ("list_attr_celeba.txt", "5\nSmiling Young\n000001.jpg 1 -1\n", r"announces 5 images but 1 rows follow"),
    ("list_attr_celeba.txt", "many\nSmiling\n", r"line 1: expected the image count"),
])
def test_malformed_files_raise_with_file_and_line(celeba, tmp_path, file, text, message):
    root = copy_layout(celeba, tmp_path / "broken")
    (root / file).write_text(text)
    with pytest.raises(CelebAFormatError, match=message):
        CelebA(root, split="train")


@pytest.mark.parametrize("missing", ["identity_CelebA.txt", "list_eval_partition.txt", "img_align_celeba"])
def test_missing_files_name_the_file_and_the_layout(celeba, tmp_path, missing):
    root = copy_layout(celeba, tmp_path / "partial")
    target = root / missing
    target.unlink()
    with pytest.raises(CelebAFormatError, match=f"missing {missing} in .*img_align_celeba/, identity_CelebA.txt"):
        CelebA(root, split="train")
    with pytest.raises(CelebAFormatError, match="does not exist"):
        CelebA(tmp_path / "nowhere")


def test_attributes_accept_the_official_double_space_padding(tmp_path):
    (tmp_path / "list_attr_celeba.txt").write_text("2\nSmiling Young \n000001.jpg -1  1\n000002.jpg  1 -1\n")
    names, rows = read_attributes(tmp_path)
    assert names == ["Smiling", "Young"]
    assert rows["000001.jpg"].tolist() == [-1, 1] and rows["000002.jpg"].tolist() == [1, -1]


def test_flat_image_folder_splits_are_stable_and_cover_everything(tmp_path):
    for person in ("7", "8"):
        (tmp_path / person).mkdir()
        for k in range(15):
            Image.new("RGB", (40, 30), (k * 10, 50, 200)).save(tmp_path / person / f"{k}.png")
    splits = {s: ImageFolderFlat(tmp_path, s, 16).files for s in ("train", "valid", "test")}
    assert sorted(sum(splits.values(), [])) == ImageFolderFlat(tmp_path, "all", 16).files
    assert len(ImageFolderFlat(tmp_path, "all", 16, identities=[8])) == 15
    assert ImageFolderFlat(tmp_path, "all", 16)[0].shape == (3, 16, 16)


def test_a_tenth_is_held_out_without_a_valid_split_unless_hold_out_is_off(celeba):
    from vae.train import split_datasets

    config = TrainConfig(data_root=str(celeba["root"]), split="all", identities=[102], **TINY)
    _, train, _, held, held_from = split_datasets(config)
    assert len(held) == 1 and not set(held) & set(train) and len(train) == 5 and held_from == "train (carved out)"
    _, train, _, held, held_from = split_datasets(dataclasses.replace(config, hold_out=False))
    assert train == held == list(range(6)) and held_from == "train (not held out)"  # every photo trains, and says so


# -------------------------------------------------------------------------------------------------- model
@pytest.mark.parametrize("size", [32, 64])
def test_model_shapes_sampling_and_finite_losses(size):
    torch.manual_seed(0)
    model = ConvVAE(latent_dim=8, image_size=size, base_channels=8)
    x = torch.rand(3, 3, size, size)
    x_hat, mu, logvar = model(x)
    assert x_hat.shape == x.shape and mu.shape == logvar.shape == (3, 8)
    assert float(x_hat.detach().min()) >= 0 and float(x_hat.detach().max()) <= 1
    assert not torch.equal(model(x)[0], x_hat)  # train mode samples z
    model.eval()
    torch.testing.assert_close(model(x)[0], model.decode(model.encode(x)[0]))  # eval mode decodes the mean
    assert model.sample(5).shape == (5, 3, size, size)
    terms = losses.vae_loss(x_hat, x, mu, logvar, beta=1.0, gamma=0.0)
    assert set(terms) == {"total", "recon", "kl", "perceptual"}
    assert all(torch.isfinite(v) for v in terms.values()) and float(terms["recon"].detach()) > 0
    with pytest.raises(ValueError, match="image_size"):
        ConvVAE(image_size=48)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("in_channels,out_channels,size,bias", [(6, 3, 5, True), (4, 7, 8, False)])
def test_fused_upsample_conv_equals_upsample_then_conv(in_channels, out_channels, size, bias, channels_last):
    torch.manual_seed(0)
    fused = UpsampleConv2d(in_channels, out_channels, bias=bias)
    plain = torch.nn.Sequential(torch.nn.Upsample(scale_factor=2, mode="nearest"),
                                torch.nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias))
    plain[1].load_state_dict(fused.state_dict())  # same parameter names and shapes as nn.Conv2d
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, in_channels, size, size).contiguous(memory_format=layout)
    x_fused, x_plain = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out_fused, out_plain = fused(x_fused), plain(x_plain)
    assert out_fused.shape == (2, out_channels, 2 * size, 2 * size)
    assert out_fused.is_contiguous(memory_format=layout)
    torch.testing.assert_close(out_fused, out_plain, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(out_plain)
    out_fused.backward(grad)
    out_plain.backward(grad)
    torch.testing.assert_close(x_fused.grad, x_plain.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused.weight.grad, plain[1].weight.grad, rtol=1e-4, atol=1e-4)
    if bias:
        torch.testing.assert_close(fused.bias.grad, plain[1].bias.grad, rtol=1e-4, atol=1e-4)


def test_kl_matches_the_closed_form_on_a_hand_case():
    mu = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    # Per dim 0.5·(mu² + σ² − 1 − log σ²): image 1 → 0.5 + 0.5·(1 − ln 2); image 2 → 0 + 2; batch mean.
    expected = ((0.5 + 0.5 * (1 - math.log(2.0))) + 2.0) / 2
    assert float(losses.kl_divergence(mu, logvar)) == pytest.approx(expected, rel=1e-6)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros(2), torch.ones(2))
    assert float(losses.kl_divergence(mu, logvar)) == pytest.approx(
        float(torch.distributions.kl_divergence(q, p).sum(1).mean()), rel=1e-6)
    assert float(losses.kl_divergence(torch.zeros(4, 3), torch.zeros(4, 3))) == 0.0


def test_reconstruction_loss_is_a_per_image_sum_averaged_over_the_batch():
    x = torch.zeros(2, 3, 4, 4)
    x_hat = torch.full_like(x, 0.5)
    x_hat[1] = 0.0  # the second image is perfect
    assert float(losses.reconstruction_loss(x_hat, x, "mse")) == pytest.approx(48 * 0.25 / 2)
    with pytest.raises(ValueError, match="unknown reconstruction loss"):
        losses.reconstruction_loss(x_hat, x, "huber")


def test_gamma_zero_never_builds_vgg(celeba, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("VGG was built although gamma = 0")

    monkeypatch.setattr(losses.VGGPerceptualLoss, "__init__", refuse)
    monkeypatch.setattr("vae.train.VGGPerceptualLoss", losses.VGGPerceptualLoss)
    summary = train_vae(TrainConfig(data_root=str(celeba["root"]), out_dir=str(tmp_path / "run"), max_steps=1,
                                    gamma=0.0, **TINY))
    assert summary["steps"] == 1 and summary["perceptual_pretrained"] is None
    x = torch.rand(2, 3, 32, 32)
    terms = losses.vae_loss(x, x, torch.zeros(2, 4), torch.zeros(2, 4), gamma=0.0, perceptual=None)
    assert float(terms["perceptual"]) == 0.0 and float(terms["total"]) == 0.0
    with pytest.raises(ValueError, match="needs a VGGPerceptualLoss"):
        losses.vae_loss(x, x, torch.zeros(2, 4), torch.zeros(2, 4), gamma=1.0, perceptual=None)


@pytest.fixture(scope="module")
def vgg(tmp_path_factory):
    """The perceptual loss with an empty torch hub cache: offline, hence random-init (and it must say so)."""
    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(tmp_path_factory.mktemp("torch_home"))
    try:
        with pytest.warns(RuntimeWarning, match="randomly initialised"):
            module = losses.VGGPerceptualLoss()
    finally:
        if old is None:
            os.environ.pop("TORCH_HOME")
        else:
            os.environ["TORCH_HOME"] = old
    return module


def test_perceptual_loss_is_zero_for_identical_inputs_and_frozen(vgg):
    assert vgg.pretrained is False
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    assert float(vgg(x, x)) == 0.0
    x_hat = x.clone().requires_grad_(True)
    noisy = (x_hat + 0.1 * torch.randn_like(x)).clamp(0, 1)
    value = vgg(noisy, x)
    assert float(value.detach()) > 0
    value.backward()
    assert x_hat.grad is not None and float(x_hat.grad.abs().sum()) > 0  # gradients reach the reconstruction
    assert all(not p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training  # a parent's .train() cannot switch the frozen network out of eval mode
    assert len(vgg.features) == losses.VGG19_RELU_INDEX["relu3_1"] + 1  # truncated after the deepest layer


def test_perceptual_loss_feeds_vgg_imagenet_normalised_inputs(vgg):
    seen = []
    handle = vgg.features[0].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    try:
        x = torch.rand(2, 3, 32, 32)
        vgg.extract(x)
    finally:
        handle.remove()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(seen[0], (x - mean) / std)
    # Uniform grey 0.5 maps to small values around zero, not to 0.5: the normalisation really is applied.
    grey = torch.full((1, 3, 32, 32), 0.5)
    handle = vgg.features[0].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    try:
        vgg.extract(grey)
    finally:
        handle.remove()
    torch.testing.assert_close(seen[-1][0, :, 0, 0], ((0.5 - mean) / std).view(3))
    with pytest.raises(ValueError, match="unknown VGG19 layer"):
        losses.VGGPerceptualLoss(layers=("relu9_9",))


# ------------------------------------------------------------------------------------------------ metrics
def test_ssim_and_psnr_match_known_values():
    skimage_metrics = pytest.importorskip("skimage.metrics", reason="scikit-image is a dev dependency")
    torch.manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(2, 3, 8, 8), size=32, mode="bilinear")
    y = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    ours = ssim(y, x)
    for i in range(2):
        reference = skimage_metrics.structural_similarity(
            y[i].permute(1, 2, 0).numpy(), x[i].permute(1, 2, 0).numpy(), channel_axis=2, data_range=1.0,
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert float(ours[i]) == pytest.approx(reference, abs=1e-4)
    assert torch.allclose(ssim(x, x), torch.ones(2))
    assert float(mse(torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.1))[0]) == pytest.approx(0.01)
    assert float(psnr(torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.1))[0]) == pytest.approx(20.0)


# ----------------------------------------------------------------------------------------------- training
def test_one_step_changes_weights_and_a_nan_step_changes_none(vgg):
    torch.manual_seed(0)
    model = ConvVAE(latent_dim=8, image_size=32, base_channels=8).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    config = TrainConfig(gamma=1.0, **TINY)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(4, 3, 32, 32)
    terms, ok = train_step(model, model, optimizer, scaler, x, config, vgg, DistributedContext())
    assert ok and float(terms["perceptual"].detach()) > 0
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert "encoder.0.0.weight" in changed and "to_rgb.weight" in changed and "fc_mu.weight" in changed

    after_good = {k: v.clone() for k, v in model.state_dict().items() if v.dtype.is_floating_point}
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    terms, ok = train_step(model, model, optimizer, scaler, bad, config, vgg, DistributedContext())
    assert not ok and not torch.isfinite(terms["total"])
    params = dict(model.named_parameters())
    assert all(torch.equal(params[k], after_good[k]) for k in params)


def test_monitor_gif_is_refreshed_at_checkpoints_and_holds_every_frame_at_the_end(celeba, tmp_path, monkeypatch):
    # frames every step, checkpoints every 2: the GIF is rewritten at steps 2 and 4 and at the last step (5), never
    # per frame, and its final version holds all 5 frames
    import vae.train as train_module

    original, frames_at_refresh = train_module.write_monitor_gif, []

    def counting(monitor_dir, gif_path, *args, **kwargs):
        frames_at_refresh.append(len(list(Path(monitor_dir).glob("step_*.png"))))
        return original(monitor_dir, gif_path, *args, **kwargs)

    monkeypatch.setattr(train_module, "write_monitor_gif", counting)
    out = tmp_path / "run"
    train_vae(TrainConfig(data_root=str(celeba["root"]), gamma=0.0, out_dir=str(out), max_steps=5,
                          **{**TINY, "monitor_every": 1, "eval_every": 2}))
    assert frames_at_refresh == [2, 4, 5]
    with Image.open(out / "monitor.gif") as gif:
        assert gif.n_frames == 5


def test_checkpoint_then_resume_gives_the_same_next_losses(celeba, tmp_path):
    # gamma = 0 keeps it quick: the frozen VGG term is a deterministic function of the images, while what resume
    # must restore is the model, the optimizer, the data order and the RNG behind the reparameterisation noise.
    common = dict(data_root=str(celeba["root"]), gamma=0.0, seed=3, **TINY)
    straight = train_vae(TrainConfig(out_dir=str(tmp_path / "straight"), max_steps=3, **common))
    first = train_vae(TrainConfig(out_dir=str(tmp_path / "split"), max_steps=2, **common))
    assert first["steps"] == 2 and Path(first["checkpoint"]).is_file()
    with pytest.raises(RunExistsError, match="resume"):
        train_vae(TrainConfig(out_dir=str(tmp_path / "split"), max_steps=3, **common))
    resumed = train_vae(TrainConfig(out_dir=str(tmp_path / "split"), max_steps=3, resume=True, **common))
    assert resumed["steps"] == 3 and resumed["steps_this_run"] == 1
    losses_straight = [row["loss"] for row in straight["history"]]
    losses_resumed = [row["loss"] for row in resumed["history"]]
    assert losses_resumed[:2] == losses_straight[:2]  # the history came back from the checkpoint
    assert losses_resumed[2] == pytest.approx(losses_straight[2], rel=1e-6, abs=1e-6)  # the next loss
    assert losses_straight[1] != losses_straight[2]  # (the steps really differ: not a constant)
    a, _ = load_vae(straight["checkpoint"], device="cpu")
    b, saved = load_vae(resumed["checkpoint"], device="cpu")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    assert saved["step"] == 3 and set(saved) >= {"model", "optimizer", "config", "metrics", "rng"}
    assert set(resumed["metrics"]) == {"mse", "psnr", "ssim"} and 0 < resumed["metrics"]["mse"] < 1
    assert json.loads((tmp_path / "split" / "config.json").read_text())["max_steps"] == 3
    frames = sorted(p.name for p in (tmp_path / "split" / "monitor").glob("step_*.png"))
    assert frames == ["step_000002.png", "step_000003.png"]
    with Image.open(tmp_path / "split" / "monitor.gif") as gif:
        assert gif.n_frames == 2 and gif.info["loop"] == 0
    again = train_vae(TrainConfig(out_dir=str(tmp_path / "split"), max_steps=3, resume=True, **common))
    assert again["steps_this_run"] == 0  # a finished run is reused, not redone
    fresh = train_vae(TrainConfig(out_dir=str(tmp_path / "split"), max_steps=1, overwrite=True, **common))
    assert fresh["steps"] == 1 and not (tmp_path / "split" / "monitor" / "step_000003.png").exists()


# ---------------------------------------------------------------------------------------------------- DDP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, config_dict: dict, report_dir: str) -> None:
    """One process of a gloo DDP run: records every file it opens for writing (or creates) under out_dir."""
    out_dir = os.path.realpath(config_dict["out_dir"])
    writes: list[str] = []

    def audit(event, args):
        try:
            if event == "open" and args[0] is not None and not isinstance(args[0], int):
                path, mode, flags = args
                writing = any(c in mode for c in "wax+") if mode else bool(flags & (os.O_WRONLY | os.O_RDWR))
                if writing:
                    writes.append(os.path.realpath(os.fsdecode(path)))
            elif event in ("os.rename", "os.replace", "os.mkdir"):
                writes.append(os.path.realpath(os.fsdecode(args[1] if event != "os.mkdir" else args[0])))
        except Exception:  # an audit hook must never break the code it watches
            pass

    sys.addaudithook(audit)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    summary = train_vae(TrainConfig(**config_dict))
    mine = sorted({w for w in writes if w == out_dir or w.startswith(out_dir + os.sep)})
    report = {"summary": {k: summary[k] for k in ("steps", "world_size", "train_images")}, "writes": mine}
    Path(report_dir, f"rank{rank}.json").write_text(json.dumps(report))


@pytest.mark.timeout(240)
def test_two_process_gloo_ddp_run_completes_and_only_rank_zero_writes(celeba, tmp_path, monkeypatch):
    import torch.multiprocessing as mp

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two processes on two cores: one thread each
    out_dir = tmp_path / "ddp_run"
    config = dict(data_root=str(celeba["root"]), out_dir=str(out_dir), max_steps=3, gamma=0.0, **TINY)
    reports = tmp_path / "reports"
    reports.mkdir()
    mp.start_processes(_ddp_worker, args=(2, _free_port(), config, str(reports)), nprocs=2, join=True,
                       start_method="spawn")
    rank0 = json.loads((reports / "rank0.json").read_text())
    rank1 = json.loads((reports / "rank1.json").read_text())
    for report in (rank0, rank1):
        assert report["summary"]["steps"] == 3 and report["summary"]["world_size"] == 2
    assert rank1["writes"] == []  # rank 1 wrote nothing in the run folder
    written = {Path(p).name for p in rank0["writes"]}
    assert {"checkpoint.pt", "config.json", "metrics.json", "monitor.gif"} <= written
    checkpoint = torch.load(out_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert checkpoint["step"] == 3 and len(checkpoint["rng"]) == 2  # each rank's RNG, for an exact resume
    assert len(checkpoint["history"]) == 3 and all(math.isfinite(r["loss"]) for r in checkpoint["history"])


# ------------------------------------------------------------------------------------------- recipe options
@pytest.mark.parametrize("option", [
    {},
    {"beta": 0.05},
    {"centre_weight": 4.0},
    pytest.param({"amp": True}, marks=pytest.mark.skipif(
        not __import__("vae.train", fromlist=["cpu_has_bf16"]).cpu_has_bf16(),
        reason="this CPU has no native bfloat16, so amp runs in float32 here")),
])
def test_a_few_steps_lower_the_loss_for_each_recipe_option(celeba, tmp_path, option):
    """Same data and seed, 12 steps of 8 images: the training loss falls for every option."""
    config = TrainConfig(data_root=str(celeba["root"]), out_dir=str(tmp_path / "run"), max_steps=12, gamma=0.0,
                         seed=1, **{**TINY, "amp": False, "eval_every": 100, "monitor_every": 100, **option})
    history = train_vae(config)["history"]
    first, last = np.mean([h["recon"] for h in history[:3]]), np.mean([h["recon"] for h in history[-3:]])
    assert last < 0.9 * first, (first, last)
    assert all(math.isfinite(h["loss"]) for h in history)


def test_centre_weights_average_one_and_weight_the_face_more():
    weights = losses.centre_weight_map(32, 4.0)
    assert weights.shape == (1, 1, 32, 32) and float(weights.mean()) == pytest.approx(1.0)
    assert float(weights[0, 0, 16, 16]) > 3 * float(weights[0, 0, 0, 0])
    assert torch.equal(losses.centre_weight_map(32, 1.0), torch.ones(1, 1, 32, 32))
    x, x_hat = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    by_hand = (weights * (x_hat - x) ** 2).sum() / 2
    assert float(losses.reconstruction_loss(x_hat, x, "mse", weights)) == pytest.approx(float(by_hand), rel=1e-5)


def test_gamma_none_means_no_perceptual_loss_without_imagenet_weights(celeba, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    summary = train_vae(TrainConfig(data_root=str(celeba["root"]), out_dir=str(tmp_path / "run"), max_steps=1, **TINY))
    assert summary["perceptual_pretrained"] is None  # VGG never built
    assert json.loads((tmp_path / "run" / "config.json").read_text())["gamma"] == 0.0  # resolved and recorded


# ------------------------------------------------------------------------------------------ latent density
def test_density_samples_are_seeded_finite_images_near_the_training_latents(celeba):
    from vae.quality import density_samples, fit_latent_density

    torch.manual_seed(0)
    model = ConvVAE(latent_dim=8, image_size=32, base_channels=8).eval()
    images = open_image_dataset(celeba["root"], "all", 32)
    batch = torch.stack([images[i] for i in range(len(images))])
    density = fit_latent_density(model, batch, seed=0)
    a, b, c = (density_samples(model, density, 6, seed) for seed in (1, 1, 2))
    assert a.shape == (6, 3, 32, 32) and torch.isfinite(a).all() and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    with torch.no_grad():
        mu = model.encode(batch)[0]
    z, _ = density.sample(500)
    # the density sits where the training latents are: its mean is theirs, its spread about theirs
    assert np.allclose(z.mean(0), mu.mean(0).numpy(), atol=0.5 * float(mu.std()))
    assert 0.5 < z.std() / float(mu.std()) < 2.0
