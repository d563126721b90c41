"""One exception type for problems a user can fix; the CLI prints it as a single line."""


class UserError(Exception):
    """Bad input or configuration. The message names the problem and the fix."""
