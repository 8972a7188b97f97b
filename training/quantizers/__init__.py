"""Quantizers of the VQ-VAE behind one seam (seam.py), one kind per file, registered in kinds.py."""
