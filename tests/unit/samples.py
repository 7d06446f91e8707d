"""Hand-built observations for the logic tests (values as a 6.1 guest reports them)."""

from mfinject.scenarios.observation import Observation, ParticipantObs, SigbusObs

VA_A = 0x7F77659C2000
VA_C = 0x7F1122330000


def participant(name, *, sigbus=(), mapped_after=False, vaddr=VA_A, injection=None, maps=True,
                poison_addr=None):
    return ParticipantObs(
        name=name, role=name, pid=100, maps=maps, policy="default", vaddr=vaddr if maps else None,
        pfn_before=0x101218 if maps else None, sigbus=tuple(sigbus), other_signals=(),
        exit="killed by SIGBUS" if sigbus else "alive", mapped_after=mapped_after if maps else None,
        pfn_after=None, injection=injection,
        poison_addr=(poison_addr if poison_addr is not None else vaddr) if maps else None,
        # an eight-page window at file offset 0, its page 0 poisoned (and alone unmapped)
        poison_index=0 if maps else None, range_pages=8 if maps else None,
        range_after=("1" if mapped_after else "0") + "1" * 7 if maps else None)


def observation(scenario, participants, *, kernel="6.1.0-56-amd64", path="generic", fs="xfs"):
    return Observation(
        scenario=scenario, title=scenario, injector="madvise", fs=fs, path=path, kernel=kernel,
        pfn=0x101218, participants=tuple(participants),
        dmesg=("Memory failure: 0x101218: recovery action for dax page: Recovered",),
        hardware_corrupted_delta_kb=4, badblocks=(), duration_s=0.5,
        path_observed="notify_failure" if path == "notify_failure" else "generic")


def ar(addr=VA_A, lsb=12):
    return SigbusObs("BUS_MCEERR_AR", addr, lsb, 12.0)


def ao(addr=VA_C, lsb=12):
    return SigbusObs("BUS_MCEERR_AO", addr, lsb, 14.0)
