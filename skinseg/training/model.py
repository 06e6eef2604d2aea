"""DeepLabV3+ in plain Keras 3 functional code: encoder (MobileNetV2 or ResNet50) at output
stride 16, ASPP (rates 6/12/18 + image pooling), decoder with low-level features.

The model takes raw RGB pixels in [0, 255] (float) and does its own preprocessing, so the exported
graph can take uint8 and an edge client cannot get normalisation wrong.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from skinseg.shared.errors import SkinsegError

# (ASPP feature layer at stride 16, low-level feature layer at stride 4)
TAPS = {
    "mobilenetv2": ("block_13_expand_relu", "block_3_expand_relu"),
    "resnet50": ("conv4_block6_2_relu", "conv2_block3_2_relu"),
}


@keras.saving.register_keras_serializable(package="skinseg")
class CaffePreprocess(layers.Layer):
    """ResNet50's ImageNet preprocessing: RGB -> BGR and mean subtraction (no Lambda: safe_mode loads it)."""

    def call(self, x):
        mean = keras.ops.convert_to_tensor([103.939, 116.779, 123.68], dtype=x.dtype)
        return keras.ops.flip(x, axis=-1) - mean


def _act(name: str):
    return {"relu": "relu", "mish": keras.activations.mish, "swish": "swish", "gelu": "gelu"}[name]


def conv_block(x, filters: int, kernel: int, dilation: int, separable: bool, act: str, bn_momentum: float, name: str):
    """Conv (or depthwise + pointwise, with BN after each as in the DeepLabV3+ paper) -> BN -> activation."""
    if separable and kernel > 1:
        x = layers.DepthwiseConv2D(kernel, padding="same", dilation_rate=dilation, use_bias=False, name=f"{name}_dw")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_dw_bn")(x)
        x = layers.Activation(_act(act), name=f"{name}_dw_act")(x)
        kernel, dilation = 1, 1
    x = layers.Conv2D(filters, kernel, padding="same", dilation_rate=dilation, use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn")(x)
    return layers.Activation(_act(act), name=f"{name}_act")(x)


def aspp(x, filters: int, separable: bool, act: str, bn_momentum: float):
    """Atrous spatial pyramid pooling at output stride 16."""
    h, w = x.shape[1], x.shape[2]
    pool = layers.AveragePooling2D(pool_size=(h, w), name="aspp_pool")(x)
    pool = conv_block(pool, filters, 1, 1, False, act, bn_momentum, "aspp_pool")
    pool = layers.UpSampling2D(size=(h, w), interpolation="nearest", name="aspp_pool_up")(pool)
    branches = [pool, conv_block(x, filters, 1, 1, False, act, bn_momentum, "aspp_1x1")]
    for rate in (6, 12, 18):
        branches.append(conv_block(x, filters, 3, rate, separable, act, bn_momentum, f"aspp_r{rate}"))
    y = layers.Concatenate(name="aspp_concat")(branches)
    return conv_block(y, filters, 1, 1, False, act, bn_momentum, "aspp_out")


def _encoder(backbone: str, inputs, weights: str | None, alpha: float):
    try:
        if backbone == "mobilenetv2":
            x = layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")(inputs)
            return keras.applications.MobileNetV2(input_tensor=x, include_top=False, weights=weights, alpha=alpha)
        x = CaffePreprocess(name="preprocess")(inputs)
        return keras.applications.ResNet50(input_tensor=x, include_top=False, weights=weights)
    except Exception as exc:  # keras raises a plain Exception on URL fetch failures
        if weights == "imagenet":
            raise SkinsegError(
                f"[model] weights = imagenet: could not download the {backbone} ImageNet weights "
                f"({str(exc).splitlines()[0][:120]}); this machine may be offline: use weights = none "
                "or weights = PATH to a local weights file"
            ) from exc
        raise


def build_model(
    tile: tuple[int, int],
    backbone: str = "mobilenetv2",
    decoder: str = "separable",
    weights: str = "none",
    alpha: float = 1.0,
    filters: int = 256,
    activation: str = "relu",
    dropout: float = 0.1,
    bn_momentum: float = 0.99,
) -> keras.Model:
    """DeepLabV3+ for (tile_h, tile_w) RGB inputs in [0, 255]; output: lesion probability (float32)."""
    th, tw = tile
    if th % 16 or tw % 16:
        raise SkinsegError(f"[model] image_height x image_width = {th}x{tw}: both must be multiples of 16")
    if backbone not in TAPS:
        raise SkinsegError(f"[model] backbone = {backbone}: expected one of {', '.join(TAPS)}")
    separable = decoder == "separable"
    inputs = keras.Input((th, tw, 3), name="image")
    enc_weights = "imagenet" if weights == "imagenet" else None
    encoder = _encoder(backbone, inputs, enc_weights, alpha)
    for layer in encoder.layers:  # keras.applications uses 0.999, which lags badly when training from scratch
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = bn_momentum
    high = encoder.get_layer(TAPS[backbone][0]).output
    low = encoder.get_layer(TAPS[backbone][1]).output
    x = aspp(high, filters, separable, activation, bn_momentum)
    x = layers.UpSampling2D(size=(low.shape[1] // x.shape[1], low.shape[2] // x.shape[2]),
                            interpolation="bilinear", name="decoder_up4")(x)
    low = conv_block(low, 48, 1, 1, False, activation, bn_momentum, "decoder_low")
    x = layers.Concatenate(name="decoder_concat")([x, low])
    x = conv_block(x, filters, 3, 1, separable, activation, bn_momentum, "decoder_c1")
    x = conv_block(x, filters, 3, 1, separable, activation, bn_momentum, "decoder_c2")
    if dropout:
        x = layers.Dropout(dropout, name="decoder_dropout")(x)
    # Classify at 1/4 resolution, then upsample one channel: the same function (both steps are linear
    # and bilinear weights sum to 1) without a tile-sized 256-channel tensor (256 MB at 512x512).
    x = layers.Conv2D(1, 1, name="classifier")(x)
    x = layers.UpSampling2D(size=(th // x.shape[1], tw // x.shape[2]), interpolation="bilinear",
                            name="decoder_up_out")(x)
    outputs = layers.Activation("sigmoid", dtype="float32", name="probability")(x)
    model = keras.Model(inputs, outputs, name=f"deeplabv3plus_{backbone}_{decoder}")
    if weights not in ("none", "imagenet", "", None):
        load_init_weights(model, weights)
    return model


def load_init_weights(model: keras.Model, path: str) -> None:
    """Initialise from a .keras model or .weights.h5 file (layers matched by name and shape)."""
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise SkinsegError(f"[model] weights = {path}: file not found; use none, imagenet or a .keras file")
    if p.suffix == ".keras":
        src = keras.saving.load_model(p, compile=False, safe_mode=True)
        copied = 0
        for layer in model.layers:
            try:
                other = src.get_layer(layer.name)
            except ValueError:
                continue
            ws = other.get_weights()
            if ws and [w.shape for w in ws] == [w.shape for w in layer.get_weights()]:
                layer.set_weights(ws)
                copied += 1
        if not copied:
            raise SkinsegError(f"[model] weights = {path}: no layer matched this architecture")
    else:
        try:
            model.load_weights(p)
        except Exception as exc:
            raise SkinsegError(f"[model] weights = {path}: does not fit this model ({str(exc)[:150]})") from exc


def model_from_config(cfg: Any) -> keras.Model:
    m = cfg.model
    return build_model((m.image_height, m.image_width), m.backbone, m.decoder, m.weights, m.alpha,
                       m.aspp_filters, m.activation, m.dropout_rate, m.bn_momentum)
