-- Every event before $end, in time order per user, as integers that NumPy merges into steps (campaign_eval.histories):
-- the user's rank among the users with such an event (by id), the item's row in the model's vocabulary (table vocab:
-- item_id -> item_index; 1, out of vocabulary, for an id it lacks), the item id's own rank (what a step merges on:
-- two ids the vocabulary lacks are still two items), the event type's flag (table flags; 0 for another type) and the
-- event's epoch second. An ordered list per user over every event held each user's whole history as strings and ran
-- out of memory at 10M events.
SELECT
    dense_rank() OVER (ORDER BY e.user_id) - 1 AS user_code,
    coalesce(v.item_index, 1) AS item_index,
    dense_rank() OVER (ORDER BY e.item_id) AS item_code,
    coalesce(f.flag, 0) AS flag,
    floor(epoch(e.event_ts))::BIGINT AS ts
FROM read_parquet($events) AS e
LEFT JOIN vocab AS v USING (item_id)
LEFT JOIN flags AS f USING (event_type)
WHERE e.event_ts < $end
ORDER BY e.user_id, e.event_ts, e.event_seq
