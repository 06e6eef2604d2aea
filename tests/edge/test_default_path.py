"""The fast default path gives the masks the full-size path gave: post-processing confined to the box
that can hold lesion, 16-bit labels, the reused probability buffer, fast PNGs and single-decode overlays."""

import struct

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from skinseg import Segmenter
from skinseg.cli import app
from skinseg.inference.postprocess import PostProcess, mask_stats, postprocess
from skinseg.shared import scale as scaling
from skinseg.shared.images import encode, load_image
from tests.realdata import FULLRES_IMAGES, TEST_IMAGES

SMALL = TEST_IMAGES[:6]


def reference_postprocess(prob: np.ndarray, opts: PostProcess) -> np.ndarray:
    """The full-size algorithm as it was before the fast path (frozen here as the oracle)."""
    if opts.blur > 0:
        prob = cv2.GaussianBlur(prob, (0, 0), sigmaX=opts.blur)
    mask = prob >= opts.threshold
    if opts.keep == "largest" or opts.min_area > 0:
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        if n > 1:
            areas = stats[1:, cv2.CC_STAT_AREA]
            if opts.keep == "largest":
                wanted = [int(np.argmax(areas)) + 1] if areas.max() >= opts.min_area else []
            else:
                wanted = [i + 1 for i, a in enumerate(areas) if a >= opts.min_area]
            lut = np.zeros(n, bool)
            lut[wanted] = True
            mask = lut[labels]
    if opts.fill_holes and mask.any():
        h, w = mask.shape
        pad = np.zeros((h + 2, w + 2), np.uint8)
        pad[1:-1, 1:-1] = mask
        cv2.floodFill(pad, np.zeros((h + 4, w + 4), np.uint8), (0, 0), 2, flags=4)
        mask = pad[1:-1, 1:-1] != 2
    return mask


def reference_stats(mask: np.ndarray) -> dict:
    m = mask.astype(np.uint8)
    area = int(m.sum())
    return {"lesion_area_px": area, "lesion_fraction": round(area / m.size, 6),
            "bbox": tuple(cv2.boundingRect(m)) if area else None,
            "components": cv2.connectedComponents(m, connectivity=8)[0] - 1 if area else 0}


def fast(prob_work: np.ndarray, size: tuple[int, int], opts: PostProcess, resize: dict | None) -> np.ndarray:
    box = scaling.lesion_box(prob_work, size, opts.threshold, resize, opts.blur)
    full = scaling.probability_to_full(prob_work, size, resize)
    return postprocess(full, opts, box) if box else np.zeros(size, bool)


def lesions(h: int, w: int, seed: int) -> np.ndarray:
    """A working-scale probability map with several blobs, a ring (a hole), thin lines and a lesion
    running off the border."""
    rng = np.random.default_rng(seed)
    p = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), max(1.0, min(h, w) / 12))
    p = (p - p.min()) / (np.ptp(p) + 1e-6) * 0.8
    cv2.circle(p, (w // 2, h // 2), max(3, min(h, w) // 4), 0.95, max(1, min(h, w) // 12))  # ring with a hole
    cv2.line(p, (0, h - 2), (w // 3, h // 2), 0.9, 1)  # thin, touching the border
    p[: max(1, h // 10), -max(1, w // 8):] = 0.97  # a corner lesion
    return np.clip(p, 0, 1)


OPTIONS = [PostProcess(), PostProcess(keep="all"), PostProcess(keep="all", min_area=40), PostProcess(fill_holes=False),
           PostProcess(threshold=0.3), PostProcess(threshold=0.8, keep="all", fill_holes=False),
           PostProcess(blur=1.5), PostProcess(blur=4, keep="all", min_area=10),
           PostProcess(keep="largest", min_area=10**6)]
SIZES = [((48, 64), (768, 1024)), ((37, 256), (97, 673)), ((256, 171), (4288, 2848)), ((64, 48), (64, 48)),
         ((50, 50), (33, 41)), ((192, 256), (1129, 1503)), ((9, 200), (45, 1000))]


@pytest.mark.parametrize(("work", "full"), SIZES)
@pytest.mark.parametrize("method", ["linear", "area", "nearest", "cubic"])
def test_box_path_equals_full_size_path_on_drawn_lesions(work, full, method):
    resize = {"probability": method}
    prob = lesions(*work, seed=sum(work))
    whole = scaling.probability_to_full(prob, full, resize)
    for opts in OPTIONS:
        expected = reference_postprocess(whole, opts)
        got = fast(prob, full, opts, resize)
        assert np.array_equal(got, expected), (opts, method)
        box = scaling.lesion_box(prob, full, opts.threshold, resize, opts.blur) or (0, 0, 0, 0)
        known = 1 if opts.keep == "largest" else None
        assert mask_stats(got, box, known) == reference_stats(expected)


def test_nothing_above_the_threshold_means_no_box():
    assert scaling.lesion_box(np.full((20, 30), 0.2, np.float32), (200, 300), 0.5) is None


@pytest.mark.parametrize("variant", [{}, {"keep": "all", "min_area": 30}, {"blur": 2.0, "threshold": 0.4},
                                     {"fill_holes": False}, {"scale": 512}, {"tta": True}])
def test_real_images_through_the_engine_match_the_full_size_path(variant):
    seg = Segmenter("int8", "cpu", **variant)
    for path in FULLRES_IMAGES + SMALL:
        pred = seg.predict(path)
        assert np.array_equal(pred.mask, reference_postprocess(pred.probability, seg.post)), (path, variant)
        assert mask_stats(pred.mask, pred.box, pred.components) == reference_stats(pred.mask)
        assert pred.probability.shape == pred.mask.shape and set(pred.stages) >= {"model", "post-processing"}


def test_predictions_do_not_share_the_reused_buffer():
    seg = Segmenter("int8", "cpu")
    a = seg.predict(FULLRES_IMAGES[0])
    first = a.mask.copy()
    seg.predict(FULLRES_IMAGES[1])  # same thread: the buffer is refilled
    assert np.array_equal(a.mask, first)
    assert np.array_equal(a.probability, scaling.probability_to_full(a.working_probability, a.mask.shape))


def test_mask_png_is_standard_8_bit_grey_with_the_same_pixels():
    mask = lesions(300, 400, 1) >= 0.5
    data = encode(".png", mask)
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    assert (width, height, depth, colour) == (400, 300, 8, 0)  # 8-bit greyscale
    back = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint8 and back.ndim == 2 and np.array_equal(back, mask.astype(np.uint8) * 255)


def test_default_overlay_decodes_once_and_a_size_asked_for_decodes_reduced(monkeypatch, tmp_path):
    from skinseg.runner import encodings as infer

    path = FULLRES_IMAGES[0]
    loaded = load_image(path, 256)
    assert loaded.reduce > 1
    mask = np.zeros((loaded.height, loaded.width), bool)
    mask[100:300, 200:500] = True
    calls = []
    real = infer.load_image
    monkeypatch.setattr(infer, "load_image", lambda p, target=None: calls.append(target) or real(p, target))
    small = cv2.imdecode(np.frombuffer(infer.overlay_jpeg(path, loaded, mask), np.uint8), cv2.IMREAD_COLOR)
    # the model's own pixels (no second decode), enlarged to 768 px, never beyond the image's own size
    from skinseg.runner.encodings import AUTO_OVERLAY_MIN

    assert not calls and max(small.shape[:2]) == min(max(mask.shape), max(AUTO_OVERLAY_MIN,
                                                                           max(loaded.rgb.shape[:2])))
    big = cv2.imdecode(np.frombuffer(infer.overlay_jpeg(path, loaded, mask, 2048), np.uint8), cv2.IMREAD_COLOR)
    assert calls == [max(big.shape[:2])] and max(big.shape[:2]) == min(2048, max(mask.shape))
    red = big[..., 2].astype(int) - big[..., 1]  # the lesion fill is red: it sits where the mask is
    ys, xs = np.nonzero(red > 60)
    assert ys.size and abs(np.median(xs) / big.shape[1] - 350 / mask.shape[1]) < 0.05


def test_bench_stages_prints_where_the_time_goes():
    res = CliRunner().invoke(app, ["bench", "--stages", "--image", str(FULLRES_IMAGES[0]), "--repeat", "1",
                                   "--threads", "1", "--model", "int8"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    from skinseg.commands.bench import STAGES

    for stage in (*STAGES, "all"):
        assert stage in res.output
    shares = [int(w) for line in res.output.splitlines() if "%" in line and "all" not in line
              for w in line.replace("%", " ").replace("│", " ").split()[-1:] if w.isdigit()]
    assert len(shares) == len(STAGES) and 95 <= sum(shares) <= 105


def test_the_box_holds_every_pixel_that_reaches_the_threshold_around_spots_and_blocks():
    """The box is a bound: around spots and blocks away from the border (where it is tight, unlike the drawn
    lesions above that reach the edges), every full-size pixel at or above the threshold after the resize
    and the blur lies inside it, for growing and shrinking scales, each convex method, with and without blur."""
    rng = np.random.default_rng(7)
    for case in range(300):
        h, w = (int(v) for v in rng.integers(30, 60, 2))
        ratio = float(rng.choice([0.5, 0.8, 1.0, 1.7, 3.0, 7.5]))
        size = (max(1, round(h * ratio)), max(1, round(w * ratio)))
        method, blur = rng.choice(["linear", "area", "nearest"]), float(rng.choice([0.0, 0.6, 1.5, 3.0, 8.0]))
        threshold = float(rng.choice([0.2, 0.5]))  # a low one: the blur carries a solid spot past its edge
        prob = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(1, 4))):
            k = int(rng.choice([1, 2, 4, 12, 20]))  # spots and solid blocks
            y, x = rng.integers(3, h - k - 3), rng.integers(3, w - k - 3)
            prob[y : y + k, x : x + k] = rng.choice([threshold, 0.75, 1.0])
        full = scaling.probability_to_full(prob, size, {"probability": str(method)})
        if blur:
            full = cv2.GaussianBlur(full, (0, 0), blur)
        ys, xs = np.nonzero(full >= threshold)
        box = scaling.lesion_box(prob, size, threshold, {"probability": str(method)}, blur)
        if not len(ys):
            continue
        assert box is not None, case
        y0, y1, x0, x1 = box
        assert y0 <= ys.min() and ys.max() < y1 and x0 <= xs.min() and xs.max() < x1, (case, box, ys, xs)
