"""The face-embedding second opinion: fit the embedding scorer on stage 1's folders, measure it like the
classifier, and rank a folder or CelebA root by it (`python -m classification embed-scorer|embed-scan`)."""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import InputError
from common.files import atomic_write_text, write_csv_atomic, write_record
from identity.embed import BACKENDS, METHODS, IdentityScorer, _json_ready, embed_files, fit_scorer, valid_rows


def _scores_with_floor(scorer: IdentityScorer, vectors: np.ndarray) -> np.ndarray:
    """Scores where photos without an embedding rank last (below every real score) instead of NaN."""
    scores = scorer.score(vectors)
    good = np.isfinite(scores)
    return np.where(good, scores, np.nanmin(scores[good]) - 1.0 if good.any() else -1.0)


def evaluate_embedding_scorer(faces_root: str | Path, target: str, split: str | Path | Sequence[dict] | None = None,
                              seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15,
                              backend: str = "dlib", methods: Sequence[str] = METHODS,
                              out_dir: str | Path | None = None,
                              cache: str | Path | None = None, workers: int = 2, progress: bool = True,
                              face_box: str | None = None, num_jitters: int = 0) -> dict:
    """Fit the embedding scorers on stage 1's face folders (target vs everyone else), choose one on validation
    average precision (threshold: best validation F1), measure it on test.

    split: the classifier run's `split.csv` (path or rows) to use the same photos; None = a `stratified_split`
    with `seed` and the fractions. out_dir: where `embedding_scorer.json` and `embedding_eval.json` go.
    Returns a row shaped like `compare_unfreezing`'s rows plus method, backend, candidates and embedding counts.
    """
    from classification.data import collect_face_rows, read_split, stratified_split
    from classification.metrics import best_f1_threshold, binary_metrics

    if isinstance(split, (str, Path)):
        rows = read_split(split)
    elif split is not None:
        rows = [{**row, "label": int(row["label"])} for row in split]
    else:
        collected = collect_face_rows(faces_root, target)
        rows = stratified_split(collected.rows, seed, val_fraction, test_fraction)
    started = time.perf_counter()
    stats: dict = {}
    vectors = embed_files(faces_root, [row["file"] for row in rows], backend, workers, cache, progress,
                          face_box, num_jitters, stats=stats)
    labels = np.array([int(row["label"]) for row in rows])
    part = np.array([row["split"] for row in rows])
    train = part == "train"
    candidates, fitted = [], {}
    for method in methods:
        scorer = fit_scorer(vectors[train & (labels == 1)], vectors[train & (labels == 0)], method, backend,
                            face_box, num_jitters)
        val_scores = _scores_with_floor(scorer, vectors[part == "val"])
        val_labels = labels[part == "val"]
        threshold = best_f1_threshold(val_labels, val_scores)
        val = binary_metrics(val_labels, val_scores, threshold)
        scorer.threshold = threshold
        fitted[method] = scorer
        candidates.append({"method": method, "val_average_precision": val["average_precision"],
                           "val_f1": val["f1"], "threshold": threshold})
    best = max(candidates, key=lambda c: (c["val_average_precision"], c["val_f1"], -methods.index(c["method"])))
    scorer = fitted[best["method"]]
    test_scores = _scores_with_floor(scorer, vectors[part == "test"])
    test = binary_metrics(labels[part == "test"], test_scores, scorer.threshold)
    seconds = time.perf_counter() - started
    scorer.info.update(validation=best, test={k: test[k] for k in ("average_precision", "roc_auc", "f1")})
    path = None
    if out_dir is not None:
        path = scorer.save(Path(out_dir) / "embedding_scorer.json")
    row = {
        "method": f"embedding {backend} {best['method']}", "backend": backend, "unfreeze": None,
        "trainable_parameters": 0 if best["method"] == "centroid" else int(scorer.weights.size + 1),
        "epochs_run": None, "steps": None, "train_seconds": round(seconds, 2), "threshold": scorer.threshold,
        "val_f1": best["val_f1"], "val_average_precision": best["val_average_precision"],
        **{f"test_{k}": test[k] for k in ("accuracy", "precision", "recall", "f1", "roc_auc", "average_precision")},
        "n_test": test["n"], "checkpoint": None if path is None else str(path), "candidates": candidates,
        "embedded": stats.get("ok"), "no_face": stats.get("no_face", 0) + stats.get("unreadable", 0),
        "embed_images_per_second": stats.get("images_per_second"),
    }
    row = _json_ready(row)
    if out_dir is not None:
        atomic_write_text(Path(out_dir) / "embedding_eval.json", json.dumps(row, indent=2) + "\n")
    return row


def train_embedding_scorer(faces_root: str | Path, target: str, method: str = "linear", backend: str = "dlib",
                           cache: str | Path | None = None, workers: int = 2, progress: bool = True,
                           out_path: str | Path | None = None, **embed_options) -> IdentityScorer:
    """Fit one scorer on ALL the target's crops vs all other people's (stage 1 layout; no held-out data: use
    `evaluate_embedding_scorer` to measure and choose). Saved to `out_path` when given."""
    from common.files import list_person_images

    root = Path(faces_root)
    people = list_person_images(root)
    if target not in people:
        raise InputError(f"target folder {root / target} is missing (found: {', '.join(people)})")
    owners = np.array([person for person, paths in people.items() for _ in paths], dtype=object)
    files = [path.relative_to(root).as_posix() for paths in people.values() for path in paths]
    vectors = embed_files(root, files, backend, workers, cache, progress, **embed_options)
    scorer = fit_scorer(vectors[owners == target], vectors[owners != target] if len(people) > 1 else None, method,
                        backend, embed_options.get("face_box"), embed_options.get("num_jitters", 0))
    if out_path is not None:
        scorer.save(out_path)
    return scorer


def scan_with_embeddings(scorer: IdentityScorer | str | Path, source: str | Path, out_dir: str | Path,
                         cache: str | Path | None = None, workers: int = 2, progress: bool = True,
                         rerank_scores: str | Path | None = None, rerank_top: int = 2000,
                         truth_identity: int | None = None) -> dict:
    """Embed and score every image of `source` (image folder or CelebA root); write `<out_dir>/scores.csv` (the
    classifier scan's format) and `unembedded.csv` (files without an embedding, left out of the ranking).

    With `rerank_scores` (a MobileNetV2 `scores.csv`) only its top `rerank_top` files are embedded and re-ranked;
    with `truth_identity` the summary adds the first stage's recall of that CelebA identity at `rerank_top`.
    Returns a summary: scanned, embedded, no_face, unreadable, cached, images_per_second, seconds, top 5, ...
    """
    from classification.scan import list_scan_files, write_ranked_scores
    from common.files import read_csv

    scorer = scorer if isinstance(scorer, IdentityScorer) else IdentityScorer.load(scorer)
    out = Path(out_dir)
    root, files = list_scan_files(source)
    summary: dict[str, Any] = {"command": "scan-embeddings", "method": scorer.method, "backend": scorer.backend}
    if rerank_scores is not None:
        first = read_csv(rerank_scores)
        if not first or "file" not in first[0] or "score" not in first[0]:
            raise InputError(f"{rerank_scores} is not a scores.csv (needs columns rank, file, score)")
        ranked = [row["file"] for row in sorted(first, key=lambda r: -float(r["score"]))]
        known = set(files)
        files = [f for f in ranked[:rerank_top] if f in known]
        summary.update(rerank_top=rerank_top, first_stage_scored=len(first), reranked=len(files))
        if truth_identity is not None and (Path(source) / "identity_CelebA.txt").is_file():
            from common.celeba_format import read_identities

            identities = read_identities(source)
            truth = {f for f, i in identities.items() if i == int(truth_identity)}
            if truth:
                top = {Path(f).name for f in ranked[:rerank_top]}
                summary["first_stage_recall_at_n"] = len(truth & top) / len(truth)
    stats: dict = {}
    vectors = embed_files(root, files, workers=workers, cache=cache, progress=progress, stats=stats,
                          **scorer.embed_options())
    mask = valid_rows(vectors)
    scores = scorer.score(vectors[mask]) if mask.any() else np.zeros(0)
    kept = [f for f, ok in zip(files, mask) if ok]
    rows = write_ranked_scores({f: float(s) for f, s in zip(kept, scores)}, out / "scores.csv")
    missing = [{"file": f, "reason": "no face or unreadable"} for f, ok in zip(files, mask) if not ok]
    write_csv_atomic(out / "unembedded.csv", missing, ["file", "reason"])
    summary.update(source=str(root), scanned=len(files), embedded=int(mask.sum()),
                   **{k: stats[k] for k in ("no_face", "unreadable", "cached", "computed", "images_per_second",
                                            "seconds")}, scores=str(out / "scores.csv"), threshold=scorer.threshold,
                   above_threshold=None if scorer.threshold is None else int(np.sum(scores >= scorer.threshold)),
                   top=[{"file": r["file"], "score": float(r["score"])} for r in rows[:5]])
    write_record(out / "scan_embeddings.json", _json_ready(summary))
    return _json_ready(summary)


def cli_add_arguments_embed_scorer(parser) -> None:
    """`python -m classification embed-scorer`: fit and measure the embedding scorer on stage 1's folders."""
    parser.add_argument("--src", dest="faces_root", required=True, help="face folders: <src>/<person>/*.jpg")
    parser.add_argument("--target", required=True, help="the target person's folder name")
    parser.add_argument("--out", required=True, help="folder for embedding_scorer.json and embedding_eval.json")
    parser.add_argument("--split", default=None, help="a classifier run's split.csv, to use the same photos")
    parser.add_argument("--backend", default="dlib", choices=BACKENDS)
    parser.add_argument("--cache", default=None, help="SQLite embedding cache (reused across runs)")
    parser.add_argument("--workers", type=int, default=2, help="embedding processes (one per core)")


def cli_run_embed_scorer(args) -> dict:
    row = evaluate_embedding_scorer(args.faces_root, args.target, split=args.split, backend=args.backend,
                                    out_dir=args.out, cache=args.cache, workers=args.workers)
    return {"command": "embed-scorer", **{k: v for k, v in row.items() if k != "candidates"}}


def cli_add_arguments_embed_scan(parser) -> None:
    """`python -m classification embed-scan`: rank a folder or CelebA root by the embedding scorer."""
    parser.add_argument("--checkpoint", required=True, help="embedding_scorer.json from `embed-scorer`")
    parser.add_argument("--src", dest="source", required=True, help="image folder (recursive) or CelebA root")
    parser.add_argument("--out", required=True, help="folder for scores.csv (the `scan` format)")
    parser.add_argument("--rerank", default=None, help="a MobileNetV2 scores.csv: embed only its top N")
    parser.add_argument("--top-n", type=int, default=2000, help="with --rerank: how many to embed")
    parser.add_argument("--cache", default=None, help="SQLite embedding cache (reused across runs)")
    parser.add_argument("--workers", type=int, default=2, help="embedding processes (one per core)")


def cli_run_embed_scan(args) -> dict:
    return scan_with_embeddings(args.checkpoint, args.source, args.out, cache=args.cache, workers=args.workers,
                                rerank_scores=args.rerank, rerank_top=args.top_n)
