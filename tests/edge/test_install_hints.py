"""No instruction or message may install this project from the package index by its bare name: there,
`skinseg` is someone else's package (a dependency-confusion risk, not a typo)."""

import re
from pathlib import Path

from skinseg.shared import install

ROOT = Path(__file__).resolve().parents[2]
# `pip install skinseg`, `pip install "skinseg[cpu]"`, `pip install -U 'skinseg[gpu]'`, `uv pip install skinseg`
BARE = re.compile(r"pip3?\s+install\s+(?:-[-\w]+\s+)*['\"]?skinseg(?:\[|['\"\s]|$)", re.MULTILINE)


def texts() -> list[Path]:
    found = [ROOT / "README.md", ROOT / "MODEL_CARD.md", *ROOT.glob("docs/**/*.md")]
    for folder in ("skinseg", "scripts", "benchmarks", "clients/js"):
        found += [p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".sh", ".js", ".md", ".html")
                  and "node_modules" not in p.parts]
    return found


def test_nothing_tells_users_to_install_skinseg_from_the_index():
    offenders = []
    for path in texts():
        for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if BARE.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_the_pattern_catches_what_it_must():
    for bad in ('pip install "skinseg[cpu]"', "pip install skinseg", "pip install -U 'skinseg[gpu]'",
                "pip3 install --upgrade skinseg[ray]"):
        assert BARE.search(bad), bad
    for good in ('pip install -e ".[cpu]"', "pip install -e '/src/skinseg[cpu]'", "pip install onnxslim",
                 "pip install 'dist/skinseg-0.1.0-py3-none-any.whl[cpu]'"):
        assert not BARE.search(good), good


def test_hints_name_this_checkout_or_a_wheel(monkeypatch, tmp_path):
    hint = install.install_hint("cpu,serve")
    assert hint == f"pip install -e '{ROOT}[cpu,serve]'" and not BARE.search(hint)
    monkeypatch.setattr(install, "CHECKOUT", tmp_path)  # installed from a wheel: no checkout beside it
    hint = install.install_hint("gpu")
    assert "wheel" in hint and "[gpu]" in hint and not BARE.search(hint)
