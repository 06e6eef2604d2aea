"""Guard the architecture: the inference side never imports TensorFlow."""

import importlib.metadata as md
import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

BLOCK_TF = textwrap.dedent("""
    import sys
    class _NoTF:
        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow" or name.startswith(("tensorflow.", "keras", "tf2onnx")):
                raise ImportError("blocked: " + name)
    sys.meta_path.insert(0, _NoTF())
""")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_TF + textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120)


def test_help_does_not_import_tensorflow():
    res = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import sys
        from typer.testing import CliRunner
        from skinseg.cli import app
        for args in (["--help"], ["infer", "--help"], ["serve", "--help"], ["convert", "--help"]):
            r = CliRunner().invoke(app, args)
            assert r.exit_code == 0, (args, r.output)
        heavy = [m for m in sys.modules if m.split('.')[0] in ("tensorflow", "keras", "tf2onnx", "ray", "fastapi",
                                                               "uvicorn", "onnxruntime")]
        assert not heavy, heavy  # --help starts fast: no engine, no service, no cluster code
        r = CliRunner().invoke(app, ["doctor"])
        assert r.exit_code == 0, r.output
        heavy = [m for m in sys.modules if m.split('.')[0] in ("tensorflow", "keras", "tf2onnx")]
        assert not heavy, heavy
    """)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_infer_and_bench_work_with_tensorflow_unimportable(tmp_path):
    from tests.onnx_factory import make_model

    model = make_model(tmp_path / "m.onnx", tile=(32, 32))
    res = _run(f"""
        import numpy as np
        from typer.testing import CliRunner
        from skinseg.cli import app
        from skinseg.shared.images import encode
        open({str(tmp_path / 'a.png')!r}, 'wb').write(encode('.png', np.full((40, 50, 3), 30, np.uint8)))
        r = CliRunner().invoke(app, ["infer", {str(tmp_path / 'a.png')!r}, "--model", {str(model)!r},
                                     "-o", {str(tmp_path / 'out')!r}, "-q"])
        assert r.exit_code == 0, r.output
        r = CliRunner().invoke(app, ["bench", "--model", {str(model)!r}, "--size", "200x100", "--repeat", "1"])
        assert r.exit_code == 0, r.output
        from skinseg.commands.serve import app as service  # the [serve] extra's module tree
        assert service.create_app
    """)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out" / "masks" / "a.png").is_file()


def test_edge_install_does_not_pull_tensorflow():
    """The core and the [cpu]/[gpu] extras must not require TensorFlow; only [train] may."""
    reqs = md.requires("skinseg") or []
    edge = [r for r in reqs if "extra ==" not in r or any(f"'{x}'" in r or f'"{x}"' in r
                                                           for x in ("cpu", "gpu", "serve", "ray"))]
    assert edge and not any(r.lower().startswith(("tensorflow", "keras", "tf2onnx")) for r in edge), edge


@pytest.mark.skipif(os.environ.get("SKINSEG_EDGE_ENV") != "1", reason="runs in the edge venv of scripts/test.sh")
def test_edge_environment_really_has_no_tensorflow():
    assert importlib.util.find_spec("tensorflow") is None
