"""A whole run: every selected stage, once per seed of `config.seeds`, and its results files.

`python -m cifar10_transfer train`, notebook 02 and the tests call `run_all`; the stages
themselves are `stages.run_stage`'s.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .provenance import collect_provenance, run_key, weights_label
from .publish import MODELS_DIR, write_atomic
from .registry import parse_stage
from .results import HISTORIES_DIR, RESULTS_FILE, assemble_results, combine_seeds
from .stages import Run, run_stage
from .study import STUDY_STAGES
from .weights import imagenet_status


def _not_run_reason(run: Run, name: str) -> str:
    if name in run.config.model_list:
        return "not finished"
    spec, _ = parse_stage(name)
    if spec is not None and run.weights == "imagenet" and imagenet_status(spec) == "unavailable offline":
        return "ImageNet weights unavailable offline"
    return "not selected"


def _seed_dir(run: Run, seed: int) -> Path:
    return run.workdir / "seeds" / f"seed{seed}"


def seed_runs(run: Run) -> list[Run]:
    """The runs `run_all` trains: `run` itself, or under `config.seeds` one run per seed, each in
    `workdir/seeds/seed<s>/` with that seed, sharing `run`'s data, strategy and feature cache (so
    no image passes a backbone twice for the same weights)."""
    if not run.config.seeds.strip():
        return [run]
    return [Run(run.config.replace(seed=seed), run.dataset, run.weights, _seed_dir(run, seed), run.profile,
                run.strategy, run.cache, run.save_models, run.started) for seed in run.config.seed_list]


def _at_seeds(runs: list[Run], name: str) -> list[Run]:
    """Those of `runs` that train stage `name` (`RunConfig.stage_seeds`)."""
    return [r for r in runs if r.config.seed in r.config.stage_seeds(name)]


def results(run: Run, runs: list[Run] | None = None) -> dict:
    """The content of results.json for the stages trained so far by `run`, or by each of `runs`,
    its `seed_runs`, summarised over their seeds (`results.combine_seeds`)."""
    if runs and runs != [run]:
        models = {name: combine_seeds({r.config.seed: r.models[name].summary() for r in _at_seeds(runs, name)})
                  for name in run.config.model_list if all(name in r.models for r in _at_seeds(runs, name))}
    else:
        models = {name: model_run.summary() for name, model_run in run.models.items()}
    skipped = [name for name in dict.fromkeys([*STUDY_STAGES, *run.config.model_list]) if name not in models]
    return assemble_results(
        profile=run.profile, config=run.config.to_dict(),
        provenance={**collect_provenance(run.dataset, weights_label(run.weights), run.started),
                    "run_key": run_key(run.config.to_dict(), run.dataset, run.weights)},
        execution={"jit_compile": run.jit_compile, "strategy": type(run.strategy).__name__,
                   "replicas": run.strategy.num_replicas_in_sync},
        data={**run.splits.sizes(), "class_names": list(run.splits.class_names)},
        models=models, not_run={name: _not_run_reason(run, name) for name in skipped})


def run_all(run: Run) -> dict:
    """Train every selected stage in order, once per seed of `config.seeds`, write the results
    files and return the results. Over seeds, `run.models` and `workdir/models/` then hold each
    stage's shown run (`shown_seed`, the median by validation accuracy), whose details results.json shows."""
    runs = seed_runs(run)
    for name in run.config.model_list:  # stage by stage, each at all its seeds before the next
        for seed_run in _at_seeds(runs, name):
            if seed_run is not run:
                print(f"seed {seed_run.config.seed}: {seed_run.workdir}", flush=True)
            run_stage(seed_run, name)
    found = results(run, runs)
    _adopt_shown(run, runs, found)
    save_results(run, found)
    return found


def _adopt_shown(run: Run, runs: list[Run], found: dict) -> None:
    """Over seeds, make each stage's shown run `run`'s model, for the notebook and for `predict`."""
    for name, entry in found["models"].items():
        if "shown_seed" not in entry:
            continue
        shown = next(seed_run for seed_run in runs if seed_run.config.seed == entry["shown_seed"])
        run.models[name] = shown.models[name]
        if run.save_models:
            (run.workdir / MODELS_DIR).mkdir(parents=True, exist_ok=True)
            for file in (f"{name}.keras", f"{name}.json"):
                shutil.copyfile(shown.workdir / MODELS_DIR / file, run.workdir / MODELS_DIR / file)


def save_results(run: Run, found: dict) -> Path:
    """Write results.json and each model's history CSV (over seeds, the shown run's) under `workdir/results/`."""
    for name, entry in found["models"].items():
        workdir = _seed_dir(run, entry["shown_seed"]) if "shown_seed" in entry else run.workdir
        history = (workdir / "stages" / name / "history.csv").read_text()
        write_atomic(run.workdir / HISTORIES_DIR / f"{name}.csv", history)
    return write_atomic(run.workdir / RESULTS_FILE, json.dumps(found, indent=2) + "\n")
