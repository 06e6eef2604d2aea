"""`skinseg train`: a run folder (shared/runfolder.py) with the best model, the last state, logs and plots.

`Trainer.run()` reads as its steps: check the data -> open the run folder -> decode the data at the
working scale -> build (or resume) the model -> fit, validating with recalibrated BatchNorm and
saving best/last every epoch -> summary. A run that fails before its first checkpoint removes its
folder, so no run folder without a model is left behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from skinseg import __version__, ui
from skinseg.shared import files, system
from skinseg.shared.config import SCHEMA, Config, load_config
from skinseg.shared.dataset import config_split
from skinseg.shared.dataset_check import check_split
from skinseg.shared.errors import SkinsegError
from skinseg.shared.render import save_figure
from skinseg.shared.runfolder import RunFolder
from skinseg.training.tf_env import import_tf, setup_devices


# -- data ------------------------------------------------------------------------------------------
def preflight(cfg: Config, quiet: bool = False) -> tuple[list, list, dict[str, Any]]:
    """check-data on the train and validation splits; returns usable pairs and a dataset summary."""
    train_dirs = config_split(cfg, "train")
    if train_dirs is None:
        raise SkinsegError(f"{cfg.path}: [train] image_datapath is not set; point it at the training images")
    val_dirs = config_split(cfg, "eval")
    reports = []
    with ui.progress(transient=True, disable=quiet) as bar:
        for name, dirs in (("train", train_dirs), ("valid", val_dirs)):
            if dirs is None:
                continue
            task = bar.add_task(f"checking {name}", total=None)
            reports.append(check_split(name, dirs.images, dirs.masks, on_item=lambda t=task: bar.advance(t)))
    for rep in reports:
        for file, why in rep.problems[:20]:
            ui.warn(f"{rep.name}: skipped {file}: {why}")
        if len(rep.problems) > 20:
            ui.warn(f"{rep.name}: ... and {len(rep.problems) - 20} more unusable pairs (skinseg check-data)")
    train = reports[0].good
    if val_dirs is not None:
        val = reports[1].good
        shared_ids = {i.stem.lower() for i, _ in train} & {i.stem.lower() for i, _ in val}
        if shared_ids:
            ui.warn(f"{len(shared_ids)} image ids are in both train and valid (e.g. {sorted(shared_ids)[0]}): "
                    "validation overestimates the model; `skinseg check-data` lists them")
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
            f"{minimum}) and {len(val)} validation pairs; run `skinseg check-data {cfg.path}`")
    summary = {
        "train": {"pairs": len(train), "skipped": len(reports[0].problems), "images": str(train_dirs.images),
                  "masks": str(train_dirs.masks)},
        "valid": {"pairs": len(val), "source": str(val_dirs.images) if val_dirs else "split from train"},
        "working_scale": cfg.model.working_scale or "native",
        "resize": cfg.resize,
        "tile": list(cfg.tile),
    }
    return train, val, summary


def warn_small_images(cfg: Config, pairs: list, images: list[np.ndarray]) -> None:
    """The seed resized every image to the tile; skinseg tiles at the working scale, so images smaller
    than the tile are padded: say so, with the fix."""
    th, tw = cfg.tile
    small = sum(1 for img in images if img.shape[0] < th or img.shape[1] < tw)
    if small:
        h, w = images[0].shape[:2]
        ui.warn(f"{small} of {len(images)} training images are smaller than the {th}x{tw} tile at the working "
                f"scale (e.g. {w}x{h}) and get padded; set [model] working_scale = {max(th, tw)} to enlarge them "
                f"as the seed did, or image_height/image_width to fit them (e.g. {h // 16 * 16}x{w // 16 * 16})")


# -- run folder ------------------------------------------------------------------------------------
def write_resolved_config(cfg: Config, path: Path) -> None:
    """The config as used, every key explicit and paths absolute (the run is reproducible from it)."""
    import json

    lines = [f"; resolved by skinseg {__version__} from {cfg.path}"]
    for sec, values in cfg.as_dict().items():
        lines.append(f"\n[{sec}]")
        for k, v in values.items():
            if SCHEMA[sec][k].type in ("str", "choice", "path"):
                v = json.dumps("" if v is None else str(v))
            elif isinstance(v, str):
                v = json.dumps(v)
            lines.append(f"{k} = {v}")
    files.write_text(path, "\n".join(lines) + "\n")


def versions(devices: dict[str, Any]) -> dict[str, Any]:
    import albumentations
    import keras

    tf_version = import_tf().__version__ if devices.get("backend") == "tensorflow" else None
    return system.versions(tensorflow=tf_version, keras=keras.__version__, backend=devices.get("backend"),
                           albumentations=albumentations.__version__,
                           devices={k: v for k, v in devices.items() if not k.startswith("_")})


def _beside(path: Path) -> Path:
    """Where save_model writes before its rename (an interrupt may leave it)."""
    return path.with_name(f".{path.stem}.tmp.keras")


def save_model(model: Any, path: Path) -> None:
    """Keras writes in place; write beside and rename so a crash never leaves a torn .keras."""
    import os

    model.save(_beside(path))
    os.replace(_beside(path), path)


def write_history(run: RunFolder, rows: list[dict[str, Any]]) -> None:
    if rows:
        run.write_history(rows)
        plot_curves(rows, run.curves)


def plot_curves(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    ep = [int(r["epoch"]) for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key in zip(axes, ("loss", "dice", "jaccard"), strict=True):
        for prefix, style in (("", "-"), ("val_", "--")):
            vals = [float(r[prefix + key]) for r in rows if r.get(prefix + key) not in (None, "")]
            if vals:
                ax.plot(ep[: len(vals)], vals, style, label=f"{'val' if prefix else 'train'} {key}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no 1.2, 1.4 ... on short runs
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    save_figure(fig, path, dpi=90)


def preview_augmentations(cfg: Config, pairs: list, count: int, path: Path) -> Path:
    """A PNG grid of augmented training tiles with their mask contours (the seed's debug folders); with
    device_augmentation, the tiles come out of the on-device augmentation the training step runs."""
    from skinseg.shared.images import encode
    from skinseg.shared.render import grid, overlay
    from skinseg.training.augment import Augmenter
    from skinseg.training.data import load_pair

    on_device = cfg.train.device_augmentation and cfg.generator.augmentation
    aug = Augmenter(cfg.augmentor, cfg.tile, True, cfg.generator.augmentation and not on_device, cfg.train.seed)
    tiles, labels = [], []
    for i in range(count):
        img_path, mask_path = pairs[i % len(pairs)]
        img, mask = load_pair(img_path, mask_path, cfg.model.working_scale, cfg.resize)
        tiles.append(aug(img, mask, epoch=i // len(pairs), index=i))
        labels.append(img_path.stem + (" (device)" if on_device else ""))
    if on_device:
        if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
            import_tf()  # quietly, before keras imports it
        import keras

        from skinseg.training.device_augment import DeviceAugment

        layer = DeviceAugment(dict(vars(cfg.augmentor)), cfg.train.seed)
        x, m = layer(np.stack([t for t, _ in tiles]).astype(np.float32),
                     np.stack([mk for _, mk in tiles])[..., None].astype(np.float32))
        x, m = keras.ops.convert_to_numpy(x), keras.ops.convert_to_numpy(m)
        tiles = [(x[i].round().astype(np.uint8), m[i, ..., 0].astype(np.uint8)) for i in range(len(tiles))]
    cells = [overlay(a, mk > 0, alpha=0.25) for a, mk in tiles]
    files.write_bytes(path, encode(".png", grid(cells, labels, cols=min(6, count))))
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


SLOW_HOURS = 3.0  # a CPU run estimated above this gets a warning naming the faster settings


def estimate_line(per_step: float, steps: int, epochs_left: int, on_gpu: bool) -> tuple[str, str | None]:
    """(the estimate, a warning or None) from the seconds one training step takes."""
    epoch = per_step * steps
    total = epoch * epochs_left
    line = f"about {_duration(epoch)} per epoch, {_duration(total)} for the {epochs_left} epochs left"
    if on_gpu or total < SLOW_HOURS * 3600:
        return line, None
    return line, (f"this CPU run will take about {_duration(total)}: for a first model, lower [model] working_scale "
                  "and [train] image_width / image_height (e.g. 128), [train] epochs, or steps_per_epoch; train on "
                  "a GPU for the full recipe")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _epoch_callback(total_epochs: int, steps: int, batch: int, quiet: bool, history: list, on_epoch: Any,
                    validate: Any, evaluation_weights: Any, on_gpu: bool = False):
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
            self.epoch = epoch
            self.bar.reset(self.task, total=steps, description=f"epoch {epoch + 1}/{total_epochs}")

        def on_train_batch_end(self, batch_i, logs=None):
            self.bar.update(self.task, completed=batch_i + 1)
            # the estimate, once, from steps 2-4 (the first one compiles)
            if getattr(self, "estimated", False) or steps < 5:
                return
            if batch_i == 0:
                self.t1 = time.perf_counter()
            elif batch_i == 3:
                self.estimated = True
                line, warning = estimate_line((time.perf_counter() - self.t1) / 3, steps,
                                              total_epochs - self.epoch, on_gpu)
                if not quiet:
                    self.bar.console.print(f"estimate: {line}", highlight=False)
                if warning:
                    ui.warn(warning)

        def on_epoch_end(self, epoch, logs=None):
            secs = time.perf_counter() - self.t0
            with evaluation_weights(self.model):  # EMA weights, when on, for validation and checkpoints
                if logs is not None:
                    logs.update(validate(self.model))  # later callbacks (LR, early stopping) see val_* too
                logs = dict(logs or {})
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


ARCHITECTURES = {("resnet50", "standard"): "the seed's DeepLabV3+",
                 ("mobilenetv2", "separable"): "skinseg's edge model"}


class Trainer:
    """One training run from a config (or a run folder to resume); `run()` performs the steps."""

    def __init__(self, config: Path | None, resume: Path | None = None, epochs: int | None = None,
                 quiet: bool = False) -> None:
        self.quiet = quiet
        self.resuming = resume is not None
        if resume is not None:
            run = RunFolder(resume)
            if not run.last.is_file() or not run.state.is_file():
                raise SkinsegError(f"--resume {resume}: no last.keras/state.json there; give a run folder of "
                                   "skinseg train")
            self.state = run.read_state()
            self.cfg = load_config(run.config, ui.warn)
            self.run_dir: RunFolder | None = run
        elif config is None:
            raise SkinsegError("give a config file (skinseg init-config writes one) or --resume RUN_DIR")
        else:
            self.cfg = load_config(config, ui.warn)
            self.state = {"epoch": 0, "best": None}
            self.run_dir = None
        if epochs:
            self.cfg.train.epochs = epochs
        self.history: list[dict[str, Any]] = []

    @property
    def run_folder(self) -> RunFolder:
        assert self.run_dir is not None
        return self.run_dir

    # -- steps ---------------------------------------------------------------------------------
    def run(self) -> Path:
        self.check_data()
        if self.resuming and int(self.state.get("epoch", 0)) >= self.cfg.train.epochs:
            ui.info(f"{self.run_folder.path} already finished {self.state['epoch']} epochs")
            return self.run_folder.path
        self.open_run()
        try:
            self.load_data()
            self.build_model()
            self.fit()
        except BaseException:
            self.discard_if_empty()
            raise
        if not self.quiet:
            self.summary()
        else:  # -q keeps the one line that says where the results are
            ui.out.print(f"run folder {self.run_folder.path}", soft_wrap=True)
        return self.run_folder.path

    def check_data(self) -> None:
        self.train_pairs, self.val_pairs, self.data_summary = preflight(self.cfg, self.quiet)
        if self.cfg.train.train_on_valid:
            self.train_pairs = self.train_pairs + self.val_pairs
            self.data_summary["train"]["pairs"] = len(self.train_pairs)
            self.data_summary["train_on_valid"] = True

    def preview(self, count: int) -> Path:
        out = Path(self.cfg.train.runs_dir) / f"{self.cfg.train.name}-augmentations.png"
        files.ensure_writable_dir(out.parent)
        preview_augmentations(self.cfg, self.train_pairs, count, out)
        ui.out.print(f"augmentation preview: {out}")
        return out

    def open_run(self) -> None:
        cfg = self.cfg
        self.devices = setup_devices(cfg.train.mixed_precision, cfg.train.seed)
        if self.run_dir is None:
            self.run_dir = RunFolder.create(cfg.train.runs_dir, cfg.train.name)
            write_resolved_config(cfg, self.run_folder.config)
        run = self.run_folder
        files.write_json(run.data, self.data_summary)
        files.write_json(run.versions, versions(self.devices))
        if not self.quiet:
            m, d = cfg.model, self.devices
            arch = ARCHITECTURES.get((m.backbone, m.decoder), "")
            ui.info(f"[bold]skinseg train[/] DeepLabV3+ {m.backbone} + {m.decoder} decoder"
                    + (f" ({arch})" if arch else "") + f", tile {cfg.tile[0]}x{cfg.tile[1]}, "
                    f"scale {m.working_scale or 'native'} -> {run.path}")
            if m.backbone != "mobilenetv2" or m.decoder != "separable":
                ui.info("  for edge devices, backbone = mobilenetv2 with decoder = separable is several times "
                        "faster")
            where = ", ".join(d["gpus"]) or f"CPU ({d['cpu threads']} threads)"
            ui.info(f"  devices: {where}, {d['replicas']} replica{'s' if d['replicas'] > 1 else ''}, "
                    f"{d['precision']}, Keras on {d['backend']}")
            ui.info(f"  data: {len(self.train_pairs)} train / {len(self.val_pairs)} valid pairs")
        if cfg.generator.debug:
            preview_augmentations(cfg, self.train_pairs, 12, run.augmentations)

    def load_data(self) -> None:
        from skinseg.training.augment import Augmenter
        from skinseg.training.data import PairSet, batch_sequence, eval_arrays, train_dataset

        cfg = self.cfg
        train_set = PairSet(self.train_pairs, cfg.model.working_scale, cfg.resize)
        val_set = PairSet(self.val_pairs, cfg.model.working_scale, cfg.resize)
        self.batch = cfg.train.batch_size * self.devices["replicas"]
        self.steps = cfg.train.steps_per_epoch or max(1, len(train_set) // self.batch)
        seen = self.steps * self.batch * max(1, cfg.train.epochs - int(self.state["epoch"]))
        with ui.progress(transient=True, disable=self.quiet) as bar:
            if cfg.train.cache and seen >= len(train_set):
                t = bar.add_task("decoding train at working scale", total=len(train_set))
                train_set.cache(lambda: bar.advance(t))
            elif cfg.train.cache:  # a short run: decode (and keep) only the images it draws
                train_set.lazy = True
            seen_images = train_set.images if train_set.images is not None else \
                [train_set.get(i)[0] for i in range(min(32, len(train_set)))]
            warn_small_images(cfg, self.train_pairs, seen_images)
            t = bar.add_task("decoding valid", total=len(val_set))
            val_set.cache(lambda: bar.advance(t))
        self.state.pop("interrupted", None)
        self.first = int(self.state["epoch"])
        seed = cfg.train.seed
        self.on_device = cfg.train.device_augmentation and cfg.generator.augmentation
        # on the device, the host only cuts tiles (pad + random crop); the augmentation runs in the step
        train_aug = Augmenter(cfg.augmentor, cfg.tile, True, cfg.generator.augmentation and not self.on_device, seed)
        val_aug = Augmenter(cfg.augmentor, cfg.tile, False, False, seed)
        self.on_tf = self.devices["backend"] == "tensorflow"
        self.ds_train = (train_dataset(train_set, train_aug, cfg.tile, self.batch, self.steps, self.first,
                                       cfg.train.epochs, seed, pack=self.on_device) if self.on_tf
                         else batch_sequence(train_set, train_aug, self.batch, self.steps, self.first, seed,
                                             pack=self.on_device))
        self.val_x, self.val_y = eval_arrays(val_set, val_aug, cfg.tile, cfg.train.validation_steps, self.batch)
        self.recal_batches = []
        if cfg.train.bn_recalibration:
            rng = np.random.default_rng(seed)
            picks = rng.permutation(len(train_set))[: cfg.train.bn_recalibration * self.batch]
            tiles = [val_aug(*train_set.get(int(i)), 0, int(i))[0] for i in picks]
            self.recal_batches = [np.stack(tiles[i : i + self.batch]).astype(np.float32)
                                  for i in range(0, len(tiles), self.batch)]

    def optimizer(self) -> Any:
        import keras

        cfg = self.cfg
        lr: Any = cfg.model.learning_rate
        if cfg.train.schedule == "cosine":
            warm = cfg.train.warmup_epochs * self.steps
            lr = keras.optimizers.schedules.CosineDecay(
                lr / 100 if warm else lr, decay_steps=max(1, cfg.train.epochs * self.steps - warm), alpha=0.01,
                warmup_target=lr if warm else None, warmup_steps=warm)
        extra: dict[str, Any] = {"clipvalue": cfg.model.clipvalue} if cfg.model.clipvalue else {}
        if cfg.train.ema:
            extra |= {"use_ema": True, "ema_momentum": cfg.train.ema}
        if cfg.model.optimizer == "AdamW":
            return keras.optimizers.AdamW(lr, weight_decay=cfg.model.weight_decay, **extra)
        return keras.optimizers.Adam(lr, **extra)

    def build_model(self) -> None:
        import keras

        from skinseg.training.losses import LOSSES, Overlap
        from skinseg.training.model import model_from_config

        cfg, run = self.cfg, self.run_folder
        # un-jitted JAX runs op by op; PyTorch runs eagerly unless asked: torch.compile's compilation costs
        # more than it saves on the CPU (docs/train-and-export.md)
        jit = cfg.train.jit_compile or self.devices["backend"] == "jax"
        metrics = [Overlap("dice"), Overlap("jaccard"), keras.metrics.BinaryAccuracy(name="binary_accuracy")]
        strategy = self.devices["_strategy"]
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            if self.resuming:
                try:
                    self.model = keras.saving.load_model(run.last, safe_mode=True)
                except Exception as exc:
                    raise SkinsegError(f"--resume: {run.last} cannot be loaded (damaged or truncated: "
                                       f"{str(exc).splitlines()[0][:150]}); start a new run or restore it") from exc
                self.history = [r for r in run.read_history() if int(r["epoch"]) <= self.first]
            else:
                self.model = model_from_config(cfg)
                self.model.compile(self.optimizer(), loss=LOSSES[cfg.model.loss], metrics=metrics, jit_compile=jit)
            self.fit_model = self.model
            if self.on_device:
                from skinseg.training.device_augment import (
                    AugmentedTrainer,
                    DeviceAugment,
                    PackedOverlap,
                    packed_loss_factory,
                )

                aug = {k: v for k, v in vars(cfg.augmentor).items()}
                self.fit_model = AugmentedTrainer(self.model, DeviceAugment(aug, cfg.train.seed))
                # the model's own optimizer, shared: checkpoints save self.model, so its optimizer must be the
                # one that trains (a second instance left Adam's state, the schedule's step and the EMA out
                # of last.keras, and a resumed run restarted them)
                self.fit_model.compile(self.model.optimizer,
                                       loss=packed_loss_factory(cfg.model.loss),
                                       metrics=[PackedOverlap("dice"), PackedOverlap("jaccard")], jit_compile=jit)
        if cfg.model.show_summary and not self.quiet:
            self.model.summary(print_fn=lambda s, **_: ui.info(s))

    @contextlib.contextmanager
    def evaluation_weights(self, fit_model: Any):
        """Swap the EMA of the weights in for validation and checkpoints, then back for training."""
        opt = fit_model.optimizer
        if not self.cfg.train.ema or not getattr(opt, "use_ema", False):
            yield
            return
        import keras

        variables = fit_model.trainable_variables
        saved = [keras.ops.convert_to_numpy(v) for v in variables]
        opt.finalize_variable_values(variables)
        try:
            yield
        finally:
            for v, w in zip(variables, saved, strict=True):
                v.assign(w)

    def validate(self, model: Any) -> dict[str, float]:
        model = self.model  # the segmentation model (inside the device-augmentation wrapper, when on)
        if self.recal_batches:
            recalibrate_bn(model, self.recal_batches)
        res = model.evaluate(self.val_x, self.val_y, batch_size=self.batch, verbose=0, return_dict=True)
        return {f"val_{k}": float(v) for k, v in res.items()}

    def on_epoch(self, epoch: int, row: dict[str, Any], model: Any) -> str:
        """Bookkeeping after each epoch: best.keras when the monitored value improved (every epoch when
        training on valid: the fixed schedule's last epoch is the model), last.keras, state."""
        run, state, monitor = self.run_folder, self.state, self.cfg.train.monitor
        model = self.model
        value = row.get(monitor)
        better = self.cfg.train.train_on_valid or (value is not None and (state["best"] is None or (
            value < state["best"] if monitor == "val_loss" else value > state["best"])))
        if better:
            state.update(best=value, best_epoch=epoch)
            save_model(model, run.best)
        save_model(model, run.last)
        state["epoch"] = epoch
        run.write_state(state)
        write_history(run, self.history)
        return "[green]* best[/]" if better else ""

    def callbacks(self) -> list[Any]:
        import keras

        cfg = self.cfg
        cbs: list[Any] = [_epoch_callback(cfg.train.epochs, self.steps, self.batch, self.quiet, self.history,
                                          self.on_epoch, self.validate, self.evaluation_weights,
                                          bool(self.devices.get("gpus")))]
        if self.on_tf:  # keras' TensorBoard callback writes through tf.summary
            cbs.append(keras.callbacks.TensorBoard(str(self.run_folder.tensorboard), write_graph=False,
                                                   profile_batch=0))
        if cfg.train.schedule == "plateau" and cfg.train.learning_rate_reducer:
            cbs.append(keras.callbacks.ReduceLROnPlateau("val_loss", factor=0.5, patience=cfg.train.reducer_patience,
                                                         min_lr=1e-6, verbose=0))
        if cfg.train.patience and not cfg.train.train_on_valid:
            monitor = cfg.train.monitor
            cbs.append(keras.callbacks.EarlyStopping(monitor, patience=cfg.train.patience,
                                                     mode="min" if monitor == "val_loss" else "max",
                                                     start_from_epoch=cfg.train.min_epochs))
        return cbs

    def fit(self) -> None:
        run = self.run_folder
        t0 = time.perf_counter()
        try:
            with system.sigterm_as_interrupt():
                self.fit_model.fit(self.ds_train, epochs=self.cfg.train.epochs, initial_epoch=self.first,
                                   steps_per_epoch=self.steps if self.on_tf else None, callbacks=self.callbacks(),
                                   verbose=0, shuffle=False)
        except KeyboardInterrupt:
            # last.keras stays as the last complete epoch left it: there its weights, optimizer (steps, moments,
            # the schedule's position, EMA) and epoch count agree, and each epoch's samples are fixed by (seed,
            # epoch), so the resumed run redoes the cut epoch and trains as the uninterrupted run would (with
            # `ema` on, the checkpoint's weights are the average, as documented, and training goes on from it).
            # Saving the weights in mid-epoch instead made the resumed run train those steps twice.
            done = int(self.state["epoch"])
            for kept in (run.last, run.best):  # a save cut short leaves its temporary file
                _beside(kept).unlink(missing_ok=True)
            if not run.last.is_file():
                ui.warn("interrupted in the first epoch: no epoch complete, nothing to resume; start it again")
                raise SystemExit(130) from None
            run.write_state(self.state | {"interrupted": True})  # the history was written with last.keras
            ui.warn(f"interrupted after {done} complete epochs (the cut epoch is redone on resume): last.keras and "
                    f"the history are those of epoch {done}; continue with: skinseg train --resume {run.path}")
            raise SystemExit(130) from None
        self.state["seconds"] = round(self.state.get("seconds", 0) + time.perf_counter() - t0, 1)
        self.state["finished"] = True
        run.write_state(self.state)

    def discard_if_empty(self) -> None:
        """A new run that failed before its first checkpoint leaves no folder behind."""
        run = self.run_dir
        if run is not None and not self.resuming and not run.best.exists() and not run.last.exists():
            shutil.rmtree(run.path, ignore_errors=True)

    def summary(self) -> None:
        run, state = self.run_folder, self.state
        best = next((r for r in self.history if int(r["epoch"]) == state.get("best_epoch")), {})
        rows = [["epochs", state["epoch"]], ["best epoch", f"{state.get('best_epoch')} ({self.cfg.train.monitor})"]]
        rows += [[k, f"{float(best[k]):.4f}"] for k in ("val_dice", "val_jaccard", "val_loss") if k in best]
        rows += [["time", f"{state.get('seconds', 0) / 60:.1f} min"], ["run folder", run.path]]
        ui.table(f"skinseg train: {run.path.name}", ["", ""], rows,
                 caption="val_* are Keras figures on validation tiles (validation_steps); `skinseg export` "
                         "reports whole-image Jaccard through the engine")
        ui.out.print(f"next: skinseg export {run.path}")


def train(config: Path | None, resume: Path | None = None, preview: int = 0, quiet: bool = False,
          epochs: int | None = None) -> Path:
    """Train from a config (or resume a run folder); returns the run folder (or the preview PNG)."""
    trainer = Trainer(config, resume, epochs, quiet)
    if preview:
        trainer.check_data()
        return trainer.preview(preview)
    return trainer.run()
