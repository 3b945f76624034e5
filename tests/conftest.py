import os

import torch
from hypothesis import HealthCheck, settings

# "ci" runs >= 100 examples per law; "dev" is a quicker local loop.
settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev",
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("GEODYN_HYPOTHESIS_PROFILE", "ci"))


# Tests run on small tensors, where one thread per process is fastest; `make test` runs two
# processes (pytest-xdist) on the two cores.
torch.set_num_threads(1)


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ANN001, ARG001
    """Print the fault sweep's figures: its user properties, summed over tests."""
    keys = ("fault_examples", "faults_injected", "nan_committed", "silent_violations")
    totals, tests = dict.fromkeys(keys, 0), 0
    for outcome in ("passed", "failed"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", None) != "call":
                continue
            props = dict(getattr(report, "user_properties", ()))
            if "fault_examples" in props:
                tests += 1
                for key in keys:
                    totals[key] += int(props.get(key, 0))
    if tests:
        terminalreporter.write_line(
            f"fault sweep: {totals['fault_examples']} examples in {tests} tests, "
            f"{totals['faults_injected']} faults injected, {totals['nan_committed']} NaN "
            f"committed, {totals['silent_violations']} silent violations"
        )
