"""VGG16 and its weights, the class heads, precision, and the hooks that reduce each layer inside the forward.
Imports analysis.data (preprocessing facts) and analysis.config only."""
