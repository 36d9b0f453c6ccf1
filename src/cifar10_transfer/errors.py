"""The one exception type that the command line turns into a one-line message and exit code 2."""


class UserError(Exception):
    """A problem the user can fix: bad input, missing data, a wrong setting.

    The message is one line that says what is wrong and what to do.
    """
