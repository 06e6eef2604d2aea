"""skinseg bench: what it times and how it says it."""

from skinseg.cli import app
from tests.cli_helpers import runner
from tests.onnx_factory import make_model


def test_bench_times_the_working_scale_infer_uses(tmp_path):
    model = make_model(tmp_path / "m.onnx", tile=(64, 64), metadata={"skinseg.format": "2", "skinseg.scale": "128"})
    res = runner.invoke(app, ["bench", "--model", str(model), "--size", "640x480", "--repeat", "1"],
                        terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "working scale 128" in res.output and "128x96" in res.output


def test_plain_bench_says_where_the_time_goes_and_what_the_ratio_compares():
    res = runner.invoke(app, ["bench", "--size", "800x600", "--repeat", "1", "--threads", "1"],
                        env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "whole image / model alone" in res.output and "ms per image by stage" in res.output
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in res.output.splitlines()
            if line.count("│") == 3}
    # the shipped model asks for flip TTA: its one tile runs 4 times, in one session run, not "batch 5"
    assert rows["tiles"] == "1" and rows["model runs per tile"] == "4" and rows["tiles per session run"] == "4"
    assert "the model is" in res.output and "% of an image's time here" in res.output
    for bad in (["--size", "0x0"], ["--repeat", "0"], ["--image", "/nonexistent.jpg"]):
        out = runner.invoke(app, ["bench", *bad])
        assert out.exit_code == 2 and "error:" in out.output
