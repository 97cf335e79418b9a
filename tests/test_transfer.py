"""Conditional transfer (latent.transfer): MMD sanity, every pair of conditions, conditions change the decoding."""
import numpy as np
import torch

from vae.model import ConvVAE
from latent.transfer import (AttributeJudge, ConditionalVAE, TransferConfig, condition_ids, pairwise_mmd, rbf_mmd,
                          edit_region_mse, reconstruction_ceiling, soften, train_transfer_model, transfer_images)


def test_mmd_of_a_sample_with_itself_is_zero_and_grows_with_a_shift():
    x = torch.randn(40, 16, generator=torch.Generator().manual_seed(0))
    assert float(rbf_mmd(x, x)) < 1e-6
    small, large = float(rbf_mmd(x, x + 0.5)), float(rbf_mmd(x, x + 2.0))
    assert 0 < small < large


def test_every_pair_of_present_conditions_enters_the_mmd():
    h = torch.randn(12, 8)
    c = torch.tensor([[0, 0], [1, 0], [0, 1]] * 4)  # three conditions -> three pairs
    total, pairs = pairwise_mmd(h, condition_ids(c))
    assert sorted(pairs) == [(0, 1), (0, 2), (1, 2)]
    by_hand = sum(rbf_mmd(h[condition_ids(c) == a], h[condition_ids(c) == b]) for a, b in pairs)
    assert torch.allclose(total, by_hand)


def test_the_cvae_decodes_a_different_image_for_a_different_condition():
    torch.manual_seed(0)
    model = ConditionalVAE(2, latent_dim=8, image_size=32, base_channels=8).eval()
    z = torch.randn(3, 8)
    a = model.decode(z, torch.tensor([[0.0, 0.0]] * 3))
    b = model.decode(z, torch.tensor([[1.0, 0.0]] * 3))
    assert a.shape == (3, 3, 32, 32) and (a - b).abs().max() > 1e-4


def test_each_method_trains_and_transfers_and_only_trvae_pays_the_mmd():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(96, 3, 32, 32, generator=g)
    c = torch.tensor([[0, 0], [1, 0], [0, 1]] * 32)
    images[c[:, 0] == 1] *= 0.5  # the condition is visible in the pixels
    vectors = torch.zeros(2, 8)
    for method in ("vector", "cvae", "trvae"):
        config = TransferConfig(method=method, steps=4, batch_size=32, latent_dim=8, base_channels=8)
        model, history = train_transfer_model(images, c, config, progress=False)
        assert len(history["recon"]) == 4
        if method == "trvae":
            assert min(history["mmd"]) > 0
        else:
            assert max(history["mmd"]) == 0
        out = transfer_images(method, model, images[:4], c[:4], 1 - c[:4], vectors)
        assert out.shape == (4, 3, 32, 32) and torch.isfinite(out).all()


def test_soften_keeps_shape_and_range_is_seeded_and_sometimes_blurs():
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    a, b = soften(x, torch.Generator().manual_seed(3)), soften(x, torch.Generator().manual_seed(3))
    assert a.shape == x.shape and float(a.min()) >= 0 and float(a.max()) <= 1 and torch.equal(a, b)

    def roughness(t):
        return float((t[..., 1:] - t[..., :-1]).abs().mean())

    looks = [roughness(soften(x, torch.Generator().manual_seed(s))) for s in range(12)]
    assert min(looks) < 0.5 * roughness(x)  # a blurred or halved look (pixel noise alone adds roughness)


def test_edit_mse_counts_only_the_pixels_the_re_render_changes():
    original = torch.zeros(3, 3, 8, 8)
    truth = original.clone()
    truth[:2, :, 2:4, 2:4] = 1.0  # images 0 and 1: a 2x2 patch flips; image 2: the flip changes nothing
    out = truth.clone()
    out[0, :, 2:4, 2:4] = 0.5  # image 0: half wrong inside the edit
    out[:, :, 6:, 6:] = 0.3  # every image: an error outside the edit, which must not count
    edit = edit_region_mse(out, truth, original)
    assert abs(edit[0] - 0.25) < 1e-6 and edit[1] == 0 and np.isnan(edit[2])


def test_the_ceiling_of_doing_nothing_is_the_judges_rate_on_the_re_render():
    torch.manual_seed(0)
    judge = AttributeJudge(2).eval()
    truth = torch.rand(16, 3, 32, 32)
    target = torch.tensor([[0, 1], [1, 0]] * 8)
    expected = (judge.predict(truth)[:, 1] == target[:, 1]).numpy()
    assert (reconstruction_ceiling("none", None, truth, target, judge, 1) == expected).all()
    model = ConditionalVAE(2, latent_dim=8, image_size=32, base_channels=8).eval()
    ceiling = reconstruction_ceiling("cvae", model, truth, target, judge, 0)
    rebuilt = model.decode(model.encode(truth, target.float())[0], target.float())
    assert ceiling.shape == (16,) and (ceiling == (judge.predict(rebuilt)[:, 0] == target[:, 0]).numpy()).all()
    plain = ConvVAE(latent_dim=8, image_size=32, base_channels=8).eval()
    vectors = torch.randn(2, 8)  # a reconstruction moves by (target - target) @ vectors = 0
    expected_plain = (judge.predict(plain.decode(plain.encode(truth)[0]))[:, 1] == target[:, 1]).numpy()
    assert (reconstruction_ceiling("vector", plain, truth, target, judge, 1, vectors) == expected_plain).all()


def test_cli_transfer_on_synthetic_portraits_and_on_celeba_attributes(tmp_path, capsys):
    import json

    from celeba_fixture import write_celeba_fixture
    from latent.__main__ import main

    code = main(["transfer", "--out", str(tmp_path / "synthetic"), "--images", "120", "--steps", "2",
                 "--test-images", "8", "--judge-images", "40", "--judge-steps", "5", "--size", "32", "--no-identity", "--workers", "1"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["data"] == "synthetic" and set(summary["by_method"]) == {"none", "vector", "cvae", "trvae"}
    assert all(0 <= row["ceiling"] <= 1 for row in summary["by_method"].values())
    assert (tmp_path / "synthetic" / "smile_slide.gif").is_file()

    root = tmp_path / "celeba"
    write_celeba_fixture(root, n_identities=4, per_identity=6)
    code = main(["transfer", "--src", str(root), "--attributes", "Smiling", "--images", "16", "--steps", "2",
                 "--out", str(tmp_path / "real")])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["data"] == "celeba" and (tmp_path / "real" / "trvae_Smiling.png").is_file()
    assert main(["transfer", "--src", str(root), "--attributes", "Not_An_Attribute", "--out", str(tmp_path / "x")]) == 2
