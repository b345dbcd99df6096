"""`elmo-jax plot` (matplotlib learning curve) and the TensorBoard event writer."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from elmo_jax.cli import main
from elmo_jax.errors import ElmoError

needs_matplotlib = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                                      reason="matplotlib not installed: pip install 'elmo-jax[plot]'")
needs_tensorboardx = pytest.mark.skipif(importlib.util.find_spec("tensorboardX") is None,
                                        reason="tensorboardX not installed: pip install 'elmo-jax[tensorboard]'")


def train_records() -> list[dict]:
    """30 train steps; validation at 10, 20, 30 (average, forward, backward) in the same record."""
    records = []
    for step in range(1, 31):
        rec = {"step": step, "loss": float(np.log(900.0 / step)), "perplexity": 900.0 / step,
               "tokens_per_s": 1234.5}
        if step % 10 == 0:
            rec.update(val_perplexity=1000.0 / step, val_perplexity_fwd=1100.0 / step,
                       val_perplexity_bwd=950.0 / step, val_tokens=400)
        records.append(rec)
    return records


def write_run(tmp_path: Path, records: list[dict], name: str = "myrun") -> Path:
    run = tmp_path / name
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


def lines_by_label(ax) -> dict:
    return {line.get_label(): line for line in ax.get_lines()}


# --------------------------------------------------------------------------- the figure
@needs_matplotlib
def test_figure_has_log_axis_labels_legend_and_the_metrics():
    from elmo_jax.train.plot import make_figure

    records = train_records()
    fig = make_figure(records, "myrun")
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    assert ax.get_xscale() == "linear"
    assert ax.get_xlabel() == "step"
    assert ax.get_ylabel() == "perplexity (log scale)"
    assert ax.get_title() == "myrun"
    legend = ax.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == [
        "train", "validation", "validation, forward LM", "validation, backward LM"]

    lines = lines_by_label(ax)
    np.testing.assert_array_equal(lines["train"].get_xdata(), np.arange(1, 31))
    np.testing.assert_allclose(lines["train"].get_ydata(), [900.0 / s for s in range(1, 31)])
    for label, scale in (("validation", 1000.0), ("validation, forward LM", 1100.0),
                         ("validation, backward LM", 950.0)):
        np.testing.assert_array_equal(lines[label].get_xdata(), [10, 20, 30])
        np.testing.assert_allclose(lines[label].get_ydata(), [scale / 10, scale / 20, scale / 30])

    fig.canvas.draw()  # ticks, tick labels and the grid exist once drawn
    assert any(t.get_text() for t in ax.get_xticklabels())
    assert any(t.get_text() for t in ax.get_yticklabels())
    ylo, yhi = ax.get_ylim()
    assert ylo <= 900.0 / 30 and yhi >= 900.0
    assert ax.get_xgridlines() and all(g.get_visible() for g in ax.get_xgridlines())
    assert ax.get_ygridlines() and all(g.get_visible() for g in ax.get_ygridlines())


@needs_matplotlib
def test_figure_without_forward_backward_and_resumed_steps():
    """Only the series that were logged get a line; a step logged again after a resume keeps its
    last value; non-finite values (not drawable on a log axis) are left out."""
    from elmo_jax.train.plot import make_figure

    records = [{"step": s, "perplexity": 100.0 - s} for s in range(1, 6)]
    records += [{"step": 4, "perplexity": 50.0}, {"step": 5, "perplexity": 40.0, "val_perplexity": 45.0},
                {"step": 6, "perplexity": float("nan")}, {"step": 7, "perplexity": 30.0}]
    fig = make_figure(records, "resumed")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train", "validation"]
    lines = lines_by_label(ax)
    np.testing.assert_array_equal(lines["train"].get_xdata(), [1, 2, 3, 4, 5, 7])
    np.testing.assert_allclose(lines["train"].get_ydata(), [99, 98, 97, 50, 40, 30])
    np.testing.assert_array_equal(lines["validation"].get_xdata(), [5])


@needs_matplotlib
@pytest.mark.parametrize("low, high", [(30.0, 40.0), (90.0, 1300.0), (20.0, 50000.0)])
def test_y_axis_has_enough_labelled_ticks(low, high):
    """A reader can read values off the log axis whether the curve spans a factor of 1.3 or 2500."""
    from elmo_jax.train.plot import make_figure

    records = [{"step": s, "perplexity": float(high * (low / high) ** (s / 50))} for s in range(51)]
    fig = make_figure(records, "ticks")
    ax = fig.axes[0]
    fig.canvas.draw()
    ylo, yhi = ax.get_ylim()
    labelled = {round(t.get_position()[1], 6) for t in ax.get_yticklabels() + ax.get_yticklabels(minor=True)
                if t.get_text() and ylo <= t.get_position()[1] <= yhi}
    assert len(labelled) >= 3, sorted(labelled)


@needs_matplotlib
def test_plot_run_writes_a_png_of_the_requested_size(tmp_path):
    from matplotlib.image import imread

    from elmo_jax.train.plot import plot_run

    run = write_run(tmp_path, train_records())
    out = plot_run(str(run))
    assert out == str(run / "learning_curve.png")
    image = imread(out)
    assert image.shape[:2] == (500, 800)
    rgb = image[..., :3]
    assert rgb.std() > 0.01  # not a blank canvas
    from matplotlib.colors import to_rgb

    blue = np.array(to_rgb("tab:blue"))
    assert (np.abs(rgb - blue).max(axis=-1) < 0.05).sum() > 100  # the train curve is drawn

    other = tmp_path / "curve.png"
    assert main(["plot", str(run), "--output", str(other)]) == 0
    assert imread(str(other)).shape[:2] == (500, 800)
    assert not [p for p in tmp_path.rglob("*.tmp")]


# --------------------------------------------------------------------------- errors
@needs_matplotlib
@pytest.mark.parametrize("lines, expected", [
    (['{"step": 1, "perplexity": 10.0}', '{"step": 2, "perplexity": 9.0}', '{"step": 3, "perpl'],
     "line 3: not valid JSON"),
    (['{"step": 1, "perplexity": 10.0}', "[1, 2]"], "line 2: expected a JSON object"),
    (['', '{"perplexity": 10.0}'], "line 2: no integer 'step'"),
    (['{"step": 1, "loss": 3.0}'], "no perplexity values logged yet"),
])
def test_bad_metrics_is_one_error_line_naming_file_and_line(tmp_path, capsys, lines, expected):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["plot", str(run)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("elmo-jax: error: ")
    assert str(run / "metrics.jsonl") in err and expected in err
    assert not list(run.glob("*.png")) and not list(run.glob(".*tmp"))


def test_missing_metrics_file_and_missing_directory(tmp_path, capsys):
    from elmo_jax.train.plot import read_metrics

    with pytest.raises(ElmoError, match="no metrics.jsonl"):
        read_metrics(str(tmp_path))
    assert main(["plot", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run directory not found" in err


def test_missing_matplotlib_says_how_to_install(tmp_path, capsys, monkeypatch):
    run = write_run(tmp_path, train_records())
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    assert main(["plot", str(run)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'elmo-jax[plot]'" in err
    assert not (run / "learning_curve.png").exists()


def test_package_imports_without_matplotlib_or_tensorboardx(tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None; sys.modules['tensorboardX'] = None\n"
            "import elmo_jax.cli, elmo_jax.train.plot\n"
            "from elmo_jax.train.tensorboard import TensorBoardWriter\n"
            "elmo_jax.cli.build_parser()\n"
            "w = TensorBoardWriter(sys.argv[1]); w.scalars(1, {'loss': 1.0}); w.close()\n"
            "assert not w.active\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "tb")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "pip install 'elmo-jax[tensorboard]'" in proc.stderr


# --------------------------------------------------------------------------- TensorBoard
@needs_tensorboardx
def test_tensorboard_scalars_round_trip(tmp_path):
    from elmo_jax.train.tensorboard import TensorBoardWriter, read_scalars

    logdir = tmp_path / "run" / "tensorboard"
    records = train_records()
    with TensorBoardWriter(str(logdir)) as tb:
        assert tb.active
        for rec in records:
            tb.scalars(rec["step"], {**rec, "note": "text is skipped", "flag": True})
        tb.flush()
    assert len(list(logdir.glob("events.out.tfevents.*"))) == 1
    got = read_scalars(str(logdir))
    assert set(got) == {"loss", "perplexity", "tokens_per_s", "val_perplexity", "val_perplexity_fwd",
                        "val_perplexity_bwd", "val_tokens"}
    assert [s for s, _ in got["perplexity"]] == list(range(1, 31))
    np.testing.assert_allclose([v for _, v in got["perplexity"]], [900.0 / s for s in range(1, 31)], rtol=1e-6)
    assert [s for s, _ in got["val_perplexity_bwd"]] == [10, 20, 30]
    np.testing.assert_allclose([v for _, v in got["val_perplexity_bwd"]], [95.0, 47.5, 950.0 / 30], rtol=1e-6)
    np.testing.assert_allclose([v for _, v in got["loss"]], [np.log(900.0 / s) for s in range(1, 31)], rtol=1e-6)


@needs_tensorboardx
def test_tensorboard_resume_purges_steps_logged_again(tmp_path):
    """A run killed at step 6 and resumed from its step-3 checkpoint logs 4.. again: with
    purge_step=4 TensorBoard shows each step once, even when both writers open in one second."""
    from elmo_jax.train.tensorboard import TensorBoardWriter, read_scalars

    with TensorBoardWriter(str(tmp_path)) as tb:
        for step in range(1, 7):
            tb.scalars(step, {"perplexity": 100.0 + step})
    with TensorBoardWriter(str(tmp_path), purge_step=4) as tb:
        for step in range(4, 9):
            tb.scalars(step, {"perplexity": 200.0 + step})
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2
    assert read_scalars(str(tmp_path))["perplexity"] == [
        (1, 101.0), (2, 102.0), (3, 103.0), (4, 204.0), (5, 205.0), (6, 206.0), (7, 207.0), (8, 208.0)]


def test_tensorboard_writer_disabled_or_missing_is_a_no_op(tmp_path, capsys, monkeypatch):
    from elmo_jax.train import tensorboard

    off = tensorboard.TensorBoardWriter(str(tmp_path / "off"), enabled=False)  # e.g. process 1
    off.scalars(1, {"loss": 1.0})
    off.flush()
    off.close()
    assert not off.active and not (tmp_path / "off").exists()
    assert capsys.readouterr().err == ""

    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    monkeypatch.setattr(tensorboard, "_warned_missing", False)
    writers = [tensorboard.TensorBoardWriter(str(tmp_path / "missing")) for _ in range(2)]
    for w in writers:
        w.scalars(1, {"loss": 1.0})
        w.flush()
        w.close()
        assert not w.active
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'elmo-jax[tensorboard]'" in err
    assert not (tmp_path / "missing").exists()
