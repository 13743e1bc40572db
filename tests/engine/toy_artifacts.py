"""A toy artefact directory with the contract's names (docs/artifacts.md), built with onnx.helper
from numpy (no torch, no exporter), and the same toy search in plain numpy as its reference.

The toy generator is linear: image01 = A v + sum_i N_i n_i + c for the latent v [D] and noise
maps n_i (roles: noise0 trainable, noise1 frozen, noise2 zero). Its "downscale" is the matrix
P, so lr = Q v + sum_i S_i n_i + q with Q = P A, S_i = P N_i, q = P c. Loss terms as PULSE's:
L2 = max(eps, mean (lr - y)^2), L1 = 10 max(eps, mean |lr - y|), GEOCROSS = 0 (one latent row),
TOTAL = 100 L2 + 0.05 GEOCROSS; the gradient is written by hand; Adam as torch.optim.Adam; the
spherical projection as PULSE's. Graph contract 2 (docs/artifacts.md): lr and t per row, a row
with t = 1 starts from start.X, a row with t = 0 does not move, best.X / best.loss / min.L2
tracked in the step.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pulse_trt.engine.manifest import artifact_key, file_record
from pulse_trt.engine.options import PulseOptions

RES, LR, D = 8, 2, 6
NOISE_SHAPES = ((1, 2, 2), (1, 2, 2), (1, 2, 2))
TOY_OPTIONS = dict(num_trainable_noise_layers=1, bad_noise_layers="2", steps=20, eps=2e-3)


def toy_weights(seed: int = 7):
    g = np.random.default_rng(seed)
    n_hr, n_lr = 3 * RES * RES, 3 * LR * LR
    a = (g.standard_normal((n_hr, D)) * 0.08).astype(np.float32)
    nmaps = [(g.standard_normal((n_hr, 4)) * 0.05).astype(np.float32) for _ in NOISE_SHAPES]
    c = np.full(n_hr, 0.5, np.float32)
    p = np.zeros((n_lr, n_hr), np.float32)  # block average as the toy downscale
    img = np.arange(n_hr).reshape(3, RES, RES)
    for ch in range(3):
        for i in range(LR):
            for j in range(LR):
                block = img[ch, i * 4:(i + 1) * 4, j * 4:(j + 1) * 4].ravel()
                p[ch * LR * LR + i * LR + j, block] = 1.0 / 16
    return a, nmaps, c, p


def _init(name, arr):
    return numpy_helper.from_array(np.asarray(arr, np.float32), name)


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def write_toy_artifacts(out_dir, **options) -> Path:
    """Write manifest.json, step.onnx, render.onnx of the toy for PulseOptions(**TOY_OPTIONS,
    **options) (adam only) into out_dir."""
    opts = PulseOptions(**{**TOY_OPTIONS, **options})
    assert opts.opt_name == "adam" and not opts.tile_latent
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    a, nmaps, c, p = toy_weights()
    q_mat, s0, s1, q_vec = p @ a, p @ nmaps[0], p @ nmaps[1], p @ c
    eps, w_l2 = opts.eps, opts.loss_weights.get("L2", 0.0)
    n_lr = 3 * LR * LR
    nodes, inits = [], []

    def node(op, ins, outs, **kw):
        nodes.append(helper.make_node(op, ins, outs, **kw))

    inits += [_init("QT", q_mat.T), _init("S0T", s0.T), _init("S1T", s1.T), _init("q", q_vec),
              _init("Q", q_mat), _init("S0", s0), _init("eps", eps), _init("nlr", float(n_lr)),
              _init("ten", 10.0), _init("wl2", w_l2), _init("two_over_n", 2.0 / n_lr), _init("zero", 0.0),
              _init("one", 1.0), _init("b1", 0.9), _init("b2", 0.999), _init("ob1", 0.1), _init("ob2", 0.001),
              _init("aeps", 1e-8), _init("seps", 1e-9), _init("half", 0.5), _init("one_half", 1.5),
              _init("nan", np.nan), _init("inf", np.inf),
              numpy_helper.from_array(np.array([0, -1], np.int64), "flat"),
              numpy_helper.from_array(np.array([0, 1, D], np.int64), "lat_shape"),
              numpy_helper.from_array(np.array([0, 1, 2, 2], np.int64), "map_shape"),
              numpy_helper.from_array(np.array([2], np.int64), "ax2"),
              numpy_helper.from_array(np.array([1, 2], np.int64), "ax12"),
              numpy_helper.from_array(np.array([1, 2, 3], np.int64), "ax123"),
              numpy_helper.from_array(np.array([1], np.int64), "ax1")]
    # per-row flags: live = t > 0.5, fresh = live and t < 1.5, as [B], [B, 1, 1], [B, 1, 1, 1]
    node("Greater", ["t", "half"], ["live"])
    node("Less", ["t", "one_half"], ["below2"])
    node("And", ["live", "below2"], ["fresh"])
    for f in ("live", "fresh"):
        node("Unsqueeze", [f, "ax12"], [f"{f}3"])
        node("Unsqueeze", [f, "ax123"], [f"{f}4"])
    rank = {"latent": "3", "noise0": "4"}
    # fresh rows start over: state from start.X, zero moments, best = start, no best loss, min.L2 = inf
    for x in ("latent", "noise0"):
        node("Where", [f"fresh{rank[x]}", f"start.{x}", x], [f"{x}_in"])
        node("Where", [f"fresh{rank[x]}", f"start.{x}", f"best.{x}"], [f"best_{x}_in"])
        for mom in ("m", "v"):
            node("Where", [f"fresh{rank[x]}", "zero", f"{mom}.{x}"], [f"{mom}_{x}_in"])
    node("Where", ["fresh", "nan", "best.loss"], ["best_loss_in"])
    node("Where", ["fresh", "inf", "min.L2"], ["min_l2_in"])
    # forward: lr = v Q^T + n0 S0^T + n1 S1^T + q                       [B, 12]
    node("Reshape", ["latent_in", "flat"], ["v2"], allowzero=0)
    node("Reshape", ["noise0_in", "flat"], ["n0"], allowzero=0)
    node("Reshape", ["noise1", "flat"], ["n1"], allowzero=0)
    node("MatMul", ["v2", "QT"], ["lv"])
    node("MatMul", ["n0", "S0T"], ["l0"])
    node("MatMul", ["n1", "S1T"], ["l1"])
    node("Add", ["lv", "l0"], ["s_a"])
    node("Add", ["s_a", "l1"], ["s_b"])
    node("Add", ["s_b", "q"], ["lrimg"])
    node("Reshape", ["target", "flat"], ["yflat"], allowzero=0)
    node("Sub", ["lrimg", "yflat"], ["diff"])  # [B, 12]
    node("Mul", ["diff", "diff"], ["sq"])
    node("ReduceMean", ["sq", "ax1"], ["mse"], keepdims=0)  # [B]
    node("Max", ["mse", "eps"], ["loss.L2"])
    node("Abs", ["diff"], ["ad"])
    node("ReduceMean", ["ad", "ax1"], ["mae"], keepdims=0)
    node("Max", ["mae", "eps"], ["mae_c"])
    node("Mul", ["mae_c", "ten"], ["loss.L1"])
    node("Mul", ["mse", "zero"], ["loss.GEOCROSS"])
    node("Mul", ["loss.L2", "wl2"], ["loss.TOTAL"])
    # best iterate (TrajectoryTracker's rule) and smallest L2, live rows only
    node("Less", ["loss.TOTAL", "best_loss_in"], ["lower"])
    node("IsNaN", ["best_loss_in"], ["no_best"])
    node("IsNaN", ["loss.TOTAL"], ["total_nan"])
    node("Not", ["total_nan"], ["total_num"])
    node("And", ["no_best", "total_num"], ["first"])
    node("Or", ["lower", "first"], ["better"])
    node("And", ["live", "better"], ["improved"])
    node("Unsqueeze", ["improved", "ax12"], ["improved3"])
    node("Unsqueeze", ["improved", "ax123"], ["improved4"])
    node("Where", ["improved", "loss.TOTAL", "best_loss_in"], ["next.best.loss"])
    node("Less", ["loss.L2", "min_l2_in"], ["l2_lower"])
    node("And", ["live", "l2_lower"], ["l2_take"])
    node("Where", ["l2_take", "loss.L2", "min_l2_in"], ["next.min.L2"])
    for x in ("latent", "noise0"):
        node("Where", [f"improved{rank[x]}", f"{x}_in", f"best_{x}_in"], [f"next.best.{x}"])
    # gradient: dTOTAL/dlr = wl2 * [mse > eps] * 2/n * diff                [B, 12]
    node("Greater", ["mse", "eps"], ["active_b"])
    node("Cast", ["active_b"], ["active"], to=TensorProto.FLOAT)
    node("Unsqueeze", ["active", "ax1"], ["active2"])
    node("Mul", ["diff", "active2"], ["gd0"])
    node("Mul", ["gd0", "two_over_n"], ["gd1"])
    node("Mul", ["gd1", "wl2"], ["glr"])
    node("MatMul", ["glr", "Q"], ["gv2"])  # [B, D]
    node("MatMul", ["glr", "S0"], ["gn2"])  # [B, 4]
    node("Reshape", ["gv2", "lat_shape"], ["g.latent"], allowzero=0)
    node("Reshape", ["gn2", "map_shape"], ["g.noise0"], allowzero=0)
    # adam (torch.optim.Adam single-tensor) with per-row lr and t, + sphere projection, per param
    node("Pow", ["b1", "t"], ["b1t"])
    node("Pow", ["b2", "t"], ["b2t"])
    node("Sub", ["one", "b1t"], ["bc1"])
    node("Sub", ["one", "b2t"], ["bc2"])
    node("Sqrt", ["bc2"], ["bc2s_b"])
    node("Div", ["lr", "bc1"], ["stepsize_b"])
    for x, axes in (("latent", "ax2"), ("noise0", "ax123")):
        r = rank[x]
        node("Unsqueeze", ["bc2s_b", "ax12" if r == "3" else "ax123"], [f"{x}_bc2s"])
        node("Unsqueeze", ["stepsize_b", "ax12" if r == "3" else "ax123"], [f"{x}_stepsize"])
        g = f"g.{x}"
        node("Mul", [f"m_{x}_in", "b1"], [f"{x}_m1"])
        node("Mul", [g, "ob1"], [f"{x}_m2"])
        node("Add", [f"{x}_m1", f"{x}_m2"], [f"{x}_mn"])
        node("Mul", [f"v_{x}_in", "b2"], [f"{x}_v1"])
        node("Mul", [g, g], [f"{x}_gg"])
        node("Mul", [f"{x}_gg", "ob2"], [f"{x}_v2"])
        node("Add", [f"{x}_v1", f"{x}_v2"], [f"{x}_vn"])
        node("Sqrt", [f"{x}_vn"], [f"{x}_vs"])
        node("Div", [f"{x}_vs", f"{x}_bc2s"], [f"{x}_vd"])
        node("Add", [f"{x}_vd", "aeps"], [f"{x}_den"])
        node("Div", [f"{x}_mn", f"{x}_den"], [f"{x}_r"])
        node("Mul", [f"{x}_r", f"{x}_stepsize"], [f"{x}_upd"])
        node("Sub", [f"{x}_in", f"{x}_upd"], [f"{x}_new"])
        node("Mul", [f"{x}_new", f"{x}_new"], [f"{x}_sq"])
        node("ReduceSum", [f"{x}_sq", axes], [f"{x}_ss"], keepdims=1)
        node("Add", [f"{x}_ss", "seps"], [f"{x}_ss2"])
        node("Sqrt", [f"{x}_ss2"], [f"{x}_nrm"])
        node("Div", [f"radius.{x}", f"{x}_nrm"], [f"{x}_scale"])
        node("Mul", [f"{x}_new", f"{x}_scale"], [f"{x}_proj"])
        # rows that are not live keep what they had
        node("Where", [f"live{r}", f"{x}_proj", f"{x}_in"], [f"next.{x}"])
        node("Where", [f"live{r}", f"{x}_mn", f"m_{x}_in"], [f"next.m.{x}"])
        node("Where", [f"live{r}", f"{x}_vn", f"v_{x}_in"], [f"next.v.{x}"])

    lat, nmap = ["B", 1, D], ["B", 1, 2, 2]
    state = [("latent", lat), ("noise0", nmap), ("m.latent", lat), ("v.latent", lat), ("m.noise0", nmap),
             ("v.noise0", nmap), ("best.latent", lat), ("best.noise0", nmap), ("best.loss", ["B"]),
             ("min.L2", ["B"])]
    step_in = [("target", ["B", 3, LR, LR]), ("lr", ["B"]), ("t", ["B"])] + state + \
              [("start.latent", lat), ("start.noise0", nmap),
               ("radius.latent", ["B", 1, 1]), ("radius.noise0", ["B", 1, 1, 1]), ("noise1", nmap)]
    step_out = [(f"next.{n}", s) for n, s in state] + [(f"loss.{k}", ["B"]) for k in ("L2", "L1", "GEOCROSS", "TOTAL")]
    graph = helper.make_graph(nodes, "toy_step", [_vi(n, s) for n, s in step_in], [_vi(n, s) for n, s in step_out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="toy")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, out / "step.onnx")

    # render: image = clamp(A v + N0 n0 + N1 n1 + c, 0, 1); lr_image = P image
    rn, ri = [], [_init("AT", a.T), _init("N0T", nmaps[0].T), _init("N1T", nmaps[1].T), _init("c", c), _init("PT", p.T),
                  _init("zero", 0.0), _init("one", 1.0),
                  numpy_helper.from_array(np.array([0, -1], np.int64), "flat"),
                  numpy_helper.from_array(np.array([0, 3, RES, RES], np.int64), "img_shape"),
                  numpy_helper.from_array(np.array([0, 3, LR, LR], np.int64), "lr_shape")]
    for op, ins, outs in (("Reshape", ["latent", "flat"], ["v2"]), ("Reshape", ["noise0", "flat"], ["n0"]),
                          ("Reshape", ["noise1", "flat"], ["n1"]), ("MatMul", ["v2", "AT"], ["iv"]),
                          ("MatMul", ["n0", "N0T"], ["i0"]), ("MatMul", ["n1", "N1T"], ["i1"]),
                          ("Add", ["iv", "i0"], ["ia"]), ("Add", ["ia", "i1"], ["ib"]), ("Add", ["ib", "c"], ["ic"]),
                          ("Clip", ["ic", "zero", "one"], ["iflat"]), ("MatMul", ["iflat", "PT"], ["lflat"]),
                          ("Reshape", ["iflat", "img_shape"], ["image"]), ("Reshape", ["lflat", "lr_shape"], ["lr_image"])):
        rn.append(helper.make_node(op, ins, outs))
    render_in = [("latent", lat), ("noise0", nmap), ("noise1", nmap)]
    render_out = [("image", ["B", 3, RES, RES]), ("lr_image", ["B", 3, LR, LR])]
    rgraph = helper.make_graph(rn, "toy_render", [_vi(n, s) for n, s in render_in], [_vi(n, s) for n, s in render_out], ri)
    rmodel = helper.make_model(rgraph, opset_imports=[helper.make_opsetid("", 18)], producer_name="toy")
    rmodel.ir_version = 8
    onnx.checker.check_model(rmodel)
    onnx.save(rmodel, out / "render.onnx")

    def tinfo(pairs):
        return [{"name": n, "shape": s, "dtype": "float32"} for n, s in pairs]

    manifest = {
        "format": "pulse-trt-artifacts/2",
        "generator": {"name": "toy-linear", "resolution": RES, "latent_dim": D, "num_ws": 1,
                      "noise_shapes": [list(s) for s in NOISE_SHAPES], "has_mapping": False,
                      "value_range": [0.0, 1.0], "channels": 3, "weights_sha256": "toy"},
        "options": opts.to_dict(), "lr_size": LR, "factor": RES // LR, "precision": "fp32", "latent_rows": 1,
        "noise_roles": ["trainable", "frozen", "zero"],
        "state": [{"name": n, "next": f"next.{n}", "shape": s, "dtype": "float32"} for n, s in state],
        "step": {"file": "step.onnx", "inputs": tinfo(step_in), "outputs": tinfo(step_out)},
        "render": {"file": "render.onnx", "inputs": tinfo(render_in), "outputs": tinfo(render_out)},
        "versions": {"pulse_trt": "0.1.0", "torch": None, "onnx": onnx.__version__, "opset": 18},
        "graph_code": hashlib.sha256(b"toy").hexdigest(),
    }
    seal(manifest, out)
    return out


def seal(manifest: dict, out) -> dict:
    """Record the size and sha256 of step.onnx and render.onnx in `manifest` and its key (as the
    exporter does), and write it to out/manifest.json. Returns the manifest."""
    out = Path(out)
    manifest["files"] = {manifest[g]["file"]: file_record(out / manifest[g]["file"]) for g in ("step", "render")}
    manifest["key"] = artifact_key(manifest)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def toy_search_ref(targets: np.ndarray, options: PulseOptions, start_latent, start_noise):
    """The toy search in float64 numpy for B rows: per-step terms {L2, L1, TOTAL} [steps, B] and
    the final state. start_latent [B, 1, D], start_noise [noise0 [B,1,2,2], noise1 [B,1,2,2]]."""
    a, nmaps, c, p = toy_weights()
    q_mat, s0, s1, q_vec = (x.astype(np.float64) for x in (p @ a, p @ nmaps[0], p @ nmaps[1], p @ c))
    b = targets.shape[0]
    y = targets.reshape(b, -1).astype(np.float64)
    v = start_latent.reshape(b, -1).astype(np.float64)
    n0 = start_noise[0].reshape(b, -1).astype(np.float64)
    n1 = start_noise[1].reshape(b, -1).astype(np.float64)
    rv, r0 = np.sqrt((v ** 2).sum(1, keepdims=True) + 1e-9), np.sqrt((n0 ** 2).sum(1, keepdims=True) + 1e-9)
    mv, vv, m0, v0 = (np.zeros_like(x) for x in (v, v, n0, n0))
    eps, wl2 = options.eps, options.loss_weights.get("L2", 0.0)
    hist = {"L2": [], "L1": [], "TOTAL": []}
    for j in range(options.steps):
        lr, t = options.lr_at(j), j + 1
        diff = v @ q_mat.T + n0 @ s0.T + n1 @ s1.T + q_vec - y
        mse = (diff ** 2).mean(1)
        hist["L2"].append(np.maximum(mse, eps))
        hist["L1"].append(10 * np.maximum(np.abs(diff).mean(1), eps))
        hist["TOTAL"].append(wl2 * np.maximum(mse, eps))
        glr = wl2 * (mse > eps)[:, None] * 2.0 / diff.shape[1] * diff
        new = []
        for x, g, m, s, r in ((v, glr @ q_mat, mv, vv, rv), (n0, glr @ s0, m0, v0, r0)):
            m[:] = 0.9 * m + 0.1 * g
            s[:] = 0.999 * s + 0.001 * g * g
            den = np.sqrt(s) / np.sqrt(1 - 0.999 ** t) + 1e-8
            x = x - lr / (1 - 0.9 ** t) * m / den
            new.append(x * r / np.sqrt((x ** 2).sum(1, keepdims=True) + 1e-9))
        v, n0 = new
    return {k: np.array(h) for k, h in hist.items()}, v, n0
