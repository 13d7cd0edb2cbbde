"""Training: recipes, the loop, checkpoints, the schedule, validation."""
