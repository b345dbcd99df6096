"""The NumPy TF checkpoint reader: a real bilm-tf checkpoint (written by TensorFlow), synthetic
bundles from the independent writer in tf_bundle.py (shards, snappy blocks, many blocks), and one
clear error naming the file for each kind of damage."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import TF_CHECKPOINT_FILES
from elmo_jax.tfcheckpoint import TFCheckpoint, TFCheckpointError, crc32c, mask_crc, resolve_prefix
from elmo_jax.weights import read_hdf5_arrays, tf_variable_name
from tf_bundle import bilm_tf_variables, write_bundle


def test_crc32c_and_mask():
    """The standard CRC32C check value, and TF's mask (rotate right 15, add 0xa282ead8) by hand."""
    assert crc32c(b"123456789") == 0xE3069283
    assert mask_crc(0) == 0xA282EAD8
    assert mask_crc(0x00008000) == 0x00000001 + 0xA282EAD8  # bit 15 rotates to bit 0
    assert mask_crc(0xFFFFFFFF) == (0xFFFFFFFF + 0xA282EAD8) % 2 ** 32


def test_reads_the_bilm_tf_checkpoint(tf_checkpoint_dir):
    """Every variable TensorFlow wrote, with its shape; checksums verify; the biLM variables equal
    bilm-tf's own dump_weights of the same checkpoint exactly."""
    ckpt = TFCheckpoint(tf_checkpoint_dir)  # the directory: its `checkpoint` file names the prefix
    assert ckpt.prefix == str(tf_checkpoint_dir / "model.ckpt-120")
    reference = json.loads((tf_checkpoint_dir / "reference.json").read_text())["variables"]
    assert {name: list(e.shape) for name, e in ckpt.entries.items()} == reference
    ckpt.verify()
    assert float(ckpt.array("global_step")) == 120.0
    dumped = read_hdf5_arrays(tf_checkpoint_dir / "weights.hdf5")
    assert len(dumped) == 27  # 1 + 8 CNN + 4 highway + 2 projection + 12 LSTM
    for name, expected in dumped.items():
        actual = ckpt.array(tf_variable_name(name))
        assert actual.dtype == np.float32 and actual.shape == expected.shape, name
        np.testing.assert_array_equal(actual, expected, err_msg=name)


@pytest.mark.parametrize("snappy,shards,block_entries", [(False, 1, 1000), (True, 3, 3), (False, 2, 1)])
def test_synthetic_bundles_round_trip(tmp_path, snappy, shards, block_entries):
    rng = np.random.default_rng(0)
    arrays = {
        "lm/a/long/shared/prefix/kernel": rng.standard_normal((7, 5)).astype(np.float32),
        "lm/a/long/shared/prefix/kernel/Adagrad": rng.random((7, 5)).astype(np.float32),
        "lm/a/long/shared/prefix/bias": rng.standard_normal(5).astype(np.float32),
        "global_step": np.array(935588, np.int64),
        "counts": rng.integers(0, 255, (2, 3, 4)).astype(np.uint8),
        "empty": np.zeros((0, 3), np.float32),
        "doubles": rng.standard_normal(11),
        "halves": rng.standard_normal(6).astype(np.float16),
        "flags": np.array([True, False, True]),
    }
    for i in range(20):  # many keys: several data blocks and restart points
        arrays[f"lm/many/var_{i:02d}"] = np.full((i % 4 + 1,), i, np.int32)
    write_bundle(str(tmp_path / "model.ckpt-7"), arrays, num_shards=shards, snappy=snappy,
                 block_entries=block_entries, restart_interval=4)
    ckpt = TFCheckpoint(tmp_path / "model.ckpt-7")
    assert ckpt.num_shards == shards and ckpt.names == sorted(arrays)
    for name, expected in arrays.items():
        actual = ckpt.array(name)
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, name
        np.testing.assert_array_equal(actual, expected, err_msg=name)
    if shards > 1:
        assert len({e.shard_id for e in ckpt.entries.values()}) == shards


def _small_bundle(tmp_path: Path, shards: int = 2) -> tuple[str, dict]:
    arrays = {f"lm/v{i}": np.arange(100, dtype=np.float32) * (i + 1) for i in range(4)}
    prefix = str(tmp_path / "model.ckpt-5")
    write_bundle(prefix, arrays, num_shards=shards)
    return prefix, arrays


def test_checksum_mismatch_names_the_data_file_and_variable(tmp_path):
    prefix, _ = _small_bundle(tmp_path)
    ckpt = TFCheckpoint(prefix)
    entry = ckpt.entries["lm/v2"]
    data_file = ckpt.data_file(entry.shard_id)
    with open(data_file, "r+b") as fh:  # flip one byte inside lm/v2
        fh.seek(entry.offset + 17)
        byte = fh.read(1)
        fh.seek(entry.offset + 17)
        fh.write(bytes([byte[0] ^ 0x40]))
    ckpt.array("lm/v0")  # the other variables still read
    with pytest.raises(TFCheckpointError, match="checksum mismatch for variable 'lm/v2'") as e:
        ckpt.array("lm/v2")
    assert e.value.path == data_file
    with pytest.raises(TFCheckpointError, match="lm/v2"):
        TFCheckpoint(prefix).verify()


def test_truncated_data_file_is_an_error_when_opening(tmp_path):
    prefix, _ = _small_bundle(tmp_path, shards=1)
    data_file = prefix + ".data-00000-of-00001"
    os.truncate(data_file, os.path.getsize(data_file) - 10)
    with pytest.raises(TFCheckpointError, match="truncated data file: variable 'lm/v3'") as e:
        TFCheckpoint(prefix)
    assert e.value.path == data_file and "\n" not in str(e.value)


def test_missing_shard_is_an_error_naming_it(tmp_path):
    prefix, _ = _small_bundle(tmp_path, shards=3)
    os.remove(prefix + ".data-00001-of-00003")
    with pytest.raises(TFCheckpointError, match="missing data shard 1 of 3") as e:
        TFCheckpoint(prefix)
    assert e.value.path == prefix + ".data-00001-of-00003"


def test_damaged_index_is_an_error_naming_it(tmp_path):
    prefix, _ = _small_bundle(tmp_path)
    index = prefix + ".index"
    good = Path(index).read_bytes()
    Path(index).write_bytes(good[:5] + bytes([good[5] ^ 1]) + good[6:])  # inside the first data block
    with pytest.raises(TFCheckpointError, match="checksum mismatch in the index block") as e:
        TFCheckpoint(prefix)
    assert e.value.path == index
    Path(index).write_bytes(good[:-1])  # footer magic cut
    with pytest.raises(TFCheckpointError, match="bad table magic"):
        TFCheckpoint(prefix)
    Path(index).write_bytes(b"")
    with pytest.raises(TFCheckpointError, match="not a TensorFlow checkpoint index"):
        TFCheckpoint(prefix)


def test_resolve_prefix(tmp_path):
    prefix, _ = _small_bundle(tmp_path)
    assert resolve_prefix(tmp_path) == prefix
    assert resolve_prefix(prefix) == prefix
    assert resolve_prefix(prefix + ".index") == prefix
    assert resolve_prefix(prefix + ".data-00000-of-00002") == prefix
    # a checkpoint file naming an absolute path elsewhere (the directory was moved): its file name here
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "/nowhere/train/model.ckpt-5"\n')
    assert resolve_prefix(tmp_path) == prefix
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-9"\n')
    with pytest.raises(TFCheckpointError, match="model.ckpt-9"):
        resolve_prefix(tmp_path)
    os.remove(tmp_path / "checkpoint")
    assert resolve_prefix(tmp_path) == prefix  # the only *.index
    with pytest.raises(TFCheckpointError, match="does not exist"):
        resolve_prefix(tmp_path / "model.ckpt-6")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TFCheckpointError, match="no TensorFlow checkpoint in the directory"):
        resolve_prefix(empty)


def test_writer_names_match_bilm_tf(tf_checkpoint_dir, tmp_path):
    """The test writer's TF names (bilm-tf's dump_weights inverted) are the fixture's own names."""
    dumped = read_hdf5_arrays(tf_checkpoint_dir / "weights.hdf5")
    ckpt = TFCheckpoint(tf_checkpoint_dir)
    assert set(bilm_tf_variables(dumped)) <= set(ckpt.entries)
    assert {tf_variable_name(n) for n in dumped} == set(bilm_tf_variables(dumped))
    (tmp_path / "copy").mkdir()
    for name in TF_CHECKPOINT_FILES[1:3]:  # no `checkpoint` state file: the only *.index is used
        shutil.copyfile(tf_checkpoint_dir / name, tmp_path / "copy" / name)
    assert TFCheckpoint(tmp_path / "copy").names == ckpt.names
