"""Every scenario the suite runs, in report order."""

from mfinject.scenarios import access, badblocks, first, locking, pmd, policy

SCENARIOS = (first.SCENARIOS + access.SCENARIOS + policy.SCENARIOS + locking.SCENARIOS
             + pmd.SCENARIOS + badblocks.SCENARIOS)
