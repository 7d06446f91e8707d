"""The scenarios as pytest tests; they need pmem (the VM or a designated namespace).

Installed as ``mfinject.suite``, so ``mfinject vm`` finds them outside a checkout.
"""
