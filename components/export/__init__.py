"""Export: batch-score every user through the funnel and write recommendations and similar items."""
