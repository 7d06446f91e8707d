"""Observers: what the suite reads back from the kernel after an injection.

- pagemap: mapping state of one virtual page (present bit, PFN);
- tracer: SIGBUS delivery seen from outside the victim through ptrace;
- kmsg: the kernel log lines a scenario produced.
"""
