"""One exception type for problems the user can fix.

The CLI prints a `ScratchLMError` as a single line (no traceback unless
`--debug`) and exits non-zero; anything else is a bug and keeps its traceback.
"""


class ScratchLMError(Exception):
    """A clear, user-facing error: bad input, bad config, bad checkpoint."""
