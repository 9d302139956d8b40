"""Long fault test (make test-faults): 50 SIGTERMs under load (tests/e2e/test_faults.py's run_sigterm_trials)."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "e2e"))
from qodlib import *  # noqa: E402,F401,F403
import test_faults as tf  # noqa: E402


def test_sigterm_50_times_under_load():
    tf.run_sigterm_trials(trials=50)


run(globals(), per_test_timeout=1800)
