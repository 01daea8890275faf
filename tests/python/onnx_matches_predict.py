#!/usr/bin/env python3
"""Run by tests/integration/export.rs: for each exported model in a job file (JSON), checks that

- onnxruntime's `probabilities` for the job's PNG images (pixels / 255, N×C×H×W, one batch)
  equal the ones `cnn predict --json --no-preprocess` printed, within the job's tolerance;
- `safetensors.numpy.load_file` on the model file returns every tensor cnn lists, by name, with
  its shape and values (first, last and sum), and the file's `sha256` metadata checks out as
  docs/MODEL_FORMAT.md says.

Prints one line per model and exits non-zero on the first mismatch. Needs numpy, onnxruntime and
safetensors (a missing one is an error, never a skip: the Rust test decides whether to run this).
"""
import hashlib
import json
import struct
import sys
import zlib

import numpy as np
import onnxruntime as ort
from safetensors import safe_open
from safetensors.numpy import load_file


def read_png(path):
    """8-bit grey or RGB(A), non-interlaced: the PNGs the test uses (no other library needed)."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    pos, idat, width = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0 and colour in (0, 2, 4, 6), (path, depth, colour)
            channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
        elif kind == b"IDAT":
            idat += body
    raw, stride = zlib.decompress(idat), width * channels
    out, prev = np.zeros((height, stride), np.uint8), np.zeros(stride, np.int32)
    for y in range(height):
        f, line = raw[y * (stride + 1)], np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int32)
        cur = np.zeros(stride, np.int32)
        for i in range(stride):
            a = cur[i - channels] if i >= channels else 0
            b, c = prev[i], (prev[i - channels] if i >= channels else 0)
            if f == 0: pred = 0
            elif f == 1: pred = a
            elif f == 2: pred = b
            elif f == 3: pred = (a + b) // 2
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            cur[i] = (line[i] + pred) & 0xFF
        out[y], prev = cur, cur
    img = out.reshape(height, width, channels)
    if channels in (2, 4):
        img = img[:, :, : channels - 1]
    return img


def check_digest(path):
    b = bytearray(open(path, "rb").read())
    n = int.from_bytes(b[:8], "little")
    d = json.loads(b[8 : 8 + n])["__metadata__"]["sha256"]
    i = b.index(d.encode(), 8, 8 + n)
    b[i : i + 64] = b"0" * 64
    assert hashlib.sha256(b).hexdigest() == d, f"{path}: sha256 does not check out"


def main(job_path):
    job = json.load(open(job_path))
    tol = job["tolerance"]
    for m in job["models"]:
        sess = ort.InferenceSession(m["onnx"], providers=["CPUExecutionProvider"])
        c, h, w = sess.get_inputs()[0].shape[1:]
        batch = []
        for item in m["images"]:
            img = read_png(item["file"]).astype(np.float32) / 255.0
            assert img.shape[:2] == (h, w), (item["file"], img.shape, (h, w))
            if img.shape[2] != c:
                raise SystemExit(f"{item['file']}: {img.shape[2]} channels for a {c}-channel model")
            batch.append(img.transpose(2, 0, 1))
        probs = sess.run(["probabilities"], {"pixels": np.stack(batch)})[0]
        expected = np.array([item["probabilities"] for item in m["images"]], np.float64)
        worst = float(np.abs(probs - expected).max())
        # A comparison of near-uniform outputs, or of one-hot outputs only, would prove little
        # (a confident model's clean samples may be one-hot; some image must not be).
        spread = float((expected.max(1) - expected.min(1)).min())
        if spread < 0.01 or expected.max(1).min() > 0.999:
            raise SystemExit(f"{m['onnx']}: cnn's probabilities are nearly uniform or all one-hot (spread {spread:.2g}, least top {expected.max(1).min():.6f})")
        if not worst <= tol:
            raise SystemExit(f"{m['onnx']}: onnxruntime differs from cnn predict by {worst:.3g} (> {tol})")

        weights = load_file(m["model"])
        names = [t["name"] for t in m["tensors"]]
        if sorted(weights) != sorted(names):
            raise SystemExit(f"{m['model']}: safetensors gives {sorted(weights)}, cnn lists {sorted(names)}")
        for t in m["tensors"]:
            a = weights[t["name"]]
            ok = list(a.shape) == t["shape"] and a.dtype == np.float32
            ok = ok and a.size > 0 and float(a.flat[0]) == t["first"] and float(a.flat[-1]) == t["last"]
            ok = ok and abs(float(a.astype(np.float64).sum()) - t["sum"]) <= 1e-9 * max(1.0, abs(t["sum"]))
            if not ok:
                raise SystemExit(f"{m['model']}: tensor {t['name']} differs from cnn's")
        meta = safe_open(m["model"], "np").metadata()
        assert meta["format"] == "cnn model" and json.loads(meta["classes"]) == m["classes"], m["model"]
        check_digest(m["model"])
        print(f"{m['onnx']}: {len(batch)} images, largest difference {worst:.2g} (probabilities spread {spread:.2g} or more); {len(names)} tensors by name")


if __name__ == "__main__":
    main(sys.argv[1])
