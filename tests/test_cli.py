"""The command line: exit codes, one-line errors without tracebacks, and the results schema."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_official_batches, write_official_tarball

from cifar10_transfer.provenance import cpu_isa
from cifar10_transfer import workflow
from cifar10_transfer.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "cifar10_transfer", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)


def assert_clean_failure(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_help_lists_the_commands():
    result = cli("--help")
    assert result.returncode == 0
    for command in ("data", "train", "reproduce", "report"):
        assert command in result.stdout


def test_data_check_on_each_local_layout(tmp_path):
    write_official_batches(tmp_path / "batches" / "cifar-10-batches-py")
    (tmp_path / "tarball").mkdir()
    write_official_tarball(tmp_path / "tarball" / "cifar-10-python.tar.gz")
    (tmp_path / "tarball" / "staging").rename(tmp_path / "staging-elsewhere")
    from conftest import write_image_folders

    write_image_folders(tmp_path / "folders")
    for layout, kind in (("batches", "official batches"), ("tarball", "official tarball"),
                         ("folders", "image folders")):
        result = cli("data", "check", "--data-dir", tmp_path / layout)
        assert result.returncode == 0, result.stderr
        assert kind in result.stdout
        assert result.stdout.splitlines()[-1].split()[1:] == (["100", "20"] if layout != "folders" else ["30", "30"])


def test_data_check_synthetic():
    result = cli("data", "check", "--data", "synthetic")
    assert result.returncode == 0 and "synthetic" in result.stdout
    assert result.stdout.splitlines()[-1].split() == ["total", "12000", "2000"]


@pytest.mark.parametrize("args, fragments", [
    (["data", "check", "--data-dir", "/nonexistent/cifar"], ["does not exist"]),
    (["train", "--data", "synthetic", "--set", "bogus=1"], ["unknown key"]),
    (["train", "--data", "synthetic", "--set", "cnn_epochs=-1"], ["must be positive"]),
    (["train", "--data", "synthetic", "--profile", "smoke", "--set", "models=resnet50_head",
      "--weights", "/no/such.h5"],
     ["does not exist"]),
    (["train", "--data", "synthetic", "--out", "/proc/forbidden"], ["cannot write to output directory"]),
    (["report", "--out", "/nonexistent/out"], ["results.json"]),
])
def test_bad_input_gets_one_line_and_exit_2(args, fragments, tmp_path):
    assert_clean_failure(cli(*args, "--out", tmp_path) if args[0] == "train" and "--out" not in args
                         else cli(*args), *fragments)


def test_a_training_size_beyond_the_data_is_refused_in_one_line(tmp_path, capsys):
    # checked once the data is loaded, after TensorFlow's import: in this process, which has it already
    from cifar10_transfer.cli import main

    assert main(["train", "--data", "synthetic", "--set", "train_size=99999", "--out", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "larger than the 12000 training images" in lines[0]


@pytest.mark.parametrize("args", [
    ["--set", "bogus=1"],
    ["--set", "models=resnet50_head", "--weights", "/no/such.h5"],
    ["--out", "/proc/forbidden"],
])
def test_train_refuses_bad_settings_before_importing_tensorflow(args):
    probe = ("import sys; from cifar10_transfer.cli import main; "
             f"code = main(['train', '--data', 'synthetic', *{args!r}]); "
             "print(code, 'tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["2", "False"], result.stderr


def test_the_eda_notebook_imports_no_tensorflow():
    """Notebook 01 only looks at the data: its kernel starts without TensorFlow's seconds of import."""
    probe = ("import sys; import cifar10_transfer.analysis; "
             "from cifar10_transfer import load_dataset, make_config; print('tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["False"], result.stderr


def test_reproduce_imports_tensorflow_only_to_check_a_weights_file():
    from cifar10_transfer.cli import _needs_tensorflow, build_parser

    parse = build_parser().parse_args
    assert not _needs_tensorflow(parse(["reproduce"])) and not _needs_tensorflow(parse(["report"]))
    assert _needs_tensorflow(parse(["reproduce", "--weights", "backbone.weights.h5"]))
    assert _needs_tensorflow(parse(["train", "--weights", "none"]))


def test_corrupt_data_directory(tmp_path):
    batches = write_official_batches(tmp_path / "cifar-10-batches-py")
    (batches / "data_batch_2").write_bytes(b"garbage")
    assert_clean_failure(cli("data", "check", "--data-dir", batches), "data_batch_2")


def test_debug_shows_the_traceback():
    result = cli("--debug", "data", "check", "--data-dir", "/nonexistent/cifar")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_a_second_run_into_the_same_output_is_refused(tmp_path):
    from cifar10_transfer.publish import RunLock

    with RunLock(tmp_path):
        result = cli("train", "--data", "synthetic", "--profile", "smoke", "--out", tmp_path)
    assert_clean_failure(result, "another run is writing")


@pytest.mark.slow
def test_smoke_train_writes_the_documented_results(tmp_path):
    # ResNet50 at the smallest input it takes: a quarter of the pixels of the smoke profile's 64 px
    result = cli("train", "--profile", "smoke", "--data", "synthetic", "--weights", "none", "--out", tmp_path,
                 "--set", "models=cnn,resnet50_finetuned", "--set", "image_size=32")
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert set(results) >= {"config", "profile", "provenance", "data", "models", "not_run", "best_model"}
    assert results["profile"] == "smoke" and results["config"]["image_size"] == 32
    assert results["data"]["train"] + results["data"]["val"] == 500 and results["data"]["test"] == 500
    provenance = results["provenance"]
    assert provenance["weights"] == "none" and provenance["data"].startswith("synthetic")
    assert len(provenance["data_fingerprint"]) == 64 and provenance["packages"]["tensorflow"] == "2.21.0"
    assert provenance["cpu_isa"] == cpu_isa()
    assert set(results["models"]) == {"cnn", "resnet50_head", "resnet50_finetuned"}
    sizes = {"cnn": (356_810, 356_810), "resnet50_head": (24_114_826, 527_114)}
    for name, entry in results["models"].items():
        assert 0.0 <= entry["test_accuracy"] <= 1.0 and entry["test_loss"] > 0
        assert entry["epochs"] == 1 and entry["seconds"] > 0
        assert len(entry["per_class"]) == 10 and len(entry["confusion_matrix"]) == 10
        assert sum(map(sum, entry["confusion_matrix"])) == 500
        assert (entry["params"], entry["trainable_params"]) == sizes.get(name, (24_114_826, entry["trainable_params"]))
    assert results["models"]["resnet50_finetuned"]["trainable_params"] > 527_114
    for name in results["models"]:
        assert (tmp_path / "results" / "histories" / f"{name}.csv").is_file()


def test_reproduce_refuses_unreachable_weights_before_running_notebooks(tmp_path):
    result = cli("reproduce", "--data", "synthetic", "--weights", tmp_path / "missing.h5", "--out", tmp_path)
    assert_clean_failure(result, "does not exist")
    assert not (tmp_path / ".runs").exists()


def test_reproduce_refuses_missing_curves_to_keep_before_running_notebooks(tmp_path):
    result = cli("reproduce", "--data", "synthetic", "--curves-from", tmp_path / "learning_curves.json",
                 "--out", tmp_path)
    assert_clean_failure(result, "--curves-from", "is not a file", "leave it out to run notebook 03")
    assert not (tmp_path / ".runs").exists()


def test_kept_curves_land_in_the_run_as_notebook_03_would_leave_them(tmp_path):
    from cifar10_transfer.results import load_curves
    from cifar10_transfer.workflow import keep_curves

    source = ROOT / "results" / "learning_curves.json"  # the committed curves, beside their executed notebook
    keep_curves(source, load_curves(source), tmp_path)
    assert (tmp_path / "results" / "learning_curves.json").read_bytes() == source.read_bytes()
    executed = "results/notebooks/03_learning_curves.ipynb"
    assert (tmp_path / executed).read_bytes() == (ROOT / executed).read_bytes()
    assert sorted(path.name for path in (tmp_path / "images").iterdir()) == ["learning_curve.png",
                                                                            "resolution_cost.png"]


def test_cpu_isa_lists_the_vector_extensions_in_the_order_of_the_constant():
    cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx512_bf16 avx2 avx512f fma\n"
    assert cpu_isa(cpuinfo) == ["avx2", "fma", "avx512f", "avx512_bf16"]
    assert cpu_isa("model name\t: Apple M2\n") == []


@pytest.mark.parametrize("module, writer, target", [
    ("runs", "write_atomic", "results.json"),
    pytest.param("training", "atomic_write", "final.weights.h5", marks=pytest.mark.slow)])
def test_a_full_disk_is_one_line_and_leaves_the_published_run_as_it_was(tmp_path, monkeypatch, capsys, module,
                                                                        writer, target):
    import errno
    import importlib

    from cifar10_transfer.cli import main

    args = ["train", "--data", "synthetic", "--profile", "smoke", "--weights", "none", "--out", str(tmp_path),
            "--set", "models=cnn", "--set", "train_size=200", "--set", "test_size=100"]
    assert main(args) == 0
    published = (tmp_path / "results" / "results.json").read_bytes()
    patched = importlib.import_module(f"cifar10_transfer.{module}")
    original = getattr(patched, writer)

    def full_disk(path, *rest):
        if str(path).endswith(target):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return original(path, *rest)

    monkeypatch.setattr(patched, writer, full_disk)
    capsys.readouterr()
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no space left on device for ") and target in lines[0]
    assert (tmp_path / "results" / "results.json").read_bytes() == published


def test_offline_a_run_leaves_out_the_stages_whose_weights_cannot_be_had_and_says_so_last(tmp_path, monkeypatch,
                                                                                           capsys):
    from cifar10_transfer import weights
    from cifar10_transfer.cli import main

    monkeypatch.setattr(weights, "imagenet_status", lambda backbone: "unavailable offline")  # as on this machine
    args = ["train", "--data", "synthetic", "--profile", "smoke", "--out", str(tmp_path), "--set",
            "models=cnn,resnet50_finetuned", "--set", "train_size=200", "--set", "test_size=100"]
    assert main([*args, "--strict"]) == 2
    assert "ImageNet weights for ResNet50" in capsys.readouterr().err and not (tmp_path / "results").exists()
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == lines[-1] and lines[-1].startswith("not run: ResNet50: ImageNet weights for ResNet50 ")
    assert "pass --weights PATH" in lines[-1]
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert list(results["models"]) == ["cnn"]
    assert results["not_run"] == {"resnet50_head": "ImageNet weights unavailable offline",
                                  "resnet50_finetuned": "ImageNet weights unavailable offline"}


def test_stderr_to_sends_child_processes_notices_to_the_file_and_restores_stderr(tmp_path, capfd):
    log = tmp_path / "kernels.log"
    with workflow.stderr_to(log):
        subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('kernel notice\\n')"], check=True)
    subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('after\\n')"], check=True)
    assert log.read_text() == "kernel notice\n"
    assert capfd.readouterr().err == "after\n"


def test_a_notebook_kernel_that_dies_is_one_line_that_says_to_resume(tmp_path, monkeypatch):
    import papermill
    from nbclient.exceptions import DeadKernelError

    def die(*args, **kwargs):
        raise DeadKernelError("Kernel died")

    monkeypatch.setattr(papermill, "execute_notebook", die)
    with pytest.raises(UserError, match=r"01_gathering_eda.ipynb: its kernel died .* rerun the same command with "
                                        r"--resume\.$"):
        workflow.reproduce("smoke", source="synthetic", weights="none", out=tmp_path)
