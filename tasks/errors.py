"""One exception family, so the CLI can print a clear message instead of a traceback."""


class FoldflowError(Exception):
    """Base of every error foldflow raises on purpose; its message is meant for the user."""


class ConfigError(FoldflowError, ValueError):
    """A parameter, grid or spec is invalid (names the key and the value received)."""


class DataError(FoldflowError, ValueError):
    """The dataset is malformed (names the file, row, column and value)."""


class DownloadError(FoldflowError):
    """The dataset could not be fetched or did not match its checksum."""
