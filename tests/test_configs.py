"""The shipped model configs describe AllenNLP's published model shapes."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from elmo_jax import ModelOptions

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FILTERS = ((1, 32), (2, 32), (3, 64), (4, 128), (5, 256), (6, 512), (7, 1024))


@pytest.mark.parametrize("name, dim, proj, highway", [
    ("small", 1024, 128, 1), ("medium", 2048, 256, 1), ("original", 4096, 512, 2)])
def test_published_shapes(name: str, dim: int, proj: int, highway: int) -> None:
    o = ModelOptions.from_json(CONFIGS / f"{name}.json")
    assert (o.lstm_dim, o.projection_dim, o.n_highway, o.n_layers) == (dim, proj, highway, 2)
    assert o.filters == FILTERS and o.n_filters == 2048 and o.char_embed_dim == 16
    assert o.use_skip_connections and o.cell_clip == 3 and o.proj_clip == 3 and o.activation == "relu"
    assert o.max_characters_per_token == 50


@pytest.mark.parametrize("name", ["tiny", "small", "medium", "original"])
def test_training_configs_validate(name: str, tmp_path: Path) -> None:
    from elmo_jax.config import TrainConfig

    path = CONFIGS / f"{name}.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    cfg = TrainConfig.from_json(path)
    assert cfg.model.use_skip_connections  # AllenNLP loads only skip-connection models
    assert cfg.model.n_characters == 261  # training ids; exports write 262
    # every key of the file is read as written: nothing dropped, renamed or defaulted over
    out = cfg.to_dict()
    assert list(out) == [f.name for f in dataclasses.fields(TrainConfig)]
    assert out["model"] == data["model"]
    for key, value in data.items():
        if key != "model":
            assert out[key] == value, key
    # and what is written reads back equal
    cfg.to_json(tmp_path / "c.json")
    assert TrainConfig.from_json(tmp_path / "c.json") == cfg
    assert json.loads((tmp_path / "c.json").read_text(encoding="utf-8")) == out


def test_original_has_bilm_tf_hyperparameters() -> None:
    from elmo_jax.config import TrainConfig

    cfg = TrainConfig.from_json(CONFIGS / "original.json")
    assert (cfg.optimizer, cfg.learning_rate, cfg.initial_accumulator, cfg.clip_norm, cfg.dropout) == \
        ("adagrad", 0.2, 1.0, 10.0, 0.1)
    assert (cfg.batch_size, cfg.unroll_steps, cfg.n_negative_samples) == (384, 20, 8192)  # 3 GPUs x 128 rows
