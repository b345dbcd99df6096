"""Shared fixtures: the bilm-tf reference fixture directory and random bilm-tf weight arrays."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest
from hypothesis import strategies as st

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from elmo_jax.options import ModelOptions  # noqa: E402

FIXTURE_DIR = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "bilm-tf"
FIXTURE_FILES = ("options.json", "lm_weights.hdf5", "lm_embeddings_sentences.json",
                 "lm_embeddings_0.hdf5", "lm_embeddings_1.hdf5", "lm_embeddings_2.hdf5")


def wait_until(condition: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll `condition` until it is true; fail naming `what` after `timeout` seconds (a deadline
    generous enough for a loaded machine, instead of a fixed sleep that is flaky there)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.005)


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    """`<repo>/../shared/fixtures/bilm-tf`, or skip the test naming what is missing."""
    if not FIXTURE_DIR.is_dir():
        pytest.skip(f"bilm-tf reference fixtures not found: directory {FIXTURE_DIR} is missing")
    missing = [name for name in FIXTURE_FILES if not (FIXTURE_DIR / name).is_file()]
    if missing:
        pytest.skip(f"bilm-tf reference fixtures incomplete: {', '.join(missing)} missing in {FIXTURE_DIR}")
    return FIXTURE_DIR


TF_CHECKPOINT_DIR = FIXTURE_DIR.parent / "bilm-tf-checkpoint"
TF_CHECKPOINT_FILES = ("checkpoint", "model.ckpt-120.index", "model.ckpt-120.data-00000-of-00001", "options.json",
                       "reference.json", "weights.hdf5", "vocab.txt", "data.txt")


@pytest.fixture(scope="session")
def tf_checkpoint_dir() -> Path:
    """`<repo>/../shared/fixtures/bilm-tf-checkpoint` (a training checkpoint bilm-tf wrote, with its
    dump_weights hdf5 and test() perplexity), or skip naming what is missing."""
    missing = [f for f in TF_CHECKPOINT_FILES if not (TF_CHECKPOINT_DIR / f).is_file()]
    if missing:
        pytest.skip(f"bilm-tf checkpoint fixture incomplete or absent: {', '.join(missing)} missing in "
                    f"{TF_CHECKPOINT_DIR}")
    return TF_CHECKPOINT_DIR


def bilm_tf_shapes(options: ModelOptions) -> dict[str, tuple[int, ...]]:
    """Dataset name -> shape of a bilm-tf weight file, written from format.md section 1 (not from
    `elmo_jax.weights`, so the two can be compared)."""
    d, p, h = options.char_embed_dim, options.projection_dim, options.lstm_dim
    f = sum(n for _, n in options.filters)
    shapes: dict[str, tuple[int, ...]] = {"char_embed": (261, d)}
    for i, (w, n) in enumerate(options.filters):
        shapes[f"CNN/W_cnn_{i}"] = (1, w, d, n)
        shapes[f"CNN/b_cnn_{i}"] = (n,)
    for k in range(options.n_highway):
        shapes[f"CNN_high_{k}/W_carry"] = (f, f)
        shapes[f"CNN_high_{k}/b_carry"] = (f,)
        shapes[f"CNN_high_{k}/W_transform"] = (f, f)
        shapes[f"CNN_high_{k}/b_transform"] = (f,)
    if f != p:
        shapes["CNN_proj/W_proj"] = (f, p)
        shapes["CNN_proj/b_proj"] = (p,)
    for direction in range(2):
        for layer in range(options.n_layers):
            prefix = f"RNN_{direction}/RNN/MultiRNNCell/Cell{layer}/LSTMCell/"
            shapes[prefix + "W_0"] = (2 * p, 4 * h)
            shapes[prefix + "B"] = (4 * h,)
            if p < h:
                shapes[prefix + "W_P_0"] = (h, p)
    return shapes


def make_random_arrays(options: ModelOptions, seed: int = 0, scale: float = 1.0) -> dict[str, np.ndarray]:
    """Random float32 bilm-tf arrays for `options`.

    `scale` multiplies the LSTM kernels, biases and projections: about 1.5 gives trained-like
    magnitudes (cells beyond 3, projections beyond 1) where clips of 1-2 bind, while float32
    round-off stays well below 1e-5 (at 3 and more the recurrence amplifies float32 round-off past
    1e-5 against a float64 oracle). Highway carry biases are drawn around 0 (not -2) so that
    gate-role mistakes show."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, shape in bilm_tf_shapes(options).items():
        leaf = name.rsplit("/", 1)[-1]
        if name == "char_embed":
            a = rng.uniform(-1.0, 1.0, shape)
        elif leaf.startswith("W_cnn"):
            a = rng.normal(0.0, 1.0 / np.sqrt(shape[1] * shape[2]), shape)
        elif leaf.startswith("b_cnn"):
            a = rng.normal(0.0, 0.2, shape)
        elif leaf in ("W_carry", "W_transform", "W_proj"):
            a = rng.normal(0.0, 1.0 / np.sqrt(shape[0]), shape)
        elif leaf in ("b_carry", "b_transform", "b_proj"):
            a = rng.normal(0.0, 0.5, shape)
        elif leaf == "W_0":
            a = rng.normal(0.0, 1.0 / np.sqrt(shape[0]), shape) * scale
        elif leaf == "B":
            a = rng.normal(0.0, 0.5, shape) * scale
        elif leaf == "W_P_0":
            a = rng.normal(0.0, 1.0 / np.sqrt(shape[0]), shape) * scale
        else:  # pragma: no cover - every name above is handled
            raise AssertionError(name)
        out[name] = a.astype(np.float32)
    return out


@pytest.fixture
def random_arrays() -> Callable[..., dict[str, np.ndarray]]:
    """The `make_random_arrays(options, seed=0, scale=1.0)` helper."""
    return make_random_arrays


REPO = Path(__file__).resolve().parents[1]

#: A small biLM shape for the task tests (a few thousand parameters).
SMALL_BILM = ModelOptions(char_embed_dim=4, filters=((1, 8), (2, 8), (3, 16)), n_highway=1, n_characters=262,
                          lstm_dim=32, projection_dim=16, n_layers=2, use_skip_connections=True)


@pytest.fixture(scope="session")
def small_bilm(tmp_path_factory) -> tuple[str, str]:
    """`SMALL_BILM` with random (non-trivial) weights as bilm-tf files: (options.json, weights.hdf5)."""
    d = tmp_path_factory.mktemp("bilm")
    SMALL_BILM.to_json(d / "options.json")
    with h5py.File(d / "weights.hdf5", "w") as f:
        for name, array in make_random_arrays(SMALL_BILM, seed=3).items():
            f.create_dataset(name, data=array.astype(np.float32))
    return str(d / "options.json"), str(d / "weights.hdf5")


@st.composite
def entity_spans(draw, types=("PER", "LOC", "ORG", "MISC"), max_len: int = 25) -> tuple[int, list]:
    """A sentence length and sorted, non-overlapping (type, start, end) spans in it (adjacent
    entities of one type included)."""
    n = draw(st.integers(0, max_len))
    spans, i = [], 0
    while i < n:
        if draw(st.booleans()):
            length = draw(st.integers(1, min(4, n - i)))
            spans.append((draw(st.sampled_from(list(types))), i, i + length))
            i += length
        else:
            i += draw(st.integers(1, 3))
    return n, spans


def encode_spans(n: int, spans: list[tuple[str, int, int]], scheme: str) -> list[str]:
    """Tags of `spans` in IOB1, IOB2 or BIOES (any case), written out from the definitions (not by
    the code under test)."""
    scheme = scheme.upper()
    tags = ["O"] * n
    prev_end, prev_type = -1, None
    for type_, start, end in spans:
        for k in range(start, end):
            tags[k] = f"I-{type_}"
        if scheme == "IOB2" or (scheme == "IOB1" and prev_end == start and prev_type == type_):
            tags[start] = f"B-{type_}"
        elif scheme == "BIOES":
            if end - start == 1:
                tags[start] = f"S-{type_}"
            else:
                tags[start], tags[end - 1] = f"B-{type_}", f"E-{type_}"
        prev_end, prev_type = end, type_
    return tags


@pytest.fixture(scope="session")
def pretrained_tiny(tmp_path_factory) -> dict:
    """`configs/tiny.json` pretrained on the built-in corpus (a few minutes) and exported:
    {'last': final metrics, 'run': run dir, 'export': export dir}. Shared by the tests that need
    a really pretrained biLM."""
    from elmo_jax.config import TrainConfig
    from elmo_jax.train.export import export_run
    from elmo_jax.train.loop import train

    root = tmp_path_factory.mktemp("tiny")
    cfg = TrainConfig.from_json(REPO / "configs" / "tiny.json", ["eval_every=0", "checkpoint_every=200"])
    last = train(cfg, str(root / "run"), progress=False)
    export_run(str(root / "run"), str(root / "export"))
    return {"last": last, "run": str(root / "run"), "export": str(root / "export")}


WORKER = Path(__file__).with_name("train_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_worker(cfg_path, run_dir: Path, out: Path, devices: int, extra=(), wait=True) -> subprocess.Popen:
    """`train_worker.py` in a fresh process (N simulated devices); waits and checks its exit status
    unless `wait=False`."""
    cmd = [sys.executable, str(WORKER), str(cfg_path), str(run_dir), str(out), "--devices", str(devices), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait:
        _, err = proc.communicate(timeout=400)
        assert proc.returncode == 0, err[-3000:]
    return proc
