"""What a local run prints: the quiet terminal keeps task start/end lines, stage progress and errors and drops
kfp's and TensorFlow's known noise; the closing summary of a run that did not bless names no output it did not
write. Also: README's parameter table is the DAG's signature, and `make help` lists every target."""

import io
import json
import re
import subprocess
from pathlib import Path

import pytest

from pipelines import parameters_doc, run_output

ROOT = Path(__file__).resolve().parents[2]

# What kfp.local prints for one task (abridged from a verbose run), with the lines the quiet terminal keeps marked.
TASK_LOG = """\x1b[1m20:35:23.656 - INFO - Executing task \x1b[96m'retrieval'\x1b[0m
20:35:23.656 - INFO - Streamed logs:

    [KFP Executor 2026-12-01 20:35:24,436 INFO]: Looking for component `retrieval` in --component_module_path `/tmp/x.py`
    [KFP Executor 2026-12-01 20:35:24,460 INFO]: Got executor_input:
    {
        "inputs": {
            "artifacts": {}
        },
        "outputs": {"outputFile": "/tmp/executor_output.json"}
    }
    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:1796157529.396475    6666 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
    E0000 00:00:1796157569.778401    6666 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)
    I0000 00:00:1796197835.709219   12887 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results due to floating-point round-off errors from different computation orders. To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.
    E0000 00:00:1796197842.613292   12887 util.cc:131] oneDNN supports DT_INT64 only on platforms with AVX-512. Falling back to the default Eigen-based implementation if present.
    2026-12-01 20:36:00,001 components.retrieval.training epoch 1/12  loss 5.1234  valid hit@20 0.1000 ndcg@20 0.0500  3.0s  *best
    E0000 00:00:1796157569.778401    6666 some_op.cc:12] a real TensorFlow error
    [KFP Executor 2026-12-01 20:36:24,436 INFO]: Wrote executor output file to /tmp/executor_output.json.


20:36:25.266 - INFO - Task 'retrieval' finished with status SUCCESS
20:36:25.266 - INFO - Task 'retrieval' outputs:
    metrics: Metrics( name='metrics',
                      uri='/tmp/metrics',
                      metadata={'valid_ndcg_at_20': 0.05} )
--------------------------------------------------------------------------------
"""


def test_quiet_terminal_keeps_progress_and_errors_and_drops_known_noise(tmp_path):
    run = tmp_path / "root" / "shop-recommender-1"
    (run / "retrieval").mkdir(parents=True)
    (run / "retrieval" / "executor_output.json").write_text(
        json.dumps(
            {
                "artifacts": {
                    "metrics": {
                        "artifacts": [
                            {
                                "name": "metrics",
                                "uri": "/tmp/metrics",
                                "metadata": {"valid_ndcg@20": 0.05, "best_epoch": 1.0},
                            }
                        ]
                    }
                }
            }
        )
    )
    shown = io.StringIO()
    stream = run_output.QuietStream(shown, tmp_path / "root")
    for chunk in (TASK_LOG[:100], TASK_LOG[100:]):  # writes need not end at a line
        stream.write(chunk)
    lines = shown.getvalue().splitlines()
    assert len(lines) == stream.lines == 4, lines
    assert re.fullmatch(r"\d\d:\d\d:\d\d retrieval: started", lines[0])
    assert "epoch 1/12  loss 5.1234" in lines[1]
    assert "a real TensorFlow error" in lines[2]
    assert re.fullmatch(r"\d\d:\d\d:\d\d retrieval: finished in \d+ s: valid_ndcg_at_20 0\.0500", lines[3])


def test_a_failed_task_and_a_traceback_stay_visible(tmp_path):
    shown = io.StringIO()
    stream = run_output.QuietStream(shown, tmp_path)
    stream.write(
        "    Traceback (most recent call last):\n    ValueError: bad input\n"
        "20:36:25.266 - ERROR - Task 'features' finished with status FAILURE\n"
    )
    text = shown.getvalue()
    assert "ValueError: bad input" in text and "features: FAILED (FAILURE)" in text


def _summary(blessed: bool) -> dict:
    reason = ("PASS" if blessed else "FAIL") + ": candidate ndcg@20 0.4000 ... against baseline item_to_item"
    summary = {
        "blessed": blessed,
        "model_version": "v2",
        "users": 137,
        "gate": {"metric": "ndcg@20", "candidate": 0.4, "reasons": [reason]},
    }
    if blessed:
        summary["registered"] = {"version": "v2"}
    return summary


def _run_folder(tmp_path, blessed: bool) -> tuple[Path, Path]:
    output = tmp_path / "out"
    run = output / "pipeline_root" / "shop-recommender-2"
    (run / "evaluation").mkdir(parents=True)
    (run / "evaluation" / "summary").write_text(json.dumps(_summary(blessed)))
    (run / "evaluation" / "report.html").write_text("<html></html>")
    (output / "warehouse.duckdb").write_text("")
    if blessed:
        (run / "export").mkdir()
        (run / "export" / "executor_output.json").write_text(
            json.dumps(
                {
                    "artifacts": {
                        "metrics": {"artifacts": [{"metadata": {"users": 137.0, "recommendation_rows": 2740.0}}]}
                    }
                }
            )
        )
        (output / "recommendations.duckdb").write_text("")
        (output / "registry").mkdir()
    return output, run


def test_a_run_that_does_not_bless_says_so_and_names_no_missing_output(tmp_path):
    output, run = _run_folder(tmp_path, blessed=False)
    result = run_output.outputs(output, run, output / "warehouse.duckdb", 61.0)
    assert result["blessed"] is False and result["exported"] is False
    named = {k: v for k, v in result.items() if isinstance(v, str)}
    assert set(named) == {"run", "warehouse", "report", "summary"}
    assert all(Path(path).exists() for path in named.values()), "an output named that was not written"
    lines = run_output.describe(result, output)
    text = "\n".join(lines)
    assert lines[0] == "pipeline finished in 1 min 01 s: run shop-recommender-2"
    assert "NOT BLESSED: funnel ndcg@20 0.4000 on 137 test users" in text and "FAIL: candidate" in text
    assert "export skipped (not blessed)" in text and "no recommendations table exists yet" in text
    assert "recommendations.duckdb" not in text


def test_a_blessed_run_says_what_was_exported_where(tmp_path):
    output, run = _run_folder(tmp_path, blessed=True)
    result = run_output.outputs(output, run, output / "warehouse.duckdb", 200.0)
    assert result["exported"] and Path(result["recommendations"]).exists() and Path(result["registry"]).exists()
    text = "\n".join(run_output.describe(result, output))
    assert f"exported to {output / 'recommendations.duckdb'}: users 137, recommendation_rows 2,740" in text
    assert "registered v2" in text and "BLESSED" in text and "NOT BLESSED" not in text


def test_readme_lists_every_pipeline_parameter_with_its_default():
    readme = (ROOT / "README.md").read_text()
    assert parameters_doc.with_table(readme) == readme, (
        "README's parameter table is stale: python -m pipelines.parameters_doc"
    )
    from pipelines.run import parameter_types

    table = readme.split(parameters_doc.START)[1].split(parameters_doc.END)[0]
    assert [re.match(r"\| `(\w+)`", line)[1] for line in table.strip().splitlines()[2:]] == list(parameter_types())
    assert "| `ranking_epochs` | integer | `3` |" in table and "| `gate_on_ope` | bool | `false` |" in table


def test_make_help_lists_every_target():
    makefiles = [ROOT / "Makefile", ROOT / "docker" / "images.mk"]
    targets = {m[1] for path in makefiles for m in re.finditer(r"^([a-zA-Z0-9_-]+):(?!=)", path.read_text(), re.M)}
    shown = subprocess.run(
        ["make", "-s", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    listed = {line.split()[0] for line in shown.splitlines() if line.strip()}
    assert targets == listed, f"targets without a ## description: {targets - listed}"
    assert all(len(line.split(None, 1)) == 2 for line in shown.splitlines() if line.strip())


@pytest.mark.parametrize("value", [True, False])
def test_key_figures_show_the_blessing_of_evaluation(value):
    assert (
        run_output.key_figures({"Output": value, "funnel_ndcg_at_20": 0.5, "export_n": 30.0})
        == f"blessed {'yes' if value else 'no'}, funnel_ndcg_at_20 0.5000, export_n 30"
    )


def test_known_kfp_warnings_are_silenced_and_others_are_not(tmp_path):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with run_output.console(tmp_path, verbose=False):
            warnings.warn(
                "Task 'extract': settings ['cpu_limit'] have no effect in the current local runner and "
                "will be ignored.",
                UserWarning,
                stacklevel=1,
            )
            warnings.warn(
                'You may be attemping to run a task that uses custom or non-Python base image "x"',
                RuntimeWarning,
                stacklevel=1,
            )
            warnings.warn("something new", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something new"]
