"""Renderers: the tables and lines the `glmlab` commands print, made from the library's results
(dicts and dataclasses) next to the command that shows them. torch is never imported here."""
