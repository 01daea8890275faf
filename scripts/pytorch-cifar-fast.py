#!/usr/bin/env python3
"""PyTorch peer for `cnn train --arch cifar-fast`: airbench94's network and recipe, fp32, on CPU.

Written from the published description of airbench94 (Keller Jordan, "94% on CIFAR-10 in 3.29
Seconds on a Single GPU", 2024; repository KellerJordan/cifar10-airbench, legacy/airbench94.py)
for a side-by-side run with cnn on the same image folder and cores: the same 2×2 whitening
convolution fitted to 5,000 training images (eps 5e-4, filters and their negatives, weights
frozen, bias trained for 3 epochs), three conv → pool → BN → GELU → conv → BN → GELU blocks (64,
256, 256 channels, dirac-initialised, BN eps 1e-12, momentum 0.6 in airbench's convention, scale
frozen at 1, bias at 64× the learning rate), global max pool, bias-free linear head times 1/9;
Nesterov SGD (momentum 0.85, batch 1024, summed loss, label smoothing 0.2, lr 11.5 and weight
decay 0.0153 per 1024 images as airbench scales them), a triangular schedule (0.2 → 1 at 23% of
the steps → 0.07), lookahead every 5 steps with decay 0.95⁵·(step/total)³, reflect-pad-2 crops
and alternating flips, and the 6-view test-time augmentation. The differences from airbench are
fp32 instead of fp16 and the CPU; the data is whatever folder is given (train/<class>/*,
test/<class>/*, 32×32 colour).

    pip install torch numpy pillow
    scripts/pytorch-cifar-fast.py data/cifar10-jpg --epochs 10 --threads 2 [--seed 1]

Prints one JSON line per epoch (test accuracy without TTA, seconds) and a final line with the
TTA accuracy and the training time (data loading excluded, as in cnn's epoch loop).
"""
import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
# CIFAR-10's per-channel mean and standard deviation, as airbench normalises.
MEAN = torch.tensor((0.4914, 0.4822, 0.4465)).view(1, 3, 1, 1)
STD = torch.tensor((0.2470, 0.2435, 0.2616)).view(1, 3, 1, 1)


def load_folder(root, classes=None):
    classes = classes or sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    xs, ys = [], []
    for label, c in enumerate(classes):
        for f in sorted(os.listdir(os.path.join(root, c))):
            if f.lower().endswith(EXTENSIONS):
                img = Image.open(os.path.join(root, c, f)).convert("RGB").resize((32, 32))
                xs.append(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))
                ys.append(label)
    x = torch.from_numpy(np.stack(xs)).float() / 255
    return (x - MEAN) / STD, torch.tensor(ys, dtype=torch.int64), classes


class BatchNorm(nn.BatchNorm2d):
    def __init__(self, n):
        super().__init__(n, eps=1e-12, momentum=1 - 0.6)
        self.weight.requires_grad = False


class Conv(nn.Conv2d):
    def __init__(self, cin, cout):
        super().__init__(cin, cout, kernel_size=3, padding="same", bias=False)

    def reset_parameters(self):
        super().reset_parameters()
        w = self.weight.data
        torch.nn.init.dirac_(w[: w.size(1)])


class ConvGroup(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1, self.pool, self.norm1 = Conv(cin, cout), nn.MaxPool2d(2), BatchNorm(cout)
        self.conv2, self.norm2, self.activ = Conv(cout, cout), BatchNorm(cout), nn.GELU()

    def forward(self, x):
        x = self.activ(self.norm1(self.pool(self.conv1(x))))
        return self.activ(self.norm2(self.conv2(x)))


class Mul(nn.Module):
    def __init__(self, s):
        super().__init__()
        self.s = s

    def forward(self, x):
        return x * self.s


def make_net(classes):
    net = nn.Sequential(
        nn.Conv2d(3, 24, kernel_size=2, padding=0, bias=True),
        nn.GELU(),
        ConvGroup(24, 64),
        ConvGroup(64, 256),
        ConvGroup(256, 256),
        nn.MaxPool2d(3),
        nn.Flatten(),
        nn.Linear(256, classes, bias=False),
        Mul(1 / 9),
    )
    net[0].weight.requires_grad = False
    net[0].bias.data.zero_()  # airbench's and cnn's start
    return net


def init_whitening(conv, images, eps=5e-4):
    c, (h, w) = images.shape[1], conv.weight.shape[2:]
    patches = images.unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c, h, w)
    flat = patches.reshape(len(patches), -1).double()
    cov = flat.T @ flat / len(flat)
    values, vectors = torch.linalg.eigh(cov)
    values, vectors = values.flip(0).view(-1, 1, 1, 1), vectors.T.reshape(c * h * w, c, h, w).flip(0)
    scaled = (vectors / torch.sqrt(values + eps)).float()
    conv.weight.data[:] = torch.cat((scaled, -scaled))


def triangle(steps, start, end, peak):
    xp, fp = [0, int(peak * steps), steps], [start, 1.0, end]
    return np.interp(np.arange(steps + 1), xp, fp)


def crop(padded, size, gen):
    """Per-image random crops of `size` from images reflect-padded by (padded − size) / 2."""
    r = (padded.shape[-1] - size) // 2
    shifts = torch.randint(-r, r + 1, (len(padded), 2), generator=gen)
    out = torch.empty(len(padded), padded.shape[1], size, size)
    for sy in range(-r, r + 1):
        for sx in range(-r, r + 1):
            m = (shifts[:, 0] == sy) & (shifts[:, 1] == sx)
            out[m] = padded[m, :, r + sy : r + sy + size, r + sx : r + sx + size]
    return out


@torch.no_grad()
def evaluate(net, x, y, tta, batch=1000):
    net.eval()
    correct = 0
    for i in range(0, len(x), batch):
        xb = x[i : i + batch]
        mirror = lambda v: 0.5 * net(v) + 0.5 * net(v.flip(-1))
        if tta:
            p = F.pad(xb, (1,) * 4, "reflect")
            shifted = 0.5 * (mirror(p[:, :, 0:32, 0:32]) + mirror(p[:, :, 2:34, 2:34]))
            logits = 0.5 * mirror(xb) + 0.5 * shifted
        else:
            logits = net(xb)
        correct += (logits.argmax(1) == y[i : i + batch]).sum().item()
    net.train()
    return correct / len(x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--epochs", type=float, default=9.9)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1024)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)
    xtr, ytr, classes = load_folder(os.path.join(a.dir, "train"))
    xte, yte, _ = load_folder(os.path.join(a.dir, "test"), classes)

    net = make_net(len(classes))
    momentum, bs = 0.85, a.batch
    kilostep_scale = 1024 * (1 + 1 / (1 - momentum))
    lr = 11.5 / kilostep_scale
    wd = 0.0153 * bs / kilostep_scale
    lr_bias = lr * 64
    norm_biases = [p for k, p in net.named_parameters() if "norm" in k and p.requires_grad]
    others = [p for k, p in net.named_parameters() if "norm" not in k and p.requires_grad]
    opt = torch.optim.SGD(
        [dict(params=norm_biases, lr=lr_bias, weight_decay=wd / lr_bias),
         dict(params=others, lr=lr, weight_decay=wd / lr)],
        momentum=momentum, nesterov=True)
    steps_per_epoch = len(xtr) // bs
    total = math.ceil(steps_per_epoch * a.epochs)
    schedule = triangle(total, 0.2, 0.07, 0.23)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: schedule[i])
    alpha = 0.95**5 * (torch.arange(total + 1) / total) ** 3
    ema = {k: v.clone() for k, v in net.state_dict().items()}

    def lookahead(decay):
        for e, p in zip(ema.values(), net.state_dict().values()):
            if p.dtype == torch.float:
                e.lerp_(p, 1 - decay)
                p.copy_(e)

    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.2, reduction="none")
    # A random sample, as cnn takes: the folder is read class by class.
    sample = torch.randperm(len(xtr), generator=gen)[:5000]
    init_whitening(net[0], xtr[sample])
    # Alternating flip: a random half flipped once, then every image's flip alternates.
    flipped = torch.rand(len(xtr), generator=gen) < 0.5
    base = torch.where(flipped.view(-1, 1, 1, 1), xtr.flip(-1), xtr)
    padded = F.pad(base, (2,) * 4, "reflect")
    step, train_s = 0, 0.0
    for epoch in range(math.ceil(a.epochs)):
        t0 = time.time()
        net[0].bias.requires_grad = epoch < 3
        images = crop(padded, 32, gen)
        if epoch % 2 == 1:
            images = images.flip(-1)
        order = torch.randperm(len(images), generator=gen)
        for i in range(steps_per_epoch):
            idx = order[i * bs : (i + 1) * bs]
            loss = loss_fn(net(images[idx]), ytr[idx]).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 5 == 0:
                lookahead(alpha[step].item())
            if step >= total:
                lookahead(1.0)
                break
        train_s += time.time() - t0
        print(json.dumps({"epoch": epoch + 1, "steps": step, "seconds": round(time.time() - t0, 1),
                          "test_acc": evaluate(net, xte, yte, tta=False)}), flush=True)
    print(json.dumps({"final": True, "epochs": a.epochs, "train_seconds": round(train_s, 1),
                      "test_acc": evaluate(net, xte, yte, tta=False),
                      "test_acc_tta": evaluate(net, xte, yte, tta=True)}), flush=True)


if __name__ == "__main__":
    main()
