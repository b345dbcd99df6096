"""Weights I/O: bilm-tf hdf5 <-> params pytree <-> NumPy `.npz`.

Names. Both files use bilm-tf's dataset names and shapes (format.md section 1), so one naming
scheme is documented everywhere:

    char_embed                                        [261, D]
    CNN/W_cnn_{i}, CNN/b_cnn_{i}                      [1, w_i, D, n_i], [n_i]
    CNN_high_{k}/{W_carry, b_carry, W_transform, b_transform}   [F, F], [F]
    CNN_proj/W_proj, CNN_proj/b_proj                  [F, P], [P]          (only if F != P)
    RNN_{d}/RNN/MultiRNNCell/Cell{l}/LSTMCell/W_0     [2P, 4H]  (d: 0 forward, 1 backward)
    RNN_{d}/RNN/MultiRNNCell/Cell{l}/LSTMCell/B       [4H]
    RNN_{d}/RNN/MultiRNNCell/Cell{l}/LSTMCell/W_P_0   [H, P]               (only if P < H)

Word-input models (bilm-tf options without `char_cnn`) have `embedding` [n_tokens_vocab, P]
instead of every char/CNN dataset (bilm-tf's `dump_weights` writes the token embedding under that
name; with `share_embedding_softmax` it is also the softmax, whose bias is not written). A
forward-only LM (`bidirectional: false`) has one LSTM stack, which bilm-tf builds outside the
`RNN_0` scope, so its `dump_weights` writes (the `/rnn/` -> `/RNN/` rename does not match)
    rnn/MultiRNNCell/Cell{l}/LSTMCell/{kernel, bias, projection/kernel}
A char model with a word channel (elmo-jax extension) adds `word_embedding` [n_tokens_vocab, D_w]
and its `CNN_proj/W_proj` is [D_w + F, P].

A `.npz` written here holds exactly these arrays (float32), any extra parameter groups of a
training run under `softmax/...` etc., and the model options as the JSON string `options_json`.

The params pytree (what `BiLM.apply` takes as `{'params': params}`):
    token_encoder/char_cnn/{char_embed, W_cnn_i [w, D, n], b_cnn_i}
    token_encoder/highway/layer_k/{W_carry, b_carry, W_transform, b_transform}
    token_encoder/{W_proj, b_proj, word_embedding}     or, word input: token_encoder/embedding
    lstm/layer_l/{kernel [Dn, 2P, 4H], bias [Dn, 4H], projection [Dn, H, P]}   (direction-stacked)
"""
from __future__ import annotations

import json
import os
import zipfile
from typing import Any, Mapping, Optional

import h5py
import numpy as np

from .errors import OptionsError, WeightsError
from .hub import resolve_model
from .io_utils import atomic_output
from .options import INFERENCE_N_CHARACTERS, ModelOptions

Params = dict[str, Any]
OPTIONS_KEY = "options_json"


_ONE_DIRECTION_LEAVES = {"W_0": "kernel", "B": "bias", "W_P_0": "projection/kernel"}


def _lstm_name(direction: int, layer: int, leaf: str, bidirectional: bool = True) -> str:
    if not bidirectional:  # bilm-tf dump_weights of a forward-only LM (see the module docstring)
        return f"rnn/MultiRNNCell/Cell{layer}/LSTMCell/{_ONE_DIRECTION_LEAVES[leaf]}"
    return f"RNN_{direction}/RNN/MultiRNNCell/Cell{layer}/LSTMCell/{leaf}"


def _vocab_rows(options: ModelOptions) -> int:
    if options.n_tokens_vocab is None:
        raise OptionsError("option 'n_tokens_vocab' is needed for the word table (word input or word channel)")
    return options.n_tokens_vocab


def expected_shapes(options: ModelOptions) -> dict[str, tuple[int, ...]]:
    """bilm-tf dataset name -> shape, for every dataset a weight file of `options` must hold."""
    p, h = options.projection_dim, options.lstm_dim
    shapes: dict[str, tuple[int, ...]] = {}
    if not options.char_inputs:
        shapes["embedding"] = (_vocab_rows(options), p)
    else:
        shapes.update(_char_shapes(options))
    for direction in range(options.n_directions):
        for layer in range(options.n_layers):
            name = lambda leaf: _lstm_name(direction, layer, leaf, options.bidirectional)  # noqa: E731
            shapes[name("W_0")] = (2 * p, 4 * h)
            shapes[name("B")] = (4 * h,)
            if options.has_lstm_projection:
                shapes[name("W_P_0")] = (h, p)
    return shapes


def _char_shapes(options: ModelOptions) -> dict[str, tuple[int, ...]]:
    d, f, p = options.char_embed_dim, options.n_filters, options.projection_dim
    shapes: dict[str, tuple[int, ...]] = {"char_embed": (261, d)}
    for i, (width, count) in enumerate(options.filters):
        shapes[f"CNN/W_cnn_{i}"] = (1, width, d, count)
        shapes[f"CNN/b_cnn_{i}"] = (count,)
    for k in range(options.n_highway):
        shapes[f"CNN_high_{k}/W_carry"] = (f, f)
        shapes[f"CNN_high_{k}/b_carry"] = (f,)
        shapes[f"CNN_high_{k}/W_transform"] = (f, f)
        shapes[f"CNN_high_{k}/b_transform"] = (f,)
    if options.word_channel_dim:
        shapes["word_embedding"] = (_vocab_rows(options), options.word_channel_dim)
    if options.has_token_projection:
        shapes["CNN_proj/W_proj"] = (options.token_features, p)
        shapes["CNN_proj/b_proj"] = (p,)
    return shapes


#: TF variable-name parts of a bilm-tf training graph's LSTM (`lm/RNN_{d}/rnn/...`) and the hdf5
#: leaf each becomes under bilm-tf's `dump_weights` (format.md sections 1 and 7).
_TF_LSTM_LEAVES = {"W_0": "kernel", "B": "bias", "W_P_0": "projection/kernel"}


def tf_variable_name(name: str) -> str:
    """The bilm-tf training-checkpoint variable of a weight-file dataset: the inverse of bilm-tf's
    `dump_weights` renaming (`lm/` prefix; `/rnn/multi_rnn_cell/cell_{l}/lstm_cell/` and
    kernel/bias/projection/kernel for W_0/B/W_P_0). E.g. 'RNN_1/RNN/MultiRNNCell/Cell0/LSTMCell/W_P_0'
    -> 'lm/RNN_1/rnn/multi_rnn_cell/cell_0/lstm_cell/projection/kernel'."""
    parts = name.split("/")
    if len(parts) == 6 and parts[0].startswith("RNN_") and parts[1:3] == ["RNN", "MultiRNNCell"] \
            and parts[3].startswith("Cell") and parts[4] == "LSTMCell" and parts[5] in _TF_LSTM_LEAVES:
        return (f"lm/{parts[0]}/rnn/multi_rnn_cell/cell_{parts[3][len('Cell'):]}/lstm_cell/"
                f"{_TF_LSTM_LEAVES[parts[5]]}")
    return "lm/" + name


def params_to_arrays(params: Params, options: ModelOptions) -> dict[str, np.ndarray]:
    """Params pytree -> {bilm-tf name: float32 array in the bilm-tf layout}."""
    params = params.get("params", params)
    enc, lstm = params["token_encoder"], params["lstm"]
    out: dict[str, np.ndarray] = {}
    if not options.char_inputs:
        out["embedding"] = np.asarray(enc["embedding"])
    else:
        cnn = enc["char_cnn"]
        out["char_embed"] = np.asarray(cnn["char_embed"])
        for i in range(len(options.filters)):
            out[f"CNN/W_cnn_{i}"] = np.asarray(cnn[f"W_cnn_{i}"])[None]
            out[f"CNN/b_cnn_{i}"] = np.asarray(cnn[f"b_cnn_{i}"])
        for k in range(options.n_highway):
            for leaf in ("W_carry", "b_carry", "W_transform", "b_transform"):
                out[f"CNN_high_{k}/{leaf}"] = np.asarray(enc["highway"][f"layer_{k}"][leaf])
        if options.word_channel_dim:
            out["word_embedding"] = np.asarray(enc["word_embedding"])
        if options.has_token_projection:
            out["CNN_proj/W_proj"] = np.asarray(enc["W_proj"])
            out["CNN_proj/b_proj"] = np.asarray(enc["b_proj"])
    for layer in range(options.n_layers):
        lp = lstm[f"layer_{layer}"]
        for direction in range(options.n_directions):
            name = lambda leaf: _lstm_name(direction, layer, leaf, options.bidirectional)  # noqa: E731
            out[name("W_0")] = np.asarray(lp["kernel"][direction])
            out[name("B")] = np.asarray(lp["bias"][direction])
            if options.has_lstm_projection:
                out[name("W_P_0")] = np.asarray(lp["projection"][direction])
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def arrays_to_params(arrays: Mapping[str, np.ndarray], options: ModelOptions,
                     source: Optional[str] = None) -> Params:
    """{bilm-tf name: array} -> params pytree, checking that every dataset exists with its shape."""
    check_arrays(arrays, options, source)
    a = {k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}
    enc: Params
    if not options.char_inputs:
        enc = {"embedding": a["embedding"]}
    else:
        cnn = {"char_embed": a["char_embed"]}
        for i in range(len(options.filters)):
            cnn[f"W_cnn_{i}"] = a[f"CNN/W_cnn_{i}"][0]
            cnn[f"b_cnn_{i}"] = a[f"CNN/b_cnn_{i}"]
        enc = {"char_cnn": cnn}
        if options.n_highway:
            enc["highway"] = {
                f"layer_{k}": {leaf: a[f"CNN_high_{k}/{leaf}"]
                               for leaf in ("W_carry", "b_carry", "W_transform", "b_transform")}
                for k in range(options.n_highway)}
        if options.word_channel_dim:
            enc["word_embedding"] = a["word_embedding"]
        if options.has_token_projection:
            enc["W_proj"], enc["b_proj"] = a["CNN_proj/W_proj"], a["CNN_proj/b_proj"]
    lstm: Params = {}
    for layer in range(options.n_layers):
        def stacked(leaf: str) -> np.ndarray:
            return np.stack([a[_lstm_name(d, layer, leaf, options.bidirectional)]
                             for d in range(options.n_directions)])

        lp = {"kernel": stacked("W_0"), "bias": stacked("B")}
        if options.has_lstm_projection:
            lp["projection"] = stacked("W_P_0")
        lstm[f"layer_{layer}"] = lp
    return {"token_encoder": enc, "lstm": lstm}


def check_arrays(arrays: Mapping[str, Any], options: ModelOptions, source: Optional[str] = None) -> None:
    """Raise `WeightsError` naming the file, the dataset and expected vs actual shape."""
    for name, shape in expected_shapes(options).items():
        if name not in arrays:
            raise WeightsError(f"missing dataset '{name}' (expected shape {shape}); "
                               "the weight file does not match the options", source)
        actual = tuple(np.shape(arrays[name]))
        if actual != shape:
            raise WeightsError(f"dataset '{name}' has shape {actual}, expected {shape} from the options "
                               "(do the options match these weights?)", source)
        dtype = getattr(arrays[name], "dtype", None)
        if dtype is not None and not np.issubdtype(dtype, np.floating):
            raise WeightsError(f"dataset '{name}' has dtype {dtype}, expected float32", source)


# --------------------------------------------------------------------------- hdf5
def _open_hdf5(path: str):
    if not os.path.exists(path):
        raise WeightsError("weight file not found", path)
    if os.path.isdir(path):
        raise WeightsError("is a directory, expected an HDF5 weight file", path)
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise WeightsError(f"not a readable HDF5 file ({' '.join(str(e).split())})", path)


def read_hdf5_arrays(path: os.PathLike | str) -> dict[str, np.ndarray]:
    """Every dataset of an hdf5 file, by its full path name (no leading '/')."""
    path = os.fspath(path)
    out: dict[str, np.ndarray] = {}
    with _open_hdf5(path) as f:
        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                try:
                    out[name] = obj[()]
                except Exception as e:  # corrupt or truncated data
                    raise WeightsError(f"cannot read dataset '{name}' ({e})", path)

        f.visititems(visit)
    return out


def load_bilm_weights(weight_file: os.PathLike | str, options: ModelOptions) -> tuple[Params, list[str]]:
    """Read a bilm-tf / AllenNLP weight file into a params pytree.

    Returns (params, notes); notes say which conversions were applied (char table, n_characters)."""
    _, params, notes = _load_hdf5(os.fspath(weight_file), options)
    return params, notes


def _kind_mismatch(arrays: Mapping[str, Any], options: ModelOptions) -> Optional[str]:
    """Why a weight file cannot be of the options' model kind (word vs char input, directions)."""
    if not options.char_inputs and "char_embed" in arrays:
        return ("the options describe a word-input biLM (no 'char_cnn' section) but the weight file holds a "
                "character model (dataset 'char_embed'); use that model's options.json, with its char_cnn")
    if options.char_inputs and "char_embed" not in arrays and "embedding" in arrays:
        return ("the options describe a character-input biLM ('char_cnn') but the weight file holds a "
                "word-input model (dataset 'embedding', no 'char_embed'); use that model's options.json")
    if options.bidirectional and not any(k.startswith("RNN_") for k in arrays) and any(
            k.startswith("rnn/") for k in arrays):
        return ("the weight file holds a forward-only LM (bilm-tf 'rnn/...' datasets); set "
                "\"bidirectional\": false in the options")
    return None


def _with_table_rows(options: ModelOptions, arrays: Mapping[str, Any]) -> ModelOptions:
    """Options without `n_tokens_vocab` take it from the word table's rows (as bilm-tf's inference
    takes the vocabulary size from its embedding file)."""
    name = "embedding" if not options.char_inputs else ("word_embedding" if options.word_channel_dim else None)
    if name and options.n_tokens_vocab is None and np.ndim(arrays.get(name)) == 2:
        return options.replace(n_tokens_vocab=int(np.shape(arrays[name])[0]))
    return options


def _load_hdf5(path: str, options: ModelOptions) -> tuple[ModelOptions, Params, list[str]]:
    arrays = read_hdf5_arrays(path)
    notes: list[str] = []
    mismatch = _kind_mismatch(arrays, options)
    if mismatch:
        raise WeightsError(mismatch, path)
    options = _with_table_rows(options, arrays)
    if options.char_inputs and options.n_characters != INFERENCE_N_CHARACTERS:
        notes.append(f"options have n_characters {options.n_characters} (the training value); using "
                     "inference char ids (+1 shift, zero row prepended to char_embed) as for 262")
    table = arrays.get("char_embed")
    if table is not None and np.ndim(table) == 2 and table.shape[0] == INFERENCE_N_CHARACTERS:
        if np.any(table[0] != 0):
            raise WeightsError("dataset 'char_embed' has 262 rows but row 0 (padding) is not zero; "
                               "expected 261 rows (bilm-tf layout)", path)
        arrays["char_embed"] = table[1:]
        notes.append("char_embed had 262 rows (padding row included); dropped the zero row 0")
    unexpected = sorted(set(arrays) - set(expected_shapes(options)))
    if unexpected:
        notes.append(f"ignored {len(unexpected)} dataset(s) the biLM does not use: "
                     + ", ".join(unexpected[:5]) + ("..." if len(unexpected) > 5 else ""))
    return options, arrays_to_params(arrays, options, path), notes


def write_bilm_hdf5(path: os.PathLike | str, params: Params, options: ModelOptions) -> None:
    """Write params as a bilm-tf weight file (exact layout: names, shapes, float32, no softmax).

    Written to a temporary file first, so a failure leaves no partial file."""
    arrays = params_to_arrays(params, options)
    with atomic_output(path, suffix=".hdf5.tmp") as tmp:
        with h5py.File(tmp, "w") as f:
            for name in sorted(arrays):
                f.create_dataset(name, data=arrays[name], dtype="float32")


def load_model(options_file: os.PathLike | str, weight_file: Optional[os.PathLike | str] = None,
               **resolve_kwargs: Any) -> tuple[ModelOptions, Params, list[str]]:
    """Options + weights: (options, params, notes on conversions and downloads).

    `load_model("options.json", "weights.hdf5")` reads the two files; `load_model(NAME)` takes a
    model name (a published id such as "original", a URL, "hf://owner/repo" or a directory;
    `elmo_jax.hub.resolve_model`, which also takes `resolve_kwargs`: verify, offline, progress).
    Options without `n_tokens_vocab` of a word model take it from the weight file."""
    notes: list[str] = []
    if weight_file is None:
        files = resolve_model(options_file, **resolve_kwargs)
        options_file, weight_file, notes = files.options_file, files.weight_file, list(files.notes)
    options, params, conversion_notes = _load_hdf5(os.fspath(weight_file), ModelOptions.from_json(options_file))
    return options, params, notes + conversion_notes


# --------------------------------------------------------------------------- npz
def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "/"))
        else:
            out[name] = np.asarray(value)
    return out


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in flat.items():
        node = out
        *parents, leaf = name.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def export_npz(path: os.PathLike | str, params: Params, options: ModelOptions,
               extra: Optional[Mapping[str, Any]] = None) -> None:
    """Write all params as `.npz`: bilm-tf-named arrays, `extra` groups flattened with '/'
    (e.g. {'softmax': {'W': ..., 'b': ...}} -> 'softmax/W'), and `options_json`."""
    arrays: dict[str, np.ndarray] = dict(params_to_arrays(params, options))
    for name, value in _flatten(extra or {}).items():
        if name in arrays or name == OPTIONS_KEY:
            raise ValueError(f"extra array name '{name}' collides with a biLM array")
        arrays[name] = value
    arrays[OPTIONS_KEY] = np.array(json.dumps(options.to_dict()))
    with atomic_output(path, suffix=".npz.tmp") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def import_npz(path: os.PathLike | str, options: Optional[ModelOptions] = None
               ) -> tuple[ModelOptions, Params, dict[str, Any]]:
    """Read an `.npz` written by `export_npz`: (options, biLM params, extra groups).

    `options` overrides the JSON stored in the file (needed for npz files without one)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise WeightsError("npz file not found", path)
    if not zipfile.is_zipfile(path):
        raise WeightsError("not an .npz file (no zip archive found)", path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:
        raise WeightsError(f"not a readable .npz file ({e})", path)
    stored = arrays.pop(OPTIONS_KEY, None)
    if options is None:
        if stored is None:
            raise OptionsError(f"the npz file has no '{OPTIONS_KEY}' entry; pass the options file", path)
        try:
            options = ModelOptions.from_dict(json.loads(str(stored)), source=f"{path}:{OPTIONS_KEY}")
        except json.JSONDecodeError as e:
            raise OptionsError(f"'{OPTIONS_KEY}' is not valid JSON ({e.msg})", path)
    mismatch = _kind_mismatch(arrays, options)
    if mismatch:
        raise WeightsError(mismatch, path)
    options = _with_table_rows(options, arrays)
    names = set(expected_shapes(options))
    params = arrays_to_params({k: v for k, v in arrays.items() if k in names}, options, path)
    extra = _unflatten({k: v for k, v in arrays.items() if k not in names})
    return options, params, extra

