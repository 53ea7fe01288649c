-- BigQuery Standard SQL. The catalogue: one row per item id (the first by category, brand, price, title),
-- without rows that break the items contract; item_drops.sql counts those.
SELECT item_id, category, brand, price, title, available
FROM items
WHERE item_id IS NOT NULL AND category IS NOT NULL AND available IS NOT NULL
QUALIFY ROW_NUMBER() OVER (PARTITION BY item_id ORDER BY category, brand, price, title) = 1
ORDER BY item_id
