-- BigQuery Standard SQL over the GA4 export `events_*`: the catalogue of the items seen inside
-- [@window_start, @window_end) (in any event, item lists too), each with the latest item_category, item_brand,
-- price and item_name it carried. GA4 writes '(not set)' for a missing value; such values count as NULL.
-- category is 'unknown' when no event named one; GA4 logs no stock, so every item is available.
WITH scanned AS (
  SELECT event_timestamp, items
  FROM ga4_events
  WHERE _TABLE_SUFFIX BETWEEN @suffix_start AND @suffix_end
    AND (CAST(@window_start AS TIMESTAMP) IS NULL OR event_timestamp >= UNIX_MICROS(CAST(@window_start AS TIMESTAMP)))
    AND (CAST(@window_end AS TIMESTAMP) IS NULL OR event_timestamp < UNIX_MICROS(CAST(@window_end AS TIMESTAMP)))
    AND ARRAY_LENGTH(items) > 0
),
seen AS (
  SELECT
    NULLIF(NULLIF(it.item_id, ''), '(not set)') AS item_id,
    NULLIF(NULLIF(it.item_category, ''), '(not set)') AS category,
    NULLIF(NULLIF(it.item_brand, ''), '(not set)') AS brand,
    it.price,
    NULLIF(NULLIF(it.item_name, ''), '(not set)') AS title,
    s.event_timestamp,
    pos AS item_pos
  FROM scanned AS s, UNNEST(s.items) AS it WITH OFFSET AS pos
),
latest AS (
  SELECT
    item_id,
    LAST_VALUE(category IGNORE NULLS) OVER seen_order AS category,
    LAST_VALUE(brand IGNORE NULLS) OVER seen_order AS brand,
    LAST_VALUE(price IGNORE NULLS) OVER seen_order AS price,
    LAST_VALUE(title IGNORE NULLS) OVER seen_order AS title,
    ROW_NUMBER() OVER (PARTITION BY item_id ORDER BY event_timestamp, item_pos) AS nth
  FROM seen
  WHERE item_id IS NOT NULL
  WINDOW seen_order AS (PARTITION BY item_id ORDER BY event_timestamp, item_pos
    ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
)
SELECT item_id, COALESCE(category, 'unknown') AS category, brand, price, title, TRUE AS available
FROM latest
WHERE nth = 1
ORDER BY item_id
