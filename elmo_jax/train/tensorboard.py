"""TensorBoard event files beside metrics.jsonl (RUN_DIR/tensorboard/), as bilm-tf users had.

Written with tensorboardX, a small writer (numpy, protobuf; no TensorFlow, no PyTorch) that is an
optional extra: `pip install 'elmo-jax[tensorboard]'`. Without it `TensorBoardWriter` does
nothing and says so once on stderr. View with `tensorboard --logdir RUN_DIR/tensorboard`.
"""
from __future__ import annotations

import glob
import os
import struct
import sys
import time
from typing import Mapping, Optional

INSTALL_HINT = "pip install 'elmo-jax[tensorboard]'"
TENSORBOARD_DIR = "tensorboard"
_warned_missing = False


def _warn_missing_once() -> None:
    global _warned_missing
    if not _warned_missing:
        _warned_missing = True
        print(f"elmo-jax: tensorboardX is not installed, so no TensorBoard events are written "
              f"(metrics.jsonl still is): {INSTALL_HINT}", file=sys.stderr)


class TensorBoardWriter:
    """Scalars into TensorBoard event files under `logdir`.

    `enabled=False` (e.g. every process but process 0) or a missing tensorboardX makes every
    method a no-op. `purge_step` (on resume: the first step about to be logged again) tells
    TensorBoard to drop the events of earlier files at that step and after, so a run resumed
    from an older checkpoint shows no doubled curve."""

    def __init__(self, logdir: str, enabled: bool = True, purge_step: Optional[int] = None,
                 flush_secs: int = 30):
        self.logdir = logdir
        self._writer = None
        if not enabled:
            return
        try:  # lazy: tensorboardX is the optional `tensorboard` extra; without it, JSONL only
            from tensorboardX import SummaryWriter
        except ImportError:
            _warn_missing_once()
            return
        os.makedirs(logdir, exist_ok=True)
        # tensorboardX names the file by whole seconds and host: a writer opened in the same second
        # (a quick resume) would truncate the previous file, so add a sortable unique suffix.
        self._writer = SummaryWriter(logdir=logdir, purge_step=purge_step, flush_secs=flush_secs,
                                     filename_suffix=f".{time.time_ns()}.{os.getpid()}")

    @property
    def active(self) -> bool:
        """Whether events are being written."""
        return self._writer is not None

    def scalars(self, step: int, values: Mapping[str, object]) -> None:
        """One scalar per numeric entry of `values` (tag = its key) at `step`; the key 'step' and
        non-numeric entries (strings, bools, None) are skipped, so a metrics record can be passed
        as it is."""
        if self._writer is None:
            return
        for tag, value in values.items():
            if tag == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            self._writer.add_scalar(tag, float(value), global_step=int(step))

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "TensorBoardWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]}: the scalars TensorBoard shows for `logdir`.

    Reads every event file in name order (as TensorBoard does), each in write order; a session
    start event at step s (written for `purge_step`) drops the values read so far at steps >= s,
    as TensorBoard does. Parses the TFRecord framing (length, masked CRC-32C of the length, Event
    protobuf, masked CRC-32C of the data) and checks both checksums; needs tensorboardX for the
    protobufs."""
    # lazy: tensorboardX is the optional `tensorboard` extra (tests and TensorBoard users have it)
    from tensorboardX.crc32c import crc32c
    from tensorboardX.proto import event_pb2

    def masked(data: bytes) -> int:
        crc = crc32c(data)
        return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        with open(path, "rb") as fh:
            raw = fh.read()
        pos = 0
        while pos < len(raw):
            header = raw[pos:pos + 8]
            if len(header) < 8 or len(raw) < pos + 12:
                raise ValueError(f"{path}: truncated record at byte {pos}")
            (length,) = struct.unpack("<Q", header)
            (length_crc,) = struct.unpack("<I", raw[pos + 8:pos + 12])
            if masked(header) != length_crc:
                raise ValueError(f"{path}: bad length checksum at byte {pos}")
            data = raw[pos + 12:pos + 12 + length]
            if len(data) < length or len(raw) < pos + 16 + length:
                raise ValueError(f"{path}: truncated record at byte {pos}")
            (data_crc,) = struct.unpack("<I", raw[pos + 12 + length:pos + 16 + length])
            if masked(data) != data_crc:
                raise ValueError(f"{path}: bad data checksum at byte {pos}")
            pos += 16 + length
            event = event_pb2.Event.FromString(data)
            if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
                out = {tag: [(st, v) for st, v in vals if st < event.step] for tag, vals in out.items()}
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    out.setdefault(value.tag, []).append((int(event.step), float(value.simple_value)))
    return out
