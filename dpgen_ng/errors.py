"""The one exception type for user mistakes (bad input, bad state on disk)."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix. The CLI prints it on one line and exits 2.

    ``what`` says what is wrong, ``where`` names the key path or file, ``expected``
    says what would have been accepted.
    """

    def __init__(self, what: str, where: str = "", expected: str = "") -> None:
        self.what = what
        self.where = where
        self.expected = expected
        super().__init__(self.line())

    def in_file(self, name: str) -> UserError:
        """The same error, its location prefixed with the file it came from."""
        return UserError(self.what, f"{name}: {self.where}" if self.where else name, self.expected)

    def line(self) -> str:
        text = self.what
        if self.where:
            text += f" at {self.where}"
        if self.expected:
            text += f": {self.expected}"
        return text


class StageError(Exception):
    """A stage could not complete (e.g. too many failed tasks); the run stops, state is kept."""
