"""DistributedDataParallel: one process per device, gradients all-reduced in backward."""
from launchers.base import DistributedStrategy, Engine, Precision, Runtime


class DistributedDataParallel(DistributedStrategy):
    name = "ddp"
    description = "DistributedDataParallel, one process per device (torchrun)"

    def wrap(self, model, optimizer, cell, runtime: Runtime) -> Engine:
        from torch.nn.parallel import DistributedDataParallel as DDP
        ids = [runtime.local_rank] if runtime.device_type == "cuda" else None
        return Engine(DDP(model, device_ids=ids), optimizer,
                      Precision(cell.precision, runtime.device_type))
