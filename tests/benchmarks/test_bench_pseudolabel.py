"""The benchmark's GPU stand-in (``SimulatedModel``): its answers follow its documented rule (each box's
cells, cut from a whole low-resolution map), whatever the region, so its figures time the real
post-processing of box-shaped masks."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from crownsam.pseudolabel.masks import LogitPatch
from crownsam.pseudolabel.predictor import PromptBatch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_pseudolabel import SimulatedModel

H = W = 1024


def rule(box: np.ndarray, region: tuple[int, int, int, int], shift: float = 0.0) -> LogitPatch:
    """The docstring's rule on the whole 256 x 256 map: +1 where the cell centre is in the box, cut to what
    ``region`` reads. ``shift`` moves the cell centres (a bug the test must catch)."""
    lh, lw = H // 4, W // 4
    ys, xs = (np.arange(lh) + 0.5 + shift) * (H / lh), (np.arange(lw) + 0.5) * (W / lw)
    x0, y0, x1, y1 = box
    inside = ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]
    return LogitPatch.from_map(np.where(inside, np.float32(1), np.float32(-1)), (H, W), region)


def answers(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, list[LogitPatch], np.ndarray]:
    """Random boxes and regions (some regions empty) and the stand-in's answers to them."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-20, W + 20, size=(n, 2))
    size = rng.uniform(0, 300, size=(n, 2))
    boxes = np.clip(np.concatenate([xy, xy + size], axis=1), 0, W)
    r0 = rng.integers(0, H, size=n)
    c0 = rng.integers(0, W, size=n)
    r1 = np.minimum(r0 + rng.integers(0, 500, size=n), H)
    c1 = np.minimum(c0 + rng.integers(0, 500, size=n), W)
    r1[:3] = r0[:3]  # empty regions too
    regions = np.stack([r0, c0, r1, c1], axis=1)
    model = SimulatedModel(0, 0)
    model.set_image(np.zeros((H, W, 3), dtype=np.uint8))
    patches, scores = model.predict(PromptBatch(boxes=boxes), regions)
    return boxes, regions, patches, scores


def test_answers_follow_the_rule_for_any_region() -> None:
    boxes, regions, patches, scores = answers(7, 200)
    assert np.array_equal(scores, np.ones(200, dtype=np.float32))
    empty = 0
    for box, region, got in zip(boxes, regions, patches, strict=True):
        want = rule(box, tuple(int(v) for v in region))
        assert (got.r0, got.c0, got.low_hw, got.out_hw) == (want.r0, want.c0, want.low_hw, want.out_hw)
        assert got.data.dtype == np.float32 and np.array_equal(got.data, want.data)
        empty += got.data.size == 0
    assert empty > 0  # empty regions were among the cases


def test_a_half_cell_shift_is_caught() -> None:
    """The comparison above fails for a rule that is off by half a low-resolution cell."""
    boxes, regions, patches, _ = answers(8, 50)
    differ = [
        not np.array_equal(got.data, rule(box, tuple(int(v) for v in region), shift=0.5).data)
        for box, region, got in zip(boxes, regions, patches, strict=True)
    ]
    assert any(differ)


def test_point_prompts_are_refused() -> None:
    model = SimulatedModel(0, 0)
    model.set_image(np.zeros((H, W, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="box prompts only"):
        model.predict(PromptBatch(points=np.zeros((1, 1, 2)), labels=np.ones((1, 1))), np.zeros((1, 4)))


def test_busy_time_is_the_nominal_hold() -> None:
    """The accelerator's busy time is E per embedding, however late the thread wakes up after it (that
    lateness is host latency: counting it would flatter the busy share)."""
    model = SimulatedModel(4, 1)
    for _ in range(3):
        model.set_image(np.zeros((64, 64, 3), dtype=np.uint8))
        model.predict(PromptBatch(boxes=np.array([[0.0, 0.0, 8.0, 8.0]])), np.array([[0, 0, 16, 16]]))
    assert model.busy_seconds == pytest.approx(3 * 0.005)
    assert model.forward_seconds >= model.busy_seconds


def test_machine_busy_seconds_reads_the_busy_fields(tmp_path: Path) -> None:
    """user + nice + system + irq + softirq of the first line, in seconds; idle, I/O wait and steal are
    not busy; a file without that line gives None."""
    import os

    from bench_pseudolabel import machine_busy_seconds

    hz = os.sysconf("SC_CLK_TCK")
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 20 30 5000 70 4 6 900 0 0\ncpu0 50 10 15 2500 35 2 3 450 0 0\n")
    assert machine_busy_seconds(str(stat)) == pytest.approx(160 / hz)
    stat.write_text("intr 1 2 3\n")
    assert machine_busy_seconds(str(stat)) is None
    assert machine_busy_seconds(str(tmp_path / "missing")) is None


def test_machine_busy_seconds_counts_this_process_cpu() -> None:
    """On this machine, burning CPU in this process moves the figure by at least that much (less 10 ms of
    tick granularity)."""
    import time

    from bench_pseudolabel import machine_busy_seconds

    before = machine_busy_seconds()
    if before is None:
        pytest.skip("no /proc/stat here")
    c0 = time.process_time()
    while time.process_time() - c0 < 0.3:
        sum(i * i for i in range(1000))
    burned = time.process_time() - c0
    after = machine_busy_seconds()
    assert after is not None and after - before >= burned - 0.02


def test_cpus_for_share() -> None:
    """0.6 of 10 ms of model time per window, with 36 ms of host CPU per window, needs 2.16 CPUs; no model
    time is refused."""
    from bench_pseudolabel import cpus_for_share

    assert cpus_for_share(0.6, 36.0, 10.0) == pytest.approx(2.16)
    assert cpus_for_share(0.85, 30.0, 25.0) == pytest.approx(1.02)
    with pytest.raises(ValueError, match="positive"):
        cpus_for_share(0.6, 36.0, 0.0)


@pytest.mark.parametrize("value", ["0", "-2", "three"])
def test_bad_repeat_is_one_line_and_exit_code_2(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``--repeat`` below 1 or not a number: argparse's one line naming the option, exit code 2, before
    anything is generated or run."""
    from bench_pseudolabel import main

    with pytest.raises(SystemExit) as exc:
        main(["--simulate-model-ms", "10", "--repeat", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert ": error: argument --repeat:" in err[-1]
    assert "Traceback" not in "\n".join(err)
