"""Rich progress for a sweep: one bar for the cells, one for the current cell's steps."""
from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from reports.text import console


class SweepProgress:
    def __init__(self, total_cells: int):
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=console(),
                                 transient=False)
        self.total_cells = total_cells
        self.sweep = None
        self.current = None

    def __enter__(self) -> "SweepProgress":
        self.progress.__enter__()
        self.sweep = self.progress.add_task("cells", total=self.total_cells)
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def on_event(self, event) -> None:
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
