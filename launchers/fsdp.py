"""PyTorch FSDP (fully_shard): parameters, gradients and optimizer state sharded over ranks."""
from bench.errors import BadInput
from launchers.base import DistributedStrategy, Engine, Precision, Runtime


class FSDPEngine(Engine):
    # Sharded parameters and optimizer state need the strategy's own checkpoint format; a
    # preempted cell of this strategy is recorded as such and starts over when re-run.
    supports_checkpoint = False

    def grad_norm(self) -> float:
        """Collective: each rank holds a shard of every gradient (a DTensor); the squares of
        the local shards add up across ranks to the full norm."""
        import torch
        import torch.distributed as dist
        local = [p.grad.to_local().detach().float().pow(2).sum()
                 for p in self.model.parameters() if p.grad is not None]
        total = torch.stack(local).sum() if local else torch.zeros(())
        total = total.to(next(self.model.parameters()).device)
        dist.all_reduce(total)
        return float(total.sqrt())

    def full_state_dict(self, runtime: Runtime) -> dict | None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
        # Collective: shards are gathered; only rank 0 keeps the full CPU copy.
        state = get_model_state_dict(
            self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not runtime.is_main:
            return None
        return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}


class FSDP(DistributedStrategy):
    name = "fsdp"
    description = "FSDP (fully_shard) with a mixed-precision policy"

    def validate(self, cell, visible_gpus: int) -> None:
        super().validate(cell, visible_gpus)
        if cell.precision == "fp16" and cell.device_type != "cuda":
            raise BadInput("FSDP fp16 needs CUDA; use bf16 on CPU")

    def wrap(self, model, optimizer, cell, runtime: Runtime) -> Engine:
        import torch
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cell.precision)
        # Compute in the low dtype, reduce gradients in fp32 (the usual, stable choice).
        policy = MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32) if low \
            else MixedPrecisionPolicy()
        # The mesh on the cell's device: fully_shard's default mesh is the host's accelerator,
        # which would move a --device cpu cell's model onto a GPU of the node.
        mesh = init_device_mesh(runtime.device_type, (runtime.world_size,))
        fully_shard(model, mesh=mesh, mp_policy=policy)
        # The optimizer must see the sharded parameters, so it is rebuilt after sharding.
        optimizer = type(optimizer)(model.parameters(), **optimizer.defaults)
        return FSDPEngine(model, optimizer,
                          Precision(cell.precision, runtime.device_type, autocast=False))
