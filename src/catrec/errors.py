"""Exceptions for bad user input. The CLI turns every ``CatrecError`` into exit status 2."""


class CatrecError(Exception):
    """Base class for errors caused by user input (files, options, run folders)."""


class DataError(CatrecError):
    """A dataset file is malformed, empty or cannot be split; the message names file and line."""


class ConfigError(CatrecError):
    """A configuration key is unknown, mistyped or out of range; the message names the key."""


class RunError(CatrecError):
    """A run folder or checkpoint is missing, incomplete or incompatible."""
