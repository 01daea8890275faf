#!/usr/bin/env python3
"""Writes scikit-learn's 1,797 8×8 grey digit scans (UCI "Optical Recognition of Handwritten
Digits", bundled with scikit-learn) as an image folder: OUT/train/<digit>/*.png (80%, seeded
stratified split: 1,437 images) and OUT/test/<digit>/*.png (360). A small-grey-image dataset for
trying `cnn train --dataset OUT` with its defaults.

    pip install scikit-learn pillow && python3 scripts/make-sklearn-digits.py OUT
"""
import os
import sys

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

out = sys.argv[1] if len(sys.argv) > 1 else "digits8"
d = load_digits()
x = (d.images * (255.0 / 16.0)).round().astype(np.uint8)
idx = np.arange(len(x))
tr, te = train_test_split(idx, test_size=0.2, random_state=0, stratify=d.target)
for split, ids in (("train", tr), ("test", te)):
    for i in ids:
        folder = os.path.join(out, split, str(d.target[i]))
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(x[i], mode="L").save(os.path.join(folder, f"{i:04d}.png"))
print(f"{out}: {len(tr)} train, {len(te)} test images")
