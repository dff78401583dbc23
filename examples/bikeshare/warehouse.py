"""Write ISLP's Bikeshare table (hourly bike rentals in Washington D.C., 2011) into a SQLite warehouse.

The data ships inside the ISLP package on PyPI (ISLP/data/Bikeshare.csv). Only the wheel is
needed, not ISLP itself (whose dependencies include PyTorch): ``make backtest-example`` fetches
it with ``pip download ISLP==0.6.0 --no-deps``. The CSV has no timestamp column, but its ``day``
is the day of 2011 and ``hr`` the hour, so the timestamp is rebuilt from them.

    python examples/bikeshare/warehouse.py WHEEL sqlite:///data/bikeshare.db
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

MEMBER = "ISLP/data/Bikeshare.csv"
TABLE = "bikeshare"


def read_bikeshare(wheel: Path) -> pd.DataFrame:
    with zipfile.ZipFile(wheel) as archive, archive.open(MEMBER) as csv:
        frame = pd.read_csv(csv)
    frame.insert(0, "ts", pd.Timestamp("2011-01-01") + pd.to_timedelta(frame["day"] - 1, unit="D")
                 + pd.to_timedelta(frame["hr"].astype(int), unit="h"))
    return frame


def main(wheel: str, url: str) -> None:
    frame = read_bikeshare(Path(wheel))
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        frame.to_sql(TABLE, conn, if_exists="replace", index=False)
    engine.dispose()
    print(f"wrote {len(frame):,} rows ({frame['ts'].min()} .. {frame['ts'].max()}) to table {TABLE!r} of {url}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
