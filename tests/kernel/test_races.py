"""The race scenarios, seeded: --mfinject-seed N (or 'random') and --mfinject-race-iterations."""

import pytest

from mfinject.expectations.evaluate import judge
from mfinject.expectations.model import PASS
from mfinject.plugin import race_iterations, race_seed
from mfinject.scenarios import race_runner, races
from mfinject.scenarios.runner import NotMeaningful

pytestmark = pytest.mark.pmem


@pytest.mark.parametrize("race", races.RACES, ids=lambda r: r.name)
def test_race(race, dax_fs, clean_namespace, hwpoison, function_trace, mf_record, pytestconfig):
    seed, iterations = race_seed(pytestconfig), race_iterations(pytestconfig)
    print(f"{race.name} on {dax_fs.kind.name}: seed {seed}, {iterations} iterations")
    try:
        obs = race_runner.run(race, dax_fs, clean_namespace, seed, iterations, function_trace)
    except NotMeaningful as e:
        pytest.skip(f"not meaningful here: {e}")
    verdict = mf_record(obs, judge(obs))
    print(f"outcomes: {obs.fact('injection_outcomes')}; racer: {obs.fact('racer_outcomes')}")
    assert verdict.verdict == PASS, ("\n".join(verdict.messages)
                                     + f"\nseed {seed}; reproduce with {obs.fact('reproduce')}")
