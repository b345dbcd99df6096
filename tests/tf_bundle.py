"""A tiny writer of TensorFlow tensor bundles (checkpoints) for tests, written from the format
description (format.md section 7; TF `core/util/tensor_bundle`, `core/lib/io/table_builder.cc`),
independently of `elmo_jax.tfcheckpoint`: its own varints, protobuf encoding, CRC masking and
table layout. Options make the files exercise the reader: several data shards, small blocks (many
data blocks, restart points every few keys, prefix-compressed keys), snappy-compressed blocks.
"""
from __future__ import annotations

import os
import struct
from typing import Mapping

import cramjam
import google_crc32c
import numpy as np

TF_DTYPES = {np.dtype("float32"): 1, np.dtype("float64"): 2, np.dtype("int32"): 3, np.dtype("uint8"): 4,
             np.dtype("int64"): 9, np.dtype("bool"): 10, np.dtype("float16"): 19}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


CHUNK = 64 << 20


def _mask(crc: int) -> int:
    rotated = ((crc >> 15) | ((crc << 17) & 0xFFFFFFFF)) & 0xFFFFFFFF
    return (rotated + 0xA282EAD8) % (1 << 32)


def _masked_crc(data: bytes) -> int:
    return _mask(google_crc32c.value(bytes(data)))


def _field_varint(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value % (1 << 64))


def _field_bytes(field: int, value: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(value)) + value


def _entry_proto(dtype: int, shape: tuple, shard: int, offset: int, size: int, crc: int) -> bytes:
    dims = b"".join(_field_bytes(2, _field_varint(1, d)) for d in shape)
    out = _field_varint(1, dtype) + _field_bytes(2, dims)
    if shard:
        out += _field_varint(3, shard)
    if offset:
        out += _field_varint(4, offset)
    out += _field_varint(5, size)
    return out + _varint(6 << 3 | 5) + struct.pack("<I", crc)


def _block(entries: list[tuple[bytes, bytes]], restart_interval: int) -> bytes:
    out, restarts, last = bytearray(), [], b""
    for i, (key, value) in enumerate(entries):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(key), len(last)) and key[shared] == last[shared]:
                shared += 1
        out += _varint(shared) + _varint(len(key) - shared) + _varint(len(value)) + key[shared:] + value
        last = key
    restarts = restarts or [0]
    return bytes(out) + b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))


class _Table:
    def __init__(self, snappy: bool):
        self.data, self.snappy = bytearray(), snappy

    def add_block(self, contents: bytes) -> bytes:
        """Append a block with its trailer; its handle (varint offset, varint size)."""
        kind = 0
        if self.snappy:
            contents, kind = bytes(cramjam.snappy.compress_raw(contents)), 1
        handle = _varint(len(self.data)) + _varint(len(contents))
        self.data += contents + bytes([kind]) + struct.pack("<I", _masked_crc(contents + bytes([kind])))
        return handle


def write_bundle(prefix: str, arrays: Mapping[str, np.ndarray], num_shards: int = 1, snappy: bool = False,
                 block_entries: int = 1000, restart_interval: int = 16) -> None:
    """Write `arrays` as the TF checkpoint `prefix` (`.index` + `.data-*` shards, variables spread
    round-robin over the shards) plus a `checkpoint` state file beside it. Arrays are written
    `CHUNK` bytes at a time (memory maps of any size are fine)."""
    names = sorted(arrays)
    entries: list[tuple[bytes, bytes]] = []
    header = _field_varint(1, num_shards) + _field_bytes(3, _field_varint(1, 1))
    entries.append((b"", header))
    shards = [open(f"{prefix}.data-{k:05d}-of-{num_shards:05d}", "wb") for k in range(num_shards)]
    try:
        for i, name in enumerate(names):
            a = np.asarray(arrays[name], order="C")
            a = a if a.dtype.byteorder in "=|<" else a.astype(a.dtype.newbyteorder("<"))
            flat = a.reshape(-1).view(np.uint8)
            shard, crc = shards[i % num_shards], 0
            offset = shard.tell()
            for start in range(0, flat.size, CHUNK):
                data = flat[start:start + CHUNK].tobytes()
                shard.write(data)
                crc = google_crc32c.extend(crc, data)
            entries.append((name.encode(), _entry_proto(TF_DTYPES[a.dtype], a.shape, i % num_shards, offset,
                                                         flat.size, _mask(crc))))
    finally:
        for fh in shards:
            fh.close()
    table = _Table(snappy)
    index_entries = []
    for start in range(0, len(entries), block_entries):
        chunk = entries[start:start + block_entries]
        handle = table.add_block(_block(chunk, restart_interval))
        index_entries.append((chunk[-1][0], handle))
    meta_handle = table.add_block(_block([], restart_interval))
    index_handle = table.add_block(_block(index_entries, 1))
    footer = meta_handle + index_handle
    footer += b"\0" * (40 - len(footer)) + struct.pack("<Q", 0xDB4775248B80FB57)
    with open(prefix + ".index", "wb") as fh:
        fh.write(bytes(table.data) + footer)
    with open(os.path.join(os.path.dirname(prefix), "checkpoint"), "w", encoding="utf-8") as fh:
        base = os.path.basename(prefix)
        fh.write(f'model_checkpoint_path: "{base}"\nall_model_checkpoint_paths: "{base}"\n')


def bilm_tf_variables(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Weight-file datasets -> the bilm-tf training-graph variable names: the inverse of bilm-tf's
    `dump_weights._get_outname`, written out here as that code states it (format.md section 7)."""
    out = {}
    for name, a in arrays.items():
        tf = "lm/" + name
        tf = tf.replace("/RNN/", "/rnn/").replace("/MultiRNNCell/", "/multi_rnn_cell/").replace("/Cell", "/cell_")
        tf = tf.replace("/LSTMCell/", "/lstm_cell/")
        if "/rnn/" in tf:
            tf = tf.replace("W_P_0", "projection/kernel").replace("/W_0", "/kernel").replace("/B", "/bias")
        out[tf] = a
    return out
