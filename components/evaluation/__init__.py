"""The evaluation stage: full-catalogue metrics of retrieval, the funnel and the baselines, breakdowns,
the blessing gate against baselines and the last blessed model, and an HTML report."""
