"""The campaign bench's own time split fits its two windows (valid, then test) into the data after the cut."""

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.export.campaign_eval import fitted_window_days, quantile_cut

DAY = dt.timedelta(days=1)
START = dt.datetime(2017, 11, 25, tzinfo=dt.UTC)


def events(tmp_path, days: float):
    """One event an hour from START to START + `days`, both included."""
    times = [START + dt.timedelta(hours=h) for h in range(int(days * 24) + 1)]
    path = tmp_path / "events.parquet"
    pq.write_table(pa.table({"event_ts": pa.array(times, pa.timestamp("us", tz="UTC"))}), path)
    return path


@pytest.mark.parametrize(
    "days_after_cut,expected",
    [(30, 7.0), (14.0, 7.0), (5.5, 2.0), (2.0, 1.0), (1.0, 0.5)],
)
def test_windows_shrink_to_what_the_data_holds_after_the_cut(tmp_path, days_after_cut, expected):
    cut = START + 10 * DAY
    path = events(tmp_path, 10 + days_after_cut)
    assert fitted_window_days(path, cut, 7.0) == pytest.approx(expected)


def test_taobao_like_nine_days_keep_a_test_window(tmp_path):
    """Taobao's sample spans nine days: the 80% cut leaves two windows of one day, not one empty test week."""
    path = events(tmp_path, 9)
    cut = quantile_cut(path)
    assert cut == START + 7 * DAY
    assert fitted_window_days(path, cut, 7.0) == 1.0
