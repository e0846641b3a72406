"""Training: state, losses, optimiser schedule, the sharded step, checkpoints, the loop."""
