"""window_days: the extract window relative to the run's own time."""

import datetime as dt

import pytest

from components.extract.runner import ExtractError, ExtractParams, relative_window

UTC = dt.timezone.utc


def test_relative_window_is_the_whole_days_before_the_run_day_and_moves_a_day_per_run():
    run = dt.datetime(2024, 3, 10, 5, 30, tzinfo=UTC)
    assert relative_window(7, run) == (dt.datetime(2024, 3, 3, tzinfo=UTC), dt.datetime(2024, 3, 10, tzinfo=UTC))
    retry = ExtractParams.parse("", "", "", 1, run_time="2024-03-10T23:59:00", window_days=7)
    assert (retry.window_start, retry.window_end) == relative_window(7, run)  # a retry the same day: same window
    tomorrow = ExtractParams.parse("", "", "", 1, run_time="2024-03-11T05:30:00Z", window_days=7)
    assert tomorrow.window_start - retry.window_start == dt.timedelta(days=1)
    assert ExtractParams.parse("2024-01-01", "", "", 1, run_time=run, window_days=0).window_end is None


def test_relative_window_refuses_fixed_bounds_and_negative_days():
    with pytest.raises(ExtractError, match="excludes window_start"):
        ExtractParams.parse("2024-01-01", "", "", 1, run_time="2024-03-10", window_days=7)
    with pytest.raises(ExtractError, match=">= 0"):
        ExtractParams.parse("", "", "", 1, run_time="2024-03-10", window_days=-1)
