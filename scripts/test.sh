#!/usr/bin/env bash
# Set up and run the whole test suite, the way CI does.
#  1. an edge venv (.venv-edge: skinseg[cpu,test,ray,serve,dicom,docs], no TensorFlow) runs the inference-side
#     tests, proving infer/eval/bench/serve work where TensorFlow is not installed (the serve page is
#     tested in Debian's chromium; DICOM SEGs are checked by dicom3tools' dciodvfy, JPEG Lossless test
#     files made by dcmtk, the PACS round trip run against Debian's Orthanc with its DICOMweb plugin:
#     all installed here where missing), then builds the documentation site (mkdocs.yml) strictly;
#  2. an OpenVINO venv (.venv-ov: skinseg[openvino,test]; onnxruntime-openvino ships the onnxruntime
#     module, so it cannot share a venv with [cpu]) runs the provider tests on the OpenVINO EP;
#  3. the full venv (.venv: skinseg[cpu,train,jax,test] and PyTorch's CPU build) runs the training-side tests
#     (TensorFlow, and JAX and PyTorch as Keras' other backends).
# The reference Node.js client (clients/js) is tested against `skinseg infer` in step 1: Node.js comes
# from Debian where missing, its packages from npm (onnxruntime-node's CPU build ships in the package;
# ONNXRUNTIME_NODE_INSTALL=skip stops its post-install step fetching CUDA binaries).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
export PIP_DISABLE_PIP_VERSION_CHECK=1

# apt waits (up to 5 minutes) for another apt, e.g. a fresh machine's automatic updates, instead of failing
apt_install() {
  if fuser /var/lib/dpkg/lock-frontend >/dev/null 2>&1; then echo "waiting for another apt to finish (at most 5 min)..."; fi
  apt-get -o DPkg::Lock::Timeout=300 update -qq && apt-get -o DPkg::Lock::Timeout=300 install -y -qq "$@" >/dev/null
}

setup() {  # setup VENV EXTRAS
  [ -x "$1/bin/python" ] || "$PY" -m venv "$1"
  "$1/bin/python" -m pip install -q -e ".[$2]"
}

echo "== Node.js client =="
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt_install nodejs npm
fi
(cd clients/js && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund --loglevel=error)

echo "== browser for the serve page test (Debian's chromium) =="
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  apt_install chromium
fi

echo "== DICOM tools for the DICOM tests (dciodvfy, dcmtk, Orthanc with DICOMweb) =="
if ! command -v dciodvfy >/dev/null || ! command -v dcmcjpeg >/dev/null || ! command -v Orthanc >/dev/null \
   || ! ls /usr/share/orthanc/plugins/libOrthancDicomWeb.so >/dev/null 2>&1; then
  apt_install dicom3tools dcmtk orthanc orthanc-dicomweb
  # the package starts a system Orthanc where systemd runs; the tests start their own, on loopback only
  (systemctl disable --now orthanc >/dev/null 2>&1 || true)
fi

echo "== edge environment (no TensorFlow) =="
setup .venv-edge cpu,test,ray,serve,dicom,docs
# the OpenVINO tests run below, in their own venv: deselected here, not skipped
SKINSEG_EDGE_ENV=1 .venv-edge/bin/python -m pytest tests/edge -q -p no:cacheprovider -m "not extended and not openvino"
.venv-edge/bin/ruff check skinseg tests scripts benchmarks

echo "== documentation site (mkdocs build --strict: a broken link or a page outside nav fails) =="
site=$(mktemp -d)
NO_MKDOCS_2_WARNING=1 .venv-edge/bin/mkdocs build --strict --quiet -d "$site"
rm -rf "$site"

echo "== OpenVINO environment (onnxruntime-openvino instead of onnxruntime: its own venv) =="
setup .venv-ov openvino,test
SKINSEG_OPENVINO_ENV=1 .venv-ov/bin/python -m pytest tests/edge/test_providers.py -q -p no:cacheprovider

echo "== training environment =="
setup .venv cpu,train,jax,test
# PyTorch for the backend test: 2.13.0's CPU build (190 MB), which these machines keep in pip's local wheel
# folder; elsewhere pip fetches PyPI's 2.13.0 (a CUDA build, several GB) and the test runs the same.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pytest tests/train -q -p no:cacheprovider
