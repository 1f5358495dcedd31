"""fusionjax training: ``fusionjax-train``, ``fusionjax-eval`` and ``fusionjax-plot`` (``cli``).

``trainer`` is the trainer (train state, steps, the host loop), ``workdir`` a run's config and checkpoints,
``optim`` the Optax optimizer, ``mixup`` mixup/CutMix, ``metrics`` the metric files and plots, ``data`` the input
pipelines, ``host`` the command lines' process-wide set-up, ``errors`` the errors a user fixes. Configs:
``fusionjax.configs``. The user's guide: ``docs/training.md``.
"""
