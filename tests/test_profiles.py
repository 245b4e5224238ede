import json
import subprocess
import sys
from pathlib import Path

import pytest

from hil_tune.errors import ProfileError
from hil_tune.profiles import bundled_names, load_profile

# ../shared/DESIGN.md, "Synthetic ISP parameters (Table 1 of the paper's supplement)".
TABLE1 = {
    "filter-strength": (0.0, 2.0, 0.1),
    "noise-var": (0.01, 1.0, 0.01),
    "lambda-thr3d": (1.0, 100.0, 1.0),
    "mu2": (0.1, 100.0, 0.1),
    "gain-r": (0.01, 5.0, 0.01),
    "gain-g": (0.01, 5.0, 0.01),
    "gain-b": (0.01, 5.0, 0.01),
    "digital-gain": (0.01, 2.0, 0.01),
    **{f"ccm{i}{i}": (0.01, 4.0, 0.01) for i in range(3)},
    **{f"ccm{i}{j}": (-4.0, 4.0, 0.01) for i in range(3) for j in range(3) if i != j},
    "usm-amount": (0.1, 3.0, 0.1),
    "usm-sigma": (0.1, 10.0, 0.1),
}
NOISE_TYPES = ["gw", "g0", "g1", "g2", "g3", "g4", "g1w", "g2w", "g3w", "g4w"]


def test_synthetic_profile_is_table_1(synthetic):
    space = synthetic.space
    assert len(space) == 20
    assert set(space.names) == set(TABLE1) | {"noise-type"}
    for name, (lo, hi, step) in TABLE1.items():
        spec = space[name]
        assert (spec.kind, spec.min, spec.max, spec.step) == ("grid", lo, hi, step), name
    nt = space["noise-type"]
    assert nt.kind == "choice" and list(nt.choices) == NOISE_TYPES


def test_synthetic_defaults_are_neutral(synthetic):
    d = synthetic.space.defaults()
    assert d["gain-r"] == d["gain-g"] == d["gain-b"] == d["digital-gain"] == 1.0
    for i in range(3):
        for j in range(3):
            assert d[f"ccm{i}{j}"] == (1.0 if i == j else 0.0)
    assert 0 < d["filter-strength"] <= 1.0  # mild denoise
    assert d["usm-amount"] <= 1.0  # mild sharpening


def test_bundled_profiles_listed():
    assert "synthetic" in bundled_names()


GOOD_PARAM = '[[params]]\nname = "a"\ngroup = "g"\nkind = "grid"\nmin = 0.0\nmax = 1.0\nstep = 0.1\ndefault = 0.5\n'


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bench.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (GOOD_PARAM.replace("min = 0.0", "min = 2.0"), ["params[0] (a)", "min 2.0 > max 1.0"]),
        (GOOD_PARAM.replace("step = 0.1", "step = 0.3"), ["params[0] (a)", "does not divide"]),
        (GOOD_PARAM.replace("default = 0.5", "default = 0.55"), ["params[0] (a)", "off the grid"]),
        (GOOD_PARAM.replace('kind = "grid"', 'kind = "grid"\nsetp = 0.1'), ["params[0] (a)", "unknown key 'setp'"]),
        (GOOD_PARAM + GOOD_PARAM, ["params[1] (a)", "duplicate name 'a'"]),
        (GOOD_PARAM + "[pipeline]\njpeg_qualty = 80\n", ["pipeline", "unknown key 'jpeg_qualty'"]),
        (GOOD_PARAM + "[region.r]\nb = [0.0, 1.0]\n", ["region.r", "unknown parameter 'b'"]),
    ],
)
def test_validation_errors_name_file_parameter_and_reason(tmp_path, body, expected):
    path = _write(tmp_path, 'name = "bench"\n' + body)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    message = str(info.value)
    assert str(path) in message
    for part in expected:
        assert part in message


def test_toml_syntax_error_names_file(tmp_path):
    path = _write(tmp_path, 'name = "x"\n[[params]\n')
    with pytest.raises(ProfileError, match=r"bench\.toml: not valid TOML"):
        load_profile(path)


def test_unknown_bundled_name_lists_known():
    with pytest.raises(ProfileError, match=r"bundled: .*synthetic"):
        load_profile("synthtic")


def test_sha256_is_stable_and_content_sensitive(synthetic, tmp_path):
    text = (Path(__file__).parents[1] / "profiles" / "synthetic.toml").read_text()
    again = load_profile(_write(tmp_path, text))
    assert again.sha256 == synthetic.sha256
    changed = load_profile(_write(tmp_path, text.replace("jpeg_quality = 90", "jpeg_quality = 80")))
    assert changed.sha256 != synthetic.sha256


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hil_tune.cli", *args], capture_output=True, text=True, timeout=120)


def test_cli_profile_show_json_shape():
    res = _cli("profile", "show", "synthetic", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["name"] == "synthetic" and len(doc["params"]) == 20
    keys = {"name", "group", "kind", "min", "max", "step", "choices", "default"}
    for p in doc["params"]:
        assert set(p) == keys
    nt = next(p for p in doc["params"] if p["name"] == "noise-type")
    assert nt["kind"] == "choice" and nt["min"] is None and nt["step"] is None and len(nt["choices"]) == 10
    gr = next(p for p in doc["params"] if p["name"] == "gain-r")
    assert gr == {
        "name": "gain-r",
        "group": "white-balance",
        "kind": "grid",
        "min": 0.01,
        "max": 5.0,
        "step": 0.01,
        "choices": None,
        "default": 1.0,
    }


def test_cli_profile_validate_exit_codes(tmp_path):
    ok = _cli("profile", "validate", str(Path(__file__).parents[1] / "profiles" / "synthetic.toml"))
    assert ok.returncode == 0, ok.stderr
    bad = _write(tmp_path, 'name = "bench"\n' + GOOD_PARAM.replace("min = 0.0", "min = 2.0") + GOOD_PARAM)
    res = _cli("profile", "validate", str(bad))
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 2  # one line per problem: min > max, duplicate name
    assert all(str(bad) in ln for ln in lines)
    assert "Traceback" not in res.stderr


def test_a_grid_with_more_steps_than_a_register_holds_is_one_clear_problem(tmp_path):
    path = tmp_path / "huge.toml"
    path.write_text('name = "huge"\n[[params]]\nname = "x"\ngroup = "g"\nkind = "grid"\n'
                    "min = 0.0\nmax = 1e300\nstep = 1.0\ndefault = 1.0\n")  # fmt: skip
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    assert err.value.problems == [
        "params[0] (x): 0.0..1e+300 by 1.0 is 1e+300 steps; at most 2,147,483,646 "
        "(grid indices are sampled, encoded and sent to devices as integers)"
    ]
