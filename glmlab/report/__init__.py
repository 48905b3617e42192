"""Renderers: turn the library's results (dicts and dataclasses) into the tables and lines the
`glmlab` command prints. Nothing here computes a figure; torch is never imported."""
