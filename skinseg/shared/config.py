"""INI configuration: the seed project's keys as it wrote them, plus skinseg's new keys.

Read with the standard library. Every value is validated before any work starts; errors name the
file, section, key, the value found and what was expected; an unknown key in a known section is an
error naming the closest known key (a typo must not silently train with a default). Relative paths
resolve against the config file's folder; `working_scale = native` becomes None here, once.
"""

from __future__ import annotations

import ast
import difflib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from skinseg.shared.errors import SkinsegError
from skinseg.shared.metadata import MAX_TILE
from skinseg.shared.runfolder import SAFE_NAME as SAFE_RUN_NAME
from skinseg.shared.scale import DEFAULT_RESIZE, MAX_SCALE, MIN_SCALE, method_from_config

SEED_BLUR_SIGMA = 2.0  # the seed's `[mask] blur = True` smoothed with sigma 2 px
SEED_MODEL = "tensorflowdeeplabv3plus"  # the seed's model family: ResNet50 with the standard decoder


@dataclass(frozen=True)
class Key:
    type: str  # int float bool str path ints floats strs scale choice
    default: Any
    doc: str
    choices: tuple[str, ...] = ()
    lo: float | None = None
    hi: float | None = None
    legacy: bool = False  # a key of the seed project, the predecessor (kept for its users)


C = Key
SCHEMA: dict[str, dict[str, Key]] = {
    "model": {
        "model": C("str", "DeepLabV3Plus", "model family; the seed's TensorflowDeepLabV3Plus means what it meant "
                   "there: ResNet50 with the standard decoder, unless backbone / decoder are given", legacy=True),
        "backbone": C("choice", "mobilenetv2", "encoder", ("mobilenetv2", "resnet50")),
        "decoder": C("choice", "separable", "standard convs, or atrous separable convs (several times cheaper)",
                     ("standard", "separable")),
        "weights": C("str", "none", "encoder init: none | imagenet (downloads; needs internet) | PATH to weights"),
        "alpha": C("float", 1.0, "MobileNetV2 width multiplier", lo=0.35, hi=1.4),
        "bn_momentum": C("float", 0.99, "BatchNorm momentum; keras.applications uses 0.999, which makes "
                         "validation lag training for dozens of epochs when training from scratch", lo=0.5, hi=0.9999),
        "aspp_filters": C("int", 256, "channels of the ASPP and decoder", lo=8, hi=1024),
        "generator": C("bool", True, "accepted for the seed; skinseg always streams with tf.data", legacy=True),
        "image_width": C("int", 256, "tile (model input) width in px, a multiple of 16", lo=32, hi=MAX_TILE,
                         legacy=True),
        "image_height": C("int", 256, "tile (model input) height in px, a multiple of 16", lo=32, hi=MAX_TILE,
                          legacy=True),
        "image_channels": C("int", 3, "must be 3 (RGB)", lo=3, hi=3, legacy=True),
        "num_classes": C("int", 1, "must be 1 (lesion probability)", lo=1, hi=1, legacy=True),
        "working_scale": C("scale", "native", "long side in px that images are resized to before tiling "
                           "(the same scale goes into the exported model), or native"),
        "activation": C("choice", "relu", "activation in ASPP and decoder", ("relu", "mish", "swish", "gelu"),
                        legacy=True),
        "optimizer": C("choice", "Adam", "Adam or AdamW", ("Adam", "AdamW"), legacy=True),
        "weight_decay": C("float", 1e-4, "AdamW weight decay", lo=0, hi=1),
        "dropout_rate": C("float", 0.1, "dropout before the classifier", lo=0, hi=0.9, legacy=True),
        "learning_rate": C("float", 1e-3, "initial learning rate", lo=1e-7, hi=1, legacy=True),
        "clipvalue": C("float", 0.5, "gradient value clipping (0 = off)", lo=0, hi=100, legacy=True),
        "loss": C("choice", "bce_dice", "bce | dice | bce_dice | focal | jaccard (a _loss suffix is accepted)",
                  ("bce", "dice", "bce_dice", "focal", "jaccard"), legacy=True),
        "metrics": C("strs", ["binary_accuracy"], "accepted for the seed; dice, jaccard and binary accuracy "
                     "are always reported", legacy=True),
        "show_summary": C("bool", False, "print the Keras model summary", legacy=True),
    },
    "dataset": {
        "datasetclass": C("str", "ImageMaskDataset", "accepted for the seed", legacy=True),
        "resize_interpolation": C("choice", "cv2.INTER_AREA", "interpolation when shrinking images to the working "
                                  "scale (enlarging is linear); recorded in the exported model, which the engine "
                                  "follows", ("cv2.INTER_AREA", "cv2.INTER_LINEAR", "cv2.INTER_CUBIC",
                                            "cv2.INTER_NEAREST", "cv2.INTER_LANCZOS4"), legacy=True),
        "min_pairs": C("int", 4, "train refuses to start with fewer valid training pairs", lo=1, hi=10**9),
    },
    "train": {
        "name": C("str", "", "run name (default: the config file's stem)"),
        "runs_dir": C("path", "runs/train", "where run folders are created"),
        "epochs": C("int", 100, "number of epochs", lo=1, hi=100000, legacy=True),
        "batch_size": C("int", 8, "batch size", lo=1, hi=4096, legacy=True),
        "steps_per_epoch": C("int", 0, "0 = one pass over the training set", lo=0, legacy=True),
        "validation_steps": C("int", 0, "0 = the whole validation set", lo=0, legacy=True),
        "patience": C("int", 10, "early stopping patience in epochs (0 = off)", lo=0, legacy=True),
        "bn_recalibration": C("int", 16, "before each validation, recompute BatchNorm statistics of the current "
                              "weights over this many training batches (0 = off); without it, from-scratch "
                              "models validate far below their true quality for many epochs", lo=0),
        "min_epochs": C("int", 0, "no early stopping before this epoch (from-scratch models catch up late)",
                        lo=0),
        "learning_rate_reducer": C("bool", True, "ReduceLROnPlateau on val_loss", legacy=True),
        "reducer_patience": C("int", 5, "epochs without improvement before the learning rate is halved",
                              lo=1, legacy=True),
        "schedule": C("choice", "plateau", "plateau (uses learning_rate_reducer) or cosine decay",
                      ("plateau", "cosine")),
        "device_augmentation": C("bool", False, "run the [augmentor] augmentation inside the compiled training step "
                                 "(Keras ops on the GPU; the host only cuts tiles), instead of albumentations "
                                 "threads on the host"),
        "ema": C("float", 0.0, "momentum of an exponential moving average of the weights, which validation, "
                 "checkpoints and export use (0 = off; 0.999 for long schedules)", lo=0, hi=0.99999),
        "warmup_epochs": C("int", 0, "with schedule = cosine: linear learning-rate warm-up over this many epochs",
                           lo=0, hi=1000),
        "train_on_valid": C("bool", False, "final fit: train on train + valid for the fixed schedule (needs "
                            "schedule = cosine; the last epoch is the model; val_* are then seen data)"),
        "monitor": C("choice", "val_jaccard", "metric that picks best.keras", ("val_jaccard", "val_dice",
                                                                              "val_loss")),
        "seed": C("int", 42, "random seed for data order, augmentation and weights", lo=0),
        "mixed_precision": C("choice", "auto", "auto = mixed_float16 on GPU only", ("auto", "on", "off")),
        "jit_compile": C("bool", False, "XLA; helps on GPU, slows the CPU (docs/benchmarks.md)"),
        "cache": C("bool", True, "keep decoded images at the working scale in memory"),
        "val_split": C("float", 0.1, "with dataset_splitter and no [eval] paths: share of train for validation",
                       lo=0.01, hi=0.5),
        "image_datapath": C("path", "", "training images folder", legacy=True),
        "mask_datapath": C("path", "", "training masks folder", legacy=True),
        "save_model_file": C("str", "best.keras", "accepted for the seed; runs save best.keras", legacy=True),
        "dataset_splitter": C("bool", False, "split validation off the training set when [eval] has no paths",
                              legacy=True),
        "metrics": C("strs", [], "accepted for the seed", legacy=True),
        "model_dir": C("path", "", "accepted for the seed; runs go to runs_dir/name", legacy=True),
        "save_weights_only": C("bool", False, "accepted for the seed; runs save full .keras models", legacy=True),
        "eval_dir": C("path", "", "accepted for the seed", legacy=True),
        "create_backup": C("bool", False, "accepted for the seed", legacy=True),
    },
    "eval": {
        "image_datapath": C("path", "", "validation images folder", legacy=True),
        "mask_datapath": C("path", "", "validation masks folder", legacy=True),
    },
    "test": {
        "image_datapath": C("path", "", "test images folder (skinseg eval)", legacy=True),
        "mask_datapath": C("path", "", "test masks folder", legacy=True),
    },
    "infer": {
        "images_dir": C("path", "", "images for skinseg infer --config", legacy=True),
        "output_dir": C("path", "", "output folder for skinseg infer --config", legacy=True),
        "merged_dir": C("path", "", "accepted for the seed; overlays go to output_dir/overlays", legacy=True),
    },
    "mask": {
        "blur": C("bool", False, "smooth the probability before thresholding (sigma 2 px)", legacy=True),
        "binarize": C("bool", True, "accepted for the seed; masks are always binary", legacy=True),
        "threshold": C("float", 128, "threshold: a probability below 1, or 1-255 on the seed's 0-255 scale",
                       lo=0, hi=255, legacy=True),
    },
    "generator": {
        "debug": C("bool", False, "write augmentations.png (a grid of augmented training tiles) in the run "
                   "folder", legacy=True),
        "augmentation": C("bool", True, "online augmentation of training pairs", legacy=True),
    },
    "augmentor": {
        "vflip": C("bool", True, "vertical flips", legacy=True),
        "hflip": C("bool", True, "horizontal flips", legacy=True),
        "rotation": C("bool", True, "rotations by the angles below", legacy=True),
        "angles": C("floats", [0, 90, 180, 270], "rotation angles in degrees", legacy=True),
        "free_rotation": C("float", 0.0, "extra random rotation up to +- this many degrees", lo=0, hi=180),
        "shrinks": C("floats", [0.8], "zoom-out factors (0 < s < 1)", legacy=True),
        "zooms": C("floats", [], "zoom-in factors (> 1)"),
        "shears": C("floats", [0.2], "shear amounts (tangent)", legacy=True),
        "transformer": C("bool", True, "elastic deformation", legacy=True),
        "alpah": C("float", 1300, "elastic strength (the seed's spelling)", lo=0, hi=10000, legacy=True),
        "sigmoid": C("float", 8, "elastic smoothness sigma (the seed's name)", lo=0.1, hi=100, legacy=True),
        "brightness": C("float", 0.2, "colour jitter: brightness (0 = off)", lo=0, hi=1),
        "contrast": C("float", 0.2, "colour jitter: contrast", lo=0, hi=1),
        "saturation": C("float", 0.2, "colour jitter: saturation", lo=0, hi=1),
        "hue": C("float", 0.03, "colour jitter: hue (fraction of the colour circle)", lo=0, hi=0.5),
        "probability": C("float", 0.5, "chance each geometric transform is applied", lo=0, hi=1),
    },
}
ALIASES = {("model", "loss"): lambda v: v[:-5] if isinstance(v, str) and v.endswith("_loss") else v}


def _literal(raw: str) -> Any:
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def _convert(key: Key, raw: str, base: Path) -> tuple[Any, str | None]:
    """(value, error): error says what was expected."""
    v = _literal(raw.strip())
    t = key.type
    if t == "bool":
        if isinstance(v, bool):
            return v, None
        if isinstance(v, str) and v.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return v.lower() in ("true", "yes", "on", "1"), None
        if isinstance(v, int) and v in (0, 1):
            return bool(v), None
        return None, "True or False"
    if t in ("int", "float"):
        if isinstance(v, bool) or not isinstance(v, int | float) or (t == "int" and not float(v).is_integer()):
            return None, f"a{'n integer' if t == 'int' else ' number'}" + _range(key)
        v = int(v) if t == "int" else float(v)
        if not math.isfinite(v) or (key.lo is not None and v < key.lo) or (key.hi is not None and v > key.hi):
            return None, "a number" + _range(key)
        return v, None
    if t in ("ints", "floats", "strs"):
        items = v if isinstance(v, list | tuple) else [v]
        want = str if t == "strs" else (int | float)
        if not all(isinstance(i, want) and not isinstance(i, bool) for i in items):
            return None, "a list like [0, 90, 180]" if t != "strs" else 'a list like ["dice"]'
        return [float(i) if t == "floats" else i for i in items], None
    if t == "scale":
        if isinstance(v, str) and v.lower() == "native":
            return None, None
        if isinstance(v, int) and not isinstance(v, bool) and MIN_SCALE <= v <= MAX_SCALE:
            return v, None
        return None, f"a long side in pixels ({MIN_SCALE} to {MAX_SCALE}) or native"
    s = str(v)
    if t == "choice":
        for c in key.choices:
            if s.lower() == c.lower():
                return c, None
        return None, "one of " + ", ".join(key.choices)
    if t == "path":
        return ((base / s).resolve() if s else None), None
    return s, None


def _range(key: Key) -> str:
    if key.lo is not None and key.hi is not None:
        return f" between {key.lo:g} and {key.hi:g}"
    if key.lo is not None:
        return f" >= {key.lo:g}"
    return ""


def defaults() -> dict[str, dict[str, Any]]:
    return {s: {k: key.default for k, key in keys.items()} for s, keys in SCHEMA.items()}


class Config(SimpleNamespace):
    """Validated configuration: `cfg.model.backbone`, `cfg.train.epochs`; `cfg.path` is the file."""

    def as_dict(self) -> dict[str, dict[str, Any]]:
        def plain(sec: str, k: str, v: Any) -> Any:
            if SCHEMA[sec][k].type == "scale" and v is None:
                return "native"
            return str(v) if isinstance(v, Path) else v

        return {s: {k: plain(s, k, v) for k, v in vars(getattr(self, s)).items()} for s in SCHEMA}

    @property
    def blur_sigma(self) -> float:
        """The seed's boolean `[mask] blur` as the Gaussian sigma it meant."""
        return SEED_BLUR_SIGMA if self.mask.blur else 0.0

    @property
    def resize(self) -> dict[str, str]:
        """How images go to the working scale and back (recorded in the exported model)."""
        return DEFAULT_RESIZE | {"image_down": method_from_config(self.dataset.resize_interpolation)}

    @property
    def tile(self) -> tuple[int, int]:
        return self.model.image_height, self.model.image_width


def _uncomment(value: str) -> str:
    """The value without an inline comment: `#` or `;` after white space and outside quotes starts one."""
    quote = None
    for i, ch in enumerate(value):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "#;" and i > 0 and value[i - 1].isspace():
            return value[:i]
    return value


def read_ini(path: Path) -> list[tuple[str, list[tuple[str, str, int]]]]:
    """[(section, [(key, raw value, line)])] of an INI file, by one documented rule (docs/segment.md,
    "Configs"): whole-line comments start with # or ;, inline ones with # or ; after white space
    outside quotes; a value in quotes keeps what is inside them; section and key names ignore case and
    surrounding spaces, and a name given twice is an error naming both lines; no [DEFAULT], no indented
    or continued lines."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # Notepad writes a BOM
    except UnicodeDecodeError as exc:
        raise SkinsegError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise SkinsegError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    sections: list[tuple[str, list[tuple[str, str, int]]]] = []
    seen: dict[str, tuple[str, int]] = {}
    keys: dict[tuple[str, str], tuple[str, int]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if line[0] in " \t":
            raise SkinsegError(f"{path}:{n}: indented line {stripped[:40]!r}: start keys at the beginning of the "
                               "line (a value cannot continue on the next line)")
        if stripped.startswith("["):
            head = _uncomment(stripped).strip()
            if not head.endswith("]"):
                raise SkinsegError(f"{path}:{n}: {stripped[:40]!r}: a section header is [name]")
            name = head[1:-1]
            norm = name.strip().lower()
            if norm == "default":
                raise SkinsegError(f"{path}:{n}: [{name}] is not used by skinseg: put each key under its own "
                                   "section ([train], [model] ...)")
            if norm in seen:
                first, at = seen[norm]
                raise SkinsegError(f"{path}:{n}: section [{name}] repeats [{first}] of line {at} (names ignore case "
                                   "and spaces); merge them")
            seen[norm] = (name, n)
            sections.append((name, []))
            continue
        if not sections:
            raise SkinsegError(f"{path}:{n}: {stripped[:40]!r} comes before any [section]")
        key, sep, raw = line.partition("=")
        if not sep:
            key, sep, raw = line.partition(":")
        if not sep or not key.strip():
            raise SkinsegError(f"{path}:{n}: {stripped[:40]!r}: expected key = value")
        value = _uncomment(raw).strip()
        if value[:1] in ("'", '"') and (len(value) < 2 or value[-1] != value[0]):
            raise SkinsegError(f"{path}:{n}: {key.strip()} = {value}: the quote is not closed")
        section = sections[-1][0].strip().lower()
        norm_key = (section, key.strip().lower())
        if norm_key in keys:
            first, at = keys[norm_key]
            raise SkinsegError(f"{path}:{n}: [{section}] {key.strip()} repeats {first} of line {at} (names ignore "
                               "case and spaces); keep one")
        keys[norm_key] = (key.strip(), n)
        sections[-1][1].append((key.strip(), value, n))
    return sections


def load_config(path: str | Path, warn: Any = None) -> Config:
    """Read and validate an INI file; `warn(message)` receives warnings (unknown keys)."""
    path = Path(path)
    if not path.is_file():
        raise SkinsegError(f"config file not found: {path}; `skinseg init-config {path}` writes a template")
    sections = read_ini(path)
    base = path.resolve().parent
    values = defaults()
    given: set[tuple[str, str]] = set()
    values["model"]["working_scale"] = None  # "native"
    for key_name, key in SCHEMA["train"].items():
        if key.type == "path" and key.default:
            values["train"][key_name] = (base / key.default).resolve()
    for section, items in sections:
        sec = section.strip().lower()
        if sec not in SCHEMA:
            close = difflib.get_close_matches(sec, SCHEMA, 1)
            if warn:
                hint = f"; did you mean [{close[0]}]?" if close else ""
                warn(f"{path}: unknown section [{section}] ignored{hint}")
            continue
        for name, raw, line in items:
            key = SCHEMA[sec].get(name.strip().lower())
            if key is None:
                close = difflib.get_close_matches(name.lower(), SCHEMA[sec], 1)
                raise SkinsegError(f"{path}:{line}: [{sec}] unknown key {name!r}"
                                   + (f"; did you mean {close[0]!r}?" if close else "")
                                   + f" (`skinseg init-config` lists every key of [{sec}])")
            fix = ALIASES.get((sec, name.lower()))
            raw2 = raw
            if fix:
                raw2 = repr(fix(_literal(raw.strip())))
            value, expected = _convert(key, raw2, base)
            if expected:
                raise SkinsegError(f"{path}:{line}: [{sec}] {name} = {raw.strip()}: expected {expected}")
            values[sec][name.lower()] = value
            given.add((sec, name.lower()))
    w = str(values["model"]["weights"] or "none")
    if w.lower() in ("none", "imagenet"):
        values["model"]["weights"] = w.lower()
    elif not Path(w).is_absolute():
        values["model"]["weights"] = str((base / w).resolve())  # a weights file, like every path: config-relative
    m = values["mask"]
    raw_threshold = m["threshold"]
    if raw_threshold >= 1:  # the seed's 0-255 scale
        m["threshold"] = raw_threshold / 255.0
    if not 0 < m["threshold"] <= 1:
        raise SkinsegError(f"{path}: [mask] threshold = {raw_threshold:g}: expected a probability in (0, 1) or "
                           "1-255 on the seed's scale")
    mod = values["model"]
    for k in ("image_height", "image_width"):
        if mod[k] % 16:
            raise SkinsegError(f"{path}: [model] {k} = {mod[k]}: expected a multiple of 16 (the model's output "
                               f"stride), e.g. {max(32, round(mod[k] / 16) * 16)}")
    if str(mod["model"]).lower() == SEED_MODEL:  # a seed config means what it meant in the seed
        if ("model", "backbone") not in given:
            mod["backbone"] = "resnet50"
        if ("model", "decoder") not in given:
            mod["decoder"] = "standard"
    tr = values["train"]
    if tr["train_on_valid"] and tr["schedule"] != "cosine":
        raise SkinsegError(f"{path}: [train] train_on_valid = True needs schedule = cosine (a fixed schedule: no "
                           "validation data is left to reduce the learning rate or stop early on)")
    if not values["train"]["name"]:  # from the file name, made a safe folder name ("my config" -> "my-config")
        values["train"]["name"] = re.sub(r"[^A-Za-z0-9._+-]+", "-", path.stem).strip("-.") or "run"
    if not SAFE_RUN_NAME.match(values["train"]["name"]):
        raise SkinsegError(f"{path}: [train] name = {values['train']['name']}: use letters, digits, '.', '_', '+' "
                           "and '-' only (a run folder name, not a path)")
    cfg = Config(**{s: SimpleNamespace(**v) for s, v in values.items()})
    cfg.path = path
    return cfg


def infer_defaults(path: str | Path) -> dict[str, Any]:
    """What `skinseg infer --config` takes from [infer] (its [mask] section reaches the engine through
    runner.models.config_engine, as eval's does)."""
    cfg = load_config(path)
    return {"inputs": [str(cfg.infer.images_dir)] if cfg.infer.images_dir else [], "output": cfg.infer.output_dir}


def template() -> str:
    """A commented config with every key at its default (`skinseg init-config`)."""
    lines = ["; skinseg configuration. Seed-project keys are accepted as the seed wrote them.",
             "; Relative paths resolve against this file's folder. Run: skinseg train THIS_FILE", ""]
    for sec, keys in SCHEMA.items():
        lines.append(f"[{sec}]")
        for name, key in keys.items():
            default = key.default
            if key.type in ("str", "choice", "path") and default != "":
                default = f'"{default}"'
            elif key.type == "path":
                default = '""'
            elif key.type in ("floats", "ints", "strs"):
                default = "[" + ", ".join(f'"{d}"' if isinstance(d, str) else f"{d:g}" for d in default) + "]"
            elif key.type == "scale":
                default = default if isinstance(default, int) else '"native"'
            extra = f" ({' | '.join(key.choices)})" if key.choices and key.type == "choice" else ""
            lines.append(f"; {key.doc}{extra}")
            lines.append(f"{name} = {default}")
        lines.append("")
    return "\n".join(lines)


def reference_markdown() -> str:
    """docs/configuration.md, generated from SCHEMA (a test keeps the page in step)."""
    out = []
    for sec, keys in SCHEMA.items():
        out.append(f"**[{sec}]**\n\n| key | default | meaning |\n|---|---|---|")
        for k, key in keys.items():
            d = key.default
            if isinstance(d, list):
                d = "[" + ", ".join(f"{x:g}" if isinstance(x, int | float) else str(x) for x in d) + "]"
            choices = " (" + " \\| ".join(key.choices) + ")" if key.choices else ""
            seed = " *(seed key)*" if key.legacy else ""
            doc = key.doc.replace("|", "\\|")
            out.append(f"| `{k}` | `{d}` | {doc}{choices}{seed} |")
        out.append("")
    return "\n".join(out)
