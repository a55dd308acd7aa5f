"""A pytest plugin for `make valgrind`: the ``valgrind`` Hypothesis profile.

Under memcheck every draw is 20-50x slower, so Hypothesis's too-slow health check
fails property tests that are fine (test_codec's round trips did); the profile
keeps every example and check but drops the health checks and deadlines that
measure speed. Loaded with ``-p hypothesis_valgrind --hypothesis-profile=valgrind``.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "valgrind",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
