"""`flotilla-actor`: runs a Gymnasium environment as a Flotilla actor.

    flotilla-actor --learner http://127.0.0.1:50051 --env CartPole-v1
    flotilla-actor --learner http://127.0.0.1:50051 --env ALE/Breakout-v5 --atari

connects to the learner, declares the environment (its id and spaces) at
`Hello`, acts with the newest policy and streams trajectory chunks until
SIGTERM or SIGINT. Every flag can also be given as an environment variable
(`FLOTILLA_LEARNER`, `FLOTILLA_ENV`, ...; an empty variable counts as unset).

Exit codes: 0 after a stop signal, 64 when the options are unusable or the
learner refuses the actor or one of its chunks (the reason is printed on
stderr after `error: `), 75 when a stop takes longer than the grace period,
130 on a second stop signal, 1 on any other failure (e.g. the environment
raised), 2 on a command line that does not parse.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import socket
import sys
import threading
from pathlib import Path

# gRPC's C core logs connection failures on stderr on its own; the actor
# reports every failure it acts on. GRPC_VERBOSITY set by the user wins.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

from . import __version__  # noqa: E402
from .client import ActorError, ActorOptions, TlsOptions, UsageError, check_token, parse_learner_url, run  # noqa: E402
from .envs import EnvError, EnvFactory, probe  # noqa: E402
from .metrics import ActorMetrics, serve  # noqa: E402
from .spaces import SpaceError  # noqa: E402

log = logging.getLogger("flotilla.actor")

#: sysexits' EX_USAGE: bad options, or a learner that refuses the actor.
EXIT_USAGE = 64
#: A stop that did not finish within the grace period.
EXIT_SHUTDOWN_TIMEOUT = 75
#: A second stop signal.
EXIT_SECOND_SIGNAL = 130

TOKEN_ENV = "FLOTILLA_AUTH_TOKEN"


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value else None


def _positive_rate(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number of steps per second, got {text!r}")
    return v


def _grace_seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and 0 < v <= 86_400):
        raise argparse.ArgumentTypeError(f"expected a number of seconds in (0, 86400], got {text!r}")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return v


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _switch(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected one of {', '.join(_TRUE + _FALSE)}, got {text!r}")


def default_name() -> str:
    """`<host name>-<pid>`: unique per process on a host, so actors started
    side by side without `--name` get different seeds."""
    host = socket.gethostname() or "actor"
    return f"{host}-{os.getpid()}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flotilla-actor",
        description=(
            "Flotilla actor for Gymnasium environments: steps environments with the "
            "learner's newest policy and streams trajectories to it. Every flag can also "
            "be given as an environment variable (FLOTILLA_LEARNER, ...)."
        ),
    )

    def arg(*flags, env: str, default=None, help: str, **kw):
        value = _env(env)
        if value is not None and "type" in kw:
            try:
                value = kw["type"](value)
            except (argparse.ArgumentTypeError, ValueError) as e:
                p.error(f"{env}: {e}")
        if value is not None and "choices" in kw and value not in kw["choices"]:
            p.error(f"{env}: expected one of {', '.join(kw['choices'])}, got {value!r}")
        p.add_argument(*flags, default=value if value is not None else default, help=f"{help} [env: {env}]", **kw)

    arg(
        "--learner",
        env="FLOTILLA_LEARNER",
        default="http://127.0.0.1:50051",
        metavar="URL",
        help="learner URL, http:// or https:// [default: %(default)s]",
    )
    arg(
        "--env",
        env="FLOTILLA_ENV",
        metavar="ID",
        help="environment id: declared to the learner, and built with gymnasium.make(ID) "
        "unless --make is given (required)",
    )
    arg(
        "--num-envs",
        env="FLOTILLA_NUM_ENVS",
        type=_positive_int,
        metavar="N",
        help="environments to step in this actor [default: the run's rollout.num_envs]",
    )
    arg(
        "--vector",
        env="FLOTILLA_VECTOR",
        default="sync",
        choices=("sync", "async"),
        help="step the environments in this process (sync) or one process each (async) [default: %(default)s]",
    )
    arg(
        "--make",
        env="FLOTILLA_MAKE",
        metavar="MODULE:CALLABLE",
        help="build each environment by calling this (with --env-kwargs) instead of gymnasium.make",
    )
    arg(
        "--env-kwargs",
        env="FLOTILLA_ENV_KWARGS",
        default="{}",
        metavar="JSON",
        help="keyword arguments of gymnasium.make or of --make, a JSON object [default: {}]",
    )
    atari = _env("FLOTILLA_ATARI")
    if atari is not None:
        try:
            atari = _switch(atari)
        except argparse.ArgumentTypeError as e:
            p.error(f"FLOTILLA_ATARI: {e}")
    p.add_argument(
        "--atari",
        action="store_true",
        default=bool(atari),
        help="ID is an Atari game of ale-py (e.g. ALE/Breakout-v5): build it with the standard "
        "DQN/PPO preprocessing (30 no-op reset, frame skip 4 with max-pooling, episodic life, "
        "FIRE on reset, reward sign clipping, 84x84 grayscale, 4 stacked frames); needs "
        'pip install "flotilla[atari]" [env: FLOTILLA_ATARI]',
    )
    arg(
        "--name",
        env="FLOTILLA_NAME",
        help="name reported to the learner; the actor's seeds derive from it, so two actors "
        "of one run need different names [default: <host name>-<pid>]",
    )
    arg(
        "--metrics-listen",
        env="FLOTILLA_METRICS_LISTEN",
        metavar="HOST:PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics [default: none]",
    )
    arg(
        "--max-steps-per-second",
        env="FLOTILLA_MAX_STEPS_PER_SECOND",
        type=_positive_rate,
        metavar="X",
        help="act at most this many env steps per second, all envs together [default: as fast as it can]",
    )
    arg(
        "--auth-token-file",
        env="FLOTILLA_AUTH_TOKEN_FILE",
        metavar="FILE",
        help=f"file holding the learner's shared token (or give the token itself in {TOKEN_ENV})",
    )
    arg(
        "--tls-ca",
        env="FLOTILLA_TLS_CA",
        metavar="FILE",
        help="PEM CA that signed the learner's certificate (for https:// URLs)",
    )
    arg(
        "--tls-cert",
        env="FLOTILLA_TLS_CERT",
        metavar="FILE",
        help="PEM client certificate for mutual TLS (with --tls-key)",
    )
    arg("--tls-key", env="FLOTILLA_TLS_KEY", metavar="FILE", help="PEM private key of --tls-cert")
    arg(
        "--tls-domain",
        env="FLOTILLA_TLS_DOMAIN",
        metavar="NAME",
        help="name expected in the learner's certificate [default: the URL's host]",
    )
    arg(
        "--shutdown-grace-seconds",
        env="FLOTILLA_SHUTDOWN_GRACE_SECONDS",
        type=_grace_seconds,
        default=10.0,
        metavar="S",
        help="after SIGTERM/SIGINT, exit anyway (code 75) if the actor has not stopped "
        "within this many seconds [default: %(default)s]",
    )
    arg(
        "--log-level",
        env="FLOTILLA_LOG_LEVEL",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="logging on stderr [default: %(default)s]",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {what} {path}: {e.strerror or e}") from None


def load_token(path: str | None) -> str | None:
    """The shared token: from `path` (surrounding whitespace ignored), else
    from FLOTILLA_AUTH_TOKEN; None when neither is given."""
    if path:
        text = _read(path, "token file").decode("utf-8", errors="replace").strip()
        return check_token(text, f"token file {path}")
    value = _env(TOKEN_ENV)
    return check_token(value.strip(), TOKEN_ENV) if value else None


def load_tls(args: argparse.Namespace) -> TlsOptions | None:
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together (mutual TLS)")
    if not args.tls_ca:
        if args.tls_cert or args.tls_domain:
            raise UsageError("--tls-cert and --tls-domain need --tls-ca")
        return None
    return TlsOptions(
        ca=_read(args.tls_ca, "CA file"),
        cert=_read(args.tls_cert, "certificate file") if args.tls_cert else None,
        key=_read(args.tls_key, "key file") if args.tls_key else None,
        domain=args.tls_domain or None,
    )


def _env_kwargs(text: str) -> dict:
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"--env-kwargs is not JSON: {e}") from None
    if not isinstance(kwargs, dict):
        raise UsageError(f"--env-kwargs must be a JSON object, got {text!r}")
    return kwargs


class StopSignals:
    """The first SIGTERM/SIGINT sets `stop`; from then on the process is
    guaranteed to end: a second signal ends it at once (exit 130), and if it
    is still running `grace` seconds later (`finished` not called) it exits
    with code 75."""

    def __init__(self, grace: float):
        self.grace = grace
        self.stop = threading.Event()
        self._finished = threading.Event()
        signal.signal(signal.SIGTERM, self._handler)
        signal.signal(signal.SIGINT, self._handler)

    def finished(self) -> None:
        """The actor has stopped: the deadline no longer applies."""
        self._finished.set()

    def _handler(self, signum, frame) -> None:
        if self.stop.is_set():
            print("error: second stop signal; exiting now", file=sys.stderr, flush=True)
            os._exit(EXIT_SECOND_SIGNAL)
        log.info("stopping (%s)", signal.Signals(signum).name)
        self.stop.set()
        threading.Thread(target=self._deadline, name="shutdown-deadline", daemon=True).start()

    def _deadline(self) -> None:
        if not self._finished.wait(self.grace):
            print(
                f"error: still running {self.grace:.1f} s after the stop signal (the grace period); "
                f"exiting with code {EXIT_SHUTDOWN_TIMEOUT}",
                file=sys.stderr,
                flush=True,
            )
            os._exit(EXIT_SHUTDOWN_TIMEOUT)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.env:
        parser.error("--env ID is required (or FLOTILLA_ENV)")
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # `--make module:callable` finds modules in the working directory, as
    # `python -m` would.
    if args.make and "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())

    # Signals stop the actor from here on (building an environment can take
    # a while); the first one lets it close its stream.
    signals = StopSignals(args.shutdown_grace_seconds)
    metrics = ActorMetrics()
    try:
        tls = load_tls(args)
        parse_learner_url(args.learner, tls)
        factory = EnvFactory(args.env, args.make, _env_kwargs(args.env_kwargs), atari=args.atari)
        if args.atari:
            from .atari import check_env_id

            check_env_id(args.env)
        opts = ActorOptions(
            learner=args.learner,
            env=factory,
            name=args.name or default_name(),
            num_envs=args.num_envs,
            vector=args.vector,
            max_steps_per_second=args.max_steps_per_second,
            auth_token=load_token(args.auth_token_file),
            tls=tls,
            shutdown_grace=args.shutdown_grace_seconds,
        )
        info = probe(factory)
        if args.metrics_listen:
            try:
                server = serve(metrics.registry, args.metrics_listen)
            except (OSError, ValueError) as e:
                raise UsageError(f"cannot serve metrics on {args.metrics_listen}: {e}") from None
            log.info("serving prometheus metrics on http://%s:%d/metrics", *server.server_address[:2])
    except (UsageError, EnvError, SpaceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE

    log.info(
        "actor %s: environment %s (observations %s, actions %s)",
        opts.name,
        info.env_id,
        info.observation.space,
        info.action.space,
    )
    try:
        summary = run(opts, info, signals.stop, metrics)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ActorError as e:
        log.debug("actor failed", exc_info=True)
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        signals.finished()
    log.info("actor stopped: %d chunks sent, %d reconnects", summary.chunks_sent, summary.reconnects)
    return 0


def entry_point() -> None:
    """The `flotilla-actor` console script."""
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
