"""Generator weights that are fetched, not shipped: MobileStyleGAN 1024 from a pinned PyPI wheel.

The networks come inside `random-face==2021.7.21.1` (an Apache-2.0 package whose data/ holds
MobileStyleGAN's OpenVINO IR). pulse-trt never depends on that package: at the user's request it
runs `pip download` of the one pinned wheel, checks its sha256, reads the IR with numpy
(export/generators/mobilestylegan_ir.py) and writes its own safetensors file plus a provenance
JSON into the weights cache:

    $PULSE_TRT_WEIGHTS, else ~/.cache/pulse-trt/weights
      mobilestylegan/<source sha256 prefix>/mobilestylegan1024.safetensors
                                            provenance.json
                                            gaussian_fit-*.safetensors     (first use)

    resolve_weights("mobilestylegan", None)        # cached, else fetched (one line says what)
    resolve_weights("mobilestylegan", "x.whl")     # the wheel copied here by hand (sha256 checked)
    resolve_weights("mobilestylegan", "data/")     # its extracted random_face/data/ folder
    resolve_weights("mobilestylegan", "w.safetensors")   # our converted file, used as it is

Entries are written into a temporary folder and renamed into place, so an interrupted fetch
leaves nothing half-written; an entry is used only when its file's sha256 matches its
provenance record.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

from .engine.errors import PulseError
from .engine.files import remove_stale_temps, temp_prefix

WEIGHTS_ENV = "PULSE_TRT_WEIGHTS"
DEFAULT_WEIGHTS_DIR = Path("~/.cache/pulse-trt/weights")
FETCHABLE = ("mobilestylegan",)

PACKAGE, VERSION = "random-face", "2021.7.21.1"
WHEEL = "random_face-2021.7.21.1-py3-none-any.whl"
WHEEL_SHA256 = "e5d10e2be7df63f06123855ec591ca35dcb1d059eba47ddcb175d7d26b4019b5"
WHEEL_MB = 37.6
IR_FILES = ("MappingNetwork.xml", "MappingNetwork.bin", "SynthesisNetwork.xml", "SynthesisNetwork.bin")
WHEEL_DATA = "random_face/data/"
WEIGHTS_FILE = "mobilestylegan1024.safetensors"
PROVENANCE = "provenance.json"
_MAX_MEMBER_BYTES = 64 << 20  # the largest IR file is 32 MB
LICENSE = ("MobileStyleGAN (Belousov 2021) is distilled from NVIDIA's StyleGAN2-FFHQ, licensed for "
           "non-commercial use only (NVIDIA Source Code License-NC); the random-face package itself is Apache-2.0")


def default_weights_dir() -> Path:
    """$PULSE_TRT_WEIGHTS when set and non-empty, else ~/.cache/pulse-trt/weights (expanded)."""
    env = os.environ.get(WEIGHTS_ENV, "").strip()
    return Path(env).expanduser() if env else DEFAULT_WEIGHTS_DIR.expanduser()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_weights(generator: str, weights=None, *, cache_dir=None, log: Callable[[str], None] | None = None,
                    download: bool = True) -> Path:
    """Path of a converted weights file for a fetchable generator (see the module docstring).

    weights None: the cached conversion of the pinned wheel, fetched and converted when missing
    (download=False: PulseError instead). A .whl: must be the pinned wheel (sha256); a folder: the
    wheel's IR files; a .safetensors: returned as is (the loader checks its layout strictly).
    """
    if generator not in FETCHABLE:
        raise PulseError(f"only {', '.join(FETCHABLE)} weights are fetched; {generator} needs --weights PATH")
    log = log or (lambda msg: None)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_weights_dir()
    if weights is not None:
        src = Path(weights).expanduser()
        if src.is_dir():
            return _from_ir_folder(src, cache, log)
        if not src.exists():
            raise PulseError(f"mobilestylegan weights not found: {src}")
        if not src.is_file():
            raise PulseError(f"mobilestylegan weights {src} is not a regular file")
        if src.suffix == ".whl":
            return _from_wheel(src, cache, log)
        return src
    entry = cache / "mobilestylegan" / WHEEL_SHA256[:16]
    if _entry_ok(entry):
        return entry / WEIGHTS_FILE
    if not download:
        raise PulseError(f"mobilestylegan weights are not in {cache}: run `pulse-trt weights fetch mobilestylegan`")
    with tempfile.TemporaryDirectory(prefix="pulse-trt-wheel-") as tmp:
        log(f"downloading MobileStyleGAN 1024 weights: {PACKAGE}=={VERSION} ({WHEEL_MB} MB wheel) from the Python "
            f"package index with pip, converted into {cache}. Licence: {LICENSE}")
        wheel = _pip_download(Path(tmp))
        return _from_wheel(wheel, cache, log)


def fetch(generator: str, *, cache_dir=None, log=None, force: bool = False) -> Path:
    """`pulse-trt weights fetch`: make sure the converted weights are cached (force: redo)."""
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_weights_dir()
    if force:
        entry = cache / "mobilestylegan" / WHEEL_SHA256[:16]
        if entry.exists():
            shutil.rmtree(entry)
    return resolve_weights(generator, None, cache_dir=cache, log=log)


def provenance(weights_file: Path) -> dict | None:
    """The provenance record beside a converted file, or None."""
    p = Path(weights_file).parent / PROVENANCE
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


# -- sources ----------------------------------------------------------------------------------------
def _pip_download(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
           "--disable-pip-version-check", "-q", f"{PACKAGE}=={VERSION}", "-d", str(dest)]
    hint = (f"download {WHEEL} elsewhere (`pip download --no-deps {PACKAGE}=={VERSION}`) and pass it with "
            "--weights PATH")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PulseError(f"could not run pip to fetch the mobilestylegan weights ({e}); {hint}") from None
    wheel = dest / WHEEL
    if proc.returncode != 0 or not wheel.is_file():
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
        raise PulseError(f"could not download {PACKAGE}=={VERSION} from the package index ({last}); {hint}")
    return wheel


def _from_wheel(wheel: Path, cache: Path, log) -> Path:
    digest = sha256_file(wheel)
    if digest != WHEEL_SHA256:
        raise PulseError(f"{wheel}: sha256 {digest[:16]}... is not that of the pinned {WHEEL} "
                         f"({WHEEL_SHA256[:16]}...): truncated, corrupt or another file")
    entry = cache / "mobilestylegan" / WHEEL_SHA256[:16]
    if _entry_ok(entry):
        return entry / WEIGHTS_FILE
    with tempfile.TemporaryDirectory(prefix="pulse-trt-ir-") as tmp:
        try:
            with zipfile.ZipFile(wheel) as z:
                for name in IR_FILES:
                    info = z.getinfo(WHEEL_DATA + name)
                    if info.file_size > _MAX_MEMBER_BYTES:
                        raise PulseError(f"{wheel}: {name} is {info.file_size} bytes, too large for this model")
                    (Path(tmp) / name).write_bytes(z.read(info))
        except (zipfile.BadZipFile, KeyError, OSError) as e:
            raise PulseError(f"{wheel} is not a readable random-face wheel ({e})") from None
        source = {"package": PACKAGE, "version": VERSION, "wheel": WHEEL, "wheel_sha256": digest}
        return _convert(Path(tmp), entry, source, log)


def _from_ir_folder(folder: Path, cache: Path, log) -> Path:
    missing = [n for n in IR_FILES if not (folder / n).is_file()]
    if missing:
        raise PulseError(f"{folder} is not MobileStyleGAN's IR folder (random_face/data/): {missing[0]} missing")
    digest = hashlib.sha256()
    for n in IR_FILES:
        digest.update(sha256_file(folder / n).encode())
    key = digest.hexdigest()
    entry = cache / "mobilestylegan" / key[:16]
    if _entry_ok(entry):
        return entry / WEIGHTS_FILE
    source = {"package": PACKAGE, "version": VERSION, "ir_folder": str(folder.resolve()), "ir_sha256": key}
    return _convert(folder, entry, source, log)


def _convert(ir_dir: Path, entry: Path, source: dict, log) -> Path:
    """IR files in ir_dir -> entry/{WEIGHTS_FILE, PROVENANCE}, via a temporary folder + rename."""
    from safetensors.numpy import save_file  # noqa: PLC0415

    from .export.generators.mobilestylegan_ir import state_from_ir  # noqa: PLC0415  (numpy only)

    state = state_from_ir(ir_dir / "MappingNetwork.xml", ir_dir / "SynthesisNetwork.xml")
    parent = entry.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(parent)  # conversions of processes killed outright
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(entry.name), suffix=".tmp", dir=parent))
        tmp.chmod(0o755)
    except OSError as e:
        raise PulseError(f"cannot write the weights cache {parent} ({e.strerror or e}); set ${WEIGHTS_ENV} "
                         "to a writable folder") from None
    try:
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pulse-trt-mobilestylegan/1"})
        record = {"generator": "mobilestylegan", "resolution": 1024, "source": source, "license": LICENSE,
                  "weights_file": WEIGHTS_FILE, "weights_sha256": sha256_file(tmp / WEIGHTS_FILE),
                  "tensors": len(state), "values": int(sum(v.size for v in state.values()))}
        (tmp / PROVENANCE).write_text(json.dumps(record, indent=2) + "\n")
        if entry.exists():
            shutil.rmtree(entry)  # a damaged entry (_entry_ok said no)
        os.replace(tmp, entry)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise PulseError(f"cannot write the weights cache {parent} ({e.strerror or e}); set ${WEIGHTS_ENV} "
                         "to a writable folder") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"mobilestylegan weights converted: {entry / WEIGHTS_FILE} ({record['values'] / 1e6:.1f}M values)")
    return entry / WEIGHTS_FILE


def _entry_ok(entry: Path) -> bool:
    """A cache entry is used only when its file's sha256 matches its provenance record."""
    f = entry / WEIGHTS_FILE
    rec = provenance(f)
    if not f.is_file() or not isinstance(rec, dict):
        return False
    return rec.get("weights_sha256") == sha256_file(f)
