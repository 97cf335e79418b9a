"""Labelled factor portraits (latent.factors): deterministic, factorial, counterfactuals differ in one factor."""
import numpy as np
import pytest

from latent.factors import (FACTORS, TRANSFER_FACTORS, apply_codes, base_identity, factor_dataset, factor_index,
                           photo_identity, sample_codes)


def test_the_same_seed_gives_the_same_pixels_whatever_the_workers():
    a = factor_dataset(130, seed=3, size=24, workers=1, progress=False)
    b = factor_dataset(130, seed=3, size=24, workers=2, progress=False)  # 5 chunks: really split across processes
    assert np.array_equal(a.codes, b.codes) and np.array_equal(a.images, b.images)
    c = factor_dataset(130, seed=4, size=24, workers=1, progress=False)
    assert not np.array_equal(a.images, c.images)


def test_codes_cover_every_level_and_respect_exclusions():
    codes = sample_codes(3000, seed=0)
    for k, factor in enumerate(FACTORS):
        assert set(np.unique(codes[:, k])) == set(range(factor.n_levels)), factor.name
    excluded = sample_codes(2000, seed=0, factors=TRANSFER_FACTORS, exclude=[{"smile": 1, "glasses": 1}])
    s, g = factor_index("smile", TRANSFER_FACTORS), factor_index("glasses", TRANSFER_FACTORS)
    assert not ((excluded[:, s] == 1) & (excluded[:, g] == 1)).any()
    assert ((excluded[:, s] == 1) & (excluded[:, g] == 0)).any() and ((excluded[:, s] == 0) & (excluded[:, g] == 1)).any()


@pytest.mark.parametrize("factor", ["smile", "glasses", "hair_colour", "light"])
def test_a_counterfactual_differs_in_exactly_the_named_factor(factor):
    data = factor_dataset(6, seed=1, size=48, vary_identity=True, progress=False)
    k = factor_index(factor)
    new_levels = (data.codes[:, k] + 1) % FACTORS[k].n_levels
    for row, level in enumerate(new_levels):
        flipped = data.counterfactual([row], factor, int(level))[0]
        assert not np.array_equal(flipped, data.images[row]), "changing a factor must change the picture"
        again = data.counterfactual([row], factor, int(data.codes[row, k]))[0]
        assert np.array_equal(again, data.images[row]), "the same codes must redraw the same photo"
        # what the renderer gets differs in that factor's fields only
        person = photo_identity(data.seed, row, True)
        codes = data.codes[row].copy()
        before = apply_codes(person, codes)
        codes[k] = level
        after = apply_codes(person, codes)
        changed = {f for part in (0, 1) for f in before[part].__dataclass_fields__
                   if getattr(before[part], f) != getattr(after[part], f)}
        allowed = {"smile": {"smile"}, "glasses": {"glasses"}, "light": {"light_angle"},
                   "hair_colour": {"hair_colour", "hair_rgb", "brow_rgb"}}[factor]
        assert changed and changed <= allowed, changed


def test_without_varying_identity_everyone_is_the_base_person():
    assert photo_identity(0, 5, False) == photo_identity(0, 99, False) == base_identity(0)
    assert photo_identity(0, 5, True) != photo_identity(0, 6, True)
