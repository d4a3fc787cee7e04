#!/usr/bin/env python3
"""Keras trained with gpu-cnn's random draws: archs/modern.txt on Fashion-MNIST, batch 32, Adam
defaults, from the initial weights `gpu-cnn train --seed S` starts from, in the order it shuffles
each epoch into, with the dropout masks it draws at each step. Only the arithmetic differs from
our run of the same seed, so the two runs' epoch-by-epoch val_accuracy says how much of a gap to
Keras's own seeded run comes from the draws and how much from the implementation:

    v/bin/python bench/keras_same_draws.py --seed 0 --epochs 10 --json keras-our-draws.json
    gpu-cnn train --dataset fashion-mnist --arch archs/modern.txt --epochs 10 --seed 0 --device cpu

The draws are transcribed from src/rng.rs (SplitMix64 streams), src/train.rs (`epoch_order`),
src/network.rs (`init_weights`) and src/backend/dropout.rs (the PCG mask hash); the values
pinned below come from gpu-cnn itself and are checked at start. `--save W.npz` writes the final
weights under our checkpoints' names (`bench/bn_statistics_probe.py` loads them).
"""

import argparse
import json
import os
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bn_statistics_probe import named_layers
from keras_modern import idx

M64 = (1 << 64) - 1
# Purposes of src/rng.rs.
INIT_WEIGHTS, SHUFFLE, DROPOUT = 1, 2, 0xD20F0000


class Rng:
    """src/rng.rs's SplitMix64."""

    def __init__(self, state):
        self.state = state & M64

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & M64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    @staticmethod
    def derive(seed, purpose, index):
        r = Rng(seed ^ ((purpose * 0x9E3779B97F4A7C15) & M64))
        # Rust's `r.0 ^= r.next_u64() ^ ...` advances the state before it reads r.0.
        v = r.next_u64() ^ ((index * 0xD1B54A32D192ED03) & M64)
        r.state ^= v
        r.next_u64()
        return r

    def below(self, n):
        zone = M64 - M64 % n
        while True:
            v = self.next_u64()
            if v < zone:
                return v % n

    def unit_f32(self):
        return np.float32((self.next_u64() >> 40) / float(1 << 24))


def epoch_order(n, seed, epoch):
    order = list(range(n))
    r = Rng.derive(seed, SHUFFLE, epoch)
    for i in range(n - 1, 0, -1):
        j = r.below(i + 1)
        order[i], order[j] = order[j], order[i]
    return np.array(order)


def pcg(v):
    """The PCG output hash on u32 arrays (numpy's u32 arithmetic wraps, as Rust's and WGSL's)."""
    v = np.asarray(v, dtype=np.uint32)
    with np.errstate(over="ignore"):
        state = v * np.uint32(747796405) + np.uint32(2891336453)
        word = ((state >> ((state >> np.uint32(28)) + np.uint32(4))) ^ state) * np.uint32(277803737)
    return (word >> np.uint32(22)) ^ word


def step_key(seed, step):
    bits = Rng.derive(seed, DROPOUT, step).next_u64()
    return bits & 0xFFFFFFFF, bits >> 32


def element_hash(key, layer, i):
    stream = pcg(np.uint32(key[0]) ^ pcg(np.uint32(key[1] ^ layer)))
    return pcg(pcg(np.asarray(i, dtype=np.uint32) ^ stream) ^ np.uint32(key[1]))


def dropout_mask(key, layer, shape, rate):
    """What Dropout(rate), layer `layer` of the arch, multiplies its input by at this step."""
    h = element_hash(key, layer, np.arange(int(np.prod(shape)), dtype=np.uint32))
    threshold = np.uint32(min(round(rate * 4294967296.0), 4294967295))
    scale = np.float32(1.0) / (np.float32(1.0) - np.float32(rate))
    return np.where(h >= threshold, scale, np.float32(0.0)).astype(np.float32).reshape(shape)


def glorot(seed, layer, shape):
    """A kernel as `init_weights` draws it: the layer's own stream, in row-major order."""
    field = int(np.prod(shape[:-2]))
    fan_in, fan_out = field * shape[-2], field * shape[-1]
    limit = np.float32(np.sqrt(6.0 / (fan_in + fan_out)))
    r = Rng.derive(seed, INIT_WEIGHTS, layer)
    u = np.array([r.unit_f32() for _ in range(int(np.prod(shape)))], dtype=np.float32)
    return ((u * np.float32(2.0) - np.float32(1.0)) * limit).astype(np.float32).reshape(shape)


# Values printed by gpu-cnn (epoch_order(10, 0, 0), step_key(0, 0), and the mask hash that
# src/backend/dropout.rs pins): a transcription error stops the script here.
assert list(epoch_order(10, 0, 0)) == [0, 5, 4, 7, 1, 3, 9, 6, 2, 8], "epoch_order"
assert step_key(0, 0) == (371117664, 3152558830), "step_key"
assert list(element_hash((1, 2), 3, np.arange(4))) == [1782204697, 2764454639, 77328835, 1323900735], "mask hash"

# archs/modern.txt's layer indices (its layers in order, ReLU, pooling and Dropout included): the
# kernels' init streams and the Dropout layers' mask streams are keyed by them.
CONV_LAYERS = [(0, 32), (5, 64), (8, 64), (13, 128)]
DENSE_LAYER = 18
DROPOUTS = [(4, (14, 14, 32), 0.25), (12, (7, 7, 64), 0.25), (17, (128,), 0.5)]


def model_with_masks():
    """archs/modern.txt with each Dropout a multiplication by a mask given as an input."""
    import keras
    from keras import layers

    x = keras.Input((28, 28, 1))
    masks = [keras.Input(shape) for _, shape, _ in DROPOUTS]
    h = x
    blocks = [[32, "pool", 0], [64], [64, "pool", 1], [128]]
    for block in blocks:
        h = layers.Conv2D(block[0], 3, padding="same")(h)
        h = layers.ReLU()(layers.BatchNormalization()(h))
        if len(block) > 1:
            h = layers.Multiply()([layers.MaxPooling2D(2)(h), masks[block[2]]])
    h = layers.Multiply()([layers.GlobalAveragePooling2D()(h), masks[2]])
    y = layers.Dense(10, activation="softmax")(h)
    return keras.Model([x, *masks], y)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--limit-train", type=int, help="only the first N training images, as gpu-cnn's --limit-train")
    p.add_argument("--limit-test", type=int)
    p.add_argument("--json", help="also write the history here")
    p.add_argument("--save", help="write the final weights here (.npz, our checkpoints' tensor names)")
    a = p.parse_args()
    import keras
    import tensorflow as tf

    read = lambda name: idx(os.path.join(a.data_dir, name))
    x = read("train-images-idx3-ubyte.gz")[: a.limit_train].astype("float32")[..., None] / 255.0
    y = read("train-labels-idx1-ubyte.gz")[: a.limit_train].astype("int32")
    xt = read("t10k-images-idx3-ubyte.gz")[: a.limit_test].astype("float32")[..., None] / 255.0
    yt = read("t10k-labels-idx1-ubyte.gz")[: a.limit_test].astype("int32")

    model = model_with_masks()
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    for layer, (index, filters) in zip(convs, CONV_LAYERS):
        kernel = glorot(a.seed, index, layer.kernel.shape)
        layer.set_weights([kernel, np.zeros(filters, np.float32)])
    dense = [l for l in model.layers if isinstance(l, keras.layers.Dense)][0]
    dense.set_weights([glorot(a.seed, DENSE_LAYER, dense.kernel.shape), np.zeros(10, np.float32)])

    optimizer = keras.optimizers.Adam()
    loss_fn = keras.losses.SparseCategoricalCrossentropy()

    @tf.function
    def train_step(xb, yb, *masks):
        with tf.GradientTape() as tape:
            probs = model([xb, *masks], training=True)
            loss = loss_fn(yb, probs)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        hits = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probs, 1, output_type=tf.int32), yb), tf.float32))
        return loss * tf.cast(tf.shape(yb)[0], tf.float32), hits

    def evaluate():
        ones = [np.ones((len(xt),) + shape, np.float32) for _, shape, _ in DROPOUTS]
        probs = model.predict([xt, *ones], batch_size=256, verbose=0)
        picked = np.maximum(probs[np.arange(len(yt)), yt], 1e-7)
        return float(np.mean(np.argmax(probs, 1) == yt)), float(np.mean(-np.log(picked)))

    history, step = [], 0
    for epoch in range(a.epochs):
        started = time.perf_counter()
        order = epoch_order(len(x), a.seed, epoch)
        loss_sum = hits = 0.0
        for first in range(0, len(order), 32):
            batch = order[first : first + 32]
            key = step_key(a.seed, step)
            masks = [dropout_mask(key, layer, (len(batch),) + shape, rate) for layer, shape, rate in DROPOUTS]
            loss, hit = train_step(x[batch], y[batch], *masks)
            loss_sum, hits, step = loss_sum + float(loss), hits + float(hit), step + 1
        val_accuracy, val_loss = evaluate()
        record = {"epoch": epoch + 1, "accuracy": hits / len(x), "loss": loss_sum / len(x), "val_accuracy": val_accuracy, "val_loss": val_loss, "seconds": time.perf_counter() - started}
        history.append(record)
        print(json.dumps(record), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(history, f)
    if a.save:
        weights = {f"{name}.{t}": v for layer, name, tensors in named_layers(model) for t, v in zip(tensors, layer.get_weights())}
        np.savez(a.save, **weights)


if __name__ == "__main__":
    main()
