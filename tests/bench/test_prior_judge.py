"""The sample judge's measures (bench/prior_judge.py) and the choice of defaults (bench/prior_samples.py)."""

from __future__ import annotations

import numpy as np

from bench.prior_judge import distinct_share, frechet_distance, mean_pairwise_distance
from bench.prior_samples import PLAIN, Score, choose
from contract.guided_sampling import Sampling


def test_frechet_distance_is_zero_for_one_set_and_grows_with_a_shift() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2000, 8))
    assert abs(frechet_distance(a, a)) < 1e-6
    shifted = frechet_distance(a, a + 1.0)
    assert abs(shifted - 8.0) < 1e-6  # |Δμ|² = 8, same covariance
    assert frechet_distance(a, a * 2) > 1.0  # a wider spread is a distance too


def test_diversity_measures() -> None:
    codes = np.array([[[1]], [[1]], [[2]], [[3]]])
    assert distinct_share(codes) == 0.75
    same = np.full((5, 28, 28), 7, np.uint8)
    assert mean_pairwise_distance(same) < 1e-5  # 0 up to the rounding of the expanded form
    two = np.stack([np.zeros((28, 28), np.uint8), np.full((28, 28), 255, np.uint8)])
    assert abs(mean_pairwise_distance(two) - 28.0) < 1e-9  # sqrt(784) pixels each 1 apart


def score(rule: Sampling, recognised: float, distinct: float = 1.0, spread: float = 1.0, frechet: float = 5.0) -> Score:
    return Score(rule, recognised, [recognised] * 10, distinct, spread, frechet)


def test_the_default_is_the_most_recognised_setting_that_keeps_diversity() -> None:
    plain = score(PLAIN, 0.85, frechet=5.0)
    collapsed = score(Sampling(guidance=5), 0.999, distinct=0.6, spread=0.5, frechet=30)
    narrow = score(Sampling(guidance=3), 0.99, spread=0.8, frechet=4)
    worse_fid = score(Sampling(guidance=2.5), 0.98, frechet=5.5)
    good = score(Sampling(guidance=2), 0.97, spread=0.9, frechet=4.5)
    assert choose([plain, collapsed, narrow, worse_fid, good]) is good
    assert choose([plain, collapsed]) is plain  # nothing keeps diversity: plain sampling
