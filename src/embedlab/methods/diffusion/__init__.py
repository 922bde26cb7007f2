"""PPAP diffusion guidance: DDPMs, LoRA guidance experts per noise range distilled data-free from
the backbone, the supervised multi-expert baseline (method.py trains, scoring.py evaluates;
docs/methods/diffusion.md)."""
