"""Errors a user can fix: the CLI prints them without a traceback."""


class UserError(Exception):
    """Something the user can correct; the message names the field or file and the fix."""
