"""Concepts (issue #21): each class explained by a few non-negative parts of a layer's activations (CRAFT's NMF), with
every image's presence, peak and contribution to the class logit. Imports config, data, model, store and stats."""
