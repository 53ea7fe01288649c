-- BigQuery Standard SQL over the GA4 export `events_*`: what ga4_events.sql reads and leaves out, as (kind, reason, n).
-- kind 'rows': export rows of the window, 'scanned', then dropped by their first failing reason (an ecommerce event
-- whose `items` is empty; no user key); kind 'event_names': rows dropped for an event name that maps to no event
-- type, by name (names go in a column of their own rather than into a concatenated reason, which the BigQuery
-- emulator's string rewrite mishandles over a wildcard table).
-- kind 'items': elements of `items` of the remaining rows dropped (no item_id: GA4 allows item_name alone, and a
-- name is no stable id). What the contract queries drop after (event types not selected, future events, exact
-- duplicates, users below @min_events_per_user) event_drops.sql counts, as for any warehouse.
-- kind 'noted' (nothing dropped): 'same_user_timestamp' counts kept rows that share user and event_timestamp with another one
-- (kept, in the order ga4_events.sql gives them); 'stitched' counts kept rows without user_id that took the one
-- user_id of their user_pseudo_id, 'several_user_ids' those left on a user_pseudo_id that carries several;
-- 'list_items' counts items of view_item_list / view_promotion rows (impressions without propensities).
-- Keep the filters and the user expression identical to ga4_events.sql.
WITH ga4_window AS (
  SELECT user_id, user_pseudo_id, event_name, event_timestamp, items
  FROM ga4_events
  WHERE _TABLE_SUFFIX BETWEEN @suffix_start AND @suffix_end
    AND (CAST(@window_start AS TIMESTAMP) IS NULL OR event_timestamp >= UNIX_MICROS(CAST(@window_start AS TIMESTAMP)))
    AND (CAST(@window_end AS TIMESTAMP) IS NULL OR event_timestamp < UNIX_MICROS(CAST(@window_end AS TIMESTAMP)))
),
ga4_pseudo_ids AS (
  -- the user_ids each user_pseudo_id carries in the window: one is the user its rows without user_id belong to
  SELECT user_pseudo_id, MIN(user_id) AS first_user_id, MAX(user_id) AS last_user_id
  FROM ga4_window
  WHERE user_pseudo_id IS NOT NULL AND user_id IS NOT NULL
  GROUP BY user_pseudo_id
),
scanned AS (
  SELECT
    @user_key <> 'user_pseudo_id' AND w.user_id IS NULL AND p.first_user_id = p.last_user_id AS stitched,
    @user_key <> 'user_pseudo_id' AND w.user_id IS NULL AND p.first_user_id < p.last_user_id AS several_user_ids,
    CASE
      WHEN @user_key = 'user_pseudo_id' THEN w.user_pseudo_id
      WHEN w.user_id IS NOT NULL THEN w.user_id
      WHEN p.first_user_id = p.last_user_id THEN p.first_user_id
      ELSE w.user_pseudo_id
    END AS user_id,
    w.event_name,
    w.event_timestamp,
    w.items
  FROM ga4_window AS w
  LEFT JOIN ga4_pseudo_ids AS p ON p.user_pseudo_id = w.user_pseudo_id
),
classified_rows AS (
  SELECT
    user_id,
    event_name,
    event_timestamp,
    items,
    stitched,
    several_user_ids,
    CASE
      WHEN event_name IS NULL OR event_name NOT IN ('view_item', 'add_to_cart', 'add_to_wishlist', 'purchase')
        THEN 'other_event_name'
      WHEN items IS NULL OR ARRAY_LENGTH(items) = 0 THEN 'no_items'
      WHEN user_id IS NULL THEN 'no_user_id'
      ELSE 'kept'
    END AS reason
  FROM scanned
),
classified_items AS (
  SELECT 'no_item_id' AS reason
  FROM (SELECT items FROM classified_rows WHERE reason = 'kept') AS r, UNNEST(r.items) AS it
  WHERE NULLIF(NULLIF(it.item_id, ''), '(not set)') IS NULL
),
same_instant AS (
  SELECT COUNT(*) AS n
  FROM classified_rows
  WHERE reason = 'kept'
  GROUP BY user_id, event_timestamp
  HAVING COUNT(*) > 1
)
SELECT 'rows' AS kind, 'scanned' AS reason, COUNT(*) AS n
FROM scanned
UNION ALL
SELECT 'rows' AS kind, reason, COUNT(*) AS n
FROM classified_rows
WHERE reason NOT IN ('kept', 'other_event_name')
GROUP BY reason
UNION ALL
SELECT 'event_names' AS kind, COALESCE(event_name, 'NULL') AS reason, COUNT(*) AS n
FROM classified_rows
WHERE reason = 'other_event_name'
GROUP BY event_name
UNION ALL
SELECT 'items' AS kind, reason, COUNT(*) AS n
FROM classified_items
GROUP BY reason
UNION ALL
SELECT 'noted' AS kind, 'same_user_timestamp' AS reason, COALESCE(SUM(n), 0) AS n
FROM same_instant
UNION ALL
SELECT 'noted' AS kind, 'stitched' AS reason, COUNT(*) AS n
FROM classified_rows
WHERE reason = 'kept' AND stitched
UNION ALL
SELECT 'noted' AS kind, 'several_user_ids' AS reason, COUNT(*) AS n
FROM classified_rows
WHERE reason = 'kept' AND several_user_ids
UNION ALL
SELECT 'noted' AS kind, 'list_items' AS reason, COUNT(*) AS n
FROM (SELECT items FROM scanned WHERE event_name IN ('view_item_list', 'view_promotion')) AS s, UNNEST(s.items) AS it
