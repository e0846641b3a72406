"""Multi-process start-up: jax.distributed when the environment describes a cluster."""

from __future__ import annotations

import os

import jax

# Set by TPU pod launchers, SLURM, Open MPI, or by hand (see docs/training.md "Cluster start-up").
_CLUSTER_VARIABLES = (
    "EFAFNET_DISTRIBUTED",  # forces auto-detection (TPU pod workers set nothing we read)
    "JAX_COORDINATOR_ADDRESS",
    "TPU_WORKER_HOSTNAMES",
    "SLURM_NTASKS",
    "OMPI_COMM_WORLD_SIZE",
)


def maybe_initialize() -> bool:
    """Calls jax.distributed.initialize() once if launched as part of a cluster."""
    if jax.distributed.is_initialized():
        return True
    launched = any(os.environ.get(v) for v in _CLUSTER_VARIABLES)
    single_task = (
        os.environ.get("SLURM_NTASKS") == "1" or os.environ.get("OMPI_COMM_WORLD_SIZE") == "1"
    )
    if not launched or single_task:
        return False
    # CPU processes need a collectives backend to all-reduce across hosts (gloo ships
    # with jaxlib); the setting leaves GPU and TPU collectives alone.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        jax.distributed.initialize(
            coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]),
        )
    else:
        jax.distributed.initialize()  # auto-detected (TPU, SLURM, Open MPI)
    return True
