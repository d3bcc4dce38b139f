"""A panic in any broker task is a bug: it is logged at ERROR through tracing, counted in
/metrics, and fails every end-to-end test whose broker printed it (conftest)."""
import os
import time
import urllib.request

from conftest import Broker, PANIC_LINE


def test_a_panicking_task_is_logged_counted_and_fails_the_test(tmp_path, monkeypatch):
    # Fault injection is the only way to make a real broker panic on demand; it is off
    # unless RINGMQ_TEST_FAULTS is set.
    monkeypatch.setenv("RINGMQ_TEST_FAULTS", "1")
    b = Broker(tmp_path).start()
    try:
        assert b.metrics()["ringmq_panics_total"] == 0
        urllib.request.urlopen(f"http://127.0.0.1:{b.http_port}/debug/panic", timeout=5).read()
        deadline = time.time() + 5
        while time.time() < deadline and b.metrics()["ringmq_panics_total"] < 1:
            time.sleep(0.05)
        assert b.metrics()["ringmq_panics_total"] == 1
        assert b.alive(), "a panicking task does not take the broker down"
        # Even a test that declares ERROR lines expected still fails on a panic.
        b.expected_log.append(r"ERROR")
        bad = b.unexpected_log_lines()
        assert any(PANIC_LINE.search(line) and "ERROR" in line for line in bad), bad
    finally:
        b.stop()


def test_fault_injection_is_off_by_default(broker):
    assert "RINGMQ_TEST_FAULTS" not in os.environ
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{broker.http_port}/debug/panic", timeout=5)
        raise AssertionError("the endpoint answered")
    except urllib.error.HTTPError as e:
        assert e.code == 404
    assert broker.metrics()["ringmq_panics_total"] == 0
