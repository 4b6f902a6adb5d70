"""Errors of the conversion runtime.

`ConversionError` is a refusal a user can fix (bad checkpoint, wrong digest, unsupported
architecture or task, accuracy gate): its message names what is wrong and what to do.
`GateRefused` carries the refusal manifest (`accepted=false`) so the CLI can print it and
write it to `--manifest-out` although no artifact is published.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lmo_runtime.manifest import Manifest


class ConversionError(Exception):
    """The checkpoint or request cannot be converted; the message names the field and the fix."""

    def __init__(self, message: str, manifest: "Manifest | None" = None):
        super().__init__(message)
        self.manifest = manifest


class GateRefused(ConversionError):
    """Every precision tried scored below the accuracy gate; `manifest.accepted` is False."""
