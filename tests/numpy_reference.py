"""Independent plain-NumPy oracle for the biLM, written from `shared/docs/format.md` sections 2-3.9.

Nothing here imports `elmo_jax` except `ModelOptions` (a plain record of the options). All maths
is float64, one batch row at a time, with an explicit Python loop over time; it is meant to be
read against the spec line by line, not to be fast.

Weights are the bilm-tf-named arrays of format.md section 1 (e.g. ``char_embed`` [261, D],
``CNN/W_cnn_0`` [1, w, D, n], ``RNN_0/RNN/MultiRNNCell/Cell0/LSTMCell/W_0`` [2P, 4H], ...).
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Sequence

import numpy as np

from elmo_jax.options import ModelOptions

# ----------------------------------------------------------------------------- section 2: char ids
RAW_BOS, RAW_EOS, RAW_BOW, RAW_EOW, RAW_PAD = 256, 257, 258, 259, 260


def char_ids(token: str, max_chars: int = 50, shift: bool = True) -> np.ndarray:
    """One token -> `max_chars` char ids (shifted by +1 for inference unless `shift=False`)."""
    if token == "<S>":
        body = [RAW_BOS]
    elif token == "</S>":
        body = [RAW_EOS]
    else:
        # Both references use encode('utf-8', 'ignore'): unencodable lone surrogates vanish.
        body = list(token.encode("utf-8", "ignore")[: max_chars - 2])
    raw = [RAW_BOW] + body + [RAW_EOW]
    raw += [RAW_PAD] * (max_chars - len(raw))
    out = np.array(raw, dtype=np.int64)
    return out + 1 if shift else out


def batch_char_ids(sentences: Sequence[Sequence[str]], max_chars: int = 50,
                   pad_to: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """Sentences -> (shifted ids [B, T, C] with [<S>, tokens..., </S>] and zero padding tokens,
    lengths [B] = n_b + 2)."""
    rows = [["<S>", *s, "</S>"] for s in sentences]
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    width = max([len(r) for r in rows], default=2) if pad_to is None else pad_to
    ids = np.zeros((len(rows), width, max_chars), dtype=np.int64)
    for b, row in enumerate(rows):
        for t, tok in enumerate(row):
            ids[b, t] = char_ids(tok, max_chars)
    return ids, lengths


def lengths_of(ids: np.ndarray) -> np.ndarray:
    """Row lengths of left-aligned shifted ids [B, T, C] (a position is real iff any id > 0)."""
    real = (np.asarray(ids) > 0).any(-1)
    lengths = real.sum(-1)
    for b, n in enumerate(lengths):
        assert real[b, :n].all() and not real[b, n:].any(), "rows must be left-aligned"
    return lengths


# ----------------------------------------------------------------------------- section 3.1-3.3
def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def char_cnn(arrays: Mapping[str, np.ndarray], options: ModelOptions, ids: np.ndarray) -> np.ndarray:
    """Shifted ids [N, C] -> [N, F]: embed, valid conv per filter bank, max over windows, act."""
    table = np.asarray(arrays["char_embed"], np.float64)
    emb = np.concatenate([np.zeros((1, table.shape[1])), table], axis=0)  # (262, D), row 0 = zeros
    x = emb[np.asarray(ids)]  # [N, C, D]
    n_tok, c_len, _ = x.shape
    act = relu if options.activation == "relu" else np.tanh
    outs = []
    for i, (width, count) in enumerate(options.filters):
        kernel = np.asarray(arrays[f"CNN/W_cnn_{i}"], np.float64)[0]  # (w, D, n)
        bias = np.asarray(arrays[f"CNN/b_cnn_{i}"], np.float64)
        assert kernel.shape[0] == width and kernel.shape[2] == count
        n_windows = c_len - width + 1
        z = np.zeros((n_tok, n_windows, count))
        for s in range(n_windows):
            acc = np.zeros((n_tok, count))
            for k in range(width):  # tap k reads position s + k (no kernel flip)
                acc += x[:, s + k, :] @ kernel[k]  # sum over d
            z[:, s, :] = acc + bias
        outs.append(act(z.max(axis=1)))
    return np.concatenate(outs, axis=-1)


def highway(arrays: Mapping[str, np.ndarray], options: ModelOptions, x: np.ndarray) -> np.ndarray:
    """x <- g * relu(x W_t + b_t) + (1 - g) * x with g = sigmoid(x W_carry + b_carry)."""
    for k in range(options.n_highway):
        g = sigmoid(x @ arrays[f"CNN_high_{k}/W_carry"] + arrays[f"CNN_high_{k}/b_carry"])
        t = relu(x @ arrays[f"CNN_high_{k}/W_transform"] + arrays[f"CNN_high_{k}/b_transform"])
        x = g * t + (1.0 - g) * x
    return x


def token_embeddings(arrays: Mapping[str, np.ndarray], options: ModelOptions, ids: np.ndarray) -> np.ndarray:
    """Shifted ids [..., C] -> layer-0 token vectors [..., P] (char CNN, highway, projection)."""
    arrays = {k: np.asarray(v, np.float64) for k, v in arrays.items()}
    lead = ids.shape[:-1]
    x = char_cnn(arrays, options, ids.reshape(-1, ids.shape[-1]))
    x = highway(arrays, options, x)
    if options.n_filters != options.projection_dim:
        x = x @ arrays["CNN_proj/W_proj"] + arrays["CNN_proj/b_proj"]
    return x.reshape(*lead, x.shape[-1])


# ----------------------------------------------------------------------------- section 3.4-3.9
@dataclasses.dataclass
class ClipStats:
    """Largest |pre-clip| cell and projection values seen at real steps (to prove clips bind)."""

    max_abs_cell: float = 0.0
    max_abs_proj: float = 0.0


def lstmp_step(x: np.ndarray, h: np.ndarray, c: np.ndarray, w0: np.ndarray, b: np.ndarray,
               wp: Optional[np.ndarray], options: ModelOptions, stats: ClipStats
               ) -> tuple[np.ndarray, np.ndarray]:
    """One LSTMP step for one row: returns (h_t, c_t)."""
    hdim = options.lstm_dim
    z = np.concatenate([x, h]) @ w0 + b
    i, j, f, o = z[0:hdim], z[hdim:2 * hdim], z[2 * hdim:3 * hdim], z[3 * hdim:4 * hdim]
    c_new = sigmoid(f + 1.0) * c + sigmoid(i) * np.tanh(j)
    stats.max_abs_cell = max(stats.max_abs_cell, float(np.abs(c_new).max()))
    if options.cell_clip is not None:
        c_new = np.clip(c_new, -options.cell_clip, options.cell_clip)
    m = sigmoid(o) * np.tanh(c_new)
    if wp is None:  # P == H: no projection, proj_clip ignored
        return m, c_new
    h_new = m @ wp
    stats.max_abs_proj = max(stats.max_abs_proj, float(np.abs(h_new).max()))
    if options.proj_clip is not None:
        h_new = np.clip(h_new, -options.proj_clip, options.proj_clip)
    return h_new, c_new


def run_direction(arrays: Mapping[str, np.ndarray], options: ModelOptions, direction: int,
                  seq: np.ndarray, h0: np.ndarray, c0: np.ndarray, stats: ClipStats
                  ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """All layers of one LM over one row's real positions `seq` [n, P], already in reading order.

    h0 [L, P], c0 [L, H] -> (per-layer outputs [n, P] incl. skip connections, h_T [L, P], c_T [L, H])."""
    outputs, h_fin, c_fin = [], np.array(h0, np.float64), np.array(c0, np.float64)
    layer_in = seq
    for layer in range(options.n_layers):
        if options.bidirectional:
            prefix = f"RNN_{direction}/RNN/MultiRNNCell/Cell{layer}/LSTMCell/"
            names = (prefix + "W_0", prefix + "B", prefix + "W_P_0")
        else:  # bilm-tf dump_weights of a forward-only LM: no RNN_0 scope, TF leaf names kept
            prefix = f"rnn/MultiRNNCell/Cell{layer}/LSTMCell/"
            names = (prefix + "kernel", prefix + "bias", prefix + "projection/kernel")
        w0, b = arrays[names[0]], arrays[names[1]]
        wp = arrays[names[2]] if options.projection_dim < options.lstm_dim else None
        h, c = h_fin[layer], c_fin[layer]
        out = np.zeros((len(layer_in), options.projection_dim))
        for t in range(len(layer_in)):
            h, c = lstmp_step(layer_in[t], h, c, w0, b, wp, options, stats)
            out[t] = h  # the recurrence only ever sees the un-summed h
        if options.use_skip_connections and layer >= 1:
            out = out + layer_in  # residual added after the recurrence
        h_fin[layer], c_fin[layer] = h, c
        outputs.append(out)
        layer_in = out
    return outputs, h_fin, c_fin


@dataclasses.dataclass
class BiLMResult:
    layers: np.ndarray  # [L+1, B, T, 2P], zero at padding positions
    final_state: dict  # {'h': [L, 2, B, P], 'c': [L, 2, B, H]}
    lengths: np.ndarray  # [B]
    stats: ClipStats


def zero_state(options: ModelOptions, batch: int) -> dict:
    n_dir = 2 if options.bidirectional else 1
    return {"h": np.zeros((options.n_layers, n_dir, batch, options.projection_dim)),
            "c": np.zeros((options.n_layers, n_dir, batch, options.lstm_dim))}


def word_token_embeddings(arrays: Mapping[str, np.ndarray], ids: np.ndarray) -> np.ndarray:
    """Word-input biLM: shifted vocabulary ids [B, T] (index + 1, 0 = padding) -> [B, T, P]
    rows of `embedding` (bilm-tf's cached-token lookup, zero row 0 prepended)."""
    table = np.asarray(arrays["embedding"], np.float64)
    padded = np.concatenate([np.zeros((1, table.shape[1])), table], axis=0)
    return padded[np.asarray(ids)]


def word_bilm(arrays: Mapping[str, np.ndarray], options: ModelOptions, ids: np.ndarray,
              initial_state: Optional[dict] = None) -> "BiLMResult":
    """Word-input (bi)LM: shifted vocabulary ids [B, T] (left-aligned, markers included)."""
    ids = np.asarray(ids)
    lengths = (ids > 0).sum(-1)
    return layers_from_tokens(arrays, options, word_token_embeddings(arrays, ids), lengths, initial_state)


def bilm(arrays: Mapping[str, np.ndarray], options: ModelOptions, ids: np.ndarray,
         initial_state: Optional[dict] = None) -> BiLMResult:
    """Shifted ids [B, T, C] (left-aligned, markers included) -> all L+1 layers and final state.

    Each row starts from its own `initial_state` row (zeros if None); a row of length 0 keeps its
    state unchanged. Layer 0 is [tok; tok]; layer l is [forward_l; backward_l]."""
    ids = np.asarray(ids)
    return layers_from_tokens(arrays, options, token_embeddings(arrays, options, ids), lengths_of(ids),
                              initial_state)


def layers_from_tokens(arrays: Mapping[str, np.ndarray], options: ModelOptions, tokens: np.ndarray,
                       lengths: np.ndarray, initial_state: Optional[dict] = None) -> BiLMResult:
    """Token vectors [B, T, P] and row lengths -> all layers. A forward-only LM
    (`bidirectional: false`) has layers [tok] and [forward_l] (width P)."""
    arrays = {k: np.asarray(v, np.float64) for k, v in arrays.items()}
    batch, width = tokens.shape[:2]
    n_dir = 2 if options.bidirectional else 1
    state = zero_state(options, batch) if initial_state is None else {
        k: np.array(v, np.float64) for k, v in initial_state.items()}
    final = {k: v.copy() for k, v in state.items()}
    p = options.projection_dim
    layers = np.zeros((options.n_layers + 1, batch, width, n_dir * p))
    stats = ClipStats()
    for b in range(batch):
        n = int(lengths[b])
        real = tokens[b, :n]
        layers[0, b, :n] = np.concatenate([real] * n_dir, axis=-1)
        for direction in range(n_dir):
            seq = real if direction == 0 else real[::-1]  # backward: reversed within the length
            outs, h_t, c_t = run_direction(arrays, options, direction, seq,
                                           state["h"][:, direction, b], state["c"][:, direction, b], stats)
            final["h"][:, direction, b], final["c"][:, direction, b] = h_t, c_t
            for layer, out in enumerate(outs):
                aligned = out if direction == 0 else out[::-1]
                layers[layer + 1, b, :n, direction * p:(direction + 1) * p] = aligned
    return BiLMResult(layers, final, lengths, stats)
