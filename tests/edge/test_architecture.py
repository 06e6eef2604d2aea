"""The wiring: layers that never import upward, one options value, one set of engine flags, one gate."""

import ast
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from skinseg.cli import app
from skinseg.inference.options import EngineOptions
from skinseg.shared.errors import SkinsegError
from tests.onnx_factory import make_model

PKG = Path(__file__).resolve().parents[2] / "skinseg"
# shared < inference < runner < evaluation, training < commands < cli; the package root and ui.py are leaves
LAYERS = {"shared": 0, "ui": 0, "models": 0, "inference": 1, "runner": 2, "evaluation": 3, "training": 3, "commands": 4,
          "cli": 5}
runner = CliRunner()


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "skinseg" or len(parts) == 1:
        return None  # the package root's constants (__version__) are for everyone
    return LAYERS[parts[1]]


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every skinseg module imported by a file, at module or function level."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names
                                     if (PKG / node.module.replace("skinseg.", "").replace(".", "/") / a.name).exists()
                                     or (PKG / f"{a.name}.py").exists() and node.module == "skinseg"]
            found += [(node.lineno, n) for n in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return [(line, m) for line, m in found if m == "skinseg" or m.startswith("skinseg.")]


def test_no_module_imports_a_higher_layer():
    upward = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG)
        if len(rel.parts) == 1 and rel.name in ("__init__.py", "__main__.py"):
            continue
        mine = LAYERS[rel.parts[0].removesuffix(".py")]
        for line, module in _imports(path):
            theirs = _layer(module)
            if theirs is not None and theirs > mine:
                upward.append(f"{rel}:{line} imports {module}")
            if theirs == mine == 3 and module.split(".")[1] != rel.parts[0]:
                upward.append(f"{rel}:{line} imports its sibling layer {module}")
    assert not upward, "\n".join(upward)


def test_cli_functions_stay_short():
    tree = ast.parse((PKG / "cli" / "__init__.py").read_text(encoding="utf-8"))
    long = [f"{n.name}: {n.end_lineno - n.lineno + 1} lines" for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef) and n.end_lineno - n.lineno + 1 > 60]
    assert not long, long


def _flags(command: str) -> set[str]:
    out = runner.invoke(app, [command, "--help"], env={"COLUMNS": "250"}).output
    return {w.strip("│ ,") for w in out.split() if w.strip("│ ,").startswith("--")}


@pytest.mark.parametrize("command", ["eval", "bench", "quantize"])
def test_every_engine_flag_of_infer_is_on_the_other_engine_commands(command):
    engine = {name for d in EngineOptions.declared().values() if d.flag for name in d.flag.split("/")}
    assert {"--tile", "--exact-decode", "--no-fill-holes", "--max-tiles"} <= engine
    assert engine <= _flags("infer")
    assert engine <= _flags(command), engine - _flags(command)


@pytest.mark.parametrize(("changes", "flag"), [
    ({"overlap": math.nan}, "--overlap"), ({"overlap": 1.0}, "--overlap"), ({"threshold": math.inf}, "--threshold"),
    ({"threshold": 0}, "--threshold"), ({"blur": math.nan}, "--blur"), ({"blur": -1}, "--blur"),
    ({"keep": "some"}, "--keep"), ({"min_area": -3}, "--min-area"), ({"batch": 10_000}, "--batch"),
    ({"tile": (30000, 30000)}, "--tile"), ({"tile": 4}, "--tile"), ({"scale": 10}, "--scale"),
    ({"threads": -1}, "--threads"), ({"graph_opt": "max"}, "--graph-opt"),
])
def test_engine_options_check_themselves_in_flag_terms(changes, flag):
    with pytest.raises(SkinsegError, match=flag):
        EngineOptions(**changes)


def test_options_value_and_keywords_build_the_same_engine(tmp_path):
    from skinseg import Segmenter

    model = make_model(tmp_path / "m.onnx")
    opts = EngineOptions(tile=64, scale=None, overlap=0.25, keep="all", blur=1.5, threshold=0.4)
    a, b = Segmenter(model, "cpu", opts), Segmenter(model, "cpu", tile=64, scale=None, overlap=0.25, keep="all",
                                                  blur=1.5, threshold=0.4)
    assert a.options == b.options and a.describe() == b.describe()
    assert a.post.keep == "all" and a.post.blur == 1.5 and a.tile == (64, 64) and a.overlap == 0.25
    img = np.random.default_rng(0).integers(0, 256, (90, 130, 3), dtype=np.uint8)
    assert np.array_equal(a.predict(img).mask, b.predict(img).mask)


def test_eval_takes_infer_post_processing_flags(tmp_path):
    """eval scores what infer ships: --blur / --min-area reach the engine it runs."""
    data = Path(__file__).resolve().parents[1] / "data" / "isic" / "isic256" / "test"
    out = tmp_path / "ev"
    res = runner.invoke(app, ["eval", "--images", str(data), "--model", "fp32", "-o", str(out), "-q", "--worst", "0",
                              "--blur", "3", "--keep", "all", "--min-area", "50"])
    assert res.exit_code in (0, 1), res.output
    import json

    engine = next(iter(json.loads((out / "summary.json").read_text())["engine"].values()))
    assert engine["postprocess"] == {"threshold": 0.5, "blur": 3.0, "keep": "all", "min_area": 50, "fill_holes": True}


def test_one_int8_gate_with_and_without_truth():
    from skinseg.inference.int8 import gate

    truth = np.zeros((20, 20), bool)
    truth[5:15, 5:15] = True
    near = truth.copy()
    near[5, 5:15] = False  # Jaccard 0.9 against truth
    g = gate([truth], [near], [truth])
    assert g.fp32_jaccard == 1.0 and g.int8_jaccard == pytest.approx(0.9) and g.loss == pytest.approx(10)
    assert not g.passed and g.limit == 0.5
    assert not gate([truth], [near], [truth], max_drop=11).passed  # 10 points apart from FP32: over 3
    assert gate([truth], [near], [truth], max_drop=11, max_disagreement=11).passed
    g = gate([truth], [near])  # no truth: disagreement with FP32, limit 3 points
    assert g.fp32_jaccard is None and g.loss == pytest.approx(10) and g.limit == 3 and not g.passed
    with pytest.raises(SkinsegError, match="INT8 loses 10.00"):
        g.enforce("cpu", False, "Try more")
    g.enforce("cpu", True, "Try more")  # --force keeps it


def test_the_gate_holds_agreement_with_fp32_as_well_as_the_loss():
    """A model can match the truth's average while drawing other masks: both must hold."""
    from skinseg.inference.int8 import gate

    a = np.zeros((20, 20), bool)
    a[2:10, 2:18] = True  # FP32: the top half of the lesion
    b = np.zeros((20, 20), bool)
    b[10:18, 2:18] = True  # INT8: the bottom half
    truth = a | b
    g = gate([a], [b], [truth])
    assert g.loss == pytest.approx(0) and g.disagreement == pytest.approx(100) and not g.passed
    with pytest.raises(SkinsegError, match="disagree with FP32's by 100.00 points"):
        g.enforce("cpu", False, "Try more")
    assert gate([a], [b], [truth], max_disagreement=100).passed
    with pytest.raises(SkinsegError, match="--max-drop nan"):
        gate([a], [b], [truth], max_drop=float("nan"))


def _runtime_imports(path: Path) -> set[str]:
    """The skinseg modules a file imports when it runs (function level too; `if TYPE_CHECKING:` blocks,
    which never run, left out), each as the module's dotted name."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for child in node.body for n in ast.walk(child)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("skinseg"):
            for alias in node.names:  # `from skinseg.runner import models` imports the module models
                sub = f"{node.module}.{alias.name}"
                found.add(sub if _file_of(sub) else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("skinseg")}
    return found


def _file_of(module: str) -> Path | None:
    base = PKG.parent / module.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def test_no_circle_of_files():
    """No files import each other, directly or around a loop (the package root, whose constants are for
    everyone and whose `Segmenter` is a lazy re-export, is left out)."""
    root = PKG / "__init__.py"
    graph = {path: {f for m in _runtime_imports(path) if (f := _file_of(m)) and f not in (path, root)}
             for path in PKG.rglob("*.py") if path != root}
    state: dict[Path, int] = {}  # 1: on the path being walked, 2: done

    def walk(node: Path, trail: list[Path]) -> list[Path] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, set())):
            if state.get(nxt) == 1:
                return [*(trail[trail.index(nxt):] if nxt in trail else []), node, nxt]
            if nxt not in state and (found := walk(nxt, [*trail, node])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := walk(start, [])):
            raise AssertionError("files that import each other: " + " -> ".join(str(p.relative_to(PKG)) for p in cycle))


def test_command_modules_are_siblings_that_import_nothing_from_each_other():
    found = []
    for path in (PKG / "commands").rglob("*.py"):
        own = path.relative_to(PKG / "commands").parts[0].removesuffix(".py")
        for module in _runtime_imports(path):
            parts = module.split(".")
            if parts[:2] == ["skinseg", "commands"] and len(parts) > 2 and parts[2] != own:
                found.append(f"{path.relative_to(PKG)} imports {module}")
    assert not found, found


def test_mask_encoders_live_below_the_commands():
    for path in (PKG / "commands").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for word in ("cv2.findContours", "cv2.imencode", "def coco_rle", "def polygons", "b64encode(encode("):
            assert word not in text, f"{path.relative_to(PKG)} holds an encoder ({word}): its home is runner/"
