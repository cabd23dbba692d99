"""Exception types of the domain layer."""


class ConfigError(Exception):
    """A setting or tenant definition is missing or malformed.

    The message names the setting (and tenant) so start-up can stop with one readable line.
    It never contains the value of a secret setting.
    """


def reject_unknown_keys(doc: dict, allowed: set[str] | frozenset[str], where: str, prefix: str = "") -> None:
    """A misspelt field in a configuration block is an error naming it, never silently ignored."""
    unknown = sorted(str(k) for k in set(doc) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(prefix + k for k in unknown)}")
