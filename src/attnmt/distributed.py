"""The processes that train together: one by default, several under torchrun.

Training asks the ``World`` three things: whether this process is the main one
(only it writes files and logs), whether any process raised a flag (interrupt,
time budget; all processes then stop at the same step), and the main process's
value of something only it computed (validation scores).
"""

from __future__ import annotations

from typing import Any


class World:
    """A single training process: rank 0 of 1."""

    rank = 0
    size = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def any(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag, True if it is True in any process."""
        return flags

    def from_main(self, value: Any) -> Any:
        """The main process's ``value``, in every process."""
        return value
