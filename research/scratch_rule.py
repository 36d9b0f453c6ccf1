"""The scratch network's epochs decided on validation, round by round (30 against 20, then 40 against
30), paired by seed, against the time budget.

Each round's rule is committed before its candidate runs start (research/README.md, "The strong
scratch network's epochs"): the candidate's epochs become the default only if the mean paired
validation gain (single view, candidate − baseline, seed by seed) is larger than its standard error
sd/sqrt(n) and the candidate runs' mean training seconds are at most 1,200. Otherwise the baseline
stays. Test accuracy is never read. The two runs must come from CPUs with the same instruction sets
(`cpu_isa`), whose kernels, and so seeded results, can differ.

Usage (from the repository root; each file a results.json whose `scratch` stage ran under `seeds`):
  python research/scratch_rule.py --baseline results/results.json --candidate OUT/results/results.json
It writes the round's record (`ROUNDS`) under research/results/ and its block of research/README.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import fmean

from lab_records import mean_and_standard_error, record

ROOT = Path(__file__).resolve().parents[1]
# The rounds whose rules are committed, by (baseline, candidate) epochs: their record and README block.
ROUNDS = {(20, 30): ("scratch_rule.json", "scratch"), (30, 40): ("scratch_rule_40.json", "scratch40")}
BUDGET_SECONDS = 1_200  # issue #29: at most 20 minutes of training at the study's size on 2 CPU cores


def single_view_runs(results: dict) -> dict[int, dict]:
    """The scratch stage's runs by seed: single-view validation accuracy (under `test_time_flip` the
    stored single view, never the mirror-averaged one) and training seconds."""
    return {run["seed"]: {"val": run.get("single_view_val_accuracy", run["val_accuracy"]),
                          "seconds": run["train_seconds"]}
            for run in results["models"]["scratch"].get("runs", [])}


def decide(baseline: dict, candidate: dict) -> dict:
    """The committed rule applied to two results.json documents (the default's epochs and the candidate's)."""
    epochs = [document["config"]["scratch_epochs"] for document in (baseline, candidate)]
    isa = [document["provenance"].get("cpu_isa") for document in (baseline, candidate)]
    if isa[0] != isa[1]:
        raise SystemExit(f"the runs' CPUs differ ({isa[0]} vs {isa[1]}): repeat the baseline on the candidate's "
                         "machine, as the rule asks")
    before, after = single_view_runs(baseline), single_view_runs(candidate)
    seeds = sorted(set(before) & set(after))
    gains = {seed: after[seed]["val"] - before[seed]["val"] for seed in seeds}
    mean, se = mean_and_standard_error(gains.values())
    seconds = fmean(after[seed]["seconds"] for seed in seeds) if seeds else None
    better = se is not None and mean > se
    within = seconds is not None and seconds <= BUDGET_SECONDS
    why = (f"mean gain {'larger' if better else 'not larger'} than its standard error; "
           f"mean training seconds {'within' if within else 'over'} the budget of {BUDGET_SECONDS:,}")
    return {"epochs": {"baseline": epochs[0], "candidate": epochs[1]}, "cpu_isa": isa[0], "gains": gains,
            "mean": mean, "se": se, "candidate_seconds": seconds,
            "baseline_seconds": fmean(before[seed]["seconds"] for seed in seeds) if seeds else None,
            "default_epochs": epochs[1] if better and within else epochs[0], "why": why}


def markdown(document: dict) -> str:
    """The block of research/README.md: each seed's gain, mean ± standard error, seconds and the decision."""
    per_seed = ", ".join(f"{seed}: {100 * gain:+.2f}" for seed, gain in document["gains"].items())
    mean = f"{100 * document['mean']:+.2f}" if document["mean"] is not None else "n/a"
    se = f" ± {100 * document['se']:.2f}" if document["se"] is not None else ""
    epochs = document["epochs"]
    seconds = " | ".join(f"{document[key]:,.0f}" if document[key] is not None else "n/a"
                         for key in ("baseline_seconds", "candidate_seconds"))
    return "\n".join([
        f"| seeds | gain per seed (points, {epochs['candidate']} − {epochs['baseline']} epochs) | mean gain ± "
        f"standard error | mean training seconds, {epochs['baseline']} epochs | {epochs['candidate']} epochs |",
        "|---:|---|---:|---:|---:|",
        f"| {len(document['gains'])} | {per_seed} | {mean}{se} | {seconds} |", "",
        f"Decision: {document['default_epochs']} epochs ({document['why']}). Runs: {document['runs']}.",
        *_test_line(document.get("default_test"), document["default_epochs"])])


def default_test(results: dict) -> dict[int, float]:
    """The scratch stage's single-view test accuracy by seed, read only to report it once the rule has decided."""
    return {run["seed"]: run.get("single_view_test_accuracy", run["test_accuracy"])
            for run in results["models"]["scratch"]["runs"]}


def _test_line(tests: dict[int, float] | None, epochs: int) -> list[str]:
    if not tests:
        return []
    per_seed = ", ".join(f"{seed}: {100 * accuracy:.2f}%" for seed, accuracy in tests.items())
    return ["", f"Single-view test accuracy of the {epochs}-epoch runs, read after the decision ({per_seed}): "
                f"mean {100 * fmean(tests.values()):.2f}%, against issue #29's target of 80% at this size."]


def _describe(results: dict) -> str:
    provenance = results["provenance"]
    return (f"{results['config']['scratch_epochs']} epochs: profile {results['profile']}, {provenance['data']}, "
            f"commit {provenance['git_commit'][:7]}, {provenance['hardware']}")


def round_record(baseline: dict, candidate: dict) -> tuple[Path, tuple[str, str]]:
    """Where the round of these two runs is recorded: its JSON file and the markers of its README block.
    A pair of epochs with no committed rule is refused."""
    epochs = tuple(document["config"]["scratch_epochs"] for document in (baseline, candidate))
    if epochs not in ROUNDS:
        raise SystemExit(f"no rule is committed for {epochs[1]} against {epochs[0]} epochs; write it in "
                         "research/README.md and ROUNDS before the runs")
    name, block = ROUNDS[epochs]
    return ROOT / "research" / "results" / name, (f"<!-- {block}:start -->", f"<!-- {block}:end -->")


def report(baseline_path: Path, candidate_path: Path) -> dict:
    """Apply the rule, write the round's record under research/results/ and its README block."""
    baseline, candidate = (json.loads(path.read_text()) for path in (baseline_path, candidate_path))
    path, markers = round_record(baseline, candidate)
    document = {**decide(baseline, candidate), "runs": f"{_describe(baseline)}; {_describe(candidate)}"}
    chosen = candidate if document["default_epochs"] == document["epochs"]["candidate"] else baseline
    document["default_test"] = default_test(chosen)
    record(document, path, markers, markdown(document))
    return document


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="results.json of the default's runs")
    parser.add_argument("--candidate", type=Path, required=True, help="results.json of the candidate's runs")
    args = parser.parse_args()
    print(markdown(report(args.baseline, args.candidate)))


if __name__ == "__main__":
    main()
