"""Shared test configuration: hypothesis profiles chosen by the environment, and Ctrl-C
delivery to the commands the tests start."""

from __future__ import annotations

import os
import signal

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

# A shell without job control starts background commands (`pytest ... &` in a script or
# CI step) with SIGINT ignored, and the commands the tests start would inherit that: a
# Python child keeps an ignored SIGINT, so the tests' Ctrl-C would never reach it. Give
# this process Python's usual handler, so its children start with the default again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# The PostgreSQL fixtures (postgres_dsn, pg_database) and the postgres marker.
pytest_plugins = ["pg_conftest_plugin"]
