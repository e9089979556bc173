"""A sweep's progress: on a terminal, Rich bars (one for the cells, one for the current cell's
steps); into a file or a pipe (nohup, a batch job), one line as each cell starts and ends, so
a log shows where a long sweep is instead of nothing until it exits."""
from __future__ import annotations

import time

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from reports.text import console


class SweepProgress:
    def __init__(self, total_cells: int):
        self.live = console().is_terminal
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=console(),
                                 transient=False) if self.live else None
        self.total_cells = total_cells
        self.sweep = None
        self.current = None
        self.done = 0
        self.started = 0.0

    def __enter__(self) -> "SweepProgress":
        if self.live:
            self.progress.__enter__()
            self.sweep = self.progress.add_task("cells", total=self.total_cells)
        return self

    def __exit__(self, *exc) -> None:
        if self.live:
            self.progress.__exit__(*exc)

    def on_event(self, event) -> None:
        if self.live:
            self._bars(event)
        elif event.kind in ("start", "end", "skip"):
            self._line(event)

    def _line(self, event) -> None:
        label = event.cell.cell_id
        if event.kind == "start":
            self.started = time.monotonic()
            number, text = self.done + 1, f"started ({event.steps} steps)"
        else:
            self.done += 1
            status = (event.record or {}).get("status", "?")
            number, text = self.done, (f"skipped: {status}" if event.kind == "skip" else
                                       f"{status} after {time.monotonic() - self.started:.0f} s")
        console().print(f"cell {number}/{self.total_cells} {label}: {text}", soft_wrap=True,
                        highlight=False)

    def _bars(self, event) -> None:
        label = event.cell.cell_id
        if event.kind == "start":
            self.current = self.progress.add_task(f"  {label}", total=event.steps)
        elif event.kind == "progress" and self.current is not None:
            self.progress.update(self.current, completed=event.step,
                                 description=f"  {label} [{event.phase}]")
        elif event.kind in ("end", "skip"):
            status = (event.record or {}).get("status", "?")
            if self.current is not None:
                self.progress.update(self.current, completed=event.cell.steps,
                                     description=f"  {label} [{status}]")
                self.current = None
            else:
                self.progress.add_task(f"  {label} [skipped: {status}]", total=1, completed=1)
            self.progress.advance(self.sweep)
