"""The training kit both loops use (`elmo_jax/train/kit.py`): the optimizer chain, state created in
place from its abstract plan, the compiled step's donation, lag-1 reads, the stop flag and the
non-finite stop."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from elmo_jax import sharding as shd
from elmo_jax.errors import ElmoError
from elmo_jax.train import kit
from elmo_jax.train.checkpoint import Checkpoints


def test_with_clipping_clips_the_global_norm_first() -> None:
    grads = {"a": jnp.array([3.0, 4.0]), "b": jnp.array([12.0])}  # global norm 13
    params = jax.tree_util.tree_map(jnp.zeros_like, grads)
    sgd = optax.sgd(1.0)
    for clip, norm in ((0.0, 13.0), (26.0, 13.0), (6.5, 6.5)):
        tx = kit.with_clipping(sgd, clip)
        updates, _ = tx.update(grads, tx.init(params), params)
        assert float(optax.tree.norm(updates)) == pytest.approx(norm, rel=1e-6), clip
    assert kit.with_clipping(sgd, 0.0) is sgd


def test_state_is_planned_then_created_in_place_and_the_step_donates_it() -> None:
    mesh = shd.make_mesh()

    def init(key, scale):
        w = jax.random.normal(key, (4, 3)) * scale
        return {"step": jnp.zeros((), jnp.int32), "w": w}

    def shardings_of(abstract):
        return {"step": shd.replicated(mesh), "w": shd.batch_sharding(mesh, 2, axis=1)}

    key = jax.random.key(0)
    abstract, sh = kit.plan_state(init, shardings_of, key, 2.0)
    assert abstract["w"].shape == (4, 3) and abstract["w"].sharding == sh["w"]  # a restore/AOT target
    state = kit.create_state(init, sh, key, 2.0)
    assert state["w"].sharding == sh["w"]
    np.testing.assert_allclose(np.asarray(state["w"]), np.asarray(init(key, 2.0)["w"]), rtol=1e-6)

    def step(s, x):
        return {"step": s["step"] + 1, "w": s["w"] + x}, {"norm": jnp.linalg.norm(s["w"])}

    compiled = kit.compile_step(step, sh, mesh)
    old = state["w"]
    state, metrics = compiled(state, jnp.ones((4, 3)))
    assert old.is_deleted()  # donated: updated in place, never two copies
    assert state["w"].sharding == sh["w"] and metrics["norm"].sharding.is_fully_replicated
    assert int(state["step"]) == 1


def test_in_flight_holds_one_step_and_the_stop_flag_is_the_max() -> None:
    flight = kit.InFlight()
    assert flight.push((1, "m1")) is None and flight.push((2, "m2")) == (1, "m1")
    assert flight.pop() == (2, "m2") and flight.pop() is None and flight.pending is None
    mesh = shd.make_mesh()
    for requested in (False, True):
        flag = kit.stop_input(requested, mesh)
        assert flag.shape == (jax.device_count(),)
        assert float(jax.jit(kit.stop_output)({"stop": flag})) == float(requested)
    assert float(kit.stop_output({})) == 0.0
    assert kit.read_metrics({"loss": jnp.float32(1.5), "n": jnp.int32(3)}) == {"loss": 1.5, "n": 3.0}


def test_check_finite_names_the_step_the_values_and_the_last_good_checkpoint(tmp_path) -> None:
    ckpts = Checkpoints(str(tmp_path / "ckpt"), async_save=False)
    try:
        kit.check_finite({"loss": 1.0, "grad_norm": 2.0}, 5, ("loss", "grad_norm"), ckpts, "run", "advice")
        with pytest.raises(ElmoError, match=r"^run: non-finite loss at step 7 \(loss nan, gradient norm 2.0\); "
                                            r"the last good checkpoint is none; lower it$"):
            kit.check_finite({"loss": float("nan"), "grad_norm": 2.0}, 7, ("loss", "grad_norm"), ckpts, "run",
                             "lower it")
        ckpts.save(3, {"x": np.zeros(2)}, {"d": np.zeros(1)}, {}, force=True)
        with pytest.raises(ElmoError, match=r"parameter norm inf\); the last good checkpoint is step 3 "):
            kit.check_finite({"param_norm": float("inf")}, 9, ("param_norm",), ckpts, None, "x")
    finally:
        ckpts.close()
