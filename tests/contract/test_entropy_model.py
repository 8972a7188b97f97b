"""The entropy model on its own: fitting picks the neighbour experts that pay, and coding is lossless
for every grid shape, whichever experts a model has."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from contract.entropy_model import EntropyModel, save_model
from contract.streams import Header, Kind
from export.entropy_fit import count_codes, fit, neighbour_weights, pair_counts

K = 512


def striped_codes(n: int, seed: int = 0) -> np.ndarray:
    """(n, 7, 7) grids whose codes repeat down each column (plus 10 % noise): `above` predicts them."""
    rng = np.random.default_rng(seed)
    columns = rng.integers(0, 64, size=(n, 1, 7))
    codes = np.repeat(columns, 7, axis=1)
    noise = rng.random(codes.shape) < 0.1
    return np.where(noise, rng.integers(0, K, size=codes.shape), codes)


def header(codes: np.ndarray) -> Header:
    n, h, w = codes.shape
    return Header(kind=Kind.ENTROPY, model="m", version="1", codebook_size=K, height=h, width=w, count=n)


def test_fit_chooses_the_upper_neighbour_when_it_predicts() -> None:
    train, test = striped_codes(3000), striped_codes(500, seed=1)
    positional, overall, left, above, (_, beta_above) = fit(train, K)
    assert above is not None and beta_above > 0
    fitted = EntropyModel(positional, overall, left, above)
    alone = EntropyModel(positional, overall)
    assert fitted.ideal_bytes(test) < 0.6 * alone.ideal_bytes(test)


def test_pair_counts_follow_the_neighbour() -> None:
    codes = np.array([[[1, 2], [3, 4]]])
    left, above = pair_counts(codes, 8, "left"), pair_counts(codes, 8, "above")
    assert {tuple(ix) for ix in np.argwhere(left)} == {(1, 2), (3, 4)}
    assert {tuple(ix) for ix in np.argwhere(above)} == {(1, 3), (2, 4)}


@pytest.mark.parametrize("experts", ["none", "left", "above", "both"])
@pytest.mark.parametrize("shape", [(5, 7, 7), (3, 1, 1), (2, 1, 9), (2, 9, 1), (4, 3, 5)])
def test_coding_is_lossless_for_any_shape(experts: str, shape: tuple[int, int, int]) -> None:
    train = striped_codes(400)
    positional, overall = count_codes(train, K)
    weights = {side: neighbour_weights(pair_counts(train, K, side), 0.5) for side in ("left", "above")}
    model = EntropyModel(positional, overall, weights["left"] if experts in ("left", "both") else None,
                         weights["above"] if experts in ("above", "both") else None)
    codes = np.random.default_rng(2).integers(0, K, size=shape)
    assert np.array_equal(model.decode(header(codes), model.encode(codes)), codes)


def test_a_saved_model_codes_exactly_like_the_fitted_one(tmp_path: Path) -> None:
    train, test = striped_codes(1000), striped_codes(20, seed=3)
    positional, overall, left, above, betas = fit(train, K)
    save_model(tmp_path / "entropy.npz", positional, overall, left, above, betas)
    loaded = EntropyModel.load(tmp_path / "entropy.npz")
    assert loaded.encode(test) == EntropyModel(positional, overall, left, above).encode(test)


def test_tables_stay_exact_even_for_a_degenerate_fit() -> None:
    # One code holding almost every position: counts near 2**40 times two experts near 2**16 each
    # would pass 2**53, where float64 stops being exact and the two ends could build different tables.
    positional = np.ones((7, 7, K), np.int64)
    positional[:, :, 3] = 2**40
    overall = positional.sum(axis=(0, 1))
    full = np.full((K, K), 65535, np.uint16)
    model = EntropyModel(positional, overall, full, full)
    codes = np.random.default_rng(4).integers(0, K, size=(3, 7, 7))
    codes[:, :, :4] = 3
    columns = codes.reshape(3, -1).T
    assert all(model._table(3, p, 7, True, columns).max() < 2**53 for p in range(49))
    assert np.array_equal(model.decode(header(codes), model.encode(codes)), codes)


def test_a_model_file_from_before_the_upper_neighbour_still_loads(tmp_path: Path) -> None:
    # Model 2.0.0's entropy.npz: positional, overall, left and a scalar `beta`; no `above`.
    train, test = striped_codes(500), striped_codes(10, seed=5)
    positional, overall = count_codes(train, K)
    left = neighbour_weights(pair_counts(train, K, "left"), 0.7)
    np.savez_compressed(tmp_path / "entropy.npz", positional=positional.astype(np.uint32),
                        overall=overall.astype(np.uint32), beta=np.array(0.7), left=left)
    loaded = EntropyModel.load(tmp_path / "entropy.npz")
    assert loaded.encode(test) == EntropyModel(positional, overall, left).encode(test)
    assert np.array_equal(loaded.decode(header(test), loaded.encode(test)), test)
