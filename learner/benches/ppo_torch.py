"""The learner's PPO update written in plain PyTorch, timed the same way.

Same network (separate 64x64 tanh actor and critic torsos, CartPole-sized:
obs 4, 2 actions), same batch (8192), same 4 epochs x 4 minibatches, Adam with
eps 1e-5, grad-norm clip 0.5, clipped value loss, per-minibatch advantage
normalization. Prints the median samples/s over repeated updates, and the
update's median seconds, as one JSON line.

    python learner/benches/ppo_torch.py [--repeats 20]
"""
import argparse
import json
import statistics
import time

import torch
from torch import nn


def mlp(i, o, h=64):
    return nn.Sequential(nn.Linear(i, h), nn.Tanh(), nn.Linear(h, h), nn.Tanh(), nn.Linear(h, o))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8192)
    args = ap.parse_args()
    torch.manual_seed(0)
    obs_dim, n_act, b = 4, 2, args.batch
    actor, critic = mlp(obs_dim, n_act), mlp(obs_dim, 1)
    params = list(actor.parameters()) + list(critic.parameters())
    opt = torch.optim.Adam(params, lr=2.5e-4, eps=1e-5)
    obs = torch.randn(b, obs_dim)
    actions = torch.randint(0, n_act, (b,))
    old_logp = torch.full((b,), -0.69)
    old_values = torch.randn(b)
    adv = torch.randn(b)
    returns = torch.randn(b)
    epochs, minibatches, clip = 4, 4, 0.2
    mb = b // minibatches

    def update():
        for _ in range(epochs):
            perm = torch.randperm(b)
            for k in range(minibatches):
                idx = perm[k * mb:(k + 1) * mb]
                logits = actor(obs[idx])
                dist = torch.distributions.Categorical(logits=logits)
                logp = dist.log_prob(actions[idx])
                ent = dist.entropy().mean()
                v = critic(obs[idx]).squeeze(-1)
                a = adv[idx]
                a = (a - a.mean()) / (a.std() + 1e-8)
                ratio = (logp - old_logp[idx]).exp()
                pg = torch.max(-a * ratio, -a * ratio.clamp(1 - clip, 1 + clip)).mean()
                ov, r = old_values[idx], returns[idx]
                vc = ov + (v - ov).clamp(-clip, clip)
                vl = 0.5 * torch.max((v - r) ** 2, (vc - r) ** 2).mean()
                loss = pg + 0.5 * vl - 0.0 * ent
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(params, 0.5)
                opt.step()

    update()  # warm-up
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        update()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(json.dumps({
        "impl": "pytorch",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": b,
        "update_seconds_median": med,
        "samples_per_second": b / med,
    }))


if __name__ == "__main__":
    main()
