#!/usr/bin/env python3
"""Writes tests/fixtures/digits/: handwriting-like digits drawn as users draw or photograph them.

None of these come from MNIST. Each digit 0-9 is a few hand-coded pen strokes (point lists in a
unit box, y down, smoothed with Catmull-Rom splines unless marked as polylines). Every image
varies the strokes (jitter, slant, rotation, aspect, size, position, stroke width) and the page:
white or grey paper, light gradients and shadows, sensor noise, JPEG compression, coloured ink,
specks of dust, transparency, 16-bit and palette PNGs, chalk on a dark board.

Names are `<digit>_<scene>.<png|jpg>`. The output is deterministic (fixed seeds). Needs Pillow.

Usage: python3 scripts/make-digit-images.py [OUT_DIR]   (default: tests/fixtures/digits)
"""

import math
import os
import random
import sys

from PIL import Image, ImageChops, ImageDraw, ImageFilter

# Pen strokes per digit: (smooth?, [(x, y), ...]) in a unit box, y down.
S, P = True, False
DIGITS = {
    0: [[(S, [(0.5, 0.04), (0.25, 0.15), (0.14, 0.5), (0.25, 0.86), (0.5, 0.96), (0.75, 0.85),
              (0.86, 0.5), (0.75, 0.14), (0.5, 0.04), (0.42, 0.08)])]],
    1: [[(P, [(0.52, 0.04), (0.48, 0.96)])],
        [(P, [(0.32, 0.22), (0.56, 0.04), (0.5, 0.96)])]],
    2: [[(S, [(0.18, 0.28), (0.3, 0.1), (0.52, 0.04), (0.74, 0.14), (0.78, 0.34),
              (0.6, 0.56), (0.36, 0.76), (0.16, 0.95)]),
         (P, [(0.16, 0.95), (0.86, 0.93)])]],
    3: [[(S, [(0.2, 0.16), (0.42, 0.04), (0.68, 0.1), (0.72, 0.28), (0.58, 0.44), (0.4, 0.48),
              (0.62, 0.54), (0.78, 0.7), (0.72, 0.88), (0.48, 0.96), (0.2, 0.86)])]],
    4: [[(P, [(0.3, 0.04), (0.2, 0.6), (0.86, 0.6)]), (P, [(0.7, 0.08), (0.66, 0.96)])],
        [(P, [(0.62, 0.04), (0.14, 0.66), (0.86, 0.66)]), (P, [(0.64, 0.3), (0.62, 0.96)])]],
    5: [[(S, [(0.3, 0.08), (0.26, 0.44), (0.5, 0.38), (0.72, 0.5), (0.78, 0.72), (0.62, 0.92),
              (0.36, 0.96), (0.18, 0.86)]),
         (P, [(0.3, 0.08), (0.8, 0.06)])]],
    6: [[(S, [(0.7, 0.04), (0.46, 0.2), (0.28, 0.45), (0.22, 0.7), (0.3, 0.9), (0.5, 0.96),
              (0.7, 0.86), (0.74, 0.66), (0.56, 0.52), (0.36, 0.55), (0.24, 0.68)])]],
    7: [[(P, [(0.14, 0.08), (0.86, 0.06), (0.6, 0.46), (0.44, 0.96)])],
        [(P, [(0.14, 0.08), (0.86, 0.06), (0.6, 0.46), (0.44, 0.96)]),
         (P, [(0.4, 0.5), (0.8, 0.48)])]],
    8: [[(S, [(0.64, 0.12), (0.46, 0.04), (0.28, 0.14), (0.3, 0.32), (0.5, 0.48), (0.72, 0.62),
              (0.76, 0.82), (0.56, 0.96), (0.32, 0.92), (0.24, 0.74), (0.44, 0.52), (0.66, 0.34),
              (0.7, 0.16), (0.56, 0.06)])]],
    9: [[(S, [(0.74, 0.24), (0.6, 0.06), (0.38, 0.06), (0.24, 0.22), (0.3, 0.4), (0.52, 0.46),
              (0.72, 0.34), (0.75, 0.2)]),
         (S, [(0.75, 0.16), (0.72, 0.5), (0.66, 0.96)])]],
}


def catmull_rom(points, per_segment=10):
    """A smooth curve through the points (Catmull-Rom, ends repeated)."""
    if len(points) < 3:
        return points
    pts = [points[0]] + points + [points[-1]]
    out = []
    for i in range(1, len(pts) - 2):
        p0, p1, p2, p3 = pts[i - 1], pts[i], pts[i + 1], pts[i + 2]
        for k in range(per_segment):
            t = k / per_segment
            t2, t3 = t * t, t * t * t
            out.append(tuple(0.5 * (2 * p1[j] + (-p0[j] + p2[j]) * t
                                    + (2 * p0[j] - 5 * p1[j] + 4 * p2[j] - p3[j]) * t2
                                    + (-p0[j] + 3 * p1[j] - 3 * p2[j] + p3[j]) * t3)
                            for j in range(2)))
    out.append(points[-1])
    return out


def digit_paths(digit, rng, variant=None):
    """The digit's strokes, jittered, slanted, rotated and stretched, in a unit box (y down)."""
    shapes = DIGITS[digit]
    strokes = shapes[variant % len(shapes) if variant is not None else rng.randrange(len(shapes))]
    slant = rng.uniform(-0.25, 0.3)
    angle = math.radians(rng.uniform(-8, 8))
    aspect = rng.uniform(0.8, 1.15)
    paths = []
    for smooth, pts in strokes:
        pts = [(x + rng.gauss(0, 0.02), y + rng.gauss(0, 0.02)) for x, y in pts]
        pts = catmull_rom(pts) if smooth else pts
        out = []
        for x, y in pts:
            x = (x - 0.5) * aspect + slant * (0.5 - y)
            y = y - 0.5
            out.append((x * math.cos(angle) - y * math.sin(angle),
                        x * math.sin(angle) + y * math.cos(angle)))
        paths.append(out)
    return paths


def ink_mask(size, paths, box, width, ss=4):
    """An anti-aliased ink coverage mask ('L', 255 = ink): strokes with round caps and joins,
    drawn `ss` times larger and reduced. `box` = (cx, cy, height) in pixels."""
    w, h = size
    cx, cy, height = box
    big = Image.new("L", (w * ss, h * ss), 0)
    d = ImageDraw.Draw(big)
    r = width * ss / 2
    for path in paths:
        pts = [((cx + x * height) * ss, (cy + y * height) * ss) for x, y in path]
        if len(pts) > 1:
            d.line(pts, fill=255, width=max(1, round(width * ss)))
        for x, y in pts:
            d.ellipse((x - r, y - r, x + r, y + r), fill=255)
    return big.resize((w, h), Image.BOX)


def paper(size, rng, base=(250, 250, 248), gradient=0, shadow=0, noise=0.0):
    """A page: a flat colour, a linear light gradient of `gradient` levels at a random angle, a soft
    dark corner shadow of `shadow` levels, and Gaussian sensor noise of `noise` levels."""
    w, h = size
    a = rng.uniform(0, 2 * math.pi)
    ux, uy = math.cos(a), math.sin(a)
    sx, sy = rng.choice([(0, 0), (w, 0), (0, h), (w, h)])
    diag = math.hypot(w, h)
    # A small grid interpolated up keeps this fast for big pages.
    gw, gh = 32, 32
    grid = Image.new("L", (gw, gh))
    for j in range(gh):
        for i in range(gw):
            x, y = (i + 0.5) * w / gw, (j + 0.5) * h / gh
            t = ((x - w / 2) * ux + (y - h / 2) * uy) / diag
            s = max(0.0, 1 - math.hypot(x - sx, y - sy) / (0.7 * diag))
            grid.putpixel((i, j), max(0, min(255, round(128 + gradient * t - shadow * s * s))))
    light = grid.resize((w, h), Image.BICUBIC)
    bands = [ImageChops.add(light, Image.new("L", (w, h), c), offset=-128) for c in base]
    if noise > 0:
        # effect_noise: Gaussian noise around 128; a slight blur gives it a camera's grain.
        grain = Image.effect_noise((w, h), noise).filter(ImageFilter.GaussianBlur(0.5))
        bands = [ImageChops.add(b, grain, offset=-128) for b in bands]
    return Image.merge("RGB", bands)


def compose(page, mask, ink):
    """Ink over paper by multiplication (ink absorbs light), blended by the ink's coverage."""
    inked = ImageChops.multiply(page, Image.new("RGB", page.size, ink))
    return Image.composite(inked, page, mask)


def speck(img, rng, where, radius, colour=(40, 40, 40)):
    d = ImageDraw.Draw(img)
    x, y = where
    d.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)


# Scenes: name -> function(digit, rng) -> (image, format).

def scene_pen(digit, rng):
    w, h = rng.choice([(200, 260), (300, 300), (240, 320)])
    page = paper((w, h), rng, gradient=10)
    mask = ink_mask((w, h), digit_paths(digit, rng), (w / 2 + rng.uniform(-20, 20),
                    h / 2 + rng.uniform(-20, 20), 0.7 * h), width=0.07 * h)
    return compose(page, mask, (20, 20, 30)), "png"


def scene_marker(digit, rng):
    w, h = 400, 400
    page = paper((w, h), rng)
    mask = ink_mask((w, h), digit_paths(digit, rng), (w / 2, h / 2, 0.72 * h), width=0.2 * h)
    return compose(page, mask, (10, 10, 10)), "png"


def scene_thin_photo(digit, rng):
    w, h = 1200, 900
    page = paper((w, h), rng, base=(225, 222, 214), gradient=50, shadow=40, noise=2.5)
    mask = ink_mask((w, h), digit_paths(digit, rng), (w * rng.uniform(0.35, 0.65),
                    h * rng.uniform(0.4, 0.6), 0.55 * h), width=4)
    return compose(page, mask, (35, 35, 45)), "jpg"


def scene_blue(digit, rng):
    w, h = 640, 480
    page = paper((w, h), rng, base=(245, 245, 240), gradient=30, noise=2)
    mask = ink_mask((w, h), digit_paths(digit, rng), (w * 0.45, h * 0.5, 0.6 * h), width=7)
    return compose(page, mask, (40, 70, 190)), "jpg"


def scene_red(digit, rng):
    w, h = 500, 500
    page = paper((w, h), rng, gradient=20)
    mask = ink_mask((w, h), digit_paths(digit, rng), (w * 0.55, h * 0.45, 0.6 * h), width=14)
    return compose(page, mask, (200, 30, 35)), "png"


def scene_green(digit, rng):
    w, h = 480, 360
    page = paper((w, h), rng, base=(240, 242, 236), gradient=25, noise=2)
    mask = ink_mask((w, h), digit_paths(digit, rng), (w * 0.5, h * 0.52, 0.7 * h), width=10)
    return compose(page, mask, (30, 140, 60)), "jpg"


def scene_orange(digit, rng):
    """Yellow-orange highlighter-like ink: weak luma contrast, strong in the blue channel."""
    w, h = 400, 300
    page = paper((w, h), rng, gradient=15)
    mask = ink_mask((w, h), digit_paths(digit, rng), (w * 0.5, h * 0.5, 0.75 * h), width=16)
    return compose(page, mask, (245, 170, 20)), "png"


def scene_offcentre_small(digit, rng):
    w, h = 1000, 750
    page = paper((w, h), rng, gradient=25, noise=1.5)
    size = rng.uniform(60, 90)
    cx, cy = rng.choice([(0.2, 0.25), (0.78, 0.3), (0.25, 0.75), (0.8, 0.8)])
    mask = ink_mask((w, h), digit_paths(digit, rng), (w * cx, h * cy, size), width=4)
    return compose(page, mask, (25, 25, 25)), "jpg"


def scene_shadow(digit, rng):
    w, h = 800, 600
    page = paper((w, h), rng, base=(235, 232, 225), gradient=40, shadow=110, noise=2)
    mask = ink_mask((w, h), digit_paths(digit, rng), (w * 0.5, h * 0.5, 0.6 * h), width=9)
    return compose(page, mask, (30, 30, 40)), "jpg"


def scene_speck(digit, rng):
    w, h = 600, 450
    page = paper((w, h), rng, gradient=15, noise=1.5)
    mask = ink_mask((w, h), digit_paths(digit, rng), (w * 0.4, h * 0.5, 0.6 * h), width=10)
    img = compose(page, mask, (20, 20, 25))
    speck(img, rng, (w * 0.88, h * 0.15), 4)
    speck(img, rng, (w * 0.1, h * 0.9), 2)
    return img, "jpg"


def scene_tiny(digit, rng):
    w, h = 60, 80
    page = paper((w, h), rng)
    mask = ink_mask((w, h), digit_paths(digit, rng), (w / 2, h / 2, 0.75 * h), width=5)
    return compose(page, mask, (0, 0, 0)), "png"


def scene_pencil(digit, rng):
    w, h = 360, 480
    page = paper((w, h), rng, base=(246, 244, 238), gradient=12, noise=1.5)
    mask = ink_mask((w, h), digit_paths(digit, rng), (w * 0.5, h * 0.5, 0.65 * h), width=6)
    mask = mask.point(lambda v: v * 150 // 255)  # graphite: only partly dark
    return compose(page, mask, (60, 60, 65)), "jpg"


def scene_transparent(digit, rng):
    """A drawing app's export: black strokes on a transparent canvas."""
    w, h = 280, 280
    mask = ink_mask((w, h), digit_paths(digit, rng), (w / 2, h / 2, 0.7 * h), width=18)
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    img.putalpha(mask)
    return img, "png"


def scene_chalk(digit, rng):
    """White chalk on a dark green board: the ink is already bright."""
    w, h = 400, 300
    page = paper((w, h), rng, base=(40, 70, 50), gradient=20, noise=2)
    mask = ink_mask((w, h), digit_paths(digit, rng), (w * 0.5, h * 0.5, 0.7 * h), width=12)
    return Image.composite(Image.new("RGB", (w, h), (225, 230, 225)), page, mask), "jpg"


def scene_grey16(digit, rng):
    w, h = 120, 160
    page = paper((w, h), rng).convert("L")
    mask = ink_mask((w, h), digit_paths(digit, rng), (w / 2, h / 2, 0.7 * h), width=9)
    grey = Image.composite(Image.new("L", (w, h), 15), page, mask)
    return grey.point(lambda v: v * 257, "I").convert("I;16"), "png"


def scene_palette(digit, rng):
    w, h = 256, 192
    page = paper((w, h), rng)
    mask = ink_mask((w, h), digit_paths(digit, rng), (w * 0.5, h * 0.5, 0.75 * h), width=12)
    img = compose(page, mask, (20, 30, 120))
    return img.convert("P", palette=Image.ADAPTIVE, colors=16), "png"


def scene_wide(digit, rng):
    w, h = 1200, 300
    page = paper((w, h), rng, gradient=20)
    mask = ink_mask((w, h), digit_paths(digit, rng), (w * 0.7, h * 0.5, 0.7 * h), width=12)
    return compose(page, mask, (15, 15, 20)), "png"


SCENES = {
    "pen": scene_pen, "marker": scene_marker, "thin-photo": scene_thin_photo,
    "blue": scene_blue, "red": scene_red, "green": scene_green, "orange": scene_orange,
    "offcentre-small": scene_offcentre_small, "shadow": scene_shadow, "speck": scene_speck,
    "tiny": scene_tiny, "pencil": scene_pencil, "transparent": scene_transparent,
    "chalk": scene_chalk, "grey16": scene_grey16, "palette": scene_palette, "wide": scene_wide,
}

# Which scenes each digit gets: every scene appears for two or three digits, each digit has four.
ORDER = list(SCENES)


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "digits")
    os.makedirs(out_dir, exist_ok=True)
    for name in os.listdir(out_dir):
        if name.endswith((".png", ".jpg")):
            os.remove(os.path.join(out_dir, name))
    total = 0
    for digit in range(10):
        for k in range(4):
            scene = ORDER[(digit * 4 + k) % len(ORDER)]
            rng = random.Random(1000 * digit + k)
            img, fmt = SCENES[scene](digit, rng)
            path = os.path.join(out_dir, f"{digit}_{scene}.{fmt}")
            if fmt == "jpg":
                img.convert("RGB").save(path, quality=80)
            else:
                img.save(path, optimize=True)
            total += os.path.getsize(path)
    print(f"wrote 40 images to {out_dir}, {total / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
