"""Few-shot adaptation of the meta-dynamical model on a simulated family of systems (the paper's protocol,
scaled to 2 CPU cores).

    python benchmarks/meta_fewshot.py [--quick] [--epochs 300] [--system hopf] [--seed 0]

Protocol (docs/model.md section 6, "Baselines"):
  * a family of sessions from `simulate_arrays(system, param=p)`, p spanning a range, neuron counts differing
    per session; training sessions at evenly spaced p, 3 held-out sessions at p strictly inside the range
    (between training values);
  * the shared model is trained on the training sessions (`fit`, the same number of epochs for every
    variant, so the result does not depend on how busy the machine is);
  * for each held-out session and n in {1, 8, 16}: a new session is added from its first n trials, the
    shared parameters are frozen, and only the session's read-in / readout / embedding mean are trained on the n trials
    (a fixed number of steps, no validation set); then the embedding is replaced by the one that best forecasts
    the second half of each shot from its first half (train/embedding_search.py), exactly as `xfads adapt` does;
  * score: 30-step forecast R^2 of the noise-free rates. On each TEST trial of the held-out session (never
    used for adaptation) the causal filter reads the first `context` bins, the posterior samples at the last
    context bin are rolled 30 steps ahead, and the mean forecast rate (expected counts per bin) is compared
    with the true rates of those 30 bins: r2_score over (trial x time) rows, uniform average over neurons.
    The embedding used is the fitted mean (or, with --encoder-embedding, q(e) pooled over the n trials).

Methods: meta (hypernetwork, MetaXFADS adaptation="hyper", linear hypernetwork unless --hyper-hidden); (b) shared dynamics without embedding
(adaptation="none"); (c) embedding as an input to the dynamics (adaptation="input"); (a) a single-session
XFADS trained from scratch on the same n trials (same step budget).

Embedding check: the Spearman rank correlation between each session's pooled embedding mean and the
generating parameter, on the embedding dimension that correlates best over the TRAINING sessions, for the
3 held-out sessions (n = 16 shots) and for all sessions together, oriented so that the training sessions'
correlation is positive (a held-out order reversed against the training sessions' is wrong).
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import replace

import numpy as np
import torch

from xfads_cli.config import ModelConfig, TrainConfig
from xfads_cli.data.simulate import simulate_arrays
from xfads_cli.errors import RunFailure
from xfads_cli.commands.embed import spearman
from xfads_cli.model.meta import MetaXFADS
from xfads_cli.model.session import BoundSession
from xfads_cli.model.xfads import XFADS
from xfads_cli.scoring import r2_score
from xfads_cli.train.loop import train_model
from xfads_cli.train.embedding_search import search_embedding, training_manifold

PUBLISHED = {"meta": (0.69, 0.78, 0.87), "single": (0.47, 0.79, 0.79)}
LABELS = {"hyper": "meta (hypernetwork)", "none": "(b) shared, no embedding",
          "input": "(c) embedding as input", "single": "(a) single-session XFADS"}


def make_family(args):
    """Training and held-out sessions: dicts with name, param, counts [trial, time, neuron] (float32 tensor),
    rates (numpy, expected counts per bin)."""
    rng = np.random.default_rng(args.seed)
    lo, hi = args.param_range
    train_params = np.linspace(lo, hi, args.sessions)
    step = train_params[1] - train_params[0]
    # held out: midway between two training values, at about 1/5, 1/2 and 4/5 of the range
    ks = sorted({int(round((args.sessions - 2) * f)) for f in (0.2, 0.5, 0.8)})
    held_params = [train_params[k] + step / 2 for k in ks]

    def session(name, param, trials, seed):
        n = int(rng.integers(args.neurons[0], args.neurons[1] + 1))
        sim = simulate_arrays(args.system, neurons=n, trials=trials, bins=args.bins, bin_ms=20.0, seed=seed,
                              base_rate_hz=args.rate, param=float(param))
        return {"name": name, "param": float(param), "n": n, "rates": sim["rates"],
                "counts": torch.tensor(sim["counts"], dtype=torch.float32)}

    train = [session(f"train{i}", p, args.trials, 1000 * args.seed + i) for i, p in enumerate(train_params)]
    held = [session(f"held{i}", p, max(args.shots) + args.test_trials, 1000 * args.seed + 500 + i)
            for i, p in enumerate(held_params)]
    return train, held


def spec(s):
    return {"name": s["name"], "n_neurons": s["n"], "dt": 0.02}


def forecast_r2(model, y_test, rates_test, context, horizon, samples):
    """R^2 of the mean forecast rate against the true rates over the `horizon` bins after `context`."""
    with torch.no_grad():
        fc = model.forecast(y_test[:, :context], horizon, n_samples=samples)
    pred = fc.rates.mean(0).numpy()
    true = rates_test[:, context : context + horizon]
    return r2_score(true.reshape(-1, true.shape[-1]), pred.reshape(-1, pred.shape[-1]))


def gain_ceiling(s, n, args):
    """R^2 of the TRUE test rates scaled, per neuron, by (mean count in the first n trials / true mean rate):
    what a forecast with the true latent state and dynamics would score if, like every method here, it
    had to learn each neuron's firing level from the n shots. The gain is the maximum-likelihood one for
    Poisson counts whose shape is known: a reference, not a bound a method with other information could not pass."""
    y = s["counts"][:n].numpy()
    gain = y.mean((0, 1)) / s["rates"].mean((0, 1))
    true = s["rates"][max(args.shots):, args.context : args.context + args.horizon]
    pred = true * gain
    return r2_score(true.reshape(-1, true.shape[-1]), pred.reshape(-1, pred.shape[-1]))


def train_meta(adaptation, train, mcfg, tcfg, args, retries=3):
    torch.manual_seed(args.seed)
    model = MetaXFADS(mcfg, [spec(s) for s in train], adaptation=adaptation)
    n_valid = args.valid_trials
    for i, s in enumerate(train):
        model.init_from_data(s["counts"][n_valid:], i)
    # as `xfads fit` starts a meta run (model/embedding_init.py); (b) ignores the embedding anyway
    if args.init_embeddings:
        model.init_embeddings([s["counts"][n_valid:] for s in train])
    t0 = time.monotonic()
    try:
        res = train_model(model, [s["counts"][n_valid:] for s in train], [s["counts"][:n_valid] for s in train],
                       tcfg, seed=args.seed).run()
    except RunFailure as err:  # reported in the output; the retry starts from scratch at half the lr
        if not retries:
            raise
        print(f"  {LABELS[adaptation]}: {err}; retraining from scratch with lr {tcfg.lr / 2:g}", flush=True)
        return train_meta(adaptation, train, mcfg, replace(tcfg, lr=tcfg.lr / 2), args, retries - 1)
    model.eval()
    # as `xfads fit` ends a meta run: each session's q(e_i), where `adapt` places new sessions
    model.keep_fitted_embeddings([s["counts"][n_valid:] for s in train])
    return model, res, time.monotonic() - t0


def adapt_meta(trained, s, n, acfg, args, key):
    """Copy of the trained model + the held-out session from its first n trials, shared parts frozen."""
    model = copy.deepcopy(trained)
    torch.manual_seed(args.seed * 1000 + key)  # the new read-in/readout init: independent of what ran before
    y = s["counts"][:n]
    # the embedding mean is fitted with the read-in/readout from the prior mean (`xfads adapt`'s default)
    i = model.add_session(spec(s) | {"refine_embedding": args.refine}, y)
    params = list(model.session_parameters(i))
    start = model.signature_start(y) if args.refine and args.init_embeddings else None
    if start is not None:  # as `xfads adapt`: placed by the shots' signature, held while the read-in trains
        with torch.no_grad():
            model.sessions[i].embedding.copy_(start)
        params = [p for name, p in model.sessions[i].named_parameters() if name != "embedding"]
    model.freeze_shared()
    model.train()
    train_model(model, [None] * i + [y], [None] * (i + 1), acfg, seed=args.seed, parameters=params).run()
    model.eval()
    fitted = model.session_embedding(y, i)[2].numpy().copy()  # before the search (the array would share the parameter)
    if args.refine and args.search and model.adaptation != "none":
        # then the embedding that best forecasts the shots' second halves (train/embedding_search.py)
        kept = model.fitted_embeddings() if args.init_embeddings else None
        among = None if kept is None else training_manifold(kept[0])  # as `xfads adapt`
        found = search_embedding(model, i, y, model.sessions[i].embedding.detach(), among=among, seed=args.seed)
        with torch.no_grad():
            model.sessions[i].embedding.copy_(found.e)
        if args.retune_steps:
            model.train()
            train_model(model, [None] * i + [y], [None] * (i + 1), replace(acfg, max_epochs=args.retune_steps),
                     seed=args.seed + 1, parameters=[p for n, p in model.sessions[i].named_parameters() if n != "embedding"]).run()
            model.eval()
    e = model.session_embedding(y, i)[2]
    return BoundSession(model, i, e), e.numpy(), fitted


def fit_single(s, n, mcfg, scfg, args):
    """A fresh XFADS on the first n trials; if the loss diverges, retried once with lr / 3."""
    y = s["counts"][:n]
    for lr in (scfg.lr, scfg.lr / 3):
        torch.manual_seed(args.seed)
        model = XFADS.one_session(replace(mcfg, kind="xfads"), s["n"], torch.ones(s["n"], dtype=torch.bool), dt=0.02)
        model.init_from_data(y)
        try:
            train_model(model, y, None, replace(scfg, lr=lr), seed=args.seed).run()
            break
        except RunFailure as err:
            print(f"  single-session fit on {s['name']}, n={n}: {err}; retrying with lr {lr / 3:g}", flush=True)
    model.eval()
    return model


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run (< 3 min)")
    p.add_argument("--epochs", type=int, default=300, help="training epochs of EACH shared model (3 variants)")
    p.add_argument("--minutes", type=float, default=None, help="optional wall-clock cap per shared model")
    p.add_argument("--lr", type=float, default=1e-2, help="shared-model learning rate (after the warm-up)")
    p.add_argument("--warmup", type=int, default=300, help="linear learning-rate warm-up steps")
    p.add_argument("--embed-dim", type=int, default=1, help="embedding dimension (1: a one-parameter family)")
    p.add_argument("--system", default="hopf", choices=["hopf", "duffing"])
    p.add_argument("--param-range", type=float, nargs=2, default=None, help="default hopf: -1 2, duffing: -2 2")
    p.add_argument("--sessions", type=int, default=8, help="training sessions")
    p.add_argument("--trials", type=int, default=32, help="trials per training session")
    p.add_argument("--valid-trials", type=int, default=4, help="of which held out for early stopping")
    p.add_argument("--test-trials", type=int, default=16, help="test trials per held-out session")
    p.add_argument("--neurons", type=int, nargs=2, default=(15, 30))
    p.add_argument("--bins", type=int, default=60)
    p.add_argument("--context", type=int, default=30)
    p.add_argument("--horizon", type=int, default=30)
    p.add_argument("--rate", type=float, default=10.0, help="mean firing rate (Hz)")
    p.add_argument("--shots", type=int, nargs="+", default=(1, 8, 16))
    p.add_argument("--adapt-steps", type=int, default=60, help="steps of few-shot training (meta variants)")
    p.add_argument("--single-steps", type=int, default=100, help="steps of the single-session baseline")
    p.add_argument("--samples", type=int, default=100, help="forecast samples")
    p.add_argument("--methods", nargs="+", default=["hyper", "none", "input", "single"])
    p.add_argument("--latent", type=int, default=4)
    p.add_argument("--train-samples", type=int, default=5, help="filter samples per trial in training")
    p.add_argument("--adapt-lr", type=float, default=2e-2)
    p.add_argument("--encoder-embedding", dest="refine", action="store_false",
                   help="take the frozen encoder's embedding instead of fitting it during adaptation")
    p.add_argument("--no-search", dest="search", action="store_false",
                   help="keep the ELBO-fitted embedding instead of searching for the one that best forecasts the shots")
    p.add_argument("--retune-steps", type=int, default=0,
                   help="after the search, steps of read-in/readout training with the embedding fixed")
    p.add_argument("--hyper-hidden", type=int, default=0, help="hypernetwork hidden units (0: linear)")
    p.add_argument("--no-init-embeddings", dest="init_embeddings", action="store_false",
                   help="start the training sessions' embeddings at 0 and adapt from the prior mean (before issue 27)")
    p.add_argument("--drop-local", type=float, default=0.2,
                   help="train.drop_local of the shared model's training and of the adaptation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="1: two threads thrash when another job shares the 2 cores")
    args = p.parse_args()
    if args.param_range is None:
        args.param_range = (-1.0, 2.0) if args.system == "hopf" else (-2.0, 2.0)
    if args.quick:
        args.epochs, args.warmup, args.sessions, args.trials, args.valid_trials = 3, 10, 6, 16, 4
        args.test_trials, args.neurons, args.adapt_steps, args.single_steps, args.samples = 8, (10, 16), 15, 20, 50
    torch.set_num_threads(args.threads)
    t_start = time.monotonic()

    mcfg = ModelConfig(kind="meta", latent_dim=args.latent, dynamics_hidden=64, encoder_hidden=32, rank_local=4,
                       rank_backward=2, samples=args.train_samples, embed_dim=args.embed_dim, read_in_dim=16,
                       hyper_rank=2, hyper_hidden=args.hyper_hidden)
    tcfg = TrainConfig(max_epochs=args.epochs, batch_size=16, lr=args.lr, schedule="exponential", lr_decay=0.995, warmup_steps=args.warmup,
                       patience=10**9, drop_local=args.drop_local, time_limit_min=args.minutes)
    # few shots: one batch per epoch (batch >= 16), so epochs = steps; no validation set (n = 1 has none)
    acfg = TrainConfig(max_epochs=args.adapt_steps, batch_size=max(args.shots), lr=args.adapt_lr, schedule="exponential", lr_decay=0.99,
                       patience=10**9, drop_local=args.drop_local)
    scfg = replace(acfg, max_epochs=args.single_steps, lr=1e-2)

    train, held = make_family(args)
    print(f"system={args.system} params train={[round(s['param'], 2) for s in train]} "
          f"held-out={[round(s['param'], 2) for s in held]}")
    print(f"neurons train={[s['n'] for s in train]} held-out={[s['n'] for s in held]}; {args.trials} trials x "
          f"{args.bins} bins (20 ms) per training session; held-out: shots from the first {max(args.shots)} trials, "
          f"{args.test_trials} test trials; forecast context {args.context} bins, horizon {args.horizon}", flush=True)

    r2 = {m: np.full((len(held), len(args.shots)), np.nan) for m in args.methods}
    ceiling = np.array([[gain_ceiling(s, n, args) for n in args.shots] for s in held])
    print(f"ceiling (true rates, each neuron's mean rate estimated from the n shots), R2 per held-out session x n:\n"
          f"{ceiling.round(3)}", flush=True)
    rho = {}
    for m in args.methods:
        t0 = time.monotonic()
        if m == "single":
            for h, s in enumerate(held):
                for k, n in enumerate(args.shots):
                    model = fit_single(s, n, mcfg, scfg, args)
                    y_test, r_test = s["counts"][max(args.shots):], s["rates"][max(args.shots):]
                    r2[m][h, k] = forecast_r2(model, y_test, r_test, args.context, args.horizon, args.samples)
            print(f"{LABELS[m]}: {time.monotonic() - t0:.0f} s; R2 per held-out session x n:\n{r2[m].round(3)}",
                  flush=True)
            continue
        trained, res, secs = train_meta(m, train, mcfg, tcfg, args)
        print(f"{LABELS[m]}: trained {len(res.history)} epochs in {secs:.0f} s, best epoch {res.best_epoch}, "
              f"valid loss {res.best_score:.4f}", flush=True)
        train_e = np.stack([trained.session_embedding(s["counts"], i)[2].numpy() for i, s in enumerate(train)])
        held_e = np.zeros((len(held), train_e.shape[1]))
        held_fitted = np.zeros_like(held_e)
        for h, s in enumerate(held):
            for k, n in enumerate(args.shots):
                view, e, fitted = adapt_meta(trained, s, n, acfg, args, key=10 * h + k)
                y_test, r_test = s["counts"][max(args.shots):], s["rates"][max(args.shots):]
                r2[m][h, k] = forecast_r2(view, y_test, r_test, args.context, args.horizon, args.samples)
                if n == max(args.shots):
                    held_e[h], held_fitted[h] = e, fitted
        if m != "none":
            tp = np.array([s["param"] for s in train])
            hp = np.array([s["param"] for s in held])
            per_dim = [spearman(train_e[:, d], tp) for d in range(train_e.shape[1])]
            d = int(np.nanargmax(np.abs(per_dim)))
            rho[m] = {"dim": d, "train": per_dim[d], "held": spearman(held_e[:, d], hp),
                      "held_fitted": spearman(held_fitted[:, d], hp),
                      "all": spearman(np.concatenate([train_e[:, d], held_e[:, d]]), np.concatenate([tp, hp]))}
            print(f"  embedding means (train, dim {d}): {np.round(train_e[:, d].astype(float), 2).tolist()}")
            print(f"  embedding means (held-out, n={max(args.shots)}): {np.round(held_e[:, d].astype(float), 2).tolist()}; "
                  f"before the search: {np.round(held_fitted[:, d].astype(float), 2).tolist()}")
        print(f"  adaptation + scoring {time.monotonic() - t0 - secs:.0f} s; R2 per held-out session x n:\n"
              f"{r2[m].round(3)}", flush=True)

    print()
    head = f"{'method':32s}" + "".join(f"{'n=' + str(n):>8s}" for n in args.shots)
    print(f"30-step forecast R^2 of the true rates, mean over {len(held)} held-out sessions")
    print(head)
    for m in args.methods:
        print(f"{LABELS[m]:32s}" + "".join(f"{v:8.3f}" for v in np.nanmean(r2[m], axis=0)))
    print(f"{'ceiling: true rates, shot gains':32s}" + "".join(f"{v:8.3f}" for v in ceiling.mean(axis=0)))
    if tuple(args.shots) == (1, 8, 16):
        for m, ref in PUBLISHED.items():
            print(f"{'published ' + m:32s}" + "".join(f"{v:8.2f}" for v in ref))
    for m, r in rho.items():
        # the embedding axis is arbitrary: orient it so that the training sessions' correlation is positive;
        # a held-out order reversed against the training sessions' counts as wrong
        sign = 1.0 if r["train"] >= 0 else -1.0
        print(f"embedding rank correlation, {LABELS[m]}: dim {r['dim']}, oriented by the training sessions: "
              f"training {sign * r['train']:+.2f}, held-out (3) {sign * r['held']:+.2f} (ELBO-fitted, before the "
              f"search: {sign * r['held_fitted']:+.2f}), all {sign * r['all']:+.2f}")
    print(f"wall time {time.monotonic() - t_start:.0f} s")


if __name__ == "__main__":
    main()
