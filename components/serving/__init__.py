"""The serving path: the retrieval -> ranking funnel that evaluation measures and export runs."""
