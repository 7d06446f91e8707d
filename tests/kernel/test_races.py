"""The race scenarios, seeded: --mfinject-seed N (or 'random') and --mfinject-race-iterations."""

import pytest

from mfinject.expectations.evaluate import judge
from mfinject.expectations.model import PASS
from mfinject.scenarios import race_runner, races
from mfinject.scenarios.runner import NotMeaningful

pytestmark = pytest.mark.pmem


@pytest.mark.parametrize("race", races.RACES, ids=lambda r: r.name)
def test_race(race, mf_dax_fs, mf_namespace, mf_hwpoison, mf_function_trace, mf_record,
              mf_settings):
    seed, iterations = mf_settings.race_seed, mf_settings.race_iterations
    print(f"{race.name} on {mf_dax_fs.kind.name}: seed {seed}, {iterations} iterations")
    try:
        obs = race_runner.run(race, mf_dax_fs, mf_namespace, seed, iterations,
                              mf_function_trace)
    except NotMeaningful as e:
        pytest.skip(f"not meaningful here: {e}")
    verdict = mf_record(obs, judge(obs))
    print(f"outcomes: {obs.fact('injection_outcomes')}; racer: {obs.fact('racer_outcomes')}")
    assert verdict.verdict == PASS, ("\n".join(verdict.messages)
                                     + f"\nseed {seed}; reproduce with {obs.fact('reproduce')}")
