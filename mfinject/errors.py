"""The root of the suite's exceptions; each area subclasses it once."""


class MfinjectError(Exception):
    """A condition the suite cannot work around. The message names the fix."""
