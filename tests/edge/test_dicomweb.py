"""The PACS round trip against a real Orthanc with its DICOMweb plugin (Debian's orthanc and
orthanc-dicomweb, installed by scripts/test.sh), run in its own network namespace so that it listens
on 127.0.0.1 only (tests/orthanc.py); and the token and URL rules without a PACS."""

import json
import shutil
import subprocess
import sys

import cv2
import pydicom
import pytest
from pydicom.uid import generate_uid

from skinseg.shared.errors import SkinsegError
from tests.cli_helpers import ROOT, csv_rows
from tests.dicom_factory import hostile, in_syntax, photo, write
from tests.realdata import TEST_IMAGES

SOURCES = TEST_IMAGES[:6]


def test_infer_dicomweb_against_orthanc_fetches_segments_and_stores_a_seg_per_image(tmp_path):
    assert shutil.which("unshare") and shutil.which("ip"), "util-linux's unshare and iproute2's ip are needed"
    study, folder = generate_uid(), tmp_path / "study"
    folder.mkdir()
    for i, src in enumerate(SOURCES):
        rgb = cv2.cvtColor(cv2.imread(str(src)), cv2.COLOR_BGR2RGB)
        ds = in_syntax(photo(rgb, study, spacing=0.05 if i == 0 else None, instance=i + 1),
                       "jpeg-baseline" if i % 2 else "rgb")
        write(ds, folder / f"{src.stem}.dcm")
    pdf = hostile(photo(rgb, study), "pdf", folder)  # a non-image instance of the same study
    (folder / "study.json").write_text(json.dumps({"study": study}))
    out = tmp_path / "out"
    script = 'ip link set lo up && exec "$0" -m tests.orthanc "$1" "$2"'
    res = subprocess.run(["unshare", "-rn", "sh", "-c", script, sys.executable, str(folder), str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())

    first = report["first"]
    assert first["code"] == 1, first  # the PDF instance is an error row; the six images are segmented
    rows = csv_rows(out / "run" / "results.csv")
    ok = [r for r in rows if r["status"] == "ok"]
    bad = [r for r in rows if r["status"] == "error"]
    assert len(ok) == 6 and len(bad) == 1 and "PDF" in bad[0]["error"], rows
    assert bad[0]["file"].endswith(f"{pydicom.dcmread(pdf).SOPInstanceUID}.dcm")
    assert len(list((out / "run" / "masks").glob("*.png"))) == 6 and len(list((out / "run" / "seg").glob("*.dcm"))) == 6
    assert sum(r["area_mm2"] != "" for r in ok) == 1  # the one image with Pixel Spacing
    # six SEGs went back into the study, and the report of the one image with a scale
    assert report["modalities"] == ["DOC"] + ["SEG"] * 6 + ["SR"] + ["XC"] * 6
    seg = pydicom.dcmread(next((out / "run" / "seg").glob("*.dcm")))
    assert seg.StudyInstanceUID == study

    second = report["second"]  # --resume: nothing fetched or segmented again, no SEG stored twice
    assert second["code"] == 1 and "6 resumed" in second["out"].replace("\n", " "), second
    assert report["modalities_after_resume"] == report["modalities"]
    assert "left out 6 segmentations" in second["err"] + second["out"]
    assert "left out 1 structured reports" in second["err"] + second["out"]

    down = report["down"]  # a PACS that does not answer: one line, within seconds, nothing written
    assert down["code"] == 2 and down["seconds"] < 15 and "cannot connect" in down["err"], down
    assert len(down["err"].strip().splitlines()) == 1 and not (out / "down").exists()
    unknown = report["unknown_study"]
    assert unknown["code"] == 2 and "1.2.3.4.5" in unknown["err"], unknown


def test_token_comes_from_a_file_or_the_environment_never_a_flag(tmp_path, monkeypatch):
    from skinseg.runner.dicomweb import TOKEN_ENV, Pacs, read_token

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert read_token(None) is None
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    assert read_token(None) == "from-env"
    f = tmp_path / "token"
    f.write_text("from-file\n")
    assert read_token(f) == "from-file"
    f.write_text("\n")
    with pytest.raises(SkinsegError, match="the file is empty"):
        read_token(f)
    assert Pacs("https://pacs.example/dicom-web", "abc").client._session.headers["Authorization"] == "Bearer abc"
    with pytest.raises(SkinsegError, match="expected an http"):
        Pacs("pacs.example/dicom-web")


def test_dicomweb_flags_go_together(tmp_path):
    from tests.cli_helpers import invoke

    for args, words in ((["--study", "1.2"], "--study needs --dicomweb"),
                        (["--dicomweb", "http://127.0.0.1:9/dicom-web"], "--dicomweb needs --study"),
                        (["x.jpg", "--dicomweb", "http://127.0.0.1:9/dicom-web", "--study", "1.2"], "not both")):
        res = invoke("infer", *args, "-o", str(tmp_path / "o"))
        assert res.exit_code == 2 and words in res.output, res.output
