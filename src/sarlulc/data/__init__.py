"""Data layer: class tables, ALOS-2 scene reading and calibration, tiling into `datasets`, synthetic scenes."""

from .classes import IGNORE_INDEX, JAXA_14, LULC_9, WATER, ClassScheme, LulcClass, get_scheme

__all__ = ["IGNORE_INDEX", "JAXA_14", "LULC_9", "WATER", "ClassScheme", "LulcClass", "get_scheme"]
