"""The agent's defaults, written once: the agent's API and ``pliant run``'s settings both
read them here.

This module imports nothing of pliant's, so :mod:`pliant.config` can use it without
importing the agent (``pliant config`` and ``pliant plugins`` stay instant).
"""

from __future__ import annotations

import signal

__all__ = [
    "HEALTH_CHECK_HEARTBEAT",
    "HEALTH_CHECK_TIMEOUT",
    "MAX_RESTARTS",
    "MONITOR_INTERVAL",
    "PRELOAD",
    "PRELOAD_AUTO",
    "RDZV_BACKEND",
    "RDZV_DEFAULTS",
    "RDZV_ONE_NODE",
    "RDZV_STATIC",
    "RUN_MAX_RESTARTS",
    "SHUTDOWN_TIMEOUT",
    "SIGNALS",
    "STANDBY_DELAY",
    "START_METHOD",
    "START_METHODS",
    "STATUS_TIMEOUT",
    "TIMER",
]

#: Restarts a :class:`~pliant.agent.api.WorkerSpec` allows when none is given: torch's
#: ``WorkerSpec`` default, for code written against torch's API.
MAX_RESTARTS = 3
#: ``pliant run --max-restarts``: torchrun's default, where a failure ends the run.
RUN_MAX_RESTARTS = 0
#: Seconds ``pliant status`` waits for a job's store to answer: a status command must not
#: hang on a store that is gone.
STATUS_TIMEOUT = 5.0
#: Seconds between membership checks, for a rendezvous that cannot notify the agent.
MONITOR_INTERVAL = 0.1
#: Seconds without the agent's heartbeat after which its health check answers 503 (torch's
#: agent gives its health check server 60).
HEALTH_CHECK_TIMEOUT = 60.0
#: Seconds between the agent's heartbeats while its health check is served.
HEALTH_CHECK_HEARTBEAT = 5.0
#: Seconds between SIGTERM and SIGKILL when the agent stops its workers.
SHUTDOWN_TIMEOUT = 30.0
#: The signals the agent handles: it forwards them to its workers, then exits.
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
#: How function entrypoints start; ``fork`` is refused for them (see the agent).
START_METHODS = ("spawn", "fork", "forkserver")
START_METHOD = "spawn"
#: The timer backend ``pliant run`` selects when ``--timer`` is not given: pliant-core's own
#: (the agent's API builds the same one when given no ``timers``).
TIMER = "local"

#: The rendezvous backend ``pliant run`` selects when neither ``--rdzv-backend`` nor
#: ``--standalone`` is given depends on the job's shape (pliant.launch.rendezvous_backend
#: decides): one node without ``--rdzv-endpoint`` needs no server at all; several nodes
#: without one (or with ``--node-rank``) are torchrun's static command line; otherwise the
#: endpoint names an elastic rendezvous, ``--rdzv-backend``'s own default.
RDZV_ONE_NODE = "embedded"
RDZV_STATIC = "static"
RDZV_BACKEND = "c10d"
#: When each of those is the default, in the words ``pliant plugins`` and ``--help`` show.
RDZV_DEFAULTS = (
    (RDZV_ONE_NODE, "on one node without --rdzv-endpoint, or with --standalone"),
    (RDZV_STATIC, "on several nodes without --rdzv-endpoint, or with --node-rank"),
    (RDZV_BACKEND, "with --rdzv-endpoint"),
)

#: ``pliant run --preload``: "auto" preloads PRELOAD_AUTO in warm standbys when the script
#: imports torch (a ``-m`` module: always) and the worker's Python can import it (see
#: pliant.agent.standby); () starts no standby.
PRELOAD = ("auto",)
#: torch, and what a gloo DDP job's first ``DistributedDataParallel(...)`` and step import
#: lazily (about 830 modules: torch._dynamo pulls sympy, mpmath, torch._inductor, ...).
#: Measured with ``sys.modules`` before and after a first step (docs/user-guide.md).
PRELOAD_AUTO = ("torch", "torch.distributed", "torch._dynamo", "torch.nn.parallel")
#: Seconds into a group when the agent starts its warm standbys (on one node; on several,
#: they start with the agent, to overlap the rendezvous): a job shorter than this never has
#: standbys importing beside it, and one that fails later restarts warm.
STANDBY_DELAY = 5.0
