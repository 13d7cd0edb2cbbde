"""`lmforge curate`: apply a recipe's steps in order to a dataset and write the curated dataset + a report.

Every step sees only the records that survived the steps before it; dedup steps keep the first record
(in dataset order) of each group. The output keeps dataset order, ids and splits, and its dataset.json
names its parent and the recipe."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lmforge.curate.recipe import CurateRecipe
from lmforge.data.dataset import Dataset, DatasetWriter, record_text
from lmforge.errors import RecipeError
from lmforge.io import atomic_dir

EXAMPLES_PER_STEP = 5
EXCERPT_CHARS = 280


@dataclass
class Context:
    """What the steps share: the records, lazily computed embeddings, and the map when one is given."""

    dataset: Dataset
    records: list[dict]
    texts: list[str]
    recipe: CurateRecipe
    engine: object
    map: object | None = None
    _embeddings: np.ndarray | None = field(default=None, repr=False)

    def embeddings(self) -> np.ndarray:
        if self._embeddings is None:
            if self.map is not None:
                self._embeddings = np.asarray(self.map.embeddings())
            else:
                spec = self.recipe.embedding
                self._embeddings = self.engine.embed(self.texts, model=spec.model,
                                                     max_seq_length=spec.max_seq_length,
                                                     cache_key=self.dataset.content_hash)
        return self._embeddings

    def need_map(self, step: str) -> object:
        if self.map is None:
            raise _map_required(step)
        return self.map


def _map_required(step: str) -> RecipeError:
    return RecipeError(f"step {step} needs the dataset's map (clusters and tags live there)",
                       hint="run `lmforge map DATASET -o MAP` and set `map: MAP` in the recipe or pass --map MAP")


def _redundant(groups: np.ndarray) -> np.ndarray:
    return (groups != -1) & (groups != np.arange(len(groups)))


def _run_step(kind: str, p, ctx: Context, rows: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(remove mask over `rows`, a reason per removed row) for one step."""
    from lmforge.curate import dedup, signals

    texts = [ctx.texts[i] for i in rows]
    ids = [ctx.records[i]["id"] for i in rows]
    if kind == "exact_dedup":
        g = dedup.exact_groups(texts, normalize=p.normalize)
        remove = _redundant(g)
        return remove, [f"same text as {ids[g[j]]}" for j in np.flatnonzero(remove)]
    if kind == "near_dedup":
        sig = ctx.engine.minhash(texts, num_perm=p.num_perm, ngram=p.ngram, seed=ctx.recipe.seed)
        g = dedup.near_groups(texts, threshold=p.threshold, num_perm=p.num_perm, ngram=p.ngram,
                              seed=ctx.recipe.seed, signatures=sig)
        remove = _redundant(g)
        return remove, [f"near duplicate of {ids[g[j]]}" for j in np.flatnonzero(remove)]
    if kind == "semantic_dedup":
        g = dedup.semantic_groups(ctx.embeddings()[rows], threshold=p.threshold)
        remove = _redundant(g)
        return remove, [f"same meaning as {ids[g[j]]}" for j in np.flatnonzero(remove)]
    if kind == "length":
        chars, words = signals.lengths(texts)
        remove = (chars < p.min_chars) | (words < p.min_words)
        if p.max_chars is not None:
            remove |= chars > p.max_chars
        return remove, [f"{chars[j]} chars, {words[j]} words" for j in np.flatnonzero(remove)]
    if kind == "short_answer":
        remove = signals.short_answers([ctx.records[i] for i in rows], min_words=p.min_words)
        return remove, [f"an answer under {p.min_words} words"] * int(remove.sum())
    if kind == "repetition":
        ratio = signals.repetition_ratio(texts)
        remove = ratio > p.max_ratio
        return remove, [f"repetition ratio {ratio[j]:.2f}" for j in np.flatnonzero(remove)]
    if kind == "remove_tags":
        tags = ctx.need_map("remove_tags").tags()
        missing = [t for t in p.tags if t not in tags]
        if missing:
            raise RecipeError(f"remove_tags: no tag {', '.join(map(repr, missing))} in the map",
                              hint=f"tags in the map: {', '.join(sorted(tags)) or 'none yet (make them on the page)'}")
        tagged: dict[str, str] = {}
        for t in p.tags:
            for rid in tags[t]:
                tagged.setdefault(rid, t)
        remove = np.array([rid in tagged for rid in ids], dtype=bool)
        return remove, [f"tagged {tagged[ids[j]]!r}" for j in np.flatnonzero(remove)]
    if kind == "topic_cap":
        from lmforge.curate.balance import topic_cap

        clusters = _clusters(ctx, p.level)[rows]
        remove = ~topic_cap(clusters, p.max_share, seed=ctx.recipe.seed)
        labels = _labels(ctx, p.level)
        return remove, [f"topic {labels.get(int(clusters[j]), clusters[j])!r} over {p.max_share:.0%}"
                        for j in np.flatnonzero(remove)]
    if kind == "decontaminate":
        from lmforge.curate.decontaminate import contaminated, load_eval_items

        items = [item for spec in p.against for item in load_eval_items(spec)]
        remove, matches = contaminated(texts, items, n=p.n)
        remove = np.asarray(remove, dtype=bool)
        return remove, [f"{p.n}-gram overlap with {', '.join(matches[j][:3])}" for j in np.flatnonzero(remove)]
    raise AssertionError(kind)


def _clusters(ctx: Context, level: int) -> np.ndarray:
    m = ctx.need_map("topic_cap")
    levels = int(m.info["levels"])
    if level >= levels:
        raise RecipeError(f"topic_cap level {level} does not exist; the map has levels 0..{levels - 1}")
    return m.points().column(f"cluster_{level}").to_numpy()


def _labels(ctx: Context, level: int) -> dict[int, str]:
    if ctx.map is None:
        return {}
    return {int(t["cluster"]): t["label"] for t in ctx.map.topics()["topics"] if t["level"] == level}


def _topic_shares(ctx: Context, before: np.ndarray, after: np.ndarray, level: int = 0) -> list[dict]:
    clusters = _clusters(ctx, level)
    labels = _labels(ctx, level)
    nb, na = max(int(before.sum()), 1), max(int(after.sum()), 1)
    out = []
    for c in np.unique(clusters):
        b = int((before & (clusters == c)).sum())
        a = int((after & (clusters == c)).sum())
        out.append({"cluster": int(c), "label": labels.get(int(c), str(c)), "before": b, "after": a,
                    "share_before": b / nb, "share_after": a / na})
    return sorted(out, key=lambda t: -t["before"])


def _open_map(path: str | Path, dataset: Dataset):
    from lmforge.curate.mapping import MapArtifact

    m = MapArtifact(path)
    if m.info.get("dataset_hash") != dataset.content_hash:
        raise RecipeError("the map was made from a different dataset (content hashes differ)", where=str(path),
                          hint=f"run `lmforge map {dataset.path} -o MAP` and use that map")
    return m


def curate(dataset_path: str | Path, recipe: CurateRecipe, out: str | Path, *, map_path: str | Path | None = None,
           engine: str = "local", overwrite: bool = False, progress: bool = True) -> dict:
    """Apply `recipe` to the dataset at `dataset_path`; write the curated dataset and report.{json,html} to `out`."""
    from lmforge.curate.engine import get_engine
    from lmforge.curate.report import write_report

    ds = Dataset(dataset_path)
    if Path(out).exists() and not overwrite:
        raise RecipeError(f"{out} already exists", hint="choose another output path or pass --overwrite")
    # Checked before any work so a bad recipe or map fails fast and writes nothing.
    mp = map_path or recipe.map
    the_map = _open_map(mp, ds) if mp else None
    for step in recipe.steps:
        if step.kind in ("topic_cap", "remove_tags") and the_map is None:
            raise _map_required(step.kind)
    records = list(ds.records())
    ctx = Context(ds, records, [record_text(r) for r in records], recipe, get_engine(engine), the_map)
    alive = np.ones(len(records), dtype=bool)
    steps = []
    for step in recipe.steps:
        rows = np.flatnonzero(alive)
        remove, reasons = _run_step(step.kind, step.params, ctx, rows)
        removed_rows = rows[remove]
        alive[removed_rows] = False
        examples = [{"id": records[r]["id"], "source": records[r]["source"], "reason": why,
                     "excerpt": ctx.texts[r][:EXCERPT_CHARS]}
                    for r, why in list(zip(removed_rows, reasons))[:EXAMPLES_PER_STEP]]
        steps.append({"step": step.kind, "params": step.params.model_dump(mode="json"),
                      "removed": int(remove.sum()), "remaining": int(alive.sum()), "examples": examples})
        if progress:
            from rich import print as rprint

            rprint(f"[bold]{step.kind:15}[/] removed {int(remove.sum()):>8,}  remaining {int(alive.sum()):>8,}")
    if not alive.any():
        raise RecipeError("the recipe removes every record; nothing to write",
                          hint="loosen the thresholds (see the per-step counts above)")
    report = {
        "dataset": str(Path(dataset_path).resolve()), "parent_hash": ds.content_hash,
        "map": str(Path(mp).resolve()) if mp else None, "recipe": recipe.model_dump(mode="json"),
        "records_before": len(records), "records_after": int(alive.sum()), "steps": steps,
        "topics": _topic_shares(ctx, np.ones_like(alive), alive) if the_map is not None else None,
    }
    with atomic_dir(out, overwrite=overwrite) as tmp:
        writer = DatasetWriter(tmp)
        for i in np.flatnonzero(alive):
            writer.add(records[i])
        info = writer.close(
            parents=[{"path": str(Path(dataset_path).resolve()), "content_hash": ds.content_hash}],
            curation={"recipe": recipe.model_dump(mode="json"), "map": report["map"],
                      "removed": {s["step"]: s["removed"] for s in steps}})
        report["content_hash"] = info["content_hash"]
        write_report(tmp, report)
    return report
