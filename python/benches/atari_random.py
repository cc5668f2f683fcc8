#!/usr/bin/env python3
"""The return of a uniformly random policy in an Atari game, with exactly
the preprocessing `flotilla-actor --atari` trains on (flotilla.atari): the
baseline a learning curve must rise above.

Episodes are lives, as the actor reports them: the game's unclipped points
scored during one life (`info["raw_reward"]`), and the length in agent steps
(4 frames each). Prints the mean, its standard error and the episode count,
per life and per game.

    PYTHONPATH=python python3 python/benches/atari_random.py --env ALE/Breakout-v5 --lives 500
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from flotilla.atari import make_atari_env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--env", default="ALE/Breakout-v5")
    ap.add_argument("--lives", type=int, default=500, help="episodes (lives) to play")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    env = make_atari_env(args.env)
    rng = np.random.default_rng(args.seed)
    lives, games = [], []
    life, game, steps = 0.0, 0.0, 0
    env.reset(seed=args.seed)
    while len(lives) < args.lives:
        _, _, terminated, truncated, info = env.step(int(rng.integers(env.action_space.n)))
        life += info["raw_reward"]
        game += info["raw_reward"]
        steps += 1
        if terminated or truncated:
            lives.append(life)
            life = 0.0
            if truncated or env.unwrapped.ale.game_over():
                games.append(game)
                game = 0.0
            env.reset()

    def summary(xs: list[float]) -> str:
        a = np.asarray(xs)
        sem = a.std(ddof=1) / math.sqrt(len(a)) if len(a) > 1 else float("nan")
        return f"{a.mean():.3f} ± {sem:.3f} (n = {len(a)})"

    print(f"{args.env}, uniformly random actions, seed {args.seed}, {steps} agent steps")
    print(f"per life: {summary(lives)}")
    print(f"per game: {summary(games)}")


if __name__ == "__main__":
    main()
