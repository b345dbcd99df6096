"""Weight I/O: bilm-tf hdf5 <-> params <-> npz, and the errors for bad files and options."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import pytest

from conftest import bilm_tf_shapes
from elmo_jax.errors import ElmoError, OptionsError, WeightsError
from elmo_jax.options import ModelOptions
from elmo_jax.weights import (
    arrays_to_params,
    expected_shapes,
    export_npz,
    import_npz,
    load_bilm_weights,
    load_model,
    params_to_arrays,
    write_bilm_hdf5,
)


def hdf5_datasets(path: Path) -> dict[str, np.ndarray]:
    """Every dataset of an hdf5 file by full name, read with h5py directly."""
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def write_hdf5(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with h5py.File(path, "w") as f:
        for name, value in arrays.items():
            f.create_dataset(name, data=value)


def flat_leaves(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(flat_leaves(v, f"{prefix}{k}/"))
        return out
    return {prefix.rstrip("/"): np.asarray(tree)}


def assert_trees_equal(a: Any, b: Any) -> None:
    fa, fb = flat_leaves(a), flat_leaves(b)
    assert set(fa) == set(fb)
    for k in fa:
        assert fa[k].dtype == fb[k].dtype, k
        np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)


@pytest.fixture(scope="module")
def fixture_model(fixture_dir: Path) -> tuple[ModelOptions, dict[str, Any], dict[str, np.ndarray]]:
    """(options, params, raw datasets) of the bilm-tf fixture."""
    options, params, notes = load_model(fixture_dir / "options.json", fixture_dir / "lm_weights.hdf5")
    assert notes == [], f"no conversion expected for the fixture, got {notes}"
    return options, params, hdf5_datasets(fixture_dir / "lm_weights.hdf5")


# --------------------------------------------------------------------------- round trips


def test_expected_shapes_match_spec(fixture_model, random_arrays: Callable[..., dict]) -> None:
    """`expected_shapes` agrees with format.md section 1 (fixture: 33 datasets) for several shapes."""
    options, _, raw = fixture_model
    assert expected_shapes(options) == {k: v.shape for k, v in raw.items()}
    assert len(raw) == 33
    for opts in [options.replace(n_highway=0), options.replace(lstm_dim=16),
                 options.replace(filters=((1, 4), (2, 12)), n_layers=3)]:
        assert expected_shapes(opts) == bilm_tf_shapes(opts)


def test_hdf5_round_trip_bit_exact(fixture_model, tmp_path: Path) -> None:
    """fixture hdf5 -> params -> write_bilm_hdf5: same names, float32, contiguous, bit-exact."""
    options, params, raw = fixture_model
    out = tmp_path / "out.hdf5"
    write_bilm_hdf5(out, params, options)
    written = hdf5_datasets(out)
    assert set(written) == set(raw), f"extra {set(written) - set(raw)}, missing {set(raw) - set(written)}"
    for name, value in raw.items():
        assert written[name].dtype == np.float32, name
        assert written[name].shape == value.shape, name
        assert written[name].tobytes() == value.tobytes(), f"{name} not bit-exact"
    with h5py.File(out, "r") as f:
        def check(name: str, obj: Any) -> None:
            assert len(obj.attrs) == 0, f"{name} has attributes"
            if isinstance(obj, h5py.Dataset):
                assert obj.compression is None and obj.chunks is None, f"{name} not contiguous/uncompressed"
        f.visititems(check)
        assert len(f.attrs) == 0
    # and it reads back to the same params
    params2, notes = load_bilm_weights(out, options)
    assert notes == []
    assert_trees_equal(params, params2)


def test_params_arrays_round_trip_random(random_arrays: Callable[..., dict]) -> None:
    """arrays -> params -> arrays is exact for shapes without CNN_proj / LSTM projection too."""
    base = ModelOptions(char_embed_dim=3, filters=((1, 2), (3, 6)), n_highway=2, lstm_dim=12,
                        projection_dim=6, n_layers=2)
    variants = [base, base.replace(projection_dim=8), base.replace(lstm_dim=6, n_highway=0, n_layers=3)]
    assert [(o.has_token_projection, o.has_lstm_projection) for o in variants] == [
        (True, True), (False, True), (True, False)]
    for opts in variants:
        arrays = random_arrays(opts, seed=1)
        back = params_to_arrays(arrays_to_params(arrays, opts), opts)
        assert set(back) == set(arrays)
        for k in arrays:
            np.testing.assert_array_equal(back[k], arrays[k], err_msg=k)


def test_npz_round_trip(fixture_model, tmp_path: Path) -> None:
    """params -> npz -> params exact; import_npz returns the options too."""
    options, params, _ = fixture_model
    path = tmp_path / "model.npz"
    extra = {"softmax": {"W": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2, np.float32)}}
    export_npz(path, params, options, extra=extra)
    opts2, params2, extra2 = import_npz(path)
    assert opts2 == options
    assert opts2.to_dict() == options.to_dict()
    assert_trees_equal(params, params2)
    np.testing.assert_array_equal(extra2["softmax"]["W"], extra["softmax"]["W"])
    np.testing.assert_array_equal(extra2["softmax"]["b"], extra["softmax"]["b"])


# --------------------------------------------------------------------------- accepted variants


def test_262_row_char_embed_accepted_with_note(fixture_model, tmp_path: Path) -> None:
    """A char table with the zero padding row included is accepted (and the row dropped)."""
    options, params, raw = fixture_model
    arrays = dict(raw)
    arrays["char_embed"] = np.concatenate([np.zeros((1, raw["char_embed"].shape[1]), np.float32),
                                           raw["char_embed"]])
    path = tmp_path / "w262.hdf5"
    write_hdf5(path, arrays)
    params2, notes = load_bilm_weights(path, options)
    assert any("262" in n for n in notes), notes
    assert_trees_equal(params, params2)

    arrays["char_embed"][0, 0] = 0.5  # a non-zero row 0 is not a padding row: refuse to guess
    bad = tmp_path / "w262bad.hdf5"
    write_hdf5(bad, arrays)
    with pytest.raises(WeightsError) as err:
        load_bilm_weights(bad, options)
    assert "char_embed" in str(err.value) and str(bad) in str(err.value)


def test_n_characters_261_gives_note(fixture_dir: Path, tmp_path: Path) -> None:
    """Training options (n_characters 261) load for inference, with a note saying so."""
    data = json.loads((fixture_dir / "options.json").read_text())
    data["char_cnn"]["n_characters"] = 261
    opts_path = tmp_path / "options.json"
    opts_path.write_text(json.dumps(data))
    options, params, notes = load_model(opts_path, fixture_dir / "lm_weights.hdf5")
    assert options.n_characters == 261
    assert any("n_characters" in n and "261" in n for n in notes), notes


# --------------------------------------------------------------------------- errors


def test_missing_weight_file(fixture_model, tmp_path: Path) -> None:
    options = fixture_model[0]
    path = tmp_path / "nope.hdf5"
    with pytest.raises(WeightsError) as err:
        load_bilm_weights(path, options)
    assert str(path) in str(err.value)


def test_not_hdf5_file(fixture_model, tmp_path: Path) -> None:
    options = fixture_model[0]
    path = tmp_path / "garbage.hdf5"
    path.write_bytes(os.urandom(64) + b"not an hdf5 file" * 100)
    with pytest.raises(WeightsError) as err:
        load_bilm_weights(path, options)
    assert str(path) in str(err.value)


def test_missing_dataset(fixture_model, tmp_path: Path) -> None:
    options, _, raw = fixture_model
    name = "RNN_1/RNN/MultiRNNCell/Cell1/LSTMCell/W_P_0"
    path = tmp_path / "missing.hdf5"
    write_hdf5(path, {k: v for k, v in raw.items() if k != name})
    with pytest.raises(WeightsError) as err:
        load_bilm_weights(path, options)
    msg = str(err.value)
    assert str(path) in msg and name in msg, msg


def test_wrong_shape(fixture_model, tmp_path: Path) -> None:
    """The message names the file, the dataset, and the expected and actual shapes."""
    options, _, raw = fixture_model
    arrays = dict(raw)
    arrays["CNN_high_1/b_carry"] = np.zeros(123, np.float32)
    path = tmp_path / "shape.hdf5"
    write_hdf5(path, arrays)
    with pytest.raises(WeightsError) as err:
        load_bilm_weights(path, options)
    msg = str(err.value)
    for part in (str(path), "CNN_high_1/b_carry", "124", "123"):
        assert part in msg, f"{part!r} not in {msg!r}"


@pytest.mark.parametrize("changes", [
    {"projection_dim": 32},
    {"lstm_dim": 128},
    {"n_highway": 3},
    {"filters": ((1, 4), (2, 8), (3, 16), (4, 32), (5, 32))},
    {"n_layers": 3},
    {"char_embed_dim": 8},
])
def test_options_do_not_match_weights(fixture_dir: Path, fixture_model, changes: dict) -> None:
    options = fixture_model[0].replace(**changes)
    with pytest.raises(WeightsError) as err:
        load_bilm_weights(fixture_dir / "lm_weights.hdf5", options)
    assert str(fixture_dir / "lm_weights.hdf5") in str(err.value)


def test_malformed_options_json(tmp_path: Path) -> None:
    path = tmp_path / "options.json"
    path.write_text('{"lstm": {"dim": 64,, }')
    with pytest.raises(OptionsError) as err:
        ModelOptions.from_json(path)
    assert str(path) in str(err.value)
    with pytest.raises(OptionsError) as err:
        ModelOptions.from_json(tmp_path / "absent.json")
    assert str(tmp_path / "absent.json") in str(err.value)


@pytest.mark.parametrize("section,key", [("lstm", "projection_dim"), ("lstm", "dim"), ("char_cnn", "filters"),
                                         ("lstm", "n_layers")])
def test_missing_options_key(fixture_dir: Path, tmp_path: Path, section: str, key: str) -> None:
    data = json.loads((fixture_dir / "options.json").read_text())
    del data[section][key]
    path = tmp_path / "options.json"
    path.write_text(json.dumps(data))
    with pytest.raises(OptionsError) as err:
        ModelOptions.from_json(path)
    msg = str(err.value)
    assert key in msg and str(path) in msg, msg


def test_bad_activation(fixture_dir: Path, tmp_path: Path) -> None:
    data = json.loads((fixture_dir / "options.json").read_text())
    data["char_cnn"]["activation"] = "sigmoid"
    path = tmp_path / "options.json"
    path.write_text(json.dumps(data))
    with pytest.raises(OptionsError) as err:
        ModelOptions.from_json(path)
    assert "activation" in str(err.value) and "sigmoid" in str(err.value)


def test_options_json_round_trip(fixture_dir: Path, tmp_path: Path) -> None:
    """to_json writes back every key (extra keys included) as read."""
    data = json.loads((fixture_dir / "options.json").read_text())
    data["n_epochs"] = 10
    src = tmp_path / "in.json"
    src.write_text(json.dumps(data))
    out = tmp_path / "out.json"
    ModelOptions.from_json(src).to_json(out)
    assert json.loads(out.read_text()) == data


# --------------------------------------------------------------------------- atomic writes


def test_write_to_missing_directory(fixture_model, tmp_path: Path) -> None:
    """Writing into a directory that does not exist raises ElmoError and creates nothing."""
    options, params, _ = fixture_model
    target = tmp_path / "no" / "such" / "dir" / "w.hdf5"
    with pytest.raises(ElmoError) as err:
        write_bilm_hdf5(target, params, options)
    assert str(target) in str(err.value)
    with pytest.raises(ElmoError):
        export_npz(tmp_path / "absent" / "w.npz", params, options)
    assert list(tmp_path.iterdir()) == []


class InjectedFailure(RuntimeError):
    pass


def test_failed_hdf5_write_leaves_existing_file(fixture_model, tmp_path: Path, monkeypatch) -> None:
    """A failure in the middle of writing leaves the old file byte-identical and no temp files."""
    options, params, _ = fixture_model
    target = tmp_path / "w.hdf5"
    target.write_bytes(b"old contents")
    calls = {"n": 0}
    original = h5py.Group.create_dataset

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise InjectedFailure("disk full")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing)
    with pytest.raises(InjectedFailure):
        write_bilm_hdf5(target, params, options)
    assert calls["n"] == 5
    assert target.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["w.hdf5"]


def test_failed_npz_write_leaves_existing_file(fixture_model, tmp_path: Path, monkeypatch) -> None:
    options, params, _ = fixture_model
    target = tmp_path / "w.npz"
    target.write_bytes(b"old contents")

    def failing(file, *args, **kwargs):
        file.write(b"partial")
        raise InjectedFailure("disk full")

    monkeypatch.setattr(np, "savez", failing)
    with pytest.raises(InjectedFailure):
        export_npz(target, params, options)
    assert target.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["w.npz"]


def test_copied_fixture_loads_identically(fixture_dir: Path, fixture_model, tmp_path: Path) -> None:
    """Sanity: a byte copy of the weight file loads to the same params (paths are not baked in)."""
    options, params, _ = fixture_model
    copy = tmp_path / "copy.hdf5"
    shutil.copyfile(fixture_dir / "lm_weights.hdf5", copy)
    params2, _ = load_bilm_weights(copy, options)
    assert_trees_equal(params, params2)


def test_output_path_is_a_directory(fixture_model, tmp_path: Path) -> None:
    """Writing onto an existing directory is an ElmoError naming it; nothing is left behind."""
    from elmo_jax.errors import ElmoError
    from elmo_jax.weights import write_bilm_hdf5

    options, params = fixture_model[0], fixture_model[1]
    target = tmp_path / "out.hdf5"
    target.mkdir()
    with pytest.raises(ElmoError, match="cannot write output") as err:
        write_bilm_hdf5(target, params, options)
    assert str(target) in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.hdf5"]


def test_garbage_npz_error(tmp_path: Path) -> None:
    from elmo_jax.errors import WeightsError
    from elmo_jax.weights import import_npz

    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(WeightsError, match="not an .npz file") as err:
        import_npz(bad)
    assert str(bad) in str(err.value)
