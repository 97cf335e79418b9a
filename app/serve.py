"""`python -m app serve`: load the models once and serve the page on 127.0.0.1 until Ctrl-C or SIGTERM.

SIGTERM (what `kill`, a service manager or a container stop sends) is handled as Ctrl-C is: the server stops and
its temporary folder is removed; by default Python would die on it at once and leave the folder behind.
"""
from __future__ import annotations

import argparse
import signal
import time

from . import core


def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this "
                        "machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    core.add_model_arguments(parser)


def cli_run(args: argparse.Namespace) -> dict:
    import torch

    from .ui import start_server

    torch.set_num_threads(args.threads)
    # Both raise KeyboardInterrupt. SIGINT too: a process started in the background by a shell inherits SIGINT
    # ignored, and Python then leaves it ignored, so Ctrl-C (or `kill -INT`) would not stop the server.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    models = core.load_models(core.paths_from_args(args), args.device)
    server = start_server(models, args.host, args.port)
    print(f"serving {server.url} with the models of {models.paths.classifier.parent} (Ctrl-C or SIGTERM stops)",
          flush=True)
    started = time.monotonic()
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return {"command": "serve", "url": server.url, "served_seconds": round(time.monotonic() - started, 1),
            "attribute_sliders": len(models.attributes)}
