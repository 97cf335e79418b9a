"""The web that stage 1 scrapes in demo mode: the synthetic world's gallery pages, served on 127.0.0.1.

Notebook 01 runs as it is in a fresh clone: `open_demo_web` generates the world when its `world.json` is missing
(the same world `make demo` makes) and serves the world's web folder for the scraper to fetch over HTTP.
"""
from __future__ import annotations

import warnings
from pathlib import Path

from world.generate import WorldConfig, generate_world, read_world
from world.webserver import DEMO_PORT, ServedFolder


def open_demo_web(world_json: str | Path, seed: int = 0, port: int = DEMO_PORT,
                  config: WorldConfig | None = None) -> tuple[dict, ServedFolder]:
    """The synthetic world of `world_json` and a server of its web; stop the server with `.stop()`.

    world_json: `<folder>/world.json`; when missing, the world is generated into `<folder>` first (`config`,
        default the demo's world for `seed`: about a minute on 2 cores).
    port: fixed by default, so a rerun sees the same URLs (the manifests' keys) and skips its downloads. A busy
        port falls back to a free one, said in one printed line (the downloads are then fetched again, deduped).
    Returns `(world, server)`: the world's summary (`read_world`, paths joined to its folder) and the server,
    whose `.url` ends in `/`.
    """
    world_json = Path(world_json)
    if not world_json.is_file():
        generate_world(config or WorldConfig(seed=seed), world_json.parent)
    world = read_world(world_json)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # said below, without the warning's source location
        server = ServedFolder(world["web_root"], port=port)
    if server.port != port:
        print(f"port {port} is busy: serving the world's web on port {server.port} instead")
    return world, server
