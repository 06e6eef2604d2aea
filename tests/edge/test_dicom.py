"""DICOM in, DICOM SEG out: every transfer syntax the reader takes, hostile files as error rows, the
SEG valid (dciodvfy), read back by highdicom and pydicom, in its source's study and equal to the PNG
mask, and the service answering application/dicom. The files are made here from the ISIC fixtures
(tests/dicom_factory.py); dciodvfy (dicom3tools) and dcmcjpeg (dcmtk) come from scripts/test.sh."""

import io
import shutil
import subprocess
import sys
import textwrap

import cv2
import httpx
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from skinseg.cli import app
from skinseg.shared.images import binarize, load_image, read_mask
from tests.cli_helpers import csv_rows
from tests.dicom_factory import HOSTILE, SYNTAXES, hostile, in_syntax, photo, write
from tests.realdata import ISIC256, TEST_IMAGES
from tests.serving import Server

runner = CliRunner()
SOURCES = TEST_IMAGES[:6]


def _rgb(path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _dciodvfy(path) -> list[str]:
    tool = shutil.which("dciodvfy")
    assert tool, "dicom3tools' dciodvfy is needed: bash scripts/test.sh installs it (apt-get install dicom3tools)"
    res = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (res.stdout + res.stderr).splitlines() if line.startswith("Error")]


@pytest.fixture
def study(tmp_path):
    """Six dermoscopy images as VL Photographic objects of one study: three JPEG Baseline (YCbCr 4:2:2),
    three uncompressed RGB, the first of those with Pixel Spacing 0.05 mm."""
    uid, folder = generate_uid(), tmp_path / "study"
    folder.mkdir()
    for i, src in enumerate(SOURCES):
        syntax = "jpeg-baseline" if i < 3 else "rgb"
        ds = photo(_rgb(src), uid, spacing=0.05 if i == 3 else None, instance=i + 1)
        write(in_syntax(ds, syntax), folder / f"{src.stem}.dcm")
    return uid, folder


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_every_transfer_syntax_decodes_to_the_source_rgb(tmp_path, syntax):
    rgb = _rgb(SOURCES[0])
    path = write(in_syntax(photo(rgb, generate_uid(), spacing=0.02), syntax, tmp_path), tmp_path / "a.dcm")
    loaded = load_image(path)
    diff = np.abs(loaded.rgb.astype(int) - rgb)
    if syntax.startswith("jpeg-") and syntax != "jpeg-lossless":  # a lossy stream of the same pixels
        assert diff.mean() < 2.0, diff.mean()
    else:  # lossless, and YBR_FULL brought back to RGB
        assert diff.max() <= (1 if syntax == "ybr_full" else 0), diff.max()
    assert loaded.pixel_spacing == 0.02 and loaded.dicom.SOPInstanceUID and "PixelData" not in loaded.dicom


def test_infer_writes_a_valid_seg_per_dicom_input_in_its_study(tmp_path, study):
    uid, folder = study
    out = tmp_path / "out"
    res = runner.invoke(app, ["infer", str(folder), "-o", str(out), "-q"])
    assert res.exit_code == 0, res.output
    rows = {r["file"].rsplit("/", 1)[-1]: r for r in csv_rows(out / "results.csv")}
    jpeg_out = tmp_path / "jpeg"
    assert runner.invoke(app, ["infer", *map(str, SOURCES), "-o", str(jpeg_out), "-q"]).exit_code == 0
    import highdicom as hd

    for i, src in enumerate(SOURCES):
        row = rows[f"{src.stem}.dcm"]
        seg_path = out / row["seg"]
        assert row["status"] == "ok" and seg_path == out / "seg" / f"{src.stem}.dcm", row
        assert _dciodvfy(seg_path) == [], src.stem
        seg = hd.seg.segread(seg_path)
        source = pydicom.dcmread(folder / f"{src.stem}.dcm")
        assert seg.StudyInstanceUID == uid and seg.SeriesInstanceUID != source.SeriesInstanceUID
        assert seg.PatientID == source.PatientID and seg.PatientName == source.PatientName
        refs = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
        assert refs.ReferencedSOPInstanceUID == source.SOPInstanceUID
        algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm.AlgorithmName == "skinseg" and seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[
            0].CodeValue == "95324001"
        png = binarize(read_mask(out / row["mask"]))
        assert np.array_equal(seg.pixel_array.astype(bool), png)  # the SEG holds the PNG's pixels
        assert pydicom.dcmread(seg_path).Modality == "SEG"
        theirs = binarize(read_mask(jpeg_out / "masks" / f"{src.stem}.png"))
        jaccard = (png & theirs).sum() / max(1, (png | theirs).sum())
        assert jaccard >= 0.99, (src.stem, jaccard)  # the same masks as from the source JPEGs
        if i == 3:  # Pixel Spacing 0.05 mm: millimetres from the file itself, and a TID 1500 report of them
            assert float(row["pixel_spacing_mm"]) == 0.05
            assert float(row["area_mm2"]) == pytest.approx(int(row["lesion_area_px"]) * 0.05**2, rel=1e-3)
            sr_path = out / row["sr"]
            assert _dciodvfy(sr_path) == [], "SR"
            report = hd.sr.srread(sr_path)
            group = report.content.get_planar_roi_measurement_groups()[0]
            said = {m.name.meaning: m.value for m in group.get_measurements()}
            assert said == {"Area": pytest.approx(float(row["area_mm2"]), abs=1e-3),
                            "Diameter": pytest.approx(float(row["diameter_mm"]), abs=1e-3)}
            assert report.StudyInstanceUID == uid
        else:
            assert row["area_mm2"] == "" and row["sr"] == ""
    res = runner.invoke(app, ["infer", str(folder), "-o", str(out), "-q", "--resume"])  # nothing to redo
    assert res.exit_code == 0 and "0 failed" in res.output.replace("\n", " "), res.output


def test_hostile_and_unsuitable_dicom_files_are_error_rows(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    good = photo(_rgb(SOURCES[0]), generate_uid())
    write(good, folder / "good.dcm")
    seg_input = tmp_path / "first"
    for kind in HOSTILE:
        hostile(good, kind, folder)
    assert runner.invoke(app, ["infer", str(folder / "good.dcm"), "-o", str(seg_input), "-q"]).exit_code == 0
    shutil.copy(seg_input / "seg" / "good.dcm", folder / "a-seg.dcm")  # a SEG given as input
    out = tmp_path / "out"
    res = runner.invoke(app, ["infer", str(folder), "-o", str(out), "-q"])
    assert res.exit_code == 1, res.output
    rows = {r["file"].rsplit("/", 1)[-1].removesuffix(".dcm"): r for r in csv_rows(out / "results.csv")}
    assert rows.pop("good")["status"] == "ok"
    assert "Segmentation" in rows.pop("a-seg")["error"]
    for kind, words in HOSTILE.items():
        row = rows[kind]
        assert row["status"] == "error" and words in row["error"], (kind, row["error"])
        assert "\n" not in row["error"] and not (out / "masks" / f"{kind}.png").exists()
    assert sorted(p.name for p in (out / "seg").iterdir()) == ["good.dcm"]  # nothing for the others


def test_without_the_dicom_extra_a_dicom_input_is_an_error_row_naming_it(tmp_path, study):
    _, folder = study
    block = textwrap.dedent("""
        import sys
        class _NoDicom:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("pydicom", "highdicom", "pylibjpeg", "dicomweb_client"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, _NoDicom())
        from skinseg.cli import main
        sys.argv = ["skinseg", *sys.argv[1:]]
        main()
    """)
    res = subprocess.run([sys.executable, "-c", block, "infer", str(folder), "-o", str(tmp_path / "o"), "-q"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 1, res.stderr
    errors = {r["error"] for r in csv_rows(tmp_path / "o" / "results.csv")}
    assert len(errors) == 1 and "[dicom] extra" in errors.pop()
    for args in (["--help"], ["infer", "--help"]):  # help imports none of it
        code = textwrap.dedent(f"""
            import runpy, sys
            sys.argv = ["skinseg", *{args!r}]
            try:
                runpy.run_module("skinseg", run_name="__main__")
            except SystemExit:
                pass
            print(sorted(m for m in sys.modules if m.split(".")[0] in ("pydicom", "highdicom", "dicomweb_client")))
        """)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert out.stdout.strip().endswith("[]"), out.stdout[-300:]


def test_the_service_answers_a_dicom_upload_with_a_seg(tmp_path, study):
    _, folder = study
    path = sorted(folder.glob("*.dcm"))[3]  # the one with Pixel Spacing
    s = Server("--model", "int8", "--workers", "1", "-q")
    try:
        body = path.read_bytes()
        r = httpx.post(f"{s.url}/v1/segment", content=body, timeout=60,
                       headers={"Content-Type": "application/dicom", "Accept": "application/dicom"})
        assert r.status_code == 200 and r.headers["content-type"] == "application/dicom", r.text[:300]
        answer = tmp_path / "answer.dcm"
        answer.write_bytes(r.content)
        assert _dciodvfy(answer) == []
        seg = pydicom.dcmread(io.BytesIO(r.content))
        assert seg.Modality == "SEG" and seg.StudyInstanceUID == pydicom.dcmread(path).StudyInstanceUID
        j = httpx.post(f"{s.url}/v1/segment", content=body, timeout=60, headers={"Content-Type": "application/dicom"})
        assert j.status_code == 200 and j.json()["pixel_spacing_mm"] == 0.05 and j.json()["area_mm2"] > 0
        jpeg = httpx.post(f"{s.url}/v1/segment", content=SOURCES[0].read_bytes(), timeout=60,
                          headers={"Content-Type": "image/jpeg", "Accept": "application/dicom"})
        assert jpeg.status_code == 406 and "DICOM upload" in jpeg.json()["error"]
        bad = httpx.post(f"{s.url}/v1/segment", content=body[: len(body) // 2], timeout=60,
                         headers={"Content-Type": "application/dicom"})
        assert bad.status_code in (415, 422) and "error" in bad.json()
    finally:
        assert s.stop() == 0


def test_eval_and_check_data_take_dicom_images_with_png_masks(tmp_path, study):
    _, folder = study
    split = tmp_path / "split"
    (split / "masks").mkdir(parents=True)
    shutil.copytree(folder, split / "images")
    for src in SOURCES:
        shutil.copy(ISIC256 / "test" / "masks" / f"{src.stem}_segmentation.png", split / "masks")
    res = runner.invoke(app, ["check-data", str(split)], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "6 usable pairs, 0 problems" in res.output, res.output
    out = tmp_path / "eval"
    res = runner.invoke(app, ["eval", "--images", str(split / "images"), "--masks", str(split / "masks"), "-o",
                              str(out), "-q"])
    assert res.exit_code == 0, res.output
    rows = csv_rows(out / "metrics.csv")
    assert len(rows) == 6 and all(r["status"] == "ok" and float(r["jaccard"]) > 0.5 for r in rows), rows
