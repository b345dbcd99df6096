"""TensorFlow checkpoints (the "tensor bundle" that `tf.train.Saver` / `tf.train.Checkpoint`
write) read with NumPy: no TensorFlow, no protobuf. The data is memory-mapped, never loaded whole.

A checkpoint is a prefix `DIR/model.ckpt-935588` with (format.md section 7):

- `DIR/checkpoint`: text, `model_checkpoint_path: "PREFIX"` (the latest; the path may be absolute
  and stale when the directory was moved: then its file name inside DIR is used).
- `PREFIX.index`: a LevelDB-style table (TF `core/lib/io/format.*`). Footer = last 48 bytes: two
  BlockHandles (varint64 offset, varint64 size: metaindex, index), zero padding to 40 bytes, magic
  0xdb4775248b80fb57 (little-endian). Every block is followed by a 1-byte type (0 none, 1 snappy)
  and a masked CRC32C of block + type. A block is a run of entries (varint32 shared key bytes,
  varint32 unshared, varint32 value length, key delta, value), then a uint32 restart array and its
  uint32 count. The index block maps each data block's last key to its handle. Key "" holds a
  BundleHeaderProto (num_shards=1, endianness=2, version=3), every other key a variable name with
  a BundleEntryProto: dtype=1, shape=2 (TensorShapeProto: repeated dim=2 {size=1}), shard_id=3,
  offset=4, size=5, crc32c=6 (fixed32, masked CRC32C of the bytes), slices=7 (partitioned).
- `PREFIX.data-{shard:05d}-of-{N:05d}`: raw little-endian row-major bytes at [offset, offset+size).

Everything that can be checked without reading the tensors is checked when the checkpoint is
opened (index checksums, every shard present, every tensor inside its shard file), so a missing
shard or a truncated data file is one `TFCheckpointError` naming the file before any work.
Tensor checksums are verified in bounded memory (chunked reads) by `verify` / `array(...,
verify=True)`; a mismatch names the data file and the variable.

Needs `google-crc32c` (checksums) and `cramjam` (snappy-compressed index blocks, which older TF
versions wrote): `pip install 'elmo-jax[tf]'`.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import struct
from typing import Callable, Iterator, Optional

import numpy as np

from .errors import ElmoError

try:  # optional dependencies (the `tf` extra): a clear error names them when they are needed
    import google_crc32c
except ImportError:  # pragma: no cover - exercised only without the extra
    google_crc32c = None
try:
    import cramjam
except ImportError:  # pragma: no cover
    cramjam = None

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5
CRC_MASK_DELTA = 0xA282EAD8
CHECKSUM_CHUNK = 16 << 20  # bytes read at a time to verify a tensor's checksum

#: TF DataType enum -> NumPy dtype (the fixed-size types a bundle stores as raw bytes).
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("u1"), 5: np.dtype("<i2"),
    6: np.dtype("i1"), 9: np.dtype("<i8"), 10: np.dtype("?"), 17: np.dtype("<u2"), 19: np.dtype("<f2"),
    22: np.dtype("<u4"), 23: np.dtype("<u8"),
}
DTYPE_NAMES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string",
               8: "complex64", 9: "int64", 10: "bool", 14: "bfloat16", 17: "uint16", 18: "complex128",
               19: "float16", 20: "resource", 21: "variant", 22: "uint32", 23: "uint64"}
#: TF DataType enum of each NumPy dtype (for writers of test bundles).
DTYPE_CODES = {dtype: code for code, dtype in DTYPES.items()}


class TFCheckpointError(ElmoError):
    """A TensorFlow checkpoint that cannot be read: missing or truncated files, bad checksums,
    an index that is not a tensor bundle."""


def _need(module, name: str):
    if module is None:
        raise TFCheckpointError(f"reading TensorFlow checkpoints needs the '{name}' package: "
                                "pip install 'elmo-jax[tf]' (google-crc32c, cramjam)")
    return module


# --------------------------------------------------------------------------- checksums
def mask_crc(crc: int) -> int:
    """TF/LevelDB's masked CRC32C: rotate right by 15 bits, add a constant (mod 2^32)."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + CRC_MASK_DELTA) & 0xFFFFFFFF


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC32C of `data`, continuing from `crc`."""
    return _need(google_crc32c, "google-crc32c").extend(crc, bytes(data))


def file_crc32c(path: str, offset: int, size: int, chunk: int = CHECKSUM_CHUNK,
                progress: Optional[Callable[[int], None]] = None) -> int:
    """CRC32C of `size` bytes of a file from `offset`, read `chunk` bytes at a time (the page
    cache holds the file, not this process)."""
    ext = _need(google_crc32c, "google-crc32c").extend
    crc = 0
    with open(path, "rb") as fh:
        fh.seek(offset)
        left = size
        while left > 0:
            data = fh.read(min(chunk, left))
            if not data:
                raise TFCheckpointError(f"unexpected end of file at byte {offset + size - left}", path)
            crc = ext(crc, data)
            left -= len(data)
            if progress is not None:
                progress(len(data))
    return crc


# --------------------------------------------------------------------------- protobuf wire format
def read_varint(data: bytes, pos: int, where: str) -> tuple[int, int]:
    """(value, position after it) of a base-128 varint at `pos`."""
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise TFCheckpointError(f"malformed varint in {where}")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def proto_fields(data: bytes, where: str) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of each field of a serialized protobuf message: an int for
    varint/fixed fields, bytes for length-delimited ones."""
    pos = 0
    while pos < len(data):
        tag, pos = read_varint(data, pos, where)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = read_varint(data, pos, where)
        elif wire == 1:
            if pos + 8 > len(data):
                raise TFCheckpointError(f"truncated fixed64 field {field} in {where}")
            value, pos = struct.unpack_from("<Q", data, pos)[0], pos + 8
        elif wire == 2:
            n, pos = read_varint(data, pos, where)
            if pos + n > len(data):
                raise TFCheckpointError(f"truncated field {field} in {where}")
            value, pos = bytes(data[pos:pos + n]), pos + n
        elif wire == 5:
            if pos + 4 > len(data):
                raise TFCheckpointError(f"truncated fixed32 field {field} in {where}")
            value, pos = struct.unpack_from("<I", data, pos)[0], pos + 4
        else:
            raise TFCheckpointError(f"unsupported protobuf wire type {wire} (field {field}) in {where}")
        yield field, wire, value


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


@dataclasses.dataclass(frozen=True)
class TensorEntry:
    """Where a variable's bytes are (a BundleEntryProto)."""

    name: str
    dtype_code: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: Optional[int]  # masked, as stored
    partitioned: bool = False

    @property
    def dtype(self) -> Optional[np.dtype]:
        return DTYPES.get(self.dtype_code)

    @property
    def dtype_name(self) -> str:
        return DTYPE_NAMES.get(self.dtype_code, f"TF dtype {self.dtype_code}")

    @classmethod
    def parse(cls, name: str, data: bytes, where: str) -> "TensorEntry":
        fields = dict(dtype=0, shard_id=0, offset=0, size=0, crc32c=None)
        shape: list[int] = []
        partitioned = False
        for field, _, value in proto_fields(data, where):
            if field == 1:
                fields["dtype"] = value
            elif field == 2:
                for f2, _, dim in proto_fields(value, where):
                    if f2 == 2:
                        size = 0
                        for f3, _, v in proto_fields(dim, where):
                            if f3 == 1:
                                size = _signed64(v)
                        shape.append(size)
                    elif f2 == 3 and value:
                        raise TFCheckpointError(f"variable '{name}' has an unknown rank", where)
            elif field in (3, 4, 5):
                fields[{3: "shard_id", 4: "offset", 5: "size"}[field]] = value
            elif field == 6:
                fields["crc32c"] = value
            elif field == 7:
                partitioned = True
        return cls(name, fields["dtype"], tuple(shape), fields["shard_id"], fields["offset"], fields["size"],
                   fields["crc32c"], partitioned)


# --------------------------------------------------------------------------- the index table
def _block_handle(data: bytes, pos: int, where: str) -> tuple[tuple[int, int], int]:
    offset, pos = read_varint(data, pos, where)
    size, pos = read_varint(data, pos, where)
    return (offset, size), pos


def read_block(table: bytes, handle: tuple[int, int], path: str) -> bytes:
    """The contents of one table block: checksum verified, snappy decompressed if need be."""
    offset, size = handle
    end = offset + size + BLOCK_TRAILER_SIZE
    if end > len(table):
        raise TFCheckpointError(f"truncated index file: a block at byte {offset} ends at {end}, "
                                f"past the end of the file ({len(table)} bytes)", path)
    contents = table[offset:offset + size]
    kind = table[offset + size]
    stored = struct.unpack_from("<I", table, offset + size + 1)[0]
    if mask_crc(crc32c(table[offset:offset + size + 1])) != stored:
        raise TFCheckpointError(f"checksum mismatch in the index block at byte {offset} "
                                "(the file is corrupt)", path)
    if kind == 0:
        return contents
    if kind == 1:
        try:
            return bytes(_need(cramjam, "cramjam").snappy.decompress_raw(contents))
        except TFCheckpointError:
            raise
        except Exception as e:  # cramjam raises its own DecompressionError
            raise TFCheckpointError(f"cannot decompress the snappy index block at byte {offset} ({e})", path)
    raise TFCheckpointError(f"index block at byte {offset} has unknown compression type {kind}", path)


def block_entries(block: bytes, path: str) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of each entry of a block (keys prefix-compressed against the previous key)."""
    where = f"{path} (index block)"
    if len(block) < 4:
        raise TFCheckpointError("malformed index block (shorter than its restart count)", path)
    n_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 - 4 * n_restarts
    if end < 0:
        raise TFCheckpointError(f"malformed index block ({n_restarts} restart points do not fit)", path)
    pos, key = 0, b""
    while pos < end:
        shared, pos = read_varint(block, pos, where)
        unshared, pos = read_varint(block, pos, where)
        n_value, pos = read_varint(block, pos, where)
        if shared > len(key) or pos + unshared + n_value > end:
            raise TFCheckpointError("malformed index block entry (key or value out of bounds)", path)
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        yield key, block[pos:pos + n_value]
        pos += n_value


def table_entries(table: bytes, path: str) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of a LevelDB-format table, in key order."""
    if len(table) < FOOTER_SIZE:
        raise TFCheckpointError(f"not a TensorFlow checkpoint index ({len(table)} bytes, shorter than "
                                "the 48-byte table footer)", path)
    footer = table[-FOOTER_SIZE:]
    if struct.unpack_from("<Q", footer, 40)[0] != TABLE_MAGIC:
        raise TFCheckpointError("not a TensorFlow checkpoint index (bad table magic number)", path)
    where = f"{path} (footer)"
    _, pos = _block_handle(footer, 0, where)  # metaindex: TF writes no filter blocks
    index_handle, _ = _block_handle(footer, pos, where)
    for _, handle_bytes in block_entries(read_block(table, index_handle, path), path):
        handle, _ = _block_handle(handle_bytes, 0, f"{path} (index entry)")
        yield from block_entries(read_block(table, handle, path), path)


# --------------------------------------------------------------------------- paths
def _latest_from_state_file(directory: str) -> str:
    state = os.path.join(directory, "checkpoint")
    try:
        with open(state, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as e:
        raise TFCheckpointError(f"cannot read the checkpoint state file ({e})", state)
    m = re.search(r'^\s*model_checkpoint_path:\s*"((?:[^"\\]|\\.)*)"', text, re.M)
    if not m:
        raise TFCheckpointError("no model_checkpoint_path line in the checkpoint state file", state)
    prefix = m.group(1).encode("utf-8").decode("unicode_escape")
    full = prefix if os.path.isabs(prefix) else os.path.join(directory, prefix)
    if not os.path.exists(full + ".index"):
        local = os.path.join(directory, os.path.basename(prefix))  # the directory was moved
        if os.path.exists(local + ".index"):
            return local
        raise TFCheckpointError(f"the checkpoint state file names '{prefix}', but {full}.index does not exist",
                                state)
    return full


def resolve_prefix(path: os.PathLike | str) -> str:
    """The checkpoint prefix of a directory (its `checkpoint` file, else its only `*.index`), a
    prefix, or a `PREFIX.index` / `PREFIX.data-*` path."""
    path = os.fspath(path)
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "checkpoint")):
            return _latest_from_state_file(path)
        indexes = sorted(f for f in os.listdir(path) if f.endswith(".index"))
        if len(indexes) == 1:
            return os.path.join(path, indexes[0][: -len(".index")])
        raise TFCheckpointError("no TensorFlow checkpoint in the directory (no 'checkpoint' file and "
                                + ("no *.index file)" if not indexes else
                                   f"{len(indexes)} *.index files: pass a prefix such as "
                                   f"{os.path.join(path, indexes[-1][:-6])})"), path)
    m = re.fullmatch(r"(.*)\.(index|data-\d{5}-of-\d{5})", path)
    if m and not os.path.exists(path + ".index"):
        path = m.group(1)
    if not os.path.exists(path + ".index"):
        raise TFCheckpointError(f"no TensorFlow checkpoint here: {path}.index does not exist", path)
    return path


def data_file_name(prefix: str, shard: int, num_shards: int) -> str:
    return f"{prefix}.data-{shard:05d}-of-{num_shards:05d}"


# --------------------------------------------------------------------------- the reader
class TFCheckpoint:
    """A TF tensor bundle opened for reading: `entries` {variable name: TensorEntry}, `array(name)`
    (memory-mapped, checksum verified), `verify(names)`.

    Opening reads only the index and checks that every shard exists and holds every tensor."""

    def __init__(self, path: os.PathLike | str):
        self.prefix = resolve_prefix(path)
        self.index_file = self.prefix + ".index"
        try:
            with open(self.index_file, "rb") as fh:
                table = fh.read()
        except OSError as e:
            raise TFCheckpointError(f"cannot read the checkpoint index ({e.strerror or e})", self.index_file)
        self.num_shards = 1
        self.entries: dict[str, TensorEntry] = {}
        header_seen = False
        for key, value in table_entries(table, self.index_file):
            if key == b"":
                header_seen = True
                self._parse_header(value)
                continue
            try:
                name = key.decode("utf-8")
            except UnicodeDecodeError:
                raise TFCheckpointError(f"a variable name is not UTF-8 ({key[:40]!r})", self.index_file)
            self.entries[name] = TensorEntry.parse(name, value, f"{self.index_file} (entry '{name}')")
        if not header_seen:
            raise TFCheckpointError("not a TensorFlow tensor bundle index (no header entry)", self.index_file)
        self._check_data_files()

    def _parse_header(self, value: bytes) -> None:
        for field, _, v in proto_fields(value, f"{self.index_file} (header)"):
            if field == 1:
                self.num_shards = int(v)
            elif field == 2 and v != 0:
                raise TFCheckpointError("big-endian checkpoints are not supported", self.index_file)
        if self.num_shards < 1:
            raise TFCheckpointError(f"the header says {self.num_shards} data shards", self.index_file)

    def data_file(self, shard: int) -> str:
        return data_file_name(self.prefix, shard, self.num_shards)

    def _check_data_files(self) -> None:
        sizes: dict[int, int] = {}
        for shard in range(self.num_shards):
            path = self.data_file(shard)
            if not os.path.isfile(path):
                raise TFCheckpointError(f"missing data shard {shard} of {self.num_shards} (the checkpoint "
                                        f"index {os.path.basename(self.index_file)} refers to it)", path)
            sizes[shard] = os.path.getsize(path)
        for e in self.entries.values():
            if e.partitioned:
                continue
            if not 0 <= e.shard_id < self.num_shards:
                raise TFCheckpointError(f"variable '{e.name}' is in shard {e.shard_id}, but the checkpoint has "
                                        f"{self.num_shards}", self.index_file)
            if e.dtype is not None and e.size != math.prod(e.shape) * e.dtype.itemsize:
                raise TFCheckpointError(f"variable '{e.name}' has {e.size} bytes, expected "
                                        f"{math.prod(e.shape) * e.dtype.itemsize} for {e.dtype_name} "
                                        f"{list(e.shape)}", self.index_file)
            if e.offset + e.size > sizes[e.shard_id]:
                raise TFCheckpointError(
                    f"truncated data file: variable '{e.name}' needs bytes {e.offset}..{e.offset + e.size} "
                    f"but the file has {sizes[e.shard_id]} bytes", self.data_file(e.shard_id))

    # ------------------------------------------------------------------ access
    @property
    def names(self) -> list[str]:
        return sorted(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def entry(self, name: str) -> TensorEntry:
        try:
            return self.entries[name]
        except KeyError:
            raise TFCheckpointError(f"no variable '{name}' in the checkpoint", self.index_file) from None

    def verify(self, names: Optional[list[str]] = None, progress: Optional[Callable[[int], None]] = None) -> None:
        """Check the CRC32C of each named variable (default: all), in bounded memory;
        `TFCheckpointError` naming the data file and the variable on a mismatch."""
        for name in (self.names if names is None else names):
            e = self.entry(name)
            if e.crc32c is None or e.partitioned:
                continue
            path = self.data_file(e.shard_id)
            actual = mask_crc(file_crc32c(path, e.offset, e.size, progress=progress))
            if actual != e.crc32c:
                raise TFCheckpointError(f"checksum mismatch for variable '{name}' (bytes {e.offset}.."
                                        f"{e.offset + e.size}): the data file is corrupt", path)

    def array(self, name: str, verify: bool = True) -> np.ndarray:
        """The variable as a read-only array memory-mapped from its data file (checksum checked
        first unless `verify=False`)."""
        e = self.entry(name)
        if e.partitioned:
            raise TFCheckpointError(f"variable '{name}' is partitioned into slices (not supported)", self.index_file)
        if e.dtype is None:
            raise TFCheckpointError(f"variable '{name}' has dtype {e.dtype_name}, which is not supported",
                                    self.index_file)
        if verify:
            self.verify([name])
        n = math.prod(e.shape)
        if n == 0:
            return np.zeros(e.shape, e.dtype)
        mapped = np.memmap(self.data_file(e.shard_id), dtype=e.dtype, mode="r", offset=e.offset, shape=(n,))
        return np.asarray(mapped).reshape(e.shape)  # a plain ndarray view of the map (no copy)
