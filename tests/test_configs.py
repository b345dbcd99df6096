"""The shipped model configs describe AllenNLP's published model shapes."""
from __future__ import annotations

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
