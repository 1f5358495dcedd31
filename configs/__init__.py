"""Training configs for ``fusionjax-train --config configs/NAME.py``; shared defaults live in ``common.py``."""
