"""Shared fixtures live in tests/support/; each module there is one kind of real part."""

pytest_plugins = [
    "tests.support.servers",
    "tests.support.app",
    "tests.support.broker_proc",
    "tests.support.webrtc",
]
