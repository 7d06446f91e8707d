"""Every scenario the suite runs, in report order."""

from mfinject.scenarios import (
    access,
    badblocks,
    fileio,
    first,
    locking,
    pinned,
    pmd,
    policy,
    shared,
    threads,
    unbind,
)

SCENARIOS = (first.SCENARIOS + access.SCENARIOS + policy.SCENARIOS + locking.SCENARIOS
             + pmd.SCENARIOS + badblocks.SCENARIOS + threads.SCENARIOS + fileio.SCENARIOS
             + shared.SCENARIOS + pinned.SCENARIOS)

# played by their own tests (they provoke filesystem shutdown messages on purpose)
SEPARATE = unbind.SCENARIOS
ALL = SCENARIOS + SEPARATE
