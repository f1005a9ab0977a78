"""attnmt: attention encoder-decoder neural machine translation you can see and check."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from attnmt.translator import Translator

__all__ = ["Translator"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Import the Translator (and torch) only when it is used: ``attnmt --help`` stays fast."""
    if name == "Translator":
        from attnmt.translator import Translator

        return Translator
    raise AttributeError(f"module 'attnmt' has no attribute {name!r}")
