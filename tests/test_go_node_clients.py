"""Go (franz-go, sarama, segmentio/kafka-go: tests/go) and Node.js (kafkajs: tests/node)
clients against a real ringmqd: each creates a topic with its admin API, produces,
consumes in a group, commits and reads the committed offsets back. Modules and packages
are fetched by the test itself (the Go module proxy, npm)."""
import os
import shutil
import subprocess

import pytest

from conftest import ROOT


def run_checks(cmd, cwd, env=None, timeout=600):
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})})
    results = [l for l in p.stdout.splitlines() if l.startswith(("PASS", "FAIL"))]
    assert p.returncode == 0 and results and all(r.startswith("PASS") for r in results), \
        p.stdout[-4000:] + p.stderr[-4000:]
    return results


def test_go_clients(broker, tmp_path):
    if not shutil.which("go"):
        pytest.fail("Go is required (the machine's toolchain)")
    binary = tmp_path / "gotests"
    subprocess.run(["go", "build", "-o", str(binary), "."], cwd=ROOT / "tests" / "go", check=True,
                   timeout=600, env={**os.environ, "GOFLAGS": "-mod=mod"})
    results = run_checks([str(binary), broker.bootstrap], cwd=tmp_path)
    assert {r.split()[1] for r in results} == {"franz-go", "sarama", "kafka-go"}, results


def test_kafkajs(broker):
    if not shutil.which("npm"):
        pytest.fail("Node.js and npm are required (the machine's toolchain)")
    node = ROOT / "tests" / "node"
    if not (node / "node_modules" / "kafkajs").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=node, check=True, timeout=600)
    run_checks(["node", "kafkajs.js", broker.bootstrap], cwd=node, env={"KAFKAJS_NO_PARTITIONER_WARNING": "1"})
