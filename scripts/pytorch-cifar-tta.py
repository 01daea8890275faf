#!/usr/bin/env python3
"""The PyTorch reference's CIFAR-10 run (pytorch_ref.py acc-cifar), unchanged, plus one more figure:
the final network's test accuracy with flip test-time augmentation, the rule of
`cnn eval --tta flip` (the mean of the logits of each image and of its mirror image).

    python3 scripts/pytorch-cifar-tta.py --epochs 36 [other acc-cifar flags]

PYTORCH_REF is the reference script's path (default ../shared/bench/pytorch_ref.py). The extra
evaluation runs once, after the last epoch, so the training run itself is the reference's own.
It prints one more JSON line, {"tta": "flip", "test_acc": ..., "test_loss": ...}.
"""
import importlib.util
import json
import os
import sys

import torch
import torch.nn.functional as F

here = os.path.dirname(os.path.abspath(__file__))
ref_path = os.environ.get("PYTORCH_REF", os.path.join(here, "..", "..", "shared", "bench", "pytorch_ref.py"))
spec = importlib.util.spec_from_file_location("pytorch_ref", ref_path)
ref = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ref)

epochs = int(sys.argv[sys.argv.index("--epochs") + 1])
plain_evaluate = ref.evaluate
calls = 0


def evaluate_with_flip(model, X, Y, bs=1000):
    """The reference's per-epoch evaluation; after the last epoch, also the flip-TTA figures."""
    global calls
    result = plain_evaluate(model, X, Y, bs)
    calls += 1
    if calls == epochs:
        model.eval()
        correct, loss = 0, 0.0
        with torch.inference_mode():
            for i in range(0, X.shape[0], bs):
                xb, yb = X[i:i + bs], Y[i:i + bs]
                out = 0.5 * (model(xb) + model(torch.flip(xb, dims=[3])))  # dim 3 is W in NCHW
                loss += F.cross_entropy(out, yb, reduction="sum").item()
                correct += (out.argmax(1) == yb).sum().item()
        model.train()
        print(json.dumps({"tta": "flip", "test_acc": correct / X.shape[0],
                          "test_loss": loss / X.shape[0]}), flush=True)
    return result


ref.evaluate = evaluate_with_flip
sys.argv = [ref_path, "acc-cifar"] + sys.argv[1:]
ref.main()
