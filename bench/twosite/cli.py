"""The two-site commands: `obfuscate` (Site One sends only noisy images) and the saved-model
form of `evaluate` (Site One scores a model trained at Site Two and audits how much the noise
protects). The `evaluate` parser is the core's (bench.cli.parsers), which also scores bare
state dicts; given a saved MODEL, bench.cli.evaluate hands its arguments to `cmd_evaluate`."""
from __future__ import annotations

import json
from pathlib import Path

from bench.config.cell import Cell
from bench.config.numbers import FINITE, POSITIVE, POSITIVE_INT, SEED


def add_parsers(sub) -> None:
    """`obfuscate` (Site One sends only noisy images)."""
    ob = sub.add_parser("obfuscate", help="Site One: write noisy realisations of a data source, "
                                          "with a manifest, for training at Site Two")
    ob.set_defaults(handler="bench.twosite.cli:cmd_obfuscate")
    ob.add_argument("src", metavar="SRC", help="data source, as for --data")
    ob.add_argument("out", type=Path, metavar="OUT", help="new folder for Site Two")
    ob.add_argument("--sigma", type=POSITIVE, required=True,
                    help="noise σ on the [0,1] scale (above 0: σ 0 would send the clean images)")
    ob.add_argument("--mean", type=FINITE, default=0.0, help="noise mean (default 0)")
    ob.add_argument("--realisations", type=POSITIVE_INT, default=2,
                    help="independent noisy copies per image (noise2noise needs 2; default 2)")
    ob.add_argument("--seed", type=SEED, default=0, help="split seed of SRC (the noise key is a "
                                                        "fresh secret kept in the mapping file)")
    ob.add_argument("--image-size", type=POSITIVE_INT, default=Cell().image_size)
    ob.add_argument("--limit", type=POSITIVE_INT, default=None, help="use the first N images")
    ob.add_argument("--skip-bad", action="store_true", help="skip undecodable images")
    ob.add_argument("--mapping", type=Path, default=None, metavar="FILE",
                    help="Site One's file of original names and noise key (default "
                         "OUT.site-one-mapping.json beside OUT; never inside OUT)")
    ob.add_argument("--include-clean", action="store_true",
                    help="also send the clean images (the seed study's supervised mode: clean "
                         "data leaves Site One)")
    ob.add_argument("--cache-dir", default=None, help="decoded-image cache")


def cmd_obfuscate(args) -> int:
    from bench.twosite.obfuscate import PRIVACY_NOTE, export_obfuscated
    result = export_obfuscated(
        args.src, args.out, sigma=args.sigma, mean=args.mean, realisations=args.realisations,
        seed=args.seed, image_size=args.image_size, limit=args.limit, skip_bad=args.skip_bad,
        mapping=args.mapping, include_clean=args.include_clean, cache_dir=args.cache_dir)
    counts = "/".join(str(result.split_counts[name]) for name in ("train", "val", "test"))
    print(f"wrote {result.images} images × {result.realisations} noisy realisations "
          f"(train/val/test {counts}) to {result.out}, checked by {result.out}/manifest.json")
    if result.clean_included:
        print("the clean images were included: clean data leaves Site One with this folder")
    print(f"keep {result.mapping} at Site One: it maps ids to source names and holds the "
          "noise key")
    print(f"note: {PRIVACY_NOTE}")
    return 0


def cmd_evaluate(args) -> int:
    from bench.record import store
    from bench.sweep.hardware import default_device_type
    from bench.sweep.plan import check_output_dir
    from bench.twosite.audit import attach_to_record, audit_lines, evaluate_model
    device = default_device_type(args.device)
    if args.out is not None:
        check_output_dir(args.out)
    report = evaluate_model(
        args.model, args.data, sigmas=args.sigma, seed=args.seed, noise_mean=args.mean,
        image_size=args.image_size, limit=args.limit, skip_bad=args.skip_bad,
        realisations=args.realisations, device=device, cache_dir=args.cache_dir)
    if args.out is not None:
        store.write_json(args.out, report)
    updated = attach_to_record(report)  # so `bench report` shows this audit too
    text = (json.dumps(report, indent=2, default=str) if args.json
            else "\n".join(audit_lines(report)))
    print(text)
    if updated is not None and not args.json:
        print(f"audit written into {updated}")
    return 0
