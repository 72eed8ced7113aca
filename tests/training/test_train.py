"""Training: 2 steps on tiny chips, MLflow run read back from a real server, model loaded back from
MLflow and predicting, checkpoint resume equal to an uninterrupted run."""

from __future__ import annotations

import json
import math
import tempfile

import mlflow.pytorch
import pytest
import torch
from mlflow.tracking import MlflowClient
from torchvision.models.detection import MaskRCNN

from crownsam.common.vector import file_sha256
from crownsam.training.config import TrainConfig
from crownsam.training.data import CocoChips, load_coco
from crownsam.training.tracking import load_model
from crownsam.training.train import train

try:
    from .synth import REGISTERED, small_config
except ImportError:
    from synth import REGISTERED, small_config


def test_two_steps_give_finite_loss_checkpoints_and_metrics(trained):
    m = trained.metrics
    assert m["iterations"] == 2 and m["stopped"] == "max_iters"
    assert math.isfinite(m["final_loss"]) and m["final_loss"] > 0
    for rec in m["history"]:
        assert all(math.isfinite(rec[k]) for k in ("loss", "loss_mask", "loss_classifier", "loss_objectness"))
    assert 0.0 <= m["best"]["val_segm_AP"] <= 1.0
    assert set(m["test"]) >= {
        "test_segm_AP",
        "test_segm_AP50",
        "test_segm_AP75",
        "test_bbox_AP",
        "test_segm_AR100",
    }
    out = trained.out
    assert (out / "checkpoints" / "last.pt").is_file() and (out / "checkpoints" / "best.pt").is_file()
    assert json.loads((out / "metrics.json").read_text())["run_id"] == trained.run_id
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["status"] == "FINISHED" and run_json["tracking_uri"] == trained.tracking_uri
    ckpt = torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=True, mmap=True)
    assert (
        ckpt["state"]["iteration"] == 2
        and ckpt["state"]["epoch"] == 1
        and ckpt["state"]["step_in_epoch"] == 0
    )
    assert set(ckpt) >= {"model", "optimizer", "scheduler", "rng", "meta", "config", "data"}
    assert ckpt["meta"]["bands"] == [1, 2, 3] and len(ckpt["meta"]["stretch"]) == 3
    assert (out / "predictions_test.png").stat().st_size > 1000


def test_mlflow_run_has_params_metrics_artifacts(trained):
    client = MlflowClient(trained.tracking_uri)
    run = client.get_run(trained.run_id)
    p = run.data.params
    assert p["label_source"] == "synthetic" and p["bands"] == "1,2,3" and p["seed"] == "3"
    assert p["lr"] == "0.005" and p["epochs"] == "20" and p["batch_size"] == "1"
    assert p["train_sha256"] == file_sha256(trained.synth.root / "train.json")
    assert p["val_sha256"] == file_sha256(trained.synth.root / "val.json")
    assert run.data.tags["crownsam.label_source"] == "synthetic"
    losses = client.get_metric_history(trained.run_id, "loss")
    assert [h.step for h in losses] == [1] and math.isfinite(losses[0].value)
    assert len(client.get_metric_history(trained.run_id, "val_segm_AP")) == 1
    for key in ("test_segm_AP", "test_segm_AP50", "test_segm_AP75", "test_bbox_AP", "test_segm_AR100"):
        assert key in run.data.metrics
    names = {a.path for a in client.list_artifacts(trained.run_id)}
    assert {"predictions_test.png", "metrics.json"} <= names


def test_model_loads_back_from_mlflow_and_predicts(trained, tmp_path, monkeypatch):
    model = mlflow.pytorch.load_model(f"runs:/{trained.run_id}/model", dst_path=tmp_path, map_location="cpu")
    assert isinstance(model, MaskRCNN)
    assert model.crownsam_meta["bands"] == [1, 2, 3]
    # the logged weights are the best checkpoint's
    best = torch.load(
        trained.out / "checkpoints" / "best.pt", map_location="cpu", weights_only=True, mmap=True
    )
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in best["model"].items())
    synth = trained.synth
    ds = CocoChips(synth.root, load_coco(synth.root / "test.json"), [0, 1, 2], 128)
    model.eval()
    model.roi_heads.score_thresh = 0.0
    with torch.no_grad():
        out = model([ds.image_tensor(0)])
    assert set(out[0]) == {"boxes", "labels", "scores", "masks"}
    assert out[0]["masks"].shape[1:] == (1, 128, 128) and len(out[0]["boxes"]) > 0
    # our loader reads the same model from the run folder and from MLflow, and leaves no download behind
    # (MLflow's own default keeps a copy of the model in a new temporary folder on every load)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    loaded = load_model(f"runs:/{trained.run_id}/model", tracking_uri=trained.tracking_uri)
    assert loaded.run_id == trained.run_id and loaded.meta["chip"] == 128
    from_dir = load_model(str(trained.out))
    assert from_dir.run_id == trained.run_id
    # a registered version, addressed by alias, leads back to its run
    client = MlflowClient(trained.tracking_uri)
    version = client.search_model_versions(f"name='{REGISTERED}'")[0].version
    client.set_registered_model_alias(REGISTERED, "champion", version)
    by_alias = load_model(f"models:/{REGISTERED}@champion", tracking_uri=trained.tracking_uri)
    assert by_alias.run_id == trained.run_id and by_alias.meta["bands"] == [1, 2, 3]
    assert list(scratch.iterdir()) == []
    assert all(torch.equal(from_dir.model.state_dict()[k], v) for k, v in best["model"].items())


def test_resume_takes_the_same_steps_as_an_uninterrupted_run(trained, tmp_path):
    """1 step, stop, resume to step 2 == the fixture's 2 uninterrupted steps (same seed and data)."""
    out = tmp_path / "run"
    first = train(small_config(trained.synth, out, max_iters=1, tracking=False, evaluate_test=False))
    assert first["iterations"] == 1
    ckpt1 = torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=True, mmap=True)
    assert ckpt1["state"]["iteration"] == 1 and ckpt1["state"]["step_in_epoch"] == 1
    with pytest.raises(Exception, match="already holds a training run"):
        train(small_config(trained.synth, out, max_iters=2, tracking=False))
    second = train(
        small_config(trained.synth, out, max_iters=2, tracking=False, resume=True, evaluate_test=False)
    )
    assert second["iterations"] == 2 and [h["iteration"] for h in second["history"]] == [1, 2]
    mine = torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=True, mmap=True)
    ref = torch.load(
        trained.out / "checkpoints" / "last.pt", map_location="cpu", weights_only=True, mmap=True
    )
    for key in ("iteration", "epoch", "step_in_epoch"):
        assert mine["state"][key] == ref["state"][key]
    assert mine["scheduler"]["last_epoch"] == ref["scheduler"]["last_epoch"] == 2
    for k, v in ref["model"].items():
        torch.testing.assert_close(mine["model"][k], v, rtol=1e-4, atol=1e-5, msg=f"model tensor {k}")
    for i, st in ref["optimizer"]["state"].items():
        torch.testing.assert_close(mine["optimizer"]["state"][i]["momentum_buffer"], st["momentum_buffer"])


def test_config_validation_rejects_bad_values(synth, tmp_path):
    for kw, match in [
        ({"epochs": 0}, "--epochs"),
        ({"max_iters": 0}, "--max-iters"),
        ({"lr": -1.0}, "--lr"),
        ({"lr": float("nan")}, "--lr"),
        ({"batch_size": 0}, "--batch-size"),
        ({"model_version": "v3"}, "--model"),
        ({"device": "tpu"}, "--device"),
        ({"bands": (0,)}, "--bands"),
    ]:
        cfg = TrainConfig(coco_dir=str(synth.root), out_dir=str(tmp_path / "x"), **kw)
        with pytest.raises(Exception, match=match):
            cfg.validate()


def test_early_stopping_keeps_the_best_weights(tmp_path):
    from types import SimpleNamespace

    from crownsam.training.train import State, _Trainer

    net = torch.nn.Linear(2, 1)
    fake = SimpleNamespace(
        state=State(), cfg=SimpleNamespace(patience=2, out_dir=str(tmp_path)), model=net, meta={"bands": [1]}
    )
    decisions = []
    for epoch, ap in enumerate([0.1, 0.3, 0.2, 0.25], start=1):
        with torch.no_grad():
            net.bias.fill_(epoch)
        decisions.append(_Trainer.after_validation(fake, {"epoch": epoch, "val_segm_AP": ap}))
    assert decisions == [False, False, False, True]  # two validations without improvement stop it
    best = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] == 2 and best["val_segm_AP"] == 0.3 and best["model"]["bias"].item() == 2.0
    assert fake.state.best_epoch == 2


def test_tracking_uri_precedence(tmp_path, monkeypatch):
    from crownsam.training.tracking import resolve_tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert resolve_tracking_uri(None, tmp_path) == "http://127.0.0.1:1"
    assert resolve_tracking_uri("http://x:5000", tmp_path) == "http://x:5000"
