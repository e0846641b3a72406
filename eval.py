"""`python eval.py ...` from a checkout: the efafnet-eval command
(efafnet_jax/commands/evaluate.py)."""

from efafnet_jax.commands.evaluate import cli

if __name__ == "__main__":
    cli()
