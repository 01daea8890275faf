#!/usr/bin/env bash
# Speed of cnn beside the PyTorch reference on the same networks, batch sizes and cores,
# alternating the two in one run (timings drift; only same-run ratios mean anything).
#
#   scripts/bench-vs-pytorch.sh [REPS]        (default 3; medians of REPS alternating rounds)
#
# Needs: a release build (cargo build --release), python3 with torch and numpy, and the PyTorch
# reference script with its data prepared (see ../shared/bench/pytorch_ref.py's header); set
# PYTORCH_REF to its path if it is not ../shared/bench/pytorch_ref.py.
set -euo pipefail
cd "$(dirname "$0")/.."
cnn=${CNN:-target/release/cnn}
ref=${PYTORCH_REF:-../shared/bench/pytorch_ref.py}
reps=${1:-3}
out=$(mktemp)
trap 'rm -f "$out"' EXIT

row() { echo "$1 $2 $3 $4" >>"$out"; }   # system work threads img/s
json() { python3 -c "import json,sys; print(json.loads(sys.stdin.read())['$1'])"; }
torch_median() { grep '^RESULT ' | sed 's/^RESULT //' | python3 -c "import json,sys; print(json.loads(sys.stdin.read())['median'])"; }

for r in $(seq "$reps"); do
    echo "round $r of $reps" >&2
    for t in 2 1; do
        v=$("$cnn" bench --arch mnist-ref --batch-size 64 --threads $t --warmup 20 --iters 200 --reps 1 --infer-iters 1 --infer-batch-size 1 --json | json train_images_per_sec)
        row cnn mnist-train $t "$v"
        v=$(python3 "$ref" train-tput --net mnist --threads $t --batch 64 --reps 1 | torch_median)
        row pytorch mnist-train $t "$v"
        v=$("$cnn" bench --arch cifar-ref --batch-size 128 --threads $t --warmup 10 --iters 60 --reps 1 --infer-iters 1 --infer-batch-size 1 --json | json train_images_per_sec)
        row cnn cifar-train $t "$v"
        v=$(python3 "$ref" train-tput --net cifar --threads $t --batch 128 --warmup 10 --iters 60 --reps 1 | torch_median)
        row pytorch cifar-train $t "$v"
    done
    v=$("$cnn" bench --arch mnist-ref --threads 2 --warmup 1 --iters 1 --reps 1 --infer-batch-size 1000 --infer-iters 10 --json | json infer_images_per_sec)
    row cnn mnist-infer 2 "$v"
    v=$(python3 "$ref" infer-tput --net mnist --threads 2 --batch 1000 --reps 1 | torch_median)
    row pytorch mnist-infer 2 "$v"
done

python3 - "$out" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
data = {}
for system, work, threads, v in rows:
    data.setdefault((work, threads, system), []).append(float(v))
def med(k):
    return statistics.median(data[k])
print("| work | threads | cnn img/s (median, min–max) | PyTorch img/s (median, min–max) | ratio |")
print("|---|---:|---:|---:|---:|")
for work in ["mnist-train", "cifar-train", "mnist-infer"]:
    for threads in ["2", "1"]:
        if (work, threads, "cnn") not in data:
            continue
        c, p = data[(work, threads, "cnn")], data[(work, threads, "pytorch")]
        print(f"| {work} | {threads} | {med((work, threads, 'cnn')):.0f} ({min(c):.0f}–{max(c):.0f}) "
              f"| {med((work, threads, 'pytorch')):.0f} ({min(p):.0f}–{max(p):.0f}) "
              f"| {med((work, threads, 'cnn')) / med((work, threads, 'pytorch')):.2f}× |")
for work in ["mnist-train", "cifar-train"]:
    for system in ["cnn", "pytorch"]:
        two, one = med((work, "2", system)), med((work, "1", system))
        print(f"{system} {work}: 2 threads vs 1 = {two / one:.2f}×")
PY
