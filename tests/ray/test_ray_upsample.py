"""pulse_trt.ray: the actor class and --resume without a cluster (fast), then the job on a local
Ray started by the test (slow): 24 inputs through 2 actors give the local CLI's records; an actor
killed mid-job still yields every output exactly once; --resume after a failed run finishes only
the rest."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PIL import Image

from ray_helpers import FAST_STEPS, N_FACES, read_records
from pulse_trt.engine.errors import PulseError
from pulse_trt.engine.options import PulseOptions


def cli(*argv) -> int:
    from pulse_trt.cli import main  # noqa: PLC0415

    return main(["upsample", *(str(a) for a in argv)])


def _rows(folder: Path, n: int):
    """Item rows of the first n inputs of folder, as the driver builds them."""
    from pulse_trt.cli.upsample import Item  # noqa: PLC0415
    from pulse_trt.engine.images import expand_inputs, load_image  # noqa: PLC0415
    from pulse_trt.ray.data import item_rows, seed_positions  # noqa: PLC0415

    items = [Item(name=p.stem, label=str(p), target=load_image(p, resolution=64)) for p in expand_inputs([folder])][:n]
    return items, item_rows(items, seed_positions(items))


def _batch(rows):
    import numpy as np  # noqa: PLC0415

    return {k: np.asarray([r[k] for r in rows]) for k in rows[0]}


def _shipped(artifacts5):
    from pulse_trt.api import Pulse  # noqa: PLC0415
    from pulse_trt.ray.data import ShippedArtifacts  # noqa: PLC0415

    p = Pulse(lr_size=8, options=PulseOptions(steps=FAST_STEPS))
    return {8: ShippedArtifacts(artifacts5.key, str(p.resolve_artifacts()), None, p.describe(), str(p.artifacts_dir))}


# -- fast: no cluster --------------------------------------------------------------------------------
def test_actor_class_writes_the_local_records(faces24, local_records, artifacts5, tmp_path):
    """UpsampleBatches, called as Ray Data would (a numpy batch of slots rows), writes the local
    CLI's files and records; a retried batch (same job) searches nothing again."""
    import time  # noqa: PLC0415

    from pulse_trt.ray.data import UpsampleBatches  # noqa: PLC0415

    items, rows = _rows(faces24, 8)
    actor = UpsampleBatches(_shipped(artifacts5), PulseOptions(steps=FAST_STEPS).to_dict(), str(tmp_path),
                            slots=8, job_started=time.time() - 1, ship="path")
    try:
        out = actor(_batch(rows[:5]))
        out2 = actor(_batch(rows[3:8]))  # 3, 4 again: an earlier attempt of this job wrote them
    finally:
        actor.close()
    assert list(out["status"]) == ["written"] * 5
    assert list(out2["status"]) == ["exists", "exists", "written", "written", "written"]
    got = read_records(tmp_path)
    assert sorted(got) == [it.name for it in items]
    for name, rec in got.items():
        assert rec == local_records[name], name


def test_materialise_unpacks_object_store_files(artifacts5, tmp_path):
    """A worker that does not see the driver's path unpacks the shipped files once."""
    from pulse_trt.engine.manifest import load_manifest  # noqa: PLC0415
    from pulse_trt.ray.data import ShippedArtifacts, materialise  # noqa: PLC0415

    files = {p.name: p.read_bytes() for p in Path(artifacts5.dir).iterdir() if p.is_file()}
    shipped = ShippedArtifacts(artifacts5.key, str(tmp_path / "not-here"), files)
    got = materialise(shipped, root=tmp_path / "unpacked")
    assert got == tmp_path / "unpacked" / artifacts5.key
    assert load_manifest(got).key == artifacts5.key
    assert materialise(shipped, root=tmp_path / "unpacked") == got  # found, not unpacked again
    assert materialise(ShippedArtifacts(artifacts5.key, str(artifacts5.dir), files)) == Path(artifacts5.dir)
    with pytest.raises(PulseError, match="shipped by path only"):
        materialise(ShippedArtifacts(artifacts5.key, str(tmp_path / "gone"), None))


def test_local_resume_finishes_only_the_rest(faces24, local_records, artifacts5, tmp_path):
    """--resume (local engine): inputs with a record are left alone, the others run with their
    own seed positions, so the records equal an uninterrupted run's; a PNG left without its
    record (an interrupted write) is replaced."""
    items, _ = _rows(faces24, 6)
    inputs = [it.label for it in items]
    assert cli(*inputs[:3], "-o", tmp_path, "--steps", FAST_STEPS, "-q") == 0
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*_pulse.json")}
    (tmp_path / f"{items[4].name}_pulse.png").write_bytes(b"half")  # left by an interrupted run
    assert cli(*inputs, "-o", tmp_path, "--steps", FAST_STEPS, "-q") == 2  # exists: refused without --resume
    assert cli(*inputs, "-o", tmp_path, "--steps", FAST_STEPS, "-q", "--resume") == 0
    after = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*_pulse.json")}
    assert {k: after[k] for k in before} == before
    got = read_records(tmp_path)
    assert sorted(got) == [it.name for it in items]
    for name, rec in got.items():
        if name in (it.name for it in items[3:]):
            assert rec == {**local_records[name], "outputs": rec["outputs"]}, name
    assert cli(*inputs, "-o", tmp_path, "--steps", FAST_STEPS, "-q", "--resume") == 0  # nothing to do


def test_ray_flag_needs_ray(faces24, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert cli(faces24, "-o", "unused", "--ray", "--steps", FAST_STEPS) == 2
    assert "pip install 'pulse-trt[ray]'" in capsys.readouterr().err


def test_ray_flag_checks(faces24, tmp_path, capsys):
    """--ray ADDRESS before the inputs: an existing file is an input, anything else not an address
    is refused; --backend torch and --actors 0 are refused before any work."""
    from argparse import Namespace  # noqa: PLC0415

    from pulse_trt.cli.upsample import _check_ray_args  # noqa: PLC0415

    first = sorted(faces24.iterdir())[0]
    args = Namespace(ray=str(first), inputs=["b.png"], backend="ort", actors=1, ray_cpus=1, ray_gpus=None)
    _check_ray_args(args)
    assert args.ray == "local" and args.inputs == [str(first), "b.png"]
    for ray, ok in (("auto", True), ("ray://head:10001", True), ("10.0.0.1:6379", True), ("nonsense", False)):
        args = Namespace(ray=ray, inputs=[], backend="ort", actors=1, ray_cpus=1, ray_gpus=None)
        if ok:
            _check_ray_args(args)
        else:
            with pytest.raises(PulseError, match="--ray 'nonsense'"):
                _check_ray_args(args)
    assert cli(faces24, "-o", tmp_path, "--ray=auto", "--backend", "torch") == 2
    assert "--ray runs the exported engine" in capsys.readouterr().err
    assert cli(faces24, "-o", tmp_path, "--ray=auto", "--actors", "0") == 2


# -- slow: a local Ray ---------------------------------------------------------------------------
@pytest.mark.slow
def test_two_actors_give_the_local_records(local_ray, faces24, local_records, tmp_path):
    """pulse-trt upsample FOLDER --ray --actors 2: the same files and records as the local CLI."""
    assert cli(faces24, "-o", tmp_path, "--steps", FAST_STEPS, "--ray", "--actors", 2, "-q") == 0
    got = read_records(tmp_path)
    assert len(got) == N_FACES
    assert got == local_records
    assert (tmp_path / "pulse_grid.png").is_file()
    assert len(list(tmp_path.glob("*_pulse.png"))) == N_FACES and len(list(tmp_path.glob("*_pulse_lr.png"))) == N_FACES


@pytest.mark.slow
def test_killed_actor_still_writes_every_output_once(local_ray, faces24, local_records, tmp_path):
    """An actor process dies (os._exit) after writing its 3rd input, mid-batch: Ray restarts it
    and retries the batch; every input comes back once, inputs already written are not searched
    again, and the records equal the local CLI's."""
    from pulse_trt.ray import upsample_dataset  # noqa: PLC0415

    marker = tmp_path / "fault-fired"
    out = tmp_path / "out"
    rows = upsample_dataset([faces24], out, options=PulseOptions(steps=FAST_STEPS), concurrency=2,
                            fault=f"exit:3:{marker}")
    assert marker.exists()  # the fault fired
    names = [r["name"] for r in rows]
    assert sorted(names) == sorted(local_records) and len(set(names)) == N_FACES  # each exactly once
    assert {r["status"] for r in rows} <= {"written", "exists"}
    assert read_records(out) == local_records
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp file left behind


@pytest.mark.slow
def test_resume_after_a_failed_run_finishes_only_the_rest(local_ray, faces24, local_records, tmp_path):
    """A run that fails part-way (an injected error after 4 inputs in an actor) leaves complete
    inputs; `--ray --resume` runs only the others, and the records equal the local CLI's."""
    from pulse_trt.ray import upsample_dataset  # noqa: PLC0415

    with pytest.raises(Exception, match="injected failure"):
        upsample_dataset([faces24], tmp_path, options=PulseOptions(steps=FAST_STEPS), concurrency=2, fault="raise:4")
    first = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*_pulse.json")}
    assert 4 <= len(first) < N_FACES
    # The pipeline restarts as a new driver would: a fresh Ray (the failed dataset's actors stay
    # alive, holding both CPUs, for as long as the driver that ran it is connected).
    local_ray.shutdown()
    local_ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    assert cli(faces24, "-o", tmp_path, "--steps", FAST_STEPS, "--ray", "--actors", 2, "-q", "--resume") == 0
    after = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*_pulse.json")}
    assert {k: after[k] for k in first} == first  # untouched
    assert len(after) == N_FACES
    assert read_records(tmp_path) == local_records


def test_actor_class_takes_image_batches(faces24, local_records, artifacts5, tmp_path):
    """A Ray Dataset of images (ray.data.read_images(..., include_paths=True): `image` and `path`
    columns, plus `index` for the seeds) reaches the actor as such a batch: the same records."""
    import time  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415

    from pulse_trt.ray.data import UpsampleBatches  # noqa: PLC0415

    paths = sorted(faces24.iterdir())[:3]
    batch = {"image": np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths]),
             "path": np.asarray([str(p) for p in paths]), "index": np.arange(3)}
    actor = UpsampleBatches(_shipped(artifacts5), PulseOptions(steps=FAST_STEPS).to_dict(), str(tmp_path),
                            slots=8, job_started=time.time() - 1)
    try:
        out = actor(batch)
    finally:
        actor.close()
    assert list(out["status"]) == ["written"] * 3
    got = read_records(tmp_path)
    for name, rec in got.items():
        assert rec == {**local_records[name], "notes": rec["notes"]}, name
