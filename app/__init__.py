"""Stage 4: a local web app over the trained models (`python -m app`), tested in a real browser."""
