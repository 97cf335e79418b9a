"""Stage 1's report: a bar chart of each person's way from candidate URLs to kept crops, and `summary.json`.
Counts come from the files on disk, so a resumed run reports the same totals as the first one."""
from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path
from typing import Mapping, Sequence

from .curate import REJECTED_FOLDER, crop_images
from common.files import atomic_write_bytes, atomic_write_text


def crop_counts(faces: str | Path, slugs: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per person folder of `faces`: `{"kept": crops in the folder, "rejected": crops moved to _rejected/}`."""
    counts = {}
    for slug in slugs:
        rejected = Path(faces) / slug / REJECTED_FOLDER
        counts[slug] = {"kept": len(crop_images(Path(faces) / slug)),
                        "rejected": len(crop_images(rejected)) if rejected.is_dir() else 0}
    return counts


def counts_figure(manifests: Mapping[str, dict], crops: Mapping[str, dict], out_png: str | Path, title: str) -> Path:
    """Four bars per person (candidate URLs, photos saved, face crops made, crops kept) from `manifest_counts` and
    `crop_counts`, written to `out_png`, returned."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    slugs = list(manifests)
    bars = {"candidate URLs": [manifests[s]["candidates"] for s in slugs],
            "photos saved": [manifests[s]["saved"] for s in slugs],
            "face crops": [crops[s]["kept"] + crops[s]["rejected"] for s in slugs],
            "crops kept": [crops[s]["kept"] for s in slugs]}
    figure = Figure(figsize=(9, 3.2), dpi=110)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    width = 0.2
    for k, (label, values) in enumerate(bars.items()):
        ax.bar([i + (k - 1.5) * width for i in range(len(slugs))], values, width, label=label)
    ax.set_xticks(range(len(slugs)), [s.replace("_", "\n") for s in slugs])
    ax.set(ylabel="count", title=title)
    ax.legend(ncol=4, fontsize=8, loc="upper right")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return atomic_write_bytes(out_png, buffer.getvalue())


def write_summary(path: str | Path, target: str, manifests: Mapping[str, dict], crop_summary: dict,
                  crops: Mapping[str, dict], target_wrong_crop_ranks: Sequence[int], fetch_seconds: float,
                  seconds: float) -> dict:
    """Write stage 1's `summary.json` and return it. manifests: `manifest_counts` per person slug; crop_summary:
    what `crop_faces` returned; crops: `crop_counts`; seconds: wall time of the fetch and of the whole notebook."""
    slugs = list(manifests)
    rejected_by_reason = Counter()
    for slug in slugs:
        rejected_by_reason.update(manifests[slug]["rejected_by_reason"])
    kept = {slug: crops[slug]["kept"] for slug in slugs}
    summary = {
        "people": len(slugs),
        "target": target,
        "candidates": sum(manifests[s]["candidates"] for s in slugs),
        "saved": sum(manifests[s]["saved"] for s in slugs),
        "duplicates": sum(manifests[s]["duplicates"] + manifests[s]["near_duplicates"] for s in slugs),
        "exact_duplicates": sum(manifests[s]["duplicates"] for s in slugs),
        "near_duplicates": sum(manifests[s]["near_duplicates"] for s in slugs),
        "download_errors": sum(manifests[s]["errors"] for s in slugs),
        "rejected_by_reason": dict(sorted(rejected_by_reason.items())),
        "photos_no_face": sum(crop_summary["per_person"][s]["no_face"] for s in slugs),
        "crops_ok": kept,
        "faces_target": kept[target],
        "faces_others": sum(n for s, n in kept.items() if s != target),
        "rejected_crops": sum(crops[s]["rejected"] for s in slugs),
        "target_wrong_crop_ranks": list(target_wrong_crop_ranks),
        "fetch_seconds": round(fetch_seconds, 1),
        "crop_seconds": crop_summary["seconds"],
        "seconds": round(seconds, 1),
    }
    atomic_write_text(path, json.dumps(summary, indent=1) + "\n")
    return summary
