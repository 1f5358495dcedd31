"""``python -m train`` is ``fusionjax-train``."""

from train.cli import train_main

train_main()
