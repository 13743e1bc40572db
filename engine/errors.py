"""The one error type users see: a one-line message, no traceback."""


class PulseError(Exception):
    """A user-facing error: bad input, bad option, missing artefact. The CLI prints its message
    on one line and exits non-zero; the Python API lets it propagate."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line
