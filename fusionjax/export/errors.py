"""What can go wrong when exporting, each a named error whose message says what to do instead."""


class ExportError(ValueError):
    """An export was refused or failed; nothing was written."""


class UnsupportedOperationError(ExportError):
    """The model uses an operation the ONNX writer cannot write exactly; the message names it."""


class ImageSizeError(ExportError):
    """The model cannot take images of the requested size."""


class NoCheckpointError(ExportError, FileNotFoundError):
    """The directory holds no checkpoint to export (or not the one asked for)."""


class VerificationError(ExportError):
    """The written artifact does not compute what the model does, within the tolerance; the file was not kept."""


__all__ = ["ExportError", "ImageSizeError", "NoCheckpointError", "UnsupportedOperationError", "VerificationError"]
