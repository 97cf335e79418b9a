"""The synthetic celebrity world, generated offline and deterministically from a seed by `generate_world`.

* `<out>/web/`: a local web to scrape (serve it with `world.webserver`): an index of people, one paginated gallery
  per person (`srcset`, lazy `data-src`, relative URLs) of in-the-wild photos, with group photos, photos with no
  face, exact and resized duplicates, a broken link and a non-image link. `<out>/web_truth.json` says what is
  really in each photo.
* `<out>/celeba/`: a haystack in CelebA's layout of aligned 178x218 portraits with the web's target planted a few
  dozen times under their own identity number.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import html
import json
import multiprocessing
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from common.config import apply_overrides, code_version, config_to_dict, parse_set_options, save_config
from common.files import atomic_write_bytes, atomic_write_text, slugify
from common.images import caption_font, save_sheet
from .portraits import (ALIGNED_SIZE, CELEBA_ATTRIBUTES, Identity, Nuisance, celeba_attributes, draw_background,
                        encode_jpeg, finish_photo, identity_distance, paste_person, random_identity,
                        random_nuisance, render_portrait)

# A 1x1 transparent GIF: what lazy-loading galleries put in `src` until a script swaps in `data-src`.
PLACEHOLDER_GIF = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"
PAGE = ('<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>\n'
        '<body>\n{body}\n</body></html>\n')
# A gallery item in one of the four markup styles seen across real sites (srcset, lazy data-src, ./ + 2x, plain).
IMG_STYLES = ('<img src="{thumb}" srcset="{thumb} 160w, {href} {width}w" sizes="160px" alt="{alt}">',
              '<img class="lazy" src="' + PLACEHOLDER_GIF + '" data-src="{thumb}" alt="{alt}" loading="lazy">',
              '<img src="./{thumb}" srcset="./{thumb} 1x, ./{href} 2x" alt="{alt}">',
              '<img src="{thumb}" alt="{alt}" width="160">')

# Random-number streams: each purpose gets its own, so changing one size leaves the other outputs unchanged.
_TARGET, _OTHERS, _WEB, _HAYSTACK, _STRANGERS = 1, 2, 3, 4, 5


@dataclass(frozen=True)
class WorldConfig:
    """Everything that decides the synthetic world; the defaults make a demo-sized world in well under a minute."""

    seed: int = 0  # decides every identity, photo and file
    target_name: str = "Ava Marlowe"  # fictional person the demo scrapes, classifies and finds
    target_male: bool = False  # the target is drawn until their sex matches the name
    other_names: tuple[str, ...] = ("Robin Whitcombe", "Sam Castellane", "Jordan Varga", "Alex Osterberg",
                                    "Quinn Rafferty")  # fictional people with galleries of their own
    lookalike_others: int = 2  # how many of them resemble the target (same sex, close): hard negatives
    target_photos: int = 40  # single-person photos in the target's gallery
    other_photos: int = 16  # single-person photos in each other person's gallery
    group_photos: int = 6  # photos of 2-4 people; the first two thirds include the target
    no_face_photos: int = 2  # scenes without a person, per gallery
    duplicates: int = 1  # exact byte copies under another name, per gallery
    near_duplicates: int = 1  # resized and re-compressed copies, per gallery
    per_page: int = 12  # gallery items per page (pagination)
    photo_width: tuple[int, int] = (420, 720)  # range of full-size photo widths in pixels
    thumb_width: int = 160  # thumbnail width in pixels
    haystack_identities: int = 200  # people in the CelebA-format haystack besides the target
    haystack_photos_per_identity: int = 15  # aligned photos per haystack person
    target_count: int = 30  # how many times the target is planted in the haystack
    target_partition: int = 0  # CelebA partition of the target's photos (0 train, 1 valid, 2 test)
    partition_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)  # identity-disjoint split, like CelebA
    min_target_distance: float = 3.0  # haystack strangers closer than this to the target are redrawn
    workers: int = 2  # processes rendering the haystack (1 = in this process)


def _draw_until(rng: np.random.Generator, accept: Callable[[Identity], bool], who: str = "a person") -> Identity:
    """The first `random_identity(rng)` that `accept`s."""
    for _ in range(100_000):
        identity = random_identity(rng)
        if accept(identity):
            return identity
    raise RuntimeError(f"could not draw {who} for the synthetic world: relax min_target_distance")


def target_identity(seed: int, male: bool = False) -> Identity:
    """The target person of the world with this seed (same on the web and in the haystack)."""
    return _draw_until(np.random.default_rng([seed, _TARGET]), lambda identity: identity.male == male)


def web_people(config: WorldConfig) -> list[dict[str, Any]]:
    """The people with galleries, the target first: dicts with name, slug, identity, is_target. The first
    `lookalike_others` others have the target's sex and a distance to it of `min_target_distance` + 0..1.5; the
    rest are clearly different from everyone."""
    target = target_identity(config.seed, config.target_male)
    people = [{"name": config.target_name, "slug": slugify(config.target_name), "identity": target,
               "is_target": True}]
    rng = np.random.default_rng([config.seed, _OTHERS])
    near = config.min_target_distance

    def fits(candidate: Identity, lookalike: bool) -> bool:
        if lookalike:
            return (candidate.male == target.male and near <= identity_distance(candidate, target) <= near + 1.5
                    and all(identity_distance(candidate, p["identity"]) >= near for p in people[1:]))
        return all(identity_distance(candidate, p["identity"]) >= near + 1 for p in people)

    for index, name in enumerate(config.other_names):
        candidate = _draw_until(rng, lambda c: fits(c, index < config.lookalike_others), repr(name))
        people.append({"name": name, "slug": slugify(name), "identity": candidate, "is_target": False})
    return people


def render_scene(people: Sequence[tuple[Identity, Nuisance]], size: tuple[int, int], scene: Nuisance
                 ) -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
    """A photo of (identity, nuisance) people in a room lit by `scene`: returns (RGB image, face boxes in the
    order given). Smaller faces are drawn first, so nearer people overlap farther ones."""
    image = draw_background(size, scene, scene=True)
    boxes: list[tuple[int, int, int, int]] = [(0, 0, 0, 0)] * len(people)
    for k in sorted(range(len(people)), key=lambda k: people[k][1].face_scale):
        boxes[k] = paste_person(image, *people[k])
    return finish_photo(image, scene), boxes


def _scene_nuisance(rng: np.random.Generator) -> Nuisance:
    return random_nuisance(rng, clutter=int(rng.integers(3, 12)), light_strength=float(rng.uniform(0, 0.35)))


def _photo_size(rng: np.random.Generator, widths: tuple[int, int]) -> tuple[int, int]:
    width = int(rng.integers(widths[0], widths[1] + 1))
    aspect = [0.75, 0.667, 1.0, 1.333][int(rng.integers(4))]  # height / width: landscape, square, portrait
    return width, int(width * aspect)


def single_person_photo(identity: Identity, rng: np.random.Generator, widths: tuple[int, int] = (420, 720)):
    """An in-the-wild photo of one person (width drawn from `widths`, pixels): returns (image, [face box])."""
    size = _photo_size(rng, widths)
    # The face takes a modest part of the frame: interocular 6-13 % of the width (face ~20-40 % of it).
    scale = float(rng.uniform(0.06, 0.13)) * min(1.0, size[1] / size[0]) ** 0.5
    person = random_nuisance(rng, face_x=float(rng.uniform(0.3, 0.7)), face_y=float(rng.uniform(0.3, 0.46)),
                             face_scale=scale, blur=0.0, noise=0.0)
    return render_scene([(identity, person)], size, _scene_nuisance(rng))


def _group_photo(identities: Sequence[Identity], rng: np.random.Generator, widths: tuple[int, int]):
    width = int(rng.integers(max(widths[0], 560), max(widths[1], 600) + 1))
    size = (width, int(width * 0.62))
    count = len(identities)
    pairs = []
    for k, identity in enumerate(identities):
        x = (k + 0.5) / count + float(rng.uniform(-0.04, 0.04)) / count
        pairs.append((identity, random_nuisance(rng, face_x=x, face_y=float(rng.uniform(0.32, 0.45)),
                                                face_scale=float(rng.uniform(0.045, 0.07)), blur=0.0, noise=0.0)))
    return render_scene(pairs, size, _scene_nuisance(rng))


def _gallery_item(entry: dict, k: int) -> str:
    """HTML for one gallery item, in the markup style `k` picks."""
    href, alt = entry["href"], html.escape(entry["alt"])
    if entry.get("kind") == "non_image":
        return f'<li><a href="{href}">{alt}</a></li>'
    img = IMG_STYLES[k % 4].format(thumb=entry["thumb"], href=href, width=entry.get("width", 640), alt=alt)
    return f'<li><figure><a href="{href}">{img}</a><figcaption>{alt}</figcaption></figure></li>'


def _write_gallery_pages(web: Path, person: dict, items: list[dict], per_page: int) -> list[str]:
    """Write people/<slug>/index.html, page2.html, ...; returns their paths relative to the site root."""
    folder = web / "people" / person["slug"]
    pages = [items[k:k + per_page] for k in range(0, max(1, len(items)), per_page)]
    names = ["index.html"] + [f"page{k}.html" for k in range(2, len(pages) + 1)]
    for number, (name, page_items) in enumerate(zip(names, pages)):
        listing = "\n".join(_gallery_item(item, k) for k, item in enumerate(page_items))
        nav = [f'<a href="{names[number - 1]}" rel="prev">&lsaquo; Previous</a>'] if number > 0 else []
        if number + 1 < len(pages):
            nav.append(f'<a href="{names[number + 1]}" rel="next">Next &rsaquo;</a>')
        body = (f'<header><a href="../../index.html">All people</a></header>\n'
                f'<h1>{html.escape(person["name"])} &mdash; photos (page {number + 1} of {len(pages)})</h1>\n'
                f'<ul class="gallery">\n{listing}\n</ul>\n<nav class="pagination">{" ".join(nav)}</nav>')
        atomic_write_text(folder / name, PAGE.format(title=html.escape(f'{person["name"]} photos'), body=body))
    return [f"people/{person['slug']}/{name}" for name in names]


def generate_web(config: WorldConfig, web: Path, progress: bool = True) -> dict[str, Any]:
    """Write the local web under `web` (the site root) and return its ground truth: one record per photo file
    (path, kind, who is in it with face boxes in pixels, what it duplicates), the broken and non-image links."""
    people = web_people(config)
    target = people[0]
    rng = np.random.default_rng([config.seed, _WEB])
    photos: list[dict] = []
    galleries: dict[str, list[dict]] = {p["slug"]: [] for p in people}
    total = (config.target_photos + config.other_photos * (len(people) - 1) + config.group_photos
             + len(people) * (config.no_face_photos + config.near_duplicates))
    bar = tqdm(total=total, desc="web photos", disable=not progress, leave=False)

    def add_photo(image, quality, rel_dir: str, name: str, kind: str, who: list[dict], linked_to: list[str],
                  duplicate_of: str | None = None, alt: str = "") -> None:
        photo_rel, thumb_rel, width = f"{rel_dir}/{name}", f"{rel_dir}/thumbs/{name}", config.thumb_width
        atomic_write_bytes(web / photo_rel, encode_jpeg(image, quality))
        thumb = image.resize((width, max(1, round(image.height * width / image.width))), Image.LANCZOS)
        atomic_write_bytes(web / thumb_rel, encode_jpeg(thumb, 80))
        photos.append({"path": photo_rel, "kind": kind, "people": who, "duplicate_of": duplicate_of,
                       "width": image.width, "height": image.height, "galleries": linked_to})
        for slug in linked_to:
            galleries[slug].append({"kind": kind, "photo": photo_rel, "thumb": thumb_rel, "alt": alt,
                                    "width": image.width})
        bar.update(1)

    for person in people:
        slug, name = person["slug"], person["name"]
        rel_dir = f"people/{slug}/photos"
        count = config.target_photos if person["is_target"] else config.other_photos
        for k in range(count):
            image, boxes = single_person_photo(person["identity"], rng, config.photo_width)
            add_photo(image, int(rng.integers(70, 96)), rel_dir, f"{slug}_{k + 1:03d}.jpg", "single",
                      [{"name": name, "box": list(boxes[0])}], [slug], alt=f"{name}, photo {k + 1}")
        for k in range(config.no_face_photos):
            size = _photo_size(rng, config.photo_width)
            image, _ = render_scene([], size, _scene_nuisance(rng))
            add_photo(image, 85, rel_dir, f"{slug}_venue_{k + 1}.jpg", "no_face", [], [slug],
                      alt=f"The venue before {name} arrived")

    # Group photos live in a shared folder and are linked from the gallery of everyone in them.
    others = people[1:]
    n_with_target = (2 * config.group_photos + 2) // 3
    for g in range(config.group_photos):
        size_group = int(rng.integers(2, 5))
        pool = list(range(len(others)))
        rng.shuffle(pool)
        members = ([target] if g < n_with_target else []) + [others[j] for j in pool]
        members = members[:size_group]
        if len(members) < size_group or rng.random() < 0.3:  # a stranger with no gallery joins in
            members.append({"name": "unknown", "slug": None, "identity": random_identity(rng), "is_target": False})
        image, boxes = _group_photo([m["identity"] for m in members], rng, config.photo_width)
        named = [m for m in members if m["slug"]]
        add_photo(image, int(rng.integers(70, 96)), "events", f"event_{g + 1:02d}.jpg", "group",
                  [{"name": m["name"], "box": list(b)} for m, b in zip(members, boxes)],
                  [m["slug"] for m in named], alt=" and ".join(m["name"] for m in named) + " at an event")

    # Duplicates: exact byte copies and resized, re-compressed copies of single photos.
    for person in people:
        slug = person["slug"]
        singles = [p for p in photos if p["kind"] == "single" and slug in p["galleries"]]
        picks = rng.choice(len(singles), size=min(len(singles), config.duplicates + config.near_duplicates),
                           replace=False)
        for j, index in enumerate(picks):
            source = singles[int(index)]
            stem = Path(source["path"]).stem
            if j < config.duplicates:
                copy, folder = f"{stem}_copy.jpg", f"people/{slug}/photos"
                for sub in ("", "/thumbs"):  # the photo and its thumbnail, byte for byte
                    atomic_write_bytes(web / f"{folder}{sub}/{copy}", (web / f"{folder}{sub}/{stem}.jpg").read_bytes())
                photos.append({**source, "path": f"{folder}/{copy}", "kind": "duplicate",
                               "duplicate_of": source["path"]})
                galleries[slug].append({"kind": "duplicate", "photo": f"{folder}/{copy}",
                                        "thumb": f"{folder}/thumbs/{copy}", "alt": "Copy", "width": source["width"]})
            else:
                with Image.open(web / source["path"]) as original:
                    factor = float(rng.uniform(0.5, 0.8))
                    small = original.convert("RGB").resize(
                        (round(original.width * factor), round(original.height * factor)), Image.LANCZOS)
                scaled = [{"name": q["name"], "box": [round(v * factor) for v in q["box"]]} for q in source["people"]]
                add_photo(small, 60, f"people/{slug}/photos", f"{stem}_small.jpg", "near_duplicate", scaled,
                          [slug], duplicate_of=source["path"], alt="Smaller version")
    bar.close()

    # Every gallery also links a missing file (404) and a text file; its items are shuffled (so copies are not next
    # to their originals) and paginated.
    broken, non_image, pages = [], [], {}
    for person in people:
        slug = person["slug"]
        broken.append(f"people/{slug}/photos/{slug}_lost.jpg")
        non_image.append(f"people/{slug}/press_notes.txt")
        atomic_write_text(web / non_image[-1], f"Press notes about {person['name']}. No photos here.\n")
        items = galleries[slug] + [
            {"kind": "broken", "photo": broken[-1], "thumb": f"people/{slug}/photos/thumbs/{slug}_lost.jpg",
             "alt": "Photo removed"},
            {"kind": "non_image", "photo": non_image[-1], "thumb": "", "alt": "Press notes (text)"}]
        items = [items[int(k)] for k in rng.permutation(len(items))]
        items.append(dict(items[0]))  # the same photo linked twice: an exact duplicate URL
        prefix = f"people/{slug}/"
        for item in items:
            # URLs relative to the gallery folder; shared event photos need ../../
            for key, value in (("href", item["photo"]), ("thumb", item["thumb"])):
                if value:
                    item[key] = value[len(prefix):] if value.startswith(prefix) else "../../" + value
        pages[slug] = _write_gallery_pages(web, person, items, config.per_page)

    people_links = "\n".join(
        f'<li><a href="people/{p["slug"]}/index.html">{html.escape(p["name"])}</a></li>' for p in people)
    name = html.escape(target["name"])
    atomic_write_text(web / "index.html", PAGE.format(title="Celebrity photo galleries", body=(
        f'<h1>Celebrity photo galleries</h1>\n<ul class="people">\n{people_links}\n</ul>\n'
        f'<p><a href="people/{target["slug"]}/interview.html">Interview with {name}</a></p>')))
    atomic_write_text(web / f"people/{target['slug']}/interview.html", PAGE.format(
        title="Interview", body=f"<h1>An interview with {name}</h1><p>No photos on this page.</p>"))
    atomic_write_text(web / "robots.txt", "User-agent: *\nAllow: /\n")

    return {"photos": photos, "broken_links": broken, "non_image_links": non_image, "pages": pages,
            "people": [{"name": p["name"], "slug": p["slug"], "is_target": p["is_target"],
                        "identity": asdict(p["identity"])} for p in people]}


def _render_haystack_batch(root: str, items: list[tuple[str, Identity, Nuisance]]) -> None:
    """Render and write aligned portraits, skipping files that already exist."""
    for name, identity, nuisance in items:
        if not (Path(root) / name).exists():
            image = render_portrait(identity, nuisance, ALIGNED_SIZE)
            atomic_write_bytes(Path(root) / name, encode_jpeg(image, nuisance.jpeg_quality))


def haystack_strangers(seed: int, n_identities: int, planted: Identity | None = None,
                       min_planted_distance: float = 3.0) -> list[Identity]:
    """The haystack's `n_identities` strangers for `seed`, each redrawn while within `min_planted_distance` of
    `planted`."""
    rng = np.random.default_rng([seed, _STRANGERS])
    return [_draw_until(rng, lambda p: planted is None or identity_distance(p, planted) >= min_planted_distance)
            for _ in range(n_identities)]


def world_identities(config: WorldConfig) -> list[Identity]:
    """Every person of the world `config` makes: the web people (the target first) and the haystack strangers."""
    target = target_identity(config.seed, config.target_male)
    return ([p["identity"] for p in web_people(config)]
            + haystack_strangers(config.seed, config.haystack_identities, target, config.min_target_distance))


def process_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    """`workers` processes, forked where the platform can (fast start, no re-import)."""
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))


def make_celeba_haystack(out: str | Path, n_identities: int = 200, photos_per_identity: int = 15, seed: int = 0,
                         planted: Identity | None = None, planted_count: int = 30, planted_partition: int = 0,
                         partition_fractions: Sequence[float] = (0.8, 0.1, 0.1), min_planted_distance: float = 3.0,
                         workers: int = 1, progress: bool = True,
                         while_rendering: Callable[[], Any] | None = None) -> dict[str, Any]:
    """Write a CelebA-format root `out` of aligned portraits (plus synthetic_identities.json): `n_identities`
    strangers with `photos_per_identity` photos each, split identity-disjointly by `partition_fractions`; `planted`
    appears `planted_count` times in `planted_partition`. `workers` processes render (the output does not depend on
    it) while this one runs `while_rendering`; existing images are kept. Returns {celeba_root, images, identities,
    target_identity, target_count}."""
    out = Path(out)
    image_dir = out / "img_align_celeba"
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, _HAYSTACK])
    total_ids = n_identities + (1 if planted is not None else 0)
    id_pool = max(10177, 2 * total_ids)  # CelebA numbers its 10,177 identities 1..10177
    numbers = [int(v) + 1 for v in rng.choice(id_pool, size=total_ids, replace=False)]

    strangers = haystack_strangers(seed, n_identities, planted, min_planted_distance)
    people = [(number, identity, photos_per_identity)  # (identity number, identity, photo count)
              for number, identity in zip(numbers[len(numbers) - n_identities:], strangers)]
    fractions = np.asarray(partition_fractions, float) / np.sum(partition_fractions)
    cuts = np.round(np.cumsum(fractions) * len(people)).astype(int)
    partition_of = {number: int(np.searchsorted(cuts, k, side="right")) for k, (number, _, _) in enumerate(people)}
    if planted is not None:
        people.insert(0, (numbers[0], planted, planted_count))
        partition_of[numbers[0]] = planted_partition

    # CelebA's file order: partition by partition, shuffled inside each.
    records = []
    for number, identity, count in people:
        photo_rng = np.random.default_rng([seed, _HAYSTACK, number])
        for _ in range(count):
            records.append((number, identity, random_nuisance(photo_rng, aligned=True)))
    order = rng.permutation(len(records))
    order = sorted(order, key=lambda k: partition_of[records[k][0]])  # stable: shuffled within partitions
    records = [records[k] for k in order]
    if len(records) > 999_999:
        raise ValueError("CelebA file names have 6 digits: at most 999,999 images")
    names = [f"{k + 1:06d}.jpg" for k in range(len(records))]

    items = [(name, identity, nuisance) for name, (_, identity, nuisance) in zip(names, records)]
    batches = [items[k:k + 64] for k in range(0, len(items), 64)]
    with contextlib.ExitStack() as stack:
        run = stack.enter_context(process_pool(workers)).map if workers > 1 else map
        done = run(_render_haystack_batch, [str(image_dir)] * len(batches), batches)  # the pool starts at once
        if while_rendering is not None:
            while_rendering()
        for _ in tqdm(done, total=len(batches), desc="haystack", disable=not progress, leave=False):
            pass

    atomic_write_text(out / "identity_CelebA.txt",
                      "".join(f"{name} {number}\n" for name, (number, _, _) in zip(names, records)))
    attr_lines = [f"{len(records)}\n", " ".join(CELEBA_ATTRIBUTES) + " \n"]
    for name, (_, identity, nuisance) in zip(names, records):
        values = celeba_attributes(identity, nuisance)
        attr_lines.append(name + "".join(f" {values[a]:2d}" for a in CELEBA_ATTRIBUTES) + "\n")
    atomic_write_text(out / "list_attr_celeba.txt", "".join(attr_lines))
    atomic_write_text(out / "list_eval_partition.txt",
                      "".join(f"{name} {partition_of[number]}\n" for name, (number, _, _) in zip(names, records)))
    atomic_write_text(out / "synthetic_identities.json", json.dumps(
        {str(number): asdict(identity) for number, identity, _ in people}, sort_keys=True) + "\n")
    return {"celeba_root": str(out), "images": len(records), "identities": len(people),
            "target_identity": numbers[0] if planted is not None else None,
            "target_count": planted_count if planted is not None else 0}


def generate_world(config: WorldConfig, out: str | Path, overwrite: bool = False, progress: bool = True
                   ) -> dict[str, Any]:
    """Write `<out>/web/` and `<out>/celeba/` for `config`; return the summary (also in `<out>/world.json`). A world
    of the same config and code is reused, one of other code redone, another config is an error unless `overwrite`."""
    out = Path(out)
    wanted = json.loads(json.dumps(config_to_dict(config)))  # tuples read back from disk as lists
    world_json, config_json = out / "world.json", out / "world_config.json"
    code = code_version("common", "world")
    saved = json.loads(world_json.read_text()) if world_json.exists() else {}
    if not overwrite:
        if saved.get("config") == wanted and saved.get("code_version") == code:
            return {**_resolved(saved["summary"], out), "reused": True}
        if config_json.exists() and json.loads(config_json.read_text()) != wanted:
            raise FileExistsError(f"{out} holds a world made with a different config; pass overwrite=True "
                                  "(CLI: --overwrite) to replace it, or choose another folder")
    if overwrite or saved:  # a different code version of the same config: redo it
        if saved and not overwrite:
            print(f"[world] {out} was made by other code (version {saved.get('code_version')}); redoing it",
                  flush=True)
        for sub in ("web", "celeba"):
            shutil.rmtree(out / sub, ignore_errors=True)
        for stale in (world_json, out / "web_truth.json"):
            stale.unlink(missing_ok=True)
    start = time.time()
    save_config(config, config_json)
    web_result: dict[str, Any] = {}

    def draw_web() -> None:  # runs while the haystack workers render
        web_result.update(generate_web(config, out / "web", progress=progress))
        atomic_write_text(out / "web_truth.json", json.dumps(web_result, indent=1, sort_keys=True) + "\n")

    haystack = make_celeba_haystack(
        out / "celeba", config.haystack_identities, config.haystack_photos_per_identity, config.seed,
        planted=target_identity(config.seed, config.target_male), planted_count=config.target_count,
        planted_partition=config.target_partition, partition_fractions=config.partition_fractions,
        min_planted_distance=config.min_target_distance, workers=config.workers, progress=progress,
        while_rendering=draw_web)
    photos, target = web_result["photos"], web_result["people"][0]
    people = [{"name": p["name"], "slug": p["slug"], "gallery": f"people/{p['slug']}/index.html",
               "photos": sum(p["slug"] in photo["galleries"] for photo in photos)} for p in web_result["people"]]
    summary = {"people": people, "target_name": target["name"], "target_slug": target["slug"],
               "target_identity": haystack["target_identity"], "target_count": haystack["target_count"],
               "haystack_images": haystack["images"], "haystack_identities": haystack["identities"],
               "web_photos": len(photos), "web_root": "web", "celeba_root": "celeba", "truth": "web_truth.json"}
    atomic_write_text(world_json, json.dumps({"config": wanted, "code_version": code, "summary": summary},
                                             indent=1, sort_keys=True) + "\n")
    return {**_resolved(summary, out), "seconds": round(time.time() - start, 1), "reused": False}


def read_world(world_json: str | Path) -> dict[str, Any]:
    """The summary of a generated world from its `world.json`, with its paths joined to the world's folder."""
    world_json = Path(world_json)
    return _resolved(json.loads(world_json.read_text())["summary"], world_json.parent)


def _resolved(summary: dict[str, Any], out: Path) -> dict[str, Any]:
    """The stored summary with its out-relative paths (web_root, celeba_root, truth) joined to `out`."""
    return {**summary, **{key: str(out / summary[key]) for key in ("web_root", "celeba_root", "truth")}}


def world_figure(out_png: str | Path, config: WorldConfig | None = None, n_photos: int = 6, n_strangers: int = 2,
                 scale: float = 0.5) -> Path:
    """Write a PNG grid of aligned portraits, `n_photos` per row: the web people (the target first) and
    `n_strangers` strangers, each `scale` times 178x218."""
    config = config or WorldConfig()
    rows = [(f"{p['name']}" + (" (target)" if p["is_target"] else ""), p["identity"]) for p in web_people(config)]
    stranger_rng = np.random.default_rng([config.seed, _STRANGERS, 99])
    rows += [(f"stranger {k + 1}", random_identity(stranger_rng)) for k in range(n_strangers)]
    cell_w, cell_h = round(ALIGNED_SIZE[0] * scale), round(ALIGNED_SIZE[1] * scale)
    label_w, pad = 150, 4
    sheet = Image.new("RGB", (label_w + n_photos * (cell_w + pad), len(rows) * (cell_h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    font = caption_font(13)
    for r, (label, identity) in enumerate(rows):
        rng = np.random.default_rng([config.seed, 4242, r])
        y = pad + r * (cell_h + pad)
        draw.text((6, y + cell_h // 2 - 8), label, font=font,
                  fill=(200, 30, 30) if "(target)" in label else (20, 20, 20))
        for c in range(n_photos):
            image = render_portrait(identity, random_nuisance(rng, aligned=True), ALIGNED_SIZE)
            sheet.paste(image.resize((cell_w, cell_h), Image.LANCZOS), (label_w + c * (cell_w + pad), y))
    return save_sheet(sheet, out_png)


def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `python -m world generate`."""
    parser.add_argument("--out", default="data/demo", help="output folder (gets web/ and celeba/)")
    parser.add_argument("--seed", type=int, default=0, help="decides every person, photo and file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a WorldConfig field, e.g. --set haystack_identities=1000 (repeatable)")
    parser.add_argument("--overwrite", action="store_true", help="replace a world made with another config")
    parser.add_argument("--figure", default=None, help="also write the identities x photos grid PNG here")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def cli_run(args: argparse.Namespace) -> dict[str, Any]:
    """Run `python -m world generate`; returns the summary printed as the last stdout line."""
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in parse_set_options(args.set).items()}
    config = apply_overrides(WorldConfig(seed=args.seed), overrides)
    summary = generate_world(config, Path(args.out), overwrite=args.overwrite, progress=not args.quiet)
    if args.figure:
        summary = {**summary, "figure": str(world_figure(args.figure, config))}
    return summary


