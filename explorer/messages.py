"""How the explorer words what it refuses: a user's value shown short, and the networks a model
set lacks with the command that trains them."""
from __future__ import annotations

from pathlib import Path

from core.api import GenReID


class MissingPart(ValueError):
    """The model set lacks a network a panel needs."""


def shown(value, limit: int = 40) -> str:
    """repr of a user's value, cut short: a message must stay readable whatever was sent."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def missing(model: GenReID, *parts: str) -> str | None:
    """A message naming the networks the model set lacks among parts, or None."""
    lacking = [p for p in parts if not model.has(p)]
    if not lacking:
        return None
    folder = Path(model.folder)
    commands = "; ".join(f"`genreid train {p} --checkpoint {folder}`" for p in lacking)
    return (f"This panel needs the {' and '.join(lacking)} network{'s' if len(lacking) > 1 else ''}, "
            f"which the model set {folder} does not have yet. Train "
            f"{'them' if len(lacking) > 1 else 'it'} with {commands}, then restart the explorer.")


def require(model: GenReID, *parts: str) -> None:
    """Raise MissingPart (with `missing`'s message) unless the model set has every part."""
    message = missing(model, *parts)
    if message:
        raise MissingPart(message)
