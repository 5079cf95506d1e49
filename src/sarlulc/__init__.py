"""sarlulc: land-use/land-cover mapping from ALOS-2 PALSAR-2 HH SAR, native to Hugging Face Transformers.

Importing the package registers every configuration, model and image processor with the transformers Auto classes,
so ``AutoModel.from_pretrained(dir)`` works on a sarlulc checkpoint without ``trust_remote_code``, and marks the
classes for remote code, so every checkpoint saved with the package also loads where only
``trust_remote_code=True`` is available.
"""

__version__ = "0.1.0"

from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoModel,
    AutoModelForPreTraining,
)

from .data.classes import IGNORE_INDEX, LULC_9, WATER, ClassScheme, get_scheme
from .models.configuration_sar_mixmae import SarMixMAEConfig
from .models.modeling_sar_mixmae import (
    SarMixMAEBackbone,
    SarMixMAEForPreTraining,
    SarMixMAEModel,
)


def _register() -> None:
    AutoConfig.register(SarMixMAEConfig.model_type, SarMixMAEConfig, exist_ok=True)
    AutoModel.register(SarMixMAEConfig, SarMixMAEModel, exist_ok=True)
    AutoModelForPreTraining.register(SarMixMAEConfig, SarMixMAEForPreTraining, exist_ok=True)
    AutoBackbone.register(SarMixMAEConfig, SarMixMAEBackbone, exist_ok=True)

    # Remote code: save_pretrained copies the (flat) model files next to the weights and writes `auto_map`.
    SarMixMAEConfig.register_for_auto_class("AutoConfig")
    SarMixMAEModel.register_for_auto_class("AutoModel")
    SarMixMAEForPreTraining.register_for_auto_class("AutoModelForPreTraining")
    SarMixMAEBackbone.register_for_auto_class("AutoBackbone")


_register()

__all__ = [
    "IGNORE_INDEX",
    "LULC_9",
    "WATER",
    "ClassScheme",
    "SarMixMAEBackbone",
    "SarMixMAEConfig",
    "SarMixMAEForPreTraining",
    "SarMixMAEModel",
    "__version__",
    "get_scheme",
]
