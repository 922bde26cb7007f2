"""GAN entropy regularisation (MEE): DCGAN, MaF, MaF + DIsoMap (+ DLLE) and MEE on 2-D mixtures,
stacked digits and plain digits (method.py trains, scoring.py evaluates; docs/methods/gan.md)."""
