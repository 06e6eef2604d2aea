"""A real Orthanc (with its DICOMweb plugin) for the DICOMweb tests, and what they do with it, run inside
its own network namespace (`unshare -rn`: only a loopback there, so Orthanc, which binds every address,
listens on 127.0.0.1 only), with its own storage folder: a study of six images and one non-image
instance stored in it; `skinseg infer --dicomweb ... --store` twice (the second with --resume); a PACS
that does not answer. What happened goes to OUT/report.json for tests/edge/test_dicomweb.py to check.

    unshare -rn sh -c 'ip link set lo up && exec python -m tests.orthanc STUDY_DIR OUT'
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PLUGIN = next((p for p in ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
                           "/usr/lib/orthanc/libOrthancDicomWeb.so") if Path(p).exists()), None)
PORT = 8042


def http(method: str, path: str, body: bytes | None = None) -> bytes:
    req = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}", data=body, method=method)
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read()


def skinseg(*args: str) -> dict:
    t = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "skinseg", "infer", *args], capture_output=True, text=True,
                         timeout=600, env={**os.environ, "COLUMNS": "200"})
    return {"code": res.returncode, "out": res.stdout, "err": res.stderr, "seconds": time.monotonic() - t}


def main(study_dir: Path, out: Path) -> None:
    orthanc = shutil.which("Orthanc")
    assert orthanc and PLUGIN, "Orthanc and its DICOMweb plugin: bash scripts/test.sh installs orthanc orthanc-dicomweb"
    out.mkdir(parents=True)
    storage = out / "orthanc-storage"
    config = out / "orthanc.json"
    config.write_text(json.dumps({
        "Name": "skinseg-test", "StorageDirectory": str(storage), "IndexDirectory": str(storage), "HttpPort": PORT,
        "DicomServerEnabled": False, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "Plugins": [PLUGIN], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}))
    log = open(out / "orthanc.log", "w")  # noqa: SIM115 - open while Orthanc runs
    proc = subprocess.Popen([orthanc, str(config)], stdout=log, stderr=subprocess.STDOUT)
    report: dict = {}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                http("GET", "/system")
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "Orthanc did not start"
                time.sleep(0.2)
        for f in sorted(study_dir.glob("*.dcm")):
            http("POST", "/instances", f.read_bytes())
        study = json.loads((study_dir / "study.json").read_text())["study"]
        url = f"http://127.0.0.1:{PORT}/dicom-web"
        report["first"] = skinseg("--dicomweb", url, "--study", study, "--store", "-o", str(out / "run"))
        report["modalities"] = modalities(study)
        report["second"] = skinseg("--dicomweb", url, "--study", study, "--store", "-o", str(out / "run"), "--resume")
        report["modalities_after_resume"] = modalities(study)
        report["down"] = skinseg("--dicomweb", f"http://127.0.0.1:{PORT + 1}/dicom-web", "--study", study, "-o",
                                 str(out / "down"))
        report["unknown_study"] = skinseg("--dicomweb", url, "--study", "1.2.3.4.5", "-o", str(out / "none"))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        (out / "report.json").write_text(json.dumps(report, indent=1))


def modalities(study: str) -> list[str]:
    found = json.loads(http("GET", f"/dicom-web/studies/{study}/instances"))
    return sorted(i["00080060"]["Value"][0] for i in found)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
