"""Two CPU workers on 127.0.0.1 train the CNN under MultiWorkerMirroredStrategy and agree."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cifar10_transfer.models import build_cnn

ROOT = Path(__file__).resolve().parents[1]


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_finish_with_identical_weights(tmp_path):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    workers = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        command = [sys.executable, "-m", "cifar10_transfer", "train", "--profile", "smoke", "--data", "synthetic",
                   "--set", "models=cnn", "--set", "train_size=1000", "--set", "batch_size=64",
                   "--out", str(tmp_path / f"worker{index}")]
        workers.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True))
    for worker in workers:
        _, stderr = worker.communicate(timeout=600)
        assert worker.returncode == 0, stderr[-2000:]
    weights = []
    for index in range(2):
        model = build_cnn()
        model.load_weights(next((tmp_path / f"worker{index}").glob(".runs/*/stages/cnn/final.weights.h5")))
        weights.append([w.numpy() for w in model.weights])
        results = json.loads((tmp_path / f"worker{index}" / "results" / "results.json").read_text())
        assert results["models"]["cnn"]["epochs"] == 1
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(weights[0][0], build_cnn().weights[0].numpy())  # training changed them
