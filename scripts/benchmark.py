"""Benchmarks of sarlulc against the models a user would use instead, side by side in one process.

    python scripts/benchmark.py pretrain   # SAR-W-MixMAE step vs SimMIM (Swin) and MAE (ViT); encoder vs SwinModel
    python scripts/benchmark.py pretrain --profile 25   # + both steps' operators and the targets' time budget
    python scripts/benchmark.py segment    # SarLulc all refinements on / off vs UperNet on a Swin backbone
    python scripts/benchmark.py scene      # predict_scene on a synthetic scene vs the bare model on preloaded tiles
    python scripts/benchmark.py scene --scenes 4 --scene-size 4096 --format cog   # a multi-scene job
    python scripts/benchmark.py data       # mosaic tile reads: open + calibrate + mask vs bare rasterio window reads
    python scripts/benchmark.py all --json results.json

Method: every candidate is warmed up, then the candidates run in interleaved rounds (A B C, A B C, ...), so that a
slow phase of a shared machine hits all of them; we report the median time per call with min and max, the per-image
throughput, the ratio to the peer, FLOPs per image (analytic for ours, `FlopCounterMode` for the peers, both with
eager attention, since PyTorch's flop counter does not see its CPU flash-attention kernel) and the achieved FLOP/s.
`pretrain` also times a dense square matmul of the run's dtype in the same rounds (fp32 on the CPU, with the same
threads) and reports each model's achieved FLOP/s as a fraction of that measured peak (on CUDA: the model FLOP
utilization, MFU); `--profile N` prints the N operators that take most of our training step's time and of SimMIM's,
then what the pretraining targets (BENCHMARKS.md) leave for everything but our matrix products. `segment` reports
MFU on CUDA against the device's bf16 matmul peak. BENCHMARKS.md explains the comparisons and records the latest
figures.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import (
    SwinConfig,
    SwinForMaskedImageModeling,
    SwinModel,
    UperNetConfig,
    UperNetForSemanticSegmentation,
    ViTMAEConfig,
    ViTMAEForPreTraining,
)

import sarlulc
from sarlulc import LULC_9, SarLulcConfig, SarLulcForSemanticSegmentation, SarMixMAEConfig, SarMixMAEForPreTraining
from sarlulc.flops import pretraining_flops, segmentation_flops
from sarlulc.models.image_processing_sar import SarImageProcessor
from sarlulc.models.modeling_sar_mixmae import SarMixMAEModel, random_mixing_mask

# Encoder dimensions of the compared models. The decoder widths are those of docs/method.md, section 2 (tiny: 128/2/4, base: 512/8/16).
DIMS = {
    "tiny": dict(embed_dim=48, depths=[1, 1, 2, 1], num_heads=[2, 4, 8, 16], decoder=(128, 2, 4), seg_hidden=128),
    "base": dict(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], decoder=(512, 8, 16), seg_hidden=512),
}
SIMMIM_MASK_RATIO = 0.6
MAE_MASK_RATIO = 0.75


# ---------------------------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    seconds: float  # median per call
    seconds_min: float
    seconds_max: float
    items: int  # images (tiles) per call
    flops_per_item: float | None = None
    notes: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.items / self.seconds


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(calls: dict[str, Callable[[], None]], device, warmup: int, repeats: int) -> dict[str, list[float]]:
    for call in calls.values():
        for _ in range(warmup):
            call()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            synchronize(device)
            start = time.perf_counter()
            call()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def autocast(device: torch.device, dtype: str):
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def measured_flops(model: torch.nn.Module, call: Callable[[torch.nn.Module], None]) -> int:
    """FLOPs of one `call(model)` by PyTorch's counter, on an eager-attention copy (see the module docstring)."""
    counted = copy.deepcopy(model).float().cpu()
    config = counted.config
    config._attn_implementation = "eager"
    with FlopCounterMode(display=False) as counter:
        call(counted)
    return counter.get_total_flops()


def matmul_peak_flops(device: torch.device) -> float | None:
    """Measured bf16 dense matmul FLOP/s of this GPU (the MFU denominator); None on CPU."""
    if device.type != "cuda":
        return None
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    repeats = 20
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


PEAK_CALL = "dense matmul (peak)"


def matmul_peak_call(device: torch.device, dtype: str) -> tuple[Callable[[], None], int, str]:
    """A dense square matmul of the run's dtype to time beside the models: the call, its FLOPs, a description.

    Timed in the same interleaved rounds, it meets the same contention as the models on a shared machine, so the
    fraction of peak compares like with like (a peak measured apart, at a quiet moment, would not).
    """
    n = 8192 if device.type == "cuda" else 2048
    dtype_ = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype_)
    b = torch.randn(n, n, device=device, dtype=dtype_)

    def call():
        torch.mm(a, b)

    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    return call, 2 * n**3, f"{dtype} {n}x{n} @ {n}x{n} matmul on {device.type}{threads}"


def summarize(times: dict[str, list[float]], items: int, flops: dict[str, float | None], notes: dict[str, str]):
    return [
        Result(
            name=name,
            seconds=statistics.median(values),
            seconds_min=min(values),
            seconds_max=max(values),
            items=items,
            flops_per_item=flops.get(name),
            notes=notes.get(name, ""),
        )
        for name, values in times.items()
    ]


def print_table(
    title: str, results: list[Result], reference: str, peak: float | None, unit: str = "img/s", peak_label: str = "MFU"
) -> None:
    ref = next(r for r in results if r.name == reference)
    print(f"\n## {title}")
    print(f"(ratio = this model's {unit} / those of {reference}; min and max over the rounds)")
    header = f"| {'model':<44} | {unit:>8} | {'min':>7} | {'max':>7} | {'ratio':>8} | GFLOP/item | TFLOP/s |"
    if peak:
        header += f" {peak_label} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for r in results:
        achieved = r.flops_per_item * r.throughput / 1e12 if r.flops_per_item else None
        row = (
            f"| {r.name:<44} | {r.throughput:8.2f} | {r.items / r.seconds_max:7.2f} | {r.items / r.seconds_min:7.2f} "
            f"| {ref.seconds / r.seconds:7.3f}x | "
            f"{(r.flops_per_item or float('nan')) / 1e9:10.2f} | {achieved if achieved else float('nan'):7.3f} |"
        )
        if peak:
            row += f" {100 * achieved * 1e12 / peak:3.0f}% |" if achieved else "   - |"
        print(row)
    for r in results:
        if r.notes:
            print(f"- {r.name}: {r.notes}")


def maybe_compile(model, enabled: bool):
    return torch.compile(model) if enabled else model


def optimizer_for(model, device):
    # Fused AdamW (one kernel over all parameters; PyTorch has it on CUDA and on the CPU), the same optimizer for every
    # candidate. On a 2-core CPU the per-parameter loop of the default AdamW costs 2-5% of a tiny model's step.
    return torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type in ("cuda", "cpu"))


# ---------------------------------------------------------------------------------------------------------------------
# pretrain
# ---------------------------------------------------------------------------------------------------------------------


def bench_pretrain(args) -> list[Result]:
    device = torch.device(args.device)
    dims = DIMS[args.dims]
    batch, size, window = args.batch_size, args.image_size, args.window
    decoder_dim, decoder_depth, decoder_heads = dims["decoder"]
    encoder = dict(embed_dim=dims["embed_dim"], depths=dims["depths"], num_heads=dims["num_heads"])
    ours_config = SarMixMAEConfig(
        image_size=size,
        window_size=window,
        decoder_embed_dim=decoder_dim,
        decoder_depth=decoder_depth,
        decoder_num_heads=decoder_heads,
        **encoder,
    )
    swin_config = SwinConfig(image_size=size, num_channels=1, window_size=window, encoder_stride=32, **encoder)
    stage3 = dims["embed_dim"] * 4
    mae_config = ViTMAEConfig(
        image_size=size,
        patch_size=16,
        num_channels=1,
        hidden_size=stage3,
        num_hidden_layers=sum(dims["depths"]),
        num_attention_heads=dims["num_heads"][2],
        intermediate_size=4 * stage3,
        decoder_hidden_size=decoder_dim,
        decoder_num_hidden_layers=decoder_depth,
        decoder_num_attention_heads=decoder_heads,
        decoder_intermediate_size=4 * decoder_dim,
        mask_ratio=MAE_MASK_RATIO,
        norm_pix_loss=True,
    )
    torch.manual_seed(0)
    pixels = torch.randn(batch, 1, size, size, device=device)
    # The clipped dB that the default processor standardizes into `pixels`: ours weights its loss with it.
    processor = SarImageProcessor()
    backscatter_db = (pixels * processor.image_std[0] + processor.image_mean[0]).clamp(*processor.clip_db)
    units = size // 32

    def simmim_mask():
        keep = torch.rand(batch, units * units, device=device).argsort(1) < round(SIMMIM_MASK_RATIO * units * units)
        factor = size // 4 // units
        return keep.view(batch, units, units).repeat_interleave(factor, 1).repeat_interleave(factor, 2).flatten(1)

    models = {
        "SAR-W-MixMAE (ours)": (
            SarMixMAEForPreTraining(ours_config),
            lambda: dict(pixel_values=pixels, backscatter_db=backscatter_db),
        ),
        "SimMIM (transformers Swin)": (
            SwinForMaskedImageModeling(swin_config),
            lambda: dict(pixel_values=pixels, bool_masked_pos=simmim_mask()),
        ),
        "MAE (transformers ViT)": (ViTMAEForPreTraining(mae_config), lambda: dict(pixel_values=pixels)),
    }
    mask = random_mixing_mask((units, units), 0.5, device=device)
    encoders = {
        "encoder: ours, group-masked": (
            SarMixMAEModel(ours_config),
            lambda: dict(pixel_values=pixels, mixing_mask=mask, attention_group_mask=mask),
        ),
        "encoder: transformers SwinModel": (
            SwinModel(swin_config, add_pooling_layer=False),
            lambda: dict(pixel_values=pixels),
        ),
    }

    def train_step(model, inputs, loss_of):
        model = model.to(device).train()
        compiled = maybe_compile(model, args.compile)
        optimizer = optimizer_for(model, device)

        def step():
            with autocast(device, args.dtype):
                loss = loss_of(compiled(**inputs()))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return step

    def flops_of(model, inputs, loss_of):
        def call(m):
            cpu_inputs = {k: v.cpu() if torch.is_tensor(v) else v for k, v in inputs().items()}
            loss_of(m.train()(**cpu_inputs)).backward()

        return measured_flops(model, call)

    model_loss = lambda out: out.loss  # noqa: E731
    encoder_loss = lambda out: out.last_hidden_state.float().pow(2).mean()  # noqa: E731
    calls = {name: train_step(m, inp, model_loss) for name, (m, inp) in models.items()}
    calls.update({name: train_step(m, inp, encoder_loss) for name, (m, inp) in encoders.items()})
    peak_call, peak_flops_per_call, peak_description = matmul_peak_call(device, args.dtype)
    calls[PEAK_CALL] = peak_call
    times = interleaved(calls, device, args.warmup, args.repeats)
    peak_times = times.pop(PEAK_CALL)
    peak = peak_flops_per_call / statistics.median(peak_times)

    flops = {"SAR-W-MixMAE (ours)": pretraining_flops(ours_config, 1, size, size).training}
    flops["SimMIM (transformers Swin)"] = flops_of(*models["SimMIM (transformers Swin)"], model_loss) / batch
    flops["MAE (transformers ViT)"] = flops_of(*models["MAE (transformers ViT)"], model_loss) / batch
    for name, (m, inp) in encoders.items():
        flops[name] = flops_of(m, inp, encoder_loss) / batch
    notes = {
        "SAR-W-MixMAE (ours)": f"mask ratio 0.5 mixed with the reversed batch, {args.dims} dims, window {window}",
        "SimMIM (transformers Swin)": f"{SIMMIM_MASK_RATIO:.0%} masking in 32 px units, same encoder dims and window",
        "MAE (transformers ViT)": (
            f"not equal dims: ViT is not hierarchical; patch 16, width {stage3} (our stage 3), "
            f"{sum(dims['depths'])} blocks, {MAE_MASK_RATIO:.0%} masking, our decoder widths"
        ),
    }
    results = summarize(times, batch, flops, notes)
    for result in results:
        result.extra["matmul_peak_flops"] = peak
        result.extra["fraction_of_peak"] = result.flops_per_item * result.throughput / peak
    label = "MFU" if device.type == "cuda" else "of peak"
    print(
        f"\nmeasured peak: {peak / 1e9:.1f} GFLOP/s ({peak_description}, median of the same {args.repeats} interleaved "
        f"rounds; best {peak_flops_per_call / min(peak_times) / 1e9:.1f})"
    )
    print_table(
        f"pretrain: training step (forward + backward + fused AdamW), batch {batch}, {size}x{size}x1, {args.device}, "
        f"{args.dtype}{', torch.compile' if args.compile else ''}",
        results[: len(models)],
        "SimMIM (transformers Swin)",
        peak,
        peak_label=label,
    )
    print_table(
        "encoder alone: forward + backward + fused AdamW",
        results[len(models) :],
        "encoder: transformers SwinModel",
        peak,
        peak_label=label,
    )
    if args.profile:
        cpu_peak = peak if device.type == "cpu" else None
        ours = profile_step("SAR-W-MixMAE (ours)", calls["SAR-W-MixMAE (ours)"], args.profile, cpu_peak)
        peer = profile_step("SimMIM (transformers Swin)", calls["SimMIM (transformers Swin)"], args.profile, cpu_peak)
        by_name = {result.name: result for result in results}
        ours_result, peer_result = by_name["SAR-W-MixMAE (ours)"], by_name["SimMIM (transformers Swin)"]
        ours_result.extra["profile"] = asdict(ours)
        peer_result.extra["profile"] = asdict(peer)
        if device.type == "cpu":  # the targets are CPU targets, and the profile's self CPU time is the CPU's time
            budget = target_budget(ours_result, peer_result, ours, peak)
            print_budget(budget, ours_result.name, peer_result.name)
            ours_result.extra["target_budget"] = budget
    return results


def matrix_product_flops(name: str, shapes: list) -> int:
    """FLOPs of one call of a matrix-product operator from its recorded input shapes (2 per multiply-add)."""
    if name == "aten::mm":
        (m, k), (_, n) = shapes[0], shapes[1]
        return 2 * m * k * n
    if name == "aten::addmm":
        (m, k), (_, n) = shapes[1], shapes[2]
        return 2 * m * k * n
    if name == "aten::bmm":
        (b, m, k), (_, _, n) = shapes[0], shapes[1]
        return 2 * b * m * k * n
    (b, m, k), (_, _, n) = shapes[1], shapes[2]  # aten::baddbmm
    return 2 * b * m * k * n


@dataclass
class StepProfile:
    """One model's training step under torch.profiler, per step (the mean over the profiled steps).

    `step_ms` is the sum of every operator's self CPU time, `products_ms` that of the matrix products
    (`MATRIX_PRODUCTS`), `products_flops` their FLOPs from the recorded input shapes.
    """

    name: str
    step_ms: float
    products_ms: float
    products_flops: float


MATRIX_PRODUCTS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")

# The pretraining targets of BENCHMARKS.md ("Targets"): our step per image against SimMIM's at equal encoder dims and
# windows, and the fraction of the measured fp32 matmul peak that our step reaches.
TARGET_SPEEDUP_OVER_SIMMIM = 1.15
TARGET_FRACTION_OF_PEAK = 0.70


def profile_step(name: str, step: Callable[[], None], rows: int, peak: float | None = None) -> StepProfile:
    """Where a training step's time goes: torch.profiler's operators by self time, over three steps.

    With `peak`, also the matrix products' own speed (their FLOPs from the recorded shapes over their self time) as a
    fraction of it: the fraction of peak the whole step would reach if everything else took no time, an upper bound
    on what removing elementwise work and copies can achieve.
    """
    from torch.profiler import ProfilerActivity, profile

    steps = 3
    step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities, record_shapes=True) as recorded:
        for _ in range(steps):
            step()
    by_shape = recorded.key_averages(group_by_input_shape=True)
    product_time = sum(event.self_cpu_time_total for event in by_shape if event.key in MATRIX_PRODUCTS)
    product_flops = sum(
        matrix_product_flops(event.key, event.input_shapes) * event.count
        for event in by_shape
        if event.key in MATRIX_PRODUCTS
    )
    events = recorded.key_averages()
    total = sum(event.self_cpu_time_total for event in events)
    print(f"\n## profile: {name}, one training step, {rows} operators by self CPU time")
    print(
        f"(matrix products {', '.join(MATRIX_PRODUCTS)}: {100 * product_time / total:.1f}% of the step's self CPU time)"
    )
    if peak and product_time:
        speed = product_flops / (product_time / 1e6)
        print(
            f"(the matrix products alone run at {speed / 1e9:.1f} GFLOP/s = {100 * speed / peak:.0f}% of the measured "
            "peak: the step's fraction of peak if everything else took no time)"
        )
    print("operator | share | ms per step | calls per step")
    print("---|---:|---:|---:")
    for event in sorted(events, key=lambda e: -e.self_cpu_time_total)[:rows]:
        print(
            f"{event.key[:60]} | {100 * event.self_cpu_time_total / total:.1f}% | "
            f"{event.self_cpu_time_total / 1e3 / steps:.1f} | {event.count / steps:g}"
        )
    return StepProfile(name, total / 1e3 / steps, product_time / 1e3 / steps, product_flops / steps)


def target_budget(
    ours: Result,
    peer: Result,
    ours_profile: StepProfile,
    peak: float,
    speedup: float = TARGET_SPEEDUP_OVER_SIMMIM,
    fraction: float = TARGET_FRACTION_OF_PEAK,
) -> dict[str, float]:
    """What each pretraining target leaves for everything but our matrix products, in ms per step.

    The steps are the timed medians of the interleaved rounds (`ours.seconds`, `peer.seconds`: one batch each); the
    profile only says which share of our step the matrix products take. A step of our FLOPs at `fraction` of `peak`
    takes `flops / (fraction * peak)`; a step `speedup` times faster than the peer's (same batch, so per image too)
    takes `peer.seconds / speedup`. Our matrix products take their share of either, whatever else is optimized (their
    speed depends on their shapes, not on the code around them), so everything else must fit in the difference.
    """
    step_ms = 1e3 * ours.seconds
    products_ms = step_ms * ours_profile.products_ms / ours_profile.step_ms
    step_at_fraction = 1e3 * ours.flops_per_item * ours.items / (fraction * peak)
    step_at_speedup = 1e3 * peer.seconds / speedup
    return {
        "speedup_target": speedup,
        "fraction_target": fraction,
        "step_ms": step_ms,
        "peer_step_ms": 1e3 * peer.seconds,
        "products_ms": products_ms,
        "products_fraction_of_peak": ours_profile.products_flops / (ours_profile.products_ms / 1e3) / peak,
        "rest_ms": step_ms - products_ms,
        "step_ms_at_fraction": step_at_fraction,
        "rest_budget_ms_at_fraction": step_at_fraction - products_ms,
        "step_ms_at_speedup": step_at_speedup,
        "rest_budget_ms_at_speedup": step_at_speedup - products_ms,
    }


def print_budget(budget: dict[str, float], ours: str, peer: str) -> None:
    """Print [`target_budget`]'s figures: our step split in two, then one line per target."""

    def leaves(allowed: float) -> str:
        if allowed <= 0:
            return "leaving no time for everything else: the matrix products alone take longer"
        rest = budget["rest_ms"]
        return f"leaving {allowed:.1f} ms for everything else, which takes {rest:.1f} ms ({rest / allowed:.2f}x that)"

    print("\n## what the pretraining targets leave for everything but the matrix products (ms per step)")
    print(
        f"{ours}: step {budget['step_ms']:.1f} ms (timed median) = matrix products {budget['products_ms']:.1f} ms "
        f"(their profiled share; at {budget['products_fraction_of_peak']:.0%} of the measured peak) "
        f"+ everything else {budget['rest_ms']:.1f} ms"
    )
    print(
        f">= {budget['fraction_target']:.0%} of the measured peak: a step of <= {budget['step_ms_at_fraction']:.1f} ms, "
        f"{leaves(budget['rest_budget_ms_at_fraction'])}"
    )
    print(
        f">= {budget['speedup_target']:.2f}x {peer} (its step {budget['peer_step_ms']:.1f} ms): a step of "
        f"<= {budget['step_ms_at_speedup']:.1f} ms, {leaves(budget['rest_budget_ms_at_speedup'])}"
    )


# ---------------------------------------------------------------------------------------------------------------------
# segment
# ---------------------------------------------------------------------------------------------------------------------


def bench_segment(args) -> list[Result]:
    results = []
    for dims_name in args.dims.split(","):
        results.extend(_segment_at(args, dims_name))
    return results


def _segment_model(args, dims_name: str, highres: bool, refine: bool) -> SarLulcForSemanticSegmentation:
    dims = DIMS[dims_name]
    encoder = dict(embed_dim=dims["embed_dim"], depths=dims["depths"], num_heads=dims["num_heads"])
    widths = dict(highres_channels=32, refine_channels=(32, 16)) if dims_name == "base" else {}
    config = SarLulcConfig(
        backbone_config=SarMixMAEConfig(image_size=args.image_size, window_size=args.window, **encoder),
        decoder_hidden_size=dims["seg_hidden"],
        use_highres_injection=highres,
        use_refine_up_head=refine,
        id2label=LULC_9.id2label,
        label2id=LULC_9.label2id,
        **widths,
    )
    return SarLulcForSemanticSegmentation(config)


def _segment_at(args, dims_name: str) -> list[Result]:
    device = torch.device(args.device)
    dims = DIMS[dims_name]
    batch, size, hidden = args.batch_size, args.image_size, dims["seg_hidden"]
    swin = SwinConfig(
        image_size=size,
        num_channels=1,
        window_size=args.window,
        out_features=["stage1", "stage2", "stage3", "stage4"],
        embed_dim=dims["embed_dim"],
        depths=dims["depths"],
        num_heads=dims["num_heads"],
    )
    upernet = UperNetForSemanticSegmentation(
        UperNetConfig(backbone_config=swin, hidden_size=hidden, use_auxiliary_head=False, num_labels=9)
    )
    on, off, peer = (
        f"[{dims_name}] SarLulc, refinements on (ours)",
        f"[{dims_name}] SarLulc, refinements off (ours)",
        f"[{dims_name}] UperNet + Swin (transformers)",
    )
    models = {
        on: _segment_model(args, dims_name, True, True),
        off: _segment_model(args, dims_name, False, False),
        peer: upernet,
    }
    if args.each_refinement:  # what each switch costs on its own
        models[f"[{dims_name}] SarLulc, high-res injection only"] = _segment_model(args, dims_name, True, False)
        models[f"[{dims_name}] SarLulc, refine-up head only"] = _segment_model(args, dims_name, False, True)
    torch.manual_seed(0)
    pixels = torch.randn(batch, 1, size, size, device=device)

    def forward(model):
        model = maybe_compile(model.to(device).eval(), args.compile)

        def call():
            with torch.inference_mode(), autocast(device, args.dtype):
                model(pixel_values=pixels)

        return call

    def upernet_call(model):
        with torch.no_grad():
            model.eval()(pixel_values=pixels[:1].cpu())

    times = interleaved({name: forward(m) for name, m in models.items()}, device, args.warmup, args.repeats)
    flops = {
        name: segmentation_flops(model.config, 1, size, size).forward for name, model in models.items() if name != peer
    }
    flops[peer] = measured_flops(upernet, upernet_call)
    notes = {
        peer: f"same encoder dims, window {args.window}, decoder width {hidden}, no auxiliary head",
        on: "high-res injection + refine-up head (alpha only changes training)",
    }
    results = summarize(times, batch, flops, notes)
    print_table(
        f"segment [{dims_name}]: forward, batch {batch}, {size}x{size}x1, {args.device}, {args.dtype}"
        f"{', torch.compile' if args.compile else ''}",
        results,
        peer,
        matmul_peak_flops(device),
        unit="tiles/s",
    )
    seconds = {result.name: result.seconds for result in results}
    for name in models:
        if name not in (off, peer):
            print(f"- {name.split(', ', 1)[1]}: {100 * (seconds[name] / seconds[off] - 1):+.1f}% time over all-off")
    return results


# ---------------------------------------------------------------------------------------------------------------------
# scene
# ---------------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_transformers():
    """Hide transformers' progress bars (the checkpoint is written between the benchmark's tables)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()


SCENE_WORKER = r"""
import json, resource, sys, time, torch
from sarlulc.inference import predict_scene
args = json.loads(sys.argv[1])
report = predict_scene(args["checkpoint"], args["scene"], args["out"], tile=args["tile"], overlap=args["overlap"],
                       batch_size=args["batch_size"], device=args["device"], progress=False)
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"report": {k: (v if isinstance(v, (int, float, str)) else str(v)) for k, v in vars(report).items()},
                  "peak_rss_mb": peak_kb / 1024}))
"""


JOB_WORKER = r"""
import json, resource, sys, threading, time
from sarlulc.inference.jobs import predict_scenes
args = json.loads(sys.argv[1])
peak = [0]
def sample():  # VmRSS over time: where the peak happens, not only its size
    while True:
        with open("/proc/self/status") as status:
            kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))
        peak[0] = max(peak[0], kb)
        time.sleep(0.2)
threading.Thread(target=sample, daemon=True).start()
job = predict_scenes(args["checkpoint"], args["inputs"], args["out"], output_format=args["format"], tile=args["tile"],
                     overlap=args["overlap"], batch_size=args["batch_size"], device=args["device"], progress=False)
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"tiles": sum(o.tiles for o in job.outcomes), "seconds_total": job.seconds_total,
                  "seconds_cog": job.seconds_cog, "failed": len(job.failed), "peak_rss_mb": peak_kb / 1024}))
"""


def bench_job(args, work: str, scene: str, checkpoint: str) -> dict:
    """A multi-scene job (``--scenes N``): N copies of the scene through ``predict_scenes`` in a fresh process."""
    inputs = []
    for index in range(args.scenes):
        copy = os.path.join(work, "scenes", f"scene_{index}.tif")
        os.makedirs(os.path.dirname(copy), exist_ok=True)
        os.link(scene, copy)
        inputs.append(copy)
    payload = dict(
        checkpoint=checkpoint,
        inputs=inputs,
        out=os.path.join(work, "maps"),
        format=args.format,
        tile=args.tile,
        overlap=args.overlap,
        batch_size=args.batch_size,
        device=args.device,
    )
    done = subprocess.run(
        [sys.executable, "-c", JOB_WORKER, json.dumps(payload)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"the job failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_scene(args) -> list[Result]:
    """`predict_scene` in a fresh process (for its peak RSS) vs the bare model on preloaded tiles of the same size."""
    from sarlulc.data.synthetic import generate_scene
    from sarlulc.models.image_processing_sar import SarImageProcessor

    device = torch.device(args.device)
    results = []
    with tempfile.TemporaryDirectory(prefix="sarlulc-bench-") as work:
        print(f"\nwriting a {args.scene_size} x {args.scene_size} synthetic scene ...", flush=True)
        scene = str(generate_scene(os.path.join(work, "scene"), args.scene_size, seed=0, progress=False).scene)
        dims = DIMS[args.dims]
        config = SarLulcConfig(
            backbone_config=SarMixMAEConfig(
                embed_dim=dims["embed_dim"], depths=dims["depths"], num_heads=dims["num_heads"]
            ),
            decoder_hidden_size=dims["seg_hidden"],
            id2label=LULC_9.id2label,
            label2id=LULC_9.label2id,
        )
        torch.manual_seed(0)
        model = SarLulcForSemanticSegmentation(config).eval()
        checkpoint = os.path.join(work, "checkpoint")
        with _quiet_transformers():
            model.save_pretrained(checkpoint)
        SarImageProcessor(input_kind="dn").save_pretrained(checkpoint)

        job = bench_job(args, work, scene, checkpoint) if args.scenes else None
        runs = {}
        for overlap in (0, args.overlap) if not args.scenes else ():
            payload = dict(
                checkpoint=checkpoint,
                scene=scene,
                out=os.path.join(work, f"map_{overlap}.tif"),
                tile=args.tile,
                overlap=overlap,
                batch_size=args.batch_size,
                device=args.device,
            )
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-c", SCENE_WORKER, json.dumps(payload)], capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                raise RuntimeError(f"predict_scene failed:\n{done.stderr[-3000:]}")
            runs[overlap] = (json.loads(done.stdout.strip().splitlines()[-1]), time.perf_counter() - start)

        # the bare model on as many preloaded tiles as the default-overlap run (or the job) processed
        if job is not None:
            tiles_run = job["tiles"]
            batch_size = args.batch_size or (2 if device.type == "cpu" else 8)  # predict_scene's defaults
        else:
            report, _ = runs[args.overlap]
            tiles_run = int(report["report"]["tiles"])
            batch_size = int(report["report"]["batch_size"])  # predict_scene's default for the device unless given
        tiles = torch.randn(batch_size, 1, args.tile, args.tile, device=device)
        model = model.to(device)
        batches = -(-tiles_run // batch_size)

        def bare():
            with torch.inference_mode():
                for _ in range(batches):
                    model(pixel_values=tiles)

        start = time.perf_counter()
        bare()
        bare_seconds = time.perf_counter() - start

    tile_area = args.tile * args.tile
    pure = batches * batch_size * tile_area / bare_seconds
    print(f"\n## scene: {args.scene_size} x {args.scene_size}, tile {args.tile}, batch {batch_size}, {args.device}")
    print("| run | tiles | seconds | model-processed px/s | vs bare model | output px/s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| bare model, preloaded tiles | {batches * batch_size} | {bare_seconds:.1f} | {pure:,.0f} | 1.000x | - | - |"
    )
    for overlap, (run, _) in runs.items():
        rep = run["report"]
        seconds = float(rep["seconds_total"])
        processed = int(rep["tiles"]) * tile_area / seconds
        output = args.scene_size**2 / seconds
        print(
            f"| predict_scene, overlap {overlap} | {rep['tiles']} | {seconds:.1f} | {processed:,.0f} | "
            f"{processed / pure:.3f}x | {output:,.0f} | {run['peak_rss_mb']:.0f} |"
        )
        results.append(
            Result(
                name=f"predict_scene overlap {overlap}",
                seconds=seconds,
                seconds_min=seconds,
                seconds_max=seconds,
                items=int(rep["tiles"]),
                extra={
                    "model_processed_px_per_s": processed,
                    "ratio_to_bare_model": processed / pure,
                    "output_px_per_s": output,
                    "peak_rss_mb": run["peak_rss_mb"],
                },
            )
        )
    if job is not None:
        seconds = job["seconds_total"]
        processed = job["tiles"] * tile_area / seconds
        print(
            f"| job: {args.scenes} scenes, {args.format}, overlap {args.overlap} | {job['tiles']} | {seconds:.1f} | "
            f"{processed:,.0f} | {processed / pure:.3f}x | {args.scenes * args.scene_size**2 / seconds:,.0f} | "
            f"{job['peak_rss_mb']:.0f} |"
        )
        print(f"\nCOG finalization: {job['seconds_cog']:.1f} s = {job['seconds_cog'] / seconds:.1%} of the job")
        japan_hours = 131 * 12000**2 / (args.scenes * args.scene_size**2 / seconds) / 3600
        print(f"time to map Japan (131 x 12,000^2 px) at this job's output rate: {japan_hours:.1f} h")
        results.append(
            Result(
                name=f"job {args.scenes} scenes {args.format}",
                seconds=seconds,
                seconds_min=seconds,
                seconds_max=seconds,
                items=job["tiles"],
                extra={
                    "model_processed_px_per_s": processed,
                    "ratio_to_bare_model": processed / pure,
                    "cog_share": job["seconds_cog"] / seconds,
                    "peak_rss_mb": job["peak_rss_mb"],
                    "japan_hours": japan_hours,
                },
            )
        )
    results.append(Result("bare model", bare_seconds, bare_seconds, bare_seconds, batches * batch_size))
    return results


# ---------------------------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------------------------


MAPPED_BARE = "bare rasterio, extracted, memory-mapped"
MAPPED_READS = "bare reads, extracted, memory-mapped"


def bench_data(args) -> list[Result]:
    """A 25 m mosaic tile read window by window: opening it and reading every window calibrated and masked
    (``open_scene`` + ``read_db``: HH and HV in dB, validity from the mask file) through ``/vsitar/`` inside the
    ``.tar.gz`` and from the extracted GeoTIFFs, next to bare rasterio reads of the same windows of the same three files
    (HH, HV, mask: the same bytes decoded, nothing calibrated), with GDAL's defaults and, for the extracted files, also
    memory-mapped as ``open_scene`` reads them (``GTIFF_VIRTUAL_MEM_IO``). A second table times the reads alone, on
    files opened beforehand."""
    import rasterio
    from rasterio.windows import Window

    from sarlulc.data import open_scene
    from sarlulc.data.synthetic_products import generate_product

    size, side = args.mosaic_size, args.data_window
    windows = [Window(col, row, side, side) for row in range(0, size, side) for col in range(0, size, side)]
    with tempfile.TemporaryDirectory(prefix="sarlulc-bench-") as work:
        print(
            f"\nwriting a {size} x {size} synthetic mosaic tile (HH, HV, mask, date, linci) and its archive ...",
            flush=True,
        )
        product = generate_product(work, "mosaic", size=size, seed=0, progress=False)
        stem = product.product_id.rsplit("_", 1)[0] if product.product_id.count("_") > 1 else product.product_id
        layers = [f"{stem}_sl_{layer}_F02DAR.tif" for layer in ("HH", "HV", "mask")]
        sources = {
            "/vsitar/": (str(product.path), [f"/vsitar/{product.path}/{name}" for name in layers]),
            "extracted": (str(product.extracted), [str(product.extracted / name) for name in layers]),
        }

        def calibrated(path):
            def call():
                with open_scene(path) as scene:
                    for window in windows:
                        scene.read_db(window)

            return call

        def bare(paths, **options):
            def call():
                with rasterio.Env(**options):  # GDAL reads GTIFF_VIRTUAL_MEM_IO when a file is opened
                    datasets = [rasterio.open(path) for path in paths]
                for window in windows:
                    for dataset in datasets:
                        dataset.read(1, window=window)
                for dataset in datasets:
                    dataset.close()

            return call

        calls, reads, handles = {}, {}, []
        for where, (product_path, paths) in sources.items():
            calls[f"open_scene + read_db, {where}"] = calibrated(product_path)
            calls[f"bare rasterio, {where}"] = bare(paths)
        # open_scene memory-maps uncompressed GeoTIFFs (GDAL's GTIFF_VIRTUAL_MEM_IO): the bare reads with the same
        # setting show what the calibration costs next to the fastest raw read of the extracted files.
        mapped = {"GTIFF_VIRTUAL_MEM_IO": "IF_ENOUGH_RAM"}
        calls[MAPPED_BARE] = bare(sources["extracted"][1], **mapped)
        # GDAL writes a .properties index next to a .gz it scanned unless told not to: the bare reads leave nothing either.
        # A block cache far smaller than the tile makes every round decode its windows again, as a pass over a tile
        # (tiling, prediction) does, instead of copying blocks that the previous round left in GDAL's cache.
        with rasterio.Env(CPL_VSIL_GZIP_WRITE_PROPERTIES="NO", GDAL_CACHEMAX=args.gdal_cache_mb * 2**20):
            times = interleaved(calls, torch.device("cpu"), args.warmup, args.repeats)
            for where, (product_path, paths) in sources.items():
                scene = open_scene(product_path)
                datasets = [rasterio.open(path) for path in paths]
                handles += [scene, *datasets]
                reads[f"read_db, {where}"] = lambda scene=scene: [scene.read_db(w) for w in windows]
                reads[f"bare reads, {where}"] = lambda datasets=datasets: [
                    d.read(1, window=w) for w in windows for d in datasets
                ]
            with rasterio.Env(**mapped):
                datasets = [rasterio.open(path) for path in sources["extracted"][1]]
            handles += datasets
            reads[MAPPED_READS] = lambda datasets=datasets: [d.read(1, window=w) for w in windows for d in datasets]
            read_times = interleaved(reads, torch.device("cpu"), args.warmup, args.repeats)
            for handle in handles:
                handle.close()
    results = summarize(times, len(windows), {}, {})
    read_results = summarize(read_times, len(windows), {}, {})
    print(f"\n## data: a {size} x {size} mosaic tile, {len(windows)} windows of {side} x {side} (HH, HV, mask)")
    for title, rows, prefix, mapped_name in (
        ("opening + reading every window", results, ("open_scene + read_db", "bare rasterio"), MAPPED_BARE),
        ("reading every window, files already open", read_results, ("read_db", "bare reads"), MAPPED_READS),
    ):
        by_name = {r.name: r for r in rows}
        print(f"\n### {title} (ratio = windows/s / those of the bare reads of the same source)")
        print("| run | windows/s | min | max | ratio |")
        print("|---|---:|---:|---:|---:|")
        for where in sources:
            peer = by_name[f"{prefix[1]}, {where}"]
            names = [f"{prefix[0]}, {where}", f"{prefix[1]}, {where}"] + [mapped_name] * (where == "extracted")
            for name in names:
                r = by_name[name]
                print(
                    f"| {name} | {r.throughput:.2f} | {r.items / r.seconds_max:.2f} | {r.items / r.seconds_min:.2f} "
                    f"| {peer.seconds / r.seconds:.3f}x |"
                )
        ours, mapped_peer = by_name[f"{prefix[0]}, extracted"], by_name[mapped_name]
        print(f"({prefix[0]}, extracted: {mapped_peer.seconds / ours.seconds:.3f}x the memory-mapped bare reads)")
    return results + read_results


# ---------------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmark", choices=["pretrain", "segment", "scene", "data", "all"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="bfloat16 = autocast")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default: 8 (pretrain), 4 (segment), predict_scene's (scene)"
    )
    parser.add_argument("--image-size", type=int, default=None, help="default: 256 (pretrain), 512 (segment)")
    parser.add_argument("--window", type=int, default=8, help="attention window of every stage, ours and peers'")
    parser.add_argument("--dims", default=None, help="tiny or base; segment takes a list (default tiny,base)")
    parser.add_argument("--compile", action="store_true", help="torch.compile every model")
    parser.add_argument(
        "--each-refinement", action="store_true", help="segment: also time each refinement switched on alone"
    )
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds (median, min, max)")
    parser.add_argument("--scene-size", type=int, default=8192)
    parser.add_argument(
        "--scenes", type=int, default=0, help="scene: a multi-scene job over N copies of the scene (0: one scene)"
    )
    parser.add_argument("--format", choices=["cog", "gtiff"], default="cog", help="scene --scenes: output format")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--mosaic-size", type=int, default=4500, help="data: tile side in px (JAXA's: 4500)")
    parser.add_argument("--data-window", type=int, default=512, help="data: window side in px")
    parser.add_argument("--gdal-cache-mb", type=int, default=16, help="data: GDAL's block cache (MB)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="pretrain: print the N most expensive operators of our step and SimMIM's, and the targets' time budget",
    )
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.profile < 0:
        parser.error(f"--profile: the number of operators to print must be >= 0, got {args.profile}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"sarlulc {sarlulc.__version__}, torch {torch.__version__}, device {args.device}, "
        f"{torch.get_num_threads()} CPU threads"
    )
    selected = ["pretrain", "segment", "scene", "data"] if args.benchmark == "all" else [args.benchmark]
    output = {}
    for name in selected:
        run = argparse.Namespace(**vars(args))
        run.batch_size = args.batch_size or {"pretrain": 8, "segment": 4}.get(name)
        run.image_size = args.image_size or (256 if name == "pretrain" else 512)
        run.dims = args.dims or ("tiny,base" if name == "segment" else "tiny")
        bench = {"pretrain": bench_pretrain, "segment": bench_segment, "scene": bench_scene, "data": bench_data}[name]
        output[name] = [asdict(r) | {"throughput": r.throughput} for r in bench(run)]
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(output, handle, indent=2)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
