"""Test configuration: hypothesis profiles (the machines are shared and noisy, so no deadlines)."""
import os

from hypothesis import HealthCheck, settings

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", deadline=None, max_examples=1000,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("MPCNP_HYPOTHESIS_PROFILE", "default"))
