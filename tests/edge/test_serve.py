"""`skinseg serve` as a client meets it: a real server process on 127.0.0.1, a real HTTP client."""

import base64
import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from skinseg.shared.images import encode
from skinseg.shared.synthetic import png_header
from tests.realdata import FULLRES_IMAGES, ISIC256, TEST_IMAGES
from tests.serving import Server

ROOT = Path(__file__).resolve().parents[2]
SMALL = TEST_IMAGES[:4]
KEY = "test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def server():
    s = Server("--model", "int8", "--workers", "2", "--queue", "64", "--threads", "1")
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def infer_run(tmp_path_factory):
    """What `skinseg infer` writes for the fixture images, with the same model and options."""
    out = tmp_path_factory.mktemp("infer") / "out"
    subprocess.run([sys.executable, "-m", "skinseg", "infer", *map(str, FULLRES_IMAGES + SMALL), "--model", "int8",
                    "-o", str(out), "-q", "--threads", "1"], check=True, cwd=ROOT)
    with open(out / "results.csv", newline="") as fh:
        rows = {Path(r["file"]).name: r for r in csv.DictReader(fh)}
    return out, rows


def post(url: str, path: Path, query: str = "", **kw) -> httpx.Response:
    return httpx.post(f"{url}/v1/segment{query}", content=path.read_bytes(), headers={"Content-Type": "image/jpeg",
                      **kw.pop("headers", {})}, timeout=60, **kw)


def test_masks_and_figures_equal_infer(server, infer_run):
    out, rows = infer_run
    for path in FULLRES_IMAGES + SMALL:
        row = rows[path.name]
        r = post(server.url, path)
        assert r.status_code == 200, r.text
        d = r.json()
        assert base64.b64decode(d["mask"]) == (out / row["mask"]).read_bytes()  # the same PNG, byte for byte
        for key in ("width", "height", "lesion_area_px", "components", "tiles"):
            assert d[key] == int(row[key]), key
        assert d["lesion_fraction"] == float(row["lesion_fraction"])
        assert " ".join(map(str, d["bbox"])) == row["bbox"]
        assert d["model"]["file"] == "skinseg-int8.onnx" and len(d["model"]["sha256"]) == 64
        png = httpx.post(f"{server.url}/v1/segment", files={"image": (path.name, path.read_bytes(), "image/jpeg")},
                         headers={"Accept": "image/png"}, timeout=60)
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert png.content == (out / row["mask"]).read_bytes()
        assert png.headers["x-skinseg-lesion-area-px"] == row["lesion_area_px"]
        assert png.headers["x-skinseg-bbox"] == row["bbox"]


def test_rle_polygon_and_overlay_describe_the_same_mask(server):
    from pycocotools import mask as coco

    path = FULLRES_IMAGES[0]
    mask = cv2.imdecode(np.frombuffer(base64.b64decode(post(server.url, path).json()["mask"]), np.uint8),
                        cv2.IMREAD_UNCHANGED) > 0
    rle = post(server.url, path, "?mask=rle").json()["mask"]
    assert rle["size"] == list(mask.shape)
    assert np.array_equal(coco.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool), mask)
    d = post(server.url, path, "?mask=polygon&overlay=true").json()
    drawn = np.zeros(mask.shape, np.uint8)
    cv2.fillPoly(drawn, [np.array(p, np.int32) for p in d["mask"]], 1)
    assert (drawn.astype(bool) ^ mask).sum() / mask.sum() < 0.02  # the outline, traced through pixel centres
    overlay = cv2.imdecode(np.frombuffer(base64.b64decode(d["overlay"]), np.uint8), cv2.IMREAD_COLOR)
    assert overlay is not None and overlay.shape[1] / overlay.shape[0] == pytest.approx(mask.shape[1] / mask.shape[0],
                                                                                         rel=0.01)


def test_every_error_is_one_json_line_with_its_status(server, tmp_path):
    cases = [
        (httpx.post(f"{server.url}/v1/segment", timeout=30), 400, "no image"),
        (httpx.post(f"{server.url}/v1/segment", files={"other": ("x.jpg", b"123")}, timeout=30), 400, "no image"),
        (httpx.post(f"{server.url}/v1/segment", files={"image": ("empty.jpg", b"")}, timeout=30), 400,
         "the multipart field 'image' is empty"),
        (httpx.post(f"{server.url}/v1/segment", content=b"hello", headers={"Content-Type": "text/plain"}), 415,
         "Content-Type text/plain"),
        (httpx.post(f"{server.url}/v1/segment", content=b"not an image at all",
                    headers={"Content-Type": "image/jpeg"}), 415, "not a readable image"),
        (httpx.post(f"{server.url}/v1/segment", files={"image": ("cut.jpg", FULLRES_IMAGES[0].read_bytes()[:3000])}),
         422, "cut.jpg: not a readable image"),
        (httpx.post(f"{server.url}/v1/segment?mask=svg", content=FULLRES_IMAGES[0].read_bytes()), 400, "mask=svg"),
        (httpx.get(f"{server.url}/nowhere"), 404, "no such page"),
        (httpx.get(f"{server.url}/v1/segment"), 405, "GET is not allowed"),
    ]
    cases.append((httpx.post(f"{server.url}/v1/segment", content=png_header(40000, 40000),
                             headers={"Content-Type": "image/png"}), 413, "40 MP limit (--max-pixels)"))
    for r, status, words in cases:
        assert r.status_code == status, (r.status_code, r.text)
        body = r.json()
        assert list(body) == ["error"] and words in body["error"] and "\n" not in body["error"]
        assert "Traceback" not in r.text
    assert post(server.url, FULLRES_IMAGES[0]).status_code == 200  # bad requests cost nothing


def test_confidence_and_review_in_json_and_headers(server):
    answer = post(server.url, FULLRES_IMAGES[0]).json()
    assert 0 <= answer["confidence"] <= 1 and answer["review"] is (answer["confidence"] < 0.65)
    png = post(server.url, FULLRES_IMAGES[0], "?format=png")
    assert float(png.headers["x-skinseg-confidence"]) == answer["confidence"]
    assert png.headers["x-skinseg-review"] == ("yes" if answer["review"] else "no")


def test_measurements_in_json_and_headers_with_and_without_a_scale(server):
    plain = post(server.url, FULLRES_IMAGES[0]).json()
    assert plain["diameter_px"] > 0 and plain["diameter_mm"] is None and plain["area_mm2"] is None
    scaled = post(server.url, FULLRES_IMAGES[0], "?pixel_spacing=0.01").json()
    assert scaled["pixel_spacing_mm"] == 0.01 and scaled["diameter_mm"] == pytest.approx(plain["diameter_px"] * 0.01,
                                                                                           abs=1e-3)
    assert scaled["area_mm2"] == pytest.approx(plain["lesion_area_px"] * 1e-4, rel=1e-3)
    png = post(server.url, FULLRES_IMAGES[0], "?pixel_spacing=0.01&format=png")
    assert float(png.headers["x-skinseg-diameter-mm"]) == pytest.approx(scaled["diameter_mm"])
    bad = post(server.url, FULLRES_IMAGES[0], "?pixel_spacing=-1")
    assert bad.status_code == 400 and "millimetres per pixel" in bad.json()["error"]


def test_model_health_and_metrics(server):
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "alive"}
    assert httpx.get(f"{server.url}/readyz").json() == {"status": "ready"}
    d = httpx.get(f"{server.url}/v1/model").json()
    assert d["providers"] == ["CPUExecutionProvider"] and d["engine"]["scale"] == 256
    assert d["options"]["threads"] == 1 and d["service"]["workers"] == 2
    text = httpx.get(f"{server.url}/metrics").text
    assert 'skinseg_requests_total{route="/v1/segment",status="200"}' in text
    assert "skinseg_request_seconds_bucket" in text and "skinseg_queue_depth" in text and "skinseg_images_total" in text


def test_32_concurrent_clients_all_answered_once(server):
    paths = (FULLRES_IMAGES + SMALL) * 4
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda p: post(server.url, p), paths))
    assert [a.status_code for a in answers] == [200] * len(paths)
    assert len({a.headers["x-request-id"] for a in answers}) == len(paths)
    expected = {p.name: post(server.url, p).json()["lesion_area_px"] for p in FULLRES_IMAGES + SMALL}
    assert all(a.json()["lesion_area_px"] == expected[p.name] for a, p in zip(answers, paths, strict=True))


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory):
    from skinseg.shared.images import encode
    from skinseg.shared.synthetic import synth_pair

    rgb, _ = synth_pair(2848, 4288, rng=3)
    path = tmp_path_factory.mktemp("big") / "big.jpg"
    path.write_bytes(encode(".jpg", rgb, 95))
    return path


def test_key_limits_and_overload(big_jpeg, tmp_path):
    saved = tmp_path / "saved"
    s = Server("--model", "int8", "--workers", "1", "--queue", "0", "--max-upload-mb", "8", "--save", str(saved),
               env={"SKINSEG_API_KEY": KEY, "TMPDIR": str(tmp_path)})
    try:
        image = FULLRES_IMAGES[0]
        assert post(s.url, image).status_code == 401
        wrong = post(s.url, image, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "API key" in wrong.json()["error"]
        assert httpx.get(f"{s.url}/v1/model").status_code == 401
        assert httpx.get(f"{s.url}/healthz").status_code == 200  # probes need no key
        auth = {"Authorization": f"Bearer {KEY}"}
        ok = post(s.url, image, headers=auth)
        assert ok.status_code == 200
        assert [p.name for p in saved.iterdir()] == [f"{ok.headers['x-request-id']}.jpg"]
        too_big = httpx.post(f"{s.url}/v1/segment", content=b"\xff\xd8" + b"0" * 9_000_000,
                             headers={**auth, "Content-Type": "image/jpeg"}, timeout=30)
        assert too_big.status_code == 413 and "--max-upload-mb" in too_big.json()["error"]
        barrier = threading.Barrier(8)

        def one(_):
            barrier.wait()
            return post(s.url, big_jpeg, headers=auth)

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(one, range(8)))
        codes = sorted(a.status_code for a in answers)
        assert set(codes) == {200, 503} and len(codes) == 8, codes
        busy = next(a for a in answers if a.status_code == 503)
        assert busy.headers["retry-after"] == "1" and "busy" in busy.json()["error"]
        spilled = [p for p in tmp_path.rglob("*") if p.is_file() and saved not in p.parents
                   and p.read_bytes()[:2] == b"\xff\xd8"]
        assert not spilled  # uploads never written to a temporary file
    finally:
        assert s.stop() == 0


def test_sigterm_finishes_requests_in_flight_and_exits_0(big_jpeg):
    s = Server("--model", "int8", "--workers", "1", "--queue", "8", "-q")
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(post, s.url, big_jpeg) for _ in range(4)]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait until the requests are inside
            metrics = httpx.get(f"{s.url}/metrics").text
            depth = float(next(ln.split()[-1] for ln in metrics.splitlines() if ln.startswith("skinseg_queue_depth")))
            if depth >= 2:
                break
        s.proc.send_signal(signal.SIGTERM)
        answers = [f.result() for f in futures]
    assert [a.status_code for a in answers] == [200] * 4
    assert s.proc.wait(timeout=60) == 0
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{s.url}/healthz", timeout=2)


@pytest.mark.parametrize(("args", "env", "words"), [
    (["--model", "missing.onnx"], {}, "model file not found"),
    (["--host", "0.0.0.0"], {}, "API key"),
    (["--workers", "0"], {}, "--workers 0"),
    (["--max-upload-mb", "nan"], {}, "--max-upload-mb"),
    (["--overlap", "2"], {}, "--overlap 2"),
    ([], {"SKINSEG_API_KEY": "short"}, "shorter than 16"),
    (["--cors", "*"], {}, "--cors '*' without an API key"),
    (["--cors", "viewer.example"], {}, "scheme://host"),
    (["--allowed-host", "*"], {}, "--allowed-host '*' without an API key"),
    (["--max-pixels", "0"], {}, "--max-pixels 0"),
    (["--client-timeout", "0"], {}, "--client-timeout 0"),
    (["--max-connections", "0"], {}, "--max-connections 0"),
])
def test_startup_errors_are_one_line_and_exit_2(args, env, words):
    res = subprocess.run([sys.executable, "-m", "skinseg", "serve", "--port", "0", *args], capture_output=True,
                         text=True, cwd=ROOT, env={**os.environ, "COLUMNS": "250", **env}, timeout=60)
    assert res.returncode == 2, res.stdout + res.stderr
    assert words in res.stderr and len(res.stderr.strip().splitlines()) == 1 and "ready" not in res.stdout


def test_a_port_in_use_is_refused_before_listening(server):
    port = server.url.rsplit(":", 1)[1]
    res = subprocess.run([sys.executable, "-m", "skinseg", "serve", "--port", port], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert res.returncode == 2 and "port is in use" in res.stderr


def test_the_page_segments_an_image_in_a_real_browser(server, tmp_path):
    """Debian's chromium, headless, driven by Playwright, used as a clinic user would: upload a fixture,
    compare the area shown with the API's; a flagged image, an image without a lesion, a scale, an
    unreachable service, the enlarged view and Clear. The screenshots are kept as artifacts."""
    from playwright.sync_api import sync_playwright

    chromium = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()), None)
    assert chromium, "Debian's chromium is needed: bash scripts/test.sh installs it (apt-get install chromium)"
    path, flagged = FULLRES_IMAGES[1], ISIC256 / "test" / "images" / "ISIC_0000127.jpg"
    expected = post(server.url, path).json()["lesion_area_px"]
    assert post(server.url, flagged).json()["review"] is True  # the int8 model is unsure about this one
    skin = np.full((300, 400, 3), (230, 200, 190), np.uint8)  # plain skin colour (RGB), no lesion
    artifacts = Path(os.environ.get("SKINSEG_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    first = ".card:first-child"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone
            page.goto(server.url + "/")
            page.wait_for_function("document.querySelector('#model').textContent.includes('skinseg-int8.onnx')")
            page.focus("#file")  # reachable from the keyboard
            page.set_input_files("#file", [str(path)])
            page.wait_for_selector(".card[data-state=done] img", timeout=60_000)
            assert int(page.text_content(".card[data-state=done] .area-px")) == expected
            figures = page.inner_text(".card[data-state=done] .figures")
            assert f"{expected:,} px" in figures and "Separate parts" in figures and "no scale given" in figures
            assert "Components" not in figures and "Box (" not in figures
            downloads = [page.get_attribute(a, "download") for a in (f"{first} a.button >> nth=0",
                                                                      f"{first} a.button >> nth=1")]
            assert downloads[0].endswith("_mask.png") and downloads[1].endswith("_outlined.jpg")
            page.click(f"{first} button.view")  # enlarge, then compare with the original
            page.wait_for_selector("#viewer[open]")
            page.click("#viewer-toggle")
            assert page.get_attribute("#viewer-img", "src").startswith("blob:")
            page.screenshot(path=str(artifacts / "serve-page-viewer.png"))
            page.click("#viewer-close")

            page.fill("#spacing", "0.02")
            page.set_input_files("#file", [str(flagged)])
            page.wait_for_selector(f"{first}[data-state=done]", timeout=60_000)
            assert "Check this outline" in page.inner_text(f"{first} .review")
            assert " mm (" in page.inner_text(f"{first} .figures")
            page.fill("#spacing", "")

            page.set_input_files("#file", [{"name": "skin.png", "mimeType": "image/png",
                                            "buffer": encode(".png", skin)}])
            page.wait_for_selector(f"{first}[data-state=done]", timeout=60_000)
            assert page.inner_text(f"{first} .none") == "No lesion found in this image."
            assert page.locator(f"{first} a.button").count() == 1  # the outlined image, no empty mask as a result

            page.set_input_files("#file", [{"name": "notes.txt.jpg", "mimeType": "image/jpeg", "buffer": b"hello"}])
            page.wait_for_selector(f"{first}[data-state=error]", timeout=30_000)
            assert "notes.txt.jpg: not a readable image" in page.inner_text(f"{first} .error")
            page.screenshot(path=str(artifacts / "serve-page.png"), full_page=True)

            page.route("**/v1/segment*", lambda route: route.abort())  # the service gone
            page.set_input_files("#file", [str(path)])
            page.wait_for_selector(f"{first}[data-state=error]", timeout=30_000)
            said = page.inner_text(f"{first} .error")
            assert "cannot be reached" in said and "Refused" not in said
            page.click("#clear")
            assert page.locator(".card").count() == 0
        finally:
            browser.close()
    assert (artifacts / "serve-page.png").stat().st_size > 10_000


def test_no_tensorflow_in_the_service(server):
    """The service runs from the edge install: its process never imports TensorFlow."""
    text = json.dumps(httpx.get(f"{server.url}/v1/model").json())
    assert "tensorflow" not in text.lower()
    maps = Path(f"/proc/{server.proc.pid}/maps")
    if maps.exists():
        assert "tensorflow" not in maps.read_text()
