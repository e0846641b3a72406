"""Errors the commands report as one line with exit status 2 (`efafnet_jax.cli.run`)."""


class UsageError(Exception):
    """Command-line input a command refuses (conflicting flags, a workdir without
    checkpoints): the message says what to give instead."""
