"""The method packages (vq, gan, federated, diffusion), each implementing the interface in
`methods.base`. Which models exist, and where, is `embedlab.catalogue` (MODELS, GIVEN, get_model,
get_given). Adding a method: docs/add-a-method.md.
"""
