-- BigQuery Standard SQL over the GA4 export `events_*` (locally one DuckDB table with `_TABLE_SUFFIX` as a column):
-- one contract event per element of `items` of the ecommerce events inside [@window_start, @window_end),
-- view_item -> view, add_to_cart -> cart, add_to_wishlist -> fav, purchase -> purchase, for users with at least
-- @min_events_per_user of them. The user is `user_id` when set, else `user_pseudo_id` (@user_key = 'user_pseudo_id'
-- always takes the latter). event_seq orders a user's events by event_timestamp, then view < fav < cart < purchase
-- where one instant holds several, then the position in `items`. ga4_drops.sql counts what this leaves out; keep
-- the filters of the two identical. The daily tables scanned are those whose suffix lies in [@suffix_start,
-- @suffix_end] (components.extract.ga4.suffix_bounds), and event_timestamp (UTC) cuts the window exactly.
WITH scanned AS (
  SELECT
    CASE WHEN @user_key = 'user_pseudo_id' THEN user_pseudo_id ELSE COALESCE(user_id, user_pseudo_id) END AS user_id,
    event_name,
    event_timestamp,
    event_params,
    items
  FROM ga4_events
  WHERE _TABLE_SUFFIX BETWEEN @suffix_start AND @suffix_end
    AND (CAST(@window_start AS TIMESTAMP) IS NULL OR event_timestamp >= UNIX_MICROS(CAST(@window_start AS TIMESTAMP)))
    AND (CAST(@window_end AS TIMESTAMP) IS NULL OR event_timestamp < UNIX_MICROS(CAST(@window_end AS TIMESTAMP)))
),
ecommerce AS (
  -- filtered before the UNNEST below: DuckDB joins an array per row much faster without the rows it would drop
  SELECT
    user_id,
    CASE event_name WHEN 'view_item' THEN 'view' WHEN 'add_to_cart' THEN 'cart' WHEN 'add_to_wishlist' THEN 'fav'
      ELSE 'purchase' END AS event_type,
    event_timestamp,
    (SELECT MAX(COALESCE(CAST(p.value.int_value AS STRING), p.value.string_value))
     FROM UNNEST(event_params) AS p WHERE p.key = 'ga_session_id') AS session_id,
    items
  FROM scanned
  WHERE event_name IN ('view_item', 'add_to_cart', 'add_to_wishlist', 'purchase') AND user_id IS NOT NULL
    AND ARRAY_LENGTH(items) > 0
),
exploded AS (
  SELECT
    e.user_id,
    NULLIF(NULLIF(it.item_id, ''), '(not set)') AS item_id,
    e.event_type,
    e.event_timestamp,
    pos AS item_pos,
    e.session_id
  FROM ecommerce AS e, UNNEST(e.items) AS it WITH OFFSET AS pos
),
kept AS (
  SELECT *
  FROM exploded
  WHERE item_id IS NOT NULL AND event_type IN UNNEST(@event_types)
),
active_users AS (
  SELECT user_id
  FROM kept
  GROUP BY user_id
  HAVING COUNT(*) >= @min_events_per_user
)
SELECT
  k.user_id,
  k.item_id,
  k.event_type,
  TIMESTAMP_MICROS(k.event_timestamp) AS event_ts,
  ROW_NUMBER() OVER (
    PARTITION BY k.user_id
    ORDER BY k.event_timestamp,
      CASE k.event_type WHEN 'view' THEN 0 WHEN 'fav' THEN 1 WHEN 'cart' THEN 2 ELSE 3 END, k.item_pos, k.item_id
  ) AS event_seq,
  k.session_id
FROM kept AS k
JOIN active_users AS a ON a.user_id = k.user_id
ORDER BY k.user_id, event_ts, event_seq
