"""A hostile probe of every command: odd inputs, flags, configs, models, links and environments.

Usage: python scripts/probe.py [--only WORD]      (run it from the edge venv: .venv-edge/bin/python)

Each case runs `skinseg ...` in a fresh temporary folder and passes when: the exit code is one it may
have (0 ok, 1 some inputs failed, 2 usage/config/model error, 130 interrupted), stderr holds no
traceback and no "unexpected", an error is one line, and nothing was written outside the case's
folder. Prints one line per case and the defects at the end; exits 1 when there are defects.
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "ISIC_0000002.jpg"
TEST = ROOT / "tests" / "data" / "isic" / "isic256" / "test"
FP32 = ROOT / "skinseg" / "models" / "skinseg-fp32.onnx"


def png_header(path: Path, w: int, h: int) -> None:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
                     + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)))


def images(d: Path, n: int = 2) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for p in sorted((TEST / "images").glob("*.jpg"))[:n]:
        shutil.copy(p, d)
    return d


def dataset(d: Path, n: int = 3) -> Path:
    for sub in ("images", "masks"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    for p in sorted((TEST / "images").glob("*.jpg"))[:n]:
        shutil.copy(p, d / "images")
        shutil.copy(TEST / "masks" / f"{p.stem}_segmentation.png", d / "masks")
    return d


def w(path: Path, data: str | bytes) -> Path:
    """Write `data` to `path`; the path (write_text returns a count, which must not become an argument)."""
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def config(d: Path, text: str, name: str = "c.ini") -> Path:
    p = d / name
    p.write_text(text)
    return p


# (name, setup(tmp) -> args, env, allowed exit codes, words stderr or stdout must hold)
CASES: list[tuple[str, object, dict, set, str]] = [
    # infer: inputs
    ("infer empty folder", lambda t: ["infer", str((t / "e").mkdir() or t / "e")], {}, {2}, "no images"),
    ("infer zero-byte jpg", lambda t: ["infer", str(w(t / "z.jpg", b"")), "-o",
                                       str(t / "o")], {}, {1}, "empty file"),
    ("infer text named .png", lambda t: ["infer", str(w(t / "x.png", "hi")), "-o",
                                         str(t / "o")], {}, {1}, "not a readable image"),
    ("infer png bomb header", lambda t: (png_header(t / "b.png", 60000, 60000), ["infer", str(t / "b.png"), "-o",
                                                                                 str(t / "o")])[1], {}, {1}, "MP"),
    ("infer 1x1 image", lambda t: (__import__("cv2").imwrite(str(t / "one.png"), __import__("numpy").zeros((1, 1, 3),
                                   "uint8")), ["infer", str(t / "one.png"), "-o", str(t / "o")])[1], {}, {0}, ""),
    ("infer 3x5000 strip", lambda t: (__import__("cv2").imwrite(str(t / "s.png"), __import__("numpy").full(
        (3, 5000, 3), 90, "uint8")), ["infer", str(t / "s.png"), "-o", str(t / "o")])[1], {}, {0}, ""),
    ("infer a folder as file glob", lambda t: ["infer", str(images(t / "i")) + "/*.jpg", "-o", str(t / "o")], {},
     {0}, ""),
    ("infer glob matching nothing", lambda t: ["infer", str(t / "*.webp")], {}, {2}, "no images"),
    ("infer same stem twice", lambda t: (images(t / "i", 1), shutil.copy(next((t / "i").glob("*.jpg")),
                                         t / "i" / "x.JPG"), shutil.copy(SAMPLE, t / "i" / "X.jpg"),
                                         ["infer", str(t / "i"), "-o", str(t / "o")])[3], {}, {0}, ""),
    ("infer -o is a file", lambda t: ["infer", str(SAMPLE), "-o", str(w(t / "f", "x"))], {},
     {2}, "is a file"),
    ("infer -o inside input", lambda t: ["infer", str(images(t / "i")), "-o", str(t / "i")], {}, {2},
     "holds, the input"),
    ("infer -o parent of input", lambda t: ["infer", str(images(t / "i")), "-o", str(t)], {}, {2}, "holds, the input"),
    ("infer --resume without -o", lambda t: ["infer", str(SAMPLE), "--resume"], {}, {2}, "--resume needs -o"),
    ("infer --shard 3/2", lambda t: ["infer", str(SAMPLE), "--shard", "3/2"], {}, {2}, "--shard"),
    ("infer --shard abc", lambda t: ["infer", str(SAMPLE), "--shard", "abc"], {}, {2}, "--shard"),
    ("infer --overlay-max -1", lambda t: ["infer", str(SAMPLE), "--overlay-max", "-1"], {}, {2}, "--overlay-max"),
    # infer: engine flags
    ("infer --tile 4", lambda t: ["infer", str(SAMPLE), "--tile", "4"], {}, {2}, "--tile"),
    ("infer --tile 12x", lambda t: ["infer", str(SAMPLE), "--tile", "12x"], {}, {2}, "--tile"),
    ("infer --scale 31", lambda t: ["infer", str(SAMPLE), "--scale", "31"], {}, {2}, "--scale"),
    ("infer --scale huge", lambda t: ["infer", str(SAMPLE), "--scale", "99999999999"], {}, {2}, "--scale"),
    ("infer --scale word", lambda t: ["infer", str(SAMPLE), "--scale", "big"], {}, {2}, "--scale"),
    ("infer --overlap nan", lambda t: ["infer", str(SAMPLE), "--overlap", "nan"], {}, {2}, "--overlap"),
    ("infer --overlap -0.1", lambda t: ["infer", str(SAMPLE), "--overlap", "-0.1"], {}, {2}, "--overlap"),
    ("infer --threshold inf", lambda t: ["infer", str(SAMPLE), "--threshold", "inf"], {}, {2}, "--threshold"),
    ("infer --threshold 0", lambda t: ["infer", str(SAMPLE), "--threshold", "0"], {}, {2}, "--threshold"),
    ("infer --blur 1e9", lambda t: ["infer", str(SAMPLE), "--blur", "1e9"], {}, {2}, "--blur"),
    ("infer --keep none", lambda t: ["infer", str(SAMPLE), "--keep", "none"], {}, {2}, "--keep"),
    ("infer --min-area -1", lambda t: ["infer", str(SAMPLE), "--min-area", "-1"], {}, {2}, "--min-area"),
    ("infer --batch 100000", lambda t: ["infer", str(SAMPLE), "--batch", "100000"], {}, {2}, "--batch"),
    ("infer --threads -2", lambda t: ["infer", str(SAMPLE), "--threads", "-2"], {}, {2}, "--threads"),
    ("infer --graph-opt max", lambda t: ["infer", str(SAMPLE), "--graph-opt", "max"], {}, {2}, "--graph-opt"),
    ("infer --max-tiles 1 on a big image", lambda t: ["infer", str(SAMPLE), "--scale", "native", "--max-tiles", "1"],
     {}, {2}, "--max-tiles"),
    ("infer --provider rocm", lambda t: ["infer", str(SAMPLE), "--provider", "rocm"], {}, {2}, "rocm"),
    ("infer --provider nonsense", lambda t: ["infer", str(SAMPLE), "--provider", "quantum"], {}, {2}, "--provider"),
    # infer: models
    ("infer --model a .keras", lambda t: ["infer", str(SAMPLE), "--model", str(w(t / "m.keras", "x"))], {}, {2},
     "export"),
    ("infer --model folder", lambda t: ["infer", str(SAMPLE), "--model", str(t)], {}, {2}, "run folder"),
    ("infer --model text file", lambda t: ["infer", str(SAMPLE), "--model", str(w(t / "m.onnx", "x"))], {}, {2},
     "ONNX"),
    ("infer --model empty", lambda t: ["infer", str(SAMPLE), "--model", str(w(t / "m.onnx", b""))], {}, {2}, "m.onnx"),
    # environment
    ("infer SKINSEG_MAX_PIXELS=0", lambda t: ["infer", str(SAMPLE)], {"SKINSEG_MAX_PIXELS": "0"}, {2},
     "SKINSEG_MAX_PIXELS"),
    ("infer SKINSEG_MAX_BYTES=1e3", lambda t: ["infer", str(SAMPLE)], {"SKINSEG_MAX_BYTES": "1e3"}, {2},
     "SKINSEG_MAX_BYTES"),
    ("infer LC_ALL=C odd name", lambda t: (shutil.copy(SAMPLE, t / "ü ß.jpg"), ["infer", str(t / "ü ß.jpg"), "-o",
                                                                               str(t / "o")])[1],
     {"LC_ALL": "C", "PYTHONIOENCODING": "ascii"}, {0}, ""),
    # links
    ("infer planted lock link", lambda t: ((t / "o").mkdir(), (t / "o" / ".skinseg.lock").symlink_to(t / "x"),
                                           ["infer", str(SAMPLE), "-o", str(t / "o"), "--exist-ok"])[2], {}, {2},
     "symbolic link"),
    ("infer planted journal link", lambda t: ((t / "o").mkdir(), (t / "o" / ".results.partial.csv").symlink_to(
        t / "x"), ["infer", str(SAMPLE), "-o", str(t / "o"), "--exist-ok"])[2], {}, {0, 2}, ""),
    ("infer symlinked input folder", lambda t: (images(t / "real"), (t / "ln").symlink_to(t / "real"),
                                                ["infer", str(t / "ln"), "-o", str(t / "o")])[2], {}, {0}, ""),
    # eval
    ("eval no data", lambda t: ["eval"], {}, {2}, "no test data"),
    ("eval --images missing", lambda t: ["eval", "--images", str(t / "none")], {}, {2}, "no such folder"),
    ("eval masks of other size", lambda t: (dataset(t / "d", 1), __import__("cv2").imwrite(
        str(next((t / "d" / "masks").glob("*.png"))), __import__("numpy").zeros((5, 5), "uint8")),
        ["eval", "--images", str(t / "d"), "-o", str(t / "o")])[2], {}, {1}, "size mismatch"),
    ("eval a 16-bit mask", lambda t: (dataset(t / "d", 2), ["eval", "--images", str(t / "d"), "-o", str(t / "o"),
                                                            "--worst", "0"])[1], {}, {0}, ""),
    ("eval --worst -1", lambda t: ["eval", "--images", str(dataset(t / "d", 1)), "--worst", "-1", "-o",
                                   str(t / "o")], {}, {0, 2}, ""),
    ("eval config without [test]", lambda t: ["eval", str(config(t, "[train]\nepochs = 1\n"))], {}, {2}, "[test]"),
    ("eval --model missing", lambda t: ["eval", "--images", str(dataset(t / "d", 1)), "--model", "nope.onnx"], {},
     {2}, "nope.onnx"),
    # configs
    ("check-data tab in key", lambda t: ["check-data", str(config(t, "[train]\n\tepochs = 1\n"))], {}, {2},
     "indented"),
    ("check-data key before section", lambda t: ["check-data", str(config(t, "epochs = 1\n[train]\n"))], {}, {2},
     "before any"),
    ("check-data unknown key", lambda t: ["check-data", str(config(t, "[train]\nepocks = 1\n"))], {}, {2}, "epochs"),
    ("check-data binary config", lambda t: ["check-data", str(w(t / "b.ini", b"\xff\xfe[\x00"))], {}, {2}, "UTF-8"),
    ("check-data unclosed quote", lambda t: ["check-data", str(config(t, '[train]\nimage_datapath = "x\n'))], {}, {2},
     "quote"),
    ("check-data a config folder", lambda t: ["check-data", str(t / "nothere")], {}, {2}, "no such"),
    ("check-data empty folder", lambda t: ["check-data", str((t / "e").mkdir() or t / "e")], {}, {2}, "no usable"),
    ("check-data duplicate section", lambda t: ["check-data", str(config(t, "[eval]\n[Eval]\n"))], {}, {2}, "repeats"),
    # init-config
    ("init-config existing", lambda t: ["init-config", str(config(t, "x"))], {}, {2}, "exists"),
    ("init-config read-only folder", lambda t: ((t / "ro").mkdir(), os.chmod(t / "ro", 0o500),
                                                ["init-config", str(t / "ro" / "c.ini")])[2], {}, {0, 2}, ""),
    # bench, doctor
    ("bench --size 10x10", lambda t: ["bench", "--size", "10x10"], {}, {2}, "--size"),
    ("bench --size axb", lambda t: ["bench", "--size", "axb"], {}, {2}, "--size"),
    ("bench --repeat -3", lambda t: ["bench", "--repeat", "-3"], {}, {2}, "--repeat"),
    ("bench --image text", lambda t: ["bench", "--image", str(w(t / "a.jpg", "x"))], {},
     {1, 2}, "a.jpg"),
    ("eval --worst -1 refused", lambda t: ["eval", "--images", str(dataset(t / "d", 1)), "--worst", "-1"], {}, {2},
     "--worst"),
    ("doctor", lambda t: ["doctor"], {}, {0}, ""),
    # quantize, convert, export
    ("quantize no calibration folder", lambda t: ["quantize", str(FP32), "--calibration", str(t / "x")], {}, {2},
     "--calibration"),
    ("quantize empty calibration", lambda t: ["quantize", str(FP32), "--calibration", str((t / "c").mkdir() or
                                                                                          t / "c")], {}, {2},
     "no images"),
    ("quantize --target tpu", lambda t: ["quantize", str(FP32), "--calibration", str(images(t / "c")), "--target",
                                         "tpu"], {}, {2}, "--target"),
    ("quantize -o the model", lambda t: (shutil.copy(FP32, t / "m.onnx"), ["quantize", str(t / "m.onnx"),
                                         "--calibration", str(images(t / "c")), "-o", str(t / "m.onnx")])[1], {}, {2},
     "overwrite"),
    ("convert --to tflite", lambda t: ["convert", str(FP32), "--to", "tflite"], {}, {2}, "--to"),
    ("convert missing model", lambda t: ["convert", str(t / "m.onnx"), "--to", "ort"], {}, {2}, "no such"),
    ("convert -o the model", lambda t: (shutil.copy(FP32, t / "m.onnx"), ["convert", str(t / "m.onnx"), "--to", "ort",
                                                                          "-o", str(t / "m.onnx")])[1], {}, {2},
     "being converted"),
    ("export a missing run", lambda t: ["export", str(t / "run")], {}, {2}, ""),
    # serve
    ("serve --port 70000", lambda t: ["serve", "--port", "70000"], {}, {2}, "--port"),
    ("serve --queue -1", lambda t: ["serve", "--queue", "-1"], {}, {2}, "--queue"),
    ("serve --api-key-file missing", lambda t: ["serve", "--api-key-file", str(t / "k")], {}, {2}, "--api-key-file"),
    ("serve empty key file", lambda t: ["serve", "--api-key-file", str(w(t / "k", ""))], {}, {2},
     "no key in it"),
    ("serve --save a file", lambda t: ["serve", "--save", str(w(t / "f", "x"))], {}, {2}, ""),
    ("serve --host nonsense", lambda t: ["serve", "--host", "999.1.1.1", "--insecure-no-auth"], {}, {2}, ""),
    # ray
    ("infer --ray garbage", lambda t: ["infer", str(SAMPLE), "--ray", "nohost"], {}, {2}, "--ray"),
    ("infer --gpus-per-worker nan", lambda t: ["infer", str(SAMPLE), "--ray", "local", "--gpus-per-worker", "nan"], {},
     {2}, "--gpus-per-worker"),
]


def run_case(name: str, setup, env: dict, codes: set, words: str) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as watched:
        t = Path(tmp)
        args = setup(t)
        before = set(Path(watched).rglob("*"))
        try:
            res = subprocess.run([sys.executable, "-m", "skinseg", *args], cwd=t, capture_output=True, text=True,
                                 timeout=120, env={**os.environ, "COLUMNS": "250", "TMPDIR": watched, **env},
                                 errors="replace")
        except subprocess.TimeoutExpired:
            return False, f"BAD {name:<36} no answer in 120 s"
        for p in t.rglob("*"):  # let the folder go even after a read-only case
            if p.is_dir():
                os.chmod(p, 0o755)
        err = res.stderr.strip()
        problems = []
        if res.returncode not in codes:
            problems.append(f"exit {res.returncode} (expected {sorted(codes)})")
        if "Traceback" in err or "unexpected" in err:
            problems.append("traceback / unexpected")
        errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
        if len(errors) > 1:
            problems.append("more than one error line")
        if words and words not in res.stderr + res.stdout:
            problems.append(f"no {words!r} in the message")
        leaked = {p for p in Path(watched).rglob("*") if "skinseg-cache" not in p.parts} - before
        leaked = {p for p in leaked if p.name not in (".ses",)}  # onnxruntime's own session marker
        if leaked:
            problems.append(f"left {len(leaked)} files in TMPDIR")
        first = (errors or err.splitlines() or [""])[0][:110]
        return not problems, f"{'ok ' if not problems else 'BAD'} {name:<36} exit {res.returncode}  {first}" + (
            f"  <- {'; '.join(problems)}" if problems else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    bad = []
    cases = [c for c in CASES if args.only in c[0]]
    for case in cases:
        ok, line = run_case(*case)
        print(line, flush=True)
        if not ok:
            bad.append(line)
    print(f"\n{len(cases)} cases, {len(cases) - len(bad)} ok, {len(bad)} defects")
    for line in bad:
        print(line)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
