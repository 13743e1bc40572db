"""`pulse-trt weights fetch / path` (pulse_trt/weights.py): a converted cache entry from an IR
folder, and one-line errors with nothing half-written for every bad source or cache."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))
from mobilestylegan_ir_writer import write_ir_pair  # noqa: E402


@pytest.fixture(scope="module")
def ir_folder(tmp_path_factory):
    from pulse_trt.export.generators.mobilestylegan import MobileStyleGANGenerator  # noqa: PLC0415

    g = MobileStyleGANGenerator(seed=5)
    return write_ir_pair({k: v.numpy() for k, v in g.weights_state_dict().items()}, tmp_path_factory.mktemp("data"))


def _entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*")) if cache.exists() else []


def test_fetch_from_ir_folder_then_path(cli, ir_folder, tmp_path):
    cache = tmp_path / "weights"
    rc, out, err = cli("weights", "fetch", "mobilestylegan", "--from", ir_folder, "--weights-dir", cache)
    assert rc == 0, err
    path = Path(out.strip())
    rec = json.loads((path.parent / "provenance.json").read_text())
    assert path.is_file() and rec["source"]["ir_sha256"] and "non-commercial" in rec["license"]
    assert "non-commercial" in err
    from safetensors.numpy import load_file  # noqa: PLC0415

    assert len(load_file(str(path))) == 124
    rc, out2, _ = cli("weights", "fetch", "mobilestylegan", "--from", ir_folder, "--weights-dir", cache)
    assert rc == 0 and out2 == out  # found in the cache
    # `path` knows only the pinned wheel's entry: not fetched here
    rc, _, err = cli("weights", "path", "mobilestylegan", "--weights-dir", cache)
    assert rc == 2 and "pulse-trt weights fetch mobilestylegan" in err and err.count("\n") == 1


def test_damaged_entry_is_converted_again(cli, ir_folder, tmp_path):
    cache = tmp_path / "weights"
    rc, out, _ = cli("weights", "fetch", "mobilestylegan", "--from", ir_folder, "--weights-dir", cache)
    path = Path(out.strip())
    data = bytearray(path.read_bytes())
    data[-100:] = bytes(100)
    path.write_bytes(bytes(data))
    rc, out2, err = cli("weights", "fetch", "mobilestylegan", "--from", ir_folder, "--weights-dir", cache)
    assert rc == 0 and "converted" in err
    rec = json.loads((path.parent / "provenance.json").read_text())
    from pulse_trt.weights import sha256_file  # noqa: PLC0415

    assert rec["weights_sha256"] == sha256_file(path)


def test_wrong_or_truncated_wheel(cli, tmp_path):
    cache = tmp_path / "weights"
    fake = tmp_path / "random_face-2021.7.21.1-py3-none-any.whl"
    fake.write_bytes(b"PK\x03\x04" + bytes(1000))
    rc, _, err = cli("weights", "fetch", "mobilestylegan", "--from", fake, "--weights-dir", cache)
    assert rc == 2 and "sha256" in err and "not that of the pinned" in err and err.count("\n") == 1
    assert _entries(cache) == []


def test_ir_of_another_model(cli, ir_folder, tmp_path):
    cache = tmp_path / "weights"
    other = tmp_path / "other"
    other.mkdir()
    for n in ("MappingNetwork", "SynthesisNetwork"):  # the two networks swapped
        swap = "SynthesisNetwork" if n == "MappingNetwork" else "MappingNetwork"
        for ext in (".xml", ".bin"):
            (other / f"{n}{ext}").write_bytes((ir_folder / f"{swap}{ext}").read_bytes())
    rc, _, err = cli("weights", "fetch", "mobilestylegan", "--from", other, "--weights-dir", cache)
    assert rc == 2 and "another model" in err and err.count("\n") == 1
    assert not any(p.name.endswith(".safetensors") for p in _entries(cache))
    (other / "SynthesisNetwork.bin").unlink()
    rc, _, err = cli("weights", "fetch", "mobilestylegan", "--from", other, "--weights-dir", cache)
    assert rc == 2 and "SynthesisNetwork.bin missing" in err


def test_cache_that_cannot_be_written(cli, ir_folder, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    rc, _, err = cli("weights", "fetch", "mobilestylegan", "--from", ir_folder, "--weights-dir", blocker / "sub")
    assert rc == 2 and "cannot write the weights cache" in err and "PULSE_TRT_WEIGHTS" in err and err.count("\n") == 1
    assert blocker.read_text() == "not a folder"


def test_no_index_and_nothing_cached(cli, tmp_path, monkeypatch):
    """pip cannot reach any index: one line naming the wheel and --weights."""
    for k, v in {"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_EXTRA_INDEX_URL": "", "PIP_FIND_LINKS": "",
                 "PIP_CONFIG_FILE": "/dev/null", "PIP_RETRIES": "0", "PIP_TIMEOUT": "2", "PIP_NO_INPUT": "1"}.items():
        monkeypatch.setenv(k, v)
    cache = tmp_path / "weights"
    rc, _, err = cli("weights", "fetch", "mobilestylegan", "--weights-dir", cache)
    assert rc == 2, err
    assert "could not download random-face==2021.7.21.1" in err and "--weights PATH" in err
    assert "random_face-2021.7.21.1-py3-none-any.whl" in err and err.strip().count("\n") == 1  # the download line + the error
    assert not any(p.suffix == ".safetensors" for p in _entries(cache))


def test_upsample_refuses_noise_flags_for_mobilestylegan(cli, tmp_path):
    from cli_helpers import constant_png  # noqa: PLC0415

    png = constant_png(tmp_path / "f.png", side=32)
    rc, _, err = cli("upsample", png, "-o", tmp_path / "out", "--generator", "mobilestylegan", "--noise-type", "zero")
    assert rc == 2 and "no noise inputs" in err and "--noise-type" in err
    rc, _, err = cli("upsample", png, "-o", tmp_path / "out", "--generator", "mobilestylegan", "--resolution", "512")
    assert rc == 2 and "1024x1024 faces only" in err
    assert not (tmp_path / "out").exists()
