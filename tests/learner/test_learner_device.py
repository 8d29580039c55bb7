"""A CPU rank trains with the cores it may use, not Ray's one-thread default."""

import os

import ray
import torch

from services.learner.device import configure_threads, train_device
from services.learner.distributed import Topology


def test_threads_default_to_the_usable_cores_shared_by_ranks():
    before = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0))
    try:
        assert configure_threads(None, Topology()) == cores == torch.get_num_threads()
        assert configure_threads(None, Topology(0, 2)) == max(1, cores // 2) == torch.get_num_threads()
        assert configure_threads(1, Topology()) == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_a_ray_actor_learner_gets_more_than_rays_single_thread(ray_local):
    @ray.remote(num_cpus=1)
    def threads_in_actor() -> tuple[int, int]:
        import torch as t

        from services.learner.device import configure_threads as configure
        from services.learner.distributed import Topology as Topo

        default = t.get_num_threads()  # Ray sets OMP_NUM_THREADS=1 for a 1-CPU task
        return default, configure(None, Topo())

    default, configured = ray.get(threads_in_actor.remote(), timeout=120)
    assert default == 1
    assert configured == len(os.sched_getaffinity(0))


def test_cpu_device_without_cuda():
    if not torch.cuda.is_available():
        assert train_device(Topology()) == torch.device("cpu")
    else:
        assert train_device(Topology(1, 2)).type == "cuda"
