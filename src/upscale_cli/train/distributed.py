"""Several processes on one run (torchrun): the process group, agreeing on progress, gathering
every rank's random state for the checkpoint. One process (the usual case) needs none of it."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    owns_group: bool = False  # this run initialised the process group (and destroys it)

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device) -> Dist:
    """torchrun sets WORLD_SIZE/RANK; gloo on CPU, NCCL on CUDA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    owns_group = not dist.is_initialized()  # a group the caller made is the caller's to destroy
    if owns_group:
        import_group_capturing_modules()
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), owns_group=owns_group)


def import_group_capturing_modules() -> None:
    """Import, before the process group exists, the modules that would otherwise keep it alive.

    torch.distributed.nn.functional declares its collectives with `group=group.WORLD` as a
    default argument, evaluated when the module is first imported. DistributedDataParallel's
    constructor imports torch._dynamo, which imports that module; after init_process_group the
    default is the world ProcessGroup itself, held by those functions for the life of the
    interpreter. destroy_process_group() then only drops torch's own references, the group is
    never freed, and gloo's threads (gloo_tcp_loop, pt_gloo_runloop) run on into interpreter
    teardown and exit(), where a rank now and then aborted ("terminate called without an active
    exception"). Imported first, the defaults are None and destroy_process_group() really stops
    the threads. torch._dynamo is what DDP imports anyway, so this costs no extra time.
    """
    import torch._dynamo  # noqa: F401  (DDP's constructor imports it; it brings torch.distributed.nn)
    import torch.distributed.nn  # noqa: F401  (the module whose defaults capture group.WORLD)


def agree(value: float, dist: Dist) -> float:
    """Every process must stop at the same step: rank 0's progress wins."""
    if dist.world == 1:
        return value
    import torch.distributed as tdist

    t = torch.tensor([value], dtype=torch.float64)
    tdist.broadcast(t, src=0)
    return float(t)


def rng_states(gen: torch.Generator, dist: Dist) -> list:
    state = gen.get_state()
    if dist.world == 1:
        return [state]
    import torch.distributed as tdist

    states: list = [None] * dist.world
    tdist.all_gather_object(states, state)
    return states

