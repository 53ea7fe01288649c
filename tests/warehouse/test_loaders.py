"""Loaders on tiny hand-written files (never the shared data)."""

import datetime as dt
import gzip

import numpy as np
import pyarrow as pa
import pytest

from components import schema
from components.warehouse import loaders, timestamps

AMAZON = """user_id,item_id,timestamp,cate_id,attr_ids
1,10,1400000100,5,90 1 2 5
1,11,1400000100,7,1 2 7
1,12,1400000050,5,91 1 2 5
2,11,1400000200,7,1 2 7
2,13,1400000200,8,8
"""

TAOBAO = """1,100,7,pv,1511001000
1,100,7,cart,1511001000
1,100,7,buy,1511001010
2,101,8,fav,1511000900
2,100,7,pv,1511000950
"""


def write(tmp_path, name, text, compress=False):
    path = tmp_path / name
    if compress:
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


def test_amazon_rows_are_purchases_in_file_order(tmp_path):
    events, items = loaders.load_amazon(write(tmp_path, "a.csv.gz", AMAZON, compress=True))
    schema.validate_table(events, schema.EVENTS, "events")
    frame = events.to_pandas()
    assert list(frame.event_type.unique()) == ["purchase"]
    assert frame.event_seq.tolist() == [0, 1, 2, 3, 4]
    assert frame.event_ts.iloc[0].value // 1000 == 1_400_000_100_000_000  # seconds -> microseconds, UTC
    ordered = frame.sort_values(["user_id", "event_ts", "event_seq"])
    assert ordered[ordered.user_id == "1"].item_id.tolist() == ["12", "10", "11"]  # ties keep file order


def test_amazon_brand_is_a_leading_token_that_is_no_category(tmp_path):
    _, items = loaders.load_amazon(write(tmp_path, "a.csv", AMAZON))
    by_id = items.to_pandas().set_index("item_id")
    assert by_id.loc["10", "brand"] == "90" and by_id.loc["12", "brand"] == "91"
    assert by_id.brand.isna()[["11", "13"]].all()  # "1" is a category path token, "8" is a leaf category
    assert by_id.category.to_dict() == {"10": "5", "11": "7", "12": "5", "13": "8"}
    assert by_id.available.all() and len(by_id) == 4


def test_taobao_behaviours_map_to_event_types(tmp_path):
    events, items = loaders.load_taobao(write(tmp_path, "UserBehavior.csv", TAOBAO))
    frame = events.to_pandas()
    assert frame.event_type.tolist() == ["view", "cart", "purchase", "fav", "view"]
    assert frame.event_seq.tolist() == [0, 1, 2, 3, 4]
    assert items.to_pandas().set_index("item_id").category.to_dict() == {"100": "7", "101": "8"}


def test_taobao_header_line_is_accepted(tmp_path):
    path = write(tmp_path, "t.csv", "user_id,item_id,category_id,behavior_type,timestamp\n" + TAOBAO)
    events, _ = loaders.load_taobao(path)
    assert events.num_rows == 5


@pytest.mark.parametrize(
    "text, message",
    [
        ("user_id,item_id,timestamp,cate_id\n1,2,3,4\n", "attr_ids"),
        ("user_id,item_id,timestamp,cate_id,attr_ids\n1,2,yesterday,4,4\n", "not a valid CSV"),
        ("user_id,item_id,timestamp,cate_id,attr_ids\n1,,3,4,4\n", "'item_id' has 1 empty"),
        ("user_id,item_id,timestamp,cate_id,attr_ids\n", "no rows"),
        ("user_id,item_id,timestamp,cate_id,attr_ids\n1,2,3,4\n", "not a valid CSV"),
    ],
)
def test_amazon_bad_files_name_the_problem(tmp_path, text, message):
    path = write(tmp_path, "bad.csv", text)
    with pytest.raises(loaders.LoaderError, match=message) as err:
        loaders.load_amazon(path)
    assert "bad.csv" in str(err.value)


def test_taobao_unknown_behaviour_is_an_error(tmp_path):
    with pytest.raises(loaders.LoaderError, match="unknown behavior_type.*'click'"):
        loaders.load_taobao(write(tmp_path, "t.csv", TAOBAO + "3,5,7,click,1511000999\n"))


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(loaders.LoaderError, match="no such file"):
        loaders.load_amazon(tmp_path / "absent.csv")
    corrupt = tmp_path / "broken.csv.gz"
    corrupt.write_bytes(gzip.compress(AMAZON.encode())[:40])
    with pytest.raises(loaders.LoaderError, match="broken.csv.gz"):
        loaders.load_amazon(corrupt)


def test_case03_timestamps_outside_the_sane_range_are_refused_with_row_and_value(tmp_path):
    micro = AMAZON.replace("1400000050", "1600000000000000")  # the third data row, in microseconds
    with pytest.raises(
        timestamps.TimestampError,
        match=r"a.csv: column 'timestamp': 1 timestamp\(s\) outside "
        r"1990-01-01 .. .*; first at row 3: 1600000000000000 unix seconds; it reads as microseconds: "
        r"2020-09-13",
    ):
        loaders.load_amazon(write(tmp_path, "a.csv", micro))
    milli = TAOBAO.replace("1511000900", "1511000900000")
    with pytest.raises(
        timestamps.TimestampError,
        match=r"row 4: 1511000900000 unix seconds; it reads as "
        r"milliseconds: 2017-11-18",
    ):
        loaders.load_taobao(write(tmp_path, "t.csv", milli))
    for value in ("631151999", "-5", "9999999999"):  # 1989-12-31, before the epoch, the year 2286
        with pytest.raises(timestamps.TimestampError, match=f"first at row 1: {value} unix seconds$"):
            loaders.load_taobao(write(tmp_path, "t.csv", TAOBAO.replace("1511001000", value, 1)))
    now = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    limit = int((now + dt.timedelta(days=1)).timestamp())
    assert timestamps.from_unix_seconds(np.array([limit]), "x", now=now).to_pylist()[0] == now + dt.timedelta(days=1)
    with pytest.raises(timestamps.TimestampError, match="2030-01-02 00:00 UTC; first at row 2"):
        timestamps.from_unix_seconds(np.array([limit, limit + 1]), "x", now=now)


def test_case03_parsed_timestamps_get_the_same_check(tmp_path):
    parsed = pa.array([dt.datetime(2020, 5, 1), dt.datetime(2099, 1, 1)], pa.timestamp("ns"))
    with pytest.raises(timestamps.TimestampError, match=r"events.csv: 1 timestamp\(s\) .*first at row 2: 2099-01-01"):
        timestamps.check_timestamps(parsed, "events.csv")
    timestamps.check_timestamps(parsed[:1], "events.csv")
