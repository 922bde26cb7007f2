"""Federated augmentation (issue 6): FRAug and GGEUR beside FedAvg, FedProx and FedBN."""
