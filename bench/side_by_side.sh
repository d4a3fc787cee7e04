#!/usr/bin/env bash
# gpu-cnn's CPU backend and Keras back to back on the same CIFAR-10-format files, alternating,
# ROUNDS times; prints the medians README's table quotes.
#
#   bench/side_by_side.sh DATA OUT [ROUNDS]
#
# DATA holds cifar-10-batches-bin/ (bench/keras_reference.py --write-synthetic writes a
# synthetic one). GPU_CNN (default target/release/gpu-cnn) and PYTHON (default python3; one
# with tensorflow-cpu installed) say what to run. Each round: Keras `fit` 2 epochs at batch 32
# with validation + `predict` at batch 256 (bench/keras_reference.py), then `gpu-cnn train` 2
# epochs at batch 32 on the CPU backend, under /usr/bin/time for peak RSS. The second epoch of
# each is the steady-state figure (Keras traces its graph in the first).
set -eu
data=$1 out=$2 rounds=${3:-3}
bin=${GPU_CNN:-target/release/gpu-cnn}
python=${PYTHON:-python3}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
for r in $(seq 1 "$rounds"); do
    echo "round $r: keras" >&2
    "$python" "$here/keras_reference.py" --data-dir "$data" --epochs 2 --json "$out/keras-$r.json" > "$out/keras-$r.log" 2>&1
    echo "round $r: gpu-cnn" >&2
    rm -rf "$out/ours-$r"
    /usr/bin/time -f "%M" -o "$out/ours-$r.rss" "$bin" train --dataset cifar10 --data-dir "$data" --offline --epochs 2 --batch-size 32 --device cpu --out "$out/ours-$r" > "$out/ours-$r.log" 2>&1
done
"$python" - "$out" "$rounds" <<'EOF'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
keras = [json.load(open(f"{out}/keras-{r}.json")) for r in range(1, rounds + 1)]
ours = [json.load(open(f"{out}/ours-{r}/history.json")) for r in range(1, rounds + 1)]
rss = [int(open(f"{out}/ours-{r}.rss").read().split()[-1]) * 1024 for r in range(1, rounds + 1)]
med = statistics.median
k_epoch = [k["fit_epoch_seconds"][-1] for k in keras]
o_epoch = [o["seconds"][-1] for o in ours]
k_pred = [k["predict_images_per_second"] for k in keras]
print(f"fit epoch with validation, batch 32 (second epoch): gpu-cnn CPU {med(o_epoch):.2f} s {sorted(round(x, 2) for x in o_epoch)}, "
      f"Keras {med(k_epoch):.2f} s {sorted(round(x, 2) for x in k_epoch)}: {med(k_epoch) / med(o_epoch):.2f}x")
print(f"Keras predict batch 256: {med(k_pred):.0f} images/s {sorted(round(x) for x in k_pred)}")
print(f"peak RSS: gpu-cnn {med(rss) / 1e6:.0f} MB {sorted(round(x / 1e6) for x in rss)}, Keras {med(k['peak_rss_bytes'] for k in keras) / 1e6:.0f} MB")
print(f"val accuracy after 2 epochs: gpu-cnn {[round(o['val_accuracy'][-1], 4) for o in ours]}, Keras {[round(k['val_accuracy'][-1], 4) for k in keras]}")
print(f"TensorFlow {keras[0]['tensorflow']}, Keras {keras[0]['keras']}, TF matmul 1024^3 {med(k['matmul_1024_gflops'] for k in keras):.0f} GFLOP/s")
EOF
