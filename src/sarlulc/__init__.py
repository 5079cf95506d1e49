"""sarlulc: land-use/land-cover mapping from ALOS-2 PALSAR-2 HH SAR, native to Hugging Face Transformers.

Importing the package registers every configuration, model and image processor with the transformers Auto classes,
so ``AutoModel.from_pretrained(dir)`` works on a sarlulc checkpoint without ``trust_remote_code``.
"""

__version__ = "0.1.0"

from .data.classes import IGNORE_INDEX, LULC_9, WATER, ClassScheme, get_scheme

__all__ = [
    "IGNORE_INDEX",
    "LULC_9",
    "WATER",
    "ClassScheme",
    "__version__",
    "get_scheme",
]
