"""Users' latest histories from an event log, as vocabulary indices, the way the features stage builds them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from components import schema


def user_histories(
    events: pd.DataFrame, item_index: dict[str, int], item_category: np.ndarray, max_len: int
) -> tuple[dict[str, int], np.ndarray, np.ndarray]:
    """Each user's last max_len steps (consecutive repeats collapsed, as the features stage does), as vocabulary
    indices left-padded with PAD: (row of each user, items [U, L], categories [U, L])."""
    items = events["item_id"].map(item_index).fillna(schema.OOV_INDEX).astype(np.int64).to_numpy()
    users = events["user_id"].to_numpy()
    keep = np.ones(len(items), dtype=bool)
    keep[1:] = (users[1:] != users[:-1]) | (items[1:] != items[:-1])
    steps = pd.DataFrame({"user": users[keep], "item": items[keep]})
    steps = steps.groupby("user", sort=True).tail(max_len)
    rows = {user: row for row, user in enumerate(steps["user"].unique())}
    user_row = steps["user"].map(rows).to_numpy()
    position = steps.groupby("user", sort=False).cumcount().to_numpy()
    length = np.bincount(user_row, minlength=len(rows))
    hist = np.zeros((len(rows), max_len), dtype=np.int64)
    hist[user_row, max_len - length[user_row] + position] = steps["item"].to_numpy()
    return rows, hist, np.where(hist > 0, item_category[hist], schema.PAD_INDEX)
