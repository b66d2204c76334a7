"""Errors that carry a message meant for the user, not a traceback."""


class UsageError(Exception):
    """Bad input from the user: an option, a file or a registry entry.

    The message names what is wrong (file, row, column, option or entry) and
    says what was expected, so the plugin can print it once and stop.
    """


class DatasetError(UsageError):
    """A dataset CSV that cannot be used as given."""


class RegistryError(UsageError):
    """A candidate registry entry with a missing or wrong field."""


class BenchmarkError(Exception):
    """A benchmark that cannot run or finish for a reason one line says (weights torch will not unpickle, a
    full disk): it is recorded as failed and fails with that line, not a traceback; the run goes on."""
