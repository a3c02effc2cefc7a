"""Launch a test module as several real JAX processes on this machine (jax.distributed on
localhost; each process gets its own simulated CPU devices and gloo collectives)."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A free localhost TCP port for the coordinator."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def xla_flags(devices: int | None) -> str:
    """This session's XLA_FLAGS (conftest's test flags included) with `devices` simulated CPU
    devices instead of its 8; None: XLA's default, one."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    if devices is not None:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    return " ".join(flags)


def run_processes(module: str, *args: str, processes: int = 2, devices: int = 4,
                  timeout: float = 600) -> list[str]:
    """Runs `python -m module <process id> <port> *args` `processes` times at once; returns
    their outputs (stdout + stderr), after asserting that every one exited with 0."""
    port = free_port()
    env = dict(os.environ)
    env["XLA_FLAGS"] = xla_flags(devices)
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    procs = [
        subprocess.Popen([sys.executable, "-m", module, str(i), str(port), *map(str, args)],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
        for i in range(processes)
    ]
    try:
        outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for i, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"process {i} of {module} failed:\n{out[-4000:]}"
    return outputs
