"""What a local run prints and returns: a quiet terminal while it runs, and a closing summary of what it did.

Quiet (the default): one line when a task starts and one when it ends (its time and key figures, read from the
metrics the task logged), the stages' own progress lines (per-epoch training lines with the time left), errors,
and anything not known to be noise. Known-harmless noise is silenced where it starts when that is ours to set
(Python warnings of kfp.local about settings and images that only matter in a container) and otherwise dropped
from the stream kfp.local prints each task's output through, by pattern: kfp's executor bookkeeping and its
executor-input JSON, the task-outputs listing (which holds a 23,000-character ClassificationMetrics line), and the
CUDA probing lines TensorFlow writes before its logging starts on a machine without a GPU, and oneDNN's notes
on a CPU without AVX-512. Verbose prints all.

The summary names only what exists: a run that does not bless says so, why, and that export was skipped.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

ANSI = re.compile(r"\x1b\[[0-9;]*m")
KFP_LOG = re.compile(r"^\d\d:\d\d:\d\d\.\d+ - (?P<level>[A-Z]+) - (?P<message>.*)$")
EXECUTING = re.compile(r"^Executing task '(?P<task>[^']+)'$")
FINISHED = re.compile(r"^Task '(?P<task>[^']+)' finished with status (?P<status>\w+)$")
OUTPUTS = re.compile(r"^Task '(?P<task>[^']+)' (outputs:|has no outputs)$")
# Lines known to be harmless, as the subprocess prints them (kfp indents them by four spaces).
NOISE = (
    re.compile(r"^\[KFP Executor .*\]: "),  # kfp's own bookkeeping in the task process
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"),
    re.compile(r"^[IW]\d{4} [\d:.]+ +\d+ cudart_stub\.cc:\d+\] Could not find cuda drivers"),
    re.compile(r"^E\d{4} [\d:.]+ +\d+ cuda_(platform|executor|diagnostics)\.cc:\d+\] failed call to cuInit"),
    # oneDNN's start-up notes on a CPU without AVX-512: the numerics and the fallback are expected, not errors.
    re.compile(r"^I\d{4} [\d:.]+ +\d+ port\.cc:\d+\] oneDNN custom operations are on\."),
    re.compile(r"^E\d{4} [\d:.]+ +\d+ util\.cc:\d+\] oneDNN supports DT_\w+ only on platforms with AVX-512\."),
    re.compile(r"^Unable to fetch remote prism binary at "),  # Beam probes for Prism; the local run uses FnApiRunner
    re.compile(r"^-{20,}$"),
    re.compile(r"^Streamed logs:$"),
)
# Python warnings of kfp.local that are true of every local task and harmless: resources and the image only
# apply in a container, and the subprocess runs the same code the image holds.
QUIET_WARNINGS = (
    (UserWarning, r"Task '.*': settings \[.*\] have no effect in the current"),
    (RuntimeWarning, r"You may be attemping to run a task that uses custom or non-Python base image"),
)
# The figures a task's end line shows, the first ones present in the metrics it logged.
KEY_FIGURES = (
    "events",
    "users",
    "items",
    "examples_retrieval_train",
    "valid_ndcg_at_20",
    "valid_hit_at_20",
    "auc",
    "gauc",
    "funnel_ndcg_at_20",
    "export_n",
    "rows",
    "recommendation_rows",
    "ope_truth",
    "ope_mrdr_estimate",
    "bandit_feedback_rows",
    "ab_chi2_p",
)
MAX_FIGURES = 3


def read_executor_output(task_dir: Path) -> dict:
    """A task's executor_output.json (its output parameters and metrics); {} when the task wrote none."""
    path = task_dir / "executor_output.json"
    return json.loads(path.read_text()) if path.exists() else {}


def task_metrics(task_dir: Path) -> dict[str, float]:
    """The scalars a task logged (its Metrics artifacts' metadata, `@` spelled `_at_` as in the console) and its
    returned parameters."""
    output = read_executor_output(task_dir)
    values = dict(output.get("parameterValues", {}))
    for artifacts in output.get("artifacts", {}).values():
        for artifact in artifacts.get("artifacts", []):
            values.update(
                {
                    k.replace("@", "_at_"): v
                    for k, v in artifact.get("metadata", {}).items()
                    if isinstance(v, (int, float))
                }
            )
    return values


def key_figures(values: dict) -> str:
    """The few figures of a task worth one line in a quiet run (blessed first), as "name value, ..."."""
    shown = [(name, values[name]) for name in KEY_FIGURES if name in values][:MAX_FIGURES]
    if "Output" in values and isinstance(values["Output"], bool):
        shown.insert(0, ("blessed", values["Output"]))
    return ", ".join(f"{name} {_number(value)}" for name, value in shown)


def _number(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1:
        return f"{int(value):,}"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


class QuietStream:
    """A text stream that passes through only what a reader of a quiet run needs (see the module docstring)."""

    def __init__(self, target: TextIO, pipeline_root: Path):
        self.target = target
        self.pipeline_root = pipeline_root
        self.started: dict[str, float] = {}
        self.pending = ""
        self.skip_indented = False  # inside a "Task 'x' outputs:" listing
        self.json_indent: int | None = None  # inside an executor-input JSON block, its opening brace's indent
        self.lines = 0

    def write(self, text: str) -> int:
        """Buffers `text` and passes each complete line through the filter; returns len(text) as a stream must."""
        self.pending += text
        *complete, self.pending = self.pending.split("\n")
        for line in complete:
            self._line(line)
        return len(text)

    def flush(self) -> None:
        """Flushes the wrapped stream (a partial line stays buffered until its end arrives)."""
        self.target.flush()

    def isatty(self) -> bool:
        """Whether the wrapped stream is a terminal, so progress bars behind it behave as they would without the
        filter."""
        return self.target.isatty()

    def _emit(self, text: str) -> None:
        self.target.write(text + "\n")
        self.target.flush()
        self.lines += 1

    def _line(self, raw: str) -> None:
        line = ANSI.sub("", raw)
        stripped = line.strip()
        indent = len(line) - len(line.lstrip(" "))
        if self.json_indent is not None:
            if stripped == "}" and indent == self.json_indent:
                self.json_indent = None
            return
        if self.skip_indented:
            if line.startswith(" ") or not stripped:
                return
            self.skip_indented = False
        if not stripped:
            return
        if stripped.endswith("Got executor_input:"):
            self.json_indent = indent  # kfp prints the JSON at the log line's indent
            return
        match = KFP_LOG.match(stripped)
        if match:
            self._kfp_line(match["level"], match["message"], raw)
            return
        if any(pattern.match(stripped) for pattern in NOISE):
            return
        self._emit("  " + stripped if line.startswith(" ") else stripped)

    def _kfp_line(self, level: str, message: str, raw: str) -> None:
        clock = time.strftime("%H:%M:%S")
        if match := EXECUTING.match(message):
            self.started[match["task"]] = time.perf_counter()
            self._emit(f"{clock} {match['task']}: started")
        elif match := FINISHED.match(message):
            task = match["task"]
            seconds = time.perf_counter() - self.started.get(task, time.perf_counter())
            figures = key_figures(task_metrics(self._task_dir(task))) if match["status"] == "SUCCESS" else ""
            status = "finished" if match["status"] == "SUCCESS" else f"FAILED ({match['status']})"
            self._emit(f"{clock} {task}: {status} in {seconds:.0f} s" + (f": {figures}" if figures else ""))
        elif OUTPUTS.match(message):
            self.skip_indented = True
        elif level in ("WARNING", "ERROR", "CRITICAL") or message.startswith("Pipeline "):
            self._emit(ANSI.sub("", raw).strip())

    def _task_dir(self, task: str) -> Path:
        runs = [p for p in self.pipeline_root.iterdir() if p.is_dir()] if self.pipeline_root.is_dir() else []
        return max(runs, key=lambda p: p.stat().st_mtime) / task if runs else self.pipeline_root / task


@contextlib.contextmanager
def console(pipeline_root: Path, verbose: bool) -> Iterator[None]:
    """While the run lasts: everything (verbose), or the quiet stream on stdout and stderr."""
    if verbose:
        yield
        return
    out, err = sys.stdout, sys.stderr
    quiet_out, quiet_err = QuietStream(out, pipeline_root), QuietStream(err, pipeline_root)
    with warnings.catch_warnings():
        for category, message in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        sys.stdout, sys.stderr = quiet_out, quiet_err
        try:
            yield
        finally:
            for stream in (quiet_out, quiet_err):
                if stream.pending:
                    stream.write("\n")
            sys.stdout, sys.stderr = out, err


def outputs(output: Path, run_dir: Path, warehouse: Path, seconds: float) -> dict:
    """Where this run's outputs are, naming only files it wrote (or, for the warehouse, read)."""
    summary_path = run_dir / "evaluation" / "summary"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    exported = (run_dir / "export" / "executor_output.json").exists()
    result = {
        "run": str(run_dir),
        "warehouse": str(warehouse),
        "seconds": seconds,
        "blessed": bool(summary.get("blessed")),
        "exported": exported,
    }
    named = {"report": run_dir / "evaluation" / "report.html", "summary": summary_path}
    if exported:
        named["recommendations"] = output / "recommendations.duckdb"
    if summary.get("registered"):
        named["registry"] = output / "registry"
    result.update({name: str(path) for name, path in named.items() if path.exists()})
    return result


def describe(result: dict, output: Path) -> list[str]:
    """The closing lines: blessed or not and why, what was exported where (or that export was skipped)."""
    run_dir = Path(result["run"])
    summary = json.loads(Path(result["summary"]).read_text()) if "summary" in result else None
    minutes, seconds = divmod(int(round(result["seconds"])), 60)
    lines = [f"pipeline finished in {minutes} min {seconds:02d} s: run {run_dir.name}"]
    if summary is None:
        return lines + ["evaluation wrote no summary, so nothing was decided or exported"]
    gate = summary["gate"]
    lines.append(
        f"{'BLESSED' if summary['blessed'] else 'NOT BLESSED'}: funnel {gate['metric']} "
        f"{gate['candidate']:.4f} on {summary['users']} test users. Why:"
    )
    lines += [f"  {reason}" for reason in gate["reasons"]]
    if result["exported"]:
        export = task_metrics(run_dir / "export")
        counts = ", ".join(
            f"{name} {_number(value)}"
            for name, value in export.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        )
        lines.append(
            f"exported to {result.get('recommendations', '(destination)')}" + (f": {counts}" if counts else "")
        )
        if "registry" in result:
            lines.append(
                f"registered {summary['registered'].get('version', summary['model_version'])} in {result['registry']}"
            )
    else:
        previous = output / "recommendations.duckdb"
        kept = (
            f"{previous} still holds the last blessed model's lists"
            if previous.exists()
            else "no recommendations table exists yet"
        )
        lines.append(f"export skipped (not blessed): nothing was written for users; {kept}")
    lines.append(f"report: {result['report']}" if "report" in result else "no report was written")
    return lines
