"""`skinseg train`: a run folder with the best model, the last state, logs and plots.

runs/train/<name>/: config.ini (resolved), data.json, best.keras, last.keras, state.json,
history.csv, curves.png, tensorboard/, versions.json, augmentations.png (with --preview or debug).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import platform
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np

from skinseg import __version__, ui
from skinseg.shared import atomic
from skinseg.shared.checkdata import check_split
from skinseg.shared.config import SCHEMA, Config, load_config
from skinseg.shared.dataset import find_pairs
from skinseg.shared.errors import SkinsegError
from skinseg.training.tf_env import import_tf, setup_devices


# -- data ------------------------------------------------------------------------------------------
def _split_dirs(cfg: Config, section: str) -> tuple[Path, Path] | None:
    sec = getattr(cfg, section)
    img, mask = sec.image_datapath, sec.mask_datapath
    if not img:
        return None
    if not Path(img).is_dir():
        raise SkinsegError(f"{cfg.path}: [{section}] image_datapath = {img}: folder not found")
    if mask and not Path(mask).is_dir():
        raise SkinsegError(f"{cfg.path}: [{section}] mask_datapath = {mask}: folder not found")
    return (Path(img), Path(mask)) if mask else find_pairs(Path(img))


def preflight(cfg: Config, quiet: bool = False) -> tuple[list, list, dict[str, Any]]:
    """check-data on the train and validation splits; returns usable pairs and a dataset summary."""
    train_dirs = _split_dirs(cfg, "train")
    if train_dirs is None:
        raise SkinsegError(f"{cfg.path}: [train] image_datapath is not set; point it at the training images")
    val_dirs = _split_dirs(cfg, "eval")
    reports = []
    with ui.progress(transient=True, disable=quiet) as bar:
        for name, dirs in (("train", train_dirs), ("valid", val_dirs)):
            if dirs is None:
                continue
            task = bar.add_task(f"checking {name}", total=None)
            reports.append(check_split(name, *dirs, on_item=lambda t=task: bar.advance(t)))
    for rep in reports:
        for file, why in rep.problems[:20]:
            ui.warn(f"{rep.name}: skipped {file}: {why}")
        if len(rep.problems) > 20:
            ui.warn(f"{rep.name}: ... and {len(rep.problems) - 20} more unusable pairs (skinseg check-data)")
    train = reports[0].good
    if val_dirs is not None:
        val = reports[1].good
    elif cfg.train.dataset_splitter:
        rng = np.random.default_rng(cfg.train.seed)
        idx = rng.permutation(len(train))
        n_val = max(1, round(len(train) * cfg.train.val_split))
        val = [train[i] for i in sorted(idx[:n_val])]
        train = [train[i] for i in sorted(idx[n_val:])]
    else:
        raise SkinsegError(f"{cfg.path}: no validation data: set [eval] image_datapath and mask_datapath, "
                           "or [train] dataset_splitter = True")
    minimum = cfg.dataset.min_pairs
    if len(train) < minimum or not val:
        raise SkinsegError(
            f"too little valid data to train: {len(train)} usable training pairs (minimum [dataset] min_pairs = "
            f"{minimum}) and {len(val)} validation pairs; run `skinseg check-data` on {train_dirs[0]}")
    summary = {
        "train": {"pairs": len(train), "skipped": len(reports[0].problems), "images": str(train_dirs[0]),
                  "masks": str(train_dirs[1])},
        "valid": {"pairs": len(val), "source": str(val_dirs[0]) if val_dirs else "split from train"},
        "working_scale": cfg.model.working_scale,
        "tile": [cfg.model.image_height, cfg.model.image_width],
    }
    return train, val, summary


# -- run folder ------------------------------------------------------------------------------------
def new_run_dir(cfg: Config) -> Path:
    base = Path(cfg.train.runs_dir) / cfg.train.name
    run, i = base, 2
    while run.exists():
        run = base.with_name(f"{base.name}-{i}")
        i += 1
    run.mkdir(parents=True)
    return run


def write_resolved_config(cfg: Config, path: Path) -> None:
    """The config as used, every key explicit and paths absolute (the run is reproducible from it)."""
    lines = [f"; resolved by skinseg {__version__} from {cfg.path}"]
    for sec, values in cfg.as_dict().items():
        lines.append(f"\n[{sec}]")
        for k, v in values.items():
            if SCHEMA[sec][k].type in ("str", "choice", "path"):
                v = json.dumps("" if v is None else str(v))
            elif isinstance(v, str):
                v = json.dumps(v)
            lines.append(f"{k} = {v}")
    atomic.write_text(path, "\n".join(lines) + "\n")


def versions(devices: dict[str, Any]) -> dict[str, Any]:
    import albumentations
    import cv2
    import keras

    tf_version = import_tf().__version__ if devices.get("backend") == "tensorflow" else None
    return {"skinseg": __version__, "python": platform.python_version(), "tensorflow": tf_version,
            "keras": keras.__version__, "backend": devices.get("backend"),
            "albumentations": albumentations.__version__, "numpy": np.__version__,
            "opencv": cv2.__version__, "platform": platform.platform(),
            "devices": {k: v for k, v in devices.items() if not k.startswith("_")}}


def save_model(model: Any, path: Path) -> None:
    """Keras writes in place; write beside and rename so a crash never leaves a torn .keras."""
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def write_history(run: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    cols = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, cols)
    w.writeheader()
    w.writerows(rows)
    atomic.write_text(run / "history.csv", buf.getvalue())
    plot_curves(rows, run / "curves.png")


def plot_curves(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [int(r["epoch"]) for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key in zip(axes, ("loss", "dice", "jaccard"), strict=True):
        for prefix, style in (("", "-"), ("val_", "--")):
            vals = [float(r[prefix + key]) for r in rows if r.get(prefix + key) not in (None, "")]
            if vals:
                ax.plot(ep[: len(vals)], vals, style, label=f"{'val' if prefix else 'train'} {key}")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic.write_bytes(path, buf.getvalue())


def preview_augmentations(cfg: Config, pairs: list, count: int, path: Path) -> Path:
    """A PNG grid of augmented training tiles with their mask contours (the seed's debug folders)."""
    from skinseg.inference.render import grid, overlay
    from skinseg.shared.images import encode
    from skinseg.training.augment import Augmenter
    from skinseg.training.data import INTERPOLATION, load_pair

    tile = (cfg.model.image_height, cfg.model.image_width)
    aug = Augmenter(cfg.augmentor, tile, True, cfg.generator.augmentation, cfg.train.seed)
    cells, labels = [], []
    for i in range(count):
        img_path, mask_path = pairs[i % len(pairs)]
        img, mask = load_pair(img_path, mask_path, cfg.model.working_scale,
                              INTERPOLATION[cfg.dataset.resize_interpolation])
        a, m = aug(img, mask, epoch=i // len(pairs), index=i)
        cells.append(overlay(a, m > 0, alpha=0.25))
        labels.append(img_path.stem)
    atomic.write_bytes(path, encode(".png", grid(cells, labels, cols=min(6, count))))
    return path


# -- training --------------------------------------------------------------------------------------
def recalibrate_bn(model: Any, batches: list[np.ndarray]) -> int:
    """Set every BatchNorm's moving statistics to the average batch statistics of the current weights.

    Training mode normalises with batch statistics while inference uses the moving averages, which
    trail far behind while weights change fast (from-scratch training). Averaging fresh batch
    statistics ("precise BN") makes validation, checkpoint choice and the exported model reflect what
    the network has actually learnt. Weights are not touched.
    """
    import keras

    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [layer.momentum for layer in bns]
    try:
        for k, x in enumerate(batches, start=1):
            for layer in bns:
                layer.momentum = (k - 1) / k  # cumulative mean over the k batches seen
            model(x, training=True)
    finally:
        for layer, m in zip(bns, saved, strict=True):
            layer.momentum = m
    return len(bns)


def _epoch_callback(total_epochs: int, steps: int, batch: int, quiet: bool, history: list, on_epoch: Any,
                    validate: Any):
    import keras

    class EpochLog(keras.callbacks.Callback):
        """One line per epoch, a batch progress bar, and the run-folder bookkeeping."""

        def on_train_begin(self, logs=None):
            self.bar = ui.progress(transient=True, disable=quiet)
            self.bar.__enter__()
            self.task = self.bar.add_task("epoch", total=steps)

        def on_train_end(self, logs=None):
            self.bar.__exit__(None, None, None)

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()
            self.bar.reset(self.task, total=steps, description=f"epoch {epoch + 1}/{total_epochs}")

        def on_train_batch_end(self, batch_i, logs=None):
            self.bar.update(self.task, completed=batch_i + 1)

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs.update(validate(self.model))  # later callbacks (LR, early stopping) see val_* too
            logs = dict(logs or {})
            secs = time.perf_counter() - self.t0
            lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            row = {"epoch": epoch + 1, **{k: round(float(v), 5) for k, v in logs.items()}, "lr": lr,
                   "seconds": round(secs, 1), "images_per_s": round(steps * batch / secs, 2)}
            history.append(row)
            mark = on_epoch(epoch + 1, row, self.model)
            if not quiet:
                self.bar.console.print(
                    f"epoch {epoch + 1:>3}/{total_epochs}  loss {row.get('loss', 0):.4f}  "
                    f"dice {row.get('dice', 0):.4f}  val_loss {row.get('val_loss', 0):.4f}  "
                    f"val_dice {row.get('val_dice', 0):.4f}  val_jaccard {row.get('val_jaccard', 0):.4f}  "
                    f"lr {lr:.2e}  {secs:.0f}s {row['images_per_s']:.1f} img/s {mark}", highlight=False)

    return EpochLog()


class _Stop(Exception):
    pass


def train(config: Path | None, resume: Path | None = None, preview: int = 0, quiet: bool = False,
          epochs: int | None = None) -> Path:
    """Train from a config (or resume a run folder); returns the run folder."""
    if resume is not None:
        resume = Path(resume)
        if not (resume / "last.keras").is_file() or not (resume / "state.json").is_file():
            raise SkinsegError(f"--resume {resume}: no last.keras/state.json there; give a run folder of skinseg train")
        cfg = load_config(resume / "config.ini", ui.warn)
    elif config is None:
        raise SkinsegError("give a config file (skinseg init-config writes one) or --resume RUN_DIR")
    else:
        cfg = load_config(config, ui.warn)
    if epochs:
        cfg.train.epochs = epochs
    train_pairs, val_pairs, summary = preflight(cfg, quiet)
    tile = (cfg.model.image_height, cfg.model.image_width)

    if preview:
        out = Path(cfg.train.runs_dir) / f"{cfg.train.name}-augmentations.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        preview_augmentations(cfg, train_pairs, preview, out)
        ui.out.print(f"augmentation preview: {out}")
        return out

    devices = setup_devices(cfg.train.mixed_precision, cfg.train.seed)
    import keras

    from skinseg.training.augment import Augmenter
    from skinseg.training.data import INTERPOLATION, PairSet, batch_sequence, eval_arrays, train_dataset
    from skinseg.training.losses import LOSSES, Overlap
    from skinseg.training.model import model_from_config

    run = resume or new_run_dir(cfg)
    if not resume:
        write_resolved_config(cfg, run / "config.ini")
    atomic.write_json(run / "data.json", summary)
    atomic.write_json(run / "versions.json", versions(devices))
    if not quiet:
        ui.info(f"[bold]skinseg train[/] {cfg.model.backbone}+{cfg.model.decoder} tile {tile[0]}x{tile[1]} "
                f"scale {cfg.model.working_scale} -> {run}")
        ui.info(f"  devices: {', '.join(devices['gpus']) or 'CPU'} ({devices['cpu threads']} threads), "
                f"precision {devices['precision']}, {devices['strategy']} x{devices['replicas']}")
        ui.info(f"  data: {len(train_pairs)} train / {len(val_pairs)} valid pairs")
    if cfg.generator.debug:
        preview_augmentations(cfg, train_pairs, 12, run / "augmentations.png")

    interp = INTERPOLATION[cfg.dataset.resize_interpolation]
    train_set = PairSet(train_pairs, cfg.model.working_scale, interp)
    val_set = PairSet(val_pairs, cfg.model.working_scale, interp)
    with ui.progress(transient=True, disable=quiet) as bar:
        if cfg.train.cache:
            t = bar.add_task("decoding train at working scale", total=len(train_set))
            train_set.cache(lambda: bar.advance(t))
        t = bar.add_task("decoding valid", total=len(val_set))
        val_set.cache(lambda: bar.advance(t))

    batch = cfg.train.batch_size * devices["replicas"]
    steps = cfg.train.steps_per_epoch or max(1, len(train_set) // batch)
    state = json.loads((run / "state.json").read_text()) if resume else {"epoch": 0, "best": None}
    state.pop("interrupted", None)
    first = int(state["epoch"])
    if first >= cfg.train.epochs:
        ui.info(f"{run} already finished {first} epochs")
        return run
    seed = cfg.train.seed
    train_aug = Augmenter(cfg.augmentor, tile, True, cfg.generator.augmentation, seed)
    val_aug = Augmenter(cfg.augmentor, tile, False, False, seed)
    on_tf = devices["backend"] == "tensorflow"
    ds_train = (train_dataset(train_set, train_aug, tile, batch, steps, first, cfg.train.epochs, seed) if on_tf
                else batch_sequence(train_set, train_aug, batch, steps, first, seed))
    val_x, val_y = eval_arrays(val_set, val_aug, tile, cfg.train.validation_steps, batch)

    strategy = devices["_strategy"]
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        if resume:
            model = keras.saving.load_model(run / "last.keras", safe_mode=True)
        else:
            model = model_from_config(cfg)
            lr: Any = cfg.model.learning_rate
            if cfg.train.schedule == "cosine":
                lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=cfg.train.epochs * steps, alpha=0.01)
            clip = {"clipvalue": cfg.model.clipvalue} if cfg.model.clipvalue else {}
            opt = (keras.optimizers.AdamW(lr, weight_decay=cfg.model.weight_decay, **clip)
                   if cfg.model.optimizer == "AdamW" else keras.optimizers.Adam(lr, **clip))
            model.compile(opt, loss=LOSSES[cfg.model.loss],
                          metrics=[Overlap("dice"), Overlap("jaccard"),
                                   keras.metrics.BinaryAccuracy(name="binary_accuracy")],
                          jit_compile=cfg.train.jit_compile or not on_tf)  # JAX/PyTorch un-jitted run op by op
    if cfg.model.show_summary and not quiet:
        model.summary(print_fn=lambda s, **_: ui.info(s))

    monitor = cfg.train.monitor
    better = (lambda a, b: b is None or a < b) if monitor == "val_loss" else (lambda a, b: b is None or a > b)
    history: list[dict[str, Any]] = []
    if resume and (run / "history.csv").is_file():
        with open(run / "history.csv", newline="") as fh:
            history = [r for r in csv.DictReader(fh) if int(r["epoch"]) <= first]

    def on_epoch(epoch: int, row: dict[str, Any], m: Any) -> str:
        mark = ""
        value = row.get(monitor)
        if value is not None and better(value, state["best"]):
            state.update(best=value, best_epoch=epoch)
            save_model(m, run / "best.keras")
            mark = "[green]* best[/]"
        save_model(m, run / "last.keras")
        state["epoch"] = epoch
        atomic.write_json(run / "state.json", state)
        write_history(run, history)
        return mark

    recal_batches = []
    if cfg.train.bn_recalibration:
        rng = np.random.default_rng(seed)
        picks = rng.permutation(len(train_set))[: cfg.train.bn_recalibration * batch]
        tiles = [val_aug(*train_set.get(int(i)), 0, int(i))[0] for i in picks]
        recal_batches = [np.stack(tiles[i : i + batch]).astype(np.float32) for i in range(0, len(tiles), batch)]

    def validate(m: Any) -> dict[str, float]:
        if recal_batches:
            recalibrate_bn(m, recal_batches)
        res = m.evaluate(val_x, val_y, batch_size=batch, verbose=0, return_dict=True)
        return {f"val_{k}": float(v) for k, v in res.items()}

    callbacks: list[Any] = [_epoch_callback(cfg.train.epochs, steps, batch, quiet, history, on_epoch, validate)]
    if on_tf:  # keras' TensorBoard callback writes through tf.summary
        callbacks.append(keras.callbacks.TensorBoard(str(run / "tensorboard"), write_graph=False, profile_batch=0))
    if cfg.train.schedule == "plateau" and cfg.train.learning_rate_reducer:
        callbacks.append(keras.callbacks.ReduceLROnPlateau("val_loss", factor=0.5, patience=cfg.train.reducer_patience,
                                                           min_lr=1e-6, verbose=0))
    if cfg.train.patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor, patience=cfg.train.patience,
                                                       mode="min" if monitor == "val_loss" else "max",
                                                       start_from_epoch=cfg.train.min_epochs))

    def _term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, _term)
    t0 = time.perf_counter()
    try:
        model.fit(ds_train, epochs=cfg.train.epochs, initial_epoch=first, steps_per_epoch=steps if on_tf else None,
                  callbacks=callbacks, verbose=0, shuffle=False)
    except KeyboardInterrupt:
        save_model(model, run / "last.keras")
        write_history(run, history)
        atomic.write_json(run / "state.json", state | {"interrupted": True})
        ui.warn(f"interrupted after {state['epoch']} complete epochs: saved last.keras and history; "
                f"continue with: skinseg train --resume {run}")
        raise SystemExit(130) from None
    finally:
        signal.signal(signal.SIGTERM, old)
    state["seconds"] = round(state.get("seconds", 0) + time.perf_counter() - t0, 1)
    state["finished"] = True
    atomic.write_json(run / "state.json", state)
    if not quiet:
        _summary(run, state, history, cfg)
    return run


def _summary(run: Path, state: dict[str, Any], history: list[dict[str, Any]], cfg: Config) -> None:
    from rich.table import Table

    best = next((r for r in history if int(r["epoch"]) == state.get("best_epoch")), {})
    t = Table(title=f"skinseg train: {run.name}", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    t.add_row("epochs", str(state["epoch"]))
    t.add_row("best epoch", f"{state.get('best_epoch')} ({cfg.train.monitor})")
    for k in ("val_dice", "val_jaccard", "val_loss"):
        if k in best:
            t.add_row(k, f"{float(best[k]):.4f}")
    t.add_row("time", f"{state.get('seconds', 0) / 60:.1f} min")
    t.add_row("run folder", str(run))
    ui.out.print(t)
    ui.out.print(f"next: skinseg export {run}")
