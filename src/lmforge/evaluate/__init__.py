"""Evaluation: tasks (lm-eval YAML subset), the harness, metrics with intervals, code execution in a sandbox,
contamination from lineage, perturbation, paired comparison and the report."""
