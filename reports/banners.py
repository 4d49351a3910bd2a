"""Warnings at the top of both pages (the dataset report and the one-image walkthrough), written once.

A banner is a list of (text, code) parts: `code` marks a value from the data (a file, a weights id) that the
templates show as code. Every part is escaped where it lands (autoescape), never joined into markup here.
"""

from __future__ import annotations

Parts = list[tuple[str, bool]]


def make_unverified_weights(path: str | None, weights_id: str) -> Parts:
    """The weights file's sha256 does not start with the prefix its torchvision name promises."""
    return [
        ("Unverified weights: the sha256 of ", False),
        (path or "the weights file", True),
        (" does not match torchvision's ", False),
        (weights_id, True),
        (
            ". The file is not the weights its name says: every prediction, ranking and picture here comes from "
            "whatever it holds. Delete it to download torchvision's again, or pass the file as --weights.",
            False,
        ),
    ]


def join(parts: Parts) -> str:
    """The banner as plain text (the log, tests)."""
    return "".join(text for text, _ in parts)
