"""Data: readers for user files, embedded corpora, the dataset artifact, tokenize-and-pack, the loader."""
