"""PPAP diffusion guidance (issue 4, groundwork): schedules, DDIM, UNet, LoRA experts."""
