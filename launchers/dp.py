"""torch.nn.DataParallel: one process drives N GPUs by replicating the module every step."""
from launchers.base import Engine, Precision, Runtime, Strategy


class DataParallel(Strategy):
    name = "dp"
    description = "nn.DataParallel, one process over N GPUs"

    def wrap(self, model, optimizer, cell, runtime: Runtime) -> Engine:
        import torch
        if runtime.device_type == "cuda":
            wrapped = torch.nn.DataParallel(model, device_ids=list(range(cell.devices)))
        else:
            # Without GPUs DataParallel has no replicas and simply calls the module; the
            # record states this so nobody reads a CPU "dp" figure as a parallel one.
            # Where CUDA exists (--device cpu on a GPU node) DataParallel refuses an empty
            # device list, so the module is used as is: the same thing it would run.
            wrapped = model if torch.cuda.is_available() else \
                torch.nn.DataParallel(model, device_ids=[])
        return Engine(wrapped, optimizer, Precision(cell.precision, runtime.device_type))

    def notes(self, cell) -> list[str]:
        if cell.device_type == "cpu":
            return ["DataParallel on CPU has no device replicas: it calls the module in-process"]
        return []
