"""The demo's verdict on the payoff: the fine-tuned VAE's reconstructions recognised as the target."""
from __future__ import annotations

from tools import run_demo

WORLD = {"target_name": "Ava Marlowe", "target_identity": 9119}


def vae_summary(share):
    return {"vae": {"picked_identity": 9119, "quality": {"finetuned_nearest_identity_accuracy": share}}}


def recognised(share, smoke=False):
    verdicts = run_demo.stage_verdicts(WORLD, vae_summary(share), smoke)
    return next(v for v in verdicts if v["name"] == "recognised")


def test_recognition_verdict_passes_at_the_threshold_and_fails_below_it():
    ok = recognised(0.9375)
    assert ok["ok"] and ok["headline"]
    assert ok["text"] == "the fine-tuned VAE's reconstructions are recognised as Ava Marlowe: 94%"
    assert recognised(run_demo.RECOGNISED_SHARE)["ok"]
    missed = recognised(0.8125)
    assert not missed["ok"] and missed["headline"] and "target 90%" in missed["text"]


def test_a_smoke_run_shows_the_recognition_verdict_but_it_is_no_headline():
    verdict = recognised(0.0, smoke=True)
    assert not verdict["ok"] and not verdict["headline"]


def test_no_recognition_verdict_without_the_quality_numbers():
    verdicts = run_demo.stage_verdicts(WORLD, {"vae": {"picked_identity": 9119}})
    assert [v["name"] for v in verdicts] == ["identity"]
