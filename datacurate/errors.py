"""Errors that mean "bad input": the CLI prints them as one clear line, no traceback."""


class UserError(ValueError):
    """Bad input from the user; the message names the file, row or field."""
