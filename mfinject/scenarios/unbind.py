"""Unbinding the namespace under a mounted filesystem.

- unbind-mounted: M (default policy) maps and faults a page of a file;
  I unbinds the pmem device (pfnX.Y) from its driver while it is mounted.
  From v6.8 the pmem driver first sends MF_MEM_PRE_REMOVE to the holder,
  and XFS with rmapbt revokes every DAX mapping, signalling every mapper
  whatever its kill policy. Elsewhere nothing tells the filesystem or the
  mappers, so the scenario is not run there. The unbind does not go through
  memory_failure(): mf_dax_kill_procs() logs only the SIGBUS it sends, no
  recovery action.
"""

from mfinject.fs import NOTIFY_FAILURE
from mfinject.observers.mflog import SIGBUS_SENT
from mfinject.scenarios import Inject, Map, Proc, Scenario

UNBIND_MOUNTED = Scenario(
    "unbind-mounted", "the pmem device is unbound under a mounted XFS with a mapped file",
    "unbind",
    (Proc("I"), Proc("M")), (Map("M"), Inject("I")), whole_device=True,
    only_path=NOTIFY_FAILURE, since=(6, 8),
    why_limited=("unbinding a mounted fsdax namespace is handled from v6.8 (commit "
                 "fa422b353d21, MF_MEM_PRE_REMOVE) and only for a holder that implements "
                 "->notify_failure (XFS with rmapbt); not run here"),
    kernel_messages=(SIGBUS_SENT,),
)

SCENARIOS = (UNBIND_MOUNTED,)
