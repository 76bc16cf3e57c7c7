"""One exception type for mistakes a user can fix; the CLI prints its message as one line."""


class UserError(ValueError):
    """Bad input: the message says what was wrong and how to fix it."""
