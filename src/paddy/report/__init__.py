"""The report stage: what the ensemble gets wrong, out of fold. Its figures (analysis: per-class metrics,
confusion, top losses, calibration), its pictures (pictures) and the stage's one call (build); a multi-label
competition's figures per tag (tag_analysis) and its report (tags)."""
