"""Every scenario the suite runs, in report order."""

from mfinject.scenarios import access, first

SCENARIOS = first.SCENARIOS + access.SCENARIOS
BY_NAME = {s.name: s for s in SCENARIOS}
