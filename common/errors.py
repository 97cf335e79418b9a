"""The two failures every CLI reports as one line instead of a traceback; messages name the thing and say what to do."""
from __future__ import annotations


class InputError(ValueError):
    """Bad input from the user (a missing or malformed file, an unknown key, an unsupported URL): exit code 2."""


class RunFailed(RuntimeError):
    """The run itself failed although its inputs were valid (a start page that answers 500): exit code 1."""
