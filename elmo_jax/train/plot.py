"""`elmo-jax plot RUN_DIR`: a PNG learning curve (train and validation perplexity, log scale) drawn
with NumPy alone (no plotting library is a dependency): white canvas, grey grid, blue train
curve, orange validation points and line, a legend box in the top-right corner.
"""
from __future__ import annotations

import json
import os
import struct
import zlib
from typing import Optional

import numpy as np

from ..errors import ElmoError

BLUE = (31, 119, 180)
ORANGE = (255, 127, 14)
GREY = (220, 220, 220)
BLACK = (0, 0, 0)


def write_png(path: str, image: np.ndarray) -> None:
    """Write an RGB uint8 image [H, W, 3] as a PNG file."""
    h, w, _ = image.shape
    raw = b"".join(b"\x00" + image[row].tobytes() for row in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    from ..io_utils import atomic_output

    with atomic_output(path, suffix=".png.tmp") as tmp:
        with open(tmp, "wb") as fh:
            fh.write(png)


def _line(img: np.ndarray, x0: float, y0: float, x1: float, y1: float, color, width: int = 2) -> None:
    n = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
    xs = np.linspace(x0, x1, n).round().astype(int)
    ys = np.linspace(y0, y1, n).round().astype(int)
    for dx in range(-(width // 2), width - width // 2):
        for dy in range(-(width // 2), width - width // 2):
            xx, yy = np.clip(xs + dx, 0, img.shape[1] - 1), np.clip(ys + dy, 0, img.shape[0] - 1)
            img[yy, xx] = color


def read_metrics(run_dir: str) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(train [(step, perplexity)], validation [(step, val_perplexity)]) from metrics.jsonl."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        raise ElmoError("no metrics.jsonl: not a training run directory, or nothing logged yet", run_dir)
    train, val = [], []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                raise ElmoError(f"line {lineno} is not JSON", path)
            if "perplexity" in rec:
                train.append((int(rec["step"]), float(rec["perplexity"])))
            if "val_perplexity" in rec:
                val.append((int(rec["step"]), float(rec["val_perplexity"])))
    return train, val


def plot_run(run_dir: str, output: Optional[str] = None, size: tuple[int, int] = (800, 500)) -> str:
    """Draw the learning curve of `run_dir` into a PNG; returns its path."""
    train, val = read_metrics(run_dir)
    if not train and not val:
        raise ElmoError("metrics.jsonl has no perplexity values yet", run_dir)
    output = output or os.path.join(run_dir, "learning_curve.png")
    w, h = size
    left, right, top, bottom = 60, 20, 20, 40
    img = np.full((h, w, 3), 255, np.uint8)
    points = train + val
    steps = np.array([s for s, _ in points], float)
    logp = np.log(np.maximum([p for _, p in points], 1e-9))
    s_lo, s_hi = steps.min(), max(steps.max(), steps.min() + 1)
    p_lo, p_hi = logp.min(), max(logp.max(), logp.min() + 1e-3)
    pad = 0.05 * (p_hi - p_lo)
    p_lo, p_hi = p_lo - pad, p_hi + pad

    def to_xy(step: float, ppl: float) -> tuple[float, float]:
        x = left + (step - s_lo) / (s_hi - s_lo) * (w - left - right)
        y = top + (p_hi - np.log(max(ppl, 1e-9))) / (p_hi - p_lo) * (h - top - bottom)
        return x, y

    for k in range(6):  # grid
        y = top + k * (h - top - bottom) / 5
        _line(img, left, y, w - right, y, GREY, 1)
        x = left + k * (w - left - right) / 5
        _line(img, x, top, x, h - bottom, GREY, 1)
    _line(img, left, h - bottom, w - right, h - bottom, BLACK, 2)  # axes
    _line(img, left, top, left, h - bottom, BLACK, 2)
    for series, color in ((train, BLUE), (val, ORANGE)):
        xy = [to_xy(s, p) for s, p in series]
        for (x0, y0), (x1, y1) in zip(xy, xy[1:]):
            _line(img, x0, y0, x1, y1, color, 2)
        for x, y in xy if series is val else []:
            img[int(max(y - 3, 0)):int(y + 4), int(max(x - 3, 0)):int(x + 4)] = color
    # legend: a blue and an orange swatch
    img[top + 5:top + 15, w - right - 60:w - right - 40] = BLUE
    img[top + 25:top + 35, w - right - 60:w - right - 40] = ORANGE
    write_png(output, img)
    return output
