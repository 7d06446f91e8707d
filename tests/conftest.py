"""The unit tests drive pytest in-process (pytester).

pytest accepts ``pytest_plugins`` only in a top-level conftest: declared in
tests/unit/conftest.py it broke a bare ``pytest`` in the checkout root
("Defining 'pytest_plugins' in a non-top-level conftest is no longer supported").
"""

pytest_plugins = ["pytester"]
