#!/usr/bin/env bash
# One-call check of gpu-cnn on a machine with a real GPU (README "Checking a GPU machine").
#
#   scripts/device-check.sh pack SET            # on the build machine: release binary, the GPU
#                                               # test executables and Fashion-MNIST into SET
#   scripts/device-check.sh run SET OUT [--short]
#                                               # on the GPU machine: everything below, figures
#                                               # into OUT/device-check.json + OUT/summary.txt
#
# `run` needs only bash, coreutils, gzip and the GPU's Vulkan/Metal/DX12 driver. It runs, each under
# a time limit so that the whole stays within 8 minutes: `gpu-cnn devices`, the GPU tests
# (gpu_ops, gpu_training) with GPU_CNN_REQUIRE_GPU=1, `gpu-cnn bench --device gpu --json`, and
# one Fashion-MNIST epoch on the GPU and on the CPU backend. A step that fails or times out is
# recorded as such and the rest still run; the exit status is 1 if any step failed.
# --short: a few GPU tests, `bench --quick`, epochs on 500 images (a software GPU such as
# lavapipe finishes in a few minutes).
set -u

die() { echo "device-check: $*" >&2; exit 1; }

pack() {
    local set=$1 root
    root=$(cd "$(dirname "$0")/.." && pwd)
    local data=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
    mkdir -p "$set/tests" "$set/fashion-mnist" || die "cannot create $set"
    (cd "$root" && cargo build --release --bin gpu-cnn) || die "cargo build failed"
    # The test executables cargo builds, named by target: keep the GPU ones.
    local json
    json=$(cd "$root" && cargo test --release --no-run --message-format=json 2>/dev/null) || die "cargo test --no-run failed"
    local target_dir=${CARGO_TARGET_DIR:-$root/target}
    strip -o "$set/gpu-cnn" "$target_dir/release/gpu-cnn" || die "strip failed"
    for name in gpu_ops gpu_training; do
        local exe
        exe=$(printf '%s\n' "$json" | grep "\"name\":\"$name\"" | grep -o '"executable":"[^"]*"' | tail -1 | cut -d'"' -f4)
        [ -n "$exe" ] || die "no test executable for $name"
        strip -o "$set/tests/$name" "$exe" || die "strip $exe failed"
        # Each test executable carries its own wgpu and naga: gzip keeps the set under 60 MiB
        # (51 MiB; 61 MiB uncompressed).
        gzip -9 -n -f "$set/tests/$name" || die "gzip $set/tests/$name failed"
    done
    for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
        cp "$data/$f" "$set/fashion-mnist/" || die "$data/$f: missing (set FASHION_MNIST_DIR)"
    done
    (cd "$root" && git rev-parse HEAD 2>/dev/null) > "$set/COMMIT"
    ls -l "$set" "$set/tests" "$set/fashion-mnist"
    # Issue 14's limit: the set travels to the GPU machine, whose transfer is capped.
    local bytes
    bytes=$(du -sb "$set" | cut -f1)
    [ "$bytes" -le $((60 * 1024 * 1024)) ] || die "$set is $bytes bytes, over 60 MiB: shrink the binary or the tests"
    echo "packed $bytes bytes ($((bytes / 1048576)) MiB, at most 60) into $set"
}

# JSON string of a file's text (escapes \ " tab, newlines as \n, other control bytes dropped).
json_text() {
    [ -f "$1" ] || { echo null; return; }
    printf '"%s"' "$(tr -d '\000-\010\013-\037' < "$1" | sed 's/\\/\\\\/g; s/"/\\"/g; s/\t/\\t/g' | sed ':a;N;$!ba;s/\n/\\n/g')"
}

# A JSON file's contents, or null when missing or empty.
json_file() {
    if [ -s "$1" ]; then cat "$1"; else echo null; fi
}

run() {
    local set=$1 out=$2 short=${3:-}
    [ -x "$set/gpu-cnn" ] || die "$set/gpu-cnn: missing (make the set with: $0 pack $set)"
    mkdir -p "$out" || die "cannot create $out"
    local bin=$set/gpu-cnn started=$SECONDS failed=0
    # Step limits (seconds): 20 + 2 x 110 + 110 + 2 x 60 = 470 s at most: under 8 minutes.
    local t_tests=110 t_bench=110 t_epoch=60 filter=() bench_mode=() limit=()
    if [ "$short" = "--short" ]; then
        filter=(conv2d_matches_cpu a_seeded_run_repeats_exactly::gpu twenty_gpu_steps_agree_with_the_cpu)
        bench_mode=(--quick)
        limit=(--limit-train 500 --limit-test 250)
        t_epoch=120
    fi
    step() { # name limit command...: runs with a time limit, output to $out/name.txt, status to $out/name.status
        local name=$1 limit=$2 t0=$SECONDS
        shift 2
        timeout --kill-after=5 "$limit" "$@" > "$out/$name.txt" 2>&1
        local rc=$?
        echo "$rc $((SECONDS - t0))" > "$out/$name.status"
        [ $rc -eq 0 ] || failed=1
        echo "  $name: exit $rc in $((SECONDS - t0)) s" >&2
    }

    echo "device-check: devices" >&2
    step devices 20 "$bin" devices
    echo "device-check: GPU tests" >&2
    mkdir -p "$out/tests" || die "cannot create $out/tests"
    for t in gpu_ops gpu_training; do
        # A failed unpack leaves no executable; its step then fails and is recorded.
        gzip -dc "$set/tests/$t.gz" > "$out/tests/$t" && chmod +x "$out/tests/$t" || echo "device-check: cannot unpack $set/tests/$t.gz" >&2
        local args=()
        for f in "${filter[@]}"; do args+=("$f"); done
        step "tests-$t" "$t_tests" env GPU_CNN_REQUIRE_GPU=1 GPU_CNN_TEST_BIN="$bin" "$out/tests/$t" "${args[@]}"
    done
    echo "device-check: bench" >&2
    step bench "$t_bench" "$bin" bench --device gpu "${bench_mode[@]}" --json "$out/bench-gpu.json"
    echo "device-check: Fashion-MNIST epochs" >&2
    for dev in gpu cpu; do
        rm -rf "$out/epoch-$dev"
        step "epoch-$dev" "$t_epoch" "$bin" train --dataset fashion-mnist --data-dir "$set/fashion-mnist" --offline --epochs 1 --device "$dev" "${limit[@]}" --out "$out/epoch-$dev"
    done

    # One JSON with every figure, and a short summary.
    local tests_json="" t
    for t in gpu_ops gpu_training; do
        local line passed failed_n
        line=$(grep -E '^test result:' "$out/tests-$t.txt" | tail -1)
        passed=$(echo "$line" | grep -o '[0-9]* passed' | cut -d' ' -f1)
        failed_n=$(echo "$line" | grep -o '[0-9]* failed' | cut -d' ' -f1)
        tests_json+="\"$t\": {\"status\": [$(tr ' ' ',' < "$out/tests-$t.status")], \"passed\": ${passed:-null}, \"failed\": ${failed_n:-null}, \"output\": $(json_text "$out/tests-$t.txt")},"
    done
    {
        echo "{"
        echo "\"commit\": $(json_text "$set/COMMIT"),"
        echo "\"short\": $([ "$short" = "--short" ] && echo true || echo false),"
        echo "\"seconds\": $((SECONDS - started)),"
        echo "\"devices\": {\"status\": [$(tr ' ' ',' < "$out/devices.status")], \"output\": $(json_text "$out/devices.txt")},"
        echo "\"tests\": {${tests_json%,}},"
        echo "\"bench\": {\"status\": [$(tr ' ' ',' < "$out/bench.status")], \"figures\": $(json_file "$out/bench-gpu.json")},"
        for dev in gpu cpu; do
            echo "\"epoch_$dev\": {\"status\": [$(tr ' ' ',' < "$out/epoch-$dev.status")], \"history\": $(json_file "$out/epoch-$dev/history.json"), \"log_tail\": $(tail -3 "$out/epoch-$dev.txt" > "$out/epoch-$dev.tail"; json_text "$out/epoch-$dev.tail")}$([ $dev = gpu ] && echo ,)"
        done
        echo "}"
    } > "$out/device-check.json"

    {
        echo "gpu-cnn device check ($(date -u +%Y-%m-%dT%H:%M:%SZ), $((SECONDS - started)) s$([ "$short" = "--short" ] && echo ', short'))"
        echo "devices:"
        sed 's/^/  /' "$out/devices.txt"
        for t in gpu_ops gpu_training; do
            echo "tests $t: $(grep -E '^test result:' "$out/tests-$t.txt" | tail -1 || echo 'no result') (exit $(cut -d' ' -f1 "$out/tests-$t.status"))"
        done
        echo "bench (exit $(cut -d' ' -f1 "$out/bench.status")):"
        grep -E 'matmul|images/s|first step|FLOP rate|^== ' "$out/bench.txt" | sed 's/^/  /'
        for dev in gpu cpu; do
            echo "Fashion-MNIST epoch on $dev (exit $(cut -d' ' -f1 "$out/epoch-$dev.status")): $(grep -E 'ms/step' "$out/epoch-$dev.txt" | tail -1)"
        done
    } > "$out/summary.txt"
    cat "$out/summary.txt"
    echo "figures: $out/device-check.json"
    return $failed
}

case "${1:-}" in
    pack) [ $# -eq 2 ] || die "usage: $0 pack SET"; pack "$2" ;;
    run) [ $# -ge 3 ] && [ $# -le 4 ] || die "usage: $0 run SET OUT [--short]"; run "$2" "$3" "${4:-}"; exit $? ;;
    *) die "usage: $0 pack SET | run SET OUT [--short]" ;;
esac
