"""PyTorch FSDP (fully_shard): parameters, gradients and optimizer state sharded over ranks.

Sharded the way its users shard: `fully_shard` on each conv block first (one FSDP unit each:
its parameters all-gathered in one collective before its forward, freed after it, gathered
again in backward, its gradients reduce-scattered in one collective), then on the root, whose
unit holds what lies outside the blocks (up-sampling, heads). `reshard_after_forward` is left
at FSDP's default: True for the blocks, False for the root, which backward needs at once. Sharding
only the root would gather the whole model at once and keep it through backward (DDP's volume,
no memory saved during compute, nothing to prefetch).
"""
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
        blocks = shard_units(model)
        sharding = per_block_policy(model, blocks)
        for block in blocks:  # bottom-up: a unit takes the parameters no inner unit took
            fully_shard(block, mesh=mesh, mp_policy=policy)
        fully_shard(model, mesh=mesh, mp_policy=policy)
        # The optimizer must see the sharded parameters, so it is rebuilt after sharding.
        optimizer = type(optimizer)(model.parameters(), **optimizer.defaults)
        engine = FSDPEngine(model, optimizer,
                            Precision(cell.precision, runtime.device_type, autocast=False))
        engine.sharding = sharding
        return engine


def shard_units(model) -> list:
    """The conv blocks FSDP wraps one by one, in registration order: every module with at
    least two Conv2d among its direct children, outermost only: each DoubleConv of the bench
    networks (the U-Net's stem, encoders and decoders, every U-Net++ node) and the seed
    networks' Sequential blocks. Up-sampling layers and heads lie outside them: a ModuleList
    of deep-supervision heads holds convs too, but it has no forward of its own, so FSDP
    cannot wrap it."""
    from torch import nn
    blocks, inside = [], set()  # inside: ids of the chosen blocks' own submodules
    for module in model.modules():  # pre-order: an outer block comes before its parts
        if id(module) in inside or isinstance(module, (nn.ModuleList, nn.ModuleDict)):
            continue
        if sum(isinstance(child, nn.Conv2d) for child in module.children()) >= 2:
            blocks.append(module)
            inside.update(id(m) for m in module.modules())
    return blocks


def per_block_policy(model, blocks: list) -> dict:
    """The record's `runtime.sharding`: the units and what each step gathers. Block units are
    resharded after forward and gathered again in backward (`regathered_parameters`); the
    root's own parameters are gathered once and kept through backward (FSDP's default)."""
    total = sum(p.numel() for p in model.parameters())
    in_blocks = sum(p.numel() for b in blocks for p in b.parameters())
    return {"policy": "per-block" if blocks else "root-only",
            "unit_class": ", ".join(sorted({type(b).__name__ for b in blocks})) or None,
            "units": len(blocks) + 1, "parameters": total,
            "root_parameters": total - in_blocks,
            "reshard_after_forward": {"blocks": True, "root": False},
            "regathered_parameters": in_blocks}
