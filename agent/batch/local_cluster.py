"""A real Ray cluster of several nodes on this machine, for tests, benchmarks and trying `--ray` out.

Each node is `ray start ... --block` in a process of its own, with its own ports, CPUs and custom resources,
all under one private temporary directory, so tasks really spread over separate raylets and the cluster never
touches another Ray on the machine: every process it starts carries a marker in its environment, and `stop`
ends exactly those processes (by pid), never `ray stop`, which would stop every Ray of the user.

Every node has its own loopback address (127.0.0.2 for the head, .3, .4 ... for the others) and usage
statistics are off, so nothing leaves the machine.

    with LocalRayCluster() as cluster:
        address = cluster.start_head(num_cpus=1)
        worker = cluster.add_node(num_cpus=2, resources={"worker": 2})
        ...  # qwq-agent batch ... --ray ADDRESS
        cluster.kill_raylet(worker)  # a node dies
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

__all__ = ["LocalRayCluster", "RayNode", "ray_environment"]

_MARKER = "QWQ_AGENT_LOCAL_RAY"


def ray_environment() -> dict[str, str]:
    """Environment variables that keep Ray local and quiet (also wanted by a driver connecting to it)."""
    return {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_DOCKER_CPU_WARNING": "1"}


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _end_with_parent() -> None:
    """In the child before exec: SIGTERM it when the process that started the cluster dies (Linux), so a
    killed test run does not leave a cluster behind; `ray start --block` then takes its node down."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class RayNode:
    """One node: its `ray start --block` process and the raylet's port (which identifies its raylet)."""

    name: str
    process: subprocess.Popen[bytes]
    node_manager_port: int
    log: Path
    head: bool = False
    killed: bool = False
    extra: dict[str, object] = field(default_factory=dict)


class LocalRayCluster:
    """Start a head and more nodes on this machine; `stop()` (or leaving the `with`) ends all of them."""

    def __init__(
        self,
        *,
        env: dict[str, str] | None = None,
        object_store_mb: int = 100,
        system_env: dict[str, str] | None = None,
    ) -> None:
        # Unix socket paths under the temp dir must stay short (about 107 bytes): keep the root short too.
        self.root = Path(tempfile.mkdtemp(prefix="qr-", dir="/tmp"))
        self.marker = uuid.uuid4().hex
        self.object_store_mb = object_store_mb
        self.env = {**os.environ, **ray_environment(), **(env or {}), _MARKER: self.marker}
        # Settings of the head's GCS (e.g. how fast a dead node is noticed): RAY_<name> variables.
        self.env.update(system_env or {})
        self.address: str | None = None
        self.nodes: list[RayNode] = []

    # -------------------------------------------------------------------------------------------- nodes

    def _start(
        self, name: str, *, head: bool, num_cpus: int, resources: dict[str, float] | None, timeout: float
    ) -> RayNode:
        ports = _free_ports(10 + 24)
        (
            gcs,
            node_manager,
            object_manager,
            client_server,
            agent_listen,
            agent_grpc,
            metrics,
            runtime_env_agent,
            dashboard,
            _spare,
        ) = ports[:10]
        worker_ports = ports[10:]
        # Each node its own loopback address: a driver on this machine attaches to the raylet of its own
        # address (the head's), never to a node a test is about to kill. (Ray turns 127.0.0.1 into the
        # machine's network address, but leaves the rest of 127.0.0.0/8 alone.)
        ip = f"127.0.0.{2 + len(self.nodes)}"
        command = [
            sys.executable,
            "-m",
            "ray.scripts.scripts",
            "start",
            "--block",
            f"--node-ip-address={ip}",
            f"--num-cpus={num_cpus}",
            "--num-gpus=0",
            f"--object-store-memory={self.object_store_mb * 1024 * 1024}",
            f"--node-manager-port={node_manager}",
            f"--object-manager-port={object_manager}",
            f"--worker-port-list={','.join(map(str, worker_ports))}",
            f"--dashboard-agent-listen-port={agent_listen}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--metrics-export-port={metrics}",
            f"--runtime-env-agent-port={runtime_env_agent}",
            f"--temp-dir={self.root}",
            "--disable-usage-stats",
        ]
        if resources:
            command.append(f"--resources={json.dumps(resources)}")
        if head:
            command += [
                "--head",
                f"--port={gcs}",
                f"--ray-client-server-port={client_server}",
                "--include-dashboard=false",
                f"--dashboard-port={dashboard}",
            ]
        else:
            if self.address is None:
                raise RuntimeError("start the head first")
            command += [f"--address={self.address}", "--include-log-monitor=false"]
        log = self.root / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                preexec_fn=_end_with_parent,
            )
        node = RayNode(name=name, process=process, node_manager_port=node_manager, log=log, head=head)
        self.nodes.append(node)
        if head:
            self.address = f"{ip}:{gcs}"
        self._wait_alive(node, timeout)
        return node

    def start_head(
        self, *, num_cpus: int = 1, resources: dict[str, float] | None = None, timeout: float = 90
    ) -> str:
        """Start the head node; returns the cluster address (`127.0.0.2:PORT`) for `ray.init` / `--ray`."""
        self._start("head", head=True, num_cpus=num_cpus, resources=resources, timeout=timeout)
        assert self.address is not None
        return self.address

    def add_node(
        self, *, num_cpus: int = 1, resources: dict[str, float] | None = None, timeout: float = 90
    ) -> RayNode:
        """Start one more node joining the head."""
        name = f"node{len(self.nodes)}"
        return self._start(name, head=False, num_cpus=num_cpus, resources=resources, timeout=timeout)

    def _wait_alive(self, node: RayNode, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if node.process.poll() is not None:
                raise RuntimeError(f"ray start for {node.name} exited:\n{self.log_tail(node)}")
            # `ray start` says so once its node is registered with the GCS (and so schedulable)
            if "Ray runtime started" in self.log_tail(node) and self.raylet_pid(node) is not None:
                return
            time.sleep(0.3)
        raise RuntimeError(f"{node.name} did not come up in {timeout:g} s:\n{self.log_tail(node)}")

    def log_tail(self, node: RayNode, chars: int = 3000) -> str:
        try:
            return node.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # -------------------------------------------------------------------------------------------- processes

    def pids(self) -> list[int]:
        """Every live process this cluster started (found by the marker in its environment)."""
        needle = f"{_MARKER}={self.marker}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if needle in environ.split(b"\0"):
                found.append(int(entry.name))
        return found

    def raylet_pid(self, node: RayNode) -> int | None:
        """The pid of `node`'s raylet (the one listening on its node-manager port)."""
        flag = f"--node_manager_port={node.node_manager_port}".encode()
        for pid in self.pids():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"raylet") and flag in argv:
                return pid
        return None

    def kill_raylet(self, node: RayNode) -> int:
        """SIGKILL the node's raylet, as when a machine dies; returns its pid. Its workers go with it."""
        pid = self.raylet_pid(node)
        if pid is None:
            raise RuntimeError(f"{node.name} has no raylet running")
        os.kill(pid, signal.SIGKILL)
        node.killed = True
        return pid

    def stop(self, timeout: float = 20) -> None:
        """End every process of this cluster and remove its directory (safe to call twice).

        A driver in this process connected to the cluster is disconnected first: Ray would otherwise abort
        the whole process a minute later for want of its GCS.
        """
        ray = sys.modules.get("ray")
        if ray is not None and self.address is not None and ray.is_initialized():
            with contextlib.suppress(Exception):
                if ray.get_runtime_context().gcs_address == self.address:
                    ray.shutdown()
        for node in reversed(self.nodes):
            if node.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    node.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.process.wait(max(0.1, deadline - time.monotonic()))
        # What `ray start --block` did not take down (workers, agents): by pid, ours only.
        for _ in range(3):
            left = self.pids()
            if not left:
                break
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        for node in self.nodes:
            if node.process.poll() is None:
                node.process.kill()
                node.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalRayCluster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
