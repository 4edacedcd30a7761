"""Side-by-side measurements: train or build several alternatives on the same data and compare them.

`compare.tokenizers` trains our tokenizers and the usual libraries' on one corpus and
measures them on held-out text; `compare.tokenizer_report` writes the results as a
Markdown table, CSV, JSON and a plot. This package imports the core, never the other way round.
"""
