"""Cloud-Optimized GeoTIFF finalization: a finished GeoTIFF map copied into a COG under a temporary name, then renamed.

Contract
    :func:`finalize_cog` turns the complete GeoTIFFs :func:`~sarlulc.inference.predict_scene` wrote (under hidden
    temporary names) into COGs at their final names. GDAL's ``COG`` driver only copies (it cannot write block by
    block), so every file goes ``GeoTIFF (temporary) -> COG (temporary name, next to the final one) -> os.replace`` and
    the GeoTIFF is removed; the class map is renamed last, like :meth:`OutputFiles.commit`, so a class map under its
    final name means its siblings are complete too. Until the rename nothing is visible under a final name: a process
    killed during the copy leaves only hidden temporaries (names from :func:`~sarlulc.inference.outputs.temporary_path`).

    Layout (:data:`COG_OPTIONS`): 512 x 512 blocks, DEFLATE (readable by every GDAL since 1.x and by browser GeoTIFF
    readers), internal overviews down to one block, ``BIGTIFF=IF_SAFER``. Overviews of class maps and water masks are
    resampled with ``MODE`` (the most frequent class id of each block: never a value that is not a class id or
    nodata; nodata pixels do not vote), probabilities and confidence with ``AVERAGE`` (:func:`overview_resampling`).
    The colour table, the nodata value, band descriptions, dataset and band tags (class names, provenance), scales,
    offsets and the internal mask band survive the copy (checked by the tests).

    Memory: the copy streams block by block through GDAL's block cache, which :data:`COG_CACHE_BYTES` caps during
    the copy (GDAL's default, 5 % of RAM, would otherwise grow with the raster); overviews are computed from the
    full-resolution blocks into a temporary file by GDAL, never as one array.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import rasterio
import rasterio.shutil

from ..errors import OutputWriteError
from ..files import output_write_error, verify_raster_complete
from .outputs import refuse_existing, remove_quietly, temporary_path

__all__ = ["COG_BLOCK", "COG_CACHE_BYTES", "COG_OPTIONS", "finalize_cog", "overview_resampling", "write_cog"]

COG_BLOCK = 512
"""Block side of every COG output (the COG driver's default, and what tile servers read)."""

COG_CACHE_BYTES = 64 * 2**20
"""GDAL's block cache during a COG copy: enough for a row of 512-px blocks of a 12,000 px wide map in every band."""

COG_OPTIONS: dict[str, str] = {
    "BLOCKSIZE": str(COG_BLOCK),
    "COMPRESS": "DEFLATE",
    "BIGTIFF": "IF_SAFER",
}
"""Creation options of the COG driver shared by every output (the resampling is per output kind)."""

_AVERAGED_KINDS = ("probabilities", "confidence")


def overview_resampling(kind: str) -> str:
    """The overview resampling of an output kind (a key of :func:`~sarlulc.inference.outputs.output_paths`).

    Categorical maps (``classes``, ``water``) take the block's most frequent value, so an overview pixel is always a
    class id or nodata; probabilities are quantities and are averaged.
    """
    return "AVERAGE" if kind in _AVERAGED_KINDS else "MODE"


def write_cog(source: Path, final: Path, kind: str) -> Path:
    """Copy the GeoTIFF ``source`` into a COG under a hidden temporary name next to ``final`` and return that name.

    The copy is verified like every output (:func:`~sarlulc.files.verify_raster_complete`: it reopens and its last
    block decodes; GDAL only logs a block it failed to write on a full disk). The caller renames it
    (:func:`finalize_cog`); on failure the temporary file is removed and :class:`~sarlulc.errors.OutputWriteError`
    (a full disk named as such) or the interrupt is raised.
    """
    temporary = temporary_path(final, "cog")
    try:
        with rasterio.Env(GDAL_CACHEMAX=COG_CACHE_BYTES, GDAL_NUM_THREADS="2"):
            rasterio.shutil.copy(
                source, temporary, driver="COG", OVERVIEW_RESAMPLING=overview_resampling(kind), **COG_OPTIONS
            )
        verify_raster_complete(temporary)
    except OutputWriteError:
        remove_quietly(temporary)
        raise
    except (OSError, rasterio.errors.RasterioError) as err:
        remove_quietly(temporary)
        raise output_write_error(final, err, "map") from err
    except BaseException:
        remove_quietly(temporary)
        raise
    return temporary


def finalize_cog(sources: Mapping[str, Path], finals: Mapping[str, Path], overwrite: bool) -> None:
    """Copy every GeoTIFF of ``sources`` (by output kind) into a COG at ``finals[kind]``; the class map renamed last.

    The GeoTIFF sources are removed once every COG is in place, and after a failure (with any COG temporary).

    Raises:
        FileExistsError: a final name appeared meanwhile and ``overwrite`` is false.
    """
    converted: dict[str, Path] = {}
    try:
        for kind, source in sources.items():
            converted[kind] = write_cog(source, finals[kind], kind)
        if not overwrite:
            refuse_existing(dict(finals))
        for kind in sorted(converted, key=lambda k: k == "classes"):
            os.replace(converted.pop(kind), finals[kind])
    finally:
        for temporary in converted.values():
            remove_quietly(temporary)
        for source in sources.values():
            remove_quietly(source)
