"""DistributedDataParallel: one process per device, gradients all-reduced in backward."""
from launchers.base import Engine, Precision, Runtime, Strategy, init_distributed, torchrun_argv


class DistributedDataParallel(Strategy):
    name = "ddp"
    distributed = True
    description = "DistributedDataParallel, one process per device (torchrun)"

    def argv(self, cell, entry, port):
        return torchrun_argv(cell, entry, port)

    def init_runtime(self, cell) -> Runtime:
        return init_distributed(cell, cell.timeout_s)

    def wrap(self, model, optimizer, cell, runtime: Runtime) -> Engine:
        from torch.nn.parallel import DistributedDataParallel as DDP
        ids = [runtime.local_rank] if runtime.device_type == "cuda" else None
        return Engine(DDP(model, device_ids=ids), optimizer,
                      Precision(cell.precision, runtime.device_type))

    def shutdown(self) -> None:
        destroy_process_group()


def destroy_process_group() -> None:
    """Ranks leave together: a rank that tears gloo down while rank 0 still evaluates can
    abort the process ("terminate called without an active exception", seen on CPU)."""
    import torch.distributed as dist
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
