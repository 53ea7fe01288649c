"""The recommender DAG: extract -> features -> retrieval -> ranking -> off-policy evaluation -> evaluation
-> [if blessed] export, serving model -> register -> deploy.

Ranking trains on retrieval's candidates as hard negatives, because at serving it re-ranks exactly
those; trained against random items only, it made the funnel worse than retrieval alone. So the
data puts ranking after retrieval. The DIN baseline trains beside DIEN on the same inputs; evaluation scores it
in the funnel for the report (never for the gate), so it runs before evaluation, not after export. Off-policy
evaluation estimates the new ranker's click rate from the logged impressions (skipping, with a reason, on data
without them); evaluation reads its output into the report and the metrics, and with `gate_on_ope` also into
the gate, so it runs after it. Campaign evaluation measures complementary items and audiences on held-out
data (with `campaign_outputs`) and hands evaluation a file, as off-policy evaluation does. Export runs
only inside `dsl.If(blessed)`: a model that loses to the baselines or to the last blessed model
never reaches users; export also makes the model the last blessed one, once its lists are written. An optional Thompson-sampling bandit learns to re-rank retrieval's candidates, and the
A/B analysis reads the outcomes per variant once the export has written them. The blessed branch also builds
the serving model (the folder the prediction server loads), registers it once the export has succeeded, and
deploys it to an endpoint (no-ops without a project, where the local registry is what `make serve` follows). Every task runs in the pinned
component image with per-stage resources, which Vertex AI and Kubeflow read and kfp.local ignores; the two trainers
run on the training machine named by RECSYS_TRAINING_MACHINE when the DAG is compiled (components/cloud/resources.py).
"""

from kfp import dsl

from components.cloud.component import deploy_model, register_models
from components.cloud.resources import apply_resources, apply_training_machine, training_machine
from components.evaluation.component import evaluation
from components.experiments.component import ab_analysis, bandit_reranker, off_policy_evaluation
from components.export.component import campaign_evaluation, export
from components.extract.component import extract
from components.features.component import features
from components.ranking.component import ranking
from components.retrieval.component import retrieval
from components.serving.component import serving_model

PIPELINE_NAME = "shop-recommender"


@dsl.pipeline(name=PIPELINE_NAME, description="Two-stage e-commerce recommender: two-tower retrieval, DIEN ranking.")
def recommender_pipeline(
    warehouse_uri: str,
    destination: str,
    registry_uri: str = "",
    window_start: str = "",
    window_end: str = "",
    window_days: float = 0.0,
    event_types: str = "",
    min_events_per_user: int = 3,
    max_len: int = 50,
    max_examples_per_user: int = 1000,
    ranking_task: str = "next_item",
    split: str = "leave_last_out",
    split_cut: str = "",
    split_window_days: float = 1.0,
    beam_args: str = "[]",
    user_scoring: str = "in_process",
    seed: int = 0,
    retrieval_epochs: int = 12,
    retrieval_refit_epochs: int = 2,
    train_input: str = "auto",
    retrieval_valid_max_users: int = 0,
    warm_start: bool = False,
    warm_start_epochs: int = 2,
    ranking_epochs: int = 3,
    ranking_refit_epochs: int = 2,
    ranking_train_input: str = "auto",
    candidates_n: int = 200,
    evaluation_max_users: int = 0,
    top_k: int = 20,
    gate_metric: str = "ndcg@20",
    margin_vs_baseline: float = 0.0,
    margin_vs_blessed: float = 0.0,
    gate_on_ope: bool = False,
    ope_estimator: str = "mrdr",
    ope_margin: float = 0.0,
    gate_on_drift: bool = False,
    drift_psi_threshold: float = 0.2,
    drift_js_threshold: float = 0.1,
    experiment: str = "ranker",
    treatment_ratio: float = 0.5,
    shop_preset: str = "",
    enable_bandit: bool = True,
    bandit_reward: str = "click",
    gcp_project: str = "",
    gcp_region: str = "",
    endpoint_name: str = "shop-recsys",
    endpoint_traffic_percentage: int = 100,
    run_time: str = "",
    campaign_outputs: str = "complementary_items,audiences",
    audience_targets: str = "",
    audience_size: int = 1000,
):
    """The daily run: extract, features, retrieval, DIEN (and the DIN baseline), evaluation, export if blessed.

    Args:
        warehouse_uri: Where the logs are: duckdb:///path or bigquery://project.dataset.
        destination: Where recommendations go: duckdb:///path or bigquery://project.dataset.
        registry_uri: Folder of the blessed models (local); "" compares with no last blessed model.
        window_start: First event time extracted (ISO date or time, UTC); "" from the first event.
        window_end: End of the extracted window (exclusive); "" to the last event.
        window_days: Above 0, extract the last window_days whole UTC days before run_time's day instead (a schedule's window moves one day per run); excludes window_start/window_end.
        event_types: Comma-separated event types to keep (view,cart,purchase,...); "" keeps all.
        min_events_per_user: Users with fewer events are dropped by the extract.
        max_len: History length kept per example (the last max_len items).
        max_examples_per_user: The most train examples (retrieval examples and their ranking rows) one user contributes, their latest; 0 = no cap. Both trainers' epochs and the ranker's hard negatives cost train examples: a shop with hundreds of thousands of users lowers it.
        ranking_task: What the ranker learns: next_item (what the funnel re-ranks for), cvr (purchase among viewed items) or auto.
        split: leave_last_out (the published protocol) or time: train before the cut, valid [cut, cut + d), test [cut + d, cut + 2d).
        split_cut: The time split's cut T (ISO, UTC); "" puts the test window at the end of the extracted window.
        split_window_days: The time split's window d in days.
        beam_args: JSON list of Beam pipeline options for the features job (Dataflow on Vertex), and for evaluation's and export's user scoring when user_scoring is beam.
        user_scoring: How evaluation and export score the users: in_process (one Python process, for a small shop) or beam (shards of users on Beam workers with beam_args: two local processes, or Dataflow); both give the same lists and figures.
        seed: Seed of the split, the models and the synthetic shop's simulator.
        retrieval_epochs: Most epochs of two-tower training (the best valid epoch is kept).
        retrieval_refit_epochs: Epochs the selected two-tower model then trains on train + valid (the valid rows as new ones, as a warm start), so the served model is trained through each user's last event before the test window; 0 serves the selected model.
        train_input: How retrieval reads its train split: memory (all of it at once), stream (partitioned by user into buckets on the training machine's local disk, one bucket in memory at a time) or auto (stream above 1,000,000 train examples: a 10M-user shop streams, the default and medium shops train in memory as before).
        retrieval_valid_max_users: Valid users the selections on valid score, those whose ids hash lowest (the same every epoch and run): each retrieval epoch's full-catalogue pass and the rankers' fusion weight (the funnel over valid); 0 scores every one. Each costs users x items; the refit still trains on every valid row.
        warm_start: Start retrieval and the DIEN ranker from the last blessed model (item rows carried by id, new items from their features) for warm_start_epochs; from scratch without one (DIN, a baseline the registry does not bless, trains from scratch).
        warm_start_epochs: Most epochs of a warm-started retrieval training (and of the DIEN ranker, at most ranking_epochs, over the rows its parent did not train on plus a 0.2 replay of the others).
        ranking_epochs: Most epochs of DIEN and DIN training (the best valid epoch is kept).
        ranking_refit_epochs: Epochs the selected DIEN and DIN then train on the valid steps plus a 0.2 replay of train (as a warm start), so the served ranker is trained through each user's last step before the test window, as the retriever it re-ranks is; the fusion weight is chosen with the selected ranker; 0 serves the selected model.
        ranking_train_input: How DIEN and DIN read their train split: memory (all of it at once), stream (partitioned by user into buckets on the training machine's local disk, one bucket and its hard negatives in memory at a time; valid and test then read in chunks, the refit by bucket too) or auto (stream above 1,000,000 train rows).
        candidates_n: Retrieval depth the evaluation scores the funnel at (the export's N is chosen up to it).
        evaluation_max_users: Test users the evaluation scores, those whose ids hash lowest (the same users every run); 0 scores every one. Full-catalogue scoring costs users x items: a shop with millions of users sets it (export still serves every user).
        top_k: Length of each exported recommendation list.
        gate_metric: Funnel metric the gate compares (hit@K, ndcg@K or mrr).
        margin_vs_baseline: Relative margin the candidate must beat the strongest baseline by (-0.99 blesses almost anything).
        margin_vs_blessed: Relative margin the candidate must beat the last blessed model by.
        gate_on_ope: Also require the off-policy click-rate estimate to reach the logged click rate less ope_margin (a stated no-op without impressions).
        ope_estimator: Estimator the OPE gate reads: ips, snips, dm, dr or mrdr.
        ope_margin: Relative shortfall of the OPE estimate below the logged click rate that the gate still accepts.
        gate_on_drift: Also refuse the blessing when the extract's distributions drifted from the last blessed run's (always a warning in the report).
        drift_psi_threshold: Population stability index above which a distribution of the extract (event types, categories, history lengths, item popularity) has drifted.
        drift_js_threshold: Jensen-Shannon distance (base 2) above which a distribution has drifted.
        experiment: A/B experiment name, hashed with the user id into an arm.
        treatment_ratio: Share of users in the treatment arm (the new model's lists).
        shop_preset: Synthetic shop preset that built the warehouse (gives OPE its true values); "" on real data.
        enable_bandit: Train the bandit re-rankers (Bayesian linear Thompson, Bayesian FM) beside the funnel, and run the simulated bandit study.
        bandit_reward: What a shown slot earns the bandits and the second OPE study: click (click 1, else 0), score (LINE's: impression 0.5, click 1, mute 0) or impression=<w>,click=<w>,mute=<w>.
        gcp_project: Google Cloud project whose Vertex AI Model Registry receives a blessed model; "" skips the upload.
        gcp_region: Region of that Model Registry.
        endpoint_name: The Vertex AI endpoint the blessed serving model is deployed to.
        endpoint_traffic_percentage: Share of the endpoint's traffic the new model gets (below 100: a canary beside the model that served before).
        run_time: The run's own time (ISO-8601, UTC): the extract's "now", the end of a window_days window and the export's day partition, so a retry replaces its own rows; pipelines.run sets it for a local or one-off run, empty (a schedule's runs) means the pipeline job's creation time, which every retry of the job keeps.
        campaign_outputs: Tables the export writes beside recommendations and similar_items, comma-separated: complementary_items (bought or carted together), audiences (top users per promoted target); "" writes neither.
        audience_targets: Promoted targets of the audiences, comma-separated category:<id> or item:<id>; "" (or top:<n>) the 5 (n) best-selling categories.
        audience_size: Users per audience (the top by the ranker's buy-or-not score).
    """
    extract_task = extract(
        warehouse_uri=warehouse_uri,
        window_start=window_start,
        window_end=window_end,
        event_types=event_types,
        min_events_per_user=min_events_per_user,
        run_time=run_time,
        window_days=window_days,
        job_create_time=dsl.PIPELINE_JOB_CREATE_TIME_UTC_PLACEHOLDER,
    )
    apply_resources(extract_task.set_display_name("extract"), "extract")

    features_task = features(
        extracted=extract_task.outputs["extracted"],
        max_len=max_len,
        max_examples_per_user=max_examples_per_user,
        seed=seed,
        ranking_task=ranking_task,
        beam_args=beam_args,
        split=split,
        split_cut=split_cut,
        split_window_days=split_window_days,
        registry_dir=registry_uri,
        drift_psi_threshold=drift_psi_threshold,
        drift_js_threshold=drift_js_threshold,
    )
    apply_resources(features_task.set_display_name("features"), "features")
    feature_data = features_task.outputs["features"]

    retrieval_task = retrieval(
        features=feature_data,
        epochs=retrieval_epochs,
        seed=seed,
        warm_start=warm_start,
        registry_dir=registry_uri,
        warm_start_epochs=warm_start_epochs,
        refit_epochs=retrieval_refit_epochs,
        train_input=train_input,
        valid_max_users=retrieval_valid_max_users,
    )
    trainer = training_machine()  # RECSYS_TRAINING_MACHINE at compile time; "cpu" by default
    apply_training_machine(retrieval_task.set_display_name("retrieval"), "retrieval", trainer)

    dien_task = ranking(
        features=feature_data,
        retrieval_model=retrieval_task.outputs["model"],
        model_type="dien",
        epochs=ranking_epochs,
        seed=seed,
        warm_start=warm_start,
        registry_dir=registry_uri,
        warm_start_epochs=warm_start_epochs,
        train_input=ranking_train_input,
        refit_epochs=ranking_refit_epochs,
    )
    apply_training_machine(dien_task.set_display_name("ranking-dien"), "ranking", trainer)
    din_task = ranking(
        features=feature_data,
        retrieval_model=retrieval_task.outputs["model"],
        model_type="din",
        epochs=ranking_epochs,
        seed=seed,
        warm_start=warm_start,
        registry_dir=registry_uri,
        warm_start_epochs=warm_start_epochs,
        train_input=ranking_train_input,
        refit_epochs=ranking_refit_epochs,
    )
    apply_training_machine(din_task.set_display_name("ranking-din-baseline"), "ranking", trainer)

    ope_task = off_policy_evaluation(
        warehouse_uri=warehouse_uri,
        shop_preset=shop_preset,
        shop_seed=seed,
        features=feature_data,
        ranking_model=dien_task.outputs["model"],
        reward_weighting=bandit_reward,
        bandit_study=enable_bandit,
    )
    apply_resources(ope_task.set_display_name("off-policy-evaluation"), "experiments")

    with dsl.If(enable_bandit == True, name="bandit-enabled"):  # noqa: E712 (KFP condition syntax)
        bandit_task = bandit_reranker(
            features=feature_data,
            extracted=extract_task.outputs["extracted"],
            retrieval_model=retrieval_task.outputs["model"],
            reward_weighting=bandit_reward,
        )
        apply_resources(bandit_task.set_display_name("bandit-reranker"), "experiments")

    # Held-out figures of complementary items and audiences, read by evaluation into its report (a file: evaluation
    # runs before export, whose outputs these are).
    campaign_task = campaign_evaluation(
        features=feature_data,
        extracted=extract_task.outputs["extracted"],
        retrieval_model=retrieval_task.outputs["model"],
        ranking_model=dien_task.outputs["model"],
        campaign_outputs=campaign_outputs,
    )
    apply_resources(campaign_task.set_display_name("campaign-evaluation"), "evaluation")

    evaluation_task = evaluation(
        features=feature_data,
        retrieval_model=retrieval_task.outputs["model"],
        ranking_model=dien_task.outputs["model"],
        registry_dir=registry_uri,
        candidates_n=candidates_n,
        gate_metric=gate_metric,
        margin_vs_baseline=margin_vs_baseline,
        margin_vs_blessed=margin_vs_blessed,
        model_version=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        gate_on_ope=gate_on_ope,
        ope_estimator=ope_estimator,
        ope_margin=ope_margin,
        off_policy=ope_task.outputs["report"],
        baseline_ranking_model=din_task.outputs["model"],
        extracted=extract_task.outputs["extracted"],
        campaign=campaign_task.outputs["report"],
        gate_on_drift=gate_on_drift,
        user_scoring=user_scoring,
        beam_args=beam_args,
        max_users=evaluation_max_users,
    )
    apply_resources(evaluation_task.set_display_name("evaluation"), "evaluation")

    with dsl.If(evaluation_task.outputs["Output"] == True, name="blessed"):  # noqa: E712 (KFP condition syntax)
        export_task = export(
            features=feature_data,
            retrieval_model=retrieval_task.outputs["model"],
            ranking_model=dien_task.outputs["model"],
            evaluation_summary=evaluation_task.outputs["summary"],
            destination=destination,
            run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            model_version=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            run_time=run_time,
            job_create_time=dsl.PIPELINE_JOB_CREATE_TIME_UTC_PLACEHOLDER,
            registry_dir=registry_uri,
            top_k=top_k,
            experiment=experiment,
            treatment_ratio=treatment_ratio,
            extracted=extract_task.outputs["extracted"],
            campaign_outputs=campaign_outputs,
            audience_targets=audience_targets,
            audience_size=audience_size,
            user_scoring=user_scoring,
            beam_args=beam_args,
        )
        apply_resources(export_task.set_display_name("export"), "export")
        ab_task = ab_analysis(
            warehouse_uri=warehouse_uri,
            experiment=experiment,
            treatment_ratio=treatment_ratio,
        ).after(export_task)
        apply_resources(ab_task.set_display_name("ab-analysis"), "experiments")
        serving_task = serving_model(
            features=feature_data,
            retrieval_model=retrieval_task.outputs["model"],
            ranking_model=dien_task.outputs["model"],
            evaluation_summary=evaluation_task.outputs["summary"],
            model_version=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            top_k=top_k,
            experiment=experiment,
            treatment_ratio=treatment_ratio,
        )
        apply_resources(serving_task.set_display_name("serving-model"), "serving")
        # Registered (and so served) only once the same model's lists are in the table.
        register_task = register_models(
            serving_model=serving_task.outputs["model"],
            project=gcp_project,
            region=gcp_region,
            registry_dir=registry_uri,
        ).after(export_task)
        apply_resources(register_task.set_display_name("register-models"), "register")
        deploy_task = deploy_model(
            registered=register_task.outputs["registered"],
            project=gcp_project,
            region=gcp_region,
            endpoint_name=endpoint_name,
            traffic_percentage=endpoint_traffic_percentage,
        )
        apply_resources(deploy_task.set_display_name("deploy-model"), "register")
