"""Per-epoch progress: a table on the console (as Spinning Up's logger prints) and progress.csv."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from pgnumpy.errors import UserError
from pgnumpy.fileio import atomic_write, deferred_sigint, open_nofollow


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
        self._file = None  # progress.csv, open for appending from the first row on
        if append is not False and self.csv_path is not None and self.csv_path.exists():
            self._truncate_after(append)

    def _truncate_after(self, epoch: int) -> None:
        """Drop rows past `epoch`, replacing the file atomically (an interrupt here used to leave
        it truncated); a damaged file is refused in one line, not half-read."""
        parsed = read_progress(self.csv_path)  # refuses a damaged file
        with open(self.csv_path, newline="") as f:
            raw = list(csv.reader(f))  # rewritten as it was written: the text, not floats
        self._keys = raw[0] if raw else None
        kept = [r for r, p in zip(raw[1:], parsed) if p["epoch"] <= epoch]
        buf = io.StringIO()
        csv.writer(buf).writerows(raw[:1] + kept)
        atomic_write(self.csv_path, buf.getvalue())

    def close(self) -> None:
        """Close progress.csv (every row is already flushed; train.run calls this at the end)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def read_all(self) -> list[dict]:
        """Every row of progress.csv (a resumed run's earlier epochs too), numbers as floats."""
        if self.csv_path is None or not self.csv_path.exists():
            return self.rows
        return read_progress(self.csv_path)

    def log(self, row: dict) -> None:
        if not self.rows and self._keys is not None and list(row) != self._keys:
            # a resumed run's progress.csv, its header edited: refused before a row is written
            raise UserError(f"{self.csv_path} has the columns {','.join(self._keys)}, not the "
                            f"ones this run writes ({','.join(row)}): restore its header")
        self.rows.append(row)
        if self._keys is None:
            self._keys = list(row)
            if self.csv_path is not None:
                atomic_write(self.csv_path, _table(self._keys, []))
        if self.csv_path is not None:
            # kept open: opening the file for each row cost ~0.1 ms an epoch, ~4% of a CartPole
            # run; each row is written and flushed whole with Ctrl-C held, so none is cut in half
            line = _table(None, [row], self._keys)
            with deferred_sigint():
                if self._file is None:
                    self._file = open_nofollow(self.csv_path, "a")
                self._file.write(line)
                self._file.flush()
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


def read_progress(path: Path) -> list[dict]:
    """The rows of a progress.csv, numbers as floats; a damaged file is a UserError."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = [{k: float(v) for k, v in r.items()} for r in reader]
    except (ValueError, TypeError, AttributeError, csv.Error, UnicodeDecodeError) as e:
        raise UserError(f"{path} is damaged (a row that is not numbers, or a missing field: "
                        f"{' '.join(str(e).split())}); restore it or start a new run") from None
    if rows and "epoch" not in rows[0]:
        raise UserError(f"{path} has no epoch column: not a pgnumpy progress file")
    return rows


def _table(keys: list[str] | None, rows: list[dict], order: list[str] | None = None) -> str:
    """CSV text: a header line (if keys) and one line per row."""
    buf = io.StringIO()
    w = csv.writer(buf)
    if keys is not None:
        w.writerow(keys)
    for r in rows:
        w.writerow([_csv(r[k]) for k in (order or keys)])
    return buf.getvalue()


def _csv(x) -> str:
    return repr(x) if isinstance(x, float) else str(x)


def _cell(x, w: int) -> str:
    if isinstance(x, float) and math.isfinite(x):
        return f"{x:>{w}.4g}" if abs(x) < 1e5 else f"{x:>{w}.4e}"
    return f"{x!s:>{w}}"
