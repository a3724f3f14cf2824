"""tools/benchmark_es_options.py: the augmentation and one tiny end-to-end run on idx files the test writes."""
import json
from pathlib import Path

import pytest
import torch

from esbnn_plugins.ops.stream import calibrate_thresholds
from test_fashion_mnist import make_fashion

import benchmark_es_options as tool


def test_augment_is_a_padded_shifted_window_maybe_flipped():
    x = torch.randint(0, 256, (16, 1, 28, 28)).float()
    crops = tool.augment(x, torch.Generator().manual_seed(0)) * tool.STD + tool.MEAN
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    flipped = 0
    for crop, image in zip(crops, padded):
        windows = [(image[:, dy:dy + 28, dx:dx + 28], flip) for dy in range(5) for dx in range(5) for flip in (0, 1)]
        matches = [flip for window, flip in windows if torch.allclose(crop, window.flip(-1) if flip else window)]
        assert matches, "a crop is not a window of the padded image"
        flipped += matches[0]
    assert 0 < flipped < 16


def markdown_table(text: str) -> list:
    """The rows of the first markdown table in ``text``, as dicts keyed by the header's cells."""
    block = [line for line in next(b for b in text.split("\n\n") if b.startswith("|")).splitlines()
             if line.startswith("|")]
    headers, *rows = ([cell.strip() for cell in line.strip("|").split("|")] for line in block[:1] + block[2:])
    return [dict(zip(headers, row)) for row in rows]


def test_train_top1_is_the_trained_network_on_its_own_training_images(tmp_path, monkeypatch):
    make_fashion(tmp_path / "fashion", per_class=(6, 2))
    args = tool.argparse.Namespace(data_root=tmp_path / "fashion", val_per_class=1, train_subset=None, device="cpu",
                                   widths=[8, 16, 32], two_step=False)
    trained = []

    def untrained_fit(model, *_args, **_kwargs):  # the network stays as built, so the test can rebuild it
        trained.append(model)
        return 0.5, [2.5, 1.5]

    monkeypatch.setattr(tool, "fit", untrained_fit)
    run = tool.train_run("baseline", 3, args, threads=1)
    torch.manual_seed(3)
    model = tool.build(tool.OPTION_SETS["baseline"], args.widths)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), trained[0].state_dict().values()))
    train_x, train_y = tool.tensors(args, "train")
    assert len(train_y) == 50 and run["train"] == tool.accuracy(model, train_x, train_y)
    assert run["train_loss"] == [2.5, 1.5] and run["seconds"] == 0.5


def test_calibrated_option_sets_start_from_the_first_batch_and_keep_the_data_order(tmp_path, monkeypatch):
    make_fashion(tmp_path / "fashion", per_class=(6, 2))
    args = tool.argparse.Namespace(data_root=tmp_path / "fashion", val_per_class=1, train_subset=None, device="cpu",
                                   widths=[8, 16, 32], two_step=False, batch_size=20)
    fitted = {}

    def untrained_fit(model, _args, generator, *_rest, **_kwargs):
        fitted[model] = generator.get_state()
        return 0.5, [1.0]

    monkeypatch.setattr(tool, "fit", untrained_fit)
    tool.train_run("ES + RSign, calibrated thresholds", 1, args, threads=1)
    tool.train_run("ES + RSign", 1, args, threads=1)
    (calibrated, state), (plain, plain_state) = fitted.items()
    assert torch.equal(state, plain_state)  # calibrating drew nothing from the run's generator
    train_x, _ = tool.tensors(args, "train")
    reference = tool.build(tool.OPTION_SETS["ES + RSign"], args.widths)
    reference.load_state_dict(plain.state_dict())
    assert calibrate_thresholds(reference, (train_x[:20] - tool.MEAN) / tool.STD) == 18
    shifts = [name for name in reference.state_dict() if name.endswith("act_binarizer.shift.bias")]
    assert len(shifts) == 18 and all(plain.state_dict()[name].eq(0).all() for name in shifts)
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), calibrated.state_dict().values()))


def test_tiny_run_stores_runs_and_writes_report(tmp_path, monkeypatch):
    make_fashion(tmp_path / "fashion", per_class=(4, 2))
    out = tmp_path / "report.md"
    out.write_text("# Classification results\n\nkept\n")
    args = ["--data-root", str(tmp_path / "fashion"), "--val-per-class", "1", "--epochs", "1", "--seeds", "0",
            "--device", "cpu", "--batch-size", "10", "--work-dir", str(tmp_path / "work"), "--out", str(out)]
    tool.main(args + ["--options", "baseline", "ES + widened classifier"])
    work = tmp_path / "work"

    def stored():
        return {path.name: json.loads(path.read_text()) for path in sorted(work.rglob("*.json"))}

    runs = stored()
    assert list(runs) == ["baseline_seed0.json", "es-widened-classifier_seed0.json"]
    assert all(0 <= r[split] <= 100 for r in runs.values() for split in ("train", "val", "test"))
    # one mean loss per epoch, of the cross-entropy the run minimised
    assert all(len(r["train_loss"]) == 1 and 0 < r["train_loss"][0] < 10 for r in runs.values())
    assert runs["baseline_seed0.json"]["settings"]["options"] == tool.OPTION_SETS["baseline"]
    text = out.read_text()
    assert "kept" in text and "<!-- benchmark:fashion-options -->" in text
    assert "train: the network's own training images (eval mode, no augmentation)" in text
    (row,) = [r for r in markdown_table(text) if r["Options"] == "ES + widened classifier"]
    assert row["tau"] == "2" and float(row["OPs ratio"]) <= 1.02
    assert float(row["Train top-1 (%)"]) == pytest.approx(runs["es-widened-classifier_seed0.json"]["train"], abs=0.01)
    assert float(row["Last-epoch loss"]) == pytest.approx(runs["es-widened-classifier_seed0.json"]["train_loss"][-1],
                                                          rel=1e-3)
    (gain,) = [r for r in markdown_table(text.split("paired by seed")[1]) if r["Options"] == "ES + widened classifier"]
    for split in ("train", "val"):
        assert gain[f"{split.title()} gain per seed"] == "{:+.2f}".format(
            runs["es-widened-classifier_seed0.json"][split] - runs["baseline_seed0.json"][split])
    # a rerun with the same settings reuses the finished runs and trains only the new option set
    tool.main(args + ["--options", "baseline", "ES + widened classifier", "ES + mean reduce"])
    assert stored() == dict(runs, **{"es-mean-reduce_seed0.json": stored()["es-mean-reduce_seed0.json"]})
    assert "| ES + mean reduce |" in out.read_text()
    # --report-only trains nothing and reports what is finished (the new seed has no run yet)
    tool.main(args + ["--seeds", "0", "1", "--options", "baseline", "ES + mean reduce", "--report-only"])
    assert len(stored()) == 3
    assert "| ES + mean reduce |" in out.read_text() and "| ES + widened classifier |" not in out.read_text()
    # an option set whose options changed is trained again
    monkeypatch.setitem(tool.OPTION_SETS, "baseline", dict(expand_ratio=1, act_binarizer="rsign"))
    tool.main(args + ["--options", "baseline"])
    assert stored()["baseline_seed0.json"]["settings"]["options"]["act_binarizer"] == "rsign"
    # another recipe is stored in its own folder, beside this one's runs, and --section writes its table beside
    # the default's, which stays
    tool.main(args + ["--epochs", "2", "--widths", "8", "16", "32", "--binary-weight-decay", "1e-05", "--options",
                      "baseline", "--section", "fashion-options-long"])
    recipe = "train_subset=None_val_per_class=1_batch_size=10_lr=0.001_weight_decay=5e-06_binary_weight_decay"
    assert sorted(path.parent.name for path in work.rglob("baseline_seed0.json")) == [
        f"epochs=1_{recipe}=0.0_widths=16-32-64", f"epochs=2_{recipe}=1e-05_widths=8-16-32"]
    assert all(run["device"] == "cpu" and run["precision"] == "fp32" for run in stored().values())
    text = out.read_text()
    assert "<!-- benchmark:fashion-options -->" in text and "<!-- benchmark:fashion-options-long -->" in text
    assert ("## ES design options on Fashion-MNIST (all training images, 1 epochs, Adam 0.001, widths 16-32-64, "
            "weight decay 5e-06/0)") in text
    assert ("## ES design options on Fashion-MNIST (all training images, 2 epochs, Adam 0.001, widths 8-16-32, "
            "weight decay 5e-06/1e-05)") in text
    (wide,) = markdown_table(text.split("fashion-options-long")[1])
    assert wide["Binary params"].replace(",", "") == str(sum(  # binary params of the 8-16-32 network
        m.weight.numel() for m in tool.build(tool.OPTION_SETS["baseline"], (8, 16, 32)).modules()
        if getattr(m, "is_binary", False)))
    # the thresholds' learning rate is part of the recipe where it is not the default
    tool.main(args + ["--threshold-lr-mult", "10", "--options", "baseline", "--section", "fashion-options-thresholds"])
    assert (work / f"epochs=1_{recipe}=0.0_widths=16-32-64_threshold_lr_mult=10.0" / "baseline_seed0.json").is_file()


def test_paired_gains_are_differences_seed_by_seed_on_shared_seeds():
    runs = [dict(options="base", seed=0, val=80.0, test=81.0), dict(options="base", seed=1, val=82.0, test=81.5),
            dict(options="base", seed=2, val=81.0, test=81.2), dict(options="es", seed=0, val=82.0, test=81.0),
            dict(options="es", seed=1, val=83.5, test=83.0), dict(options="es", seed=3, val=99.0, test=99.0),
            dict(options="other", seed=5, val=90.0, test=90.0)]
    (row,) = tool.paired_gains(runs, ["base", "es", "other"])  # 'other' shares no seed with 'base'
    assert row[:2] == ["es", "0 1"]
    assert row[2] == pytest.approx(1.75) and row[3] == pytest.approx(0.3535534) and row[4] == "+2.00 +1.50"
    assert row[6] == pytest.approx(0.75) and row[7] == pytest.approx(1.0606602) and row[8] == "+0.00 +1.50"
    # val: es 82.75 ± 1.06 against 81.0 ± 1.41 overlap; test: es 82.0 ± 1.41 against 81.25 ± 0.35 overlap
    assert row[5] == "overlap" and row[9] == "overlap"
    # the training images' top-1 joins the splits where every run stored it
    fitted = [dict(r, train=90.0 + r["val"] - 80.0) for r in runs]
    (row,) = tool.paired_gains(fitted, ["base", "es", "other"])
    assert row[2:6] == [pytest.approx(1.75), pytest.approx(0.3535534), "+2.00 +1.50", "overlap"] and len(row) == 14
    assert len(tool.paired_gains(fitted[:-1] + runs[-1:], ["base", "es"])[0]) == 10
    assert tool._ranges([90.0, 91.0], [80.0, 81.0]) == "above" and tool._ranges([80.0, 81.0], [90.0, 90.5]) == "below"
    assert tool._ranges([91.0], [90.0]) == "one seed"  # no spread: a single seed says nothing about overlap


def test_report_gives_train_seconds_per_device():
    args = tool.argparse.Namespace(options=["baseline", "ES"], widths=[16, 32, 64], train_subset=None, epochs=4,
                                   two_step=False, lr=1e-3, weight_decay=5e-6, binary_weight_decay=0.0,
                                   threshold_lr_mult=1.0, batch_size=128, val_per_class=500)
    runs = [dict(options=name, seed=seed, val=80.0 + seed, test=80.0, seconds=seconds, device=device)
            for name in ("baseline", "ES") for seed, seconds, device in ((0, 100.0, "NVIDIA H200"), (1, 3000.0, "cpu"),
                                                                         (2, 5000.0, "cpu"))]
    text = tool.report(runs, args)
    # GPU runs stored without a precision ran PyTorch's default TF32 convolutions; the tool's own run full fp32
    assert "trained on NVIDIA H200 (TF32 convolutions), cpu." in text
    assert "train seconds per run (mean): 100 on NVIDIA H200 (TF32 convolutions), 4000 on cpu." in text
    assert "train seconds per run (mean): 100." in tool.report([r for r in runs if r["seed"] == 0], args)
    fp32 = [dict(r, precision="fp32") for r in runs]
    assert "trained on NVIDIA H200, cpu." in tool.report(fp32, args)
    assert "trained on NVIDIA H200, NVIDIA H200 (TF32 convolutions), cpu." in tool.report(fp32[:2] + runs[2:], args)
    assert "Train top-1 (%)" not in text
    fitted = [dict(r, train=95.0 + r["seed"], train_loss=[1.0, 0.1 * r["seed"]]) for r in runs]
    assert [(r["Train top-1 (%)"], r["Val top-1 (%)"], r["Last-epoch loss"])
            for r in markdown_table(tool.report(fitted, args))] == [("96", "81", "0.1")] * 2
    assert "Train top-1 (%)" not in tool.report(fitted[1:] + runs[:1], args)  # a run stored before train top-1
    assert "thresholds" not in text
    faster = tool.report(runs, tool.argparse.Namespace(**dict(vars(args), threshold_lr_mult=100.0)))
    assert "Adam 0.001, thresholds 100x lr, widths 16-32-64" in faster
    assert "Adam 0.001 with cosine decay (the RSign shifts, the binarisation thresholds, at 100 times that)" in faster


@pytest.mark.parametrize("mult", [1.0, 30.0])
def test_thresholds_train_at_their_own_learning_rate(mult):
    # Adam's first step moves a parameter by its group's learning rate times |g| / (|g| + eps): at most that rate,
    # and that rate within rounding where the gradient is not tiny
    torch.manual_seed(0)
    model = tool.build(tool.OPTION_SETS["ES + RSign, spread thresholds"], [8, 16, 32])
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    args = tool.argparse.Namespace(lr=1e-3, weight_decay=0.0, binary_weight_decay=0.0, threshold_lr_mult=mult,
                                   batch_size=16, epochs=1)
    x, y = torch.randint(0, 256, (16, 1, 28, 28)).float(), torch.arange(16) % 10
    tool.fit(model, args, torch.Generator().manual_seed(0), x, y)
    steps = {"threshold": 0.0, "other": 0.0}
    for name, p in model.named_parameters():
        kind = "threshold" if name.endswith("act_binarizer.shift.bias") else "other"
        steps[kind] = max(steps[kind], (p.detach() - before[name]).abs().max().item() / args.lr)
    assert steps == {"threshold": pytest.approx(mult, rel=1e-4), "other": pytest.approx(1.0, rel=1e-4)}


def test_cuda_runs_use_full_fp32_convolutions_and_matmuls():
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    before = conv.fp32_precision, matmul.fp32_precision
    try:
        conv.fp32_precision = matmul.fp32_precision = "tf32"
        tool.full_fp32_on_cuda()
        assert (conv.fp32_precision, matmul.fp32_precision) == ("ieee", "ieee")
    finally:
        conv.fp32_precision, matmul.fp32_precision = before


def test_section_of_another_benchmark_is_refused(capsys):
    with pytest.raises(SystemExit):
        tool.main(["--section", "fashion", "--report-only"])
    assert "--section 'fashion': expected 'fashion-options' or 'fashion-options-NAME'" in capsys.readouterr().err


def test_two_step_trains_the_teacher_first_then_step_2_from_step_1(tmp_path, monkeypatch, capsys):
    make_fashion(tmp_path / "fashion", per_class=(4, 2))
    out = tmp_path / "report.md"
    calls = []

    def recording_fit(model, args, generator, train_x, train_y, teacher=None):
        start = {k: v.clone() for k, v in model.state_dict().items()}
        result = fit(model, args, generator, train_x, train_y, teacher)
        calls.append(dict(binary=any(getattr(m, "is_binary", False) for m in model.modules()),
                          teacher=None if teacher is None else {k: v.clone() for k, v in teacher.state_dict().items()},
                          start=start, end={k: v.clone() for k, v in model.state_dict().items()}))
        return result

    fit = tool.fit
    monkeypatch.setattr(tool, "fit", recording_fit)
    args = ["--data-root", str(tmp_path / "fashion"), "--val-per-class", "1", "--epochs", "1", "--seeds", "0",
            "--device", "cpu", "--batch-size", "10", "--work-dir", str(tmp_path / "work"), "--out", str(out),
            "--two-step", "--options", "ES tau=4 + RSign, spread thresholds", "--section", "fashion-options-kd"]
    tool.main(args)
    teacher_fit, step1, step2 = calls
    assert teacher_fit["teacher"] is None and not teacher_fit["binary"]
    assert not step1["binary"] and step2["binary"]  # step 1 real weights, step 2 fully binary
    for step in (step1, step2):  # both distilled from the teacher as it ended its training
        assert step["teacher"].keys() == teacher_fit["end"].keys()
        assert all(torch.equal(step["teacher"][k], teacher_fit["end"][k]) for k in step["teacher"])
    assert step2["start"].keys() == step1["end"].keys()
    assert all(torch.equal(step2["start"][k], step1["end"][k]) for k in step2["start"])
    work = tmp_path / "work"
    one_step = "epochs=1_train_subset=None_val_per_class=1_batch_size=10_lr=0.001_weight_decay=5e-06_" \
               "binary_weight_decay=0.0_widths=16-32-64"
    assert sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_file()) == [
        f"{one_step}/full-precision_seed0.json", f"{one_step}/full-precision_seed0.pt",
        f"{one_step}_two_step=True/es-tau-4-rsign-spread-thresholds_seed0.json"]
    run = json.loads((work / f"{one_step}_two_step=True/es-tau-4-rsign-spread-thresholds_seed0.json").read_text())
    assert run["settings"]["teacher"] == tool.OPTION_SETS["full precision"]
    assert {"step1_val", "teacher_val"} <= set(run)
    text = out.read_text()
    assert ("## ES design options on Fashion-MNIST (all training images, 1 + 1 epochs, two-step + KD, Adam 0.001, "
            "widths 16-32-64, weight decay 5e-06/0)") in text
    assert "| ES tau=4 + RSign, spread thresholds | 4 | 1 |" in text and "recipe (on cpu; validation top-1" in text
    # a rerun reuses everything; without its weights the teacher is trained again
    calls.clear()
    tool.main(args)
    assert calls == []
    (work / one_step / "full-precision_seed0.pt").unlink()
    (work / f"{one_step}_two_step=True/es-tau-4-rsign-spread-thresholds_seed0.json").unlink()
    tool.main(args + ["--seeds", "0", "1"])
    assert [c["teacher"] is None for c in calls] == [True, True, False, False, False, False]  # teachers first
    # a teacher stored with other options is trained again, and so is every run it taught
    calls.clear()
    monkeypatch.setitem(tool.OPTION_SETS, "full precision", dict(tool.OPTION_SETS["full precision"],
                                                                 stem_norm_after_expand=False))
    tool.main(args)
    assert [c["teacher"] is None for c in calls] == [True, False, False]
    with pytest.raises(SystemExit):
        tool.main(args[:-4] + ["--options", "full precision"])
    assert "--two-step: 'full precision' is the teacher of the two-step recipe" in capsys.readouterr().err


def test_option_set_that_does_not_fit_the_widths_is_refused(capsys):
    with pytest.raises(SystemExit):
        tool.main(["--options", "baseline", "ES tau=3 + RSign, spread thresholds", "--report-only"])
    err = capsys.readouterr().err
    assert "option set 'ES tau=3 + RSign, spread thresholds' at --widths 16 32 64:" in err
    assert "out_channels=16 is not divisible by expand_ratio*es_groups=3*1=3" in err
