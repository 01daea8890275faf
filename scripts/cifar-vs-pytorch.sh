#!/usr/bin/env bash
# CIFAR-10 accuracy of cnn beside the PyTorch reference on the same network (cifar-ref) and the
# same wall-clock budget, one after the other on an otherwise idle machine.
#
#   scripts/cifar-vs-pytorch.sh [BUDGET_MINUTES] [PYTORCH_EPOCHS]     (defaults: 58 and 36)
#
# cnn fits its epochs to the budget itself (--time-budget). The reference script takes an epoch
# count instead: choose PYTORCH_EPOCHS so that its run ends within the budget (its per-epoch
# time, printed as train_s + eval_s, is about 95 s on 2 Zen 4 cores; check the first epoch and
# restart with fewer epochs if it would overrun).
#
# Needs: a release build, the CIFAR-10 image folder (scripts/fetch-data.sh cifar10 writes
# data/cifar10-jpg; set CIFAR_DIR otherwise), python3 with torch and numpy, and the reference
# script with its data prepared (see ../shared/bench/pytorch_ref.py's header; PYTORCH_REF sets
# its path), which scripts/pytorch-cifar-tta.py runs unchanged, adding the final network's
# accuracy with flip test-time augmentation. Both sides are measured with and without it. Writes models/cifar10.cnn, models/cifar10-train.csv and logs under $OUT (default
# /tmp/cifar-vs-pytorch).
set -euo pipefail
cd "$(dirname "$0")/.."
cnn=${CNN:-target/release/cnn}
ref=${PYTORCH_REF:-../shared/bench/pytorch_ref.py}
data=${CIFAR_DIR:-data/cifar10-jpg}
budget=${1:-58}
torch_epochs=${2:-36}
out=${OUT:-/tmp/cifar-vs-pytorch}
mkdir -p "$out"

echo "cnn: cifar-ref, ${budget} min budget" >&2
start=$(date +%s)
"$cnn" train --dataset "$data" --arch cifar-ref --batch-size 128 --lr 0.2 --warmup 1 \
    --label-smoothing 0.1 --val-split 0 --time-budget "${budget}m" \
    --out models/cifar10.cnn --log models/cifar10-train.csv 2>"$out/cnn-train.err" | tee "$out/cnn-train.txt"
echo "cnn wall time: $(( $(date +%s) - start )) s" | tee -a "$out/cnn-train.txt"
"$cnn" eval --model models/cifar10.cnn --dataset "$data" | tee "$out/cnn-eval.txt"
"$cnn" eval --model models/cifar10.cnn --dataset "$data" --tta flip | tee "$out/cnn-eval-tta.txt"

echo "PyTorch: cifar-ref, ${torch_epochs} epochs" >&2
start=$(date +%s)
PYTORCH_REF="$ref" python3 scripts/pytorch-cifar-tta.py --epochs "$torch_epochs" --threads 2 |
    tee "$out/pytorch.txt"
echo "PyTorch wall time: $(( $(date +%s) - start )) s" | tee -a "$out/pytorch.txt"
