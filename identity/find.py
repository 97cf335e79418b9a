"""Find the target's CelebA identity from the classifier's scan, then expand it to all of that identity's photos.

Stage 2 scores every CelebA image with the "is this the target?" classifier and writes `scores.csv`
(rank, file, score; file is the CelebA image id such as `000123.jpg`, rows by descending score). Here:

1. `candidates_sheet` shows the top-k images labelled with their CelebA identity ids and scores, for a human to
   look at;
2. `pick_identity` proposes the identity with the most top-k votes (ties broken by the summed score of its
   votes); a person confirms it, or names another with `confirm=<id>`;
3. `expand_identity` lists every image of that identity (CelebA's `identity_CelebA.txt`) — the fine-tuning set;
4. where the true identity is known (the synthetic haystack records it in `world.json` as `target_identity`),
   precision@k, recall@k and the recall of the expansion measure how well the search worked;
5. `verify_pick` compares the picked identity's photos with the scraped target's crops through the face
   embedding (stage 2's `identity.embed.verify_identity`): "confirmed", or "uncertain" with the reason,
   so a wrong vote is flagged before anything is fine-tuned on it.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Mapping, Sequence

from common.errors import InputError
from common.files import atomic_write_text, read_csv, write_csv_atomic
from common.images import SheetCell, open_thumbnail, save_sheet, thumbnail_sheet


SHEET_CANDIDATES = 60  # top candidates drawn on candidates.png
PICKED_COLOUR = (20, 160, 60)  # frame around candidates of the picked identity
OTHER_COLOUR = (200, 200, 200)


# --------------------------------------------------------------------------------------------- reading
def read_scores(path: str | Path) -> list[dict]:
    """Rows of stage 2's `scores.csv` as dicts {rank: int, file: str, score: float}, highest score first.

    `file` is reduced to the CelebA image id (its base name) so a path like `img_align_celeba/000123.jpg` also
    matches the identity list.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run stage 2's scan (notebook 02 or `python -m classification "
                                f"scan`) first to score the CelebA images")
    rows = []
    for i, row in enumerate(read_csv(path)):
        if "file" not in row or "score" not in row:
            raise ValueError(f"{path} needs columns rank, file, score; got {sorted(row)}")
        try:
            rows.append({"rank": int(row.get("rank") or i + 1), "file": Path(row["file"]).name,
                         "score": float(row["score"])})
        except ValueError:
            raise InputError(f"{path}, line {i + 2}: rank must be an integer and score a number, got "
                             f"rank={row.get('rank')!r} score={row['score']!r}; rerun stage 2's scan") from None
    return sorted(rows, key=lambda r: (-r["score"], r["rank"]))


def read_truth_identity(world_json: str | Path) -> int | None:
    """The planted target identity recorded by the synthetic world generator (`target_identity` in
    `world.json`, at the top level or inside a section), or None when the file or key is absent."""
    path = Path(world_json)
    if not path.is_file():
        return None

    def find(node):
        if isinstance(node, dict):
            if node.get("target_identity") is not None:
                return int(node["target_identity"])
            for value in node.values():
                found = find(value)
                if found is not None:
                    return found
        return None

    return find(json.loads(path.read_text(encoding="utf-8")))


def celeba_identities(root: str | Path) -> dict[str, int]:
    """CelebA image id -> identity id, from `<root>/identity_CelebA.txt`."""
    from common.celeba_format import read_identities

    return read_identities(root)


# ------------------------------------------------------------------------------------------ the search
def top_candidates(scores: Sequence[Mapping], k: int) -> list[Mapping]:
    """The k highest-scoring rows (fewer when the scan holds fewer)."""
    return sorted(scores, key=lambda r: -float(r["score"]))[:k]


def identity_votes(scores: Sequence[Mapping], identities: Mapping[str, int], k: int = 50) -> list[dict]:
    """Identities among the top-k, each with its vote count and summed score, best first.

    Ordered by votes, then by summed score (a tie in votes goes to the identity the classifier is surer of),
    then by identity id so the order is deterministic. Files missing from `identities` cast no vote.
    """
    votes: dict[int, int] = defaultdict(int)
    summed: dict[int, float] = defaultdict(float)
    for row in top_candidates(scores, k):
        identity = identities.get(Path(row["file"]).name)
        if identity is None:
            continue
        votes[identity] += 1
        summed[identity] += float(row["score"])
    ranking = [{"identity": i, "votes": votes[i], "summed_score": summed[i]} for i in votes]
    return sorted(ranking, key=lambda r: (-r["votes"], -r["summed_score"], r["identity"]))


def pick_identity(scores: Sequence[Mapping], identities: Mapping[str, int], k: int = 50,
                  confirm: int | None = None) -> int:
    """The identity to fine-tune on.

    Args:
        scores: rows with "file" (CelebA image id) and "score" (higher = more like the target).
        identities: image id -> identity id (`common.celeba_format.read_identities`).
        k: how many top-scoring images vote.
        confirm: a person's choice after looking at the candidates sheet; overrides the vote (must be an
            identity CelebA knows).
    Returns the identity with the most top-k votes (ties: larger summed score), or `confirm`.
    """
    if confirm is not None:
        confirm = int(confirm)
        if confirm not in set(identities.values()):
            raise ValueError(f"identity {confirm} has no images in this CelebA folder")
        return confirm
    ranking = identity_votes(scores, identities, k)
    if not ranking:
        raise ValueError("none of the top-k scored files has a known CelebA identity")
    return ranking[0]["identity"]


def files_of(identities: Mapping[str, int], identity: int) -> list[str]:
    """Sorted image ids of one identity."""
    return sorted(f for f, i in identities.items() if i == int(identity))


def expand_identity(root: str | Path, identity: int) -> list[str]:
    """All CelebA image ids (e.g. "000123.jpg") of `identity` in `root`'s `identity_CelebA.txt`, sorted."""
    files = files_of(celeba_identities(root), identity)
    if not files:
        raise ValueError(f"identity {identity} has no images in {root}")
    return files


# ---------------------------------------------------------------------------------------------- metrics
def precision_at_k(scores: Sequence[Mapping], identities: Mapping[str, int], truth_identity: int, k: int) -> float:
    """Share of the top-k images that belong to `truth_identity` (denominator: top-k rows actually present)."""
    top = top_candidates(scores, k)
    if not top:
        return 0.0
    return sum(identities.get(Path(r["file"]).name) == truth_identity for r in top) / len(top)


def recall_at_k(scores: Sequence[Mapping], identities: Mapping[str, int], truth_identity: int, k: int) -> float:
    """Share of `truth_identity`'s images that appear among the top-k."""
    truth = set(files_of(identities, truth_identity))
    if not truth:
        raise ValueError(f"identity {truth_identity} has no images")
    return len(truth & {Path(r["file"]).name for r in top_candidates(scores, k)}) / len(truth)


def expansion_recall(expanded: Sequence[str], identities: Mapping[str, int], truth_identity: int) -> float:
    """Share of `truth_identity`'s images in the expanded list (1.0 when the right identity was picked)."""
    truth = set(files_of(identities, truth_identity))
    if not truth:
        raise ValueError(f"identity {truth_identity} has no images")
    return len(truth & set(expanded)) / len(truth)


def expansion_precision(expanded: Sequence[str], identities: Mapping[str, int], truth_identity: int) -> float:
    """Share of the expanded list that belongs to `truth_identity`."""
    if not expanded:
        return 0.0
    return sum(identities.get(f) == truth_identity for f in expanded) / len(expanded)


# ------------------------------------------------------------------------------------------------ figure
def candidates_sheet(scores: Sequence[Mapping], root: str | Path, out_png: str | Path, k: int = 50,
                     identities: Mapping[str, int] | None = None, picked: int | None = None,
                     columns: int = 10, thumb: int = 96) -> dict:
    """Contact sheet of the top-k images, each captioned "id <identity> <score>".

    Args:
        scores: scan rows (see `read_scores`).
        root: CelebA root; images are read from `<root>/img_align_celeba/`.
        out_png: output path.
        k: how many candidates to show.
        identities: image id -> identity (read from `root` when None).
        picked: identity to frame in green (the proposed or confirmed one).
        columns, thumb: layout; thumb is the thumbnail edge in pixels.
    Returns {"path", "n_shown", "missing"}; missing counts candidates whose image file is absent.
    """
    identities = celeba_identities(root) if identities is None else identities
    top = top_candidates(scores, k)
    cells, missing = [], 0
    for row in top:
        name = Path(row["file"]).name
        identity = identities.get(name)
        path = Path(root) / "img_align_celeba" / name
        image = open_thumbnail(path, thumb) if path.is_file() else None
        missing += image is None
        picked_here = picked is not None and identity == picked
        cells.append(SheetCell(image, (f"id {identity} {float(row['score']):.2f}",),
                               frame=PICKED_COLOUR if picked_here else OTHER_COLOUR))
    sheet = thumbnail_sheet(cells, max(1, min(columns, len(cells))), thumb, fit="cover", empty_text="no candidates")
    path = save_sheet(sheet, out_png)
    return {"path": str(path), "n_shown": len(top), "missing": missing}


# ----------------------------------------------------------------------------------------- whole step
def find_identity(scores_csv: str | Path, celeba_root: str | Path, out_dir: str | Path, k: int = 50,
                  confirm: int | None = None, truth_identity: int | None = None) -> dict:
    """Scores → candidates sheet → picked identity → expansion, with metrics against the truth when known.

    Writes `<out_dir>/candidates.png`, `<out_dir>/identity_files.csv` (the expansion) and
    `<out_dir>/identity.json` (this summary). Returns the summary: identity, votes (top 5), confirmed,
    n_expanded, files_csv, candidates_png, and — when `truth_identity` is given — correct, precision_at_k,
    recall_at_k, expansion_recall, expansion_precision.
    """
    out_dir = Path(out_dir)
    scores = read_scores(scores_csv)
    identities = celeba_identities(celeba_root)
    votes = identity_votes(scores, identities, k)
    identity = pick_identity(scores, identities, k, confirm)
    expanded = expand_identity(celeba_root, identity)
    # The sheet shows at most SHEET_CANDIDATES of the k voters: enough to see who they are, small enough to look at.
    sheet = candidates_sheet(scores, celeba_root, out_dir / "candidates.png", min(k, SHEET_CANDIDATES), identities,
                             picked=identity)
    files_csv = write_csv_atomic(out_dir / "identity_files.csv", [{"file": f, "identity": identity} for f in expanded],
                                 ["file", "identity"])
    summary = {
        "identity": identity,
        "confirmed": confirm is not None,
        "k": k,
        "votes": votes[:5],
        "n_expanded": len(expanded),
        "files_csv": str(files_csv),
        "candidates_png": sheet["path"],
        "truth_identity": truth_identity,
    }
    if truth_identity is not None:
        truth_identity = int(truth_identity)
        summary.update(
            correct=identity == truth_identity,
            precision_at_k=precision_at_k(scores, identities, truth_identity, k),
            recall_at_k=recall_at_k(scores, identities, truth_identity, k),
            expansion_recall=expansion_recall(expanded, identities, truth_identity),
            expansion_precision=expansion_precision(expanded, identities, truth_identity),
        )
    atomic_write_text(out_dir / "identity.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def verify_pick(celeba_root: str | Path, identity: int, target_faces_folder: str | Path,
                cache: str | Path | None = None, workers: int = 2) -> dict:
    """Face-embedding verification of a picked identity against the scraped target (see module docstring).

    Returns `identity.embed.verify_identity`'s dict: verdict ("confirmed" | "uncertain"), reason,
    median_distance, threshold, ...
    """
    from identity.embed import verify_identity

    return verify_identity(celeba_root, identity, target_faces_folder, cache=cache, workers=workers)


# ------------------------------------------------------------------------------------------------------ CLI
def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    """`python -m vae find-identity`: pick the CelebA identity the classifier's top scores point at."""
    parser.add_argument("--scores", required=True, help="stage 2's scores.csv over the CelebA folder")
    parser.add_argument("--src", "--celeba", dest="celeba", required=True, help="CelebA root (official layout)")
    parser.add_argument("--out", "--out-dir", dest="out_dir", required=True,
                        help="folder for candidates.png, identity.json, identity_files.csv")
    parser.add_argument("--k", type=int, default=50, help="how many top-scoring images vote")
    parser.add_argument("--confirm", type=int, default=None, help="use this identity instead of the vote winner")
    parser.add_argument("--truth-identity", type=int, default=None, help="true identity, to report precision/recall")
    parser.add_argument("--world", default=None, help="world.json of the synthetic haystack (reads target_identity)")
    parser.add_argument("--verify", default=None, metavar="FACES_FOLDER",
                        help="the scraped target's crops (stage 1): verify the pick with face embeddings")


def cli_run(args: argparse.Namespace) -> dict:
    truth = args.truth_identity
    if truth is None and args.world:
        truth = read_truth_identity(args.world)
    found = find_identity(args.scores, args.celeba, args.out_dir, args.k, args.confirm, truth)
    if args.verify:
        found["verification"] = verify_pick(args.celeba, found["identity"], args.verify)
    return {"command": "find-identity", **found}
