"""Per-epoch progress: a table on the console (as Spinning Up's logger prints) and progress.csv."""

from __future__ import annotations

import csv
import math
from pathlib import Path


class Logger:
    def __init__(self, out_dir: str | Path | None = None, quiet: bool = False,
                 append: int | bool = False):
        """append=EPOCH: continue an existing progress.csv (a resumed run) after dropping rows
        past EPOCH, the checkpoint's (an interrupt can land between a row and its checkpoint)."""
        self.quiet = quiet
        self.csv_path = Path(out_dir) / "progress.csv" if out_dir is not None else None
        self.rows: list[dict] = []
        self.total_epochs: int | None = None  # set by the algorithm: enables the ETA column
        self._keys: list[str] | None = None
        if append is not False and self.csv_path is not None and self.csv_path.exists():
            self._truncate_after(append)

    def _truncate_after(self, epoch: int) -> None:
        with open(self.csv_path, newline="") as f:
            rows = list(csv.reader(f))
        self._keys = rows[0] if rows else None
        i = self._keys.index("epoch") if self._keys else 0
        kept = [r for r in rows[1:] if int(r[i]) <= epoch]
        with open(self.csv_path, "w", newline="") as f:
            csv.writer(f).writerows(rows[:1] + kept)

    def read_all(self) -> list[dict]:
        """Every row of progress.csv (a resumed run's earlier epochs too), numbers as floats."""
        if self.csv_path is None or not self.csv_path.exists():
            return self.rows
        with open(self.csv_path, newline="") as f:
            return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]

    def log(self, row: dict) -> None:
        self.rows.append(row)
        if self._keys is None:
            self._keys = list(row)
            if self.csv_path is not None:
                with open(self.csv_path, "w", newline="") as f:
                    csv.writer(f).writerow(self._keys)
        if self.csv_path is not None:
            with open(self.csv_path, "a", newline="") as f:
                csv.writer(f).writerow([_csv(row[k]) for k in self._keys])
        if not self.quiet:
            shown = dict(row)
            if self.total_epochs is not None:  # console only: time left at the recent pace
                done = row["epoch"] + 1
                shown["eta_s"] = round(row["wall_s"] / done * (self.total_epochs - done), 1)
            keys = list(shown)
            widths = [max(10, len(k)) for k in keys]
            if (len(self.rows) - 1) % 25 == 0:
                print("  ".join(f"{k:>{w}}" for k, w in zip(keys, widths)), flush=True)
            print("  ".join(_cell(shown[k], w) for k, w in zip(keys, widths)), flush=True)


def _csv(x) -> str:
    return repr(x) if isinstance(x, float) else str(x)


def _cell(x, w: int) -> str:
    if isinstance(x, float) and math.isfinite(x):
        return f"{x:>{w}.4g}" if abs(x) < 1e5 else f"{x:>{w}.4e}"
    return f"{x!s:>{w}}"
