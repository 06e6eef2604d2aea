"""MkDocs hooks for the documentation site (mkdocs.yml): pages made from what already exists, so
nothing is written twice.

- `cli.md`: the command-line reference, from the commands themselves (the typer app: each command's
  help, usage and every option with its default);
- `index.md` from README.md and `model-card.md` from MODEL_CARD.md, their links made site-relative.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
MARKUP = re.compile(r"\[/?(dim|bold|bold yellow|yellow|red|green)?\]")


def _plain(text: str | None) -> str:
    """Rich markup and escapes out of a help text."""
    return MARKUP.sub("", (text or "").replace("\\[", "[")).strip()


def _default(param: Any) -> str:
    if getattr(param, "is_flag", False) or param.default in (None, (), []) or callable(param.default):
        return ""
    return f"`{param.default}`"


def cli_reference() -> str:
    """Every `skinseg` command: what it does, its usage and options, as `skinseg CMD --help` says."""
    import click
    import typer

    from skinseg.cli import app

    root = typer.main.get_command(app)
    lines = ["# Command-line reference", "",
             "Generated from the commands themselves when the site is built; `skinseg CMD --help` says the same.",
             "Exit codes: 0 ok, 1 some inputs failed (reported, the run went on), 2 usage, config or model error.", ""]
    with click.Context(root, info_name="skinseg") as ctx:
        for name in sorted(root.list_commands(ctx)):
            cmd = root.get_command(ctx, name)
            sub = click.Context(cmd, info_name=name, parent=ctx)
            help_text = _plain(cmd.help).split("\n")
            summary, rest = help_text[0], "\n".join(help_text[1:]).strip()
            lines += [f"## skinseg {name}", "", summary, ""]
            arguments = [(p.metavar or p.name).upper() + ("..." if p.nargs == -1 else "")
                         for p in cmd.get_params(sub) if p.param_type_name == "argument"]
            lines += ["```text", " ".join([f"skinseg {name} [OPTIONS]", *arguments]), "```", ""]
            if rest:
                examples = [ln.strip() for ln in rest.splitlines() if ln.strip().startswith("skinseg ")]
                prose = [ln.strip() for ln in rest.splitlines() if ln.strip() and not ln.strip().startswith(
                    "skinseg ") and ln.strip() != "Examples:"]
                if prose:
                    lines += [" ".join(prose), ""]
                if examples:
                    lines += ["```bash", *examples, "```", ""]
            rows = []
            for p in cmd.get_params(sub):
                if p.name == "help" or getattr(p, "hidden", False):
                    continue
                if p.param_type_name == "argument":
                    said = _plain(getattr(p, "help", "") or "").replace("|", "/")
                    rows.append(f"| `{(p.metavar or p.name).upper()}` (argument) | {said} | |")
                    continue
                flags = " / ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
                rows.append(f"| {flags} | {_plain(p.help).replace('|', '/')} | {_default(p)} |")
            if rows:
                lines += ["| option | what it does | default |", "|---|---|---|", *rows, ""]
    return "\n".join(lines) + "\n"


def _site_links(text: str) -> str:
    """README's and MODEL_CARD's repository-relative links as the site's."""
    text = re.sub(r"\]\(docs/", "](", text)
    # files of the repository that are not pages: named, not linked (the site holds only the docs)
    repo = r"\[([^\]]+)\]\(((?:configs|skinseg|benchmarks|scripts|tests|clients)/[^)]+)\)"
    text = re.sub(repo, r"\1 (`\2`)", text)
    text = text.replace("](MODEL_CARD.md", "](model-card.md").replace("](README.md", "](index.md")
    return text


def on_files(files: Files, config: Any) -> Files:
    files.append(File.generated(config, "cli.md", content=cli_reference()))
    files.append(File.generated(config, "index.md", content=_site_links((ROOT / "README.md").read_text("utf-8"))))
    files.append(File.generated(config, "model-card.md",
                                content=_site_links((ROOT / "MODEL_CARD.md").read_text("utf-8"))))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """docs/ pages link to the README and the model card as the repository has them; the site has them
    as index.md and model-card.md."""
    return markdown.replace("](../MODEL_CARD.md", "](model-card.md").replace("](../README.md", "](index.md")
