"""Stage 1: scrape photos of people (license-aware), crop their faces with MTCNN, weed out bad crops.

`sources` finds candidate photos, `download` fetches them politely, `faces` crops them with MTCNN and `curate`
makes weeding out bad crops easy. The synthetic world it scrapes in the demo lives in `world/`.
"""
