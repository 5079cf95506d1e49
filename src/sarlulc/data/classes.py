"""Land-cover class tables: raster codes -> model class ids, names and colours.

The label rasters we train on carry *source codes* (JAXA's High-Resolution LULC map of Japan uses 1..14, with 0 as
no data). The model predicts *class ids* ``0..K-1`` of a smaller scheme (the paper's 9 classes, or the binary water
task), and ``255`` marks pixels to ignore. The mapping between the two is data, held in a :class:`ClassScheme`, so
that another LULC product with other codes is one JSON file away::

    {
      "name": "my-product",
      "classes": [
        {"name": "Water", "color": [0, 92, 230], "codes": [10, 11]},
        {"name": "Land",  "color": [180, 180, 180], "codes": [20, 30, 40]}
      ],
      "nodata_codes": [0],
      "water_class": "Water"
    }

Codes that appear in no class (unknown codes) and the nodata codes map to ``ignore_index`` (255).

Built-in schemes: ``lulc-9`` (the paper's 9 classes, the default), ``water`` (water vs the rest), ``jaxa-14`` (every
JAXA code, with this package's names and colours), and JAXA's own HRLULC versions ``jaxa-hrlulc-v21.11`` (12 classes)
and ``jaxa-hrlulc-v23.12`` (14 classes) with JAXA's class names (docs/products.md gives the sources).
"""

from __future__ import annotations

import colorsys
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IGNORE_INDEX = 255
"""Class id of pixels that no loss or metric counts (nodata, unknown codes)."""

# JAXA High-Resolution Land Use and Land Cover map of Japan: the 14 source codes (docs/method.md section 4).
JAXA_SOURCE_CLASSES: dict[int, str] = {
    1: "Water",
    2: "Built-up",
    3: "Paddy",
    4: "Cropland",
    5: "Grassland",
    6: "Deciduous broadleaf forest",
    7: "Deciduous needleleaf forest",
    8: "Evergreen broadleaf forest",
    9: "Evergreen needleleaf forest",
    10: "Bare",
    11: "Bamboo forest",
    12: "Solar panel",
    13: "Wetland",
    14: "Greenhouse",
}
JAXA_NODATA_CODE = 0

# Our colours for the source codes (used by the synthetic label rasters' colour table).
JAXA_SOURCE_COLORS: dict[int, tuple[int, int, int]] = {
    1: (0, 92, 230),
    2: (230, 0, 0),
    3: (115, 223, 255),
    4: (255, 211, 127),
    5: (163, 255, 115),
    6: (56, 168, 0),
    7: (112, 168, 0),
    8: (0, 115, 76),
    9: (38, 115, 0),
    10: (204, 204, 204),
    11: (152, 230, 0),
    12: (168, 0, 132),
    13: (0, 197, 255),
    14: (255, 170, 0),
}


@dataclass(frozen=True)
class LulcClass:
    """One model class: its id (position in the scheme), name, display colour and the source codes it gathers."""

    id: int
    name: str
    color: tuple[int, int, int]
    codes: tuple[int, ...]


@dataclass(frozen=True)
class ClassScheme:
    """A mapping from label-raster source codes to model class ids ``0..K-1`` (``ignore_index`` for the rest).

    Build one with :meth:`from_dict` / :meth:`from_json`, or use :data:`LULC_9` and :data:`WATER`.
    """

    name: str
    classes: tuple[LulcClass, ...]
    nodata_codes: tuple[int, ...] = (JAXA_NODATA_CODE,)
    ignore_index: int = IGNORE_INDEX
    water_class: str | None = "Water"
    _lut: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.classes:
            raise ValueError(f"class scheme {self.name!r} has no classes")
        if not 0 <= self.ignore_index <= 255:
            raise ValueError(f"class scheme {self.name!r}: ignore_index must be in [0, 255], got {self.ignore_index}")
        if len(self.classes) > self.ignore_index:
            raise ValueError(
                f"class scheme {self.name!r} has {len(self.classes)} classes, which collides with "
                f"ignore_index {self.ignore_index}"
            )
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            raise ValueError(f"class scheme {self.name!r} has duplicate class names: {names}")
        for position, cls in enumerate(self.classes):
            if cls.id != position:
                raise ValueError(f"class scheme {self.name!r}: class {cls.name!r} has id {cls.id}, expected {position}")
            if len(cls.color) != 3 or not all(0 <= v <= 255 for v in cls.color):
                raise ValueError(f"class scheme {self.name!r}: class {cls.name!r} colour must be 3 values in 0..255")
        seen: dict[int, str] = {}
        for cls in self.classes:
            for code in cls.codes:
                if code < 0:
                    raise ValueError(f"class scheme {self.name!r}: negative source code {code} in {cls.name!r}")
                if code in seen:
                    raise ValueError(
                        f"class scheme {self.name!r}: source code {code} is in both {seen[code]!r} and {cls.name!r}"
                    )
                if code in self.nodata_codes:
                    raise ValueError(f"class scheme {self.name!r}: source code {code} of {cls.name!r} is a nodata code")
                seen[code] = cls.name
        if self.water_class is not None and self.water_class not in names:
            raise ValueError(f"class scheme {self.name!r}: water_class {self.water_class!r} is not one of {names}")
        max_code = max([*seen, *self.nodata_codes, 0])
        lut = np.full(max(max_code + 1, 256), self.ignore_index, dtype=np.uint8)
        for code, cls_name in seen.items():
            lut[code] = names.index(cls_name)
        object.__setattr__(self, "_lut", lut)

    # ----------------------------------------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def colors(self) -> list[tuple[int, int, int]]:
        return [c.color for c in self.classes]

    @property
    def id2label(self) -> dict[int, str]:
        return {c.id: c.name for c in self.classes}

    @property
    def label2id(self) -> dict[str, int]:
        return {c.name: c.id for c in self.classes}

    @property
    def has_source_codes(self) -> bool:
        """Whether any class gathers label-raster source codes; a scheme without any (built from a model's class names
        alone) cannot encode label rasters."""
        return any(c.codes for c in self.classes)

    @property
    def water_id(self) -> int | None:
        """Class id of water in this scheme (``None`` if the scheme has no water class)."""
        return None if self.water_class is None else self.label2id[self.water_class]

    def code_to_id(self) -> dict[int, int]:
        """Every source code of the scheme and its class id."""
        return {code: c.id for c in self.classes for code in c.codes}

    def encode(self, codes: np.ndarray) -> np.ndarray:
        """Map a raster of source codes to class ids (uint8); unknown and nodata codes become ``ignore_index``."""
        codes = np.asarray(codes)
        if codes.dtype.kind not in "iu":
            raise ValueError(f"label codes must be an integer array, got dtype {codes.dtype}")
        out = np.full(codes.shape, self.ignore_index, dtype=np.uint8)
        inside = (codes >= 0) & (codes < len(self._lut))
        out[inside] = self._lut[codes[inside]]
        return out

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """A rasterio colour table (class id -> RGBA) with the ignore value transparent black."""
        table = {c.id: (*c.color, 255) for c in self.classes}
        table[self.ignore_index] = (0, 0, 0, 0)
        return table

    # ----------------------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "classes": [{"name": c.name, "color": list(c.color), "codes": list(c.codes)} for c in self.classes],
            "nodata_codes": list(self.nodata_codes),
            "ignore_index": self.ignore_index,
            "water_class": self.water_class,
        }

    @classmethod
    def from_dict(cls, spec: Mapping) -> ClassScheme:
        """Build a scheme from the JSON-style dict shown in the module docstring."""
        if not isinstance(spec, Mapping) or "classes" not in spec:
            raise ValueError("a class scheme needs a mapping with a 'classes' list")
        entries = spec["classes"]
        if not isinstance(entries, Sequence) or isinstance(entries, str):
            raise ValueError("'classes' of a class scheme must be a list of {name, color, codes}")
        classes = []
        for i, entry in enumerate(entries):
            try:
                classes.append(
                    LulcClass(
                        id=i,
                        name=str(entry["name"]),
                        color=tuple(int(v) for v in entry["color"]),
                        codes=tuple(int(v) for v in entry["codes"]),
                    )
                )
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"class entry {i} of the scheme must have name, color and codes: {err}") from err
        return cls(
            name=str(spec.get("name", "custom")),
            classes=tuple(classes),
            nodata_codes=tuple(int(v) for v in spec.get("nodata_codes", (JAXA_NODATA_CODE,))),
            ignore_index=int(spec.get("ignore_index", IGNORE_INDEX)),
            water_class=spec.get("water_class", None),
        )

    @classmethod
    def from_json(cls, path: str | Path) -> ClassScheme:
        path = Path(path)
        try:
            spec = json.loads(path.read_text())
        except FileNotFoundError as err:
            raise ValueError(f"class scheme file {path} does not exist") from err
        except json.JSONDecodeError as err:
            raise ValueError(f"class scheme file {path} is not valid JSON: {err}") from err
        return cls.from_dict(spec)

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))


def class_id_remap(source: ClassScheme, target: ClassScheme) -> np.ndarray:
    """A lookup table taking class ids of ``source`` to class ids of ``target``: ``target_ids = table[source_ids]``.

    Labels tiled with one scheme serve a task with another when the target is derivable from the source: every class
    of ``source`` gathers source codes that all land in one class of ``target`` (or all in none: those pixels become
    ``target.ignore_index``). ``lulc-9`` -> ``water`` is derivable (Water stays water, every other class is "not
    water"), and so is ``jaxa-14`` -> ``lulc-9``; ``lulc-9`` -> ``jaxa-14`` is not (Built-up gathers codes 2 and 14).
    Both schemes are taken to describe the same label-raster codes, as they do when one raster is tiled with either.

    Returns:
        uint8 array ``(256,)``; ``source.ignore_index`` and ids beyond ``source``'s classes map to
        ``target.ignore_index``.

    Raises:
        ValueError: ``target`` is not derivable from ``source`` (naming the first class that splits), or a scheme has
            no source codes (built from a model's class names alone).
    """
    table = np.full(256, target.ignore_index, dtype=np.uint8)
    if source == target:
        table[: source.num_classes] = np.arange(source.num_classes, dtype=np.uint8)
        return table
    for scheme in (source, target):
        if not scheme.has_source_codes:
            raise ValueError(f"class scheme {scheme.name!r} has no source codes; its ids cannot be remapped")
    code_to_target = target.code_to_id()
    for cls in source.classes:
        landing = {code_to_target.get(code, target.ignore_index) for code in cls.codes}
        if len(landing) != 1:
            names = sorted(target.id2label.get(i, "ignored") for i in landing)
            raise ValueError(
                f"class {cls.name!r} of the class scheme {source.name!r} (codes {list(cls.codes)}) falls into several "
                f"classes of {target.name!r} ({', '.join(names)}); {target.name!r} cannot be derived from it"
            )
        table[cls.id] = landing.pop()
    return table


def _scheme(name: str, groups: Sequence[tuple[str, tuple[int, int, int], tuple[int, ...]]], water: str | None):
    return ClassScheme(
        name=name,
        classes=tuple(LulcClass(i, n, c, codes) for i, (n, c, codes) in enumerate(groups)),
        water_class=water,
    )


# JAXA's High-Resolution Land Use and Land Cover map of Japan (HRLULC), the label product, in its two versions: the
# official class names, and legend colours where a public source gives them (docs/products.md cites the sources).
HRLULC_V21_11_CLASSES: dict[int, str] = {
    **{code: name for code, name in JAXA_SOURCE_CLASSES.items() if code <= 12},
    # The same codes as JAXA_SOURCE_CLASSES; two of the legend's names are longer than the short ones the built-in
    # schemes use (and checkpoints record in id2label).
    1: "Water bodies",
    3: "Paddy field",
}
"""HRLULC v21.11 (12 classes, 2018-2020): code -> JAXA's class name."""

HRLULC_V23_12_CLASSES: dict[int, str] = {**HRLULC_V21_11_CLASSES, 13: "Wetland", 14: "Greenhouse"}
"""HRLULC v23.12 (14 classes): v21.11's twelve codes with the same meaning, plus wetland and greenhouse."""

HRLULC_COLORS: dict[int, tuple[int, int, int]] = {
    1: (0, 0, 100),
    2: (255, 0, 0),
    3: (0, 128, 255),
    4: (255, 193, 191),
    5: (255, 255, 0),
    6: (128, 255, 0),
    7: (0, 255, 128),
    8: (86, 172, 0),
    9: (0, 172, 86),
    10: (128, 100, 0),
    11: (217, 240, 5),
    12: (161, 41, 119),
    # No public source gives the legend colours of the two v23.12 classes: these two are this package's choice.
    13: (0, 197, 255),
    14: (255, 170, 0),
}
"""Legend colour of every HRLULC code. Codes 1-12 follow a public rendering of the JAXA map (docs/products.md says
which, and that it could not be checked against JAXA's own legend file); 13 and 14 are this package's choice."""

HRLULC_VERSIONS = ("21.11", "23.12")
"""The HRLULC versions with a built-in class scheme (:func:`hrlulc_scheme`)."""


# The source table itself as a scheme (14 classes), for users who want every JAXA class.
JAXA_14 = _scheme(
    "jaxa-14",
    [(name, JAXA_SOURCE_COLORS[code], (code,)) for code, name in JAXA_SOURCE_CLASSES.items()],
    water="Water",
)

# The paper's 9 classes (our default remap, docs/method.md section 4).
LULC_9 = _scheme(
    "lulc-9",
    [
        ("Water", (0, 92, 230), (1,)),
        ("Built-up", (230, 0, 0), (2, 14)),
        ("Paddy", (115, 223, 255), (3,)),
        ("Cropland", (255, 211, 127), (4,)),
        ("Grassland", (163, 255, 115), (5, 13)),
        ("Deciduous forest", (56, 168, 0), (6, 7)),
        ("Evergreen forest", (0, 115, 76), (8, 9, 11)),
        ("Bare", (204, 204, 204), (10,)),
        ("SolarPanel", (168, 0, 132), (12,)),
    ],
    water="Water",
)

# The binary water task, derived from the same label codes.
WATER = _scheme(
    "water",
    [
        ("not water", (200, 200, 200), tuple(c for c in JAXA_SOURCE_CLASSES if c != 1)),
        ("water", (0, 92, 230), (1,)),
    ],
    water="water",
)

# The HRLULC versions as schemes: every code is its own class, named and coloured as JAXA does. jaxa-14 above has
# v23.12's codes in the same order with this package's shorter names and colours; it stays for the checkpoints that
# were trained with it (a scheme is matched to a model by its class names).
HRLULC_V21_11 = _scheme(
    "jaxa-hrlulc-v21.11",
    [(name, HRLULC_COLORS[code], (code,)) for code, name in HRLULC_V21_11_CLASSES.items()],
    water="Water bodies",
)
HRLULC_V23_12 = _scheme(
    "jaxa-hrlulc-v23.12",
    [(name, HRLULC_COLORS[code], (code,)) for code, name in HRLULC_V23_12_CLASSES.items()],
    water="Water bodies",
)

SCHEMES: dict[str, ClassScheme] = {s.name: s for s in (LULC_9, WATER, JAXA_14, HRLULC_V21_11, HRLULC_V23_12)}


def hrlulc_scheme(version: str) -> ClassScheme:
    """The class scheme of an HRLULC version (``"21.11"``, ``"v23.12"``).

    Raises:
        ValueError: the version has no built-in scheme.
    """
    key = str(version).lower().lstrip("v")
    if key not in HRLULC_VERSIONS:
        raise ValueError(f"unknown HRLULC version {version!r}: the built-in ones are {', '.join(HRLULC_VERSIONS)}")
    return HRLULC_V21_11 if key == "21.11" else HRLULC_V23_12


def get_scheme(scheme: str | Path | Mapping | ClassScheme | None = None) -> ClassScheme:
    """Resolve a scheme given by name (``"lulc-9"``, ``"water"``, ``"jaxa-14"``, ``"jaxa-hrlulc-v21.11"``,
    ``"jaxa-hrlulc-v23.12"``), JSON path, dict, or instance."""
    if scheme is None:
        return LULC_9
    if isinstance(scheme, ClassScheme):
        return scheme
    if isinstance(scheme, Mapping):
        return ClassScheme.from_dict(scheme)
    key = str(scheme)
    if key in SCHEMES:
        return SCHEMES[key]
    if key.endswith(".json") or Path(key).is_file():
        return ClassScheme.from_json(key)
    raise ValueError(f"unknown class scheme {key!r}: use one of {sorted(SCHEMES)} or a JSON file")


def id2label(scheme: str | ClassScheme | None = None) -> dict[int, str]:
    return get_scheme(scheme).id2label


def label2id(scheme: str | ClassScheme | None = None) -> dict[str, int]:
    return get_scheme(scheme).label2id


def _generated_color(index: int) -> tuple[int, int, int]:
    # Golden-angle hue steps keep any number of generated colours apart from each other.
    hue = (index * 0.618033988749895) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.65, 0.9)
    return round(red * 255), round(green * 255), round(blue * 255)


def _names_in_id_order(id2label: Mapping[int | str, str]) -> list[str]:
    try:
        ids = sorted(int(key) for key in id2label)
    except (TypeError, ValueError) as err:
        raise ValueError(f"id2label keys must be class ids 0..K-1, got {sorted(map(str, id2label))}") from err
    if not ids or ids != list(range(len(ids))):
        raise ValueError(f"id2label keys must be the class ids 0..K-1 without gaps, got {ids}")
    by_id = {int(key): str(name) for key, name in id2label.items()}
    return [by_id[i] for i in ids]


def scheme_for_id2label(
    id2label: Mapping[int | str, str], class_scheme: str | Path | Mapping | ClassScheme | None = None
) -> ClassScheme:
    """The class scheme of a model whose ``config.id2label`` is ``id2label`` (keys ``0..K-1``, ints or strings).

    1. A given ``class_scheme`` (a name, JSON path, dict or instance, see :func:`get_scheme`) is resolved and must
       have exactly the model's class names in the same order.
    2. Otherwise the built-in scheme (``lulc-9``, ``water``, ``jaxa-14``) with exactly those names, if any.
    3. Otherwise a scheme named ``"model"`` made from the names alone: each class takes the colour of a built-in class
       of the same name (case-insensitive) or a generated one, no class has source codes
       (:attr:`ClassScheme.has_source_codes` is False, so it cannot encode label rasters), and the class named
       ``water`` (case-insensitive), if any, is its water class.

    Raises:
        ValueError: the keys are not ``0..K-1``, ``class_scheme`` cannot be resolved, or its class names differ from
            the model's (the message shows both lists).
    """
    names = _names_in_id_order(id2label)
    if class_scheme is not None:
        scheme = get_scheme(class_scheme)
        if scheme.names != names:
            raise ValueError(
                f"the model's classes {names} differ from those of the class scheme {scheme.name!r}: {scheme.names}"
            )
        return scheme
    for scheme in SCHEMES.values():
        if scheme.names == names:
            return scheme
    known: dict[str, tuple[int, int, int]] = {}
    for scheme in SCHEMES.values():  # the first scheme naming a class gives its colour (lulc-9 first)
        for cls in scheme.classes:
            known.setdefault(cls.name.lower(), cls.color)
    classes = tuple(
        LulcClass(id=i, name=name, color=known.get(name.lower(), _generated_color(i)), codes=())
        for i, name in enumerate(names)
    )
    water = next((name for name in names if name.lower() == "water"), None)
    return ClassScheme(name="model", classes=classes, water_class=water)
