"""pytest fixtures for the Python SDK tests: a private busd per test and C++ agent processes.
Needs BUSD_BIN and BUS_TEST_AGENT (meson sets them, with BUSD_BUILD_DIR so that `import busd`
finds libbus_c in the build tree); without them every test is skipped, saying why."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "python"))


def _need(var: str) -> str:
    v = os.environ.get(var)
    if not v:
        pytest.skip(f"{var} is not set (run through meson test)")
    return v


class Busd:
    def __init__(self, config: str = "") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="busd-py-"))
        self.socket = str(self.dir / "busd.sock")
        self.log_path = self.dir / "busd.log"
        argv = [_need("BUSD_BIN")]
        if config:
            (self.dir / "busd.toml").write_text(config)
            argv += ["--config", str(self.dir / "busd.toml")]
        env = dict(os.environ, BUS_SOCKET=self.socket)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.agents: List[subprocess.Popen] = []
        deadline = time.monotonic() + 5
        while not os.path.exists(self.socket):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("busd did not start:\n" + self.log_path.read_text())
            time.sleep(0.01)
        time.sleep(0.02)

    def agent(self, *args: str) -> subprocess.Popen:
        """A C++ test_agent (tests/integration/test_agent.cpp) on this busd; waits for "ready"."""
        p = subprocess.Popen([_need("BUS_TEST_AGENT"), *args], env=dict(os.environ, BUS_SOCKET=self.socket),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.agents.append(p)
        assert p.stdout is not None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            if line.strip() == "ready":
                time.sleep(0.05)  # "ready" follows the acknowledged subscription
                return p
        raise RuntimeError(f"test_agent {args} did not get ready (exit {p.poll()})")

    def process(self, argv: List[str], **kw: object) -> subprocess.Popen:
        env = dict(os.environ, BUS_SOCKET=self.socket)
        p = subprocess.Popen(argv, env=env, **kw)  # type: ignore[call-overload]
        self.agents.append(p)
        return p

    def stop(self) -> None:
        for p in self.agents:
            if p.poll() is None:
                p.kill()
            p.wait()
        self.proc.kill()
        self.proc.wait()
        self.log.close()
        if not os.environ.get("BUS_TEST_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def bus() -> Iterator[Busd]:
    d = Busd()
    yield d
    d.stop()


@pytest.fixture
def busd_factory() -> Iterator[object]:
    made: List[Busd] = []

    def make(config: str = "") -> Busd:
        d = Busd(config)
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()


def example(name: str) -> Optional[str]:
    build = os.environ.get("BUSD_BUILD_DIR")
    if not build:
        return None
    p = Path(build) / "examples" / name
    return str(p) if p.exists() else None
