#!/usr/bin/env python3
"""Is one training step of archs/modern.txt (without its Dropout layers) the same in gpu-cnn and
in Keras? Runs `gpu-cnn train` twice on Fashion-MNIST's first 32 images, one step of plain SGD
each: at a learning rate of 1e-30 (the weights do not move: the starting point) and of 1 (the
weights move by exactly minus the gradient). It then computes the gradient of the same batch from
the same weights with TensorFlow, in float32 and in float64, and prints, per tensor, how far our
gradient and TensorFlow's float32 one are from the float64 one (max error / max |gradient|).

Our error should be of the size of TensorFlow's own float32 error: both are rounding, amplified
where a ReLU or max-pool decision flips between two float32 forward passes. The script exits 1
when ours is more than 3x TensorFlow's on any tensor. Conv biases before a BatchNormalization are
reported, not judged: their true gradient is zero, so both values are rounding noise. It also
compares the moving statistics after that one step (from Keras's zeros and ones) with Keras's
(exits 1 beyond 1e-4 relative).

    v/bin/python bench/keras_gradient_check.py target/release/gpu-cnn
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bn_statistics_probe import load, named_layers, safetensors
from keras_modern import idx, modern_model

HERE = os.path.dirname(os.path.abspath(__file__))


def our_step(binary, data_dir, work):
    """(weights before, weights after) one SGD step at learning rate 1 on 32 images."""
    arch = open(os.path.join(HERE, "..", "archs", "modern.txt")).read()
    arch = re.sub(r"Dropout\([^)]*\)", "", arch)
    arch_path = os.path.join(work, "modern-without-dropout.txt")
    open(arch_path, "w").write(arch)
    runs = {}
    for name, rate in [("before", "1e-30"), ("after", "1")]:
        out = os.path.join(work, name)
        cmd = [binary, "train", "--dataset", "fashion-mnist", "--data-dir", data_dir, "--arch", arch_path, "--limit-train", "32",
               "--limit-test", "32", "--epochs", "1", "--batch-size", "32", "--optimizer", "sgd", "--learning-rate", rate,
               "--device", "cpu", "--out", out]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{run.stdout}{run.stderr}")
        runs[name] = os.path.join(out, "last.safetensors")
    return runs["before"], runs["after"]


def tf_gradient(weights, x, y, dtype):
    """Names and gradients of the trainable tensors at `weights`, computed in `dtype`, and each
    BatchNormalization's name and (moving_mean, moving_variance) after the step, from zeros and
    ones."""
    import keras
    import tensorflow as tf

    keras.config.set_dtype_policy(dtype)
    model = modern_model(dropout=False)
    load(model, weights)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for bn in bns:
        gamma, beta, mean, variance = bn.get_weights()
        bn.set_weights([gamma, beta, np.zeros_like(mean), np.ones_like(variance)])
    with tf.GradientTape() as tape:
        p = model(tf.constant(x.astype(dtype)), training=True)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, p))
    grads = tape.gradient(loss, model.trainable_variables)
    layers = list(named_layers(model))
    # The trainable tensors, in model.trainable_variables' order: every class's but the moving statistics.
    names = [f"{name}.{k}" for _, name, tensors in layers for k in tensors if not k.startswith("moving")]
    moving = [(name, layer.get_weights()[2:]) for layer, name, _ in layers if layer in bns]
    return names, [g.numpy().astype(np.float64) for g in grads], moving


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("binary", help="the gpu-cnn binary")
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    a = p.parse_args()
    x = idx(os.path.join(a.data_dir, "train-images-idx3-ubyte.gz"))[:32].astype("float32")[..., None] / 255.0
    y = idx(os.path.join(a.data_dir, "train-labels-idx1-ubyte.gz"))[:32]
    with tempfile.TemporaryDirectory() as work:
        before, after = our_step(a.binary, a.data_dir, work)
        w0, w1 = safetensors(before), safetensors(after)
        names, g32, moving = tf_gradient(before, x, y, "float32")
        _, g64, _ = tf_gradient(before, x, y, "float64")
    failed = []
    print(f"{'tensor':28s} {'max |gradient|':>14s} {'ours':>9s} {'TF f32':>9s}   (error against TF float64 / max |gradient|)")
    for name, tf32, exact in zip(names, g32, g64):
        ours = w0[name].astype(np.float64) - w1[name]
        scale = np.abs(exact).max()
        e_ours, e_tf = np.abs(ours - exact).max() / scale, np.abs(tf32 - exact).max() / scale
        noise = name.startswith("conv2d") and name.endswith(".bias")
        verdict = "zero under BN: rounding noise in both" if noise else ("OK" if e_ours <= 3 * e_tf else "WORSE than TF's float32")
        if not noise and e_ours > 3 * e_tf:
            failed.append(name)
        print(f"{name:28s} {scale:14.3e} {e_ours:9.2e} {e_tf:9.2e}   {verdict}")
    # Our run's checkpoint holds the moving statistics after its one training step.
    for name, (mean, variance) in moving:
        for what, theirs in [("moving_mean", mean), ("moving_variance", variance)]:
            ours = w0[f"{name}.{what}"]
            rel = np.abs(ours - theirs).max() / np.abs(theirs).max()
            print(f"{name + '.' + what:38s} after one step: ours vs Keras {rel:.1e} relative")
            if rel > 1e-4:
                failed.append(f"{name}.{what}")
    if failed:
        print("further from TensorFlow than rounding: " + ", ".join(failed))
        sys.exit(1)


if __name__ == "__main__":
    main()
