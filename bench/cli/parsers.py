"""Every command's argument parser. Parsing imports nothing heavy, so `python -m bench --help`
stays fast; each parser names its handler ("module:function"), imported only when it runs."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import plugins
from bench.config.builtin_specs import BUILTIN
from bench.config.cell import DEFAULT_VALIDATION_POINTS, Cell
from bench.config.numbers import (CONFIDENCE, COUNT, FINITE, NON_NEGATIVE, PART, POSITIVE,
                                  POSITIVE_INT, SEED, SHARE, ZERO_STAGE, Number, OutOfRange,
                                  one_of, whole)
from bench.errors import EXIT_BAD_INPUT

# Cell's field defaults are the one source of every workload default (flags and specs alike).
DEFAULT = Cell()
PERCENT = Number(float, 0, 100, low_open=True, high_open=True)  # a throughput drop


class Parser(argparse.ArgumentParser):
    """argparse, with a numeric flag's refusal (bench.config.numbers) as the one sentence
    every bad input gets; the commands' parsers are of this class too."""

    def _get_value(self, action, arg_string):
        try:
            return super()._get_value(action, arg_string)
        except OutOfRange as exc:
            flag = "/".join(action.option_strings) or action.metavar or action.dest
            self.exit(EXIT_BAD_INPUT, f"bench: error: {flag} {arg_string} {exc}\n")


def add_workload_options(p: argparse.ArgumentParser) -> None:
    """Options shared by `run` and `parity`: what is trained, and how."""
    g = p.add_argument_group("workload")
    g.add_argument("--model", action="append", choices=None, metavar="NAME",
                   help="unet or unetpp (repeatable; default both)")
    g.add_argument("--data", default=DEFAULT.data,
                   help="chest-sample (default, embedded), nih:PATH, folder:PATH, synthetic[:N]")
    g.add_argument("--image-size", type=POSITIVE_INT, default=DEFAULT.image_size,
                   help="tile/image side in pixels")
    g.add_argument("--limit", type=POSITIVE_INT, default=None,
                   help="use the first N images (sorted names)")
    g.add_argument("--skip-bad", action="store_true", help="skip undecodable images (counted)")
    g.add_argument("--noise", type=NON_NEGATIVE, nargs="+", default=list(DEFAULT.noise),
                   metavar="SIGMA",
                   help="Gaussian noise σ on the [0,1] scale (one or more)")
    g.add_argument("--noise-mean", type=FINITE, default=DEFAULT.noise_mean,
                   help="noise mean (the seed study used 0.1)")
    g.add_argument("--steps", type=POSITIVE_INT, default=DEFAULT.steps, help="optimizer steps")
    g.add_argument("--epochs", type=POSITIVE_INT, default=None,
                   help="train for N passes over the (augmented) training set instead; sets "
                        "--steps from the data, warm-up included")
    g.add_argument("--warmup", type=COUNT, default=DEFAULT.warmup, help="untimed warm-up steps")
    g.add_argument("--eval-every", type=COUNT, default=DEFAULT.eval_every, metavar="K",
                   help=f"validation every K steps, untimed (default {DEFAULT_VALIDATION_POINTS} "
                        "points a run; 0: none)")
    g.add_argument("--target-psnr", type=POSITIVE, default=DEFAULT.target_psnr, metavar="DB",
                   help="PSNR a time to target is read at (default: baseline's final − 0.1 dB)")
    g.add_argument("--stop-at-target", action="store_true", help="stop once it is reached")
    g.add_argument("--until-psnr", type=POSITIVE, default=None, metavar="DB",
                   help="--target-psnr DB --stop-at-target, in one")
    g.add_argument("--batch", type=POSITIVE_INT, default=DEFAULT.global_batch,
                   help="global batch (per-device batch with --scaling weak)")
    g.add_argument("--scaling", default=DEFAULT.scaling, help="strong (fixed global batch) or weak")
    g.add_argument("--lr", type=POSITIVE, default=DEFAULT.lr, help="Adam learning rate")
    g.add_argument("--seed", type=SEED, default=DEFAULT.seed)
    g.add_argument("--repeats", type=POSITIVE_INT, default=1,
                   help="independent repeats (fresh processes, different seeds)")
    g.add_argument("--width", type=POSITIVE_INT, default=DEFAULT.width, help="base channels")
    g.add_argument("--depth", type=POSITIVE_INT, default=DEFAULT.depth, help="down-sampling steps")
    g.add_argument("--arch", default=DEFAULT.arch,
                   help="bench (default), seed or seed-ddp: the seed study's own networks "
                        "(batch norm, plain output)")
    g.add_argument("--norm", default=None,
                   help="group (default: rank-independent; batch with a seed --arch), batch "
                        "or none")
    g.add_argument("--upsample", default=None, help="transpose or bilinear (model default)")
    g.add_argument("--deep-supervision", action="store_true", help="U-Net++ deep supervision")
    g.add_argument("--target", choices=plugins.target_names(), default="clean",
                   help="clean (supervised, default) or a plug-in's target, e.g. noise2noise: "
                        "pairs of noisy realisations from --data obfuscated:PATH (two-site)")
    g.add_argument("--residual", action=argparse.BooleanOptionalAction, default=None,
                   help="output = input + network(input) (default); --no-residual is the "
                        "seed study's plain output (the default with a seed --arch)")
    c = p.add_argument_group("configuration")
    c.add_argument("--strategy", action="append", metavar="NAME",
                   help="single, dp, ddp, deepspeed, fsdp (repeatable; default: the study's four)")
    c.add_argument("--precision", action="append", metavar="P", help="fp32, tf32, bf16, fp16 (repeatable)")
    c.add_argument("--devices", type=POSITIVE_INT, default=None,
                   help="GPUs (or CPU ranks) for multi-device strategies; default 2 on CPU, "
                        "all visible GPUs")
    c.add_argument("--zero", type=ZERO_STAGE, default=None, help="DeepSpeed ZeRO stage 0-3")
    c.add_argument("--device", default="auto", help="auto, cpu or cuda")
    c.add_argument("--channels-last", action="store_true")
    c.add_argument("--compile", action="store_true", help="torch.compile the model")
    c.add_argument("--cudnn-benchmark", action="store_true")
    c.add_argument("--workers", type=COUNT, default=DEFAULT.workers,
                   help="data-loader worker processes")
    c.add_argument("--pin-memory", action="store_true")


def build_parser(plugin_parsers=()) -> argparse.ArgumentParser:
    """Every command's parser; `plugin_parsers` add the plug-ins' commands."""
    parser = Parser(
        prog="python -m bench",
        description="Benchmark distributed training of U-Net denoisers on chest X-rays, honestly.",
        epilog="Guides by task (running, sweeps, Slurm, reading a report, troubleshooting): "
               "docs/README.md in bench's source tree; `COMMAND --help` for each command.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="train and measure every configuration asked for")
    run.set_defaults(handler="bench.cli.run:cmd_run")
    run.add_argument("spec", nargs="?", default=None, metavar="SPEC",
                     help=f"a sweep spec: a YAML file or a built-in name ({', '.join(BUILTIN)});"
                          " resumable in runs/<name>. Without it, the flags below")
    add_workload_options(run)
    r = run.add_argument_group("running")
    r.add_argument("--out", type=Path, default=None, help="results folder (default runs/<time>)")
    r.add_argument("--timeout", type=POSITIVE, default=DEFAULT.timeout_s, help="seconds per cell")
    r.add_argument("--sample-hz", type=NON_NEGATIVE, default=DEFAULT.sample_hz,
                   help="telemetry rate (0 = off)")
    r.add_argument("--force", action="store_true", help="re-run cells that are already ok")
    r.add_argument("--retry-failed", action=argparse.BooleanOptionalAction, default=True,
                   help="re-run cells whose record is failed, timeout or diverged (default); "
                        "--no-retry-failed keeps them. Preempted cells always resume")
    r.add_argument("--cache-dir", default=None, help="decoded-image cache (default ~/.cache/bench)")

    parity = sub.add_parser("parity", help="compare per-step loss and gradient norm of "
                                           "strategies against single-device fp32")
    parity.set_defaults(handler="bench.cli.run:cmd_parity")
    add_workload_options(parity)
    parity.add_argument("--check-steps", type=POSITIVE_INT, default=5, help="steps compared (K)")
    parity.add_argument("--rtol", type=POSITIVE, default=None,
                        help="relative tolerance (default: 1e-4 for fp32, 5e-2 for bf16/fp16)")

    env = sub.add_parser("env", help="print the captured environment")
    env.set_defaults(handler="bench.cli.report:cmd_env")
    env.add_argument("--json", action="store_true")

    selfbench = sub.add_parser("selfbench", help="measure bench's own overhead against a bare "
                                                 "PyTorch loop")
    selfbench.set_defaults(handler="bench.cli.report:cmd_selfbench")
    selfbench.add_argument("--strategy", nargs="+", default=["single", "ddp"],
                           choices=("single", "ddp"),
                           help="single (in this process) and/or ddp (torchrun ranks)")
    selfbench.add_argument("--devices", type=POSITIVE_INT, default=2, help="ranks of the ddp loops")
    selfbench.add_argument("--steps", type=POSITIVE_INT, default=40, help="steps per loop, warm-up "
                                                                 "included")
    selfbench.add_argument("--repeats", type=POSITIVE_INT, default=10,
                           help="interleaved repeats of every loop (paired ratios)")
    selfbench.add_argument("--model", default=DEFAULT.model)
    selfbench.add_argument("--width", type=POSITIVE_INT, default=DEFAULT.width)
    selfbench.add_argument("--image-size", type=POSITIVE_INT, default=DEFAULT.image_size)
    selfbench.add_argument("--batch", type=POSITIVE_INT, default=DEFAULT.global_batch,
                           help="global batch")
    selfbench.add_argument("--device", default="auto", help="auto, cpu or cuda")
    selfbench.add_argument("--json", action="store_true", help="print the figures as JSON")
    spec = sub.add_parser("spec", help="show the cells a spec expands to on this machine, or "
                                        "print the JSON Schema of specs for editors")
    spec.set_defaults(handler="bench.cli.spec:cmd_spec")
    spec.add_argument("spec", nargs="?", default=None, metavar="SPEC",
                      help="a spec YAML or a built-in name")
    spec.add_argument("--schema", action="store_true",
                      help="print the JSON Schema of a spec file (for YAML editors)")
    spec.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_report_commands(sub)
    add_evaluate_command(sub)
    add_sweep_commands(sub)
    add_commbench_command(sub)
    add_predict_command(sub)
    for add_plugin_commands in plugin_parsers:
        add_plugin_commands(sub)
    return parser


def add_report_commands(sub) -> None:
    """`report` (comparison tables, exports, HTML) and `compare` (the regression gate)."""
    report = sub.add_parser("report", help="compare the configurations of a results folder: "
                                           "speedup, efficiency, AMP gain, accuracy parity")
    report.set_defaults(handler="bench.cli.report:cmd_report")
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
    report.add_argument("--margin-psnr", type=NON_NEGATIVE, default=0.1, help="PSNR parity margin, dB")
    report.add_argument("--margin-ssim", type=NON_NEGATIVE, default=0.002, help="SSIM parity margin")
    report.add_argument("--margin-lpips", type=NON_NEGATIVE, default=0.005, help="LPIPS parity margin")
    report.add_argument("--confidence", type=CONFIDENCE, default=0.95, help="interval confidence")

    gate = sub.add_parser("compare", help="regression gate: exit 1 when NEW is slower or less "
                                          "accurate than BASELINE beyond the tolerances, 4 "
                                          "when too few repeats to detect them")
    gate.set_defaults(handler="bench.cli.report:cmd_compare")
    gate.add_argument("baseline", type=Path, metavar="BASELINE", help="reference results folder")
    gate.add_argument("new", type=Path, metavar="NEW", help="results folder to check")
    gate.add_argument("--tolerance-throughput", type=PERCENT, default=7.0, metavar="PCT",
                      help="largest allowed throughput drop in percent (default 7)")
    gate.add_argument("--tolerance-psnr", type=POSITIVE, default=0.1, metavar="DB",
                      help="largest allowed PSNR drop in dB (default 0.1)")
    gate.add_argument("--tolerance-ssim", type=POSITIVE, default=0.002,
                      help="largest allowed SSIM drop (default 0.002)")
    gate.add_argument("--tolerance-lpips", type=POSITIVE, default=0.005,
                      help="largest allowed LPIPS rise (default 0.005)")
    gate.add_argument("--soft-fraction", type=PART, default=0.8,
                      help="warn from this share of a tolerance on (default 0.8)")
    gate.add_argument("--confidence", type=CONFIDENCE, default=0.95, help="interval confidence")
    gate.add_argument("--all", action="store_true", help="list every measure, not only what moved")


def add_evaluate_command(sub) -> None:
    """`evaluate`: score weights on the fixed test split, PSNR/SSIM/LPIPS per σ beside the
    noisy input; a state dict with --weights and the model flags, or a run's saved model.pt."""
    ev = sub.add_parser("evaluate", help="score a model's weights on the fixed test split: "
                                         "PSNR, SSIM and LPIPS per noise level, beside the "
                                         "noisy input")
    ev.set_defaults(handler="bench.cli.evaluate:cmd_evaluate")
    ev.add_argument("saved", nargs="?", type=Path, default=None, metavar="MODEL",
                    help="a model.pt a run saved (or its cell folder): its cell gives the "
                         "model; also prints the two-site privacy audit and writes it into "
                         "the cell's record. Needs --data")
    w = ev.add_argument_group("weights (instead of MODEL)")
    w.add_argument("--weights", type=Path, default=None, metavar="FILE",
                   help="a torch-saved state dict, loaded strictly into the model the flags "
                        "below build ('module.' prefixes are dropped)")
    w.add_argument("--model", default=None, help=f"unet or unetpp (default {DEFAULT.model})")
    w.add_argument("--arch", default=None,
                   help="bench (default), or seed / seed-ddp: the seed study's own networks "
                        "and key names, which fix norm, upsample and residual")
    w.add_argument("--width", type=POSITIVE_INT, default=None,
                   help=f"base channels (default {DEFAULT.width}; the seed study's: 64)")
    w.add_argument("--depth", type=POSITIVE_INT, default=None,
                   help=f"down-sampling steps (default {DEFAULT.depth}; the seed study's: 4)")
    w.add_argument("--norm", default=None, help=f"group, batch or none (default "
                                                f"{DEFAULT.norm}; batch for seed arches)")
    w.add_argument("--upsample", default=None, help="transpose or bilinear (model default)")
    w.add_argument("--deep-supervision", action="store_true", default=None,
                   help="U-Net++ deep supervision")
    w.add_argument("--residual", action=argparse.BooleanOptionalAction, default=None,
                   help="output = input + network(input) (default for arch bench; seed "
                        "arches: --no-residual)")
    d = ev.add_argument_group("test split")
    d.add_argument("--data", default=None,
                   help=f"the source whose test split is scored (default {DEFAULT.data} with "
                        "--weights; required with MODEL)")
    d.add_argument("--image-size", type=POSITIVE_INT, default=None,
                   help=f"default {DEFAULT.image_size} (MODEL: its own)")
    d.add_argument("--limit", type=POSITIVE_INT, default=None, help="use the first N images")
    d.add_argument("--skip-bad", action="store_true", help="skip undecodable images")
    d.add_argument("--noise", "--sigma", dest="noise", type=NON_NEGATIVE, nargs="+", default=None,
                   metavar="SIGMA", help="noise levels σ on the [0,1] scale (default "
                   f"{' '.join(f'{s:g}' for s in DEFAULT.noise)}; MODEL: its own)")
    d.add_argument("--noise-mean", "--mean", dest="noise_mean", type=FINITE, default=None,
                   help=f"noise mean (default {DEFAULT.noise_mean:g}; MODEL: its own; the "
                        "seed study used 0.1)")
    d.add_argument("--seed", type=SEED, default=DEFAULT.seed,
                   help="split seed of the source; also seeds the test noise")
    d.add_argument("--realisations", type=POSITIVE_INT, default=None,
                   help="MODEL only: released realisations per image, for the averaging "
                        "audit (default 2)")
    o = ev.add_argument_group("output")
    o.add_argument("--device", default="auto", help="auto, cpu or cuda")
    o.add_argument("--json", action="store_true", help="print the result as JSON")
    o.add_argument("--out", type=Path, default=None, metavar="FILE",
                   help="also write the result as JSON")
    o.add_argument("--cache-dir", default=None, help="decoded-image cache")


def add_sweep_commands(sub) -> None:
    """The `cell`, `status` and `slurm` subcommands (no heavy imports: --help stays fast)."""
    cell = sub.add_parser("cell", help="run one cell of a spec (what a Slurm array task runs)")
    cell.set_defaults(handler="bench.cli.sweep:cmd_cell")
    cell.add_argument("spec", metavar="SPEC",
                      help="a spec YAML, a built-in name, or a sweep's resolved spec.json")
    cell.add_argument("--index", type=COUNT, required=True, help="the cell's index in the spec")
    cell.add_argument("--out", type=Path, default=None, help="the sweep's folder (default: "
                      "the folder of a spec.json, else runs/<name>)")
    cell.add_argument("--expect-id", default=None, metavar="CELL_ID",
                      help="refuse to run unless the index still names this cell")
    cell.add_argument("--device", default="auto", help="auto, cpu or cuda (specs by name)")
    cell.add_argument("--force", action="store_true", help="re-run the cell even if it is ok")
    cell.add_argument("--cache-dir", default=None, help="decoded-image cache")

    status = sub.add_parser("status", help="list a sweep's cells with their status, or missing")
    status.set_defaults(handler="bench.cli.sweep:cmd_status")
    status.add_argument("dir", type=Path, metavar="DIR", help="the sweep's results folder")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.add_argument("--summary", action="store_true",
                        help="also write DIR/summary.json and print the comparison table")

    slurm = sub.add_parser("slurm", help="write (and with --submit, submit) sbatch job arrays "
                                         "for a spec")
    slurm.set_defaults(handler="bench.cli.slurm:cmd_slurm")
    slurm.add_argument("spec", metavar="SPEC", help="a spec YAML or a built-in name")
    slurm.add_argument("--out", type=Path, default=None, help="the sweep's folder (default "
                                                              "runs/<name>)")
    slurm.add_argument("--submit", action="store_true",
                       help="submit the arrays and the summary job, and print the job ids")
    slurm.add_argument("--cpu", action="store_true", help="a CPU-only cluster: gloo ranks")
    slurm.add_argument("--partition", default=None)
    slurm.add_argument("--account", default=None)
    slurm.add_argument("--qos", default=None)
    slurm.add_argument("--time", default=None,
                       help="time limit per array task (default: the cell timeout + 10 min)")
    slurm.add_argument("--gpus-per-node", type=POSITIVE_INT, default=None,
                       help="GPUs per node (with --cpu: ranks per node); cells with more "
                            "devices span several nodes; default: each cell on one node")
    slurm.add_argument("--cpus-per-task", type=POSITIVE_INT, default=None,
                       help="CPUs per node of a task (default: 1 + loader workers per device)")
    slurm.add_argument("--constraint", default=None, help="node features, e.g. a100")
    slurm.add_argument("--exclusive", action="store_true",
                       help="whole nodes only (nothing else disturbs the measurement)")
    slurm.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                       help="an extra #SBATCH option for the arrays, e.g. --mail-type=END "
                            "(repeatable)")
    slurm.add_argument("--setup", action="append", default=[], metavar="LINE",
                       help="a shell line run before bench, e.g. 'module load cuda' "
                            "(repeatable)")
    slurm.add_argument("--python", default=None,
                       help="the interpreter the jobs run (default: this one, "
                            f"{sys.executable})")
    slurm.add_argument("--max-concurrent", type=POSITIVE_INT, default=None,
                       help="array throttle %%K: tasks of one array running at once "
                            "(default 8)")
    slurm.add_argument("--max-array-size", type=POSITIVE_INT, default=None,
                       help="split arrays above this many tasks (default: the cluster's "
                            "MaxArraySize with --submit, else 1001)")
    slurm.add_argument("--signal-before", type=POSITIVE_INT, default=None, metavar="SECONDS",
                       help="SIGTERM this long before the time limit (default 120)")
    slurm.add_argument("--force", action="store_true",
                       help="include cells that are already ok")
    slurm.add_argument("--cache-dir", default=None, help="decoded-image cache")


def add_commbench_command(sub) -> None:
    """`commbench`: all_reduce / all_gather / reduce_scatter bandwidth over a cell's backend
    and rank layout, per message size (nccl-tests' algbw and busbw)."""
    cb = sub.add_parser("commbench", help="collective bandwidth (all_reduce, all_gather, "
                                          "reduce_scatter) over the ranks a cell uses: "
                                          "time, algbw and busbw per message size")
    cb.set_defaults(handler="bench.cli.commbench:cmd_commbench")
    cb.add_argument("--ops", nargs="+", default=["all_reduce", "all_gather", "reduce_scatter"],
                    metavar="OP", help="all_reduce, all_gather, reduce_scatter (default all)")
    cb.add_argument("--min-bytes", default="1KiB", metavar="SIZE",
                    help="smallest message: the whole buffer, e.g. 1024, 1KiB, 4MiB "
                         "(default 1KiB)")
    cb.add_argument("--max-bytes", default="256MiB", metavar="SIZE",
                    help="largest message (default 256MiB)")
    cb.add_argument("--step", type=one_of(2, 4), default=2,
                    help="size factor between messages: 2 or 4 (default 2)")
    cb.add_argument("--devices", type=whole(2), default=2, help="ranks (GPUs or CPU ranks; "
                                                           "default 2)")
    cb.add_argument("--device", default="auto", help="auto, cpu (gloo) or cuda (NCCL)")
    cb.add_argument("--iters", type=POSITIVE_INT, default=20,
                    help="timed iterations per size up to 1 MiB; fewer above (at least 5)")
    cb.add_argument("--warmup", type=COUNT, default=5,
                    help="untimed iterations per size up to 1 MiB; 1 above")
    cb.add_argument("--json", action="store_true", help="print the figures as JSON")
    cb.add_argument("--out", type=Path, default=None, metavar="FILE",
                    help="also write the figures with the environment and layout as JSON")


def add_predict_command(sub) -> None:
    """`bench predict`: scaling prediction from a single-device record and an all-reduce cost
    model (bench/analysis/predict.py)."""
    p = sub.add_parser("predict", help="predict step time, throughput and efficiency of DDP, "
                                       "DeepSpeed ZeRO and FSDP on N devices from one device")
    p.set_defaults(handler="bench.cli.predict:cmd_predict")
    p.add_argument("results", type=Path, metavar="RESULTS", help="a results folder")
    p.add_argument("--devices", type=POSITIVE_INT, nargs="+", default=[2, 4, 8, 64], metavar="N")
    p.add_argument("--nodes", type=POSITIVE_INT, default=None,
                   help="nodes the devices span (CPU: cores × nodes; GPU: inter-node links)")
    p.add_argument("--strategy", nargs="+", default=["ddp"], metavar="NAME",
                   help="ddp, zero0-zero3 (DeepSpeed ZeRO stages), fsdp (default ddp)")
    p.add_argument("--scaling", default=None, help="strong or weak (default: the record's)")
    p.add_argument("--bandwidth", type=POSITIVE, default=None, metavar="GBps",
                   help="bus bandwidth in GB/s (nccl-tests busbw)")
    p.add_argument("--latency", type=NON_NEGATIVE, default=None, metavar="US",
                   help="per-hop latency in µs")
    p.add_argument("--commbench", type=Path, default=None, metavar="FILE",
                   help="a `bench commbench --out` (or --json) file, or {bandwidth_gbs, latency_us}")
    p.add_argument("--overlap", type=SHARE, default=None,
                   help="share of communication hidden behind backward (default: the "
                        "measured cells' breakdown.comm_overlap, else 0)")
    p.add_argument("--overhead", type=NON_NEGATIVE, default=0.0, metavar="MS",
                   help="fixed per-step overhead in ms on more than one device (default 0)")
    p.add_argument("--html", type=Path, default=None, metavar="FILE",
                   help="also write a plot: predicted efficiency with the measured points")
    p.add_argument("--algo", default="ring", help="ring or tree all-reduce")
    p.add_argument("--no-shared-host", action="store_true",
                   help="CPU: give every rank a whole single-device's cores")
    p.add_argument("--json", action="store_true", help="print the prediction as JSON")
