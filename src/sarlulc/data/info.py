"""``sarlulc info``: what the readers find in scenes, JAXA products and HRLULC label folders, one block per path.

:func:`describe_path` returns the block of one path as ``(field, value)`` lines; :func:`run_info` prints the blocks of
every path of its argument record and reports the paths that could not be read afterwards, as one
:class:`~sarlulc.errors.SarLulcDataError` (one line and exit status 2 at the command line), so that one bad path does
not hide what the others hold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from sarlulc_cli.arguments import InfoArguments

from ..errors import SarLulcDataError
from .labels import HRLULC_TILE_NAME, is_label_folder, open_label_tiles
from .products import ProductScene, open_scene
from .scene import SarScene, ground_sampling_distance

__all__ = ["describe_path", "run_info"]

_BACKSCATTER_WORDS = {
    "sigma0": "sigma0 (sigma naught, ellipsoid-referenced)",
    "gamma0": "gamma0 (terrain-flattened gamma naught)",
    None: "unknown (the file does not say; tag SARLULC_BACKSCATTER=sigma0|gamma0 to record it)",
}
_LABEL_CHECK_SIZE = 128  # a decimated read of a label mosaic touches many tiles: keep it small


def _grid_lines(crs, transform, shape: tuple[int, int], pixel_size_m: tuple[float, float]) -> list[tuple[str, str]]:
    height, width = shape
    units = "deg" if crs.is_geographic else "m"
    epsg = crs.to_epsg()
    dx, dy = pixel_size_m
    return [
        ("crs", f"EPSG:{epsg}" if epsg else crs.to_wkt()),
        (
            "grid",
            f"{height} x {width} px, pixel {abs(transform.a):.6g} x {abs(transform.e):.6g} {units}, upper-left "
            f"({transform.c:.6f}, {transform.f:.6f})",
        ),
        ("gsd", f"{(dx * dy) ** 0.5:.2f} m (pixels {dx:.2f} m across columns x {dy:.2f} m across rows)"),
    ]


def _scene_block(scene: SarScene) -> list[tuple[str, str]]:
    product = scene.product
    kind = {
        "mosaic": "25 m yearly mosaic tile",
        "l1.5": "ALOS-2 L1.5 GeoTIFF product",
        "l2.1": "ALOS-2 L2.1 GeoTIFF product",
        "ceos": "ALOS-2 CEOS delivery",
        "geotiff": "GeoTIFF",
    }.get(product.product_type, product.product_type)
    lines = [("product", f"{kind} ({product.product_type}), id {product.product_id}")]
    details = [
        ("sensor", product.sensor),
        ("orbit", None if product.orbit is None else str(product.orbit)),
        ("frame", None if product.frame is None else str(product.frame)),
        ("mode", product.mode),
        ("level", product.level),
        ("look side", product.look_side),
        ("orbit direction", product.orbit_direction),
        ("tile", product.tile),
    ]
    lines += [(name, value) for name, value in details if value]
    lines.append(("acquisition", product.describe_date() or "unknown"))
    lines.append(("files", ", ".join(product.files)))
    lines.append(("polarizations", ", ".join(scene.polarizations)))
    lines.append(("backscatter", _BACKSCATTER_WORDS[scene.backscatter]))
    if scene.input_kind == "dn":
        values = f"DN ({scene.dtype}), calibration factor {scene.calibration_factor:g} dB ({scene.calibration_factor_source})"
    else:
        values = f"{scene.input_kind} ({scene.dtype})"
    lines.append(("values", values))
    lines += _grid_lines(scene.crs, scene.transform, scene.shape, scene.pixel_size_m)
    if isinstance(scene, ProductScene):
        if scene.has_mask:
            lines.append(("mask", f"{', '.join(scene.mask_invalid) or 'nothing'} invalid"))
        if scene.auxiliary_names:
            lines.append(("auxiliary", ", ".join(scene.auxiliary_names)))
    lines.append(("valid fraction", f"{scene.valid_fraction():.3f} (of a decimated read)"))
    return lines


def _labels_block(folder: Path) -> list[tuple[str, str]]:
    with open_label_tiles(folder) as labels:
        version = labels.version or "unknown (not in the folder name)"
        scheme = (
            ""
            if labels.scheme is None
            else f", class scheme {labels.scheme.name} ({labels.scheme.num_classes} classes)"
        )
        lines = [
            ("labels", f"JAXA HRLULC tiles, version {version}{scheme}"),
            ("tiles", f"{len(labels.tiles)}: {', '.join(p.stem for p in labels.tiles)}"),
        ]
        pixel_size = ground_sampling_distance(labels.crs, labels.transform, labels.shape)
        lines += _grid_lines(labels.crs, labels.transform, labels.shape, pixel_size)
        codes = labels.read_decimated(_LABEL_CHECK_SIZE)
        present = np.unique(codes[codes != labels.nodata])
        lines.append(("labeled fraction", f"{float((codes != labels.nodata).mean()):.3f} (of a decimated read)"))
        lines.append(("codes seen", " ".join(str(int(c)) for c in present) or "none"))
    return lines


def describe_path(path: str | Path, mask_invalid: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """The ``(field, value)`` lines of one path's block.

    Raises:
        SarLulcDataError: the path cannot be read as a scene, product or label folder.
    """
    path = Path(path)
    if is_label_folder(path):
        return _labels_block(path)
    if HRLULC_TILE_NAME.match(path.name) and path.is_file():
        return _labels_block(path.parent)
    with open_scene(path, mask_invalid=mask_invalid) if mask_invalid else open_scene(path) as scene:
        return _scene_block(scene)


def run_info(args: InfoArguments, echo: Callable[[str], None] = print) -> None:
    """Print one block per path of ``args.paths``; then raise one :class:`SarLulcDataError` for the paths that
    could not be read (every one named, with its problem)."""
    problems = []
    for path in args.paths:
        try:
            lines = describe_path(path, args.mask_invalid)
        except (SarLulcDataError, ValueError) as err:
            problems.append(str(err) if str(path) in str(err) else f"{path}: {err}")
            continue
        echo(path)
        width = max(len(name) for name, _ in lines)
        for name, value in lines:
            echo(f"  {name:<{width}}  {value}")
        echo("")
    if problems:
        raise SarLulcDataError("; ".join(problems))
