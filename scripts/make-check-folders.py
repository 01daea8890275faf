#!/usr/bin/env python3
"""Writes image folders unlike the shipped data, to check `cnn train`'s defaults on them.

The defaults were chosen on MNIST and CIFAR-10; these folders change what the defaults must
adapt to (class count, image size and shape, channels), built from the same public images so
that no download is needed:

  numbers-100   100 classes "00".."99": two MNIST digits side by side, 28x56 grey PNG
                (60 a class from the training images, 10 a class from the test images)
  numbers-1000  1,000 classes "000".."999": three digits, 28x84 grey PNG (20 / 5 a class)
  pets-96       2 classes, CIFAR-10's cat and dog upscaled to 96x96 RGB PNG (1,000 / 1,000 a class)

Each is DIR/train/<class>/*.png and DIR/test/<class>/*.png. Deterministic (seed 1).

Usage: python3 scripts/make-check-folders.py MNIST_IDX_DIR CIFAR10_JPG_DIR OUT_DIR
  MNIST_IDX_DIR   the four MNIST .gz files (scripts/fetch-data.sh mnist writes data/mnist)
  CIFAR10_JPG_DIR the JPEG folder (scripts/fetch-data.sh cifar10 writes data/cifar10-jpg)
Needs numpy and Pillow.
"""

import gzip
import os
import random
import sys

import numpy as np
from PIL import Image


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def numbers(images, labels, digits, per_class, rng, out):
    """Writes per_class images of every `digits`-digit number, each digit a random image of it."""
    by_digit = [np.flatnonzero(labels == d) for d in range(10)]
    for n in range(10 ** digits):
        name = str(n).zfill(digits)
        os.makedirs(os.path.join(out, name), exist_ok=True)
        for k in range(per_class):
            parts = [images[rng.choice(by_digit[int(c)])] for c in name]
            Image.fromarray(np.concatenate(parts, axis=1)).save(
                os.path.join(out, name, f"{k:03d}.png"))


def pets(cifar, split, per_class, out):
    for cls in ("cat", "dog"):
        src = os.path.join(cifar, split, cls)
        os.makedirs(os.path.join(out, cls), exist_ok=True)
        for f in sorted(os.listdir(src))[:per_class]:
            img = Image.open(os.path.join(src, f)).convert("RGB").resize((96, 96), Image.BICUBIC)
            img.save(os.path.join(out, cls, os.path.splitext(f)[0] + ".png"))


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    mnist, cifar, out = sys.argv[1:]
    train = (idx(os.path.join(mnist, "train-images-idx3-ubyte.gz")),
             idx(os.path.join(mnist, "train-labels-idx1-ubyte.gz")))
    test = (idx(os.path.join(mnist, "t10k-images-idx3-ubyte.gz")),
            idx(os.path.join(mnist, "t10k-labels-idx1-ubyte.gz")))
    rng = random.Random(1)
    numbers(*train, 2, 60, rng, os.path.join(out, "numbers-100", "train"))
    numbers(*test, 2, 10, rng, os.path.join(out, "numbers-100", "test"))
    numbers(*train, 3, 20, rng, os.path.join(out, "numbers-1000", "train"))
    numbers(*test, 3, 5, rng, os.path.join(out, "numbers-1000", "test"))
    pets(cifar, "train", 1000, os.path.join(out, "pets-96", "train"))
    pets(cifar, "test", 1000, os.path.join(out, "pets-96", "test"))


if __name__ == "__main__":
    main()
