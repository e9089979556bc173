"""How long `bench report` takes at campaign scale: one real tiny cell copied as N records
(each a repeat of its own), then the console report and the HTML report timed as a user runs
them, in fresh processes. Prints the figures; asserts nothing.

    .venv/bin/python benchmarks/report_scale.py --records 1000
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY = ["--device", "cpu", "--steps", "6", "--warmup", "2", "--batch", "8", "--width", "4",
        "--depth", "2", "--image-size", "32", "--sample-hz", "5", "--model", "unet"]


def bench(*args: str, check: bool = True) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bench", *args], check=check,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def campaign(folder: Path, records: int) -> None:
    """A real run of one single and one DDP cell, copied into `records` cells."""
    seed = folder / "seed"
    bench("run", *TINY, "--strategy", "single", "--strategy", "ddp", "--out", str(seed))
    cells = [d for d in seed.iterdir() if (d / "record.json").is_file()]
    out = folder / "campaign"
    out.mkdir()
    for i in range(records):
        source = cells[i % len(cells)]
        record = json.loads((source / "record.json").read_text())
        repeat = i // len(cells)
        cell_id = f"{record['cell_id']}-copy{repeat}"
        target = out / cell_id
        shutil.copytree(source, target)
        record.update(cell_id=cell_id, cell={**record["cell"], "repeat": repeat})
        (target / "record.json").write_text(json.dumps(record))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--tries", type=int, default=2, help="timed runs of each report")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        campaign(folder, args.records)
        out = folder / "campaign"
        console = [bench("report", str(out)) for _ in range(args.tries)]
        html = [bench("report", str(out), "--html", str(folder / "r.html"))
                for _ in range(args.tries)]
    print(f"{args.records} records: console report {min(console):.2f} s "
          f"(runs {', '.join(f'{t:.2f}' for t in console)}), with --html {min(html):.2f} s "
          f"(runs {', '.join(f'{t:.2f}' for t in html)})")


if __name__ == "__main__":
    main()
