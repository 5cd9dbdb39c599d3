"""Helpers the Python integration tests share: waiting for a condition, busd's socket, ports,
a private busd, busctl's JSON."""
import json
import os
import socket
import subprocess
import time


def eventually(pred, timeout=10.0):
    """pred()'s first true value within `timeout` seconds (polled every 20 ms), else its last."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > end:
            return v
        time.sleep(0.02)


def accepts(path):
    """Whether something accepts connections on the Unix socket at `path` (busd is up)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_port():
    """A loopback TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(sock):
    """This environment with BUS_SOCKET at `sock` and no XDG_RUNTIME_DIR (nothing else found)."""
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    env["BUS_SOCKET"] = sock
    return env


def busctl_json(busctl, env, cmd):
    """`busctl CMD --json` against the busd `env` names, parsed (exit 0 asserted)."""
    r = subprocess.run([busctl, cmd, "--json"], env=env, capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, f"busctl {cmd}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return json.loads(r.stdout)


class PrivateBusd:
    """A busd of its own in root/name: its config in busd.toml, its socket busd.sock, its log
    busd.log; `env` names it (env_for). Returns once it accepts connections."""

    def __init__(self, busd, root, name, config=""):
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir, exist_ok=True)
        self.sock = os.path.join(self.dir, "busd.sock")
        self.conf = os.path.join(self.dir, "busd.toml")
        self.env = env_for(self.sock)
        with open(self.conf, "w") as f:
            f.write(config)
        self.log_path = os.path.join(self.dir, "busd.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([busd, "--config", self.conf], env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        started = eventually(lambda: accepts(self.sock) or self.proc.poll() is not None, 10)
        assert started and self.proc.poll() is None, f"busd {name} did not start:\n" + open(self.log_path).read()
