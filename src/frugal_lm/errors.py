"""The one exception type for user mistakes.

Anything a user can get wrong (a config key, a file, a field) raises `FrugalError` with a
one-line message that names the culprit. The CLI prints it and exits non-zero; programming
errors stay ordinary exceptions with tracebacks.
"""


class FrugalError(Exception):
    """A user-facing error: its message is printed as one line, with exit code `exit_code`."""

    exit_code = 2
