"""Stage 3's story half: morph GIFs, figures, finding the identity, fine-tuning, the CLI and the notebook.

Everything runs on a generated CelebA-layout fixture with a tiny VAE (32 px, 8 latent dims, 8 base channels).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.files import write_csv_atomic
from common.images import SHEET_PADDING, caption_band
from identity import find as identity
from tests.celeba_fixture import write_celeba_fixture
from vae import figures, morph
from vae.celeba import CelebA
from vae.model import ConvVAE

ROOT = Path(__file__).resolve().parents[1]
TARGET = 102  # the fixture's identities are 101..104; scores favour this one


def tiny_model(seed: int = 0) -> ConvVAE:
    torch.manual_seed(seed)
    return ConvVAE(latent_dim=8, image_size=32, base_channels=8).eval()


def write_scores(path: Path, fixture: dict, target: int, seed: int = 0) -> Path:
    """A stage-2-style scores.csv: the target's images score high except its last photo, which the classifier
    misses (lowest score of all); everyone else scores low, with noise."""
    rng = np.random.default_rng(seed)
    scored = []
    target_files = [f for f in fixture["files"] if fixture["identities"][f] == target]
    for f in fixture["files"]:
        if f == target_files[-1]:
            scored.append((f, 0.01))
            continue
        high = fixture["identities"][f] == target
        scored.append((f, float((0.8 if high else 0.2) + rng.uniform(-0.1, 0.1))))
    scored.sort(key=lambda item: -item[1])
    rows = [{"rank": i + 1, "file": f, "score": f"{s:.4f}"} for i, (f, s) in enumerate(scored)]
    return write_csv_atomic(path, rows, ["rank", "file", "score"])


@pytest.fixture(scope="module")
def celeba(tmp_path_factory):
    return write_celeba_fixture(tmp_path_factory.mktemp("celeba"), n_identities=4, per_identity=6)


@pytest.fixture(scope="module")
def faces(celeba):
    dataset = CelebA(celeba["root"], split="all", image_size=32)
    return torch.stack([dataset[i] for i in range(4)])


# ------------------------------------------------------------------------------------------------- morph
@pytest.mark.parametrize("method", ["linear", "slerp"])
def test_interpolation_endpoints_decode_to_reconstructions(faces, method):
    model = tiny_model()
    steps = 3
    mu = morph.encode_means(model, faces)
    path = morph.interpolate_path(mu, steps_between=steps, method=method, closed=True)
    assert path.shape == (len(faces) * (steps + 1), 8)
    frames = morph.decode_latents(model, path)
    recon = figures.reconstruct(model, faces)
    for i in range(len(faces)):
        torch.testing.assert_close(frames[i * (steps + 1)], recon[i], atol=1e-5, rtol=0)
    # In-between frames really are in between: different from both neighbouring faces.
    assert not torch.allclose(path[1], mu[0]) and not torch.allclose(path[1], mu[1])
    open_path = morph.interpolate_path(mu, steps_between=steps, method=method, closed=False)
    assert len(open_path) == (len(faces) - 1) * (steps + 1) + 1
    torch.testing.assert_close(open_path[-1], mu[-1])


def test_lerp_midpoint_and_slerp_keeps_norm():
    z0, z1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    torch.testing.assert_close(morph.lerp(z0, z1, 0.5), torch.tensor([0.5, 0.5]))
    mid = morph.slerp(z0, z1, 0.5)
    assert mid.norm().item() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(mid, torch.tensor([2**-0.5, 2**-0.5]))
    with pytest.raises(ValueError):
        morph.interpolate_path(torch.zeros(1, 2))


def test_morph_gif_frame_count_and_loop(faces, tmp_path):
    model = tiny_model()
    info = morph.morph_gif(model, faces[:3], tmp_path / "morph.gif", steps_between=2, fps=10, size=48)
    assert info["n_decoded"] == 3 * 3
    with Image.open(info["path"]) as gif:
        assert gif.n_frames == info["n_frames"] == 9
        assert gif.info["loop"] == 0
        assert gif.size == (48, 48)
        assert gif.info["duration"] == 100
    assert info["bytes"] == os.path.getsize(info["path"]) < 2 * 1024 * 1024


def test_side_by_side_gif_uses_both_models(faces, tmp_path):
    before, after = tiny_model(0), tiny_model(1)
    info = morph.side_by_side_morph_gif(before, after, faces[:2], tmp_path / "sbs.gif", steps_between=1, size=32)
    with Image.open(info["path"]) as gif:
        assert gif.n_frames == 4 and gif.info["loop"] == 0
        frame = np.asarray(gif.convert("RGB"))
    assert frame.shape[1] == 2 * 32 + figures.PADDING and frame.shape[0] == 32 + figures.LABEL_HEIGHT
    left, right = frame[figures.LABEL_HEIGHT:, :32].astype(int), frame[figures.LABEL_HEIGHT:, -32:].astype(int)
    assert np.abs(left - right).mean() > 1  # two different decoders → two different halves


# ----------------------------------------------------------------------------------------------- figures
def test_sample_grid_size_and_determinism(tmp_path):
    model = tiny_model()
    info = figures.sample_grid(model, tmp_path / "a.png", n=10, seed=3)
    figures.sample_grid(model, tmp_path / "b.png", n=10, seed=3)
    figures.sample_grid(model, tmp_path / "c.png", n=10, seed=4)
    expected = 10 * 32 + 9 * figures.PADDING
    with Image.open(info["path"]) as a, Image.open(tmp_path / "b.png") as b, Image.open(tmp_path / "c.png") as c:
        assert a.size == (expected, expected) == (info["width"], info["height"])
        assert np.array_equal(np.asarray(a), np.asarray(b))
        assert not np.array_equal(np.asarray(a), np.asarray(c))
    assert info["n_images"] == 100


def test_reconstruction_traversal_and_comparison_figures(faces, tmp_path):
    model, other = tiny_model(0), tiny_model(1)
    recon = figures.reconstruction_figure(model, faces, tmp_path / "recon.png")
    assert recon["n_images"] == 4 and 0 < recon["mse"] < 1 and Path(recon["path"]).is_file()
    traversal = figures.latent_traversal_figure(model, faces, tmp_path / "trav.png", n_dims=3, n_steps=5)
    variances = figures.encode_means(model, faces).var(dim=0)
    assert traversal["dims"] == torch.argsort(variances, descending=True)[:3].tolist()
    with Image.open(traversal["path"]) as image:
        assert image.height == figures.LABEL_HEIGHT + 3 * 32 + 2 * figures.PADDING
    comparison = figures.loss_comparison_figure(model, other, faces, tmp_path / "cmp.png")
    assert set(comparison["mse"]) == {"pixel loss", "perceptual"}
    with Image.open(comparison["path"]) as image:
        assert image.height == 5 * 32 + 4 * figures.PADDING  # original, 2 reconstructions, 2 sample rows


def test_sharpness_ranks_blur_below_the_original(faces):
    blurred = torch.nn.functional.avg_pool2d(faces, 5, stride=1, padding=2)
    assert figures.sharpness(blurred) < 0.5 * figures.sharpness(faces)


def test_attribute_vector_is_mean_difference(celeba, tmp_path):
    model = tiny_model()
    dataset = CelebA(celeba["root"], split="all", image_size=32)
    delta = figures.attribute_vector(model, dataset, "Smiling")
    column = dataset.attributes.index("Smiling")
    smiling = dataset.attribute_matrix[:, column] > 0
    assert smiling.any() and (~smiling).any()
    mu = figures.encode_means(model, torch.stack([dataset[i] for i in range(len(dataset))]))
    expected = mu[torch.from_numpy(smiling)].mean(0) - mu[torch.from_numpy(~smiling)].mean(0)
    torch.testing.assert_close(delta, expected, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="unknown attribute"):
        figures.attribute_vector(model, dataset, "Grinning")
    info = figures.attribute_figure(model, dataset[0][None], delta, tmp_path / "smile.png", alphas=(-1, 0, 1),
                                    attribute="Smiling")
    assert info["n_faces"] == 1 and info["alphas"] == [-1.0, 0.0, 1.0]
    with Image.open(info["path"]) as image:  # original + one column per alpha
        assert image.size == (4 * 32 + 3 * figures.PADDING, figures.LABEL_HEIGHT + 32)


# ---------------------------------------------------------------------------------------------- identity
def test_expand_identity_returns_exactly_that_identity(celeba):
    for person in (101, TARGET):
        expected = sorted(f for f, i in celeba["identities"].items() if i == person)
        assert identity.expand_identity(celeba["root"], person) == expected
    with pytest.raises(ValueError, match="no images"):
        identity.expand_identity(celeba["root"], 999)


def test_pick_identity_majority_vote_tie_break_and_confirm():
    ids = {"a.jpg": 1, "b.jpg": 1, "c.jpg": 2, "d.jpg": 2, "e.jpg": 3, "f.jpg": 3, "g.jpg": 3}
    rows = lambda pairs: [{"file": f, "score": s} for f, s in pairs]  # noqa: E731
    # Identity 3 has most votes in the top 5 although identity 1 holds the single best score.
    scores = rows([("a.jpg", 0.99), ("e.jpg", 0.9), ("f.jpg", 0.8), ("g.jpg", 0.7), ("c.jpg", 0.6), ("b.jpg", 0.1)])
    assert identity.pick_identity(scores, ids, k=5) == 3
    # k=3: identities 1 and 3 would tie... they do not (1 vote vs 2); k=2: one vote each -> larger summed score.
    assert identity.pick_identity(scores, ids, k=2) == 1
    tie = rows([("c.jpg", 0.9), ("a.jpg", 0.8), ("d.jpg", 0.3), ("b.jpg", 0.5)])  # 2 votes each: 1.2 vs 1.3
    assert identity.pick_identity(tie, ids, k=4) == 1
    votes = identity.identity_votes(tie, ids, k=4)
    assert [(v["identity"], v["votes"]) for v in votes] == [(1, 2), (2, 2)]
    assert votes[0]["summed_score"] == pytest.approx(1.3)
    assert identity.pick_identity(scores, ids, k=5, confirm=2) == 2
    with pytest.raises(ValueError):
        identity.pick_identity(scores, ids, k=5, confirm=42)


def test_precision_and_recall_on_a_hand_made_case():
    ids = {f"{n}.jpg": (7 if n < 4 else 8) for n in range(10)}  # identity 7 owns 0..3 (4 images)
    order = ["0.jpg", "5.jpg", "1.jpg", "6.jpg", "2.jpg", "7.jpg", "3.jpg", "8.jpg", "9.jpg", "4.jpg"]
    scores = [{"file": f, "score": 1.0 - i / 10} for i, f in enumerate(order)]
    assert identity.precision_at_k(scores, ids, 7, k=4) == pytest.approx(2 / 4)
    assert identity.recall_at_k(scores, ids, 7, k=4) == pytest.approx(2 / 4)
    assert identity.precision_at_k(scores, ids, 7, k=7) == pytest.approx(4 / 7)
    assert identity.recall_at_k(scores, ids, 7, k=7) == pytest.approx(4 / 4)
    assert identity.expansion_recall(["0.jpg", "1.jpg", "2.jpg"], ids, 7) == pytest.approx(3 / 4)
    assert identity.expansion_precision(["0.jpg", "1.jpg", "5.jpg"], ids, 7) == pytest.approx(2 / 3)


def test_find_identity_on_fixture_writes_sheet_and_metrics(celeba, tmp_path):
    scores_csv = write_scores(tmp_path / "scores.csv", celeba, TARGET)
    world = tmp_path / "world.json"
    world.write_text(json.dumps({"seed": 0, "celeba": {"target_identity": TARGET}}))
    assert identity.read_truth_identity(world) == TARGET
    assert identity.read_truth_identity(tmp_path / "absent.json") is None
    report = identity.find_identity(scores_csv, celeba["root"], tmp_path / "out", k=6, truth_identity=TARGET)
    assert report["identity"] == TARGET and report["correct"] and not report["confirmed"]
    assert report["precision_at_k"] == pytest.approx(5 / 6)  # the planted low-scoring photo is ranked out
    assert report["recall_at_k"] == pytest.approx(5 / 6)
    assert report["expansion_recall"] == 1.0 and report["n_expanded"] == 6
    with Image.open(report["candidates_png"]) as sheet:
        assert sheet.size == (6 * (96 + 2 * SHEET_PADDING), 96 + 2 * SHEET_PADDING + caption_band(1))  # 6 in a row
    saved = json.loads((tmp_path / "out" / "identity.json").read_text())
    assert saved["identity"] == TARGET
    with pytest.raises(FileNotFoundError, match="stage 2"):
        identity.read_scores(tmp_path / "missing.csv")


# ------------------------------------------------------------------------------------------ fine-tuning
TINY = {"image_size": 32, "latent_dim": 8, "base_channels": 8, "batch_size": 8, "gamma": 0.0, "monitor_every": 100,
        "device": "cpu"}


@pytest.fixture(scope="module")
def base_run(celeba, tmp_path_factory):
    from vae.train import TrainConfig, train_vae

    out = tmp_path_factory.mktemp("base")
    config = TrainConfig(data_root=str(celeba["root"]), out_dir=str(out), max_steps=2, beta=0.5, **TINY)
    return train_vae(config)


def test_finetune_writes_separate_checkpoint_and_lowers_kl(celeba, base_run, tmp_path):
    from vae import finetune

    base_path = Path(base_run["checkpoint"])
    base_bytes = base_path.read_bytes()
    result = finetune.finetune_on_identity(base_path, celeba["root"], TARGET, tmp_path / "ft", max_steps=2,
                                           device="cpu", n_morph=3, steps_between=1, gif_size=32)
    assert Path(result["checkpoint"]).parent == tmp_path / "ft" and Path(result["checkpoint"]).is_file()
    assert base_path.read_bytes() == base_bytes  # the base checkpoint is only read
    saved = torch.load(result["checkpoint"], map_location="cpu", weights_only=False)
    assert saved["config"]["beta"] == pytest.approx(0.5 * 0.02)
    assert saved["config"]["identities"] == [TARGET] and saved["config"]["split"] == "all"
    assert saved["config"]["init_from"] == str(base_path)
    assert not saved["config"]["hold_out"] and not saved["config"]["hflip"]  # all her photos, as they are
    assert saved["held_out_from"] == "train (not held out)"
    assert json.loads((tmp_path / "ft" / "config.json").read_text())["beta"] == pytest.approx(0.01)
    assert result["n_images"] == 6 and result["steps"] == 2
    before = torch.load(base_path, map_location="cpu", weights_only=False)["model"]
    assert any(not torch.equal(before[k], saved["model"][k]) for k in before)  # training changed the weights
    with Image.open(result["morph_gif"]["path"]) as gif:
        assert gif.n_frames == 3 * 2 and gif.info["loop"] == 0
    assert Path(result["comparison_png"]).is_file()
    with pytest.raises(ValueError, match="own folder"):
        finetune.finetune_config(base_path, celeba["root"], TARGET, base_path.parent)


# ---------------------------------------------------------------------------------------------------- CLI
def run_cli(*argv: str, cwd: Path) -> dict:
    """Run `python -m vae ...` in a subprocess; return its last stdout line parsed as JSON."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-m", "vae", *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_cli_commands_end_with_a_json_line(celeba, base_run, tmp_path, capsys):
    from vae.__main__ import main

    def run_main(*argv: str) -> dict:
        assert main(list(argv)) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    root, checkpoint = str(celeba["root"]), base_run["checkpoint"]
    # One real `python -m vae` process (the entry point itself); the other commands go through main(argv).
    trained = run_cli("train", "--data-root", root, "--out", str(tmp_path / "run"), "--max-steps", "1",
                      *[f"--set={k}={json.dumps(v)}" for k, v in TINY.items()], cwd=tmp_path)
    assert trained["steps"] == 1 and Path(trained["checkpoint"]).is_file()
    sampled = run_main("sample", "--checkpoint", checkpoint, "--out", str(tmp_path / "fig"), "--n", "3",
                       "--data-root", root, "--device", "cpu")
    assert sampled["samples"]["n_images"] == 9 and Path(sampled["reconstructions"]["path"]).is_file()
    morphed = run_main("morph", "--checkpoint", checkpoint, "--src", root, "--out", str(tmp_path / "m.gif"),
                       "--split", "all", "--n-faces", "3", "--steps-between", "2", "--device", "cpu")
    assert morphed["n_decoded"] == 9 and morphed["command"] == "morph"
    scores = write_scores(tmp_path / "scores.csv", celeba, TARGET)
    (tmp_path / "world.json").write_text(json.dumps({"target_identity": TARGET}))
    found = run_main("find-identity", "--scores", str(scores), "--src", root, "--out", str(tmp_path / "id"),
                     "--k", "6", "--world", str(tmp_path / "world.json"))
    assert found["identity"] == TARGET and found["precision_at_k"] == pytest.approx(5 / 6)
    tuned = run_main("finetune", "--checkpoint", checkpoint, "--data-root", root, "--identity-json",
                     str(tmp_path / "id" / "identity.json"), "--out", str(tmp_path / "ft"), "--max-steps", "1",
                     "--device", "cpu", "--set", "batch_size=4")
    assert tuned["identity"] == TARGET and tuned["command"] == "finetune"
    assert json.loads((tmp_path / "ft" / "config.json").read_text())["batch_size"] == 4
    assert main(["finetune", "--checkpoint", checkpoint, "--data-root", root, "--identity", "101", "--out",
                 str(tmp_path / "ft2"), "--set", "bogus_field=1"]) == 2
    assert "unknown TrainConfig" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ notebook
@pytest.mark.slow
def test_notebook_runs_end_to_end_with_smoke_parameters(celeba, tmp_path):
    papermill = pytest.importorskip("papermill", reason="papermill is a dev dependency (requirements-dev.txt)")
    scores = write_scores(tmp_path / "scores.csv", celeba, TARGET)
    (tmp_path / "world.json").write_text(json.dumps({"target_identity": TARGET}))
    out = tmp_path / "out"
    papermill.execute_notebook(
        str(ROOT / "vae" / "03_vae.ipynb"), str(tmp_path / "03_vae.out.ipynb"), cwd=str(ROOT / "vae"),
        kernel_name="python3", progress_bar=False,
        parameters={"CELEBA": str(celeba["root"]), "SCORES": str(scores), "WORLD": str(tmp_path / "world.json"),
                    "OUT": str(out), "RUNS": str(tmp_path / "runs"), "MAX_STEPS": 2, "FINETUNE_STEPS": 1,
                    "TOP_K": 6, "EVAL_IMAGES": 8, "TARGET_FACES": None, "EMBED_CACHE": None,
                    "TRAIN_OVERRIDES": {"image_size": 32, "batch_size": 8, "latent_dim": 8, "base_channels": 8,
                                        "device": "cpu"}},
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["picked_identity"] == summary["truth_identity"] == TARGET and summary["identity_correct"] is True
    assert summary["precision_at_k"] == pytest.approx(5 / 6) and summary["expansion_images"] == 6
    assert summary["train_steps"] == 2 and summary["finetune_steps"] == 1
    assert summary["finetune_beta"] == pytest.approx(0.05 * 0.02)
    assert summary["perceptual_weights"] == "none (pixel loss)"  # offline: no ImageNet VGG19, so gamma = 0
    assert 0 < summary["heldout_mse"] < 1
    assert set(summary["quality"]) == {"heldout_ssim", "face_share_reconstructions", "face_share_samples",
                                       "face_share_samples_prior", "identity_kept_share",
                                       "finetuned_nearest_identity_accuracy", "finetuned_identity_kept_share"}
    assert all(0 <= v <= 1 for v in summary["quality"].values() if v is not None)
    assert set(summary["gif_bytes"]) == {"morph.gif", "before_after_morph.gif"}
    assert all(0 < size < 2 * 1024 * 1024 for size in summary["gif_bytes"].values())
    for name in ("samples.png", "reconstructions.png", "morph.gif", "smile.png", "before_after.png"):
        assert (out / name).is_file(), name
    assert (tmp_path / "runs" / "base" / "checkpoint.pt").is_file()


def test_notebook_stops_early_with_a_clear_message_when_scores_are_missing(celeba, tmp_path):
    papermill = pytest.importorskip("papermill", reason="papermill is a dev dependency (requirements-dev.txt)")
    with pytest.raises(papermill.PapermillExecutionError, match="run notebook 02"):
        papermill.execute_notebook(
            str(ROOT / "vae" / "03_vae.ipynb"), str(tmp_path / "03_vae.out.ipynb"), cwd=str(ROOT / "vae"),
            kernel_name="python3", progress_bar=False,
            parameters={"CELEBA": str(celeba["root"]), "SCORES": str(tmp_path / "absent.csv"),
                        "OUT": str(tmp_path / "out"), "RUNS": str(tmp_path / "runs")})
    assert not (tmp_path / "runs").exists()  # it stopped before training anything


def test_notebook_is_committed_with_one_parameters_cell_short_cells_and_no_errors():
    nbformat = pytest.importorskip("nbformat", reason="nbformat is a dev dependency (requirements-dev.txt)")
    notebook = nbformat.read(str(ROOT / "vae" / "03_vae.ipynb"), as_version=4)
    tagged = [c for c in notebook.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and "MAX_STEPS = " in tagged[0].source
    code = [c for c in notebook.cells if c.cell_type == "code"]
    # the committed copy carries the outputs of a demo run (`make demo`), but never an error
    assert not [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert all(len(c.source.splitlines()) <= 15 for c in code)
