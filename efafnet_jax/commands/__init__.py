"""The training and evaluation commands (console scripts efafnet-train and efafnet-eval)."""
