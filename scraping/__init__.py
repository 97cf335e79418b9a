"""Stage 1: `sources` finds candidate photos of people (license-aware), `download` fetches them politely, `faces`
crops them with MTCNN and `curate` makes weeding out bad crops easy. The demo scrapes the synthetic `world/`."""
