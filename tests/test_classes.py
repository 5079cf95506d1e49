"""Class schemes: the 9-class remap of docs/method.md section 4, the water task, JSON round trips and validation."""

import numpy as np
import pytest

from sarlulc.data.classes import (
    IGNORE_INDEX,
    JAXA_14,
    LULC_9,
    WATER,
    ClassScheme,
    get_scheme,
    scheme_for_id2label,
)

# docs/method.md section 4, written out by hand: source code -> 9-class name.
REMAP_9 = {
    1: "Water",
    2: "Built-up",
    14: "Built-up",
    3: "Paddy",
    4: "Cropland",
    5: "Grassland",
    13: "Grassland",
    6: "Deciduous forest",
    7: "Deciduous forest",
    8: "Evergreen forest",
    9: "Evergreen forest",
    11: "Evergreen forest",
    10: "Bare",
    12: "SolarPanel",
}
NAMES_9 = [
    "Water",
    "Built-up",
    "Paddy",
    "Cropland",
    "Grassland",
    "Deciduous forest",
    "Evergreen forest",
    "Bare",
    "SolarPanel",
]


def valid_spec(**overrides):
    spec = {
        "name": "toy",
        "classes": [
            {"name": "Water", "color": [0, 0, 255], "codes": [10, 11]},
            {"name": "Land", "color": [100, 100, 100], "codes": [20]},
        ],
        "nodata_codes": [0],
        "water_class": "Water",
    }
    spec.update(overrides)
    return spec


def test_lulc9_names_and_ids():
    assert LULC_9.names == NAMES_9
    assert LULC_9.id2label == dict(enumerate(NAMES_9))
    assert LULC_9.label2id == {name: i for i, name in enumerate(NAMES_9)}
    assert LULC_9.num_classes == 9
    assert LULC_9.water_id == 0


def test_lulc9_encodes_every_uint8_code():
    codes = np.arange(256, dtype=np.uint8).reshape(16, 16)
    ids = LULC_9.encode(codes)
    assert ids.dtype == np.uint8 and ids.shape == codes.shape
    for code in range(256):
        expected = NAMES_9.index(REMAP_9[code]) if code in REMAP_9 else IGNORE_INDEX
        assert ids.ravel()[code] == expected, f"code {code}"


def test_unknown_and_nodata_codes_are_ignored_for_wide_and_signed_types():
    codes = np.array([0, 15, 255, 300, 65535, 1, 12], dtype=np.uint16)
    assert LULC_9.encode(codes).tolist() == [255, 255, 255, 255, 255, 0, 8]
    signed = np.array([-1, -200, 3], dtype=np.int32)
    assert LULC_9.encode(signed).tolist() == [255, 255, 2]


def test_encode_rejects_float_codes():
    with pytest.raises(ValueError, match="integer"):
        LULC_9.encode(np.array([1.0, 2.0]))


def test_water_scheme():
    codes = np.arange(0, 17, dtype=np.uint8)
    expected = [255, 1, *([0] * 13), 255, 255]
    assert WATER.encode(codes).tolist() == expected
    assert WATER.names == ["not water", "water"]
    assert WATER.water_id == 1


def test_jaxa14_is_identity_minus_one():
    codes = np.arange(0, 16, dtype=np.uint8)
    assert JAXA_14.encode(codes).tolist() == [255, *range(14), 255]


@pytest.mark.parametrize("scheme", [LULC_9, WATER, JAXA_14])
def test_json_round_trip(tmp_path, scheme):
    path = tmp_path / "scheme.json"
    scheme.to_json(path)
    loaded = ClassScheme.from_json(path)
    assert loaded == scheme
    assert get_scheme(str(path)) == scheme
    codes = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(loaded.encode(codes), scheme.encode(codes))


def test_custom_scheme_from_dict():
    scheme = get_scheme(valid_spec())
    assert scheme.encode(np.array([10, 11, 20, 0, 30], dtype=np.uint8)).tolist() == [0, 0, 1, 255, 255]
    assert scheme.colormap()[255] == (0, 0, 0, 0)
    assert scheme.colormap()[0] == (0, 0, 255, 255)


def test_get_scheme_by_name_and_default():
    assert get_scheme() is LULC_9
    assert get_scheme("water") is WATER
    assert get_scheme("jaxa-14") is JAXA_14
    assert get_scheme(LULC_9) is LULC_9
    with pytest.raises(ValueError, match="unknown class scheme"):
        get_scheme("lulc-10")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "x"}, "'classes'"),
        (valid_spec(classes="Water"), "must be a list"),
        (valid_spec(classes=[]), "no classes"),
        (valid_spec(classes=[{"name": "Water", "codes": [1]}]), "name, color and codes"),
        (
            valid_spec(
                classes=[
                    {"name": "Water", "color": [0, 0, 255], "codes": [1]},
                    {"name": "Water", "color": [0, 0, 255], "codes": [2]},
                ]
            ),
            "duplicate class names",
        ),
        (
            valid_spec(
                classes=[
                    {"name": "Water", "color": [0, 0, 255], "codes": [1]},
                    {"name": "Land", "color": [0, 0, 255], "codes": [1]},
                ]
            ),
            "source code 1 is in both",
        ),
        (valid_spec(classes=[{"name": "Water", "color": [0, 0, 300], "codes": [1]}]), "colour"),
        (valid_spec(classes=[{"name": "Water", "color": [0, 0, 255], "codes": [0]}]), "nodata code"),
        (valid_spec(classes=[{"name": "Water", "color": [0, 0, 255], "codes": [-3]}]), "negative"),
        (valid_spec(water_class="Sea"), "water_class"),
        (valid_spec(ignore_index=300), "ignore_index"),
        (
            valid_spec(
                classes=[{"name": f"c{i}", "color": [0, 0, 0], "codes": [i + 1]} for i in range(256)], water_class=None
            ),
            "collides",
        ),
    ],
)
def test_bad_scheme_dicts_raise(spec, message):
    with pytest.raises(ValueError, match=message):
        ClassScheme.from_dict(spec)


def test_bad_scheme_files_raise(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        ClassScheme.from_json(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        ClassScheme.from_json(broken)


# ----------------------------------------------------------------------------------------------------------------------
# The class scheme of a model's id2label
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", [LULC_9, WATER, JAXA_14])
def test_a_built_in_schemes_names_give_that_scheme(scheme):
    assert scheme_for_id2label(scheme.id2label) is scheme
    # config.json stores the keys as strings; their order in the mapping does not matter
    as_saved = {str(i): name for i, name in reversed(list(scheme.id2label.items()))}
    assert scheme_for_id2label(as_saved) is scheme
    assert scheme.has_source_codes


def test_a_given_scheme_is_checked_against_the_models_names(tmp_path):
    assert scheme_for_id2label(LULC_9.id2label, "lulc-9") is LULC_9
    custom = get_scheme(valid_spec())
    path = tmp_path / "toy.json"
    custom.to_json(path)
    assert scheme_for_id2label({0: "Water", 1: "Land"}, path) == custom  # a scheme the built-ins do not know
    assert scheme_for_id2label({0: "Water", 1: "Land"}, valid_spec()) == custom
    with pytest.raises(ValueError, match=r"\['Land', 'Water'\] differ from .*'toy': \['Water', 'Land'\]"):
        scheme_for_id2label({0: "Land", 1: "Water"}, custom)  # the same names in another order
    with pytest.raises(ValueError, match=r"differ from .*'lulc-9'"):
        scheme_for_id2label(WATER.id2label, LULC_9)
    with pytest.raises(ValueError, match="unknown class scheme"):
        scheme_for_id2label(LULC_9.id2label, "lulc-10")


def test_unknown_names_get_known_or_generated_colours_no_codes_and_their_water_class():
    scheme = scheme_for_id2label({0: "Forest", 1: "Sea ice", 2: "built-UP", 3: "WATER"})
    assert scheme.name == "model" and scheme.names == ["Forest", "Sea ice", "built-UP", "WATER"]
    assert scheme.classes[2].color == LULC_9.classes[LULC_9.label2id["Built-up"]].color  # a known name, any case
    assert scheme.classes[3].color == LULC_9.classes[LULC_9.water_id].color
    generated = [scheme.classes[0].color, scheme.classes[1].color]
    assert generated[0] != generated[1] and all(color not in LULC_9.colors for color in generated)
    assert scheme.water_class == "WATER" and scheme.water_id == 3
    assert all(cls.codes == () for cls in scheme.classes) and not scheme.has_source_codes
    assert scheme.encode(np.array([1, 2, 3], dtype=np.uint8)).tolist() == [IGNORE_INDEX] * 3  # nothing to encode

    without_water = scheme_for_id2label({0: "Forest", 1: "Sea ice"})
    assert without_water.water_class is None and without_water.water_id is None
    # A built-in scheme's names in another order are not that scheme: they are the model's own classes.
    shuffled = scheme_for_id2label({0: "water", 1: "not water"})
    assert shuffled.name == "model" and shuffled.water_id == 0


@pytest.mark.parametrize(
    ("id2label", "message"),
    [({0: "a", 2: "b"}, "without gaps"), ({}, "without gaps"), ({"x": "a"}, "class ids"), ({0: "a", 1: "a"}, "dupl")],
)
def test_bad_id2label_raises(id2label, message):
    with pytest.raises(ValueError, match=message):
        scheme_for_id2label(id2label)
