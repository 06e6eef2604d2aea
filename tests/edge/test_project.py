"""The project tells the truth about itself: README quickstart and config reference, CI, shipped models."""

import re
from pathlib import Path

from skinseg.shared.config import reference_markdown

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_quickstart_has_two_commands_and_ci_runs_the_test_one():
    block = re.search(r"## Quickstart.*?```bash\n(.*?)```", README, re.S).group(1)
    commands = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    assert len(commands) == 2
    assert "skinseg infer samples/" in commands[0]
    assert commands[1].strip() == "bash scripts/test.sh"
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    assert len(list((ROOT / "samples").glob("*.jpg"))) >= 3


def test_config_reference_is_generated_from_the_schema():
    assert reference_markdown().strip() in (ROOT / "docs" / "configuration.md").read_text()


def test_shipped_models_are_package_data_and_small():
    from skinseg.inference.model_files import FP32, INT8, default_model

    assert FP32.is_file() and INT8.is_file()
    assert FP32.stat().st_size + INT8.stat().st_size <= 25 * 1024 * 1024
    assert default_model("cpu") == INT8
    assert default_model("cuda") == FP32


def test_readme_stays_short_and_every_link_in_the_docs_resolves():
    assert len(README.splitlines()) <= 300  # what, install, quickstart, where next; the rest is in docs/
    missing = []
    for page in [ROOT / "README.md", ROOT / "MODEL_CARD.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)", page.read_text()):
            if not target.startswith("http") and not (page.parent / target).exists():
                missing.append(f"{page.name} -> {target}")
    assert not missing, missing


def test_every_error_line_the_troubleshooting_page_quotes_is_in_the_code():
    """The page quotes what skinseg prints; a message reworded in the code must be reworded there too."""
    import re

    page = (ROOT / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    code = " ".join(p.read_text(encoding="utf-8") for p in (ROOT / "skinseg").rglob("*.py"))
    code = re.sub(r'"\s*\n\s*f?"', "", code)  # implicit string concatenation across lines
    code = re.sub(r'\{[^{}\n"]*\}', "", code)  # f-string fields
    quoted = [q for row in page.splitlines() if row.startswith("| ") for q in
              re.findall(r"`([^`]{12,})`", row.split("|")[1])]
    assert len(quoted) >= 30
    missing = [q for q in quoted if re.sub(r"\{[^{}]*\}", "", q) not in code]
    assert not missing, missing
