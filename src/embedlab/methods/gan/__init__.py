"""GAN entropy regularisation (MEE, issue 5, in progress): building blocks, not yet in dvc.yaml."""
