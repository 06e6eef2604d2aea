"""Real ISIC data for tests: the small set shipped in tests/data/isic (see its ATTRIBUTION.md).

The required suite reads only these fixtures, so it passes in a fresh clone. A full data set (on a
development machine, never in a clone) feeds benchmarks and the optional extended checks, which are
deselected by default: `SKINSEG_DATA=/path/to/data pytest -m extended`.
"""

from __future__ import annotations

import os
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "data" / "isic"
ISIC256 = FIXTURES / "isic256"  # train / valid / test, each images/ + masks/, 256x192
FULLRES = FIXTURES / "fullres"  # images/ + masks/ at original resolution
FULLRES_IMAGES = sorted((FULLRES / "images").glob("*.jpg"))
TEST_IMAGES = sorted((ISIC256 / "test" / "images").glob("*.jpg"))  # the held-out split's images

# Extended checks only: the full data set (isic-fullres/, isic2018-task1-256/) where SKINSEG_DATA points.
SHARED_DATA = Path(os.environ.get("SKINSEG_DATA", "SKINSEG_DATA-is-not-set"))
