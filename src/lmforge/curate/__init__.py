"""See and curate a dataset: embed, project, cluster, label, per-record signals, deduplicate, decontaminate,
balance — and write the decisions back as a new dataset that `lmforge train` consumes.

Modules (one job each):
  embed.py          sentence embeddings (default: the packaged all-MiniLM-L6-v2), cached by content hash
  project.py        UMAP to 2-D (fit on a sample, transform the rest when large)
  cluster.py        a coarse-to-fine cluster hierarchy
  label.py          c-TF-IDF keywords per cluster
  signals.py        length, short-answer flag, repetition ratio
  dedup.py          exact, near (MinHash LSH) and semantic duplicate groups
  decontaminate.py  n-gram overlap against evaluation sets
  mapping.py        the `lmforge map` pipeline and the map artifact (points.parquet, topics.json, ...)
  recipe.py         curation recipes (pydantic) and the `lmforge curate` pipeline + report
  engine.py         local vs Ray execution of the heavy stages
"""
