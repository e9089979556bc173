"""DistributedDataParallel: one process per device, gradients all-reduced in backward."""
from launchers.base import DistributedStrategy, Engine, Precision, Runtime


class DDPEngine(Engine):
    hooked = False

    def mark_arrivals(self, marks) -> None:
        """The rank's arrival at the all-reduce: a communication hook marks each gradient
        bucket as DDP hands it over (the last one: backward has produced every gradient), then
        all-reduces it as DDP's own hook does (divide by the world size, sum)."""
        super().mark_arrivals(marks)
        if self.hooked:
            return
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        ddp = getattr(self.model, "_orig_mod", self.model)  # under torch.compile

        def ready_then_allreduce(engine, bucket):
            # DDP hands its buckets over in index order: the last one, once backward has
            # produced every gradient
            if engine.marks is not None and bucket.is_last():
                engine.marks.ready()
            return allreduce_hook(ddp.process_group, bucket)

        ddp.register_comm_hook(self, ready_then_allreduce)
        self.hooked = True


class DistributedDataParallel(DistributedStrategy):
    name = "ddp"
    description = "DistributedDataParallel, one process per device (torchrun)"

    def wrap(self, model, optimizer, cell, runtime: Runtime) -> Engine:
        from torch.nn.parallel import DistributedDataParallel as DDP
        ids = [runtime.local_rank] if runtime.device_type == "cuda" else None
        return DDPEngine(DDP(model, device_ids=ids), optimizer,
                         Precision(cell.precision, runtime.device_type))
