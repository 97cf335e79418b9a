"""Plumbing every stage shares: atomic files, run configs and overrides, seeding and devices, the CLI front,
the CelebA text formats, and image sheets, fonts and notebook previews. Imports nothing from the stages.
"""
