"""Video data: PyAV I/O (``video``), the built-in synthetic videos (``synthetic``), degradations
(``degrade``) and (LR, HR) clip datasets (``datasets``).

Import from the submodules; this package imports nothing itself, so a process that only decodes
or builds the synthetic videos does not pay for importing torch.
"""
