-- BigQuery Standard SQL. Item rows that items.sql leaves out, counted by reason.
WITH classified AS (
  SELECT
    CASE
      WHEN item_id IS NULL THEN 'null_item_id'
      WHEN category IS NULL THEN 'null_category'
      WHEN available IS NULL THEN 'null_available'
      WHEN ROW_NUMBER() OVER (PARTITION BY item_id ORDER BY category, brand, price, title) > 1 THEN 'duplicate_item_id'
      ELSE 'kept'
    END AS reason
  FROM items
)
SELECT reason, COUNT(*) AS n
FROM classified
WHERE reason != 'kept'
GROUP BY reason
