"""One process, one device: the baseline every other strategy is compared against."""
from launchers.base import Strategy


class Single(Strategy):
    name = "single"
    description = "one process, one device"

    def validate(self, cell, visible_gpus: int) -> None:
        super().validate(cell, visible_gpus)
        if cell.devices != 1:
            from bench.errors import BadInput
            raise BadInput(f"strategy single runs on exactly 1 device, not {cell.devices}; "
                           "use dp, ddp, deepspeed or fsdp for more")
