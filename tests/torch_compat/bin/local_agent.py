"""One agent of a multi-node job, for the port of torch's ``local_elastic_agent_test.py``
(torch's ``run_agent`` run in an ``mp.Process``): ``python local_agent.py CONF_JSON``.

CONF_JSON names the function entrypoint (in ``agent_functions``) and the agent's
arguments. The agent joins the ``c10d`` rendezvous at ``endpoint`` (``pliant_c10d``),
runs, shuts the rendezvous down and pickles ``(role, RunResult)`` to ``out``, then, as
torch's ``run_agent``, raises ``ChildFailedError`` when the run failed (exit code 1).
"""

from __future__ import annotations

import json
import pickle
import sys

import agent_functions
from pliant import record
from pliant.agent import ChildFailedError, DefaultLogsSpecs, LocalElasticAgent, Std, WorkerSpec
from pliant.rendezvous import RendezvousParameters, create_handler


@record
def main(conf: dict) -> None:
    params = RendezvousParameters(
        backend="c10d", endpoint=conf["endpoint"], run_id=conf["run_id"],
        min_nodes=conf["min_nodes"], max_nodes=conf["max_nodes"], is_host=conf["is_host"],
        **conf.get("rdzv_conf", {}))
    spec = WorkerSpec(
        role=conf["role"], local_world_size=conf["local_world_size"],
        entrypoint=getattr(agent_functions, conf["entrypoint"]), args=tuple(conf["args"]),
        rdzv_handler=create_handler(params), max_restarts=conf["max_restarts"],
        monitor_interval=conf["monitor_interval"])
    agent = LocalElasticAgent(
        spec, DefaultLogsSpecs(log_dir=conf["log_dir"], tee=Std(conf["tee"])),
        start_method="spawn", exit_barrier_timeout=conf["exit_barrier_timeout"],
        log_line_prefix_template=conf["log_line_prefix_template"])
    result = agent.run()
    spec.rdzv_handler.shutdown()
    with open(conf["out"], "wb") as f:
        pickle.dump((spec.role, result), f)
    if result.is_failed():
        raise ChildFailedError(spec.get_entrypoint_name(), result.failures)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
