"""Per-epoch progress: a table on the console (as Spinning Up's logger prints) and progress.csv."""

from __future__ import annotations

import csv
import math
from pathlib import Path


class Logger:
    def __init__(self, out_dir: str | Path | None = None, quiet: bool = False):
        self.quiet = quiet
        self.csv_path = Path(out_dir) / "progress.csv" if out_dir is not None else None
        self.rows: list[dict] = []
        self._keys: list[str] | None = None

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
            widths = [max(10, len(k)) for k in self._keys]
            if (len(self.rows) - 1) % 25 == 0:
                print("  ".join(f"{k:>{w}}" for k, w in zip(self._keys, widths)), flush=True)
            print("  ".join(_cell(row[k], w) for k, w in zip(self._keys, widths)), flush=True)


def _csv(x) -> str:
    return repr(x) if isinstance(x, float) else str(x)


def _cell(x, w: int) -> str:
    if isinstance(x, float) and math.isfinite(x):
        return f"{x:>{w}.4g}" if abs(x) < 1e5 else f"{x:>{w}.4e}"
    return f"{x!s:>{w}}"
