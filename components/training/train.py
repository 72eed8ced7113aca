"""``train(cfg) -> metrics``: Mask R-CNN on a ``crownsam export-coco`` folder, tracked in MLflow.

Rules (also in ``components/training/README.md``):

* **Steps.** An epoch is ``ceil(train chips / (batch size x processes))`` optimiser steps over a seeded
  permutation of the training chips (``numpy.random.default_rng([seed, epoch, 7])``), wrapped around so
  every process gets full batches; process ``r`` takes the ``r``-th batch of each step.
* **Optimiser.** SGD (momentum 0.9, weight decay 1e-4), gradient norm clipped at 10. Learning rate
  ``lr x w(i) x d(i)`` at step ``i``: linear warm-up ``w`` from 0.001 to 1 over ``min(warmup_iters,
  total - 1)`` steps, and decay ``d`` = 0.1 from 2/3 and 0.01 from 8/9 of the total steps (total =
  epochs x steps per epoch). ``max_iters`` only stops training early; it does not change the schedule,
  so a run stopped by ``max_iters`` and resumed with a larger one takes the same steps as one run.
* **Determinism.** Augmentation is a function of (seed, epoch, chip); torch's global generator is
  re-seeded with (seed, step, rank) before every step (Mask R-CNN samples proposals at random), so a run
  resumed from a checkpoint takes the same steps as one that never stopped. cuDNN is set deterministic.
* **Validation.** After every epoch (and when ``max_iters`` ends training mid-epoch) the model predicts
  the val chips and pycocotools ``COCOeval`` gives segm and bbox AP. The best segm AP's weights are kept
  (``checkpoints/best.pt``); ``patience`` validations without improvement stop training.
* **Checkpoints.** ``checkpoints/last.pt`` after every epoch and at the end: model, optimiser, scheduler,
  AMP scaler, epoch, step within the epoch, global step, RNG states, best AP, history, config, data
  fingerprints. Written atomically. ``resume`` continues from it (same data, bands, model, batch size and
  seed required; epochs, ``max_iters`` and patience may change).
* **End.** The best weights (or the last, without validation) predict the test chips: COCO segm/bbox
  statistics (``test_*``) and a PNG over the test area; then the model goes to MLflow.
* **Classes.** The model has one class per category of ``train.json`` (plus background): one, tree, or
  one per pseudo-class of a ``--class-column`` export. AP keys without a class name are class-agnostic
  in both cases (``crownsam.training.evaluate``), so early stopping and the best weights follow the same
  number as a single-class run; multi-class runs also log ``val_segm_AP/<class>`` etc. per validation.
* **Processes.** Under ``torchrun`` (``WORLD_SIZE`` > 1) training uses DistributedDataParallel (gloo on
  CPU, nccl on CUDA); rank 0 validates, saves and logs. AMP (float16 autocast + gradient scaling) on CUDA.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crownsam.common.atomic import atomic_path, check_output_folder, write_json
from crownsam.common.device import resolve_device
from crownsam.common.errors import FILE_ERRORS, CrownsamError, InputError
from crownsam.common.progress import progress_bar
from crownsam.training import data as D
from crownsam.training.config import TrainConfig
from crownsam.training.evaluate import coco_metrics, plot_predictions, predict_split
from crownsam.training.model import build_model, load_weights, set_meta, unwrap

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "crownsam-train/1"
MODEL_FORMAT = "crownsam-maskrcnn/1"
LOSS_KEYS = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")
PNG_NAME = "predictions_test.png"


# ------------------------------------------------------------------------------------------ processes


@dataclass(frozen=True)
class Dist:
    """Where this process stands under torchrun (world 1 otherwise)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @classmethod
    def from_env(cls) -> Dist:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return cls(
            rank=int(os.environ.get("RANK", "0")),
            world=world,
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            local_world=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
        )

    @property
    def main(self) -> bool:
        return self.rank == 0


def step_seed(seed: int, iteration: int, rank: int) -> int:
    """The torch seed for global step ``iteration`` on ``rank`` (a 63-bit mix of the three)."""
    ss = np.random.SeedSequence([seed, iteration, rank, 11])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def epoch_batches(n: int, batch: int, dist: Dist, seed: int, epoch: int) -> list[list[tuple[int, int]]]:
    """This process's batches for ``epoch`` as lists of dataset keys ``(epoch, chip index)``."""
    order = np.random.default_rng([seed, epoch, 7]).permutation(n)
    per_step = batch * dist.world
    steps = max(1, math.ceil(n / per_step))
    mine = np.resize(order, steps * per_step).reshape(steps, dist.world, batch)[:, dist.rank, :]
    return [[(epoch, int(i)) for i in row] for row in mine]


def lr_factor(i: int, total: int, warmup: int) -> float:
    """Warm-up times step decay (see the module docstring) at step ``i`` (0-based)."""
    warmup = min(warmup, max(total - 1, 0))
    w = 1.0 if warmup == 0 or i >= warmup else 0.001 + (1 - 0.001) * i / warmup
    d = 0.01 if i >= total * 8 / 9 else 0.1 if i >= total * 2 / 3 else 1.0
    return w * d


# ------------------------------------------------------------------------------------------ data


@dataclass
class Prepared:
    """Validated inputs: export info, splits, channels, chip size, fingerprints."""

    export: D.ExportInfo
    splits: dict[str, dict[str, Any]]
    bands: tuple[int, ...]
    channels: list[int]
    chip: int
    fingerprints: dict[str, str]
    stretch: list[tuple[float, float]] | None
    counts: dict[str, int] = field(default_factory=dict)
    categories: list[dict[str, Any]] = field(default_factory=list)  # train.json's, sorted by id


def prepare(cfg: TrainConfig) -> Prepared:
    """Read and check the export folder (no images decoded but the first): bands, non-empty labels."""
    export = D.read_export(cfg.coco_dir)
    root = export.root
    splits = {"train": D.load_coco(root / "train.json")}
    for name in ("val", "test"):
        if (root / f"{name}.json").is_file():
            splits[name] = D.load_coco(root / f"{name}.json")
    train = splits["train"]
    if not train["images"]:
        raise InputError(root / "train.json", "no training chips (images is empty); check the export")
    n_anns = sum(1 for a in train["annotations"] if not a.get("iscrowd", 0))
    if n_anns == 0:
        raise InputError(
            root / "train.json",
            "the label set is empty (no annotations in any training chip); nothing to learn from. "
            "Check the labels given to `crownsam export-coco`",
        )
    for name, data in splits.items():
        D.check_categories(data, root / f"{name}.json")
    categories = sorted(train["categories"], key=lambda c: int(c["id"]))
    if "val" in splits and D.class_map(splits["val"]["categories"]) != D.class_map(categories):
        raise InputError(root / "val.json", "has other categories than train.json; re-run the export")
    channels = D.select_channels(export.bands, cfg.bands, str(root / "export.json"))
    bands = tuple(export.bands[c] for c in channels)
    first = train["images"][0]
    arr = D.read_chip(root / first["file_name"])
    if arr.shape[2] != len(export.bands):
        raise InputError(
            root / first["file_name"],
            f"has {arr.shape[2]} band(s) but export.json lists {len(export.bands)} "
            f"({','.join(map(str, export.bands))})",
        )
    stretch = [export.stretch[c] for c in channels] if export.stretch else None
    counts = {f"{k}_images": len(v["images"]) for k, v in splits.items()}
    counts |= {f"{k}_annotations": len(v["annotations"]) for k, v in splits.items()}
    return Prepared(
        export=export,
        splits=splits,
        bands=bands,
        channels=channels,
        chip=D.chip_size(splits, export),
        fingerprints=D.fingerprint(root),
        stretch=stretch,
        counts=counts,
        categories=categories,
    )


# ------------------------------------------------------------------------------------------ checkpoints

MUST_MATCH = ("bands", "model_version", "batch_size", "seed", "weights")


def checkpoint_dir(cfg: TrainConfig) -> Path:
    return Path(cfg.out_dir) / "checkpoints"


def has_checkpoint(out_dir: str | Path) -> bool:
    """Whether an earlier attempt left ``<out>/checkpoints/last.pt`` (a retried task resumes from it)."""
    return (Path(out_dir) / "checkpoints" / "last.pt").is_file()


def check_resume(cfg: TrainConfig, prep: Prepared) -> dict[str, Any] | None:
    """The checkpoint to resume from (or None), after checking it fits this run; refuse to overwrite an
    earlier run without ``resume``."""
    last = checkpoint_dir(cfg) / "last.pt"
    if not cfg.resume:
        if last.exists():
            raise InputError(
                cfg.out_dir, "already holds a training run; pass --resume or choose another --out"
            )
        return None
    if not last.is_file():
        raise InputError(last, "nothing to resume: no checkpoint here")
    try:
        ckpt = torch.load(last, map_location="cpu", weights_only=True)
    except FILE_ERRORS as exc:
        raise InputError(last, f"not a readable checkpoint ({type(exc).__name__}); start a new run") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise InputError(last, "not a crownsam training checkpoint")
    old = ckpt["config"]
    mine = cfg.as_dict() | {"bands": list(prep.bands)}
    for key in MUST_MATCH:
        if old.get(key) != mine.get(key):
            raise InputError(last, f"was trained with {key}={old.get(key)!r}, not {mine.get(key)!r}")
    if ckpt["meta"]["chip"] != prep.chip:
        raise InputError(last, f"was trained on {ckpt['meta']['chip']} px chips, these are {prep.chip} px")
    if ckpt["data"].get("train_sha256") != prep.fingerprints.get("train_sha256"):
        raise InputError(last, "was trained on a different train.json; start a new run (another --out)")
    return ckpt


def rng_states() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],  # type: ignore[index]
        "python": random.getstate(),
    }


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    n = states["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), *n[2:]))
    py = states["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def save_torch(obj: Any, target: Path) -> None:
    with atomic_path(target) as tmp:
        torch.save(obj, tmp)


# ------------------------------------------------------------------------------------------ training


@dataclass
class State:
    epoch: int = 0  # current epoch (0-based)
    step_in_epoch: int = 0  # steps done in the current epoch
    iteration: int = 0  # steps done in total
    best_ap: float = -math.inf
    best_epoch: int | None = None
    best_iteration: int | None = None
    bad_validations: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


@contextlib.contextmanager
def _process_group(dist: Dist, device: torch.device) -> Iterator[None]:
    if dist.world <= 1:
        yield
        return
    import torch.distributed as tdist

    if device.type == "cuda":
        torch.cuda.set_device(device)
    tdist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        tdist.destroy_process_group()


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train, validate, checkpoint, evaluate on the test split and log to MLflow; return the metrics
    (also written to ``<out>/metrics.json``; the MLflow run id is ``metrics["run_id"]`` and in
    ``<out>/run.json``). Under torchrun, ranks other than 0 return ``{"rank": r}``."""
    cfg.validate()
    check_output_folder(cfg.out_dir, "--out")
    dist = Dist.from_env()
    prep = prepare(cfg)
    ckpt = check_resume(cfg, prep)
    device = resolve_device(cfg.device, dist.local_rank if dist.world > 1 else None)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif dist.local_world > 1 and device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // dist.local_world))
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    with _process_group(dist, device):
        return _Trainer(cfg, prep, ckpt, dist, device).run()


class _Trainer:
    def __init__(
        self, cfg: TrainConfig, prep: Prepared, ckpt: dict[str, Any] | None, dist: Dist, device: torch.device
    ) -> None:
        self.cfg, self.prep, self.ckpt, self.dist, self.device = cfg, prep, ckpt, dist, device
        self.out = Path(cfg.out_dir)
        self.amp = cfg.amp and device.type == "cuda"
        root = prep.export.root
        self.train_ds = D.CocoChips(
            root, prep.splits["train"], prep.channels, prep.chip, train=True, seed=cfg.seed
        )
        self.val_ds = self._split("val")
        self.test_ds = self._split("test")
        self.steps_per_epoch = len(epoch_batches(len(self.train_ds), cfg.batch_size, dist, cfg.seed, 0))
        self.schedule_total = cfg.epochs * self.steps_per_epoch
        self.total = min(self.schedule_total, cfg.max_iters or self.schedule_total)
        self.meta: dict[str, Any] = {
            "format": MODEL_FORMAT,
            "version": cfg.model_version,
            "bands": list(prep.bands),
            "stretch": [list(s) for s in prep.stretch] if prep.stretch else None,
            "chip": prep.chip,
            "pretrained": bool(cfg.weights),
            "trainable_layers": cfg.trainable_layers,
            "model_kwargs": dict(cfg.model_kwargs),
            "label_source": cfg.label_source,
            "classes": ["background", *(str(c["name"]) for c in prep.categories)],
            "category_ids": [int(c["id"]) for c in prep.categories],
            "class_values": [c.get("class_value") for c in prep.categories],
            "crs": prep.export.crs,
            "input": "list of float (bands, H, W) tensors in [0, 1] = stretched uint8 / 255, bands as listed",
        }
        self.run_id: str | None = None
        self.tracking_uri: str | None = None
        self.experiment_id: str | None = None

    def _split(self, name: str) -> D.CocoChips | None:
        data = self.prep.splits.get(name)
        if not data or not data["images"]:
            return None
        return D.CocoChips(self.prep.export.root, data, self.prep.channels, self.prep.chip)

    # -- model, optimiser ---------------------------------------------------------------------------

    def build(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
        model = build_model(
            cfg.model_version,
            3,
            chip=self.prep.chip,
            pretrained=bool(cfg.weights),
            trainable_layers=cfg.trainable_layers,
            num_classes=len(self.meta["classes"]),
            **cfg.model_kwargs,
        )
        if cfg.weights and self.ckpt is None:
            load_weights(model, cfg.weights, cfg.cache_dir)
        if len(self.prep.bands) != 3:
            from crownsam.training.model import widen_first_conv

            widen_first_conv(model, len(self.prep.bands))
        set_meta(model, self.meta)
        model.to(self.device)
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
        total, warm = self.schedule_total, cfg.warmup_iters
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda i: lr_factor(i, total, warm)
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.state = State()
        if self.ckpt is not None:
            model.load_state_dict(self.ckpt["model"])
            self.optimizer.load_state_dict(self.ckpt["optimizer"])
            self.scheduler.load_state_dict(self.ckpt["scheduler"])
            if self.ckpt.get("scaler"):
                self.scaler.load_state_dict(self.ckpt["scaler"])
            s = self.ckpt["state"]
            self.state = State(**s)
            set_rng_states(self.ckpt["rng"])
            log.info(
                "resuming %s at epoch %d, step %d of the epoch, step %d in total",
                self.out,
                self.state.epoch + 1,
                self.state.step_in_epoch,
                self.state.iteration,
            )
        self.model = model
        self.net = model
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(model, device_ids=ids)

    def checkpoint(self) -> None:
        state = self.state.__dict__ | {"history": list(self.state.history)}
        save_torch(
            {
                "format": CHECKPOINT_FORMAT,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.amp else None,
                "state": state,
                "rng": rng_states(),
                "meta": self.meta,
                "config": self.cfg.as_dict() | {"bands": list(self.prep.bands)},
                "data": self.prep.fingerprints,
                "run_id": self.run_id,
                "world_size": self.dist.world,
            },
            checkpoint_dir(self.cfg) / "last.pt",
        )

    # -- one epoch ----------------------------------------------------------------------------------

    def train_epoch(self, bar: Any) -> dict[str, float]:
        cfg, st = self.cfg, self.state
        batches = epoch_batches(len(self.train_ds), cfg.batch_size, self.dist, cfg.seed, st.epoch)
        batches = batches[st.step_in_epoch :]
        workers = (
            cfg.num_workers
            if cfg.num_workers is not None
            else (min(4, os.cpu_count() or 1) if self.device.type == "cuda" else 0)
        )
        loader = torch.utils.data.DataLoader(
            self.train_ds,
            batch_sampler=batches,
            collate_fn=D.collate,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
        )
        sums = dict.fromkeys(("loss", *LOSS_KEYS), 0.0)
        steps, images, t0 = 0, 0, time.perf_counter()
        self.net.train()
        for imgs, targets in loader:
            if st.iteration >= self.total:
                break
            torch.manual_seed(step_seed(cfg.seed, st.iteration, self.dist.rank))
            imgs = [im.to(self.device, non_blocking=True) for im in imgs]
            targets = [{k: v.to(self.device, non_blocking=True) for k, v in t.items()} for t in targets]
            ctx = torch.autocast("cuda") if self.amp else contextlib.nullcontext()
            with ctx:
                losses = self.net(imgs, targets)
            loss = sum(losses.values())
            values = torch.stack([loss.detach().float(), *(losses[k].detach().float() for k in LOSS_KEYS)])
            if self.dist.world > 1:
                import torch.distributed as tdist

                tdist.all_reduce(values)
                values /= self.dist.world
            floats: list[float] = values.cpu().tolist()
            if not math.isfinite(floats[0]):
                raise CrownsamError(
                    None,
                    f"the training loss is {floats[0]} at step {st.iteration + 1}; lower --lr "
                    f"(now {cfg.lr:g}) or check the labels",
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.clip_grad_norm:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(
                    [p for p in self.model.parameters() if p.requires_grad], cfg.clip_grad_norm
                )
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            for k, v in zip(("loss", *LOSS_KEYS), floats, strict=True):
                sums[k] += v
            steps += 1
            images += len(imgs) * self.dist.world
            st.iteration += 1
            st.step_in_epoch += 1
            bar.update(1)
            bar.set_postfix(epoch=st.epoch + 1, loss=f"{floats[0]:.3f}")
        seconds = time.perf_counter() - t0
        out = {k: v / steps for k, v in sums.items()} if steps else {}
        out |= {
            "train_steps": float(steps),
            "train_seconds": seconds,
            "train_images_per_s": images / seconds if seconds > 0 and steps else 0.0,
            "lr": float(self.optimizer.param_groups[0]["lr"]),
        }
        return out

    def validate(self) -> dict[str, float]:
        if self.val_ds is None:
            return {}
        preds = predict_split(self.model, self.val_ds, self.device, amp=self.amp, progress=False)
        stats = coco_metrics(self.val_ds.data, preds, self.meta["category_ids"])
        return {f"val_{k}": v for k, v in stats.items()}

    # -- the run ------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.build()
        main = self.dist.main
        t_start = time.perf_counter()
        stack = contextlib.ExitStack()
        with stack:
            if main and self.cfg.tracking:
                stack.enter_context(self.mlflow_run())
            bar = stack.enter_context(
                progress_bar(
                    total=self.total,
                    initial=min(self.state.iteration, self.total),
                    desc=f"train {self.cfg.label_source}" if self.cfg.progress else "iterations",
                    unit="step",
                    enabled=self.cfg.progress,
                    report=main,
                )
            )
            stopped = "max_iters" if self.cfg.max_iters and self.state.iteration >= self.total else "epochs"
            while self.state.iteration < self.total and self.state.epoch < self.cfg.epochs:
                stats = self.train_epoch(bar)
                epoch_done = self.state.step_in_epoch >= self.steps_per_epoch
                stop = False
                if main:
                    record = {"epoch": self.state.epoch + 1, "iteration": self.state.iteration, **stats}
                    record |= self.validate()
                    stop = self.after_validation(record)
                    self.state.history.append(record)
                    self.log_epoch(record)
                if epoch_done:
                    self.state.epoch += 1
                    self.state.step_in_epoch = 0
                if main:
                    self.checkpoint()
                stop = self.broadcast(stop)
                if stop:
                    stopped = "early_stopping"
                    log.info("early stopping: no better val segm AP in %d validations", self.cfg.patience)
                    break
                if self.state.iteration >= self.total and self.cfg.max_iters:
                    stopped = "max_iters"
            if not main:
                return {"rank": self.dist.rank}
            return self.finish(stopped, time.perf_counter() - t_start)

    def broadcast(self, stop: bool) -> bool:
        if self.dist.world <= 1:
            return stop
        import torch.distributed as tdist

        obj = [stop]
        tdist.broadcast_object_list(obj, src=0)
        return bool(obj[0])

    def after_validation(self, record: dict[str, Any]) -> bool:
        """Keep the best weights; return True when patience has run out."""
        ap = record.get("val_segm_AP")
        st = self.state
        if ap is None:
            return False
        if ap > st.best_ap + 1e-9:
            st.best_ap, st.best_epoch, st.best_iteration = float(ap), record["epoch"], st.iteration
            st.bad_validations = 0
            save_torch(
                {
                    "format": CHECKPOINT_FORMAT,
                    "model": self.model.state_dict(),
                    "meta": self.meta,
                    "epoch": record["epoch"],
                    "iteration": st.iteration,
                    "val_segm_AP": float(ap),
                },
                checkpoint_dir(self.cfg) / "best.pt",
            )
            return False
        st.bad_validations += 1
        return bool(self.cfg.patience) and st.bad_validations >= self.cfg.patience

    # -- MLflow -------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def mlflow_run(self) -> Iterator[None]:
        from crownsam.training import tracking

        cfg = self.cfg
        uri = tracking.resolve_tracking_uri(cfg.tracking_uri, self.out)
        earlier = None
        if cfg.resume and (self.out / "run.json").is_file():
            with contextlib.suppress(OSError, json.JSONDecodeError):
                earlier = json.loads((self.out / "run.json").read_text())
        tags = {"crownsam.label_source": cfg.label_source, **cfg.tags}
        with tracking.training_run(uri, cfg.experiment, cfg.run_name, earlier, self.params, tags) as run:
            self.run_id, self.tracking_uri = run.info.run_id, uri
            self.experiment_id = run.info.experiment_id
            self.write_run_json("RUNNING")
            yield

    def params(self) -> dict[str, Any]:
        cfg, prep = self.cfg, self.prep
        p = {
            "label_source": cfg.label_source,
            "bands": ",".join(map(str, prep.bands)),
            "model_version": cfg.model_version,
            "weights": cfg.weights or "none",
            "epochs": cfg.epochs,
            "max_iters": cfg.max_iters or "none",
            "steps_per_epoch": self.steps_per_epoch,
            "lr": cfg.lr,
            "batch_size": cfg.batch_size,
            "seed": cfg.seed,
            "chip": prep.chip,
            "world_size": self.dist.world,
            "device": str(self.device),
            "amp": self.amp,
            "patience": cfg.patience,
            "stretch": json.dumps(self.meta["stretch"]),
            "coco_dir": str(prep.export.root.resolve()),
            **prep.counts,
            **prep.fingerprints,
        }
        if cfg.model_kwargs:
            p["model_kwargs"] = json.dumps(cfg.model_kwargs, sort_keys=True)
        if len(prep.categories) > 1:
            p["classes"] = ",".join(self.meta["classes"][1:])
        return p

    def log_epoch(self, record: dict[str, Any]) -> None:
        if self.run_id is not None:
            from crownsam.training import tracking

            tracking.log_epoch(record)

    def write_run_json(self, status: str, **extra: Any) -> None:
        write_json(
            self.out / "run.json",
            {
                "run_id": self.run_id,
                "tracking_uri": self.tracking_uri,
                "experiment_id": self.experiment_id,
                "status": status,
                **extra,
            },
        )

    # -- the end ------------------------------------------------------------------------------------

    def finish(self, stopped: str, seconds: float) -> dict[str, Any]:
        st = self.state
        best_path = checkpoint_dir(self.cfg) / "best.pt"
        model = unwrap(self.model)
        if best_path.is_file():
            model.load_state_dict(
                torch.load(best_path, map_location="cpu", weights_only=True, mmap=True)["model"]
            )
        model.eval()
        test: dict[str, float] | None = None
        png: Path | None = None
        if self.test_ds is not None and self.cfg.evaluate_test:
            preds = predict_split(model, self.test_ds, self.device, amp=self.amp, progress=False)
            stats = coco_metrics(self.test_ds.data, preds, self.meta["category_ids"])
            test = {f"test_{k}": v for k, v in stats.items()}
            png = plot_predictions(
                self.test_ds,
                preds,
                self.out / PNG_NAME,
                title=f"{self.cfg.label_source}: test segm AP {test['test_segm_AP']:.3f}",
            )
        last = st.history[-1] if st.history else {}
        metrics: dict[str, Any] = {
            "run_id": self.run_id,
            "tracking_uri": self.tracking_uri,
            "experiment_id": self.experiment_id,
            "label_source": self.cfg.label_source,
            "iterations": st.iteration,
            "epochs_completed": st.epoch,
            "stopped": stopped,
            "final_loss": last.get("loss"),
            "best": {"epoch": st.best_epoch, "iteration": st.best_iteration, "val_segm_AP": st.best_ap}
            if st.best_epoch is not None
            else None,
            "weights": "best" if best_path.is_file() else "last",
            "test": test,
            "history": st.history,
            "seconds": seconds,
            "model_uri": None,
        }
        # flat copies for callers that log scalars only (KFP Metrics)
        metrics |= test or {}
        if st.best_epoch is not None:
            metrics["best_val_segm_AP"] = st.best_ap
        if self.run_id is not None:
            from crownsam.training import tracking

            final = {"best_val_segm_AP": st.best_ap} if st.best_epoch is not None else {}
            metrics["model_uri"] = tracking.log_result(
                model.to("cpu"), {**final, **(test or {})}, png, metrics, self.cfg.register_name
            )
        write_json(self.out / "metrics.json", metrics)
        self.write_run_json("FINISHED", model_uri=metrics["model_uri"])
        return metrics
