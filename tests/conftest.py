"""Shared fixtures: the real servers the tests talk to live in tests/fixtures/."""

pytest_plugins = [
    "tests.fixtures.smtp",
    "tests.fixtures.dovecot",
    "tests.fixtures.tokens",
    "tests.fixtures.deb",
    "tests.fixtures.postfix",
]
