#!/usr/bin/env python3
"""Keras/TensorFlow reference for gpu-cnn's CPU figures: the same seed model on the same
CIFAR-10-format files, timed the way README's table times gpu-cnn.

    python3 -m venv ~/kerasvenv && ~/kerasvenv/bin/pip install tensorflow-cpu
    ~/kerasvenv/bin/python bench/keras_reference.py --data-dir DATA [--write-synthetic]

DATA holds cifar-10-batches-bin/ (the real CIFAR-10, or with --write-synthetic a seeded
synthetic set in the same binary format, written there if missing: 50,000 + 10,000 32x32x3
images with class-coloured squares on noise). gpu-cnn reads the same folder:

    gpu-cnn train --dataset cifar10 --data-dir DATA --offline --epochs 1 --device cpu

Prints, and writes with --json FILE: seconds of each `fit` epoch with validation at batch 32
(Keras's own epoch, validation included; the first also traces the graph), `predict` images/s
at batch 256 on the test set (median of --repeats runs after one warm-up), the training FLOP
rate against this machine's sgemm rate as TensorFlow measures it, and peak RSS.
"""

import argparse
import json
import os
import resource
import sys
import time

import numpy as np

SIDE = 32
PLANE = SIDE * SIDE
RECORD = 1 + 3 * PLANE
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_synthetic(folder, seed=0):
    """Five training batches and a test batch of 10,000 records each, CIFAR-10's format."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name in names:
        labels = rng.integers(0, 10, size=10000, dtype=np.uint8)
        images = rng.integers(0, 80, size=(10000, 3, SIDE, SIDE), dtype=np.uint8)
        for i, label in enumerate(labels.tolist()):
            # A class-coloured 8x8 square at a class-dependent place, jittered.
            angle = label / 10 * 2 * np.pi
            cy = int(16 + np.sin(angle) * 8) + rng.integers(-2, 3)
            cx = int(16 + np.cos(angle) * 8) + rng.integers(-2, 3)
            for ch in range(3):
                images[i, ch, max(cy - 4, 0):cy + 4, max(cx - 4, 0):cx + 4] = 150 + (label * 37 + ch * 53) % 100
        records = np.concatenate([labels[:, None], images.reshape(10000, 3 * PLANE)], axis=1)
        records.astype(np.uint8).tofile(os.path.join(folder, name))
    with open(os.path.join(folder, "batches.meta.txt"), "w") as f:
        f.write("\n".join(CLASSES) + "\n")


def read_batch(path):
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD:
        sys.exit(f"{path}: {raw.size} bytes is not a whole number of {RECORD}-byte records")
    raw = raw.reshape(-1, RECORD)
    # Planar CHW records -> NHWC, as gpu-cnn reads them.
    return raw[:, 1:].reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1), raw[:, 0]


def load(folder):
    parts = [read_batch(os.path.join(folder, f"data_batch_{i}.bin")) for i in range(1, 6)]
    x_test, y_test = read_batch(os.path.join(folder, "test_batch.bin"))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), x_test, y_test


def seed_model(keras):
    """gpu-cnn's default architecture (README "The seed model"), Keras defaults throughout."""
    L = keras.layers
    return keras.Sequential([
        keras.Input((SIDE, SIDE, 3)),
        L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(64, 3, activation="relu"),
        L.Flatten(), L.Dense(64, activation="relu"), L.Dense(10, activation="softmax"),
    ])


def sgemm_gflops(tf):
    """TensorFlow's own fp32 matmul rate at 1024^3 (median of 7), for the FLOP-rate ratio."""
    a = tf.random.uniform((1024, 1024))
    b = tf.random.uniform((1024, 1024))
    tf.linalg.matmul(a, b).numpy()
    times = []
    for _ in range(7):
        t = time.perf_counter()
        tf.linalg.matmul(a, b).numpy()
        times.append(time.perf_counter() - t)
    return 2 * 1024 ** 3 / sorted(times)[3] / 1e9


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True, help="folder holding cifar-10-batches-bin/")
    p.add_argument("--write-synthetic", action="store_true", help="write a synthetic set in CIFAR-10's format there if it is missing")
    p.add_argument("--epochs", type=int, default=2, help="fit epochs (the first one also traces the graph)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--predict-batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5, help="timed predict runs")
    p.add_argument("--limit-train", type=int, help="use only the first N training images (a quick check)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()

    folder = os.path.join(args.data_dir, "cifar-10-batches-bin")
    if not os.path.exists(os.path.join(folder, "test_batch.bin")):
        if not args.write_synthetic:
            sys.exit(f"{folder}: no CIFAR-10 files (pass --write-synthetic to write a synthetic set there)")
        write_synthetic(folder, args.seed)
        print(f"wrote a synthetic CIFAR-10-format set to {folder}")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import keras

    keras.utils.set_random_seed(args.seed)
    x_train, y_train, x_test, y_test = load(folder)
    if args.limit_train:
        x_train, y_train = x_train[:args.limit_train], y_train[:args.limit_train]
    x_train = x_train.astype("float32") / 255.0
    x_test = x_test.astype("float32") / 255.0

    model = seed_model(keras)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.started)

    timer = EpochTimer()
    history = model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs, validation_data=(x_test, y_test), shuffle=True, verbose=2, callbacks=[timer])

    model.predict(x_test, batch_size=args.predict_batch, verbose=0)
    predict_seconds = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        model.predict(x_test, batch_size=args.predict_batch, verbose=0)
        predict_seconds.append(time.perf_counter() - t)
    predict_ips = len(x_test) / sorted(predict_seconds)[len(predict_seconds) // 2]

    gflops = sgemm_gflops(tf)
    # The seed model's training FLOP per image (src/bench.rs SEED_TRAIN_FLOP_PER_IMAGE); the
    # epoch's time includes validation, so training alone runs at least this fast.
    steady = timer.seconds[-1]
    result = {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "threads": os.cpu_count(),
        "train_images": len(x_train),
        "test_images": len(x_test),
        "batch_size": args.batch_size,
        "fit_epoch_seconds": timer.seconds,
        "fit_images_per_second_last_epoch": len(x_train) / steady,
        "val_accuracy": history.history["val_accuracy"],
        "predict_batch": args.predict_batch,
        "predict_images_per_second": predict_ips,
        "predict_seconds": predict_seconds,
        "matmul_1024_gflops": gflops,
        "training_fraction_of_matmul": len(x_train) * 25.7e6 / steady / 1e9 / gflops,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
