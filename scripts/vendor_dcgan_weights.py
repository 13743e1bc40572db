"""Vendor the embedded dcgan weights from the PyPI wheel gan-face-generate 1.1.1 (MIT).

    python scripts/vendor_dcgan_weights.py                 # pip download --no-deps into a temp dir
    python scripts/vendor_dcgan_weights.py --wheel PATH    # use a wheel already on disk

Steps:
  1. Get the wheel (pip download --no-deps gan-face-generate==1.1.1, or --wheel PATH) and check its
     sha256 against WHEEL_SHA256: a different file stops the script.
  2. Read `gan_face_generate/weights.tar` from the wheel (a zip) into memory; torch.load it with
     weights_only=True and keep only `netG_state_dict` (the generator; nothing else is in it).
  3. Fold the eval-mode BatchNorms into the transposed convolutions
     (export.generators.dcgan.fold_dcgan_state), float32.
  4. Write export/weights/dcgan64_faces.safetensors (metadata: source, wheel sha256, license),
     LICENSE-gan-face-generate.txt (the wheel's own MIT notice) and dcgan64_faces.json
     (provenance: wheel, version, sha256s, the command, the folding).
The package is never installed nor imported: only its weight file is read.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from pulse_trt.export.checkpoints import file_sha256, state_sha256
from pulse_trt.export.generators.dcgan import BN_EPS, fold_dcgan_state

PACKAGE = "gan-face-generate"
VERSION = "1.1.1"
WHEEL_NAME = "gan_face_generate-1.1.1-py3-none-any.whl"
WHEEL_SHA256 = "24102f4be41d164e44251168ede0458a45e498a888c81493e2aea48529640569"
MEMBER = "gan_face_generate/weights.tar"
LICENSE_MEMBER = "gan_face_generate-1.1.1.dist-info/licenses/LICENSE"
HOMEPAGE = "https://github.com/chien-liu/DCGAN-PyTorch"
OUT_DIR = Path(__file__).resolve().parent.parent / "export" / "weights"


def download_wheel(dest: Path) -> Path:
    """pip download --no-deps the pinned wheel into dest; returns its path."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                    f"{PACKAGE}=={VERSION}", "-d", str(dest)], check=True)
    wheel = dest / WHEEL_NAME
    if not wheel.is_file():
        sys.exit(f"pip did not produce {WHEEL_NAME} in {dest}")
    return wheel


def vendor(wheel: Path, out_dir: Path, command: str) -> dict:
    """Steps 1-4 of the module docstring on a wheel on disk; returns the provenance record."""
    wheel_sha = file_sha256(wheel)
    if wheel_sha != WHEEL_SHA256:
        sys.exit(f"{wheel}: sha256 {wheel_sha} != pinned {WHEEL_SHA256}; refusing to vendor it")
    with zipfile.ZipFile(wheel) as zf:
        tar_bytes = zf.read(MEMBER)
        license_text = zf.read(LICENSE_MEMBER).decode()
    checkpoint = torch.load(io.BytesIO(tar_bytes), map_location="cpu", weights_only=True)
    unfolded = checkpoint["netG_state_dict"]
    folded = fold_dcgan_state(dict(unfolded), source=f"{wheel}:{MEMBER}")

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "dcgan64_faces.safetensors"
    metadata = {
        "source": f"PyPI {PACKAGE} {VERSION} ({WHEEL_NAME}, member {MEMBER}, key netG_state_dict)",
        "source_wheel_sha256": WHEEL_SHA256,
        "license": "MIT, Copyright (c) 2023, chien liu (see LICENSE-gan-face-generate.txt)",
        "architecture": "PyTorch DCGAN tutorial generator, nz=100 ngf=64 nc=3, 64x64, tanh output",
        "batchnorm": f"eval-mode BatchNorm2d (eps {BN_EPS}) folded into convs.0-3 weight and bias",
    }
    save_file({k: v.contiguous() for k, v in folded.items()}, str(target), metadata=metadata)
    target.chmod(0o644)  # safetensors creates it owner-only; it ships as package data
    (out_dir / "LICENSE-gan-face-generate.txt").write_text(
        f"The file dcgan64_faces.safetensors is derived from the weights of the Python package\n"
        f"{PACKAGE} {VERSION} ({HOMEPAGE}), distributed under this license:\n\n{license_text}")
    record = {
        "file": target.name,
        "sha256": file_sha256(target),
        "tensors_sha256": state_sha256(folded),
        "source": {
            "registry": "PyPI",
            "package": PACKAGE,
            "version": VERSION,
            "wheel": WHEEL_NAME,
            "wheel_sha256": WHEEL_SHA256,
            "member": MEMBER,
            "member_sha256": hashlib.sha256(tar_bytes).hexdigest(),
            "key": "netG_state_dict",
            "homepage": HOMEPAGE,
            "training_data": "DigiFace1M (per the package description)",
        },
        "license": "MIT",
        "license_file": "LICENSE-gan-face-generate.txt",
        "copyright": "Copyright (c) 2023, chien liu",
        "conversion": {
            "command": command,
            "script": "scripts/vendor_dcgan_weights.py",
            "torch": torch.__version__,
            "folding": f"convs.i.weight = main.(3i).weight * s, convs.i.bias = beta - running_mean * s, "
                       f"s = gamma / sqrt(running_var + {BN_EPS}) per output channel (i = 0..3, in float64, "
                       "rounded once to float32); convs.4.weight = main.12.weight",
            "dtype": "float32",
        },
    }
    (out_dir / "dcgan64_faces.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help=f"use this {WHEEL_NAME} instead of downloading it")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR, help="default: export/weights/")
    args = parser.parse_args(argv)
    if args.wheel is not None:
        record = vendor(args.wheel, args.out_dir, "python scripts/vendor_dcgan_weights.py --wheel " + WHEEL_NAME)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            record = vendor(download_wheel(Path(tmp)), args.out_dir, "python scripts/vendor_dcgan_weights.py")
    print(f"wrote {args.out_dir / record['file']} (sha256 {record['sha256']})")


if __name__ == "__main__":
    main()
