"""Helpers the Python integration tests share: waiting for a condition, busd's socket, ports."""
import socket
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
