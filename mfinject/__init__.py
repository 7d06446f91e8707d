"""mfinject: memory-failure injection tests for Linux fsdax."""

__version__ = "0.1.0"
