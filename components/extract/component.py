"""KFP shell of the extract stage; the logic lives in components.extract.stage (queries in runner and ga4)."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def extract(
    warehouse_uri: str,
    extracted: Output[Dataset],
    window_start: str = "",
    window_end: str = "",
    event_types: str = "",
    min_events_per_user: int = 1,
    run_time: str = "",
    window_days: float = 0.0,
    job_create_time: str = "",
):
    """Extracts events, items (and impressions) of a time window into Parquet plus manifest.json.

    warehouse_uri: duckdb:///abs/path/shop.duckdb or bigquery://project.dataset. Window bounds are ISO-8601
    ("" = open), event_types is comma-separated ("" = all), run_time is the run's own time, else the pipeline
    job's creation time (components.run_time.of_run; neither = now): later events are dropped as future_event, as
    in components.extract.stage.run. window_days > 0 extracts the last window_days whole UTC days before that
    time's day instead of a fixed window.
    """
    from components import kfp_metrics
    from components.extract import stage

    stage.run(**kfp_metrics.task_arguments(locals()))
