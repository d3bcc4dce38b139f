"""The command lines: `ringmq` (topic admin, console producer/consumer) and `ringmqd`
(options, --help, clear failures)."""
import subprocess
from pathlib import Path

from conftest import RINGMQD, ROOT

RINGMQ = ROOT / "target" / "release" / "ringmq"


def ringmq(broker, *args, input=None, check=True):
    r = subprocess.run([str(RINGMQ), "-b", broker.bootstrap, *args], input=input, capture_output=True,
                       text=True, timeout=60)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_topic_lifecycle(broker):
    assert "created topic t1" in ringmq(broker, "topic", "create", "t1", "-p", "4", "-c", "retention.ms=3600000").stdout
    assert "t1" in ringmq(broker, "topic", "list").stdout.split()
    d = ringmq(broker, "topic", "describe", "t1").stdout
    assert "PartitionCount: 4" in d and "retention.ms=3600000 (override)" in d
    ringmq(broker, "topic", "alter", "t1", "-c", "flush.messages=1", "-p", "6")
    d = ringmq(broker, "topic", "describe", "t1").stdout
    assert "PartitionCount: 6" in d
    assert "flush.messages=1 (override)" in d and "retention.ms=3600000 (override)" in d
    ringmq(broker, "topic", "delete", "t1")
    assert "t1" not in ringmq(broker, "topic", "list").stdout.split()
    r = ringmq(broker, "topic", "describe", "t1", check=False)
    assert r.returncode == 1 and "ringmq:" in r.stderr


def test_topic_errors_exit_nonzero_with_a_reason(broker):
    ringmq(broker, "topic", "create", "dup")
    r = ringmq(broker, "topic", "create", "dup", check=False)
    assert r.returncode == 1 and "already exists" in r.stderr.lower()
    r = ringmq(broker, "topic", "create", "x", "-c", "retention.ms=never", check=False)
    assert r.returncode == 1 and r.stderr.startswith("ringmq:")
    r = ringmq(broker, "topic", "alter", "dup", check=False)
    assert r.returncode == 1 and "nothing to alter" in r.stderr
    r = ringmq(broker, "topic", "create", check=False)
    assert r.returncode == 2  # usage


def test_console_producer_and_consumer(broker):
    ringmq(broker, "topic", "create", "console", "-p", "3")
    lines = "".join(f"key{i}:value {i}\n" for i in range(100))
    r = ringmq(broker, "produce", "console", "-K", ":", "-H", "app=test", "-H", "v=2", input=lines)
    assert "produced 100 messages" in r.stderr
    out = ringmq(broker, "consume", "console", "--from-beginning", "-n", "100", "--print-key", "--print-headers").stdout
    got = sorted(out.splitlines())
    assert got == sorted(f"key{i}\tvalue {i}\t[app=test,v=2]" for i in range(100))
    one = ringmq(broker, "consume", "console", "--from-beginning", "-p", "1", "--idle-timeout-ms", "1500").stdout
    assert 0 < len(one.splitlines()) < 100


def test_help_everywhere():
    for args in (["--help"], ["topic", "--help"], ["topic", "create", "--help"], ["produce", "--help"], ["consume", "--help"]):
        r = subprocess.run([str(RINGMQ), *args], capture_output=True, text=True)
        assert r.returncode == 0 and "Usage" in r.stdout
    r = subprocess.run([str(RINGMQD), "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for flag in ("--config", "--data-dir", "--listen", "--advertise", "--shards", "--cores", "--http"):
        assert flag in r.stdout


def test_ringmqd_refuses_bad_options_and_unusable_data_dirs(tmp_path):
    def run(*args):
        return subprocess.run([str(RINGMQD), *args], capture_output=True, text=True, timeout=20)
    r = run("--no-such-flag")
    assert r.returncode != 0
    r = run("--shards", "0", "--data-dir", str(tmp_path / "d"))
    assert r.returncode != 0 and "ringmq.shards" in r.stderr
    r = run("--cores", "0,999", "--data-dir", str(tmp_path / "d"))
    assert r.returncode != 0 and "core 999" in r.stderr
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    r = run("--data-dir", str(blocker / "sub"), "--listen", "127.0.0.1:0")
    assert r.returncode != 0 and "not usable" in r.stderr
    conf = tmp_path / "bad.properties"
    conf.write_text("num.partitons=3\n")
    r = run("--config", str(conf))
    assert r.returncode != 0 and "unknown configuration key num.partitons" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_port_in_use_is_a_clear_failure(broker, tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([str(RINGMQD), "--data-dir", str(tmp_path / "d2"), "--listen", f"127.0.0.1:{port}"],
                           capture_output=True, text=True, timeout=20)
    assert r.returncode != 0 and "cannot listen" in r.stderr


def test_a_second_ringmqd_on_a_used_log_dir_or_address_refuses_to_start(make_broker, tmp_path):
    """Kafka locks every log directory (`.lock`) and fails to bind a used address; a
    second ringmqd must do the same, and the first must keep serving untouched."""
    from conftest import free_port
    extra = tmp_path / "extra"
    # The fixture's --data-dir is the first log directory (it holds the metadata too).
    b = make_broker(properties={"log.dirs": f"{tmp_path / 'unused'},{extra}"}).start()
    ringmq(b, "topic", "create", "locked", "-p", "2")
    ringmq(b, "produce", "locked", "-p", "0", input="".join(f"m{i}\n" for i in range(20)))

    def second(*args):
        return subprocess.run([str(RINGMQD), *args], capture_output=True, text=True, timeout=20)

    # The same first log directory, on another port.
    r = second("--data-dir", str(b.dir), "--listen", f"127.0.0.1:{free_port()}")
    assert r.returncode != 0 and f"failed to acquire lock on file .lock in {b.dir}" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    # Only a later log directory is shared.
    conf = tmp_path / "second.properties"
    conf.write_text(f"log.dirs={tmp_path / 'own'},{extra}\n")
    r = second("--config", str(conf), "--listen", f"127.0.0.1:{free_port()}")
    assert r.returncode != 0 and f"lock on file .lock in {extra}" in r.stderr, r.stderr
    # Another data directory, the first one's address.
    r = second("--data-dir", str(tmp_path / "other"), "--listen", b.bootstrap)
    assert r.returncode != 0 and "cannot listen" in r.stderr and "in use" in r.stderr, r.stderr
    assert b.alive()
    out = ringmq(b, "consume", "locked", "-p", "0", "--from-beginning", "-n", "20").stdout
    assert out.splitlines() == [f"m{i}" for i in range(20)]


def test_sigterm_flushes_and_exits_cleanly(make_broker):
    b = make_broker().start()
    ringmq(b, "topic", "create", "clean", "-p", "2")
    ringmq(b, "produce", "clean", "-p", "1", input="".join(f"m{i}\n" for i in range(50)))
    b.proc.terminate()
    assert b.proc.wait(timeout=20) == 0
    assert "shutdown complete" in b.log_path.read_text()
    ckpt = (b.dir / "clean-1" / "recovery-point-offset-checkpoint").read_text()
    assert ckpt == "0\n1\nclean 1 50\n"  # flushed up to the log end: nothing to validate on start
    b.start()
    out = ringmq(b, "consume", "clean", "--from-beginning", "-n", "50").stdout
    assert out.splitlines() == [f"m{i}" for i in range(50)]
