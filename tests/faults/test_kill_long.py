"""Long fault test (make test-faults): 100 SIGKILLs under heavier mixed load (4 client threads, rounds of 0 to 2.5 s,
so some kills hit a daemon that is still recovering). The scenario is tests/e2e/test_faults.py's run_kill_rounds;
it prints the TOTALS line quoted in docs/reliability.md.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "e2e"))
from qodlib import *  # noqa: E402,F401,F403
import test_faults as tf  # noqa: E402


def test_sigkill_100_rounds_under_heavier_load():
    tf.run_kill_rounds(rounds=100, round_s=(0.0, 2.5), threads=4, pace=0.004, get_sample=200)


run(globals(), per_test_timeout=1800)
