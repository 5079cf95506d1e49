"""Does a scene match what the model was trained on? The one check :func:`~sarlulc.inference.predict_scene` runs.

Contract
    :func:`check_scene_against_model` compares a probed scene (:class:`~sarlulc.inference.records.SceneInput`) with
    the training-data record of the checkpoint's image processor (``backscatter``, ``polarizations``): a difference
    is one :class:`UserWarning` line naming both values, or, with ``strict=True``, a
    :class:`~sarlulc.errors.SarLulcDataError` raised before any output file exists. A side that is unknown (a plain
    GeoTIFF without a ``SARLULC_BACKSCATTER`` tag, a checkpoint saved before the record existed) is not compared: an
    unknown value is no evidence of a mismatch. The ground sampling distance is not a mismatch: the scene is resampled
    (:mod:`sarlulc.inference.resampling`).

    :class:`SceneBandsError` is the band-count mismatch (a 2-band scene on a 1-channel model); its message names the
    library arguments that choose the bands (``bands=`` / ``polarizations=``), and
    :meth:`SceneBandsError.for_command_line` rewords it for the command line (``--bands`` / ``--polarizations``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from ..errors import SarLulcDataError
from ..models.image_processing_sar import SarImageProcessor
from .records import SceneInput

__all__ = ["SceneBandsError", "check_scene_against_model", "check_scene_bands"]


class SceneBandsError(SarLulcDataError):
    """The scene gives another number of bands than the model takes.

    Attributes:
        scene_path: the scene.
        scene_polarizations: the polarizations of the bands read, in order.
        model_polarizations: what the model takes (its recorded polarizations, else ``HH``/``HH, HV`` by count).
    """

    def __init__(
        self, scene_path: str, scene_polarizations: tuple[str, ...], model_polarizations: tuple[str, ...]
    ) -> None:
        self.scene_path = scene_path
        self.scene_polarizations = scene_polarizations
        self.model_polarizations = model_polarizations
        super().__init__(self.message("bands=(...)", "polarizations=(...)", f"polarizations={model_polarizations!r}"))

    def message(self, bands_option: str, polarizations_option: str, example: str) -> str:
        """The error's text, telling the user to pass ``bands_option`` or ``polarizations_option`` (``example``)."""
        scene, model = self.scene_polarizations, self.model_polarizations
        return (
            f"scene {self.scene_path} has {len(scene)} band(s) ({', '.join(scene)}) but the model takes "
            f"{len(model)} ({', '.join(model)}); choose the scene's bands with {bands_option} or "
            f"{polarizations_option}, e.g. {example}"
        )

    def for_command_line(self) -> SarLulcDataError:
        """The same error worded for ``sarlulc predict``, whose options are ``--bands`` and ``--polarizations``."""
        example = f"--polarizations {' '.join(self.model_polarizations)}"
        return SarLulcDataError(self.message("--bands", "--polarizations", example))


def _model_polarizations(processor: SarImageProcessor, num_channels: int) -> tuple[str, ...]:
    recorded = getattr(processor, "polarizations", None)
    if recorded and len(recorded) == num_channels:
        return tuple(recorded)
    return ("HH", "HV")[:num_channels]


def check_scene_bands(scene: SceneInput, processor: SarImageProcessor, model_channels: int) -> None:
    """Raise :class:`SceneBandsError` when the scene's band count differs from the model's."""
    if scene.num_channels != model_channels:
        polarizations = scene.polarizations or ("HH", "HV")[: scene.num_channels]
        raise SceneBandsError(scene.path, tuple(polarizations), _model_polarizations(processor, model_channels))


def check_scene_against_model(scene: SceneInput, processor: SarImageProcessor, *, strict: bool = False) -> list[str]:
    """Compare the scene's backscatter convention and polarizations with the model's training data.

    Returns:
        The mismatches found (each also warned as one line), empty when the scene matches or a side is unknown.

    Raises:
        SarLulcDataError: ``strict`` and a mismatch (the first one, naming both values).
    """
    name = Path(scene.path).name
    problems = []
    trained_on = getattr(processor, "backscatter", None)
    if trained_on is not None and scene.backscatter is not None and scene.backscatter != trained_on:
        problems.append(f"scene {name} gives {scene.backscatter} backscatter but the model was trained on {trained_on}")
    model_polarizations = getattr(processor, "polarizations", None)
    if model_polarizations and scene.polarizations and tuple(scene.polarizations) != tuple(model_polarizations):
        problems.append(
            f"scene {name} gives polarizations {','.join(scene.polarizations)} but the model was trained on "
            f"{','.join(model_polarizations)}"
        )
    if problems and strict:
        raise SarLulcDataError(f"{problems[0]}; refused because strict=True (--strict)")
    for problem in problems:
        warnings.warn(f"{problem}; the map may be wrong (strict=True / --strict refuses such scenes)", stacklevel=3)
    return problems
