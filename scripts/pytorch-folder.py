#!/usr/bin/env python3
"""PyTorch peer for `cnn train --dataset DIR` on a folder of 32×32 colour images.

The network is cnn's `cifar-ref` (three blocks of two 3×3 conv + batch norm + ReLU at 32, 64 and
128 channels, each block ending in a 2×2 max pool, then dense 2048→128→classes); the recipe is
the PyTorch reference's CIFAR-10 one (`../shared/bench/pytorch_ref.py acc-cifar`): SGD with
Nesterov momentum 0.9, lr 0.05 annealed per step by a cosine to 0, weight decay 5e-4, batch 128
(last partial batch dropped), random 32×32 crops of the image zero-padded by 4 and horizontal
flips, per-channel mean and standard deviation of the training images, PyTorch's default
initialisation. It trains on every image of DIR/train/<class>/ and reports accuracy on
DIR/test/<class>/ after each epoch, one JSON line per epoch.

    pip install torch numpy pillow
    scripts/pytorch-folder.py DIR --epochs 5 [--threads 2 --seed 1 --lr 0.05 --batch 128]
"""
import argparse
import json
import math
import os
import random
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def load_folder(root, classes=None):
    """(uint8 tensor [N,3,32,32], int64 labels [N], class names) of root/<class>/*."""
    classes = classes or sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    xs, ys = [], []
    for label, c in enumerate(classes):
        for f in sorted(os.listdir(os.path.join(root, c))):
            if f.lower().endswith(EXTENSIONS):
                img = Image.open(os.path.join(root, c, f)).convert("RGB").resize((32, 32))
                xs.append(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))
                ys.append(label)
    return torch.from_numpy(np.stack(xs)), torch.tensor(ys, dtype=torch.int64), classes


def cbr(cin, cout):
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class CifarRef(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.features = nn.Sequential(
            *cbr(3, 32), *cbr(32, 32), nn.MaxPool2d(2),
            *cbr(32, 64), *cbr(64, 64), nn.MaxPool2d(2),
            *cbr(64, 128), *cbr(128, 128), nn.MaxPool2d(2),
        )
        self.fc1 = nn.Linear(2048, 128)
        self.fc2 = nn.Linear(128, classes)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(torch.flatten(self.features(x), 1))))


def augment(xb, gen):
    """Random crop from the zero-padded image (pad 4) and a horizontal flip half the time."""
    n = xb.shape[0]
    padded = F.pad(xb, (4, 4, 4, 4))
    ox = torch.randint(0, 9, (n,), generator=gen)
    oy = torch.randint(0, 9, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    out = torch.empty_like(xb)
    for i in range(n):
        crop = padded[i, :, int(oy[i]):int(oy[i]) + 32, int(ox[i]):int(ox[i]) + 32]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dir")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--batch", type=int, default=128)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    random.seed(a.seed)
    np.random.seed(a.seed)
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)
    t_start = time.perf_counter()
    xtr, ytr, classes = load_folder(os.path.join(a.dir, "train"))
    xte, yte, _ = load_folder(os.path.join(a.dir, "test"), classes)
    x = xtr.float() / 255.0
    mean, std = x.mean(dim=(0, 2, 3)).view(1, 3, 1, 1), x.std(dim=(0, 2, 3)).view(1, 3, 1, 1)

    def norm(u8):
        return (u8.float() / 255.0 - mean) / std

    model = CifarRef(len(classes))
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    n = xtr.shape[0]
    steps = n // a.batch
    total = steps * a.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / total)))
    xte_n = norm(xte)
    for ep in range(1, a.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=gen)
        loss_sum = 0.0
        for s in range(steps):
            idx = perm[s * a.batch:(s + 1) * a.batch]
            loss = F.cross_entropy(model(norm(augment(xtr[idx], gen))), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item()
        model.eval()
        correct, test_loss = 0, 0.0
        with torch.inference_mode():
            for i in range(0, xte_n.shape[0], 1000):
                out = model(xte_n[i:i + 1000])
                test_loss += F.cross_entropy(out, yte[i:i + 1000], reduction="sum").item()
                correct += (out.argmax(1) == yte[i:i + 1000]).sum().item()
        print(json.dumps({"epoch": ep, "train_loss": loss_sum / steps, "train_s": time.perf_counter() - t0,
                          "test_loss": test_loss / len(yte), "test_acc": correct / len(yte)}), flush=True)
    print(json.dumps({"train_images": n, "test_images": len(yte), "classes": len(classes),
                      "total_s": time.perf_counter() - t_start, "final_acc": correct / len(yte)}))


if __name__ == "__main__":
    main()
