"""Training configs, installed as ``fusionjax.configs``: ``fusionjax-train --config NAME`` (or a file's path).
Shared defaults and recipes live in ``common.py``; a config file imports them as
``from fusionjax.configs import common``."""
