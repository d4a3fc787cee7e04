#!/usr/bin/env python3
"""How much of a BatchNormalization model's test accuracy its moving statistics cost: loads a
gpu-cnn checkpoint of archs/modern.txt (or weights saved with np.savez: Keras's in layer order,
or under our names as bench/keras_same_draws.py --save writes them)
into the Keras model, evaluates it on Fashion-MNIST's test set, then re-estimates each
BatchNormalization's moving mean and variance, layer by layer, from training images under
inference conditions (dropout off) and evaluates again. It prints, per layer, how far the
moving statistics were from those population statistics.

    v/bin/python bench/bn_statistics_probe.py runs/fashion-mnist/last.safetensors
"""

import argparse
import json
import os
import struct

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from keras_modern import idx, modern_model


def safetensors(path):
    """name -> float32 array of a safetensors file."""
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    out = {}
    for name, t in header.items():
        if name != "__metadata__":
            start, end = t["data_offsets"]
            out[name] = np.frombuffer(data[8 + n + start : 8 + n + end], dtype=np.float32).reshape(t["shape"])
    return out


# Each class with tensors: the base of Keras's automatic names and its tensors in
# get_weights() order (our checkpoints' `<name>.<tensor>`).
TENSORS = {
    "Conv2D": ("conv2d", ["kernel", "bias"]),
    "BatchNormalization": ("batch_normalization", ["gamma", "beta", "moving_mean", "moving_variance"]),
    "Dense": ("dense", ["kernel", "bias"]),
}


def named_layers(model):
    """(layer, Keras's automatic name, its tensor names) of each layer with tensors, in order:
    conv2d, conv2d_1, ... counted per class."""
    seen = {}
    for layer in model.layers:
        if type(layer).__name__ not in TENSORS:
            continue
        base, tensors = TENSORS[type(layer).__name__]
        i = seen.get(base, 0)
        seen[base] = i + 1
        yield layer, base if i == 0 else f"{base}_{i}", tensors


def load(model, path):
    """Our checkpoint's tensors (Keras's names and layouts) into the model, or an .npz: Keras's
    get_weights() in order (arr_0, arr_1, ...), or tensors under our names
    (bench/keras_same_draws.py --save)."""
    if path.endswith(".npz"):
        z = np.load(path)
        if "arr_0" in z.files:
            model.set_weights([z[f"arr_{i}"] for i in range(len(z.files))])
            return
        w = dict(z)
    else:
        w = safetensors(path)
    for layer, name, tensors in named_layers(model):
        layer.set_weights([w[f"{name}.{k}"] for k in tensors])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("weights", help="a gpu-cnn .safetensors checkpoint of archs/modern.txt, or an .npz")
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--images", type=int, default=20000, help="training images to estimate the statistics from")
    a = p.parse_args()
    import keras

    read = lambda name: idx(os.path.join(a.data_dir, name))
    x = read("train-images-idx3-ubyte.gz")[: a.images].astype("float32")[..., None] / 255.0
    xt = read("t10k-images-idx3-ubyte.gz").astype("float32")[..., None] / 255.0
    yt = read("t10k-labels-idx1-ubyte.gz")
    model = modern_model()
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    load(model, a.weights)
    before = model.evaluate(xt, yt, batch_size=256, verbose=0)
    print(f"with its moving statistics: loss {before[0]:.4f}, accuracy {before[1]:.4f}")
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        # This layer's inputs with every earlier layer as it now stands (earlier BNs already
        # re-estimated), in inference mode.
        inputs = keras.Model(model.inputs, layer.input).predict(x, batch_size=512, verbose=0)
        inputs = inputs.reshape(-1, inputs.shape[-1]).astype(np.float64)
        gamma, beta, moving_mean, moving_variance = layer.get_weights()
        mean, variance = inputs.mean(0), inputs.var(0)
        ratio = moving_variance / variance
        shift = np.abs(moving_mean - mean) / np.sqrt(variance)
        print(f"{layer.name}: moving / population variance median {np.median(ratio):.3f} (range {ratio.min():.3f}-{ratio.max():.3f}); |moving mean - mean| / std median {np.median(shift):.3f}")
        layer.set_weights([gamma, beta, mean.astype(np.float32), variance.astype(np.float32)])
    after = model.evaluate(xt, yt, batch_size=256, verbose=0)
    print(f"with re-estimated statistics: loss {after[0]:.4f}, accuracy {after[1]:.4f}")


if __name__ == "__main__":
    main()
