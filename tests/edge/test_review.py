"""The review flag's score on probability maps whose answer is known, the threshold by default and by
flag, and the flag everywhere a result appears."""

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from skinseg.cli import app
from skinseg.inference.options import EngineOptions
from skinseg.inference.review import (
    DEFAULT_REVIEW_THRESHOLD,
    auroc,
    choose_threshold,
    confidence,
    needs_review,
    review_figures,
)
from skinseg.inference.segmenter import Segmenter
from skinseg.shared.errors import SkinsegError
from skinseg.shared.images import encode
from tests.cli_helpers import csv_rows
from tests.onnx_factory import make_model, stripes
from tests.realdata import ISIC256

runner = CliRunner()


def _disc(blur: float = 0.0) -> np.ndarray:
    yy, xx = np.mgrid[:192, :256]
    p = (((yy - 96) ** 2 + (xx - 128) ** 2) <= 60**2).astype(np.float32)
    return cv2.GaussianBlur(p, (0, 0), blur) if blur else p


def test_a_crisp_lesion_is_confident_a_blurred_or_scattered_one_is_not():
    assert confidence(_disc()) == 1.0
    assert confidence(_disc(1.0)) > 0.9  # a soft edge one pixel wide
    assert confidence(_disc(12.0)) < DEFAULT_REVIEW_THRESHOLD < confidence(_disc(1.0))
    rng = np.random.default_rng(0)
    scattered = cv2.GaussianBlur((rng.random((192, 256)) > 0.7).astype(np.float32), (0, 0), 2.0)
    assert confidence(scattered) < DEFAULT_REVIEW_THRESHOLD
    assert confidence(np.zeros((192, 256), np.float32)) == 1.0  # clearly no lesion
    assert confidence(np.full((192, 256), 0.45, np.float32)) == 0.0  # undecided everywhere, nothing found


def test_confidence_counts_exactly_as_the_contract_defines_it():
    """Section 5c of docs/model-contract.md, which the Node client implements: undecided is strictly between
    0.2 and 0.8, the lesion is the largest component at probability >= threshold, the result has 4 decimals."""
    prob = np.zeros((10, 10))
    prob[0, :3] = 0.9  # a lesion of 3 pixels
    prob[5, 5] = 0.6  # undecided, and a lesion pixel of its own (a smaller component)
    prob[8, 0], prob[8, 9] = 0.2, 0.8  # at the bounds: not undecided
    assert confidence(prob) == 0.6667  # 1 - 1/3, to 4 decimals
    prob[0, 3:9] = 0.9
    prob[0, :3] = 0.5  # exactly at the threshold: still lesion (9 pixels with these), and undecided now
    assert confidence(prob) == 0.5556  # 1 - 4/9
    single = np.zeros((10, 10))
    single[3, 3] = 0.6  # one pixel, lesion and undecided: nothing certain at all
    assert confidence(single) == 0.0


def test_the_threshold_is_the_default_unless_given():
    assert needs_review(0.5) and not needs_review(0.9)
    assert not needs_review(0.5, 0.4) and needs_review(0.95, 1.0)
    with pytest.raises(SkinsegError, match="--review-threshold 1.5"):
        EngineOptions(review_threshold=1.5)
    assert "review_threshold" not in EngineOptions.pixel_fields()  # masks are the same whatever it is


def test_results_run_json_and_resume_carry_the_flag(tmp_path):
    model = make_model(tmp_path / "soft.onnx", tile=(64, 64), box=9, metadata={"skinseg.format": "2",
                                                                              "skinseg.scale": "native"})
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        (src / f"i{i}.png").write_bytes(encode(".png", stripes(120, 160, seed=i)))
    out = tmp_path / "o"
    args = ["infer", str(src), "--model", str(model), "-o", str(out), "-q"]
    assert runner.invoke(app, [*args, "--review-threshold", "1"]).exit_code == 0
    rows = csv_rows(out / "results.csv")
    assert all(0 <= float(r["confidence"]) < 1 and r["review"] == "yes" for r in rows), rows
    assert json.loads((out / "run.json").read_text())["flagged_for_review"] == 3
    res = runner.invoke(app, [*args, "--resume", "--review-threshold", "0"])  # kept outputs, the new threshold
    assert res.exit_code == 0, res.output
    assert [r["review"] for r in csv_rows(out / "results.csv")] == ["no"] * 3
    assert json.loads((out / "run.json").read_text())["flagged_for_review"] == 0


def test_the_threshold_flags_at_most_the_share_asked_least_confident_first():
    conf = [0.9, 0.1, 0.5, 0.7, 0.3, 0.95, 0.8, 0.6, 0.2, 0.99]
    t = choose_threshold(conf, 0.3)  # 3 of 10 may be flagged
    assert sorted(c for c in conf if c < t) == [0.1, 0.2, 0.3]
    assert not [c for c in conf if c < choose_threshold(conf, 0.05)]  # less than one image: none
    assert all(c < choose_threshold(conf, 1.0) for c in conf)  # every one
    assert choose_threshold(conf, 1.0) == 1.0 == choose_threshold([0.4, 1.0], 1.0)  # a valid metadata value
    assert not [c for c in [0.5] * 10 if c < choose_threshold([0.5] * 10, 0.15)]  # ties: never more than asked


def test_auroc_is_the_share_of_failure_success_pairs_ranked_right():
    rng = np.random.default_rng(3)
    scores, failed = rng.integers(0, 6, 40).astype(float), rng.random(40) < 0.3  # many ties
    pos, neg = scores[failed], scores[~failed]
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert auroc(scores, failed) == pytest.approx(brute)
    assert auroc(scores, np.zeros(40, bool)) is None
    assert auroc(scores, failed.astype(int).tolist()) == pytest.approx(brute)  # 0/1 labels, as from a CSV


def test_review_figures_count_what_they_say():
    fig = review_figures([0.2, 0.4, 0.9, 0.95], [0.3, 0.9, 0.5, 0.9], threshold=0.5)
    assert (fig["flagged"], fig["failures"], fig["failures_caught"]) == (2, 2, 1)
    assert fig["mean_jaccard_unflagged"] == pytest.approx(0.7) and fig["mean_jaccard_all"] == pytest.approx(0.65)
    assert fig["auroc_failures"] == pytest.approx(0.75)  # 3 of the 4 failure/success pairs ranked right
    curve = {c["flagged_share"]: c["mean_jaccard_kept"] for c in fig["risk_coverage"]}
    assert curve[0.0] == pytest.approx(0.65) and curve[0.5] == pytest.approx(0.7)  # the 2 most confident kept
    assert fig["failures_caught_share"] == 0.5 and fig["flagged_share"] == 0.5 and fig["images"] == 4


def test_review_figures_at_the_edges():
    """At the threshold is not flagged, Jaccard 0.65 is not a failure (FAIL_BELOW), the curve runs 0-50 %
    in steps of 5, and shares with nothing to count are None (never NaN in summary.json)."""
    fig = review_figures([0.5, 0.5, 0.1], [0.65, 0.64, 0.9], threshold=0.5)
    assert (fig["flagged"], fig["failures"], fig["failures_caught"]) == (1, 1, 0)
    assert fig["failures_caught_share"] == 0.0
    conf = np.linspace(0.01, 1.0, 200)
    jac = np.linspace(0.1, 0.9, 200)  # the least confident are the worst
    curve = review_figures(conf, jac, threshold=0.0)["risk_coverage"]
    assert [c["flagged_share"] for c in curve] == [pct / 100 for pct in range(0, 51, 5)]
    for c in curve:
        kept = 200 - round(200 * c["flagged_share"])
        assert c["mean_jaccard_kept"] == pytest.approx(jac[-kept:].mean()), c
    none = review_figures([0.1, 0.2], [0.9, 0.9], threshold=0.5)  # all flagged, no failure
    assert none["mean_jaccard_unflagged"] is None and none["failures_caught_share"] is None
    empty = review_figures([], [], threshold=0.5)
    assert empty["flagged_share"] is None and empty["mean_jaccard_all"] is None
    assert all(c["mean_jaccard_kept"] is None for c in empty["risk_coverage"])


def _with_threshold(tmp_path, value: str):
    return make_model(tmp_path / f"m{value}.onnx", tile=(64, 64), box=9, metadata={
        "skinseg.format": "4", "skinseg.scale": "native", "skinseg.review_threshold": value})


def test_the_model_records_its_threshold_and_the_flag_overrides_it(tmp_path, images, model):
    assert Segmenter(model, "cpu").review_threshold == DEFAULT_REVIEW_THRESHOLD  # the file records none
    strict = _with_threshold(tmp_path, "1")
    assert Segmenter(strict, "cpu").review_threshold == 1.0
    assert Segmenter(strict, "cpu", review_threshold=0.0).review_threshold == 0.0
    for extra, said in (([], "yes"), (["--review-threshold", "0"], "no")):
        out = tmp_path / f"o{len(extra)}"
        res = runner.invoke(app, ["infer", str(images), "--model", str(strict), "-o", str(out), "-q", *extra])
        assert res.exit_code == 0, res.output
        assert {r["review"] for r in csv_rows(out / "results.csv")} == {said}


def test_review_threshold_decides_on_images_with_masks_and_writes_a_copy(tmp_path):
    import onnx

    split = ISIC256 / "test"
    new = tmp_path / "clinic" / "model.onnx"
    args = ["review-threshold", "--model", "fp32", "--images", str(split / "images"), "--masks", str(split / "masks"),
            "--max-flagged", "0.25", "-q"]
    res = runner.invoke(app, args)  # without -o: a report, nothing written
    assert res.exit_code == 0 and "not written" in res.output and not (tmp_path / "clinic").exists(), res.output
    assert runner.invoke(app, [*args, "-o", str(new)]).exit_code == 0
    seg = Segmenter("fp32", "cpu")
    confidences = sorted(seg.predict(p).confidence for p in sorted((split / "images").glob("*.jpg")))
    written = Segmenter(new, "cpu").review_threshold
    assert sum(c < written for c in confidences) <= int(0.25 * len(confidences)) < sum(c <= written
                                                                                      for c in confidences)
    source, copy = onnx.load(str(seg.model_path)), onnx.load(str(new))
    assert copy.graph.SerializeToString() == source.graph.SerializeToString()  # the weights are the model's
    props = {p.key: p.value for p in copy.metadata_props}
    assert props["skinseg.format"] == "4" and json.loads(props["skinseg.review"])["max_flagged"] == 0.25
    res = runner.invoke(app, [*args, "-o", str(seg.model_path)])
    assert res.exit_code == 2 and "is the model itself" in res.output
    res = runner.invoke(app, [a if a != "0.25" else "1.5" for a in args])
    assert res.exit_code == 2 and "--max-flagged 1.5" in res.output
