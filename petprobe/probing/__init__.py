"""Asking a trained backbone + head what it has learnt: pixel-space classifiers, ideal images
(feature visualisation), targeted adversarial attacks and their transfer to another backbone,
and the captioned sheets that show them."""
