"""A run's TensorBoard event files, read by TensorBoard's own reader
(`tensorboard.backend.event_processing.event_accumulator`): every scalar of
metrics.jsonl is there under its tag, one point per update, stepped by the
env steps trained, with the values metrics.jsonl holds (as float32); the
evaluations (`[eval]`) are a run of their own, `tensorboard/eval`, one point
per eval line of metrics.jsonl."""

import json

from harness import REPO

TAGS = {
    "episode/return_mean": lambda row: row["episode_return_mean"],
    "episode/length_mean": lambda row: row["episode_length_mean"],
    "loss/policy": lambda row: row["update"]["policy_loss"],
    "loss/value": lambda row: row["update"]["value_loss"],
    "loss/entropy": lambda row: row["update"]["entropy"],
    "train/approx_kl": lambda row: row["update"]["approx_kl"],
    "train/clip_fraction": lambda row: row["update"]["clip_fraction"],
    "train/explained_variance": lambda row: row["update"]["explained_variance"],
    "train/grad_norm": lambda row: row["update"]["grad_norm"],
    "train/learning_rate": lambda row: row["update"]["learning_rate"],
    "train/policy_lag_median": lambda row: sorted(row["policy_lags"])[len(row["policy_lags"]) // 2],
}
RATES = ("throughput/env_steps_per_second", "throughput/samples_trained_per_second")


def test_the_learner_writes_what_tensorboard_reads(start_learner):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = (REPO / "configs" / "cartpole.toml").read_text()
    learner = start_learner(config, "--local-actors", "1", "--total-env-steps", "20480",
                            "--set", "eval.every_updates=2,eval.episodes=2")
    assert learner.wait(180) == 0, learner.log()
    lines = [json.loads(line) for line in (learner.run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [row for row in lines if "update" in row]
    evals = [row for row in lines if "eval" in row]
    assert len(rows) >= 5 and len(evals) >= 2, lines

    acc = EventAccumulator(str(learner.run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert tags >= set(TAGS) | set(RATES), sorted(tags)
    steps = [row["env_steps"] for row in rows]
    for tag, of in TAGS.items():
        points = acc.Scalars(tag)
        want = [(row["env_steps"], of(row)) for row in rows if of(row) is not None]
        assert [p.step for p in points] == [s for s, _ in want], tag
        for p, (_, v) in zip(points, want):
            # float32 in the event file, f64 in metrics.jsonl
            assert abs(p.value - v) <= 1e-6 * max(1.0, abs(v)), (tag, p.step, p.value, v)
    for tag in RATES:
        points = acc.Scalars(tag)
        assert [p.step for p in points] == steps, tag
        # Every update trains; acting may have happened before the last one.
        values = [p.value for p in points]
        assert min(values) >= 0 and sum(values) > 0, (tag, values)
    assert min(p.value for p in acc.Scalars(RATES[1])) > 0
    assert "writing TensorBoard events" in learner.log()

    acc = EventAccumulator(str(learner.run_dir / "tensorboard" / "eval"), size_guidance={"scalars": 0})
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {"eval/return_mean", "eval/return_std", "eval/length_mean"}
    for tag, key in (("eval/return_mean", "return_mean"), ("eval/return_std", "return_std"),
                     ("eval/length_mean", "length_mean")):
        points = acc.Scalars(tag)
        assert [p.step for p in points] == [e["env_steps"] for e in evals], tag
        for p, e in zip(points, evals):
            v = e["eval"][key]
            assert abs(p.value - v) <= 1e-6 * max(1.0, abs(v)), (tag, p.step, p.value, v)
