"""VSR model families. Each module registers its family on import (explicit imports, no scanning)."""

from fedvsr.models import (
    basicvsr,  # noqa: F401
    basicvsrpp,  # noqa: F401
    efvsr,  # noqa: F401
    fca2,  # noqa: F401
    fcvsr,  # noqa: F401
    vsrgan,  # noqa: F401
)
from fedvsr.models.base import VSRModel, charbonnier
from fedvsr.models.registry import build_model, count_params, get_entry, model_names, register_model

__all__ = [
    "VSRModel",
    "build_model",
    "charbonnier",
    "count_params",
    "get_entry",
    "model_names",
    "register_model",
]
