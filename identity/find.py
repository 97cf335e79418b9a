"""Find the target's CelebA identity from stage 2's scan, then expand it to all of that identity's photos.

`find_identity` draws the top candidates with their identity ids (`candidates.png`), picks the identity with the
most top-k votes (or the one a person names with `confirm=`), lists every photo of it (the fine-tuning set) and,
when the true identity is known (`target_identity` in the synthetic world's `world.json`), measures the search;
`verify_pick` checks the pick against the scraped crops with face embeddings.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Mapping, Sequence

from common.celeba_format import read_identities
from common.errors import InputError
from common.files import atomic_write_text, read_csv, write_csv_atomic
from common.images import SheetCell, open_thumbnail, save_sheet, thumbnail_sheet


SHEET_CANDIDATES = 60  # top candidates drawn on candidates.png
PICKED_COLOUR = (20, 160, 60)  # frame around candidates of the picked identity
OTHER_COLOUR = (200, 200, 200)


def read_scores(path: str | Path) -> list[dict]:
    """Rows of stage 2's `scores.csv` as {rank, file (the base name: a CelebA image id), score}, best first."""
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
    """`target_identity` from the synthetic world's `world.json` (at any depth), or None when absent."""
    path = Path(world_json)
    nodes = [json.loads(path.read_text(encoding="utf-8"))] if path.is_file() else []
    while nodes:  # breadth-first over the nested dicts
        node = nodes.pop(0)
        if node.get("target_identity") is not None:
            return int(node["target_identity"])
        nodes += [value for value in node.values() if isinstance(value, dict)]
    return None


def top_candidates(scores: Sequence[Mapping], k: int) -> list[Mapping]:
    """The k highest-scoring rows (fewer when the scan holds fewer)."""
    return sorted(scores, key=lambda r: -float(r["score"]))[:k]


def identity_votes(scores: Sequence[Mapping], identities: Mapping[str, int], k: int = 50) -> list[dict]:
    """Identities among the top-k with their vote count and summed score, by votes, then summed score, then id.
    Files missing from `identities` cast no vote."""
    votes: dict[int, int] = defaultdict(int)
    summed: dict[int, float] = defaultdict(float)
    for row in top_candidates(scores, k):
        identity = identities.get(Path(row["file"]).name)
        if identity is not None:
            votes[identity] += 1
            summed[identity] += float(row["score"])
    ranking = [{"identity": i, "votes": votes[i], "summed_score": summed[i]} for i in votes]
    return sorted(ranking, key=lambda r: (-r["votes"], -r["summed_score"], r["identity"]))


def pick_identity(scores: Sequence[Mapping], identities: Mapping[str, int], k: int = 50,
                  confirm: int | None = None) -> int:
    """The identity to fine-tune on: the winner of `identity_votes` over the top `k` scores (rows with "file"
    and "score"), or `confirm`, a person's choice after looking at the candidates sheet."""
    if confirm is not None:
        confirm = int(confirm)
        if confirm not in set(identities.values()):
            raise ValueError(f"identity {confirm} has no images in this CelebA folder")
        return confirm
    ranking = identity_votes(scores, identities, k)
    if not ranking:
        raise ValueError("none of the top-k scored files has a known CelebA identity")
    return ranking[0]["identity"]


def expand_identity(root: str | Path | Mapping[str, int], identity: int) -> list[str]:
    """All CelebA image ids (e.g. "000123.jpg") of `identity`, sorted; `root` is a CelebA root (its
    `identity_CelebA.txt`) or an {image id: identity} mapping."""
    identities = read_identities(root) if isinstance(root, (str, Path)) else root
    files = sorted(f for f, i in identities.items() if i == int(identity))
    if not files:
        raise ValueError(f"identity {identity} has no images in {root if isinstance(root, (str, Path)) else 'it'}")
    return files


def expansion_precision(expanded: Sequence[str], identities: Mapping[str, int], truth_identity: int) -> float:
    """Share of the `expanded` image ids that belong to `truth_identity` (0 for an empty list)."""
    return sum(identities.get(f) == truth_identity for f in expanded) / len(expanded) if expanded else 0.0


def expansion_recall(expanded: Sequence[str], identities: Mapping[str, int], truth_identity: int) -> float:
    """Share of `truth_identity`'s images in the `expanded` image ids (1.0 when the right identity was picked)."""
    truth = set(expand_identity(identities, truth_identity))
    return len(truth & set(expanded)) / len(truth)


def precision_at_k(scores: Sequence[Mapping], identities: Mapping[str, int], truth_identity: int, k: int) -> float:
    """Share of the top-k images that belong to `truth_identity` (denominator: top-k rows actually present)."""
    return expansion_precision([Path(r["file"]).name for r in top_candidates(scores, k)], identities, truth_identity)


def recall_at_k(scores: Sequence[Mapping], identities: Mapping[str, int], truth_identity: int, k: int) -> float:
    """Share of `truth_identity`'s images that appear among the top-k."""
    return expansion_recall([Path(r["file"]).name for r in top_candidates(scores, k)], identities, truth_identity)


def candidates_sheet(scores: Sequence[Mapping], root: str | Path, out_png: str | Path, k: int = 50,
                     identities: Mapping[str, int] | None = None, picked: int | None = None,
                     columns: int = 10, thumb: int = 96) -> dict:
    """Contact sheet of the top-k images of CelebA root `root`, captioned "id <identity> <score>", the `picked`
    identity framed in green. Returns {"path", "n_shown", "missing" (image files absent)}."""
    identities = read_identities(root) if identities is None else identities
    top = top_candidates(scores, k)
    cells, missing = [], 0
    for row in top:
        identity = identities.get(Path(row["file"]).name)
        path = Path(root) / "img_align_celeba" / Path(row["file"]).name
        image = open_thumbnail(path, thumb) if path.is_file() else None
        missing += image is None
        cells.append(SheetCell(image, (f"id {identity} {float(row['score']):.2f}",),
                               frame=PICKED_COLOUR if picked is not None and identity == picked else OTHER_COLOUR))
    sheet = thumbnail_sheet(cells, max(1, min(columns, len(cells))), thumb, fit="cover", empty_text="no candidates")
    path = save_sheet(sheet, out_png)
    return {"path": str(path), "n_shown": len(top), "missing": missing}


def find_identity(scores_csv: str | Path, celeba_root: str | Path, out_dir: str | Path, k: int = 50,
                  confirm: int | None = None, truth_identity: int | None = None) -> dict:
    """Scores -> candidates sheet -> picked identity -> expansion, measured against `truth_identity` when given.

    Writes `candidates.png`, `identity_files.csv` (the expansion) and `identity.json` (the returned summary:
    identity, votes, confirmed, n_expanded, ... and correct, precision_at_k, recall_at_k, expansion_recall,
    expansion_precision with a truth) into `out_dir`.
    """
    out_dir = Path(out_dir)
    scores = read_scores(scores_csv)
    identities = read_identities(celeba_root)
    votes = identity_votes(scores, identities, k)
    identity = pick_identity(scores, identities, k, confirm)
    expanded = expand_identity(identities, identity)
    # The sheet shows at most SHEET_CANDIDATES of the k voters: enough to see who they are, small enough to look at.
    sheet = candidates_sheet(scores, celeba_root, out_dir / "candidates.png", min(k, SHEET_CANDIDATES), identities,
                             picked=identity)
    files_csv = write_csv_atomic(out_dir / "identity_files.csv", [{"file": f, "identity": identity} for f in expanded],
                                 ["file", "identity"])
    summary = {"identity": identity, "confirmed": confirm is not None, "k": k, "votes": votes[:5],
               "n_expanded": len(expanded), "files_csv": str(files_csv), "candidates_png": sheet["path"],
               "truth_identity": truth_identity}
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
    """`identity.embed.verify_identity` of a picked identity against the scraped target's crops."""
    from identity.embed import verify_identity

    return verify_identity(celeba_root, identity, target_faces_folder, cache=cache, workers=workers)


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
