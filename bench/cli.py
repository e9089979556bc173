"""Command line. Parsing imports nothing heavy: `python -m bench --help` stays fast, and each
command imports torch and friends only when it runs."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench.errors import EXIT_BAD_INPUT, BadInput

DEFAULTS = dict(steps=60, warmup=5, batch=16, lr=1e-3, width=16, depth=3, image_size=64,
                noise=[0.1], seed=0, repeats=1, data="chest-sample")


def add_workload_options(p: argparse.ArgumentParser) -> None:
    """Options shared by `run` and `parity`: what is trained, and how."""
    g = p.add_argument_group("workload")
    g.add_argument("--model", action="append", choices=None, metavar="NAME",
                   help="unet or unetpp (repeatable; default both)")
    g.add_argument("--data", default=DEFAULTS["data"],
                   help="chest-sample (default, embedded), nih:PATH, folder:PATH, synthetic[:N]")
    g.add_argument("--image-size", type=int, default=DEFAULTS["image_size"], help="tile/image side in pixels")
    g.add_argument("--limit", type=int, default=None, help="use the first N images (sorted names)")
    g.add_argument("--skip-bad", action="store_true", help="skip undecodable images (counted)")
    g.add_argument("--noise", type=float, nargs="+", default=DEFAULTS["noise"], metavar="SIGMA",
                   help="Gaussian noise σ on the [0,1] scale (one or more)")
    g.add_argument("--noise-mean", type=float, default=0.0, help="noise mean (the seed study used 0.1)")
    g.add_argument("--steps", type=int, default=DEFAULTS["steps"], help="optimizer steps")
    g.add_argument("--warmup", type=int, default=DEFAULTS["warmup"], help="untimed warm-up steps")
    g.add_argument("--batch", type=int, default=DEFAULTS["batch"],
                   help="global batch (per-device batch with --scaling weak)")
    g.add_argument("--scaling", default="strong", help="strong (fixed global batch) or weak")
    g.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="Adam learning rate")
    g.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    g.add_argument("--repeats", type=int, default=DEFAULTS["repeats"],
                   help="independent repeats (fresh processes, different seeds)")
    g.add_argument("--width", type=int, default=DEFAULTS["width"], help="base channels")
    g.add_argument("--depth", type=int, default=DEFAULTS["depth"], help="down-sampling steps")
    g.add_argument("--norm", default="group",
                   help="group (default: rank-independent), batch or none")
    g.add_argument("--upsample", default=None, help="transpose or bilinear (model default)")
    g.add_argument("--deep-supervision", action="store_true", help="U-Net++ deep supervision")
    g.add_argument("--residual", action=argparse.BooleanOptionalAction, default=True,
                   help="output = input + network(input) (default); --no-residual is the "
                        "seed study's plain output")
    c = p.add_argument_group("configuration")
    c.add_argument("--strategy", action="append", metavar="NAME",
                   help="single, dp, ddp, deepspeed, fsdp (repeatable; default: the study's "
                        "four configurations)")
    c.add_argument("--precision", action="append", metavar="P", help="fp32, tf32, bf16, fp16 (repeatable)")
    c.add_argument("--devices", type=int, default=None,
                   help="GPUs (or CPU ranks) for multi-device strategies; default 2 on CPU, "
                        "all visible GPUs")
    c.add_argument("--zero", type=int, default=None, help="DeepSpeed ZeRO stage 0-3")
    c.add_argument("--device", default="auto", help="auto, cpu or cuda")
    c.add_argument("--channels-last", action="store_true")
    c.add_argument("--compile", action="store_true", help="torch.compile the model")
    c.add_argument("--cudnn-benchmark", action="store_true")
    c.add_argument("--workers", type=int, default=0, help="data-loader worker processes")
    c.add_argument("--pin-memory", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark distributed training of U-Net denoisers on chest X-rays, honestly.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="train and measure every configuration asked for")
    add_workload_options(run)
    r = run.add_argument_group("running")
    r.add_argument("--out", type=Path, default=None, help="results folder (default runs/<time>)")
    r.add_argument("--timeout", type=float, default=1800.0, help="seconds per cell")
    r.add_argument("--sample-hz", type=float, default=2.0, help="telemetry rate (0 = off)")
    r.add_argument("--force", action="store_true", help="re-run cells that are already ok")
    r.add_argument("--no-retry-failed", dest="retry_failed", action="store_false",
                   help="keep failed cells' records instead of re-running them")
    r.add_argument("--cache-dir", default=None, help="decoded-image cache (default ~/.cache/bench)")

    parity = sub.add_parser("parity", help="compare per-step loss and gradient norm of "
                                           "strategies against single-device fp32")
    add_workload_options(parity)
    parity.add_argument("--check-steps", type=int, default=5, help="steps compared (K)")
    parity.add_argument("--rtol", type=float, default=None,
                        help="relative tolerance (default: 1e-4 for fp32, 5e-2 for bf16/fp16)")

    env = sub.add_parser("env", help="print the captured environment")
    env.add_argument("--json", action="store_true")

    selfbench = sub.add_parser("selfbench", help="measure bench's own overhead against a bare "
                                                 "PyTorch loop")
    selfbench.add_argument("--steps", type=int, default=40)
    selfbench.add_argument("--repeats", type=int, default=5)
    selfbench.add_argument("--model", default="unet")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from bench import commands
    handler = getattr(commands, f"cmd_{args.command}")
    try:
        return handler(args)
    except BadInput as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")
