-- Items bought or carted together: per item, its top $k partners by a popularity-corrected score (DuckDB dialect).
-- Reads the table basket_items(basket, item_id) that baskets.sql builds, and candidate_items(item_id), the
-- partners allowed (the available catalogue); an item is never its own partner.
-- For a pair (i, j): together = baskets holding both; n_i, n_j = baskets holding each; N = baskets;
-- expected = n_i * n_j / N (the pairs' count if i and j were bought independently). Scores:
--   count        together                            (plain co-occurrence: popular partners win)
--   lift         together / expected                 (popularity-corrected, but one basket makes a rare item top)
--   shrunk_lift  together / (expected + $alpha)      (lift for well-supported pairs, counts for rare ones: $alpha is
--                                                     a pseudo-count of expected baskets that a rare partner lacks)
-- Parameters: $min_together, $method, $alpha, $k.
WITH kept AS (SELECT basket, item_id FROM basket_items),
item_baskets AS (
    SELECT item_id, count(*) AS baskets FROM kept GROUP BY item_id
),
total AS (
    SELECT count(DISTINCT basket) AS baskets FROM kept
),
pairs AS (
    SELECT a.item_id, b.item_id AS other_id, count(*) AS together
    FROM kept AS a
    JOIN kept AS b ON a.basket = b.basket AND a.item_id <> b.item_id
    JOIN candidate_items AS c ON c.item_id = b.item_id
    GROUP BY a.item_id, b.item_id
    HAVING count(*) >= $min_together
),
scored AS (
    SELECT
        p.item_id,
        p.other_id,
        p.together,
        ni.baskets AS item_baskets,
        nj.baskets AS other_baskets,
        ni.baskets * nj.baskets / t.baskets AS expected
    FROM pairs AS p
    JOIN item_baskets AS ni ON ni.item_id = p.item_id
    JOIN item_baskets AS nj ON nj.item_id = p.other_id
    CROSS JOIN total AS t
),
ranked AS (
    SELECT
        *,
        CASE $method
            WHEN 'count' THEN CAST(together AS DOUBLE)
            WHEN 'lift' THEN together / expected
            WHEN 'shrunk_lift' THEN together / (expected + $alpha)
        END AS score
    FROM scored
)
SELECT item_id, other_id, score, together, item_baskets, other_baskets, expected, rank
FROM (
    SELECT *, row_number() OVER (PARTITION BY item_id ORDER BY score DESC, together DESC, other_id) AS rank
    FROM ranked
)
WHERE rank <= $k
ORDER BY item_id, rank
