-- BigQuery Standard SQL. Logged impressions inside [@window_start, @window_end) with a propensity in
-- [@min_propensity, 1] (schema.MIN_PROPENSITY), complete fields and an item of the catalogue; impression_drops.sql
-- counts the rest. `muted` may be NULL (not logged); a slot both clicked and muted breaks the contract and is left out.
WITH catalogue AS (
  SELECT DISTINCT item_id
  FROM items
  WHERE item_id IS NOT NULL AND category IS NOT NULL AND available IS NOT NULL
)
SELECT i.request_id, i.user_id, i.item_id, i.position, i.propensity, i.policy, i.event_ts, i.clicked, i.purchased,
  i.muted
FROM impressions AS i
JOIN catalogue AS c ON c.item_id = i.item_id
WHERE i.event_ts IS NOT NULL
  AND (CAST(@window_start AS TIMESTAMP) IS NULL OR i.event_ts >= @window_start)
  AND (CAST(@window_end AS TIMESTAMP) IS NULL OR i.event_ts < @window_end)
  AND i.request_id IS NOT NULL AND i.user_id IS NOT NULL AND i.position IS NOT NULL AND i.policy IS NOT NULL
  AND i.clicked IS NOT NULL AND i.purchased IS NOT NULL
  AND NOT (i.clicked AND COALESCE(i.muted, FALSE))
  AND i.propensity >= @min_propensity AND i.propensity <= 1
ORDER BY i.event_ts, i.request_id, i.position
