"""DeepSpeed engine with ZeRO stage 0-3 and its own precision config.

A torch optimizer is passed in rather than named in the config: a named one would JIT-build
a fused op (~80 s on a 2-core CPU, measured) and change the optimizer between strategies.
"""
from bench.errors import BadInput
from launchers.base import DistributedStrategy, Engine, Precision, Runtime, l1_loss


class DeepSpeedEngine(Engine):
    # Sharded parameters and optimizer state need the strategy's own checkpoint format; a
    # preempted cell of this strategy is recorded as such and starts over when re-run.
    supports_checkpoint = False

    def __init__(self, ds_engine, precision: Precision):
        super().__init__(ds_engine, ds_engine.optimizer, precision)
        import torch
        self.input_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision.name)

    def forward_loss(self, noisy, clean):
        if self.input_dtype is not None:  # DeepSpeed holds bf16/fp16 parameters
            noisy = noisy.to(self.input_dtype)
        return l1_loss(self.model(noisy), clean)

    def backward(self, loss) -> None:
        self.model.backward(loss)

    def optimizer_step(self) -> None:
        self.model.step()
        if getattr(self.model, "skipped_steps", 0):
            self.skipped_steps = int(self.model.skipped_steps)

    def grad_norm(self) -> float | None:
        """The global norm DeepSpeed computed in its last step (ZeRO 1-3, or clipping on);
        None where it computed none: its step() has already freed the gradients."""
        norm = self.model.get_global_grad_norm()
        return None if norm is None else float(norm)

    def full_state_dict(self, runtime: Runtime) -> dict | None:
        import deepspeed
        from deepspeed.utils import safe_get_full_fp32_param

        state = {}
        module = self.unwrapped()
        for name, param in module.named_parameters():
            # The fp32 master copy where the optimizer keeps one (ZeRO, bf16/fp16), else the
            # parameter itself, gathered from its shards under ZeRO-3. Every rank takes part.
            full = safe_get_full_fp32_param(param)
            if full is None:
                with deepspeed.zero.GatheredParameters([param]):
                    full = param.detach().clone()
            state[name] = full.detach().float().cpu()
        for name, buf in module.named_buffers():
            state[name] = buf.detach().cpu().clone()
        return state if runtime.is_main else None


class DeepSpeed(DistributedStrategy):
    name = "deepspeed"
    description = "DeepSpeed ZeRO (torchrun-launched ranks)"

    def validate(self, cell, visible_gpus: int) -> None:
        super().validate(cell, visible_gpus)
        stage = 0 if cell.zero_stage is None else cell.zero_stage
        if stage not in (0, 1, 2, 3):
            raise BadInput(f"ZeRO stage {cell.zero_stage} does not exist; choose 0, 1, 2 or 3")
        if cell.precision == "tf32":
            raise BadInput("DeepSpeed takes fp32, bf16 or fp16; tf32 is not one of its precisions")

    def config(self, cell) -> dict:
        return {
            "train_batch_size": cell.effective_global_batch,
            "train_micro_batch_size_per_gpu": cell.per_device_batch,
            "gradient_accumulation_steps": 1,
            "zero_optimization": {"stage": cell.zero_stage or 0},
            "bf16": {"enabled": cell.precision == "bf16"},
            "fp16": {"enabled": cell.precision == "fp16", "initial_scale_power": 16},
            "zero_allow_untested_optimizer": True,
            # DeepSpeed clips the gradient norm to 1.0 unless told otherwise; no other strategy
            # clips, so the DeepSpeed cells would train another workload once the norm passes 1.
            "gradient_clipping": 0.0,
            "steps_per_print": 2**31 - 1,
            "wall_clock_breakdown": False,
        }

    def wrap(self, model, optimizer, cell, runtime: Runtime) -> Engine:
        import logging
        import os

        if runtime.device_type == "cpu":
            # DeepSpeed picks its accelerator once, at import: CUDA wherever a GPU is visible,
            # which would move a --device cpu cell's model onto the node's GPUs.
            os.environ["DS_ACCELERATOR"] = "cpu"
        import deepspeed
        logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
        ds_engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer,
                                             config=self.config(cell), dist_init_required=False)
        engine = DeepSpeedEngine(ds_engine, Precision(cell.precision, runtime.device_type,
                                                      autocast=False))
        if (cell.zero_stage or 0) == 3:
            engine.sharding = zero3_policy(ds_engine)
        return engine


def zero3_policy(ds_engine) -> dict:
    """The record's `runtime.sharding` under ZeRO-3. Parameters under the persistence
    threshold stay whole between steps (gathered once, after the optimizer step); the others
    are gathered before their module's forward. A gathered parameter is released after use
    unless it is used again within `max_reuse_distance` elements of fetches: every re-use in
    backward lies within 2 × the parameters, so below half that distance none is gathered
    again in backward (`regathered_parameters`; above it, every non-persistent one at most)."""
    params = list(ds_engine.module.parameters())
    total = sum(p.ds_numel for p in params)
    persistent = sum(p.ds_numel for p in params if getattr(p, "ds_persist", False))
    reuse = int(ds_engine.zero_max_reuse_distance())
    return {"policy": "zero3", "parameters": total,
            "persistence_threshold": int(ds_engine.zero_param_persistence_threshold()),
            "persistent_parameters": persistent, "max_reuse_distance": reuse,
            "regathered_parameters": 0 if 2 * total <= reuse else total - persistent}
