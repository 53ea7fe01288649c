"""Loaders on tiny hand-written files (never the shared data)."""
import gzip

import pytest

from components import schema
from components.warehouse import loaders

AMAZON = """user_id,item_id,timestamp,cate_id,attr_ids
1,10,100,5,90 1 2 5
1,11,100,7,1 2 7
1,12,50,5,91 1 2 5
2,11,200,7,1 2 7
2,13,200,8,8
"""

TAOBAO = """1,100,7,pv,1000
1,100,7,cart,1000
1,100,7,buy,1010
2,101,8,fav,900
2,100,7,pv,950
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
    assert frame.event_ts.iloc[0].value // 1000 == 100_000_000  # seconds -> microseconds, UTC
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
        loaders.load_taobao(write(tmp_path, "t.csv", TAOBAO + "3,5,7,click,99\n"))


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(loaders.LoaderError, match="no such file"):
        loaders.load_amazon(tmp_path / "absent.csv")
    corrupt = tmp_path / "broken.csv.gz"
    corrupt.write_bytes(gzip.compress(AMAZON.encode())[:40])
    with pytest.raises(loaders.LoaderError, match="broken.csv.gz"):
        loaders.load_amazon(corrupt)
