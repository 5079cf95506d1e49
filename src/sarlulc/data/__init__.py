"""Data layer: class tables, scenes and JAXA products (reading, calibration), HRLULC labels, tiling into `datasets`,
synthetic scenes and products.

``open_scene`` is the one entry point for backscatter inputs (a GeoTIFF, a mosaic tile or its archive, an L1.5/L2.1
product, a CEOS delivery); every scene has the interface of :class:`SarScene`. ``open_labels`` opens a label raster or
a folder of JAXA HRLULC tiles.

Names are imported on first use, so ``import sarlulc`` does not pay for rasterio and datasets until they are needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .classes import (
    HRLULC_V21_11,
    HRLULC_V23_12,
    IGNORE_INDEX,
    JAXA_14,
    LULC_9,
    WATER,
    ClassScheme,
    LulcClass,
    class_id_remap,
    get_scheme,
    hrlulc_scheme,
    scheme_for_id2label,
)

if TYPE_CHECKING:
    from .alos2 import (
        CALIBRATION_FACTOR_TAG,
        DEFAULT_CALIBRATION_FACTOR,
        INPUT_KIND_TAG,
        INPUT_KINDS,
        Alos2Scene,
        LabelRaster,
        SarLulcDataError,
        calibrate,
        check_alignment,
        db_to_dn,
        dn_to_db,
        linear_to_db,
    )
    from .labels import LabelMosaic, detect_hrlulc_version, open_label_tiles, open_labels
    from .products import (
        DEFAULT_MASK_INVALID,
        MOSAIC_MASK_CODES,
        ProductScene,
        find_products,
        open_scene,
        parse_standard_product_id,
    )
    from .scene import ProductInfo, SarScene
    from .synthetic import (
        CLASS_SIGMA0_DB,
        LABELS_FILENAME,
        SCENE_FILENAME,
        SyntheticLandscape,
        SyntheticScene,
        SyntheticSceneConfig,
        generate_scene,
    )
    from .synthetic_products import SyntheticProduct, generate_product
    from .tiles import (
        DEFAULT_CLIP_RANGE_DB,
        BandStatistics,
        ClassFrequencies,
        SceneSource,
        SpatialSplit,
        band_statistics,
        class_frequencies,
        find_scene_sources,
        iter_tiles,
        label_scheme,
        split_tile_dataset,
        tile_dataset,
        tile_features,
        tile_windows,
    )

_LAZY = {
    "CALIBRATION_FACTOR_TAG": "alos2",
    "DEFAULT_CALIBRATION_FACTOR": "alos2",
    "INPUT_KIND_TAG": "alos2",
    "INPUT_KINDS": "alos2",
    "Alos2Scene": "alos2",
    "LabelRaster": "alos2",
    "SarLulcDataError": "alos2",
    "calibrate": "alos2",
    "check_alignment": "alos2",
    "db_to_dn": "alos2",
    "dn_to_db": "alos2",
    "linear_to_db": "alos2",
    "open_labels": "labels",
    "LabelMosaic": "labels",
    "detect_hrlulc_version": "labels",
    "open_label_tiles": "labels",
    "DEFAULT_MASK_INVALID": "products",
    "MOSAIC_MASK_CODES": "products",
    "ProductScene": "products",
    "find_products": "products",
    "open_scene": "products",
    "parse_standard_product_id": "products",
    "ProductInfo": "scene",
    "SarScene": "scene",
    "SyntheticProduct": "synthetic_products",
    "generate_product": "synthetic_products",
    "CLASS_SIGMA0_DB": "synthetic",
    "LABELS_FILENAME": "synthetic",
    "SCENE_FILENAME": "synthetic",
    "SyntheticLandscape": "synthetic",
    "SyntheticScene": "synthetic",
    "SyntheticSceneConfig": "synthetic",
    "generate_scene": "synthetic",
    "DEFAULT_CLIP_RANGE_DB": "tiles",
    "BandStatistics": "tiles",
    "ClassFrequencies": "tiles",
    "SceneSource": "tiles",
    "SpatialSplit": "tiles",
    "band_statistics": "tiles",
    "class_frequencies": "tiles",
    "find_scene_sources": "tiles",
    "iter_tiles": "tiles",
    "label_scheme": "tiles",
    "split_tile_dataset": "tiles",
    "tile_dataset": "tiles",
    "tile_features": "tiles",
    "tile_windows": "tiles",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


__all__ = [
    "CALIBRATION_FACTOR_TAG",
    "CLASS_SIGMA0_DB",
    "DEFAULT_CALIBRATION_FACTOR",
    "DEFAULT_CLIP_RANGE_DB",
    "DEFAULT_MASK_INVALID",
    "HRLULC_V21_11",
    "HRLULC_V23_12",
    "IGNORE_INDEX",
    "INPUT_KINDS",
    "INPUT_KIND_TAG",
    "JAXA_14",
    "LABELS_FILENAME",
    "LULC_9",
    "MOSAIC_MASK_CODES",
    "SCENE_FILENAME",
    "WATER",
    "Alos2Scene",
    "BandStatistics",
    "ClassFrequencies",
    "ClassScheme",
    "LabelMosaic",
    "LabelRaster",
    "LulcClass",
    "ProductInfo",
    "ProductScene",
    "SarLulcDataError",
    "SarScene",
    "SceneSource",
    "SpatialSplit",
    "SyntheticLandscape",
    "SyntheticProduct",
    "SyntheticScene",
    "SyntheticSceneConfig",
    "band_statistics",
    "calibrate",
    "check_alignment",
    "class_frequencies",
    "class_id_remap",
    "db_to_dn",
    "detect_hrlulc_version",
    "dn_to_db",
    "find_products",
    "find_scene_sources",
    "generate_product",
    "generate_scene",
    "get_scheme",
    "hrlulc_scheme",
    "iter_tiles",
    "label_scheme",
    "linear_to_db",
    "open_label_tiles",
    "open_labels",
    "open_scene",
    "parse_standard_product_id",
    "scheme_for_id2label",
    "split_tile_dataset",
    "tile_dataset",
    "tile_features",
    "tile_windows",
]
