"""Face embeddings for identity search (identity/embed.py) on small synthetic portraits: model loading for
both backends, deterministic dlib descriptors, the on-disk cache, the scorers, a scan that feeds stage 3's
identity vote, verification of a picked identity and the identity-preservation measure."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image, ImageFilter, ImageOps

from classification.second_opinion import evaluate_embedding_scorer, scan_with_embeddings, train_embedding_scorer
from identity import embed
from identity.embed import (
    DLIB_LANDMARKS_FILE,
    DLIB_NETWORK_FILE,
    FACENET_WEIGHTS_FILE,
    IdentityScorer,
    embed_files,
    identity_preservation,
    verify_identity,
)
from common.errors import InputError
from world.generate import make_celeba_haystack, target_identity
from world.portraits import random_identity, random_nuisance, render_portrait

# Where a stage-1 crop (MTCNN box + 15 % margin, squared) sits in a 178x218 aligned portrait; resized to 160 px.
CROP_BOX = (16, 63, 156, 203)
SEED = 3


def face_crop(identity, rng) -> Image.Image:
    """A stage-1-like 160 px face crop of `identity` in fresh photo conditions."""
    return render_portrait(identity, random_nuisance(rng, aligned=True)).crop(CROP_BOX).resize((160, 160))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Stage-1 face folders (the target and two other people, 10 crops each) and a tiny CelebA-format haystack
    with the target planted in it; one embedding cache shared by all tests."""
    base = tmp_path_factory.mktemp("embed")
    rng = np.random.default_rng(SEED)
    target = target_identity(SEED)
    people = {"target": target, "other_a": random_identity(rng), "other_b": random_identity(rng)}
    faces = base / "faces"
    for name, identity in people.items():
        (faces / name).mkdir(parents=True)
        for k in range(10):
            face_crop(identity, rng).save(faces / name / f"{k:02d}.jpg", quality=92)
    (faces / "_rejected").mkdir()
    face_crop(people["other_a"], rng).save(faces / "_rejected" / "x.jpg")  # bookkeeping: must be ignored
    haystack = make_celeba_haystack(base / "celeba", n_identities=5, photos_per_identity=4, seed=SEED,
                                    planted=target, planted_count=8, workers=1, progress=False)
    return {"base": base, "faces": faces, "celeba": base / "celeba", "haystack": haystack,
            "cache": base / "embeddings.sqlite"}


# --------------------------------------------------------------------------------------------- model loading
def test_dlib_models_are_found_without_importing_the_package():
    folder = embed.dlib_model_dir()
    assert (folder / DLIB_LANDMARKS_FILE).is_file() and (folder / DLIB_NETWORK_FILE).is_file()


def test_missing_dlib_model_file_is_a_clear_input_error(tmp_path, monkeypatch):
    with pytest.raises(InputError, match=f"{DLIB_NETWORK_FILE}.*pip install face-recognition-models"):
        embed.dlib_model_file(DLIB_NETWORK_FILE, tmp_path)
    (tmp_path / "a.jpg").write_bytes(b"")
    monkeypatch.setenv("FACE_MODELS_DIR", str(tmp_path))  # the environment variable is honoured too
    with pytest.raises(InputError, match="pip install face-recognition-models"):
        embed_files(tmp_path, ["a.jpg"], workers=1, progress=False)


def test_facenet_weights_missing_then_loaded_from_a_stand_in(tmp_path, monkeypatch, world):
    import torch
    from facenet_pytorch.models.inception_resnet_v1 import InceptionResnetV1

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(InputError, match=f"{FACENET_WEIGHTS_FILE}.*torch cache.*allow_download"):
        embed.load_facenet()
    from common.checkpoints import torch_hub_file

    hub = torch_hub_file(FACENET_WEIGHTS_FILE)  # torch hub's cache is searched too
    hub.parent.mkdir(parents=True)
    hub.write_bytes(b"not a checkpoint")
    assert embed.facenet_weights_file() == hub
    with pytest.raises(InputError, match="unreadable"):
        embed.load_facenet()
    hub.unlink()
    # The real file is a state dict with the 8,631-class VGGFace2 head; facenet-pytorch keeps it in
    # $TORCH_HOME/checkpoints/. A stand-in with the same keys and random values exercises the same load.
    torch.manual_seed(0)
    stand_in = InceptionResnetV1(classify=True, num_classes=8631).state_dict()
    facenet_home = tmp_path / "torch" / "checkpoints"
    facenet_home.mkdir(parents=True)
    torch.save(stand_in, facenet_home / FACENET_WEIGHTS_FILE)
    assert embed.facenet_weights_file() == facenet_home / FACENET_WEIGHTS_FILE
    model = embed.load_facenet()
    assert torch.equal(model.state_dict()["last_linear.weight"], stand_in["last_linear.weight"])
    files = ["target/00.jpg", "target/01.jpg"]
    vectors = embed_files(world["faces"], files, backend="facenet", workers=1, progress=False)
    assert vectors.shape == (2, 512) and np.isfinite(vectors).all()
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    embed.get_embedder.cache_clear()  # do not leave the random stand-in model loaded for later tests


# ------------------------------------------------------------------------------------------------ embeddings
def test_dlib_embedding_is_deterministic_and_flip_tolerant(world):
    crop = Image.open(world["faces"] / "target" / "00.jpg")
    again = embed.embed_images([crop, crop.copy(), ImageOps.mirror(crop)])
    assert again.shape == (3, 128) and np.isfinite(again).all()
    assert np.array_equal(again[0], again[1])
    assert np.linalg.norm(again[0] - again[2]) < embed.DLIB_SAME_PERSON_DISTANCE


def test_cache_hit_costs_no_model_call_and_a_changed_file_is_embedded_again(tmp_path, world, monkeypatch):
    folder = tmp_path / "photos"
    folder.mkdir()
    files = [f"{k}.jpg" for k in range(3)]
    for k, name in enumerate(files):
        Image.open(world["faces"] / "other_a" / f"0{k}.jpg").save(folder / name)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    cache = tmp_path / "cache.sqlite"
    first_stats: dict = {}
    first = embed_files(folder, files + ["broken.jpg"], workers=1, cache=cache, progress=False, stats=first_stats)
    assert first_stats["computed"] == 4 and first_stats["unreadable"] == 1 and first_stats["ok"] == 3
    assert np.isnan(first[3]).all() and np.isfinite(first[:3]).all()
    # a rate over the computing time, which lies inside the call's time
    assert first_stats["images_per_second"] >= 0.99 * first_stats["computed"] / first_stats["seconds"]

    calls = []
    original = embed.DlibEmbedder.embed_image
    monkeypatch.setattr(embed.DlibEmbedder, "embed_image", lambda self, rgb: calls.append(1) or original(self, rgb))
    second_stats: dict = {}
    second = embed_files(folder, files + ["broken.jpg"], workers=1, cache=cache, progress=False, stats=second_stats)
    assert calls == [] and second_stats["computed"] == 0 and second_stats["cached"] == 4
    assert second_stats["images_per_second"] is None  # nothing computed: no rate
    np.testing.assert_array_equal(first, second)

    Image.open(world["faces"] / "other_b" / "05.jpg").save(folder / "1.jpg")  # new content, same name
    os.utime(folder / "1.jpg", ns=(os.stat(folder / "1.jpg").st_atime_ns, os.stat(folder / "1.jpg").st_mtime_ns + 1))
    third_stats: dict = {}
    third = embed_files(folder, files, workers=1, cache=cache, progress=False, stats=third_stats)
    assert len(calls) == 1 and third_stats["computed"] == 1
    np.testing.assert_array_equal(third[[0, 2]], first[[0, 2]])
    assert np.linalg.norm(third[1] - first[1]) > 0.05
    # other settings (another face box) are cached separately
    other_stats: dict = {}
    embed_files(folder, files[:1], workers=1, cache=cache, progress=False, face_box="whole", stats=other_stats)
    assert other_stats["computed"] == 1


def test_worker_processes_give_the_same_embeddings(world):
    files = [f"other_b/{k:02d}.jpg" for k in range(6)]
    in_process = embed_files(world["faces"], files, workers=1, progress=False)
    pooled = embed_files(world["faces"], files, workers=2, chunk_size=3, progress=False)
    np.testing.assert_allclose(pooled, in_process, atol=1e-6)


# --------------------------------------------------------------------------------------------------- scoring
def test_scorer_separates_synthetic_identities_and_reloads(world, tmp_path):
    row = evaluate_embedding_scorer(world["faces"], "target", seed=0, val_fraction=0.2, test_fraction=0.3,
                                    out_dir=tmp_path, cache=world["cache"], workers=1, progress=False)
    for key in ("threshold", "val_f1", "test_accuracy", "test_precision", "test_recall", "test_f1", "test_roc_auc",
                "test_average_precision", "checkpoint", "trainable_parameters", "train_seconds"):
        assert key in row
    assert row["test_roc_auc"] > 0.9 and row["test_average_precision"] > 0.9
    assert {c["method"] for c in row["candidates"]} == {"centroid", "linear"}
    scorer = IdentityScorer.load(row["checkpoint"])
    assert scorer.threshold == pytest.approx(row["threshold"])
    vectors = embed_files(world["faces"], ["target/00.jpg", "other_a/00.jpg"], workers=1, cache=world["cache"],
                          progress=False)
    target_score, other_score = scorer.score(vectors)
    assert target_score > other_score
    with pytest.raises(InputError, match="does not exist"):
        IdentityScorer.load(tmp_path / "missing.json")


@pytest.fixture(scope="module")
def scan(world, tmp_path_factory):
    scorer = train_embedding_scorer(world["faces"], "target", method="linear", cache=world["cache"],
                                          workers=1, progress=False)
    out = tmp_path_factory.mktemp("scan")
    summary = scan_with_embeddings(scorer, world["celeba"], out, cache=world["cache"], workers=2, progress=False)
    return {"scorer": scorer, "out": out, "summary": summary}


def test_scan_scores_feed_find_identity_unchanged(world, scan, tmp_path):
    from identity.find import find_identity

    summary = scan["summary"]
    assert summary["scanned"] == world["haystack"]["images"] == summary["embedded"]
    assert summary["images_per_second"] >= 0.99 * summary["computed"] / summary["seconds"] and summary["computed"]
    truth = world["haystack"]["target_identity"]
    found = find_identity(scan["out"] / "scores.csv", world["celeba"], tmp_path / "identity", k=8,
                          truth_identity=truth)
    assert found["identity"] == truth and found["correct"]
    assert found["precision_at_k"] >= 0.75

    # two-stage: re-rank only the top 10 of a first-stage scores.csv (here: a deliberately poor one)
    from classification.scan import write_ranked_scores

    names = sorted(p.name for p in (world["celeba"] / "img_align_celeba").iterdir())
    first = write_ranked_scores({n: float(k) for k, n in enumerate(names)}, tmp_path / "first" / "scores.csv")
    second = scan_with_embeddings(scan["scorer"], world["celeba"], tmp_path / "second", cache=world["cache"],
                                  workers=1, progress=False, rerank_scores=tmp_path / "first" / "scores.csv",
                                  rerank_top=10, truth_identity=truth)
    assert second["reranked"] == second["scanned"] == 10 == len(first[:10])
    from common.celeba_format import read_identities

    identities = read_identities(world["celeba"])
    top10 = {row["file"] for row in first[:10]}
    expected = sum(identities[n] == truth for n in top10) / sum(i == truth for i in identities.values())
    assert second["first_stage_recall_at_n"] == pytest.approx(expected)
    assert second["computed"] == 0  # all cached by the full scan


def test_verification_confirms_the_target_and_flags_a_wrong_identity(world, scan):
    truth = world["haystack"]["target_identity"]
    from common.celeba_format import read_identities

    wrong = min({i for i in read_identities(world["celeba"]).values() if i != truth})
    right = verify_identity(world["celeba"], truth, world["faces"] / "target", cache=world["cache"], workers=1)
    assert right["verdict"] == "confirmed", right["reason"]
    bad = verify_identity(world["celeba"], wrong, world["faces"] / "target", cache=world["cache"], workers=1)
    assert bad["verdict"] == "uncertain" and "not below" in bad["reason"]
    assert bad["median_distance"] > right["median_distance"]
    with pytest.raises(InputError, match="no photos"):
        verify_identity(world["celeba"], 999_999_999, world["faces"] / "target", workers=1)


def test_identity_preservation_of_blurred_and_swapped_reconstructions(world):
    from common.celeba_format import read_identities

    identities = read_identities(world["celeba"])
    truth = world["haystack"]["target_identity"]
    images = world["celeba"] / "img_align_celeba"

    def vae_frame(name):  # vae.celeba's framing: the 148 px centre square of the aligned photo, at 64 px
        return Image.open(images / name).convert("RGB").crop((15, 35, 163, 183)).resize((64, 64), Image.BILINEAR)

    gallery_files = sorted(identities)
    vectors = embed_files(images, gallery_files, workers=1, cache=world["cache"], progress=False)
    gallery = {i: vectors[[k for k, n in enumerate(gallery_files) if identities[n] == i]]
               for i in set(identities.values())}
    photos = [vae_frame(n) for n in gallery_files if identities[n] == truth][:4]
    strangers = [vae_frame(n) for n in gallery_files if identities[n] != truth][:4]
    blurred = [p.filter(ImageFilter.GaussianBlur(0.6)) for p in photos]
    kept = identity_preservation(photos, [np.asarray(b) for b in blurred], gallery, truth)
    swapped = identity_preservation(photos, strangers, gallery, truth)
    assert kept["n"] == kept["n_embedded"] == 4
    assert kept["mean_distance"] < swapped["mean_distance"]
    assert kept["nearest_identity_accuracy"] >= 0.75 > swapped["nearest_identity_accuracy"]
