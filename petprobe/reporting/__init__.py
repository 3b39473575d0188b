"""What a run reports: classification metrics, captioned figures and the heads' training curves."""
