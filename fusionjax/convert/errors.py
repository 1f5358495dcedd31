"""The converter's errors: one exception for what does not fit, one warning for what a non-strict load skipped."""


class ConversionError(ValueError):
    """Weights do not fit the architecture, or a file is not a checkpoint; the message says why.

    ``report`` is the ``ConversionReport`` behind a key mismatch (None for other errors), so that a caller can
    phrase its own fix: the Python API suggests ``strict=False`` or ``model=``, the command line ``--num-classes``.
    """

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report


class ConversionWarning(UserWarning):
    """Issued by a non-strict load (``strict=False``) when keys do not fit; ``.report`` lists them."""

    def __init__(self, report):
        super().__init__(str(report))
        self.report = report
