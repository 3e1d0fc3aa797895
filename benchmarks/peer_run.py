"""A ``cross_teacher`` run's second network as a run folder of its own. The run's weights are
student A's; the peer B and its EMA teacher live in the algorithm's state
(``RUN/ckpt/last_state.pt``). This writes ``OUT/ckpt/last.safetensors`` with B's teacher as the
``ema`` weights (and B as ``model``) under the run's metadata, and copies the files that describe
the run (config.yaml, data.json, labelled.txt), so ``semifer eval``, ``semifer adapt-prior``,
``ensemble.py`` and ``prior_shift.py`` take it like any run:

    python benchmarks/peer_run.py runs/bench/fer2013/cross_teacher_lpc100_s0_hour   # -> ..._hour_peer
"""
from __future__ import annotations

import argparse
import os
import shutil


def write_peer_run(run: str, out: str | None = None) -> str:
    from semifer import checkpoint as ckpt

    out = out or os.path.normpath(run) + "_peer"
    state = ckpt.load_state(os.path.join(run, "ckpt", "last_state.pt"))
    algo = state.get("algorithm") or {}
    peer = {k[len("peer."):]: v for k, v in algo.items() if k.startswith("peer.")}
    teacher = {k[len("peer_teacher."):]: v for k, v in algo.items() if k.startswith("peer_teacher.")}
    if not teacher:
        raise SystemExit(f"{run}: its training state holds no peer teacher; is it a cross_teacher run?")
    _, meta = ckpt.load_weights(os.path.join(run, "ckpt", "last.safetensors"))
    meta = {**meta, "peer_of": run}
    os.makedirs(os.path.join(out, "ckpt"), exist_ok=True)
    ckpt.save_weights(os.path.join(out, "ckpt", "last.safetensors"),
                      {**{f"model.{k}": v for k, v in peer.items()}, **{f"ema.{k}": v for k, v in teacher.items()}},
                      meta)
    for name in ("config.yaml", "data.json", "labelled.txt"):
        if os.path.exists(os.path.join(run, name)):
            shutil.copy2(os.path.join(run, name), os.path.join(out, name))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a finished cross_teacher run folder")
    ap.add_argument("--out", help="the peer's run folder (default RUN_peer)")
    args = ap.parse_args()
    print(write_peer_run(args.run, args.out))


if __name__ == "__main__":
    main()
