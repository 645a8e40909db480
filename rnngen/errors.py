"""The errors a user can cause. The CLI prints them as one `Error:` line and exits 2."""


class UserError(Exception):
    """A problem the user can fix: bad input, config, options or files (exit code 2)."""

    exit_code = 2


class ConfigError(UserError):
    """The config file, a --set value or a flag is wrong."""


class DataError(UserError):
    """Input text is missing, empty, binary, undecodable or too short."""


class CheckpointError(UserError):
    """A checkpoint or run directory is missing, corrupt, unsafe or of an unknown format."""


class TrainingFailed(Exception):
    """Training cannot go on (e.g. the loss keeps diverging); a runtime failure, exit code 1."""

    exit_code = 1


class WriteError(Exception):
    """A file could not be written (disk full, read-only directory, I/O error).

    The previous version of the file is left untouched. A permission problem is the
    user's to fix (exit 2); anything else is a runtime failure (exit 1).
    """

    def __init__(self, message: str, user_fixable: bool):
        super().__init__(message)
        self.exit_code = 2 if user_fixable else 1
