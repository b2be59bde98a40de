"""The synthetic 3-D pose task (mannequin figures, no download) and untrained checkpoints in the released layout."""
