"""Training throughput (images/s) and the input pipeline's share of step time.

Usage:
    python benchmarks/train_throughput.py [--backbones mobilenetv2:separable resnet50:separable]
                                          [--sizes 256 512] [--steps 8] [--batch 8] [--precision float32]

For each backbone and tile size it times `--steps` training steps twice: fed by the real pipeline
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
    args = ap.parse_args()

    from skinseg.training.tf_env import import_tf

    tf = import_tf()
    import keras
    import numpy as np

    from skinseg.shared.config import defaults
    from skinseg.shared.synthetic import synth_pair
    from skinseg.training.augment import Augmenter
    from skinseg.training.data import PairSet, train_dataset
    from skinseg.training.losses import bce_dice_loss
    from skinseg.training.model import build_model

    keras.mixed_precision.set_global_policy(args.precision)
    results = []
    for size in args.sizes:
        tile = (size, size)
        pairs = [synth_pair(size, size, i) for i in range(32)]
        data = PairSet([], "native", 0, images=[p[0] for p in pairs], masks=[p[1].astype(np.uint8) for p in pairs])
        data.pairs = [None] * len(pairs)
        aug = Augmenter(SimpleNamespace(**defaults()["augmentor"]), tile, True, True, seed=0)
        for spec in args.backbones:
            backbone, decoder = spec.split(":")
            model = build_model(tile, backbone, decoder)
            model.compile(keras.optimizers.Adam(1e-3), loss=bce_dice_loss)
            ds = train_dataset(data, aug, tile, args.batch, args.steps, 0, 2, 0)
            x, y = next(iter(ds))
            mem = tf.data.Dataset.from_tensors((x, y)).repeat(args.steps)
            model.fit(mem.take(2), verbose=0)  # trace and warm up
            t = time.perf_counter()
            model.fit(mem, verbose=0)
            t_mem = time.perf_counter() - t
            t = time.perf_counter()
            model.fit(ds.take(args.steps), verbose=0)
            t_pipe = time.perf_counter() - t
            row = {"backbone": backbone, "decoder": decoder, "tile": size, "batch": args.batch,
                   "precision": args.precision, "images/s": round(args.steps * args.batch / t_pipe, 2),
                   "images/s (data in memory)": round(args.steps * args.batch / t_mem, 2),
                   "pipeline share": round(max(0.0, 1 - t_mem / t_pipe), 3),
                   "devices": [d.name for d in tf.config.list_physical_devices("GPU")] or "CPU"}
            print(json.dumps(row), flush=True)
            results.append(row)


if __name__ == "__main__":
    main()
