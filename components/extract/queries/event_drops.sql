-- BigQuery Standard SQL. Every event row that events.sql leaves out, counted by its first failing reason.
-- An exact duplicate (every column equal) of a row that would be kept is counted once per extra copy.
WITH catalogue AS (
  SELECT DISTINCT item_id
  FROM items
  WHERE item_id IS NOT NULL AND category IS NOT NULL AND available IS NOT NULL
),
classified AS (
  SELECT
    e.user_id, e.item_id, e.event_type, e.event_ts, e.event_seq, e.session_id,
    CASE
      WHEN e.event_ts IS NULL THEN 'null_event_ts'
      WHEN e.event_ts > @run_time THEN 'future_event'
      WHEN (CAST(@window_start AS TIMESTAMP) IS NOT NULL AND e.event_ts < @window_start)
        OR (CAST(@window_end AS TIMESTAMP) IS NOT NULL AND e.event_ts >= @window_end) THEN 'outside_window'
      WHEN e.user_id IS NULL OR e.item_id IS NULL THEN 'null_id'
      WHEN e.event_seq IS NULL THEN 'null_event_seq'
      WHEN e.event_type IS NULL OR e.event_type NOT IN UNNEST(@known_event_types) THEN 'unknown_event_type'
      WHEN e.event_type NOT IN UNNEST(@event_types) THEN 'event_type_not_selected'
      WHEN c.item_id IS NULL THEN 'unknown_item'
      ELSE 'kept'
    END AS reason
  FROM events AS e
  LEFT JOIN catalogue AS c ON c.item_id = e.item_id
),
deduplicated AS (
  SELECT
    user_id,
    CASE
      WHEN reason = 'kept' AND ROW_NUMBER() OVER (
        PARTITION BY reason, user_id, item_id, event_type, event_ts, event_seq, session_id ORDER BY event_seq) > 1
        THEN 'duplicate_row'
      ELSE reason
    END AS reason
  FROM classified
),
kept_per_user AS (
  SELECT user_id, COUNT(*) AS n
  FROM deduplicated
  WHERE reason = 'kept'
  GROUP BY user_id
)
SELECT reason, COUNT(*) AS n
FROM deduplicated
WHERE reason != 'kept'
GROUP BY reason
UNION ALL
SELECT 'user_below_min_events' AS reason, COALESCE(SUM(n), 0) AS n
FROM kept_per_user
WHERE n < @min_events_per_user
