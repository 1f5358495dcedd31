"""fusionjax training: ``fusionjax-train``, ``fusionjax-eval`` and ``fusionjax-plot`` (see ``train.cli``).

``train.train`` is the trainer, ``train.optim`` the Optax optimizer, ``train.metrics`` the metric files and plots,
``train.data`` the input pipelines.
"""
