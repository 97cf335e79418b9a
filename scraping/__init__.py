"""Stage 1: scrape photos of people (license-aware), crop their faces with MTCNN, weed out bad crops.

Also holds the project's embedded default data (a procedural "synthetic celebrity world") and the small
run-time helpers every stage shares (`scraping.config`, `scraping.files`), since later stages import from
earlier ones and never the other way round.
"""
