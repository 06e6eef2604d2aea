"""Real ISIC data for tests: the small set shipped in tests/data/isic (see its ATTRIBUTION.md).

The required suite reads only these fixtures, so it passes in a fresh clone. The full data set in
`../shared/data` (a development machine's, never a clone's) feeds benchmarks and the optional
extended checks (`pytest -m extended`), which are deselected by default.
"""

from __future__ import annotations

import os
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "data" / "isic"
ISIC256 = FIXTURES / "isic256"  # train / valid / test, each images/ + masks/, 256x192
FULLRES = FIXTURES / "fullres"  # images/ + masks/ at original resolution

# Extended checks only: the full data set beside the repository, or wherever SKINSEG_DATA points.
SHARED_DATA = Path(os.environ.get("SKINSEG_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
