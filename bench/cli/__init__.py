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
    g.add_argument("--epochs", type=int, default=None,
                   help="train for N passes over the (augmented) training set instead; sets "
                        "--steps from the data, warm-up included")
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
    g.add_argument("--target", choices=("clean", "noise2noise"), default="clean",
                   help="clean (supervised, default) or noise2noise: pairs of noisy realisations "
                        "from --data obfuscated:PATH, never a clean image (two-site)")
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
    run.add_argument("spec", nargs="?", default=None, metavar="SPEC",
                     help="a sweep spec: a YAML file or a built-in name (quick, paper, "
                          "scaling); resumable in runs/<name>. Without it, the flags below")
    add_workload_options(run)
    r = run.add_argument_group("running")
    r.add_argument("--out", type=Path, default=None, help="results folder (default runs/<time>)")
    r.add_argument("--timeout", type=float, default=1800.0, help="seconds per cell")
    r.add_argument("--sample-hz", type=float, default=2.0, help="telemetry rate (0 = off)")
    r.add_argument("--force", action="store_true", help="re-run cells that are already ok")
    r.add_argument("--retry-failed", action=argparse.BooleanOptionalAction, default=True,
                   help="re-run cells whose record is failed, timeout or diverged (default); "
                        "--no-retry-failed keeps them. Preempted cells always resume")
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
    add_report_commands(sub)
    from bench.cli.sweep import add_parsers as add_sweep_commands  # cell, status, slurm
    add_sweep_commands(sub)
    add_two_site_commands(sub)
    return parser


def add_two_site_commands(sub) -> None:
    """`obfuscate` (Site One sends only noisy images) and `evaluate` (Site One scores a model)."""
    ob = sub.add_parser("obfuscate", help="Site One: write noisy realisations of a data source, "
                                          "with a manifest, for training at Site Two")
    ob.add_argument("src", metavar="SRC", help="data source, as for --data")
    ob.add_argument("out", type=Path, metavar="OUT", help="new folder for Site Two")
    ob.add_argument("--sigma", type=float, required=True, help="noise σ on the [0,1] scale")
    ob.add_argument("--mean", type=float, default=0.0, help="noise mean (default 0)")
    ob.add_argument("--realisations", type=int, default=2,
                    help="independent noisy copies per image (noise2noise needs 2; default 2)")
    ob.add_argument("--seed", type=int, default=0, help="split seed of SRC (the noise key is a "
                                                        "fresh secret kept in the mapping file)")
    ob.add_argument("--image-size", type=int, default=DEFAULTS["image_size"])
    ob.add_argument("--limit", type=int, default=None, help="use the first N images")
    ob.add_argument("--skip-bad", action="store_true", help="skip undecodable images")
    ob.add_argument("--mapping", type=Path, default=None, metavar="FILE",
                    help="Site One's file of original names and noise key (default "
                         "OUT.site-one-mapping.json beside OUT; never inside OUT)")
    ob.add_argument("--include-clean", action="store_true",
                    help="also send the clean images (the seed study's supervised mode: clean "
                         "data leaves Site One)")
    ob.add_argument("--cache-dir", default=None, help="decoded-image cache")

    ev = sub.add_parser("evaluate", help="Site One: score a saved model on the clean test split "
                                         "and audit how much the noise protects")
    ev.add_argument("model", type=Path, metavar="MODEL", help="a model.pt from a results folder")
    ev.add_argument("--data", required=True, help="the clean source, as for --data")
    ev.add_argument("--sigma", type=float, nargs="+", default=None, metavar="SIGMA",
                    help="noise levels to audit (default: the model's)")
    ev.add_argument("--mean", type=float, default=None, help="noise mean (default: the model's)")
    ev.add_argument("--seed", type=int, default=0,
                    help="split seed of the source (as given to obfuscate); seeds the test noise")
    ev.add_argument("--image-size", type=int, default=None, help="default: the model's")
    ev.add_argument("--limit", type=int, default=None)
    ev.add_argument("--skip-bad", action="store_true")
    ev.add_argument("--realisations", type=int, default=2,
                    help="released realisations per image, for the averaging audit (default 2)")
    ev.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ev.add_argument("--json", action="store_true", help="print the report as JSON")
    ev.add_argument("--out", type=Path, default=None, metavar="FILE",
                    help="also write the report as JSON")
    ev.add_argument("--cache-dir", default=None, help="decoded-image cache")


def add_report_commands(sub) -> None:
    """`report` (comparison tables, exports, HTML) and `compare` (the regression gate)."""
    report = sub.add_parser("report", help="compare the configurations of a results folder: "
                                           "speedup, efficiency, AMP gain, accuracy parity")
    report.add_argument("results", type=Path, metavar="DIR", help="results folder")
    report.add_argument("--format", choices=("md", "csv", "json"), default=None,
                        help="export instead of (or, with --output, beside) the console tables")
    report.add_argument("--output", type=Path, default=None, metavar="FILE",
                        help="write the --format export here (default stdout)")
    report.add_argument("--html", type=Path, default=None, metavar="FILE",
                        help="also write a self-contained HTML report with plots")
    report.add_argument("--baseline", default="single:1:fp32",
                        metavar="STRATEGY[:DEVICES[:PRECISION[:ZERO]]]",
                        help="configuration every other is compared against "
                             "(default single:1:fp32)")
    report.add_argument("--margin-psnr", type=float, default=0.1, help="PSNR parity margin, dB")
    report.add_argument("--margin-ssim", type=float, default=0.002, help="SSIM parity margin")
    report.add_argument("--margin-lpips", type=float, default=0.005, help="LPIPS parity margin")
    report.add_argument("--confidence", type=float, default=0.95, help="interval confidence")

    gate = sub.add_parser("compare", help="regression gate: exit 1 when NEW is slower or less "
                                          "accurate than BASELINE beyond the tolerances")
    gate.add_argument("baseline", type=Path, metavar="BASELINE", help="reference results folder")
    gate.add_argument("new", type=Path, metavar="NEW", help="results folder to check")
    gate.add_argument("--tolerance-throughput", type=float, default=7.0, metavar="PCT",
                      help="largest allowed throughput drop in percent (default 7)")
    gate.add_argument("--tolerance-psnr", type=float, default=0.1, metavar="DB",
                      help="largest allowed PSNR drop in dB (default 0.1)")
    gate.add_argument("--tolerance-ssim", type=float, default=0.002,
                      help="largest allowed SSIM drop (default 0.002)")
    gate.add_argument("--tolerance-lpips", type=float, default=0.005,
                      help="largest allowed LPIPS rise (default 0.005)")
    gate.add_argument("--soft-fraction", type=float, default=0.8,
                      help="warn from this share of a tolerance on (default 0.8)")
    gate.add_argument("--confidence", type=float, default=0.95, help="interval confidence")
    gate.add_argument("--all", action="store_true", help="list every measure, not only what moved")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from bench.cli import commands
    handler = getattr(commands, f"cmd_{args.command}")
    try:
        return handler(args)
    except BadInput as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")
