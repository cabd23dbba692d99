"""Exception types of the domain layer."""


class ConfigError(Exception):
    """A setting or tenant definition is missing or malformed.

    The message names the setting (and tenant) so start-up can stop with one readable line.
    It never contains the value of a secret setting.
    """
