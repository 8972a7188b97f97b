"""The rate–distortion report's arithmetic on hand-made points: equal-bytes PSNR and the target margin."""

from __future__ import annotations

import numpy as np
import pytest

from bench.compression import Point, baseline_series, bytes_for_psnr, psnr_at_bytes, round_trip
from bench.compression_report import equal_bytes_margin, target_line

POINTS = [
    Point("ours", "entropy stream, whole test set", 40.0, 29.0, 0.98),
    Point("WEBP", "q=0", 100.0, 23.0, 0.90),
    Point("WEBP", "q=50", 200.0, 33.0, 0.97),
    Point("WEBP 14×14", "q=0", 30.0, 15.0, 0.60),
    Point("WEBP 14×14", "q=50", 50.0, 20.0, 0.80),
    Point("PNG", "lossless", 260.0, float("inf"), 1.0),
]


def test_series_exclude_ours_and_png() -> None:
    assert baseline_series(POINTS) == ["WEBP", "WEBP 14×14"]


@pytest.mark.parametrize("series, target, expected", [
    ("WEBP 14×14", 40.0, 17.5),   # interpolated halfway
    ("WEBP", 150.0, 28.0),
    ("WEBP", 40.0, 23.0),         # below the smallest file: that file's PSNR, an upper bound
    ("WEBP 14×14", 80.0, 20.0),   # beyond the largest setting
])
def test_psnr_at_bytes(series: str, target: float, expected: float) -> None:
    assert psnr_at_bytes(POINTS, series, target)[0] == pytest.approx(expected)


def test_margin_takes_the_best_baseline_at_our_size() -> None:
    margin, best = equal_bytes_margin(POINTS)
    assert margin == pytest.approx(29.0 - 23.0)  # WebP's bound (23) beats the half-size WebP's 17.5
    assert best.startswith("WebP, ≤ 23.00 dB")


def test_bytes_for_psnr_interpolates_and_says_when_unreachable() -> None:
    assert bytes_for_psnr(POINTS, "WEBP", 28.0) == "150 bytes"
    assert bytes_for_psnr(POINTS, "WEBP 14×14", 29.0).startswith("not reached")
    assert bytes_for_psnr(POINTS, "WEBP", 20.0).startswith("≤ 100 bytes (its smallest files, q=0, already give")


def test_half_resolution_round_trip_is_smaller_and_full_size() -> None:
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255
    full_bytes, full = round_trip(digit, "WEBP", 50, 28)
    half_bytes, half = round_trip(digit, "WEBP", 50, 14)
    assert half.shape == full.shape == (28, 28) and half_bytes < full_bytes


def test_target_line_gives_every_format_its_margin() -> None:
    line = target_line(POINTS)
    assert "WebP +6.00 dB" in line and "WebP at 14×14, enlarged +11.50 dB" in line
    assert "— met" in line.split("\n")[0] and "≤ 40 bytes per digit: 40.0 bytes — met" in line
