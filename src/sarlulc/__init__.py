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
    AutoImageProcessor,
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForSemanticSegmentation,
)

from .data.classes import IGNORE_INDEX, LULC_9, WATER, ClassScheme, get_scheme
from .models.configuration_sar_lulc import SarLulcConfig
from .models.configuration_sar_mixmae import SarMixMAEConfig
from .models.image_processing_sar import SarImageProcessor
from .models.modeling_sar_lulc import SarLulcForSemanticSegmentation
from .models.modeling_sar_mixmae import (
    SarMixMAEBackbone,
    SarMixMAEForPreTraining,
    SarMixMAEModel,
)
from .models.pipeline_sar_segmentation import SarSegmentationPipeline, register_sar_segmentation_pipeline


def _register() -> None:
    AutoConfig.register(SarMixMAEConfig.model_type, SarMixMAEConfig, exist_ok=True)
    AutoModel.register(SarMixMAEConfig, SarMixMAEModel, exist_ok=True)
    AutoModelForPreTraining.register(SarMixMAEConfig, SarMixMAEForPreTraining, exist_ok=True)
    AutoBackbone.register(SarMixMAEConfig, SarMixMAEBackbone, exist_ok=True)
    AutoConfig.register(SarLulcConfig.model_type, SarLulcConfig, exist_ok=True)
    AutoModelForSemanticSegmentation.register(SarLulcConfig, SarLulcForSemanticSegmentation, exist_ok=True)
    for config_class in (SarLulcConfig, SarMixMAEConfig):
        AutoImageProcessor.register(
            config_class,
            image_processor_classes={"pil": SarImageProcessor, "torchvision": SarImageProcessor},
            exist_ok=True,
        )
    register_sar_segmentation_pipeline()  # the custom task "sar-segmentation"

    # Remote code: save_pretrained copies the (flat) model files next to the weights and writes `auto_map`.
    SarMixMAEConfig.register_for_auto_class("AutoConfig")
    SarMixMAEModel.register_for_auto_class("AutoModel")
    SarMixMAEForPreTraining.register_for_auto_class("AutoModelForPreTraining")
    SarMixMAEBackbone.register_for_auto_class("AutoBackbone")
    SarLulcConfig.register_for_auto_class("AutoConfig")
    SarLulcForSemanticSegmentation.register_for_auto_class("AutoModelForSemanticSegmentation")
    SarImageProcessor.register_for_auto_class("AutoImageProcessor")


_register()

__all__ = [
    "IGNORE_INDEX",
    "LULC_9",
    "WATER",
    "ClassScheme",
    "SarImageProcessor",
    "SarLulcConfig",
    "SarLulcForSemanticSegmentation",
    "SarMixMAEBackbone",
    "SarMixMAEConfig",
    "SarMixMAEForPreTraining",
    "SarMixMAEModel",
    "SarSegmentationPipeline",
    "__version__",
    "get_scheme",
]
