"""Smoke test, end to end in about a minute and a half: import, a tiny model, exact embeddings against the bilm-tf
fixture, task data, the pretraining batcher (in memory and streaming), a checkpoint round trip, and a
2-step pretraining run with a checkpoint restore, a resumed step and an export.

It is the test that `.ci/lower_bounds.sh` runs against the lowest dependency versions that pyproject.toml
allows (`pytest -m smoke`), so it touches every dependency-version-sensitive API the package uses:
`jax.make_mesh(axis_types=...)`/`jax.sharding.AxisType`, `optax.tree.norm`, orbax `CheckpointManager`
save/restore, `datasets` text loading (cached and streaming) and `Features` (`List`/`Sequence`), flax
`nn.RNN`/`nn.Bidirectional`, h5py reading and writing, tqdm."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.smoke

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "examples" / "data"
TOL = 1e-5  # max abs difference to the bilm-tf references (as tests/test_embed.py)


def _tiny_options():
    from elmo_jax import ModelOptions

    return ModelOptions(char_embed_dim=4, filters=((1, 8), (2, 8), (3, 16)), n_highway=1, n_characters=262,
                        lstm_dim=32, projection_dim=16, n_layers=2, use_skip_connections=True)


def test_imports_and_versions():
    import datasets
    import flax
    import h5py
    import jax
    import optax
    import orbax.checkpoint
    import tqdm

    import elmo_jax
    import elmo_jax.cli  # noqa: F401
    import elmo_jax.tasks.cli  # noqa: F401
    import elmo_jax.tasks.data  # noqa: F401  (module-level datasets feature types)
    import elmo_jax.tasks.loop  # noqa: F401
    import elmo_jax.train.loop  # noqa: F401

    assert elmo_jax.__version__
    versions = {m.__name__: getattr(m, "__version__", "?") for m in (jax, flax, optax, orbax.checkpoint, datasets,
                                                                      np, h5py, tqdm)}
    print("smoke versions:", ", ".join(f"{k} {v}" for k, v in versions.items()))


def test_tiny_model_forward():
    import jax

    from elmo_jax import Elmo, batch_to_ids, init_elmo
    from elmo_jax.weights import arrays_to_params

    from conftest import make_random_arrays

    options = _tiny_options()
    ids, _ = batch_to_ids([["Hello", "world", "."], ["Hi"]], options.max_characters_per_token)
    bilm_params = arrays_to_params(make_random_arrays(options, seed=0), options)
    elmo = Elmo(options, num_output_representations=1)
    variables = jax.jit(lambda key, x: init_elmo(elmo, bilm_params, key, x))(jax.random.key(0), ids)
    out = jax.jit(lambda v, x: elmo.apply(v, x, deterministic=True))(variables, ids)
    reps = np.asarray(out["elmo_representations"][0])
    assert reps.shape == (2, 3, 2 * options.projection_dim) and np.isfinite(reps).all()
    assert np.asarray(out["mask"]).tolist() == [[True] * 3, [True, False, False]]


def test_fixture_embeddings_match_bilm_tf(fixture_dir):
    import h5py

    from elmo_jax import ElmoEmbedder

    sentences = json.loads((fixture_dir / "lm_embeddings_sentences.json").read_text())
    lines = [sentences[k][i].strip().split() for i in range(2) for k in range(3)]  # reference feed order
    embedder = ElmoEmbedder.from_files(fixture_dir / "options.json", fixture_dir / "lm_weights.hdf5",
                                       stateful=True, batch_size=3)
    vectors = embedder.embed_sentences(lines)
    worst = 0.0
    for j, v in enumerate(vectors):
        i, k = divmod(j, 3)
        with h5py.File(fixture_dir / f"lm_embeddings_{k}.hdf5", "r") as f:
            e = f[str(i)][()]
        want = np.concatenate([e[0], e[1]], axis=-1)
        assert v.shape[1:] == want.shape
        worst = max(worst, float(np.abs(v[2] - want).max()))
    assert worst <= TOL, f"max abs difference to lm_embeddings_*.hdf5 is {worst:.3g} > {TOL}"


def test_task_data_reads_into_datasets():
    from elmo_jax.tasks.data import read_classification, read_conll

    tagged = read_conll(SAMPLES / "conll_sample.txt")
    assert len(tagged) > 0 and {"tokens", "tags"} <= set(tagged.column_names)
    assert isinstance(tagged[0]["tokens"], list) and len(tagged[0]["tokens"]) == len(tagged[0]["tags"])
    labelled = read_classification(SAMPLES / "sentiment_sample.tsv")
    assert len(labelled) > 0 and isinstance(labelled[0]["tokens"], list) and labelled[0]["label"]


def test_batcher_streaming_equals_in_memory(tmp_path):
    """Both `datasets` reading paths (memory-mapped `map` cache and streaming) give the same batches."""
    from elmo_jax.data import Batcher
    from elmo_jax.vocab import build_vocab, resolve_files

    rng = np.random.default_rng(0)
    words = ["the", "cat", "a", "dog", "sees", "likes", "it", "."]
    lines = [" ".join(rng.choice(words, size=rng.integers(1, 9))) for _ in range(60)]
    for k in range(2):
        (tmp_path / f"train.{k}.txt").write_text("\n".join(lines[k::2]) + "\n", encoding="utf-8")
    files = str(tmp_path / "train.*.txt")
    vocab, _ = build_vocab(resolve_files(files))
    kw = dict(global_batch_size=3, unroll_steps=4, seed=1, cache_dir=str(tmp_path / "cache"))
    memory, stream = Batcher(files, vocab, **kw), Batcher(files, vocab, streaming=True, max_cached_shards=1, **kw)
    for _ in range(12):
        a, b = next(memory), next(stream)
        assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_checkpoint_round_trip_with_numpy_scalars(tmp_path):
    """The task loop's checkpoint layout (`{"epoch": np.int32}` data, jax arrays, JSON meta), saved
    asynchronously and restored exactly."""
    import jax
    import jax.numpy as jnp

    from elmo_jax.train.checkpoint import Checkpoints

    state = {"params": {"w": jnp.arange(6, dtype=jnp.float32).reshape(2, 3)}, "step": jnp.asarray(7, jnp.int32)}
    ckpts = Checkpoints(str(tmp_path / "checkpoints"), keep=1)
    try:
        ckpts.save(0, state, {"epoch": np.int32(0)}, {"epoch": 0, "history": [{"loss": 1.5}]}, force=True)
        ckpts.save(1, state, {"epoch": np.int32(1)}, {"epoch": 1, "history": [{"loss": 1.25}]}, force=True)
        ckpts.wait()
        assert ckpts.all_steps() == [1]
        abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
        got, data, meta = ckpts.restore(1, abstract, {"epoch": np.zeros((), np.int32)})
    finally:
        ckpts.close()
    assert int(data["epoch"]) == 1 and meta == {"epoch": 1, "history": [{"loss": 1.25}]}
    assert np.array_equal(np.asarray(got["params"]["w"]), np.asarray(state["params"]["w"])) and int(got["step"]) == 7


def test_pretraining_two_steps_checkpoint_resume_and_export(tmp_path):
    """configs/tiny.json (smaller LSTM and batches) for 2 steps: datasets text loading, the mesh,
    optax, an orbax checkpoint at step 2, which restores exactly; a resumed third step moves the
    params by about one learning rate (not from garbage: some Orbax versions restored freed
    buffers); the export embeds."""
    from elmo_jax import ElmoEmbedder
    from elmo_jax.config import TrainConfig
    from elmo_jax.train.export import export_run, load_run_params
    from elmo_jax.train.loop import train
    from elmo_jax.weights import _flatten

    overrides = ["model.lstm.dim=32", "model.lstm.projection_dim=16", "batch_size=4", "unroll_steps=5",
                 "max_steps=2", "log_every=1", "checkpoint_every=2", "eval_every=0"]
    cfg = TrainConfig.from_json(REPO / "configs" / "tiny.json", overrides)
    run = tmp_path / "run"
    last = train(cfg, str(run), progress=False, return_params=True)
    assert last["step"] == 2 and np.isfinite(last["loss"])
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]

    _, restored, step, _ = load_run_params(str(run))  # the step-2 checkpoint, restored through orbax
    assert step == 2
    want, got = _flatten(last["params"]), _flatten(restored)
    assert set(want) == set(got) and all(np.array_equal(want[k], got[k]) for k in want)

    third = train(cfg.replace(max_steps=3), str(run), progress=False, return_params=True)
    assert third["step"] == 3 and np.isfinite(third["loss"])
    moved = _flatten(third["params"])
    worst = max(float(np.abs(moved[k] - want[k]).max()) for k in want)
    assert 0 < worst <= 3 * cfg.learning_rate, f"params moved by {worst:.3g} in one Adam step after resuming"

    paths = export_run(str(run), str(tmp_path / "export"))
    embedder = ElmoEmbedder.from_files(paths["options.json"], paths["weights.hdf5"])
    (v,) = embedder.embed_sentences([["the", "cat", "sees", "a", "dog", "."]])
    assert v.shape == (3, 6, 32) and np.isfinite(v).all()
