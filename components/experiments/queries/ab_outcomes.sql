-- BigQuery Standard SQL. A/B outcomes per arm from the logged impressions joined to each user's variant.
-- One row per arm (control, treatment) with its counts, CTR (clicks / impressions) and CVR (purchases / clicks),
-- each with a normal-approximation interval at @z standard errors; every row also carries the comparison:
-- treatment minus control and the pooled two-proportion z statistic for CTR and CVR, and the sample-ratio-mismatch
-- chi-square statistic of users per arm against @treatment_ratio (1 degree of freedom; p-values are computed by
-- the caller, BigQuery has no normal or chi-square CDF). Impressions count as independent trials: slots of one
-- request are positively correlated, so the intervals are somewhat too narrow.
-- `assignments` may be the export's recommendations table (one row per user and rank): it is deduplicated here.
WITH variants AS (
  SELECT DISTINCT user_id, variant
  FROM assignments
),
exposed AS (
  SELECT a.variant, i.user_id, i.request_id, i.clicked, i.purchased
  FROM impressions AS i
  JOIN variants AS a ON a.user_id = i.user_id
),
arms AS (
  SELECT
    variant,
    COUNT(DISTINCT user_id) AS users,
    COUNT(DISTINCT request_id) AS requests,
    COUNT(*) AS impressions,
    COUNTIF(clicked) AS clicks,
    COUNTIF(clicked AND purchased) AS purchases
  FROM exposed
  GROUP BY variant
),
rates AS (
  SELECT *, SAFE_DIVIDE(clicks, impressions) AS ctr, SAFE_DIVIDE(purchases, clicks) AS cvr
  FROM arms
),
comparison AS (
  SELECT
    t.ctr - c.ctr AS ctr_diff,
    SAFE_DIVIDE(t.ctr - c.ctr, SQRT(
      SAFE_DIVIDE(t.clicks + c.clicks, t.impressions + c.impressions)
      * (1 - SAFE_DIVIDE(t.clicks + c.clicks, t.impressions + c.impressions))
      * (1 / t.impressions + 1 / c.impressions))) AS ctr_z,
    t.cvr - c.cvr AS cvr_diff,
    SAFE_DIVIDE(t.cvr - c.cvr, SQRT(
      SAFE_DIVIDE(t.purchases + c.purchases, t.clicks + c.clicks)
      * (1 - SAFE_DIVIDE(t.purchases + c.purchases, t.clicks + c.clicks))
      * (SAFE_DIVIDE(1, t.clicks) + SAFE_DIVIDE(1, c.clicks)))) AS cvr_z,
    POW(t.users - @treatment_ratio * (t.users + c.users), 2) / (@treatment_ratio * (t.users + c.users))
      + POW(c.users - (1 - @treatment_ratio) * (t.users + c.users), 2) / ((1 - @treatment_ratio) * (t.users + c.users))
      AS srm_chi2
  FROM rates AS t
  CROSS JOIN rates AS c
  WHERE t.variant = 'treatment' AND c.variant = 'control'
)
SELECT
  r.variant, r.users, r.requests, r.impressions, r.clicks, r.purchases,
  r.ctr,
  r.ctr - @z * SQRT(r.ctr * (1 - r.ctr) / r.impressions) AS ctr_low,
  r.ctr + @z * SQRT(r.ctr * (1 - r.ctr) / r.impressions) AS ctr_high,
  r.cvr,
  r.cvr - @z * SQRT(SAFE_DIVIDE(r.cvr * (1 - r.cvr), r.clicks)) AS cvr_low,
  r.cvr + @z * SQRT(SAFE_DIVIDE(r.cvr * (1 - r.cvr), r.clicks)) AS cvr_high,
  x.ctr_diff, x.ctr_z, x.cvr_diff, x.cvr_z, x.srm_chi2
FROM rates AS r
CROSS JOIN comparison AS x
ORDER BY r.variant
