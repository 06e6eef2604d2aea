"""How to install an extra of *this* package. The name `skinseg` on the public package index belongs to
an unrelated project, so no hint may install it by that name: a hint names the checkout this copy was
installed from when there is one, else a wheel built from a checkout."""

from __future__ import annotations

import shlex
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]  # skinseg/shared/install.py -> the repository root


def checkout() -> Path | None:
    """The source checkout this package runs from (an editable install), or None (a wheel)."""
    project = CHECKOUT / "pyproject.toml"
    try:
        return CHECKOUT if 'name = "skinseg"' in project.read_text(encoding="utf-8") else None
    except OSError:
        return None


def install_hint(extras: str) -> str:
    """The command that installs `extras` (e.g. 'cpu' or 'cpu,serve') of this package."""
    root = checkout()
    if root is not None:
        return f"pip install -e {shlex.quote(f'{root}[{extras}]')}"
    return (f"pip install 'skinseg-WHEEL.whl[{extras}]' with a wheel built in the skinseg checkout "
            "(pip wheel --no-deps -w dist .), never the package index: there the name is another project's")
