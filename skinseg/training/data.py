"""The training input pipeline: pairs decoded once at the working scale, then parallel, seeded
augmentation and prefetch (tf.data on TensorFlow, a keras PyDataset on JAX/PyTorch) so an
accelerator is never starved."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from skinseg.shared.errors import InputError
from skinseg.shared.images import binarize, load_image, read_binary_mask
from skinseg.shared.scale import mask_to_size, to_working
from skinseg.training.augment import Augmenter


def load_pair(image: Path, mask: Path, scale: int | None,
              resize: dict[str, str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 and a {0,1} uint8 mask, both at the working scale, read by the one image reader and
    resized by the same rules (and methods) as the engine uses for the exported model."""
    loaded = load_image(image, scale)
    truth, _ = read_binary_mask(mask)  # 0/1 and 16-bit masks too, by the one rule
    if truth.shape != (loaded.height, loaded.width):
        raise InputError(f"{mask}: mask is {truth.shape[1]}x{truth.shape[0]}, image is "
                         f"{loaded.width}x{loaded.height}")
    rgb = to_working(loaded.rgb, (loaded.height, loaded.width), scale, resize)
    m = np.multiply(truth, 255, dtype=np.uint8)
    return rgb, binarize(mask_to_size(m, rgb.shape[:2])).astype(np.uint8)


@dataclass
class PairSet:
    """Decoded pairs held in memory (or only paths, when caching is off)."""

    pairs: list[tuple[Path, Path]]
    scale: int | None
    resize: dict[str, str]
    images: list[np.ndarray] | None = None
    masks: list[np.ndarray] | None = None
    lazy: bool = False  # keep each pair once it is first decoded (a short run decodes only what it draws)
    _memo: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.pairs)

    def cache(self, on_item: Any = None, workers: int = 4) -> PairSet:
        def one(p: tuple[Path, Path]) -> tuple[np.ndarray, np.ndarray]:
            out = load_pair(*p, self.scale, self.resize)
            if on_item:
                on_item()
            return out

        with ThreadPoolExecutor(workers) as pool:
            loaded = list(pool.map(one, self.pairs))
        self.images = [a for a, _ in loaded]
        self.masks = [b for _, b in loaded]
        return self

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if self.images is not None and self.masks is not None:
            return self.images[i], self.masks[i]
        if not self.lazy:
            return load_pair(*self.pairs[i], self.scale, self.resize)
        if i not in self._memo:  # worker threads may decode one pair twice; the result is the same
            self._memo[i] = load_pair(*self.pairs[i], self.scale, self.resize)
        return self._memo[i]


def order(n: int, seed: int, epoch: int, count: int) -> np.ndarray:
    """`count` sample indices for one epoch: seeded permutations of range(n), concatenated as needed."""
    reps = -(-count // n)
    rng = np.random.default_rng([seed, epoch])
    return np.concatenate([rng.permutation(n) for _ in range(reps)])[:count]


def sample(data: PairSet, aug: Augmenter, seed: int, per_epoch: int, epoch: int, k: int,
           pack: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Sample k of an epoch, augmented: the same pixels whichever pipeline or worker asks for it.

    pack: image and mask as one 4-channel input (device augmentation moves them together on the GPU).
    """
    idx = int(order(len(data), seed, epoch, per_epoch)[k])
    img, mask = data.get(idx)
    img, mask = aug(img, mask, epoch, k)
    x, y = img.astype(np.float32), mask[..., None].astype(np.float32)
    return (np.concatenate([x, y], axis=-1), y) if pack else (x, y)


def train_dataset(data: PairSet, aug: Augmenter, tile: tuple[int, int], batch: int, steps: int,
                  first_epoch: int, epochs: int, seed: int, pack: bool = False):
    """Batches for epochs [first_epoch, epochs): element i is sample (epoch, position) - deterministic."""
    import tensorflow as tf

    per_epoch = steps * batch
    th, tw = tile

    def make(i: np.int64) -> tuple[np.ndarray, np.ndarray]:
        return sample(data, aug, seed, per_epoch, *divmod(int(i), per_epoch), pack=pack)

    def tf_make(i: Any) -> tuple[Any, Any]:
        x, y = tf.numpy_function(make, [i], (tf.float32, tf.float32), stateful=False)
        x.set_shape((th, tw, 4 if pack else 3))
        y.set_shape((th, tw, 1))
        return x, y

    ds = tf.data.Dataset.range(first_epoch * per_epoch, epochs * per_epoch)
    ds = ds.map(tf_make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def batch_sequence(data: PairSet, aug: Augmenter, batch: int, steps: int, first_epoch: int, seed: int,
                   workers: int = 0, pack: bool = False):
    """The same batches as `train_dataset` as a keras PyDataset, for the JAX and PyTorch backends.

    Threads, not processes: OpenCV and NumPy release the GIL, and the cached images are not copied.
    """
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=workers or min(16, os.cpu_count() or 1), use_multiprocessing=False,
                             max_queue_size=16)
            self.epoch = first_epoch

        def __len__(self) -> int:
            return steps

        def __getitem__(self, j: int) -> tuple[np.ndarray, np.ndarray]:
            items = [sample(data, aug, seed, steps * batch, self.epoch, k, pack)
                     for k in range(j * batch, (j + 1) * batch)]
            return np.stack([x for x, _ in items]), np.stack([y for _, y in items])

        def on_epoch_end(self) -> None:
            self.epoch += 1

    return Batches()


def eval_arrays(data: PairSet, aug: Augmenter, tile: tuple[int, int], steps: int = 0,
                batch: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Validation tiles: every pair once (centre tile), no augmentation."""
    th, tw = tile
    xs, ys = [], []
    n = len(data) if not steps else min(len(data), steps * batch)
    for i in range(n):
        img, mask = aug(*data.get(i), 0, i)
        xs.append(img)
        ys.append(mask[..., None])
    x = np.stack(xs).astype(np.float32)
    y = np.stack(ys).astype(np.float32)
    assert x.shape[1:3] == (th, tw)
    return x, y

