"""Keras Tuner's chief/worker mode: the chief serves the oracle, workers run the trials.

``hpstudy search STUDY.yaml --workers N`` makes the calling process the **chief**. It prepares the
study exactly like a single-process search (configuration frozen or checked, data checked, statistics
fitted on train, tuner created or reloaded), then serves the tuner's oracle over gRPC with Keras
Tuner's own servicer, the protocol behind ``KERASTUNER_ORACLE_IP/PORT`` and ``KERASTUNER_TUNER_ID``.
It starts N local **workers** (``hpstudy worker STUDY.yaml --chief 127.0.0.1:PORT --id workerK``),
each pinned to one GPU with ``CUDA_VISIBLE_DEVICES`` or, without GPUs, given an equal share of the
CPU threads. Workers on other machines join with ``hpstudy worker STUDY.yaml --chief HOST:PORT``;
every worker reads and writes the same study directory (shared, e.g. over NFS).

The chief is the single writer of ``trials.csv`` and ``study.json``: when any worker ends a trial it
rewrites the table atomically and prints the same progress line as a single-process search, and it
drops the checkpoints no Hyperband bracket needs any more (a worker cannot see the brackets).

Dead workers. Keras Tuner's oracle keeps a worker's trial in ``ongoing_trials`` until that worker ends
it, and its chief only stops once every worker that asked for a trial has been told to stop: a worker
killed mid-trial would make Keras Tuner's own chief wait forever. Here instead:

* a local worker that dies is restarted with the same ``KERASTUNER_TUNER_ID`` (at most
  ``max_restarts`` times); ``Oracle.create_trial`` hands that id its ongoing trial again, which is
  re-run from scratch with the same seed;
* a worker whose restarts are used up, or whose heartbeat file (``workers/<id>.json``, rewritten every
  few seconds) stops changing for ``heartbeat_timeout`` seconds, is released: its trial goes back to
  the oracle's retry queue for the next worker that asks, and its id is forgotten;
* a worker the oracle has no new trial for waits (Keras Tuner's IDLE answer) instead of stopping while
  other workers still run trials, so that a released trial always finds a taker;
* when no worker is left while trials remain, the chief stops with a message; the same command resumes.

With ``trials_per_process: N`` a worker stops asking for trials after N and ``hpstudy worker`` replaces its
own process with a fresh one (``exec``: same PID, same id), which frees the memory TensorFlow keeps per
trained model; the chief sees one uninterrupted worker.

Every wait is bounded: a worker gives up on an unresponsive chief after ``connect_timeout`` seconds and
a local worker exits as soon as its chief dies; the chief's wait is bounded by its workers' lives,
restarts and heartbeats, and optionally by ``timeout``.
"""

from hpstudy.search.distributed._chief import release_worker, run_chief, serve_chief
from hpstudy.search.distributed._common import (
    DistributedSettings,
    configure_threads,
    parse_address,
    thread_split,
    worker_environment,
)
from hpstudy.search.distributed._worker import WorkerOutcome, run_worker

__all__ = ["DistributedSettings", "run_chief", "serve_chief", "run_worker", "WorkerOutcome", "parse_address",
           "thread_split", "worker_environment", "configure_threads", "release_worker"]
