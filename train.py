"""`python train.py ...` from a checkout: the efafnet-train command
(efafnet_jax/commands/train.py)."""

from efafnet_jax.commands.train import cli

if __name__ == "__main__":
    cli()
