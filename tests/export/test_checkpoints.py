"""Checkpoint loading and hashing: one-line errors, strict checks, the StyleGAN v1 layouts."""
from __future__ import annotations

import hashlib

import pytest
import torch
from safetensors.torch import save_file

from pulse_trt.engine.errors import PulseError
from pulse_trt.export.checkpoints import (check_state, copy_strict, file_sha256, load_checkpoint,
                                          split_stylegan1_state, state_sha256, tensors_only)


def test_file_sha256(tmp_path):
    data = bytes(range(256)) * 5000
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_state_sha256_is_order_and_layout_independent():
    a = torch.arange(12, dtype=torch.float32).view(3, 4)
    s1 = {"x": a, "y": torch.ones(2)}
    s2 = {"y": torch.ones(2), "x": a.t().contiguous().t()}  # same values, other memory layout
    assert state_sha256(s1) == state_sha256(s2)
    assert state_sha256(s1) != state_sha256({"x": a.double(), "y": torch.ones(2)})  # dtype counts
    assert state_sha256(s1) != state_sha256({"x": a.view(4, 3), "y": torch.ones(2)})  # shape counts
    assert state_sha256(s1) != state_sha256({"x2": a, "y": torch.ones(2)})  # names count
    b = a.clone()
    b[2, 3] = 11.5
    assert state_sha256(s1) != state_sha256({"x": b, "y": torch.ones(2)})
    # A hand-computed digest of one tensor: name, dtype, shape, then the little-endian bytes.
    t = torch.tensor([1.0, 2.0])
    expected = hashlib.sha256(b"w\0torch.float32\0(2,)\0" + t.numpy().tobytes()).hexdigest()
    assert state_sha256({"w": t}) == expected
    assert state_sha256({"n": torch.tensor(3)})  # 0-d tensors hash too


def test_load_checkpoint_torch_and_safetensors(tmp_path):
    state = {"a": torch.randn(3), "b": torch.zeros(2, 2)}
    torch.save(state, tmp_path / "s.pt")
    save_file(state, str(tmp_path / "s.safetensors"))
    for name in ("s.pt", "s.safetensors"):
        loaded = load_checkpoint(tmp_path / name)
        assert set(loaded) == {"a", "b"} and torch.equal(loaded["a"], state["a"])


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(PulseError, match="weights not found"):
        load_checkpoint(tmp_path / "nope.pt", "weights")
    (tmp_path / "text.pt").write_text("hello\n")
    with pytest.raises(PulseError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "text.pt")
    torch.save({"a": torch.randn(1000)}, tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[:-300])
    with pytest.raises(PulseError, match="not a readable PyTorch checkpoint") as err:
        load_checkpoint(tmp_path / "cut.pt")
    assert "\n" not in str(err.value)
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(PulseError, match="not a readable safetensors file"):
        load_checkpoint(tmp_path / "bad.safetensors")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(PulseError, match="holds a Tensor, not a state dict"):
        load_checkpoint(tmp_path / "tensor.pt")


def test_weights_only_refuses_pickled_objects(tmp_path):
    torch.save({"opt": torch.optim.SGD}, tmp_path / "code.pt")  # a class: needs unpickling code
    with pytest.raises(PulseError, match=r"holds pickled code or objects \(GLOBAL torch.optim.sgd.SGD\)"):
        load_checkpoint(tmp_path / "code.pt")


class _Payload:
    """Pickles as a call that would create a file, if it ever ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_code_carrying_checkpoint_is_one_whole_sentence_and_never_runs(tmp_path):
    # Seen: the error stopped mid-sentence at torch's hint ("... you have two options, do those steps
    # only if you trust the source of the checkpoint.", with terminal colour codes).
    marker = tmp_path / "ran"
    torch.save({"w": torch.zeros(2), "x": _Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(PulseError) as e:
        load_checkpoint(tmp_path / "evil.pt", "stylegan1 synthesis weights")
    msg = str(e.value)
    assert msg.startswith(f"stylegan1 synthesis weights {tmp_path / 'evil.pt'} holds pickled code or objects (GLOBAL ")
    assert msg.endswith("save a plain state dict (torch.save(model.state_dict(), path)) or a .safetensors file")
    assert "\x1b" not in msg and "two options" not in msg and "\n" not in msg
    assert not marker.exists()


def test_tensors_only():
    with pytest.raises(PulseError, match="entry 'epoch' is a int"):
        tensors_only({"w": torch.zeros(1), "epoch": 3}, "f.pt")


def test_check_state_messages():
    expected = {"a": torch.Size([2, 3]), "b": torch.Size([4])}
    check_state({"a": torch.zeros(2, 3), "b": torch.zeros(4)}, expected, "src")
    with pytest.raises(PulseError, match=r"^src: missing key 'b' \(expected shape \(4,\)\)"):
        check_state({"a": torch.zeros(2, 3)}, expected, "src")
    with pytest.raises(PulseError, match=r"^src: unexpected key 'c' \(shape \(1,\)\)"):
        check_state({"a": torch.zeros(2, 3), "b": torch.zeros(4), "c": torch.zeros(1)}, expected, "src")
    with pytest.raises(PulseError, match=r"^src: key 'a' has shape \(3, 2\), expected \(2, 3\)"):
        check_state({"a": torch.zeros(3, 2), "b": torch.zeros(4)}, expected, "src")


def test_copy_strict_shares_module_storage():
    lin = torch.nn.Linear(2, 3)
    copy_strict(lin.state_dict(), {"weight": torch.ones(3, 2), "bias": torch.full((3,), 2.0, dtype=torch.float64)}, "x")
    assert torch.equal(lin.weight, torch.ones(3, 2)) and lin.bias.dtype == torch.float32
    assert torch.equal(lin.bias, torch.full((3,), 2.0))


def test_split_stylegan1_layouts():
    t = torch.zeros(1)
    pulse = {"blocks.4x4.const": t, "torgb.weight": t}
    assert split_stylegan1_state(pulse) == (pulse, {})
    mapping = {"dense0.weight": t, "dense7.bias": t}
    assert split_stylegan1_state(mapping) == ({}, mapping)
    prefixed = {
        "g_mapping.dense0.weight": t,
        "g_truncation.avg_latent": t,
        "g_synthesis.blocks.4x4.const": t,
        "g_synthesis.blocks.4x4.epi1.top_epi.noise.weight": t,
        "g_synthesis.blocks.4x4.epi1.top_epi.noise.noise": t,
        "g_synthesis.blocks.8x8.epi2.noise.noise": t,
        "g_synthesis.noise3": t,
        "g_synthesis.torgb.bias": t,
    }
    synthesis, mapping = split_stylegan1_state(prefixed)
    assert list(synthesis) == ["blocks.4x4.const", "blocks.4x4.epi1.noise.weight", "torgb.bias"]
    assert list(mapping) == ["dense0.weight"]
    # Keys it does not know stay, so the strict check names them.
    assert split_stylegan1_state({"g_synthesis.foo": t, "bar": t})[0] == {"foo": t, "bar": t}
