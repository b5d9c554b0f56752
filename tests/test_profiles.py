from __future__ import annotations

import pytest

from autoprune.errors import ConfigError
from autoprune.profiles import available_profiles, load_profile


def test_every_shipped_profile_loads():
    names = available_profiles()
    assert "x86-ort" in names
    for name in names:
        profile = load_profile(name)
        assert profile.name == name
        assert len(profile.hash) == 64


def test_unknown_profile_lists_known_ones():
    with pytest.raises(ConfigError, match=r"unknown device profile 'x86-ortt'.*Did you mean 'x86-ort'.*Known: .*x86-ort"):
        load_profile("x86-ortt")


def test_unknown_key_is_rejected_with_file_and_key(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("description: d\nbackend: onnxruntime\nmeasurement: {warmup: 3, repeatz: 4}\n")
    with pytest.raises(ConfigError, match=r"p\.yaml\.measurement: unknown key\(s\) repeatz"):
        load_profile(f)


@pytest.mark.parametrize(
    "body, message",
    [
        ("description: d\nbackend: tvm-nope\n", r"backend: expected one of onnxruntime"),
        ("description: d\nbackend: onnxruntime\nbatch_size: two\n", r"batch_size: expected a whole number"),
        ("description: d\nbackend: onnxruntime\nbatch_size: 0\n", r"batch_size >= 1"),
        ("description: d\nbackend: onnxruntime\nmeasurement: {min_repeats: 100, max_repeats: 10}\n", r"min_repeats <= max_repeats"),
        ("description: [unclosed\n", r"\(line 2, column 1\): malformed YAML: expected"),
        ("- just\n- a list\n", r"expected a mapping"),
        ("backend: onnxruntime\n", r"missing required key\(s\) description"),
    ],
)
def test_malformed_profiles_say_what_is_wrong(tmp_path, body, message):
    f = tmp_path / "bad.yaml"
    f.write_text(body)
    with pytest.raises(ConfigError, match=message):
        load_profile(f)


def test_hash_tracks_settings_but_not_description(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("description: one\nbackend: onnxruntime\n")
    b = tmp_path / "b.yaml"
    b.write_text("description: two\nbackend: onnxruntime\nname: a\n")
    c = tmp_path / "c.yaml"
    c.write_text("description: one\nbackend: onnxruntime\nname: a\nonnxruntime: {intra_op_threads: 2}\n")
    assert load_profile(a).hash == load_profile(b).hash
    assert load_profile(a).hash != load_profile(c).hash
