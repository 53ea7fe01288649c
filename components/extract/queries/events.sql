-- BigQuery Standard SQL. Events of the selected types inside [@window_start, @window_end) (a NULL bound is open)
-- and not after @run_time, on items of the catalogue, one row per exact duplicate, for users with at least
-- @min_events_per_user such events.
-- Rows this query leaves out are counted, by reason, in event_drops.sql; keep the two filters identical.
WITH catalogue AS (
  SELECT DISTINCT item_id
  FROM items
  WHERE item_id IS NOT NULL AND category IS NOT NULL AND available IS NOT NULL
),
kept AS (
  SELECT e.user_id, e.item_id, e.event_type, e.event_ts, e.event_seq, e.session_id
  FROM events AS e
  JOIN catalogue AS c ON c.item_id = e.item_id
  WHERE e.event_ts IS NOT NULL
    AND e.event_ts <= @run_time
    AND (CAST(@window_start AS TIMESTAMP) IS NULL OR e.event_ts >= @window_start)
    AND (CAST(@window_end AS TIMESTAMP) IS NULL OR e.event_ts < @window_end)
    AND e.user_id IS NOT NULL
    AND e.event_seq IS NOT NULL
    AND e.event_type IN UNNEST(@event_types)
  QUALIFY ROW_NUMBER() OVER (
    PARTITION BY e.user_id, e.item_id, e.event_type, e.event_ts, e.event_seq, e.session_id ORDER BY e.event_seq) = 1
),
active_users AS (
  SELECT user_id
  FROM kept
  GROUP BY user_id
  HAVING COUNT(*) >= @min_events_per_user
)
SELECT k.user_id, k.item_id, k.event_type, k.event_ts, k.event_seq, k.session_id
FROM kept AS k
JOIN active_users AS a ON a.user_id = k.user_id
ORDER BY k.user_id, k.event_ts, k.event_seq
