"""Stage 0: the synthetic celebrity world, the embedded default data every stage runs on offline.

`portraits` draws a person in a photo; `generate` writes a local web of gallery pages and a CelebA-format haystack
from a seed; `webserver` serves the web on 127.0.0.1 so the real scraper can fetch it. `python -m world generate`.
"""
