"""Errors that a user can cause and fix, as opposed to bugs.

The CLI prints a `UserError` as one sentence and exits with status 2; the API turns it into a
4xx response; a notebook shows it as one line. Anything else that escapes is a bug and keeps its
traceback.
"""


class UserError(Exception):
    """A mistake in what the user asked for: a bad path, a malformed file, a missing token."""

    def _render_traceback_(self) -> list[str]:
        """What IPython shows for it in a notebook: its one sentence, no traceback."""
        return [f"{type(self).__name__}: {self}"]


class CollectionError(UserError):
    """Collecting tweets failed for a reason outside our code (download, API, file contents)."""
