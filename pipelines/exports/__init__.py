"""Filtered exports of the episode store: request, selection, formats, lifecycle, re-import."""
