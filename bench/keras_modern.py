#!/usr/bin/env python3
"""Keras/TensorFlow reference for archs/modern.txt: the same model on Fashion-MNIST (Debian's
IDX files), batch 32, Adam defaults, seeded; prints each epoch's seconds, loss and val_accuracy
so gpu-cnn's run of the same model can be compared side by side on one machine:

    python3 -m venv v && v/bin/pip install tensorflow-cpu
    v/bin/python bench/keras_modern.py --epochs 1
    gpu-cnn train --dataset fashion-mnist --arch archs/modern.txt --epochs 1 --device cpu
"""

import argparse
import gzip
import json
import os
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def idx(path):
    data = gzip.open(path).read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data[4 + 4 * dims :], dtype=np.uint8).reshape(shape)


def modern_model(dropout=True):
    """archs/modern.txt as Keras layers, for 28x28x1 inputs and 10 classes (without its Dropout
    layers when `dropout` is false, for checks that need a deterministic training step)."""
    import keras
    from keras import layers

    drop = (lambda rate: [layers.Dropout(rate)]) if dropout else (lambda rate: [])
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(32, 3, padding="same"), layers.BatchNormalization(), layers.ReLU(), layers.MaxPooling2D(2), *drop(0.25),
            layers.Conv2D(64, 3, padding="same"), layers.BatchNormalization(), layers.ReLU(),
            layers.Conv2D(64, 3, padding="same"), layers.BatchNormalization(), layers.ReLU(),
            layers.MaxPooling2D(2), *drop(0.25), layers.Conv2D(128, 3, padding="same"), layers.BatchNormalization(), layers.ReLU(),
            layers.GlobalAveragePooling2D(), *drop(0.5), layers.Dense(10, activation="softmax"),
        ]
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the figures here")
    a = p.parse_args()
    import keras

    keras.utils.set_random_seed(a.seed)
    load = lambda name: idx(os.path.join(a.data_dir, name))
    x = load("train-images-idx3-ubyte.gz").astype("float32")[..., None] / 255.0
    y = load("train-labels-idx1-ubyte.gz")
    xt = load("t10k-images-idx3-ubyte.gz").astype("float32")[..., None] / 255.0
    yt = load("t10k-labels-idx1-ubyte.gz")
    model = modern_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    print("params", model.count_params())

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs["seconds"] = time.perf_counter() - self.t

    h = model.fit(x, y, batch_size=a.batch_size, epochs=a.epochs, validation_data=(xt, yt), callbacks=[Timer()], verbose=2)
    out = {k: [float(v) for v in vs] for k, vs in h.history.items()}
    steps = -(-len(x) // a.batch_size)
    out["ms_per_step"] = [s * 1000 / steps for s in out["seconds"]]
    print(json.dumps(out))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f)


if __name__ == "__main__":
    main()
