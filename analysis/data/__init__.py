"""Files to tensors: names, the file tree, discovery and labels, reading bytes, decoding, preprocessing, the Dataset.
Imports nothing of the library but analysis.config."""
