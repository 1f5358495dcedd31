"""What did not fit, collected over a whole checkpoint and said in one message."""

import dataclasses

SHOWN = 5  # offending keys named per kind of error; the count says how many more there are

Shape = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class ConversionReport:
    """Keys that do not fit ``arch``: ``missing`` (key, expected shape), ``unexpected`` (key, shape), ``mismatched``
    (key, found shape, expected shape). Keys are the source's (torch, Keras) for checkpoints, JAX paths for
    variables. ``reference`` names the source architecture ("torchvision resnet50"); ``classes`` is
    ``(found, expected)`` when the classifier is all that differs.
    """

    arch: str
    missing: tuple[tuple[str, Shape], ...] = ()
    unexpected: tuple[tuple[str, Shape], ...] = ()
    mismatched: tuple[tuple[str, Shape, Shape], ...] = ()
    subject: str = "the checkpoint"
    plural: bool = False  # "the variables do not fit", "the checkpoint does not fit"
    reference: str = ""
    classes: tuple[int, int] | None = None

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        if not self:
            return f"{self.subject} {'fit' if self.plural else 'fits'} {self.arch} exactly"
        reference = f" ({self.reference})" if self.reference else ""
        lines = [f"{self.subject} {'do' if self.plural else 'does'} not fit fusionjax {self.arch!r}{reference}:"]

        def section(items, title, describe):
            if items:
                shown = "; ".join(describe(*item) for item in items[:SHOWN])
                more = f"; and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
                lines.append(f"  {len(items)} {title}: {shown}{more}")

        section(self.missing, f"missing key(s) that {self.arch} needs", lambda k, s: f"{k} {s}")
        section(self.unexpected, f"unexpected key(s) that {self.arch} does not have", lambda k, s: f"{k} {s}")
        section(self.mismatched, "key(s) with the wrong shape",
                lambda k, got, want: f"{k}: {self.subject.split()[-1]} {got}, {self.arch} expects {want}")
        if self.classes:
            lines.append(f"  Only the classifier differs: {self.classes[0]} classes in {self.subject}, "
                         f"{self.classes[1]} in the model.")
        elif self.missing and (self.unexpected or self.mismatched):
            lines.append("  Keys both missing and unexpected or misshapen usually mean weights of another "
                         "architecture.")
        return "\n".join(lines)
