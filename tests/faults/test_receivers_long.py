"""Long fault test (make test-faults): callback receivers that answer 500 (and hang, reset, crawl) for three minutes
while another app's callbacks flow; memory must stay bounded. Scenario: tests/e2e/test_faults.py's
run_bad_receivers; figures (BADRECV line) in docs/reliability.md.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "e2e"))
from qodlib import *  # noqa: E402,F401,F403
import test_faults as tf  # noqa: E402


def test_receivers_fail_for_three_minutes_while_another_app_flows():
    tf.run_bad_receivers(storm_s=180, schedule="0,1,2,4,8,16", shares=(0.01, 0.09, 0.2, 0.7))


run(globals(), per_test_timeout=1800)
