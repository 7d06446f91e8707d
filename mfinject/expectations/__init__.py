"""What the kernel should do, as data with sources, and the verdicts it gives."""
