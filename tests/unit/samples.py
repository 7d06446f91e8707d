"""Hand-built observations for the logic tests (values as a 6.1 guest reports them)."""

from mfinject.scenarios.runner import Observation, ParticipantObs, SigbusObs

VA_A = 0x7F77659C2000
VA_C = 0x7F1122330000


def participant(name, *, sigbus=(), mapped_after=False, vaddr=VA_A, injection=None, maps=True):
    return ParticipantObs(
        name=name, role=name, pid=100, maps=maps, policy="default", vaddr=vaddr if maps else None,
        pfn_before=0x101218 if maps else None, sigbus=tuple(sigbus), other_signals=(),
        exit="killed by SIGBUS" if sigbus else "alive", mapped_after=mapped_after if maps else None,
        pfn_after=None, injection=injection)


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
