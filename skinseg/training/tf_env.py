"""Set the Keras backend up for this machine: TensorFlow quietly (GPU memory growth, precision,
strategy), or JAX/PyTorch when KERAS_BACKEND names them (a GPU box without TensorFlow can train)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from skinseg.shared.errors import SkinsegError
from skinseg.shared.install import install_hint

# Without an NVIDIA driver TensorFlow's only GPU messages are its failed cuInit and absl noise on every
# CPU run: hide them there (level 3); keep errors visible where a GPU could run.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if Path("/proc/driver/nvidia").exists() else "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def import_tf() -> Any:
    try:
        with _quiet_stderr():
            import tensorflow as tf
    except ImportError as exc:
        from skinseg.shared.errors import SkinsegError

        raise SkinsegError(f"training needs TensorFlow: {install_hint('cpu,train')}") from exc
    return tf


@contextlib.contextmanager
def _quiet_stderr():
    """TensorFlow's C++ lines printed before its logging starts ('Could not find cuda drivers', absl's
    'All log messages before absl::InitializeLog()') ignore TF_CPP_MIN_LOG_LEVEL: on a machine without
    an NVIDIA driver they only say there is no GPU, so the import runs with the stderr descriptor muted.
    Python exceptions still carry their message."""
    if Path("/proc/driver/nvidia").exists() or "tensorflow" in __import__("sys").modules:
        yield
        return
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def setup_devices(mixed_precision: str = "auto", seed: int = 42) -> dict[str, Any]:
    """Memory growth on every GPU, mixed_float16 on GPU (auto), a strategy over all GPUs; seeds."""
    if os.environ.get("KERAS_BACKEND") in ("jax", "torch"):
        return _setup_other(mixed_precision, seed)
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
        "backend": "tensorflow",
        "gpus": [g.name for g in gpus],
        "precision": "mixed_float16" if use_mp else "float32",
        "strategy": type(strategy).__name__,
        "replicas": strategy.num_replicas_in_sync,
        "cpu threads": os.cpu_count(),
        "_strategy": strategy,
    }


def _setup_other(mixed_precision: str, seed: int) -> dict[str, Any]:
    """JAX or PyTorch backend: one device (the first GPU when there is one), no tf.distribute."""
    backend = os.environ.get("KERAS_BACKEND")
    module = {"jax": "jax", "torch": "torch"}[backend or ""]
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise SkinsegError(f"KERAS_BACKEND={backend} but {module} is not installed: install it (pip install "
                           f"{'jax' if module == 'jax' else 'torch'}) or unset KERAS_BACKEND to train with TensorFlow")
    import keras

    keras.utils.set_random_seed(seed)
    name = keras.backend.backend()
    if name == "jax":
        import jax

        gpus = [str(d) for d in jax.devices() if d.platform == "gpu"]
    else:
        import torch

        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    use_mp = mixed_precision == "on" or (mixed_precision == "auto" and bool(gpus))
    keras.mixed_precision.set_global_policy("mixed_float16" if use_mp else "float32")
    return {"backend": name, "gpus": gpus[:1], "precision": "mixed_float16" if use_mp else "float32",
            "strategy": "one device", "replicas": 1, "cpu threads": os.cpu_count(), "_strategy": None}
