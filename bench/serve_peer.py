"""The serving benchmark's peer: the same HTTP API in one plain FastAPI + uvicorn process.

What a team would write instead of Ray Serve: the checkpoints loaded in the web process,
each request's inference run on the thread pool (so the event loop keeps accepting), no
batching across requests. It is rayseq's own ``create_app`` (same validation, limits
and error handling) over the same model servers the Serve replicas run
(``serving.deployments``: tokenize, then ``TextClassifier.probabilities`` /
``Translator.search`` in a worker thread, one torch thread each), so the benchmark
compares serving architectures, not implementations::

    python bench/serve_peer.py CHECKPOINT [CHECKPOINT ...] --port 8100
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def peer_app(checkpoints: list[str]):
    """rayseq's HTTP app over its model servers loaded in this process, each request run
    alone (``batching=False``: no Serve here to batch with)."""
    from serving.app import LocalModel, ServedModel, create_app
    from serving.catalog import read_cards
    from serving.limits import ServeLimits

    limits = ServeLimits()
    models = {card.name: ServedModel(card, LocalModel(card, limits, batching=False))
              for card in read_cards(checkpoints)}
    return create_app(models, limits)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)

    import uvicorn

    uvicorn.run(peer_app(args.checkpoints), host="127.0.0.1", port=args.port, log_level="warning",
                access_log=False)


if __name__ == "__main__":
    main()
