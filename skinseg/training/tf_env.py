"""Import TensorFlow quietly and set it up for this machine (GPU memory growth, precision, strategy)."""

from __future__ import annotations

import contextlib
import os
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def import_tf() -> Any:
    try:
        import tensorflow as tf
    except ImportError as exc:
        from skinseg.shared.errors import SkinsegError

        raise SkinsegError("training needs TensorFlow: pip install 'skinseg[train]'") from exc
    return tf


def setup_devices(mixed_precision: str = "auto", seed: int = 42) -> dict[str, Any]:
    """Memory growth on every GPU, mixed_float16 on GPU (auto), a strategy over all GPUs; seeds."""
    tf = import_tf()
    import keras

    keras.utils.set_random_seed(seed)
    gpus = tf.config.list_physical_devices("GPU")
    for g in gpus:
        with contextlib.suppress(RuntimeError):  # already initialised: growth cannot change any more
            tf.config.experimental.set_memory_growth(g, True)
    use_mp = mixed_precision == "on" or (mixed_precision == "auto" and bool(gpus))
    keras.mixed_precision.set_global_policy("mixed_float16" if use_mp else "float32")
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    return {
        "gpus": [g.name for g in gpus],
        "precision": "mixed_float16" if use_mp else "float32",
        "strategy": type(strategy).__name__,
        "replicas": strategy.num_replicas_in_sync,
        "cpu threads": os.cpu_count(),
        "_strategy": strategy,
    }
