"""fedvsr: federated training of video super-resolution models on Ray."""

__version__ = "0.1.0"
