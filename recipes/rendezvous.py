"""The rendezvous port of a DDP run that the ``zoo`` command starts itself: held from the moment it is chosen.

Lightning picks ``MASTER_PORT`` for a one-node run by binding port 0, reading the port the system gave and
closing the socket (``find_free_network_port``); the processes it starts then rendezvous there, and rank 0 binds
it again for its ``TCPStore``. Between the close and that bind the port is free: a second job started at the same
time can be given the same one, and then one job fails to bind it (``EADDRINUSE``) or its processes join the other
job's rendezvous ("Connection closed by peer").

Here the launching process binds the store itself, on port 0, before Lightning starts any process, keeps it,
and sets ``MASTER_PORT`` to its port: no other job can be given a port that is bound. torch's ``TCPStore`` with
``multi_tenant=True`` (as ``init_process_group`` makes it) reuses a server this process already holds on that
port, so rank 0 serves the rendezvous from the socket bound here. A ``MASTER_PORT`` set by the user or a
cluster (SLURM, torchelastic) is left alone, and so are launchers whose rank 0 is another process.

The processes this one starts are also its to end: when it fails, they would wait for it in their next
collective until its timeout (30 minutes), holding the terminal or a test's pipes. :func:`stop_started_ranks`
gives them a few seconds to end on their own, then kills them, as Lightning does after a Ctrl+C.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import time

from lightning.fabric.plugins.environments import LightningEnvironment

_held: dict[int, object] = {}  # port → the TCPStore server holding it, for the life of the process
_launchers: list = []  # the launchers of the runs this process started, whose other ranks it owns


def rank_zero_is_launcher(strategy) -> bool:
    """Whether the process that launches the run becomes its global rank 0 (Lightning's default ``ddp``, which
    starts the other ranks as scripts), not a parent that collects results from spawned or forked workers."""
    launcher = getattr(strategy, "launcher", None)
    return (
        launcher is not None
        and not launcher.is_interactive_compatible  # fork-based launchers run inside this interpreter
        and not hasattr(launcher, "get_extra_results")  # spawn: rank 0 is a child that sends its results back
    )


def hold_rendezvous_port(trainer) -> int | None:
    """Bind the rendezvous store of a one-node, multi-process run this process launches, and point
    ``MASTER_PORT`` at it (see the module docstring); the port, or None where nothing was done."""
    strategy = trainer.strategy
    environment = getattr(strategy, "cluster_environment", None)
    if (
        "MASTER_PORT" in os.environ
        or type(environment) is not LightningEnvironment
        or trainer.num_nodes != 1
        or trainer.world_size < 2
        or not rank_zero_is_launcher(strategy)
    ):
        return None
    from torch.distributed import TCPStore

    address = environment.main_address
    store = TCPStore(
        address,
        0,
        trainer.world_size,
        True,
        timeout=datetime.timedelta(minutes=30),
        wait_for_workers=False,
        multi_tenant=True,
    )
    _held[store.port] = store
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = address, str(store.port)
    return store.port


def own_started_ranks(trainer) -> None:
    """Note the launcher of a multi-process run this process starts, whose other ranks
    :func:`stop_started_ranks` ends if this process fails (whether or not its port is held)."""
    if trainer.world_size > 1 and rank_zero_is_launcher(trainer.strategy):
        _launchers.append(trainer.strategy.launcher)


def stop_started_ranks(grace: float = 5.0) -> None:
    """End the processes the runs of this one started (its DDP ranks but 0): each gets until ``grace`` seconds
    from now to exit, then is killed. Called when this process fails; a rank that ended already is skipped."""
    deadline = time.monotonic() + grace
    for launcher in _launchers:
        for proc in getattr(launcher, "procs", []):
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    _launchers.clear()


def end_process_group() -> None:
    """Destroy this process's torch process group, if it has one, before the interpreter exits: left to the exit,
    its threads were torn down in an order that now and then aborted a rank ("terminate called without an active
    exception", exit -6, 1 run in about 6 under torchrun)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
