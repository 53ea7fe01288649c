-- BigQuery Standard SQL over the GA4 export `events_*` (locally one DuckDB table with `_TABLE_SUFFIX` as a column):
-- the export as contract events, one per element of `items` of the ecommerce events inside
-- [@window_start, @window_end), view_item -> view, add_to_cart -> cart, add_to_wishlist -> fav, purchase -> purchase.
-- The user is `user_id` when set. GA4 sets user_id only on the events after a sign-in, so a shopper's browsing
-- before it has none: a row without user_id takes the user_id that its `user_pseudo_id` carries on other rows of the
-- window when that is one user_id (stitched), and stays `user_pseudo_id` when there is none, or several (a shared
-- browser). @user_key = 'user_pseudo_id' always takes user_pseudo_id.
-- event_seq orders a user's events by event_timestamp, then view < fav < cart < purchase where one instant holds
-- several, then the position in `items`; it is a DENSE_RANK, so exact duplicate rows (GA4 exports some) share one.
-- The extract reads this as the `events` table of the contract queries (events.sql, event_drops.sql), so every
-- contract rule (events after the run time, exact duplicates, event types, unknown items, events per user) applies
-- to GA4 as to any warehouse; ga4_drops.sql counts what this leaves out before them (keep the filters of the two
-- identical). The daily tables scanned are those whose suffix lies in [@suffix_start, @suffix_end]
-- (components.extract.ga4.suffix_bounds), and event_timestamp (UTC) cuts the window exactly.
WITH ga4_window AS (
  SELECT user_id, user_pseudo_id, event_name, event_timestamp, event_params, items
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
ga4_scanned AS (
  SELECT
    CASE
      WHEN @user_key = 'user_pseudo_id' THEN w.user_pseudo_id
      WHEN w.user_id IS NOT NULL THEN w.user_id
      WHEN p.first_user_id = p.last_user_id THEN p.first_user_id
      ELSE w.user_pseudo_id
    END AS user_id,
    w.event_name,
    w.event_timestamp,
    w.event_params,
    w.items
  FROM ga4_window AS w
  LEFT JOIN ga4_pseudo_ids AS p ON p.user_pseudo_id = w.user_pseudo_id
),
ga4_ecommerce AS (
  -- filtered before the UNNEST below: DuckDB joins an array per row much faster without the rows it would drop
  SELECT
    user_id,
    CASE event_name WHEN 'view_item' THEN 'view' WHEN 'add_to_cart' THEN 'cart' WHEN 'add_to_wishlist' THEN 'fav'
      ELSE 'purchase' END AS event_type,
    event_timestamp,
    (SELECT MAX(COALESCE(CAST(p.value.int_value AS STRING), p.value.string_value))
     FROM UNNEST(event_params) AS p WHERE p.key = 'ga_session_id') AS session_id,
    items
  FROM ga4_scanned
  WHERE event_name IN ('view_item', 'add_to_cart', 'add_to_wishlist', 'purchase') AND user_id IS NOT NULL
    AND ARRAY_LENGTH(items) > 0
),
ga4_exploded AS (
  SELECT
    e.user_id,
    NULLIF(NULLIF(it.item_id, ''), '(not set)') AS item_id,
    e.event_type,
    e.event_timestamp,
    pos AS item_pos,
    e.session_id
  FROM ga4_ecommerce AS e, UNNEST(e.items) AS it WITH OFFSET AS pos
)
SELECT
  x.user_id,
  x.item_id,
  x.event_type,
  TIMESTAMP_MICROS(x.event_timestamp) AS event_ts,
  DENSE_RANK() OVER (
    PARTITION BY x.user_id
    ORDER BY x.event_timestamp,
      CASE x.event_type WHEN 'view' THEN 0 WHEN 'fav' THEN 1 WHEN 'cart' THEN 2 ELSE 3 END, x.item_pos, x.item_id,
      x.session_id
  ) AS event_seq,
  x.session_id
FROM ga4_exploded AS x
WHERE x.item_id IS NOT NULL
