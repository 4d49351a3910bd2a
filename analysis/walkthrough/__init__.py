"""The one-image walkthrough's numbers: a single convolution, the model's answer, each layer's maps and means.
Imports any package before it."""
