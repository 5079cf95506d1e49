"""What the training data is: backscatter convention, polarizations and GSD, recorded into the saved processor.

Contract
    :func:`training_data_record` opens (without reading pixels) every scene or product that training tiles, and
    returns their common ``backscatter``, ``polarizations`` and ``gsd``. The scenes must agree: a mixture of sigma0 and
    gamma0, of band orders, or of GSDs more than :data:`~sarlulc.inference.resampling.GSD_TOLERANCE` apart is refused
    with a :class:`~sarlulc.errors.UsageError` naming two scenes that differ (a model would learn an input that no
    single scene gives, and prediction could not say what to resample or warn about). A value that some scene does not
    know (a plain GeoTIFF without a ``SARLULC_BACKSCATTER`` tag) is recorded as ``None`` (unknown: prediction then
    checks nothing), as is everything for a saved tile dataset, whose tiles no longer name their conventions.

    :func:`record_training_data` writes the record into an image processor, which ``save_pretrained`` then saves in
    ``preprocessor_config.json`` beside the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data import open_scene
from ..data.tiles import resolve_sources
from ..errors import UsageError
from ..inference.resampling import GSD_TOLERANCE
from ..models.image_processing_sar import SarImageProcessor, training_data_fields
from .batches import is_saved_dataset

__all__ = ["TrainingDataRecord", "record_training_data", "training_data_record"]


@dataclass(frozen=True)
class TrainingDataRecord:
    """The training data's backscatter convention, band polarizations and GSD in metres (``None`` = unknown)."""

    backscatter: str | None = None
    polarizations: tuple[str, ...] | None = None
    gsd: float | None = None


def training_data_record(source: Any, labels: str | Path | None = None) -> TrainingDataRecord:
    """The record of the scenes of ``source`` (a scene, product or folder, or a list of them, as
    :func:`sarlulc.data.tiles.resolve_sources` takes); unknown for a saved dataset.

    Raises:
        UsageError: the scenes disagree on the convention, the polarizations or the GSD.
    """
    if isinstance(source, (str, Path)) and is_saved_dataset(Path(source)):
        return TrainingDataRecord()
    seen: list[tuple[str, str | None, tuple[str, ...], float | None]] = []
    for scene_source in resolve_sources(source, labels):
        with open_scene(scene_source.scene, check=False) as scene:
            gsd = scene.gsd if scene.crs is not None else None
            seen.append((scene_source.scene, scene.backscatter, tuple(scene.polarizations), gsd))
    first = seen[0]
    for other in seen[1:]:
        for index, what in ((1, "backscatter convention"), (2, "polarizations")):
            if first[index] is not None and other[index] is not None and first[index] != other[index]:
                raise UsageError(
                    f"the training scenes mix {what}s: {first[0]} gives {first[index]}, {other[0]} gives "
                    f"{other[index]}; train on one kind (a model records one input convention)"
                )
        if first[3] is not None and other[3] is not None and abs(first[3] - other[3]) > GSD_TOLERANCE * first[3]:
            raise UsageError(
                f"the training scenes mix ground sampling distances: {first[0]} is {first[3]:.1f} m, {other[0]} is "
                f"{other[3]:.1f} m; train on one GSD (resample the scenes first)"
            )
    backscatters = {entry[1] for entry in seen}
    gsds = [entry[3] for entry in seen]
    return TrainingDataRecord(
        backscatter=None if None in backscatters else first[1],
        polarizations=first[2] or None,
        gsd=None if None in gsds else sum(gsds) / len(gsds),
    )


def record_training_data(processor: SarImageProcessor, record: TrainingDataRecord) -> SarImageProcessor:
    """``processor`` with the record written into its config (checked against its band count)."""
    polarizations = record.polarizations
    if polarizations is not None and len(polarizations) != processor.num_channels:
        polarizations = None  # the tiles were read with other bands than the scenes' own: the order is unknown
    fields: Any = training_data_fields(record.backscatter, polarizations, record.gsd, processor.num_channels)
    processor.backscatter, processor.polarizations, processor.gsd = fields
    return processor
