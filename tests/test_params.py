import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hil_tune.errors import ParameterError
from hil_tune.params import ParamSpace, ParamSpec


def test_every_grid_value_round_trips_exactly(synthetic):
    for spec in synthetic.space:
        for value in spec.values():
            assert spec.decode(spec.encode(value)) == value, (spec.name, value)


def test_grid_values_are_canonical_floats(synthetic):
    spec = synthetic.space["usm-amount"]
    assert spec.values()[:3] == [0.1, 0.2, 0.3]  # not 0.30000000000000004
    assert spec.size == 30
    assert synthetic.space["mu2"].size == 1000


def test_categorical_encodes_by_index(synthetic):
    spec = synthetic.space["noise-type"]
    assert spec.size == 10
    codes = [spec.encode(c) for c in spec.choices]
    assert codes == sorted(codes)
    assert all(0 < c < 1 for c in codes)
    # equal bins: u in [k/10, (k+1)/10) decodes to choice k
    assert spec.decode(0.0) == "gw" and spec.decode(0.999) == "g4w" and spec.decode(0.15) == "g0"


def test_decode_picks_nearest_grid_value(synthetic):
    spec = synthetic.space["digital-gain"]  # 0.01..2.0 step 0.01, 200 values
    u = spec.encode(1.0) + 0.4 / (spec.size - 1)
    assert spec.decode(u) == 1.0
    u = spec.encode(1.0) + 0.6 / (spec.size - 1)
    assert spec.decode(u) == 1.01
    assert spec.decode(-3.0) == 0.01 and spec.decode(7.0) == 2.0
    with pytest.raises(ParameterError):
        spec.decode(math.nan)


@given(st.floats(min_value=-1, max_value=2, allow_nan=False))
def test_decoded_values_are_always_on_grid_and_in_range(u):
    spec = ParamSpec(name="x", group="g", kind="grid", min=-4.0, max=4.0, step=0.01, default=0.0)
    value = spec.decode(u)
    assert -4.0 <= value <= 4.0
    assert value in set(spec.values())


def test_quantize_snaps_off_grid_and_rejects_out_of_range(synthetic):
    space = synthetic.space
    values, warnings = space.validate({"gain-r": 1.234, "noise-type": "g3"})
    assert values["gain-r"] == 1.23 and values["noise-type"] == "g3"
    assert len(warnings) == 1 and "gain-r" in warnings[0] and "1.23" in warnings[0]
    with pytest.raises(ParameterError, match=r"gain-r.*outside 0\.01\.\.5\.0"):
        space.validate({"gain-r": 5.5})
    with pytest.raises(ParameterError, match="unknown parameter 'gain-x'"):
        space.validate({"gain-x": 1.0})
    with pytest.raises(ParameterError, match="noise-type"):
        space.validate({"noise-type": "g9"})
    with pytest.raises(ParameterError, match="not a finite number"):
        space.validate({"mu2": math.inf})


def test_encode_decode_vector_round_trip(synthetic):
    space = synthetic.space
    params = space.defaults()
    vec = space.encode(params)
    assert vec.shape == (20,) and np.all((vec >= 0) & (vec <= 1))
    assert space.decode(vec) == params


@given(st.lists(st.floats(min_value=-0.5, max_value=1.5, allow_nan=False), min_size=20, max_size=20))
def test_vector_decode_equals_each_parameters_own_decode(vec):
    """The live loop decodes whole vectors at once; it must pick exactly what each spec would."""
    from hil_tune.profiles import load_profile

    space = load_profile("synthetic").space
    per_spec = {s.name: s.decode(u) for s, u in zip(space.specs, vec, strict=True)}
    assert space.decode(vec) == per_spec
    # exact bin edges and half-way points, where rounding rules differ if anywhere
    for spec_index in (1, 5):  # noise-type (choice) and gain-r (grid)
        spec = space.specs[spec_index]
        for k in range(spec.size + 1):
            for u in (k / spec.size, (k + 0.5) / max(spec.size - 1, 1)):
                probe = list(vec)
                probe[spec_index] = u
                assert space.decode(probe)[spec.name] == spec.decode(u)


def test_encode_indices_matches_encode(synthetic):
    space = synthetic.space
    for seed in range(5):
        params = space.sample_params(1, seed=seed)[0]
        u = space.encode(params)
        np.testing.assert_allclose(space.encode_indices(space.decode_indices(u)), u, atol=1e-12)


def test_vector_decode_names_the_parameter_it_cannot_decode(synthetic):
    vec = synthetic.space.encode(synthetic.space.defaults())
    vec[3] = math.nan
    with pytest.raises(ParameterError, match=synthetic.space.specs[3].name):
        synthetic.space.decode(vec)


def test_lhc_is_seeded_reproducible_and_stratified(synthetic):
    space = synthetic.space
    a = space.sample_lhc(16, seed=7)
    b = space.sample_lhc(16, seed=7)
    c = space.sample_lhc(16, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # Latin hypercube: in every dimension each of the 16 strata holds exactly one point.
    strata = np.floor(a * 16).astype(int)
    for d in range(a.shape[1]):
        assert sorted(strata[:, d]) == list(range(16))


def test_lhc_respects_region(synthetic):
    region = synthetic.get_region("plausible")
    pts = synthetic.space.sample_lhc(50, seed=0, region=region)
    assert np.all(pts >= np.array(region.lower) - 1e-12) and np.all(pts <= np.array(region.upper) + 1e-12)
    for params in synthetic.space.sample_params(20, seed=1, region=region):
        assert 0.8 <= params["gain-r"] <= 2.6
        assert -1.0 <= params["ccm01"] <= 0.5


def test_space_rejects_duplicate_names():
    spec = ParamSpec(name="a", group="g", kind="grid", min=0, max=1, step=0.5, default=0.5)
    with pytest.raises(ParameterError, match="duplicate"):
        ParamSpace([spec, spec])


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"min": 2.0, "max": 1.0, "step": 0.1, "default": 1.0}, r"min 2\.0 > max 1\.0"),
        ({"min": 0.0, "max": 1.0, "step": 0.3, "default": 0.3}, "does not divide"),
        ({"min": 0.0, "max": 1.0, "step": 0.1, "default": 0.15}, "off the grid"),
        ({"min": 0.0, "max": 1.0, "step": 0.0, "default": 0.0}, "must be positive"),
    ],
)
def test_spec_validation_reasons(fields, reason):
    with pytest.raises(ValueError, match=reason):
        ParamSpec(name="p", group="g", kind="grid", **fields)
