"""ctypes declarations of the C ABI (agents/include/bus/bus.h) and where libbus_c is found."""
from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import List, Optional

ABI_VERSION = 1
ABI_MINOR = 1  # needs libbus_c.so.1.1 or later (bus_wake)
SONAME = f"libbus_c.so.{ABI_VERSION}"

c_char_p = ctypes.c_char_p
c_void_p = ctypes.c_void_p
c_size_t = ctypes.c_size_t
c_int = ctypes.c_int
c_int64 = ctypes.c_int64
c_uint32 = ctypes.c_uint32
c_uint64 = ctypes.c_uint64
c_uint = ctypes.c_uint


class Message(ctypes.Structure):
    _fields_ = [
        ("subject", c_void_p), ("subject_len", c_size_t),
        ("reply_to", c_void_p), ("reply_to_len", c_size_t),
        ("payload", c_void_p), ("payload_len", c_size_t),
        ("id", c_uint64), ("sid", c_uint32), ("source_id", c_uint32), ("lane", c_uint32),
        ("flags", c_uint32), ("internal", c_void_p),
    ]


class Options(ctypes.Structure):
    _fields_ = [
        ("struct_size", c_size_t), ("name", c_char_p),
        ("capabilities", ctypes.POINTER(c_char_p)), ("capabilities_len", c_size_t),
        ("address", c_char_p), ("tls_ca", c_char_p), ("tls_cert", c_char_p), ("tls_key", c_char_p),
        ("tls_server_name", c_char_p), ("token", c_char_p), ("wait", c_char_p),
        ("reconnect", c_int), ("hop_timing", c_int),
        ("connect_timeout_ms", c_int64), ("control_timeout_ms", c_int64), ("publish_timeout_ms", c_int64),
    ]


STATS_FIELDS = ["published", "received", "requests", "replies_late", "verify_failures", "reconnects",
                "resubscribe_failures", "lane_sent", "lane_received", "lanes_opened", "lanes_closed",
                "lanes_open"]


class Stats(ctypes.Structure):
    _fields_ = [("struct_size", c_size_t)] + [(f, c_uint64) for f in STATS_FIELDS]


class AgentInfo(ctypes.Structure):
    _fields_ = [("name", c_char_p), ("agent_id", c_uint32), ("pid", c_uint32), ("uid", c_uint32),
                ("capabilities", ctypes.POINTER(c_char_p)), ("capabilities_len", c_size_t)]


MESSAGE_FN = ctypes.CFUNCTYPE(None, c_void_p, c_void_p, ctypes.POINTER(Message))
REPLY_FN = ctypes.CFUNCTYPE(None, c_void_p, c_void_p, c_uint64, c_int, ctypes.POINTER(Message))
STATE_FN = ctypes.CFUNCTYPE(None, c_void_p, c_void_p, c_int, c_int)

_PROTOS = {
    "bus_version": (c_char_p, []),
    "bus_abi_version": (c_int, []),
    "bus_strerror": (c_char_p, [c_int]),
    "bus_last_error_message": (c_char_p, []),
    "bus_state_name": (c_char_p, [c_int]),
    "bus_options_init": (None, [ctypes.POINTER(Options)]),
    "bus_connect": (c_int, [ctypes.POINTER(Options), ctypes.POINTER(c_void_p)]),
    "bus_close": (None, [c_void_p]),
    "bus_drain": (c_int, [c_void_p, c_int64]),
    "bus_get_state": (c_int, [c_void_p]),
    "bus_on_state_change": (None, [c_void_p, STATE_FN, c_void_p]),
    "bus_agent_id": (c_uint32, [c_void_p]),
    "bus_name": (c_char_p, [c_void_p]),
    "bus_get_stats": (c_int, [c_void_p, ctypes.POINTER(Stats)]),
    "bus_publish": (c_int, [c_void_p, c_char_p, c_void_p, c_size_t]),
    "bus_publish_ex": (c_int, [c_void_p, c_char_p, c_void_p, c_size_t, c_uint]),
    "bus_flush": (None, [c_void_p]),
    "bus_reserve": (c_int, [c_void_p, c_char_p, c_size_t, ctypes.POINTER(c_void_p), ctypes.POINTER(c_size_t)]),
    "bus_commit": (c_int, [c_void_p, c_size_t, c_uint]),
    "bus_abandon": (None, [c_void_p]),
    "bus_subscribe": (c_int, [c_void_p, c_char_p, c_char_p, c_int, MESSAGE_FN, c_void_p, ctypes.POINTER(c_uint32)]),
    "bus_unsubscribe": (c_int, [c_void_p, c_uint32]),
    "bus_poll": (c_int, [c_void_p, c_int64, ctypes.POINTER(c_size_t)]),
    "bus_run": (c_int, [c_void_p]),
    "bus_stop": (None, [c_void_p]),
    "bus_wake": (None, [c_void_p]),  # since 1.1
    "bus_next": (c_int, [c_void_p, c_int64, ctypes.POINTER(Message)]),
    "bus_request": (c_int, [c_void_p, c_char_p, c_void_p, c_size_t, c_int64, ctypes.POINTER(Message)]),
    "bus_send_request": (c_int, [c_void_p, c_char_p, c_void_p, c_size_t, c_int64, ctypes.POINTER(c_uint64)]),
    "bus_on_reply": (None, [c_void_p, REPLY_FN, c_void_p]),
    "bus_reply": (c_int, [c_void_p, ctypes.POINTER(Message), c_void_p, c_size_t]),
    "bus_reply_error": (c_int, [c_void_p, ctypes.POINTER(Message), c_int, c_char_p]),
    "bus_reply_to": (c_int, [c_void_p, c_char_p, c_uint64, c_uint32, c_int, c_void_p, c_size_t]),
    "bus_find_agents": (c_int, [c_void_p, c_char_p, c_char_p, ctypes.POINTER(c_void_p)]),
    "bus_agent_list_size": (c_size_t, [c_void_p]),
    "bus_agent_list_get": (c_int, [c_void_p, c_size_t, ctypes.POINTER(AgentInfo)]),
    "bus_agent_list_free": (None, [c_void_p]),
}


def candidates() -> List[str]:
    """Where libbus_c is looked for, in order: $BUSD_LIBBUS_C (the library file), $BUSD_BUILD_DIR
    (a meson build directory), a build directory next to this source tree (build, build-*),
    then the dynamic loader's paths (an installed libbus_c.so.1)."""
    out: List[str] = []
    env = os.environ.get("BUSD_LIBBUS_C")
    if env:
        return [env]  # explicit: nothing else, so a wrong path is an error, not a silent fallback
    build = os.environ.get("BUSD_BUILD_DIR")
    if build:
        out.append(str(Path(build) / "agents" / "capi" / SONAME))
    root = Path(__file__).resolve().parent.parent.parent  # python/busd/_lib.py -> the tree
    if (root / "agents" / "include" / "bus" / "bus.h").exists():
        for d in [root / "build"] + sorted(root.glob("build-*")):
            p = d / "agents" / "capi" / SONAME
            if p.exists():
                out.append(str(p))
    out.append(SONAME)  # the loader: ld.so.cache, LD_LIBRARY_PATH
    for prefix in ("/usr/local/lib/x86_64-linux-gnu", "/usr/local/lib", "/usr/lib/x86_64-linux-gnu"):
        out.append(f"{prefix}/{SONAME}")
    return out


_lib: Optional[ctypes.CDLL] = None


def lib() -> ctypes.CDLL:
    global _lib
    if _lib is not None:
        return _lib
    errors = []
    for path in candidates():
        try:
            handle = ctypes.CDLL(path)
        except OSError as e:
            errors.append(f"{path}: {e}")
            continue
        missing = [name for name in _PROTOS if not hasattr(handle, name)]
        if missing:
            errors.append(f"{path}: older than libbus_c 1.{ABI_MINOR}, which this package needs "
                          f"(no {', '.join(missing)})")
            continue
        for name, (res, args) in _PROTOS.items():
            fn = getattr(handle, name)
            fn.restype = res
            fn.argtypes = args
        if handle.bus_abi_version() != ABI_VERSION:
            errors.append(f"{path}: ABI version {handle.bus_abi_version()}, this package needs {ABI_VERSION}")
            continue
        _lib = handle
        return handle
    raise ImportError("busd: cannot load the C library libbus_c (set BUSD_LIBBUS_C to its path, "
                      "BUSD_BUILD_DIR to a meson build directory, or `meson install` busd):\n  "
                      + "\n  ".join(errors))
