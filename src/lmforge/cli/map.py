"""`lmforge map DATASET -o MAP`: embed, project, cluster, label and score every record; optionally open the studio."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def map_(
    dataset: Path = typer.Argument(..., metavar="DATASET", help="A dataset directory (from `lmforge data ingest`)."),
    out: Path = typer.Option(..., "-o", "--out", help="The map directory to write."),
    model: Optional[str] = typer.Option(None, help="A local sentence-transformers directory "
                                                   "(default: the packaged all-MiniLM-L6-v2)."),
    max_seq_length: int = typer.Option(256, help="Tokens of each record the embedding model reads."),
    levels: int = typer.Option(3, help="Levels of the cluster hierarchy (3 to 8), coarse to fine."),
    fit_sample: int = typer.Option(20_000, help="Records UMAP is fitted on; the rest are transformed."),
    near_threshold: float = typer.Option(0.8, help="Word 5-gram Jaccard at which records are near-duplicates."),
    semantic_threshold: float = typer.Option(0.95, help="Embedding cosine at which records are semantic duplicates."),
    seed: int = typer.Option(0, help="Seed of every random choice (sample, UMAP, k-means, MinHash)."),
    engine: str = typer.Option("local", help="Where embedding and MinHash run: local or ray."),
    overwrite: bool = typer.Option(False, help="Replace OUT if it exists."),
    open_studio: bool = typer.Option(False, "--open", help="Serve the studio on the map when it is written."),
    port: int = typer.Option(8765, min=0, max=65535, help="The studio's port with --open (0 picks a free one)."),
):
    """Map DATASET: embeddings, a 2-D layout, nested topic clusters with keywords, and per-record signals
    (length, short answers, repetition, exact / near / semantic duplicate groups) for the studio and curate."""
    import time

    from rich.console import Console
    from rich.table import Table

    from lmforge.curate.mapping import build_map

    t0 = time.perf_counter()
    info = build_map(dataset, out, model=model, max_seq_length=max_seq_length, fit_sample=fit_sample,
                     levels=levels, near_threshold=near_threshold, semantic_threshold=semantic_threshold,
                     seed=seed, engine=engine, overwrite=overwrite)
    console = Console()
    stats = info["stats"]
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("records", f"{info['records']:,}")
    table.add_row("clusters", " / ".join(f"{c:,}" for c in stats["clusters"]) + " (coarse to fine)")
    red = stats["redundant"]  # records beyond the first of their group
    table.add_row("duplicates", f"{red['exact']:,} exact · {red['near']:,} near · {red['semantic']:,} semantic")
    table.add_row("short answers", f"{stats['short_answers']:,}")
    from lmforge.io import read_json

    coarse = sorted((t for t in read_json(Path(out) / "topics.json")["topics"] if t["level"] == 0),
                    key=lambda t: -t["size"])
    for i, t in enumerate(coarse[:5]):
        table.add_row("top topics" if i == 0 else "", f"{t['size']:>7,}  {t['label']}")
    console.print(f"[green]wrote[/] {out} in {time.perf_counter() - t0:.1f} s")
    console.print(table)
    if open_studio:
        from lmforge.serve.studio import serve

        serve(out, port=port, open_browser=True)
    else:
        console.print(f"explore it: [bold]lmforge studio {out}[/]")
