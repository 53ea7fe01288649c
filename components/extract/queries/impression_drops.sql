-- BigQuery Standard SQL. Impression rows that impressions.sql leaves out, counted by their first failing reason.
WITH catalogue AS (
  SELECT DISTINCT item_id
  FROM items
  WHERE item_id IS NOT NULL AND category IS NOT NULL AND available IS NOT NULL
),
classified AS (
  SELECT
    CASE
      WHEN i.event_ts IS NULL THEN 'null_event_ts'
      WHEN (CAST(@window_start AS TIMESTAMP) IS NOT NULL AND i.event_ts < @window_start)
        OR (CAST(@window_end AS TIMESTAMP) IS NOT NULL AND i.event_ts >= @window_end) THEN 'outside_window'
      WHEN i.request_id IS NULL OR i.user_id IS NULL OR i.item_id IS NULL OR i.position IS NULL OR i.policy IS NULL
        OR i.clicked IS NULL OR i.purchased IS NULL THEN 'null_field'
      WHEN i.propensity IS NULL OR i.propensity <= 0 OR i.propensity > 1 THEN 'invalid_propensity'
      WHEN i.propensity < @min_propensity THEN 'propensity_below_floor'
      WHEN c.item_id IS NULL THEN 'unknown_item'
      WHEN i.clicked AND COALESCE(i.muted, FALSE) THEN 'clicked_and_muted'
      ELSE 'kept'
    END AS reason
  FROM impressions AS i
  LEFT JOIN catalogue AS c ON c.item_id = i.item_id
)
SELECT reason, COUNT(*) AS n
FROM classified
WHERE reason != 'kept'
GROUP BY reason
