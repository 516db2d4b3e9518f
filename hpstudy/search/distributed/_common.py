"""Settings, addresses, environments and thread split shared by the chief and the workers."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hpstudy.errors import ConfigError

HEARTBEAT_SECONDS = 3.0
WORKER_ERROR = "hpstudy worker: error:"  # how the CLI prints a worker's user-fixable error


@dataclass(frozen=True)
class DistributedSettings:
    """How a distributed search runs.

    Attributes:
        workers: local worker processes the chief starts (0: only workers joining from other machines).
        listen: ``HOST:PORT`` the oracle serves on; port 0 picks a free one. Use ``0.0.0.0:PORT`` with a
            fixed port when workers on other machines join.
        max_restarts: how often one dead local worker is restarted (with its id, re-running its trial).
        heartbeat_timeout: seconds without a heartbeat after which a worker counts as dead (its trial goes
            to another worker); also how long a chief without any worker waits for one to join.
        timeout: optional bound, in seconds, on the whole distributed search.
    """

    workers: int = 0
    listen: str = "127.0.0.1:0"
    max_restarts: int = 3
    heartbeat_timeout: float = 300.0
    timeout: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.workers, int) or isinstance(self.workers, bool) or self.workers < 0:
            raise ConfigError(f"--workers must be a whole number >= 0, but got {self.workers!r}")
        if not isinstance(self.max_restarts, int) or self.max_restarts < 0:
            raise ConfigError(f"--max-restarts must be a whole number >= 0, but got {self.max_restarts!r}")
        if not self.heartbeat_timeout > 0:
            raise ConfigError(f"--heartbeat-timeout must be > 0 seconds, but got {self.heartbeat_timeout!r}")
        if self.timeout is not None and not self.timeout > 0:
            raise ConfigError(f"--timeout must be > 0 seconds, but got {self.timeout!r}")
        parse_address(self.listen, what="--listen")


def parse_address(text: str, *, what: str = "address", allow_zero_port: bool = True) -> tuple[str, int]:
    """``(host, port)`` from ``HOST:PORT`` (``[::1]:PORT`` for IPv6).

    Raises:
        ConfigError: naming the option and the value, when it is not a host and a port in 0..65535.
    """
    host, sep, port = str(text).strip().rpartition(":")
    host = host.strip("[]")
    valid = bool(sep and host and port.isdigit() and int(port) <= 65535 and (allow_zero_port or int(port) > 0))
    if not valid:
        low = 0 if allow_zero_port else 1
        raise ConfigError(f"{what} must look like HOST:PORT with a port in {low}..65535 (e.g. 127.0.0.1:50051), "
                          f"but got {text!r}")
    return host, int(port)


def thread_split(workers: int, cpus: int) -> tuple[int, int]:
    """``(intra_op, inter_op)`` TensorFlow threads per worker when ``workers`` share ``cpus`` cores."""
    intra = max(1, cpus // max(workers, 1))
    return intra, 1 if intra < 4 else 2


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_environment(index: int, *, workers: int, gpus: Sequence[str], cpus: int,
                       base: Mapping[str, str]) -> dict[str, str]:
    """Environment of local worker ``index``: one GPU each when there are GPUs, else a share of the threads.

    Args:
        index: the worker's number (0-based).
        workers: how many local workers share the machine.
        gpus: the GPU ids this machine may use (``CUDA_VISIBLE_DEVICES`` values); workers take them in turn.
        cpus: cores available to the study.
        base: the chief's environment.
    """
    env = {k: v for k, v in base.items() if not k.startswith("KERASTUNER_")}
    env.update(PYTHONUNBUFFERED="1", HPSTUDY_PARENT_PID=str(os.getpid()))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = str(gpus[index % len(gpus)])
        return env
    intra, inter = thread_split(workers, cpus)
    env.update(HPSTUDY_INTRA_OP_THREADS=str(intra), HPSTUDY_INTER_OP_THREADS=str(inter), OMP_NUM_THREADS=str(intra),
               TF_NUM_INTRAOP_THREADS=str(intra), TF_NUM_INTEROP_THREADS=str(inter))
    return env


def configure_threads(threads: int | None = None) -> tuple[int, int] | None:
    """Limit TensorFlow's thread pools (``threads``, else ``HPSTUDY_INTRA_OP_THREADS``); before any TF op."""
    intra = threads or int(os.environ.get("HPSTUDY_INTRA_OP_THREADS", "0") or 0)
    if not intra:
        return None
    inter = int(os.environ.get("HPSTUDY_INTER_OP_THREADS", "0") or 0) or thread_split(1, intra)[1]
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:  # TensorFlow already started in this process: the pools stay as they are
        return None
    return intra, inter


def gpu_ids() -> list[str]:
    import tensorflow as tf

    count = len(tf.config.list_physical_devices("GPU"))
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return (visible or [str(i) for i in range(count)])[:count]


def require_grpc() -> None:
    """Raise a ConfigError naming the extra to install when grpcio or protobuf is missing."""
    from hpstudy import _kt_compat

    try:
        _kt_compat.require_grpc()
    except ImportError as exc:
        raise ConfigError(f"distributed search needs grpcio and protobuf ({exc}): "
                          "pip install 'hpstudy[distributed]'") from None
