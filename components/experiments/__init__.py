"""Experiments beside the funnel: A/B bucketing, off-policy evaluation and a contextual-bandit re-ranker."""
