"""One exception family, so the CLI can print a clear message instead of a traceback."""

from tasks.messages import MAX_MESSAGE_CHARS, shorten


class FoldflowError(Exception):
    """Base of every error foldflow raises on purpose; its message is meant for the user.

    Messages quote what the user gave (keys, values, file names); however large that was, the
    message stays at most MAX_MESSAGE_CHARS long, keeping its start and its end.
    """

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(shorten(str(message), MAX_MESSAGE_CHARS), *args)


class ConfigError(FoldflowError, ValueError):
    """A parameter, grid or spec is invalid (names the key and the value received)."""


class DataError(FoldflowError, ValueError):
    """The dataset is malformed (names the file, row, column and value)."""


class DownloadError(FoldflowError):
    """The dataset could not be fetched or did not match its checksum."""
