"""The README's Flax example runs as written (with the reference fixture's weight files)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def section_code(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index(f"## {title}"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_using_elmo_in_your_model_example_runs(fixture_dir):
    code = section_code("Using ELMo in your model")
    assert len([line for line in code.splitlines() if line.strip()]) <= 16
    code = code.replace('"options.json"', repr(str(fixture_dir / "options.json")))
    code = code.replace('"weights.hdf5"', repr(str(fixture_dir / "lm_weights.hdf5")))
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)
    logits = np.asarray(scope["logits"])
    assert logits.shape == (2, 2) and np.all(np.isfinite(logits))
    # the pretrained biLM really is in place: ELMo differs from a randomly initialised one
    from elmo_jax import load_model

    _, bilm, _ = load_model(fixture_dir / "options.json", fixture_dir / "lm_weights.hdf5")
    placed = scope["variables"]["params"]["Elmo_0"]["bilm"]
    assert np.array_equal(np.asarray(placed["lstm"]["layer_0"]["kernel"]), np.asarray(bilm["lstm"]["layer_0"]["kernel"]))
