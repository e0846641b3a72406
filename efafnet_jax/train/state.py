"""The train state: parameters, BatchNorm statistics, optimiser state, counters."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """Everything a checkpoint needs to resume exactly (the data position aside).

    step counts consumed batches, skipped ones included; nonfinite_in_a_row and
    nonfinite_total count updates skipped for a non-finite loss or gradient.
    """

    step: jnp.ndarray
    params: Any
    batch_stats: Any
    opt_state: Any
    nonfinite_in_a_row: jnp.ndarray
    nonfinite_total: jnp.ndarray
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    @classmethod
    def create(cls, variables: dict, tx: optax.GradientTransformation) -> TrainState:
        params = variables["params"]
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=variables.get("batch_stats", {}),
            opt_state=tx.init(params),
            nonfinite_in_a_row=jnp.zeros((), jnp.int32),
            nonfinite_total=jnp.zeros((), jnp.int32),
            tx=tx,
        )

    def variables(self) -> dict:
        return {"params": self.params, "batch_stats": self.batch_stats}
