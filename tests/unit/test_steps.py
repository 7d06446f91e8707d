"""Scenarios as timelines of steps, and where the player puts the poisoned page."""

import pytest

from mfinject.expectations.evaluate import describe_window
from mfinject.scenarios import EARLY, Inject, Map, Proc, Scenario, Unmap, catalogue
from mfinject.scenarios.runner import FIRST, PTE_WINDOW_PAGES, choose_layout
from mfinject.scenarios.steps import CLONE, Clone, Probe


def _sc(*steps, pmd=False, procs=(Proc("I"), Proc("B"), Proc("C", policy=EARLY))):
    return Scenario("t", "t", "corrupt-pfn", procs, steps, pmd=pmd)


@pytest.mark.parametrize("seed", range(50))
def test_seeded_layout_never_poisons_page_zero_nor_maps_at_offset_zero(seed):
    for sc in catalogue.ALL:
        lay = choose_layout(sc, seed, "xfs")
        if sc.whole_device:  # unbind names no page: the window's first is observed
            assert (lay.offset_page, lay.index) == (0, 0)
            continue
        # neither the first page of the window nor (PTE) its last
        assert 0 < lay.index < lay.pages - 1
        if sc.pmd:
            # the middle half of the PMD, never its first or last page
            assert lay.offset_page == 0 and lay.pages == 512 and 128 <= lay.index < 384
        else:
            assert lay.offset_page >= 1 and lay.pages == PTE_WINDOW_PAGES


def test_layout_is_reproducible_from_the_seed_and_differs_between_seeds():
    sc = catalogue.ALL[0]
    assert choose_layout(sc, 7, "ext4") == choose_layout(sc, 7, "ext4")
    assert len({choose_layout(sc, s, "ext4") for s in range(20)}) > 5


def test_first_layout_is_page_zero_at_offset_zero():
    lay = choose_layout(catalogue.ALL[0], 7, "ext4", FIRST)
    assert (lay.offset_page, lay.index, lay.file_page) == (0, 0, 0)


def test_mappers_are_those_mapped_and_not_unmapped_when_the_poison_arrives():
    sc = _sc(Map("B"), Map("C"), Unmap("B"), Inject("I"), Probe())
    assert sc.mappers() == ("C",)
    assert sc.maps("B") and not sc.maps("I")
    assert "unmaps it before the injection" in sc.describe("B")
    assert sc.describe("I") == "I (injects; default kill)"


def test_a_clone_step_makes_the_scenario_need_reflink():
    assert _sc(Clone(), Map("B", file=CLONE), Inject("I")).needs_reflink
    assert not _sc(Map("B"), Inject("I")).needs_reflink


def test_every_catalogue_scenario_injects_and_names_only_its_participants():
    for sc in catalogue.ALL:
        names = {p.name for p in sc.procs}
        assert sc.injection.who in names, sc.name
        for s in sc.steps:
            assert getattr(s, "who", sc.injection.who) in names, (sc.name, s)


@pytest.mark.parametrize(("bits", "index", "text"), [
    ("11101111", 3, "only the poisoned page unmapped"),
    ("00000000", 3, "all unmapped"),
    ("11111111", 3, "all mapped"),
    ("11011111", 3, "unmapped: pages 2 of 8 (poisoned: 3)"),
    ("01101111", 3, "unmapped: pages 0, 3 of 8 (poisoned: 3)"),
    (None, 3, "unknown"),
])
def test_window_names_exactly_which_pages_went(bits, index, text):
    assert describe_window(bits, index) == text


def test_the_option_offers_the_layouts_the_player_knows():
    from mfinject import options
    from mfinject.scenarios import runner
    assert options.LAYOUTS == runner.LAYOUTS
