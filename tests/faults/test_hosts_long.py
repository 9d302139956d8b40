"""Long fault test (make test-faults): callbacks to thousands of distinct receivers.

The delivery keeps a record per receiver (scheme, host and port) for its per-host limits. Those records were kept
for the daemon's lifetime, so an app giving each session a receiver of its own (a subdomain per session, say) grew
qodd's memory with every session (docs/reliability.md, defect 10). Past 4,096, the receivers no pending callback uses
are now forgotten every 10 s; `qod_delivery_hosts` counts them.
"""
import os
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "e2e"))
from qodlib import *  # noqa: E402,F401,F403

SWEEP_AT, N = 4096, 6000  # HOSTS_SWEEP_AT in src/notify/delivery.c


def receiver(i):
    """A distinct loopback address per session, on the discard port where nothing listens: refused at once."""
    return "http://127.1.%d.%d:9/cb" % (i // 250, i % 250 + 1)


def create_v0(d, tok, url):
    """A v0 session calling back to url; returns its id."""
    return expect_status(d.request("POST", "/camara/qod/v0/sessions", token=tok, body={
        "device": {"phoneNumber": new_phone()}, "qosProfile": "QOS_L", "duration": 3600,
        "webhook": {"notificationUrl": url}}), 201).json()["sessionId"]


def test_receivers_no_callback_uses_are_forgotten():
    if VALGRIND:
        skip("6,000 sessions take too long under valgrind")
    # One attempt per event: each refused callback is dead at once, and its receiver is then unused.
    d = Daemon(args=["--sandbox-delay-ms", "0", "--retry-schedule", "0"])
    with d:
        app = create_app(d, name="hosts", extra=("--rate-limit", "0", "--max-sessions", "0"))
        tok = get_token(d, app)
        dead, known = 0, []
        for rnd in range(2):
            # Each round gives N sessions a receiver of their own; with the records kept, the second round would
            # leave 2 * N of them.
            errors = []

            def create(part, base=rnd * N):
                try:
                    for i in range(base + part, base + N, 4):
                        create_v0(d, tok, receiver(i))
                except BaseException as e:  # noqa: BLE001 - reported by the main thread
                    errors.append(e)
            threads = [threading.Thread(target=create, args=(k,)) for k in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not errors, errors[0]
            dead += N
            seen = {}

            def all_dead():
                seen.update(metrics(d))
                return seen.get("qod_delivery_dead_total") == dead
            wait_until(all_dead, timeout=60, interval=0.2, what=lambda: "every callback dead (dead %r of %d)" % (
                seen.get("qod_delivery_dead_total"), dead))
            # A sweep comes at most 10 s after the one before, on the delivery's next tick.
            wait_until(lambda: metrics(d).get("qod_delivery_hosts", 2 * N) <= SWEEP_AT, timeout=30, interval=0.2,
                       what=lambda: "the unused receivers forgotten (%r known)" % metrics(d).get("qod_delivery_hosts"))
            known.append(metrics(d).get("qod_delivery_hosts"))
        print("RECEIVERS %d distinct in two rounds: %r known after each" % (2 * N, known))
        # Delivery still works: a new session's callback reaches a real receiver.
        with WebhookReceiver() as rx:
            sid = create_v0(d, tok, rx.url())
            hooks = rx.wait_for(1, timeout=10)
            assert hooks[0].json()["sessionId"] == sid, hooks[0]


run(globals(), per_test_timeout=1800)
