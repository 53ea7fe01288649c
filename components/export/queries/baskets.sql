-- Baskets: the distinct items of one user's events of $event_types in one session, or in one UTC day where the
-- session is unknown ($basket = 'session'), or always in one UTC day ($basket = 'day'); DuckDB dialect, run with
-- TimeZone = 'UTC'. Baskets with more than $max_basket_items distinct items (a bulk buyer, a crawler) are left out.
-- Parameters: $events (Parquet path or glob), $event_types (VARCHAR[]), $start, $end (TIMESTAMPTZ or NULL: open),
-- $basket, $max_basket_items. Read by cooccurrence.sql (as the table basket_items) and by the held-out evaluation.
SELECT basket, item_id
FROM (
    SELECT DISTINCT
        user_id || chr(31) || CASE
            WHEN $basket = 'session' AND session_id IS NOT NULL THEN 's' || session_id
            ELSE 'd' || CAST(CAST(event_ts AS DATE) AS VARCHAR)
        END AS basket,
        item_id
    FROM read_parquet($events)
    WHERE list_contains($event_types, event_type)
      AND ($start IS NULL OR event_ts >= $start)
      AND ($end IS NULL OR event_ts < $end)
)
QUALIFY count(*) OVER (PARTITION BY basket) <= $max_basket_items
