"""`make readme`: fill the generated blocks of README.md and docs/*.md from the committed run outputs, so no number
is typed by hand.

A block is the text between `<!-- begin: NAME -->` and `<!-- end: NAME -->`; `readme_blocks` builds each from
`results/demo/demo_summary.json` (and the files it names) and `results/benchmarks/*.json`. `fill_readme` rewrites
the blocks and leaves every other line alone; a test checks that the committed documents equal their filled versions.

    python -m tools.readme_numbers            # rewrite the documents in place
    python -m tools.readme_numbers --check    # exit 1 when one is out of date
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from latent.report import latent_beta_block, latent_transfer_block, read_benchmark

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "demo"
BENCHMARKS = ROOT / "results" / "benchmarks"
DOCUMENTS = ("README.md", "docs/benchmarks.md", "docs/details.md")
README_MAX_LINES = 250
BLOCK = re.compile(r"(<!-- begin: (?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- end: (?P=name) -->)", re.S)


def _pct(value) -> str:
    return "-" if value is None else f"{value:.0%}"


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _num(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}" if isinstance(value, float) else f"{value:,}"


# (summary key, what, target, unit) of the VAE stage's quality targets (DESIGN.md); a share's target is in %
VAE_TARGETS = (("heldout_ssim", "held-out SSIM", 0.85, ""), ("face_share_reconstructions", "faces in reconstructions",
               95, " %"), ("face_share_samples", "faces in samples", 90, " %"),
               ("identity_kept_share", "identity kept", 97, " %"),
               ("finetuned_nearest_identity_accuracy", "her reconstructions recognised", 90, " %"))


def readme_blocks(results: Path = RESULTS, benchmarks: Path = BENCHMARKS) -> dict[str, str]:
    """Every generated block of the README, by name, from the run outputs under `results` and `benchmarks`."""
    summary = json.loads((results / "demo_summary.json").read_text())
    world, stages = summary["world"], summary["stages"]
    scraping, clf, vae = stages["scraping"], stages["classification"], stages["vae"]
    identity = json.loads((results / "vae" / "identity" / "identity.json").read_text())
    blocks = {}
    blocks["world"] = (
        f"*Rows are identities (the target, \"{world['target_name']}\", first), columns are photos of that identity. "
        f"The demo world has {len(scraping['crops_ok'])} people on its web ({world['web_photos']} photos) and a "
        f"haystack of {world['haystack_images']:,} aligned portraits, the target planted {world['target_count']} "
        f"times as identity {world['target_identity']}.*")
    rejected = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in scraping["rejected_by_reason"].items())
    blocks["scraping"] = (
        f"In the demo the scraper fetches the {len(scraping['crops_ok'])} galleries of the local web: "
        f"{scraping['candidates']} candidate links, {scraping['saved']} photos saved, {scraping['duplicates']} "
        f"duplicates dropped ({scraping['exact_duplicates']} exact, {scraping['near_duplicates']} resized), "
        f"rejected with their reason: {rejected or 'none'}. MTCNN found no face in {scraping['photos_no_face']} "
        f"photos; check the `no face` column per person before trusting the class balance (detectors trained on "
        f"real photos miss low-contrast dark faces more often).")
    ranks = scraping.get("target_wrong_crop_ranks") or []
    blocks["weeding"] = (
        f"In the demo the group photos produced {scraping['rejected_crops']} wrong crops (co-stars and misfires); "
        f"the target's {len(ranks)} wrong crops were ranked {', '.join(map(str, ranks)) or '-'} on its sheet of "
        f"{scraping['faces_target'] + len(ranks)}. The demo rejects them using the world's ground truth, leaving "
        f"{scraping['faces_target']} crops of the target and {scraping['faces_others']} of the others.")
    blocks["comparison"] = (results / "classification" / "comparison.md").read_text().strip()
    embedding = clf.get("embedding") or {}
    recall = clf.get("embed_first_stage_recall_at_n")
    blocks["scan"] = (
        f"The demo scans the {clf['scanned']:,}-photo haystack with MobileNetV2 (weights: {clf['weights']}): "
        f"{clf['scan_top_k_hits_target']} of the top {clf['scan_top_k']} are the target. The face embedding "
        f"({embedding.get('method', '-')}, test ROC-AUC {_num(embedding.get('test_roc_auc'))}, AP "
        f"{_num(embedding.get('test_average_precision'))}) re-ranks the fast scan's top {clf['embed_top_n']:,} "
        f"(first-stage recall of the target there: {_pct(recall)}): {clf['embed_scan_top_k_hits_target']} of its top "
        f"{clf['scan_top_k']} are the target. Chosen on validation for the identity search: "
        f"**{clf['search_method']}**.")
    q = vae["quality"]
    blocks["vae_quality"] = (
        f"After {vae['train_steps']:,} steps with "
        + ("the pixel loss alone" if vae["perceptual_weights"].startswith("none")
           else f"the perceptual loss ({vae['perceptual_weights']} VGG19)") + ", on 200 held-out faces: SSIM "
        f"{q['heldout_ssim']:.3f}; MTCNN finds a face in {_pct(q['face_share_reconstructions'])} of the "
        f"reconstructions, {_pct(q['face_share_samples'])} of the samples from the fitted density and "
        f"{_pct(q['face_share_samples_prior'])} of those from N(0, I); dlib reads "
        f"{_pct(q['identity_kept_share'])} of the reconstructions as the same person as their photo. After "
        f"fine-tuning, {_pct(q['finetuned_nearest_identity_accuracy'])} of her reconstructions are recognised as "
        "her. Against the targets: " + ", ".join(
            f"{name} ≥ {goal:g}{unit} {'met' if q[key] >= (goal / 100 if unit else goal) else '**missed**'}"
            for key, name, goal, unit in VAE_TARGETS) + ".")
    votes = identity.get("votes") or []
    runner = next((v for v in votes if v["identity"] != identity["identity"]), None)
    blocks["identity"] = (
        f"In the committed run the ranking comes from **{vae['search_method']}**; with TOP_K = {vae['top_k']} the "
        f"vote picked identity {vae['picked_identity']} (planted: {vae['truth_identity']}) with "
        f"{votes[0]['votes'] if votes else '-'} votes"
        + (f" against {runner['votes']} for the runner-up" if runner else "")
        + f", precision@{vae['top_k']} {_num(vae['precision_at_k'])} and recall {_num(vae['recall'])}; expanding "
        f"the identity finds {vae['expansion_images']} photos. The face network's verification of the pick: "
        f"**{vae['verification']}** ({vae['verification_reason']}).")
    before, after = vae["finetune_ssim"]["before"], vae["finetune_ssim"]["after"]
    keep = vae.get("identity_preservation") or {}
    blocks["finetune"] = (
        f"On the identity's {vae['finetune_images']} photos, {vae['finetune_steps']} steps moved reconstruction SSIM "
        f"from {before:.2f} to {after:.2f}. Identity preservation (face-embedding distance from each photo to its "
        f"reconstruction; under 0.6 reads as the same person): {_num(keep.get('before', {}).get('mean_distance'))} "
        f"before and {_num(keep.get('after', {}).get('mean_distance'))} after fine-tuning; the reconstruction's "
        f"nearest identity is hers for {_pct(keep.get('before', {}).get('nearest_identity_accuracy'))} before and "
        f"{_pct(keep.get('after', {}).get('nearest_identity_accuracy'))} after (the photos themselves: "
        f"{_pct(vae.get('identity_preservation_originals'))}).")
    blocks["notebooks"] = notebooks_block(results)
    blocks["app_visitors"] = app_visitors_block(benchmarks)
    blocks["verdicts"] = "\n".join(f"- {'✓' if v['ok'] else '✗'} {v['text']}" for v in summary["verdicts"])
    blocks["benchmarks"] = benchmark_table(benchmarks)
    blocks["pretraining"] = pretraining_block(clf, benchmarks)
    blocks["app_latency"] = app_latency_block(benchmarks)
    blocks["gan_vs_vae"] = gan_vs_vae_block(benchmarks)
    blocks["latent_beta"] = latent_beta_block(benchmarks)
    blocks["latent_transfer"] = latent_transfer_block(benchmarks)
    search = benchmarks / "identity_search.json"
    if search.is_file():
        b = json.loads(search.read_text())
        blocks["bench_identity"] = "| what | command | result | target |\n|---|---|---|---|\n" + (
            f"| identity search on real photos: {b['targets']} identities with ≥ 20 photos, half as the scraped set, "
            f"the rest hidden among {b['haystack_crops']:,} crops | `bench_identity_search.py` | face embedding "
            f"(dlib, {b['face_box']} box): mean AP **{b['embedding_mean_ap']:.3f}**, R-precision "
            f"{b['embedding_mean_r_precision']:.3f}, recall@100 {b['embedding_mean_recall_at_100']:.3f}, top-15 "
            f"vote right for **{_pct(b['embedding_vote_accuracy'])}**; faces found {b['faces_found']:,} of "
            f"{b['photos']:,}; {b['embed_images_per_second']} img/s on 2 cores (all of CelebA: "
            f"~{b['celeba_projected_hours']:.1f} h). Verification confirmed {_pct(b['verification_confirmed_true'])} "
            f"of the true identities and flagged {_pct(b['verification_flagged_nearest_wrong'])} of the nearest "
            f"impostors | AP ≥ 0.95, vote ≥ 98 %: "
            f"{_met(b['embedding_mean_ap'] >= 0.95 and b['embedding_vote_accuracy'] >= 0.98)} |")
        if b.get("mobilenet_targets"):
            blocks["bench_identity"] += "\n" + (
                f"| the same search with MobileNetV2 (random init, the offline stage 2 classifier), on the first "
                f"{b['mobilenet_targets']} targets | `bench_identity_search.py` | mean AP {b['mobilenet_mean_ap']:.3f} "
                f"(chance {b['chance_mean_ap']:.3f}), top-15 vote right for {_pct(b['mobilenet_vote_accuracy'])}; "
                f"the embedding on the same targets: AP {b['embedding_same_targets_mean_ap']:.3f}, vote "
                f"{_pct(b['embedding_same_targets_vote_accuracy'])} | none (contrast) |")
    return blocks


def _row_scraper(r: dict) -> tuple[str, str, str]:
    return (f"scraper vs a sequential loop, loopback servers with {r['latency_s'] * 1000:.0f} ms latency, "
            f"{r['images']} images on {r['hosts']} hosts",
            f"**{r['speedup']:.1f}×** ({r['sequential_s']:.1f} s → {r['concurrent_s']:.1f} s); at most "
            f"{r['max_concurrent_seen']} connections per host seen (cap {r['per_host_cap']})",
            f"≥ 8×: {_met(r['speedup'] >= 8)}")


def _row_mtcnn(r: dict) -> tuple[str, str, str]:
    return (f"MTCNN batched vs per-image, {r['images']} real photos",
            f"**{r['speedup']:.1f}×** ({r['per_image_s']:.1f} s → {r['batched_s']:.1f} s); faces found in "
            f"{r['face_found_share']:.1%} of photos ({r['face_found_share_per_image']:.1%} per-image). Detecting on a "
            f"≤ {r['max_side']} px view gives most of it; batching alone: {r['speedup_from_batching_alone']:.1f}×",
            f"≥ 2×: {_met(r['speedup'] >= 2)}")


def _row_scan(r: dict) -> tuple[str, str, str]:
    return (f"classifier scan (decode + resize + infer), {r['photos']} real photos",
            f"**{r['fast_images_per_second']:.0f} img/s** ({r['fast_images_per_second_wall']:.0f} img/s wall incl. "
            f"start-up), {r['fast_image_size']} px, batch {r['fast_batch_size']}, {r['fast_workers']} workers, vs a "
            f"tutorial loop ({r['tutorial_image_size']} px, batch {r['tutorial_batch_size']}, workers "
            f"{r['tutorial_workers']}) at {r['tutorial_images_per_second']:.1f} img/s: {r['speedup']:.1f}×",
            f"≥ 150 img/s: {_met(r['fast_images_per_second'] >= 150)}")


def _row_vae_speed(r: dict) -> tuple[str, str, str]:
    return (f"VAE training step, {r['image_size']} px, batch {r['batch_size']}, {r['threads']} threads, perceptual "
            "loss on",
            f"**{r['img_per_s_with_perceptual']:.1f} img/s** ({r['timed_steps']} timed steps); "
            f"{r['img_per_s_without_perceptual']:.0f} img/s without the perceptual loss; peak RSS "
            f"{r['peak_rss_mb'] / 1024:.1f} GB; the decoder's last upsample + conv is one fused layer "
            "(`UpsampleConv2d`). "
            f"CNN-VAE's default model, measured elsewhere (not in this run): {r['reference_img_per_s_with_perceptual']}"
            " img/s alone on a 2-core CPU",
            _side_by_side(r))


def _side_by_side(r: dict) -> str:
    """The target is a ratio, so it is judged only from a run that timed both models: one measured elsewhere."""
    side = r.get("side_by_side_measured_elsewhere")
    if not side:
        return f"≥ {r['target_speedup']:.0f}× CNN-VAE, side by side — not measured"
    (peer_low, peer_high), (own_low, own_high) = side["cnn_vae_img_per_s"], side["this_step_img_per_s"]
    return (f"≥ {side['target_ratio']:.0f}× CNN-VAE, side by side — {'met' if side['meets_target'] else 'missed'} "
            f"where both ran in one run, measured elsewhere: {own_low}–{own_high} vs {peer_low}–{peer_high} img/s "
            f"({side['ratio']:.0f}×)")


def _row_synthetic_identity(r: dict) -> tuple[str, str, str]:
    return ("synthetic identities: small CNN, one identity vs strangers, held-out photos",
            f"ROC-AUC ≥ {min(r['auc_aligned_min'], r['auc_wild_min']):.4f}; MTCNN finds a face in "
            f"{r['mtcnn_detection_rate']:.0%} of single portraits; haystack rendered at "
            f"{r['haystack_images_per_s']:.0f} img/s",
            f"AUC ≥ {r['auc_target']}, detection ≥ {r['mtcnn_target']:.0%}: " + _met(
                min(r["auc_aligned_min"], r["auc_wild_min"]) >= r["auc_target"]
                and r["mtcnn_detection_rate"] >= r["mtcnn_target"]))


def _row_vae_quality(r: dict) -> tuple[str, str, str]:
    parts, several_runs = [], len({run.get("command") for run in r["results"]}) > 1
    for run in r["results"]:
        parts.append(f"**{run['data']}, {run['recipe'].replace('_', ' ')}**"
                     + (f" (`{run.get('command', 'an earlier run')}`)" if several_runs else "")
                     + f": {run['steps']} steps, SSIM "
                     f"{run['heldout_ssim']:.3f}, face in {_pct(run['face_share_reconstructions'])} of "
                     f"reconstructions / {_pct(run['face_share_samples'])} of samples, identity kept "
                     f"{_pct(run['identity_kept_share'])}")
    wild = {run["recipe"]: run for run in r["results"] if run["data"] == "wild"}.get("recipe")
    verdict = "-" if wild is None else (
        "met" if wild["face_share_reconstructions"] >= 0.95 and wild["identity_kept_share"] >= 0.5 else "**missed**")
    return (f"VAE pictures after {r['minutes_per_model']:g} min of CPU training per model, the recipe vs the "
            "previous defaults", "; ".join(parts),
            f"real crops: face ≥ 95 %, identity kept ≥ 50 %: {verdict}")


def notebooks_block(results: Path = RESULTS) -> str:
    """Each stage's wall-clock time in the last demo run that ran every stage (`full_run_timings.json`)."""
    timings = json.loads((results / "full_run_timings.json").read_text())
    seconds, stages = timings["seconds"], timings.get("stages", {})
    pretraining = stages.get("classification", {}).get("pretraining", {}).get("seconds")
    names = {"world": "generating the world", "scraping": "01", "classification": "02", "vae": "03", "latent": "04",
             "app_screenshot": "the app's screenshot"}
    parts = [f"{names[k]} {seconds[k]:.0f} s" + (f" ({pretraining:.0f} s of it pretraining the backbone, cached)"
                                                 if k == "classification" and pretraining else "")
             for k in names if k in seconds]
    return ("Wall-clock time of each part in the committed demo run (2 CPU cores, "
            f"`results/demo/full_run_timings.json`): {', '.join(parts)}; {seconds['total'] / 60:.1f} min in all.")


def app_visitors_block(benchmarks: Path = BENCHMARKS) -> str:
    """The web app under 1..N visitors at once (`bench_app.py --visitors`)."""
    record = read_benchmark(benchmarks, "app_visitors")
    if record is None:
        return "Not measured yet: `python benchmarks/bench_app.py --visitors 1,4,16` writes it."
    r = record["result"]
    lines = [f"`{record['command']}` ({r['models']}; {r['rounds_per_visitor']} photos of {r['photo_megapixels']} "
             f"megapixels per visitor; {record['cpu_cores']} CPU cores; server memory idle {r['idle_rss_mb']} MB):", "",
             "| visitors at once | answered | wait from upload to answer, median / 95th percentile | peak memory |",
             "|---|---|---|---|"]
    lines += [f"| {run['visitors']} | {run['answered']} of {run['answers']} | {run['p50_s']:.2f} / "
              f"{run['p95_s']:.2f} s | {run['peak_rss_mb']:,} MB |" for run in r["runs"]]
    edge = r.get("photo_at_the_limit")
    if edge:
        lines += ["", f"One photo at the {r['max_megapixels']:g}-megapixel limit ({edge['megapixels']} MP): answered "
                      f"in {edge['answer_s']:.2f} s, peak memory {edge['peak_rss_mb']:,} MB. Each visitor ahead in "
                      "the queue adds one answer's time to the wait."]
    return "\n".join(lines)


def app_latency_block(benchmarks: Path = BENCHMARKS) -> str:
    """The web app's latency table (`bench_app.py`): one row per torch thread count, median / 90th percentile."""
    record = read_benchmark(benchmarks, "app_latency")
    if record is None:
        return "Not measured yet: `python benchmarks/bench_app.py` (after `make demo`) writes it."
    r = record["result"]
    steps = ("detect", "classify", "embed", "reconstruct", "morph", "total")
    lines = [f"Latency per photo (`{record['command']}`: {r['photos']} demo photos × {r['repeats']} answers, "
             f"{r['vae_image_size']} px models, median / 90th percentile, {record['cpu_cores']} CPU cores):", "",
             "| torch threads | detect | classify | embed | reconstruct | morph GIF | full answer |",
             "|---|---|---|---|---|---|---|"]
    for run in r["runs"]:
        cells = [f"{run[s]['median_s']:.3g} / {run[s]['p90_s']:.3g} s" for s in steps]
        cells[-1] = f"**{cells[-1]}**"
        label = f"{run['threads']}" + (" (the app's default)" if run["threads"] == r["app_threads"] else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    app_run = next((run for run in r["runs"] if run["threads"] == r["app_threads"]), None)
    if app_run is not None:
        lines += ["", f"Target: a full answer under {r['target_full_answer_s']:g} s — "
                      + ("met" if app_run["meets_target"] else "missed") + f" at the app's {r['app_threads']} "
                      f"thread(s). The morph is {r['morph_frames']} frames of {r['morph_frame_size']} px per model."]
    return "\n".join(lines)


def gan_vs_vae_block(benchmarks: Path = BENCHMARKS) -> str:
    """The GAN-vs-VAE table (`bench_gan_vs_vae.py`): one row per set, real images as the ceiling."""
    record = read_benchmark(benchmarks, "gan_vs_vae")
    if record is None:
        return "Not measured yet: `python benchmarks/bench_gan_vs_vae.py` (after `make demo`) writes it."
    from generative.metrics import results_table

    r = record["result"]
    load = r.get("load_average_1min") or {}
    return "\n".join([
        f"After **{r['minutes_per_model']:g} min of training each** on {r['threads']} CPU threads "
        f"(`{record['command']}`), {r['samples_per_set']} images per set at {r['image_size']} px, scored against "
        f"{r['reference_images']} held-out images; features: {r['features']}; the VAE's perceptual loss: "
        f"{r['vgg_weights']}; 1-minute load average before the VAE / before the GAN / after: "
        + " / ".join(f"{load[k]:.1f}" for k in ("before_vae", "before_gan", "after_gan") if k in load) + ".",
        "", results_table(r["rows"]), "", f"![GAN vs VAE]({r['figure']})"])


def _row_classifier_quality(r: dict) -> tuple[str, str, str]:
    init = ("random init" if r["weights"] == "none" else f"the synthetic-faces backbone "
            f"({r['pretrained_identities']:,} identities)" if r["weights"] == "synthetic" else r["weights"])
    vote = r["identity_vote"]
    return (f"classifier on real photos: one identity's {r['target_photos']} photos vs {r['other_photos']} others, "
            f"half for training, {init}, k = {r['unfreeze']}",
            f"ROC-AUC **{r['roc_auc']:.2f}**, AP {r['average_precision']:.2f} (chance {r['chance_precision']:.2f}); "
            f"the top-{vote['top_k']} vote picks {'the target' if vote['winner_is_target'] else 'another identity'} "
            f"({vote['target_votes']} of {vote['top_k']} for the target)", "none (does it transfer?)")


def pretraining_block(stage: dict, benchmarks: Path = BENCHMARKS) -> str:
    """Stage 2's synthetic pretraining: the demo's backbone (from its summary) and the seeds benchmark."""
    card = stage.get("pretraining")
    lines = []
    if card:
        lines.append(f"The demo's backbone learned to tell apart {card['identities']:,} synthetic strangers from "
                     f"{card['train_photos']:,} photos in {card['epochs_run']} epochs; on {card['heldout_photos']:,} "
                     f"photos of them it never trained on it names the right one {card['heldout_accuracy']:.1%} of "
                     f"the time (top-5: {card['heldout_top5_accuracy']:.1%}; chance {1 / card['identities']:.2%}).")
    record = read_benchmark(benchmarks, "pretrain_transfer")
    if record is not None:
        r = record["result"]
        seeds, ks = r["seeds"], r["ks"]
        lines.append(f"\nOver {len(seeds)} training seeds on the demo world (`{record['command']}`, backbone of "
                     f"{r['pretraining']['identities']:,} identities), test ROC-AUC / AP per k, mean (lowest):\n")
        lines.append("| weights | " + " | ".join(f"k = {k}" for k in ks) + " | scan: target in top 30 / top 150 "
                     "| identity vote right |")
        lines.append("|---|" + "---|" * (len(ks) + 2))
        for weights in ("synthetic", "none"):
            cells = []
            for k in ks:
                row = r["per_k"][f"{weights}_k{k}"]
                cells.append(f"{row['mean_test_roc_auc']:.2f} ({row['min_test_roc_auc']:.2f}) / "
                             f"{row['mean_test_average_precision']:.2f}")
            search = r["search"][weights]
            hits = ", ".join(f"{a} / {b}" for a, b in zip(search["top30_target"], search["top150_target"]))
            lines.append(f"| {weights} | " + " | ".join(cells) + f" | {hits} | {search['vote_correct']} |")
    return "\n".join(lines) if lines else "Not measured yet."


def _row_sweep(r: dict) -> tuple[str, str, str]:
    states = ", ".join(f"{n} {state}" for state, n in sorted(r["states"].items()))
    return (f"classifier hyperparameter sweep on the demo's crops, synthetic backbone: {r['trials']} Optuna trials "
            f"(TPE, median pruning), ≤ {r['epochs']} epochs each",
            f"{states}; best validation macro-F1 **{r['best_val_macro_f1']:.3f}** vs the default config's "
            f"{r['default_val_macro_f1']:.3f} (best: "
            f"{', '.join(f'{k} {v:.3g}' for k, v in r['best_params'].items())}); "
            f"the retrained best once on test: macro-F1 {r['test_macro_f1']:.3f}, ROC-AUC {r['test_roc_auc']:.3f} "
            f"([trials](results/benchmarks/sweep_trials.png))", "none")


BENCHMARK_ROWS = {"scraper": _row_scraper, "mtcnn": _row_mtcnn, "scan": _row_scan, "vae_speed": _row_vae_speed,
                  "synthetic_identity": _row_synthetic_identity, "classifier_quality_none": _row_classifier_quality,
                  "classifier_quality_synthetic": _row_classifier_quality, "sweep": _row_sweep,
                  "vae_quality": _row_vae_quality}


def benchmark_table(benchmarks: Path = BENCHMARKS) -> str:
    """The README's benchmark table, one row per `results/benchmarks/<name>.json` written by `make bench`."""
    lines = ["| what | command | result | target |", "|---|---|---|---|"]
    for name, row in BENCHMARK_ROWS.items():
        record = read_benchmark(benchmarks, name)
        if record is None:
            script = name.split("_none")[0].split("_synthetic")[0]
            lines.append(f"| {name} | `benchmarks/bench_{script}.py` | not run yet (`make bench` writes it) | - |")
            continue
        what, result, target = row(record["result"])
        lines.append(f"| {what} | `{record['command']}` | {result} | {target} |")
    return "\n".join(lines)


def fill_readme(text: str, blocks: dict[str, str], document: str = "README.md") -> str:
    """`text` with each `begin/end` block's body replaced by `blocks[name]`; unknown names raise KeyError.
    In a document under docs/ the figure links point one folder up."""
    up = "../" * (len(Path(document).parts) - 1)

    def body(name: str) -> str:
        return blocks[name].replace("](results/", f"]({up}results/")

    return BLOCK.sub(lambda m: f"{m.group(1)}{body(m.group('name'))}\n{m.group(4)}", text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a document is out of date")
    args = parser.parse_args(argv)
    blocks = readme_blocks()
    stale = []
    for document in DOCUMENTS:
        path = ROOT / document
        text = path.read_text(encoding="utf-8")
        filled = fill_readme(text, blocks, document)
        if filled != text:
            stale.append(document)
            if not args.check:
                path.write_text(filled, encoding="utf-8")
    if args.check and stale:
        print(f"{', '.join(stale)} out of date: run `make readme`", file=sys.stderr)
        return 1
    print(f"{len(DOCUMENTS)} documents checked, {len(stale)} {'stale' if args.check else 'rewritten'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
