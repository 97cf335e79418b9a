"""The web that stage 1 scrapes in demo mode: the synthetic world's gallery pages, served on 127.0.0.1."""
from __future__ import annotations

import warnings
from pathlib import Path

from world.generate import WorldConfig, generate_world, read_world
from world.webserver import DEMO_PORT, ServedFolder


def open_demo_web(world_json: str | Path, seed: int = 0, port: int = DEMO_PORT,
                  config: WorldConfig | None = None) -> tuple[dict, ServedFolder]:
    """`(world, server)`: the world of `world_json` (generated first from `config` or the demo world for `seed`
    when missing) and a server of its web (`.url`, `.stop()`). The fixed `port` keeps URLs, the manifests' keys,
    the same across reruns; a busy one falls back to a free port, said in one printed line."""
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
