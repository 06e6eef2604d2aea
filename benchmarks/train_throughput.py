"""Training throughput (images/s) and the input pipeline's share of step time.

Usage:
    python benchmarks/train_throughput.py [--backbones mobilenetv2:separable resnet50:separable]
                                          [--sizes 256 512] [--steps 8] [--batch 8] [--precision float32]

For each backbone, tile size and augmentation place (`--augment host device`) it times `--steps`
training steps twice: fed by the real pipeline
(synthetic dermoscopy pairs decoded once, then tf.data with seeded albumentations augmentation and
prefetch, exactly as `skinseg train`) and fed by one batch already in memory. The pipeline share is
1 - t_memory / t_pipeline. On a GPU machine, `--precision mixed_float16` times mixed precision:
    python benchmarks/train_throughput.py --sizes 512 --precision float32
    python benchmarks/train_throughput.py --sizes 512 --precision mixed_float16
"""

from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", nargs="+", default=["mobilenetv2:separable", "resnet50:separable"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[256, 512])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--precision", default="float32", choices=["float32", "mixed_float16"])
    ap.add_argument("--augment", nargs="+", default=["host"], choices=["host", "device"],
                    help="host: albumentations threads feed augmented tiles; device: the host cuts tiles, the "
                         "augmentation runs inside the compiled step (Keras ops)")
    ap.add_argument("--aspp", type=int, default=256, help="ASPP/decoder channels (the shipped model: 128)")
    ap.add_argument("--tile", default=None, help="HxW instead of square --sizes, e.g. 192x256")
    args = ap.parse_args()

    from skinseg.training.tf_env import import_tf

    tf = import_tf()
    import keras
    import numpy as np

    from skinseg.shared.config import defaults
    from skinseg.shared.synthetic import synth_pair
    from skinseg.training.augment import Augmenter
    from skinseg.training.data import PairSet, train_dataset
    from skinseg.training.device_augment import AugmentedTrainer, DeviceAugment, packed_loss_factory
    from skinseg.training.losses import bce_dice_loss
    from skinseg.training.model import build_model

    keras.mixed_precision.set_global_policy(args.precision)
    results = []
    tiles = [tuple(int(v) for v in args.tile.split("x"))] if args.tile else [(s, s) for s in args.sizes]
    for tile in tiles:
        h, w = tile
        pairs = [synth_pair(h, w, i) for i in range(32)]
        data = PairSet([], None, {}, images=[p[0] for p in pairs], masks=[p[1].astype(np.uint8) for p in pairs])
        data.pairs = [None] * len(pairs)
        for spec, where in ((s, a) for s in args.backbones for a in args.augment):
            backbone, decoder = spec.split(":")
            on_device = where == "device"
            augmentor = defaults()["augmentor"]
            aug = Augmenter(SimpleNamespace(**augmentor), tile, True, not on_device, seed=0)
            model = build_model(tile, backbone, decoder, filters=args.aspp)
            fit_model, loss = model, bce_dice_loss
            if on_device:
                fit_model = AugmentedTrainer(model, DeviceAugment(augmentor, 0))
                loss = packed_loss_factory("bce_dice")
            fit_model.compile(keras.optimizers.Adam(1e-3), loss=loss)
            ds = train_dataset(data, aug, tile, args.batch, args.steps, 0, 2, 0, pack=on_device)
            x, y = next(iter(ds))
            mem = tf.data.Dataset.from_tensors((x, y)).repeat(args.steps)
            fit_model.fit(mem.take(2), verbose=0)  # trace and warm up
            t = time.perf_counter()
            fit_model.fit(mem, verbose=0)
            t_mem = time.perf_counter() - t
            t = time.perf_counter()
            fit_model.fit(ds.take(args.steps), verbose=0)
            t_pipe = time.perf_counter() - t
            row = {"backbone": backbone, "decoder": decoder, "tile": f"{h}x{w}", "augment": where,
                   "batch": args.batch, "precision": args.precision,
                   "images/s": round(args.steps * args.batch / t_pipe, 2),
                   "images/s (data in memory)": round(args.steps * args.batch / t_mem, 2),
                   "pipeline share": round(max(0.0, 1 - t_mem / t_pipe), 3),
                   "devices": [d.name for d in tf.config.list_physical_devices("GPU")] or "CPU"}
            print(json.dumps(row), flush=True)
            results.append(row)


if __name__ == "__main__":
    main()
