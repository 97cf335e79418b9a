"""The DCGAN baseline (generative/gan.py): shapes, one step updates both networks, checkpoint -> resume is exact.

Runs on the generated CelebA-layout fixture with tiny networks at 32 px (width 8) and a few steps.
"""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from tests.celeba_fixture import write_celeba_fixture
from generative.gan import (Discriminator, GanConfig, Generator, RunExistsError, discriminator_loss, gan_step, load_gan,
                     train_gan)

TINY = {"image_size": 32, "latent_dim": 16, "g_width": 8, "d_width": 8, "batch_size": 8, "device": "cpu",
        "monitor_every": 2, "checkpoint_every": 2, "num_eval": 8}


@pytest.fixture(scope="module")
def celeba(tmp_path_factory):
    return write_celeba_fixture(tmp_path_factory.mktemp("celeba"), n_identities=4, per_identity=6)


@pytest.mark.parametrize("size", [32, 64])
def test_networks_map_latents_to_images_and_images_to_one_logit(size):
    torch.manual_seed(0)
    generator, discriminator = Generator(16, size, 8), Discriminator(size, 8)
    fake = generator(torch.randn(3, 16))
    assert fake.shape == (3, 3, size, size) and fake.min() >= -1 and fake.max() <= 1
    assert discriminator(fake).shape == (3,)
    running = {k: v.clone() for k, v in generator.state_dict().items()}
    samples = generator.sample(4, generator=torch.Generator().manual_seed(1))
    assert samples.shape == (4, 3, size, size) and 0 <= float(samples.min()) and float(samples.max()) <= 1
    assert all(torch.equal(v, running[k]) for k, v in generator.state_dict().items())  # running stats untouched
    z = torch.randn(4, 16)
    generator.train()
    torch.testing.assert_close(generator.sample(z=z), generator(z).add(1).div(2).clamp(0, 1))  # = train mode


def test_dcgan_init_draws_conv_weights_from_n_0_002():
    weights = torch.cat([m.weight.detach().flatten() for m in Generator(100, 64, 32).modules()
                         if isinstance(m, torch.nn.ConvTranspose2d)])
    assert abs(float(weights.mean())) < 1e-3 and float(weights.std()) == pytest.approx(0.02, rel=0.05)


def test_losses_prefer_the_right_answer():
    confident = torch.full((4,), 5.0)
    assert discriminator_loss(confident, -confident) < discriminator_loss(-confident, confident)
    assert discriminator_loss(confident, -confident, "hinge") == 0  # both margins met


@pytest.mark.parametrize("kind", ["bce", "hinge"])
def test_one_gan_step_updates_both_networks(kind):
    torch.manual_seed(0)
    generator, discriminator = Generator(16, 32, 8), Discriminator(32, 8)
    opt_g = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    before_g = [p.detach().clone() for p in generator.parameters()]
    before_d = [p.detach().clone() for p in discriminator.parameters()]
    out = gan_step(generator, discriminator, opt_g, opt_d, torch.rand(4, 3, 32, 32), torch.randn(4, 16), kind)
    assert all(torch.isfinite(torch.tensor(v)) for v in out.values()) and 0 < out["d_real"] < 1
    assert all(not torch.equal(p, q) for p, q in zip(generator.parameters(), before_g))
    assert all(not torch.equal(p, q) for p, q in zip(discriminator.parameters(), before_d))


def test_checkpoint_then_resume_gives_the_same_next_losses(celeba, tmp_path):
    common = dict(data_root=str(celeba["root"]), seed=3, **TINY)
    straight = train_gan(GanConfig(out_dir=str(tmp_path / "straight"), max_steps=3, **common))
    first = train_gan(GanConfig(out_dir=str(tmp_path / "split"), max_steps=2, **common))
    assert first["steps"] == 2 and (tmp_path / "split" / "checkpoint.pt").is_file()
    with pytest.raises(RunExistsError, match="resume"):
        train_gan(GanConfig(out_dir=str(tmp_path / "split"), max_steps=3, **common))
    resumed = train_gan(GanConfig(out_dir=str(tmp_path / "split"), max_steps=3, resume=True, **common))
    assert resumed["steps"] == 3 and resumed["steps_this_run"] == 1 and resumed["redone_because"] is None
    for key in ("loss_d", "loss_g"):
        a, b = [row[key] for row in straight["history"]], [row[key] for row in resumed["history"]]
        assert b[:2] == a[:2]  # the history came back from the checkpoint
        assert b[2] == pytest.approx(a[2], rel=1e-6, abs=1e-6)  # the next losses
        assert a[1] != a[2]
    g_straight, _ = load_gan(straight["checkpoint"], device="cpu")
    g_resumed, saved = load_gan(tmp_path / "split", device="cpu")
    for (name, p), q in zip(g_straight.state_dict().items(), g_resumed.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    assert saved["step"] == 3 and saved["kind"] == "gan" and saved["code_version"]
    assert set(saved) >= {"generator", "discriminator", "optimizer_g", "optimizer_d", "config", "rng", "history"}
    assert json.loads((tmp_path / "split" / "config.json").read_text())["max_steps"] == 3
    frames = sorted(p.name for p in (tmp_path / "split" / "monitor").glob("step_*.png"))
    assert frames == ["step_000002.png", "step_000003.png"]
    with Image.open(tmp_path / "split" / "monitor.gif") as gif:
        assert gif.n_frames == 2 and gif.info["loop"] == 0
    again = train_gan(GanConfig(out_dir=str(tmp_path / "split"), max_steps=3, resume=True, **common))
    assert again["steps_this_run"] == 0 and again["reused"]


def test_cli_trains_and_prints_a_summary(celeba, tmp_path, capsys):
    from generative.__main__ import main

    code = main(["gan", "--src", str(celeba["root"]), "--out", str(tmp_path / "cli"), "--max-steps", "1",
                 "--set", "image_size=32", "--set", "batch_size=4", "--set", "device=cpu", "--set", "g_width=8",
                 "--set", "d_width=8", "--set", "latent_dim=8"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 1 and summary["monitor_gif"].endswith("monitor.gif")
    assert main(["gan", "--src", str(celeba["root"]), "--out", str(tmp_path / "x"), "--set", "nope=1"]) == 2
