"""Experiments named by URI: read through pyarrow's filesystems (here ``file://``; S3 in test_object_storage.py)."""

from __future__ import annotations

import shutil

import pandas as pd

import analysis
from analysis.storage import local_copy
from sweeps.run import child, experiment_path, split_path
from sweeps.status import experiment_counts


def with_a_checkpoint(experiment, tmp_path):
    """A copy of the standard experiment whose first trial holds a checkpoint (with its own result.json)."""
    copy = shutil.copytree(experiment, tmp_path / experiment.name)
    trial = sorted(p for p in copy.iterdir() if p.is_dir())[0]
    (trial / "checkpoint_000000").mkdir(exist_ok=True)  # the fake trials may hold one already
    (trial / "checkpoint_000000" / "result.json").write_text("{}\n")
    (trial / "checkpoint_000000" / "model.pt").write_bytes(b"\0" * 1024)
    return copy


def test_a_uri_reads_like_the_folder_it_names_and_names_itself(experiment, results, tmp_path):
    copy = with_a_checkpoint(experiment, tmp_path)
    uri = f"file://{copy}"
    from_uri = analysis.load(uri)
    pd.testing.assert_frame_equal(from_uri.trials.drop(columns="trial_dir"), results.trials.drop(columns="trial_dir"))
    pd.testing.assert_frame_equal(from_uri.epochs, results.epochs)
    assert from_uri.paths == {"sweep_a": uri} and from_uri.specs == results.specs
    assert len(from_uri.warnings) == len(results.warnings) and all(uri in w for w in from_uri.warnings)


def test_the_local_copy_holds_the_files_the_analysis_reads_and_no_checkpoint(experiment, tmp_path):
    copy = with_a_checkpoint(experiment, tmp_path)
    with local_copy(f"file://{copy}") as folder:
        copied = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        assert folder.name == copy.name
    assert not folder.exists()
    wanted = {
        p.relative_to(copy).as_posix()
        for p in copy.rglob("*")
        if p.is_file()
        and "checkpoint_" not in str(p)
        and (
            p.name in ("params.json", "result.json", "error.txt", "error.pkl", "spec.yaml")
            or p.name.startswith("experiment_state-")
        )
    }
    assert copied == wanted and not any("checkpoint_" in path for path in copied)


def test_sweep_status_counts_the_trials_at_a_uri(experiment):
    assert experiment_counts(f"file://{experiment}") == experiment_counts(experiment)


def test_experiment_uris_keep_their_query_last():
    storage = "s3://bucket/sweeps?endpoint_override=http://127.0.0.1:9000"
    path = experiment_path(storage, "quick")
    assert path == "s3://bucket/sweeps/quick?endpoint_override=http://127.0.0.1:9000"
    assert split_path(path) == (storage, "quick")
    assert child(path, "spec.yaml") == "s3://bucket/sweeps/quick/spec.yaml?endpoint_override=http://127.0.0.1:9000"
    assert split_path("/results/quick") == ("/results", "quick")
