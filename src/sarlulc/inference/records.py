"""The typed records that the inference modules hand each other, and the report :func:`predict_scene` returns.

Contract
    Every record but :class:`PredictionReport` is a frozen dataclass: made once from checked inputs, then only read.
    :class:`Georeference` is the scene's grid (every output shares it), :class:`SceneInput` what was learned about the
    scene by opening it (bands, input kind, calibration and where the calibration came from), :class:`OutputSpec`
    which files are written for which classes, :class:`PlaneLayout` which uint8 planes a finished row band carries,
    :class:`RunStats` what one process's pipeline did. :class:`PredictionReport` keeps the (mutable) dataclass it
    always was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rasterio.transform import Affine

from ..data.alos2 import Alos2Scene
from ..data.classes import ClassScheme
from ..data.products import open_scene

__all__ = [
    "NODATA_CLASS",
    "PROBABILITY_MODES",
    "Georeference",
    "OutputSpec",
    "PlaneLayout",
    "PredictionReport",
    "ProbabilityMode",
    "RunStats",
    "SceneInput",
]

NODATA_CLASS = 255
"""Value of nodata pixels in the class map and the water mask."""

PROBABILITY_MODES = ("classes", "confidence")
"""What ``probabilities=`` can ask for: every class's probability, or only the winning class's."""

ProbabilityMode = Literal["classes", "confidence"]


@dataclass(frozen=True)
class Georeference:
    """The scene's pixel grid, which every output shares.

    Attributes:
        height, width: size in px.
        crs: the coordinate reference system (a rasterio ``CRS``).
        transform: the affine transform of pixel ``(0, 0)``'s corner.
    """

    height: int
    width: int
    crs: Any
    transform: Affine

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    def rows(self, first: int, end: int) -> Georeference:
        """The grid of the scene rows ``[first, end)`` alone (a part file of one process)."""
        return Georeference(end - first, self.width, self.crs, self.transform @ Affine.translation(0, first))


@dataclass(frozen=True)
class SceneInput:
    """What was learned about a scene by opening it once (and checking it), so that reader threads can reopen it
    cheaply with every decision already taken.

    Attributes:
        path: the scene file.
        georeference: its grid.
        num_channels: bands read (1 = HH, 2 = HH and HV).
        input_kind: ``"dn"``, ``"linear"`` or ``"db"``.
        bands: the 1-based scene bands read, in order.
        calibration_factor: CF in dB used for DN scenes.
        calibration_factor_source: where it came from: ``"argument"``, ``"tag"`` (the scene's metadata),
            ``"metadata"`` (a product's files), ``"default"`` (the data layer's -83.0 dB) or ``"processor"`` (the
            checkpoint's image processor).
        backscatter: ``"sigma0"``, ``"gamma0"`` or ``None`` (unknown) (:attr:`sarlulc.data.SarScene.backscatter`).
        polarizations: the polarization of every band read, in order.
        gsd: the ground sampling distance in metres, or ``None`` when the grid has no CRS to measure it in.
        source_tags: what the scene says about itself for the maps made from it
            (:meth:`sarlulc.data.SarScene.provenance`: product id, convention, date, ...).
    """

    path: str
    georeference: Georeference
    num_channels: int
    input_kind: str
    bands: tuple[int, ...]
    calibration_factor: float
    calibration_factor_source: str
    backscatter: str | None = None
    polarizations: tuple[str, ...] = ()
    gsd: float | None = None
    source_tags: dict[str, str] = field(default_factory=dict)

    def open(self) -> Alos2Scene:
        """A new handle on the scene with these settings, without the integrity check already done."""
        return open_scene(
            self.path,
            input_kind=self.input_kind,
            calibration_factor=self.calibration_factor,
            bands=self.bands,
            check=False,
        )


@dataclass(frozen=True)
class PlaneLayout:
    """Which uint8 planes a finished row band carries, in order: class ids, the water mask, probabilities.

    Attributes:
        num_labels: K, the model's classes.
        water_id: the class id whose pixels the water mask marks, or None for no water mask.
        probabilities: ``"classes"`` (K planes), ``"confidence"`` (1 plane) or None (none).
    """

    num_labels: int
    water_id: int | None
    probabilities: ProbabilityMode | None

    @property
    def water_plane(self) -> int | None:
        return None if self.water_id is None else 1

    @property
    def probability_planes(self) -> slice | None:
        if self.probabilities is None:
            return None
        first = 1 + (self.water_id is not None)
        return slice(first, first + (self.num_labels if self.probabilities == "classes" else 1))

    @property
    def count(self) -> int:
        planes = self.probability_planes
        return (1 + (self.water_id is not None)) if planes is None else planes.stop


@dataclass(frozen=True)
class OutputSpec:
    """The files a prediction writes and what they say.

    Attributes:
        paths: final path of each output by kind: ``"classes"`` and, when asked for, ``"probabilities"`` or
            ``"confidence"``, and ``"water"`` (:func:`sarlulc.inference.output_paths`).
        scheme: the model's classes: names, colours, water class.
        probabilities: ``"classes"``, ``"confidence"`` or None.
        water: whether a water mask is written (the scheme must have a water class).
        tags: dataset tags written into every file (provenance).
    """

    paths: dict[str, Path]
    scheme: ClassScheme
    probabilities: ProbabilityMode | None = None
    water: bool = False
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.probabilities is not None and self.probabilities not in PROBABILITY_MODES:
            raise ValueError(f"probabilities must be None or one of {PROBABILITY_MODES}, got {self.probabilities!r}")
        kinds = {"classes"}
        if self.probabilities is not None:
            kinds.add("probabilities" if self.probabilities == "classes" else "confidence")
        if self.water:
            kinds.add("water")
        if set(self.paths) != kinds:
            raise ValueError(f"an output spec for {sorted(kinds)} got paths for {sorted(self.paths)}")
        if self.water and self.scheme.water_id is None:
            raise ValueError(
                f"water=True needs a model with a class named 'water'; its classes are {self.scheme.names}"
            )

    @property
    def layout(self) -> PlaneLayout:
        return PlaneLayout(self.scheme.num_classes, self.scheme.water_id if self.water else None, self.probabilities)


@dataclass(frozen=True)
class RunStats:
    """What one process's reader/model/writer pipeline did.

    Attributes:
        tiles: tiles the model ran on.
        skipped: tiles without a valid input pixel, not run.
        seconds_model: time in the model's forward passes (CUDA events on a GPU).
        seconds_waiting: time the model waited for the reader.
    """

    tiles: int = 0
    skipped: int = 0
    seconds_model: float = 0.0
    seconds_waiting: float = 0.0


@dataclass
class PredictionReport:
    """What :func:`predict_scene` did, for logs and benchmarks.

    Attributes:
        path: the class map.
        extra_paths: the sibling outputs by kind (``"probabilities"`` or ``"confidence"``, ``"water"``).
        shape: ``(height, width)`` of the scene and of every output, in px.
        tile, overlap, batch_size: the tiling used (px, px, tiles per model call).
        tiles: tiles the model ran on in this process; tile-processed pixels are ``tiles * tile**2``.
        tiles_skipped: tiles of this process without a valid input pixel, not run.
        seconds_model: time in the model's forward passes (GPU time from CUDA events on a GPU).
        seconds_waiting: time the model waited for the reader (near 0 when reading keeps up).
        seconds_total: wall time of the pipeline, from the first read to the renamed outputs (model loading and
            argument checks excluded); in several processes, including the merge.
        pixels_written: pixels of the class map (``height * width``, nodata included).
        device: the device the model ran on.
        process_index, num_processes: this process and how many shared the scene.
        predicted_shape: ``(height, width)`` of the grid the model ran on: ``shape`` unless the scene was resampled
            to the model's GSD and its maps put back on the scene's grid.
    """

    path: Path
    extra_paths: dict[str, Path]
    shape: tuple[int, int]
    tile: int
    overlap: int
    batch_size: int
    tiles: int
    tiles_skipped: int
    seconds_model: float
    seconds_waiting: float
    seconds_total: float
    pixels_written: int
    device: str
    process_index: int = 0
    num_processes: int = 1
    predicted_shape: tuple[int, int] | None = None

    @property
    def model_pixels_per_second(self) -> float:
        """Tile pixels the model processed per second of total time (the benchmark's throughput)."""
        return self.tiles * self.tile**2 / self.seconds_total if self.seconds_total > 0 else 0.0
