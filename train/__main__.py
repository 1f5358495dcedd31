"""``python -m fusionjax.train`` is ``fusionjax-train``."""

from fusionjax.train.cli import train_main

train_main()
