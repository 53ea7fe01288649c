"""Two-tower retrieval stage: towers, model, training, export, index, evaluation and the KFP component."""
