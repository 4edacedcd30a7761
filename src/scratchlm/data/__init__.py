"""Data: the built-in Shakespeare corpus, user corpora, and the token cache."""
