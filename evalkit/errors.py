"""Errors evalkit reports to the user as a message, without a traceback."""


class EvalkitError(Exception):
    """A problem with the user's input or environment; ``str(err)`` says what and how to fix it."""
