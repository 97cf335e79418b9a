"""Disentanglement metrics (latent.disentangle) on the sanity cases disentanglement_lib uses, and a tiny β-VAE run."""
import numpy as np
import pytest
import torch

from latent.disentangle import (BetaConfig, dci, factor_vae_score, kl_per_dimension, mig, score_representation,
                             train_beta_vae)


@pytest.fixture(scope="module")
def codes():
    rng = np.random.default_rng(0)
    return np.stack([rng.integers(0, n, 3000) for n in (3, 4, 5, 2)], axis=1)


def test_a_representation_that_is_the_factors_scores_high(codes):
    latents = codes.astype(float) + np.random.default_rng(1).normal(0, 0.01, codes.shape)
    assert mig(latents, codes)["mig"] > 0.9
    assert factor_vae_score(latents, codes)["score"] == 1.0
    assert dci(latents, codes)["disentanglement"] > 0.9


def test_a_constant_representation_scores_zero(codes):
    constant = np.zeros((len(codes), 6))
    assert mig(constant, codes)["mig"] == 0.0
    assert factor_vae_score(constant, codes)["score"] == 0.0


def test_a_duplicated_latent_drives_its_mig_term_to_zero(codes):
    latents = np.concatenate([codes, codes[:, :1]], axis=1).astype(float)
    per_factor = mig(latents, codes)["per_factor"]
    assert per_factor[0] < 0.02 and min(per_factor[1:]) > 0.9


def test_random_noise_scores_near_chance(codes):
    noise = np.random.default_rng(2).normal(size=(len(codes), 8))
    assert mig(noise, codes)["mig"] < 0.05
    assert factor_vae_score(noise, codes)["score"] < 0.5  # chance is 1/4 with four factors
    mixed = codes @ np.random.default_rng(3).normal(size=(4, 4))  # every dimension a mixture of all factors
    assert score_representation(mixed, codes, with_dci=False)["mig"] < mig(codes.astype(float), codes)["mig"] - 0.3


def test_a_beta_vae_trains_and_reports_its_kl_per_dimension():
    images = torch.rand(64, 3, 32, 32)
    model, history = train_beta_vae(images, BetaConfig(beta=4.0, steps=3, batch_size=16, latent_dim=4), progress=False)
    assert len(history["recon"]) == 3 and all(np.isfinite(history["kl"]))
    mu, logvar = model.encode(images[:8])
    kl = kl_per_dimension(mu.detach().numpy(), logvar.detach().numpy())
    assert kl.shape == (4,) and (kl >= 0).all()
    again, _ = train_beta_vae(images, BetaConfig(beta=4.0, steps=3, batch_size=16, latent_dim=4), progress=False)
    assert all(torch.equal(p, q) for p, q in zip(model.state_dict().values(), again.state_dict().values()))


def test_cli_beta_sweep_writes_scores_and_a_labelled_traversal(tmp_path, capsys):
    import json

    from latent.__main__ import main

    code = main(["beta-sweep", "--betas", "1", "4", "--seeds", "0", "--steps", "2", "--train-images", "64",
                 "--pool-images", "128", "--size", "32", "--no-dci", "--workers", "1", "--out", str(tmp_path)])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(summary["by_beta"]) == {"1", "4"} and 0 <= summary["by_beta"]["4"]["mig"]["mean"] <= 1
    record = json.loads((tmp_path / "sweep.json").read_text())
    assert len(record["runs"]) == 2 and len(record["runs"][0]["dimension_labels"]) == 10
    assert (tmp_path / "traversal_beta4.png").is_file()


def test_shuffled_batches_are_seeded_full_and_reshuffle_per_epoch():
    from latent.disentangle import shuffled_batches

    batches = [b.tolist() for b in shuffled_batches(10, 4, 5, seed=3)]
    assert batches == [b.tolist() for b in shuffled_batches(10, 4, 5, seed=3)]
    assert all(len(b) == 4 for b in batches) and len(batches) == 5
    assert len(set(batches[0] + batches[1])) == 8  # no example twice within an epoch
    assert batches[2:4] != batches[0:2]  # the second epoch is a fresh permutation
