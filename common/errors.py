"""The two kinds of failure every CLI reports in one line instead of a traceback.

- `InputError`: the user's input is wrong (a missing or malformed file, an unknown key, an unsupported URL, an
  unreadable checkpoint). CLIs exit with code 2. It is a `ValueError`, so library callers can catch either.
- `RunFailed`: the inputs were fine but the work failed (a start page that answers 500, a host that is down).
  CLIs exit with code 1.
Messages name the thing and say what to do, on one line.
"""
from __future__ import annotations


class InputError(ValueError):
    """Bad input from the user: exit code 2 at the command line."""


class RunFailed(RuntimeError):
    """The run itself failed although its inputs were valid: exit code 1 at the command line."""
