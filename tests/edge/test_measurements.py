"""Measurements a clinician reads: the maximum Feret diameter of the largest component, and area and
diameter in millimetres only when a scale is known."""

import math

import cv2
import numpy as np
import pytest

from skinseg.runner.measurements import check_spacing, in_millimetres, max_feret
from skinseg.runner.result import Result
from skinseg.shared.errors import SkinsegError


def _feret_brute_force(mask: np.ndarray) -> float:
    """Every corner of every pixel of the largest component against every other: the longest distance."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    biggest = labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    ys, xs = np.nonzero(biggest)
    corners = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (-0.5, 0.5) for dy in (-0.5, 0.5)])
    corners = np.unique(corners, axis=0)
    d = corners[:, None, :] - corners[None, :, :]
    return float(np.sqrt((d**2).sum(-1).max()))


def test_a_rectangle_measures_its_diagonal():
    m = np.zeros((60, 90), bool)
    m[10:40, 5:85] = True
    assert max_feret(m) == pytest.approx(math.hypot(30, 80), abs=1e-6)


def test_a_disc_measures_its_diameter():
    yy, xx = np.mgrid[:121, :121]
    disc = (yy - 60) ** 2 + (xx - 60) ** 2 <= 40**2
    assert max_feret(disc) == pytest.approx(81, abs=1.5)  # 81 pixels across, edge to edge


@pytest.mark.parametrize("angle", [0, 17, 30, 45, 72, 90])
def test_a_rotated_ellipse_agrees_with_a_brute_force_feret(angle):
    m = np.zeros((160, 160), np.uint8)
    cv2.ellipse(m, (80, 80), (60, 18), angle, 0, 360, 1, -1)
    got = max_feret(m.astype(bool))
    assert got == pytest.approx(_feret_brute_force(m), abs=1e-6) and abs(got - 121) <= 1.5


def test_only_the_largest_component_is_measured():
    m = np.zeros((100, 200), bool)
    m[10:20, 10:30] = True  # small
    m[50:90, 100:190] = True  # large
    assert max_feret(m) == pytest.approx(math.hypot(40, 90), abs=1e-6)
    assert max_feret(np.zeros((10, 10), bool)) == 0.0


def test_millimetres_only_with_a_scale():
    assert in_millimetres(1000, 50.0, None) == (None, None)
    assert in_millimetres(1000, 50.0, 0.02) == (pytest.approx(0.4), pytest.approx(1.0))
    m = np.zeros((50, 50), bool)
    m[10:20, 10:30] = True
    plain, scaled = Result.from_mask(m), Result.from_mask(m, 0.05)
    assert plain.row()["area_mm2"] == "" and plain.figures()["diameter_mm"] is None
    assert scaled.area_mm2 == pytest.approx(200 * 0.05**2) and scaled.diameter_mm == pytest.approx(
        math.hypot(10, 20) * 0.05, abs=1e-3)
    for bad in (0, -1, math.nan, math.inf, 11):
        with pytest.raises(SkinsegError, match="millimetres per pixel"):
            check_spacing(bad)
