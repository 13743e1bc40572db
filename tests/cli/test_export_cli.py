"""`pulse-trt export`: flags, option errors, an export through the CLI."""
from __future__ import annotations

import argparse
import json

import pytest

from pulse_trt.cli import main
from pulse_trt.cli.options import add_pulse_options, options_from_args
from pulse_trt.engine.options import PulseOptions


def test_options_round_trip():
    p = argparse.ArgumentParser()
    add_pulse_options(p)
    assert options_from_args(p.parse_args([])) == PulseOptions()
    o = options_from_args(p.parse_args(["--opt-name", "adamax", "--tile-latent", "--bad-noise-layers", "3.17",
                                        "--steps", "7", "--loss-str", "1*L1", "--seed", "0"]))
    assert (o.opt_name, o.tile_latent, o.bad_noise, o.steps, o.loss_str) == ("adamax", True, {3, 17}, 7, "1*L1")


@pytest.mark.parametrize("flags,msg", [(["--steps", "0"], "steps"), (["--loss-str", "2*FOO"], "FOO"),
                                       (["--eps", "-1"], "eps")])
def test_bad_options_one_line_error(flags, msg, tmp_path, capsys):
    rc = main(["export", "--lr-size", "8", "-o", str(tmp_path / "o"), *flags])
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_bad_lr_size(tmp_path, capsys):
    rc = main(["export", "--lr-size", "7", "-o", str(tmp_path / "o"), "--no-verify"])
    assert rc == 2 and "pulse-trt: error" in capsys.readouterr().err


@pytest.mark.slow
def test_export_dcgan_via_cli(tmp_path, capsys):
    pytest.importorskip("pulse_trt.export.generators.dcgan")
    rc = main(["export", "--generator", "dcgan", "--lr-size", "8", "--steps", "50", "-o", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "torchvision" not in err  # torch.onnx's registry warnings are silenced, as in upsample
    man = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert man["options"]["steps"] == 50 and man["generator"]["name"] == "dcgan"
    assert max(man["verification"]["step"]["worst"].values()) < 1e-4
